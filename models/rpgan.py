"""RP-GAN, the Recurrent Prior GAN of Wu, Di, Huang and Zhang, "Integrating neural networks into the
blind deblurring framework to compete with end-to-end learning-based methods" (arXiv 1903.02731,
IEEE TIP 2020), paper §4.2 and Appendix A; spec ``sen_rpgan.md`` §7 and register §12.

No public code exists; the networks are built from Appendix A's layer lists (base: pix2pix's ResNet
generator and PatchGAN). Layout NHWC float32; images in [0, 1].

**Generator G** (:class:`RPGANGenerator`): input (N, H, W, 6) = concat(I*, O), the deconvolved
image I* of the HQS data step and the observed blurred image O, both in [0, 1], any H, W >= 1;
output (N, H, W, 3), the restored image Z, **linear and not clipped** (register #13: the HQS loop
clips it to [0, 1] when it becomes Z_n; the losses see the raw value). Layers (``g_up_widths`` =
(256, 128)): CBR(7, 64, 1) -> CBR(3, 128, 2) -> CBR(3, 256, 2) -> 6 x Res1(256) -> CBRᵀ(3, 256, 2)
-> CBRᵀ(3, 128, 2) -> CBR(7, 64, 1) -> concat with the 6-channel input (70 channels) ->
Res2out(3). ``CBR`` and ``Res2out`` are :class:`models.sen.CBR` / :class:`models.sen.Res2Out`.

**Discriminators** (:class:`RPGANDiscriminator`): D_cGAN (``conditional=True``, input
concat(image, O), 6 channels) and the artifacts-penalised critic D_p (``conditional=False``, one
image, 3 channels): CBR(4, 64, 2) -> CBR(4, 128, 2) -> CBR(4, 256, 2) -> CBR(4, 512, 2) ->
CBR(4, 512, 1) -> conv 4x4 -> 1 (linear, biased). Output (N, ceil(H/16), ceil(W/16), 1): logits of
D_cGAN (the Appendix's sigmoid is folded into the loss) or critic values of D_p (16x16 on 256x256).

Register choices (spec §12; also in docs/fidelity.md):

* #11 G's up-path widths: 256, 128 as the Appendix writes them; ``g_up_widths=(128, 64)`` is
  pix2pix's (each up-sampling halves the width).
* #12 "CBR 7*7*64:1 + input * Res2 3": the last CBR's 64 features are **concatenated** with the
  6-channel input (70 channels; "skip connect the concatenated inputs with the last layer") and fed
  to Res2out(3) (main CBR(3, 2) -> CBR(3, 2) -> linear 3x3 conv; skip linear 3x3 conv; sum).
* #13 G's output is linear (Res2out's biased convolutions), images in [0, 1], clipped only when used
  as Z_n; pix2pix's tanh on [-1, 1] data is not used.
* #14 D layers 1-5: conv (no bias) + BN + ReLU as written (``d_style="paper"``), the last layer a
  plain biased convolution (BN + ReLU there would pin the sigmoid above 0.5 and the critic above 0).
  ``d_style="pix2pix"``: LeakyReLU 0.2 everywhere and no BN in layer 1 (which then has a bias).
  ``d_style="no_bn"``: LeakyReLU 0.2 and no normalisation at all (every conv biased): the style a
  gradient penalty needs (register #15, spec §8: ``dp_lipschitz="gp"`` requires a D_p without BN,
  since BN couples the samples of a batch and the per-sample input gradient loses its meaning);
  :attr:`RPGANDiscriminator.has_batch_norm` tells the training code.
* #26 no convolution bias in front of a batch normalisation.
* #28 zero padding inside the networks. Stride-2 3x3 convs of G pad 1 on every side (PyTorch's
  ``padding=1``, :class:`models.sen.CBR`); G's transposed convs reproduce PyTorch's
  ``ConvTranspose2d(3, stride=2, padding=1, output_padding=1)`` exactly: a "valid" transposed conv
  (2h + 1 rows) with the first row and column dropped (Keras' ``padding="same"`` drops the last
  instead, a one-pixel shift of the grid). The discriminators use Keras "same" padding: the 4x4
  stride-2 convs pad 1 on each side of an even size (PyTorch's ``padding=1``); the stride-1 4x4
  convs pad 1 before and 2 after so that 256x256 gives the spec's 16x16 map (PyTorch's
  ``padding=1`` would shrink it to 14x14). G pads its input to multiples of 4
  (:attr:`RPGANGenerator.size_multiple`) by edge replication at the bottom and right inside the
  call and crops back (:func:`models.inference.pad_to_multiple`), as SEN does; pix2pix's reflection
  padding of the 7x7 convs is not used.

Batch normalisation: Keras momentum 0.9 (PyTorch 0.1), epsilon 1e-5 (:mod:`models.sen`).
Convolutions use PyTorch's default initialisation (``init="torch"``; ``"glorot"`` available); the
paper is silent and its networks are PyTorch.

Size (spec §7; BN moving statistics are the non-trainable part; GMAC = convolution weight MACs of
:mod:`models.flops`, transposed convolutions counted by input pixels):

=====================  ==========  ==========  ============  ====================
network                trainable   total       GMAC / 256²   GMAC at 1280x720
=====================  ==========  ==========  ============  ====================
G (256, 128)           8,762,678   8,770,622   66.41         933.85
G (128, 64)            8,045,494   8,053,054   48.42
D_cGAN (paper)         6,964,097   6,967,041   2.79
D_p (paper)            6,961,025   6,963,969   2.74
=====================  ==========  ==========  ============  ====================

``width_divisor`` divides every width (not the 3 output channels, nor Res2out's middle width 2, nor
the discriminators' single output channel) for tests.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models import blocks, flops, inference
from models.blocks import float32_outputs, precision_free, spatial_size
from models.scale_recurrent import channels_shape
from models.sen import BN_EPSILON, BN_MOMENTUM, CBR, INITS, Res2Out

G_INPUT_CHANNELS = 6  # concat(I*, O)
IMAGE_CHANNELS = 3
G_UP_WIDTHS = ((256, 128), (128, 64))  # Appendix A (default), pix2pix
D_STYLES = ("paper", "pix2pix", "no_bn")
D_STYLES_WITHOUT_BN = ("no_bn",)
NUM_RES1 = 6
SIZE_MULTIPLE = 4  # two stride-2 convolutions
LEAKY_SLOPE = 0.2  # pix2pix


def _check(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _check_width_divisor(width_divisor):
    if int(width_divisor) < 1:
        raise ValueError(f"width_divisor must be >= 1, got {width_divisor}.")
    return int(width_divisor)


def _check_channels(model, x, expected, what):
    """A clear ValueError when the static channel count is not the contract's."""
    channels = x.shape[-1] if hasattr(x, "shape") else x[-1]
    if channels is not None and channels != expected:
        raise ValueError(
            f"{type(model).__name__} ({model.name}) expects {what} with {expected} channels "
            f"(N, H, W, {expected}), got {channels} channels."
        )


@keras.saving.register_keras_serializable(package="deblur")
class Res1(layers.Layer):
    """Appendix A's ``Res1 c``: x -> CBR(3, c, 1) -> CBR(3, c, 1) -> + x (pix2pix's ResNet block
    with BN + ReLU after both convs, as written). NHWC, the input must have c channels."""

    def __init__(self, channels, init="torch", **kw):
        super().__init__(**kw)
        self.channels, self.init = int(channels), init
        self.cbr1 = CBR(self.channels, 3, init=init, name="cbr1")
        self.cbr2 = CBR(self.channels, 3, init=init, name="cbr2")

    def build(self, input_shape):
        if input_shape[-1] != self.channels:
            raise ValueError(
                f"Res1({self.channels}) needs {self.channels} input channels, "
                f"got {input_shape[-1]}."
            )
        self.cbr1.build(channels_shape(self.channels))
        self.cbr2.build(channels_shape(self.channels))

    def call(self, x, training=None):
        return x + self.cbr2(self.cbr1(x, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "init": self.init}


@keras.saving.register_keras_serializable(package="deblur")
class CBRTranspose(layers.Layer):
    """``CBRᵀ(3, c, 2)``: transposed conv 3x3 stride 2 (no bias, register #26) + BN + ReLU. NHWC,
    (N, h, w, C) -> (N, 2h, 2w, c).

    PyTorch's ``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`` (pix2pix) exactly:
    input pixel i, tap t writes output pixel 2i + t - 1. Implemented as a "valid" transposed conv
    (output 2h + 1: pixel 2i + t) with the first row and column dropped (register #28).
    """

    def __init__(self, filters, init="torch", **kw):
        super().__init__(**kw)
        _check("init", init, INITS)
        self.filters, self.init = int(filters), init
        # PyTorch's fan_in of a transposed conv is k * k * out_channels.
        self.conv = layers.Conv2DTranspose(
            self.filters,
            3,
            strides=2,
            padding="valid",
            use_bias=False,
            kernel_initializer=blocks.initializers(init, 9 * self.filters)["kernel_initializer"],
            name="conv",
        )
        self.bn = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn")

    def build(self, input_shape):
        self.conv.build(channels_shape(input_shape[-1]))
        self.bn.build(channels_shape(self.filters))

    def call(self, x, training=None):
        y = self.conv(x)[:, 1:, 1:, :]
        return ops.relu(self.bn(y, training=training))

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else 2 * size

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "init": self.init}


@keras.saving.register_keras_serializable(package="deblur")
class RPGANGenerator(keras.Model):
    """The RP-GAN generator G (paper §4.2.1, Appendix A; spec §7). See the module docstring for
    the layer list and the register choices (#11-#13, #26, #28).

    ``call(inputs)``: (N, H, W, 6) float = concat(I*, O) in [0, 1], any H, W -> (N, H, W, 3) float,
    linear (may leave [0, 1]). Any other channel count raises a ``ValueError``. The input is padded
    to multiples of 4 (edge replication, bottom/right) inside the call and the output cropped back.

    Args:
        g_up_widths: widths of the two CBRᵀ layers: (256, 128) (Appendix A, register #11 default)
            or (128, 64) (pix2pix).
        width_divisor: every width c becomes max(1, c // width_divisor) (tests use 32).
        init: ``"torch"`` (PyTorch's default initialisation) or ``"glorot"``.
        global_residual: ``False`` (the paper: G's output is the image) or ``True``: the output
            is O + Res2out(...), O the input's last three channels (not a paper choice;
            ``train_rpgan.py --preset quick`` only).
        output_init: ``None`` or ``"zeros"``: Res2out's two linear convolutions start at zero, so
            that with ``global_residual`` G starts as Z = O (a short run then only has to learn
            a correction; GradientNet's quick preset does the same).
    """

    size_multiple = SIZE_MULTIPLE
    in_channels = G_INPUT_CHANNELS

    def __init__(
        self,
        g_up_widths=(256, 128),
        width_divisor=1,
        init="torch",
        global_residual=False,
        output_init=None,
        **kw,
    ):
        super().__init__(**kw)
        g_up_widths = tuple(int(w) for w in g_up_widths)
        _check("g_up_widths", g_up_widths, G_UP_WIDTHS)
        _check("init", init, INITS)
        _check("output_init", output_init, (None, "zeros"))
        self.g_up_widths, self.init = g_up_widths, init
        self.global_residual, self.output_init = bool(global_residual), output_init
        self.width_divisor = _check_width_divisor(width_divisor)

        def width(c):
            return max(1, c // self.width_divisor)

        self.down = [
            CBR(width(c), k, s, init=init, name=f"down{i + 1}")
            for i, (c, k, s) in enumerate(((64, 7, 1), (128, 3, 2), (256, 3, 2)))
        ]
        self.res = [Res1(width(256), init, name=f"res{i + 1}") for i in range(NUM_RES1)]
        self.up = [
            CBRTranspose(width(c), init, name=f"up{i + 1}") for i, c in enumerate(g_up_widths)
        ]
        self.last = CBR(width(64), 7, init=init, name="last")
        self.out = Res2Out(IMAGE_CHANNELS, init, name="out")

    def build(self, input_shape):
        # Explicit builds: no symbolic trace needed to create the weights.
        _check_channels(self, input_shape, G_INPUT_CHANNELS, "concat(I*, O)")
        width = G_INPUT_CHANNELS
        for layer in (*self.down, *self.res):
            layer.build(channels_shape(width))
            width = layer.filters if isinstance(layer, CBR) else layer.channels
        for layer in self.up:
            layer.build(channels_shape(width))
            width = layer.filters
        self.last.build(channels_shape(width))
        self.out.build(channels_shape(self.last.filters + G_INPUT_CHANNELS))
        if self.output_init == "zeros":
            for conv in (self.out.conv, self.out.projection):
                for weight in conv.weights:
                    weight.assign(ops.zeros(weight.shape, weight.dtype))
        super().build(input_shape)

    def call(self, inputs, training=None):
        _check_channels(self, inputs, G_INPUT_CHANNELS, "concat(I*, O)")
        inputs = ops.cast(ops.convert_to_tensor(inputs), self.compute_dtype)
        height, width = spatial_size(inputs)
        padded = inference.pad_to_multiple(inputs, self.size_multiple)
        x = padded
        for layer in (*self.down, *self.res, *self.up):
            x = layer(x, training=training)
        x = self.last(x, training=training)
        # Register #12: "skip connect the concatenated inputs with the last layer".
        x = self.out(ops.concatenate([x, padded], axis=-1), training=training)
        if self.global_residual:
            x = x + padded[..., IMAGE_CHANNELS:]  # + O
        return float32_outputs(inference.crop_to(x, height, width))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (IMAGE_CHANNELS,)

    def get_config(self):
        return {
            **precision_free(super().get_config()),
            "g_up_widths": list(self.g_up_widths),
            "width_divisor": self.width_divisor,
            "init": self.init,
            "global_residual": self.global_residual,
            "output_init": self.output_init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class DiscriminatorBlock(layers.Layer):
    """One discriminator layer: conv k x k (Keras "same" zero padding, register #28) -> optional
    BN -> ReLU or LeakyReLU(0.2). NHWC, (N, h, w, C) -> (N, ceil(h/s), ceil(w/s), c). The conv has
    a bias exactly when no BN follows (register #26)."""

    def __init__(self, filters, strides=2, batch_norm=True, activation="relu", init="torch", **kw):
        super().__init__(**kw)
        _check("strides", strides, (1, 2))
        _check("activation", activation, ("relu", "leaky_relu"))
        _check("init", init, INITS)
        self.filters, self.strides = int(filters), int(strides)
        self.batch_norm, self.activation, self.init = bool(batch_norm), activation, init
        self.conv = None
        self.bn = None
        if self.batch_norm:
            self.bn = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn")

    def build(self, input_shape):
        self.conv = layers.Conv2D(
            self.filters,
            4,
            strides=self.strides,
            padding="same",
            use_bias=not self.batch_norm,
            name="conv",
            **blocks.initializers(self.init, 16 * input_shape[-1]),
        )
        self.conv.build(channels_shape(input_shape[-1]))
        if self.bn is not None:
            self.bn.build(channels_shape(self.filters))

    def call(self, x, training=None):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.activation == "relu":
            return ops.relu(x)
        return ops.leaky_relu(x, negative_slope=LEAKY_SLOPE)

    def compute_output_shape(self, input_shape):
        return blocks.strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "batch_norm": self.batch_norm,
            "activation": self.activation,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class RPGANDiscriminator(keras.Model):
    """D_cGAN (``conditional=True``) or D_p (``conditional=False``) of RP-GAN (paper §4.2.2,
    Appendix A; spec §7; register #14, #15, #26, #28; see the module docstring).

    ``call(x)``: (N, H, W, 6) = concat(image, O) for D_cGAN, (N, H, W, 3) one image for D_p, float
    in [0, 1] (any H, W; no padding) -> (N, ceil(H/16), ceil(W/16), 1) float, linear: D_cGAN's
    logits (sigmoid in the loss), D_p's per-patch critic values (D̄_p(x) is their mean,
    :func:`losses.critic_value`). 16x16 on 256x256. Another channel count raises a ``ValueError``.

    Args:
        conditional: True for D_cGAN (6 input channels), False for D_p (3).
        d_style: ``"paper"`` (BN + ReLU in layers 1-5, register #14 default), ``"pix2pix"``
            (LeakyReLU 0.2, no BN in layer 1) or ``"no_bn"`` (LeakyReLU 0.2, no BN anywhere: for
            D_p with a gradient penalty, register #15).
        width_divisor: every width c becomes max(1, c // width_divisor) (tests).
        init: ``"torch"`` or ``"glorot"``.
    """

    size_multiple = 1

    def __init__(self, conditional=True, d_style="paper", width_divisor=1, init="torch", **kw):
        super().__init__(**kw)
        _check("d_style", d_style, D_STYLES)
        _check("init", init, INITS)
        self.conditional, self.d_style, self.init = bool(conditional), d_style, init
        self.width_divisor = _check_width_divisor(width_divisor)
        self.in_channels = G_INPUT_CHANNELS if self.conditional else IMAGE_CHANNELS
        activation = "relu" if d_style == "paper" else "leaky_relu"
        self.body = [
            DiscriminatorBlock(
                max(1, c // self.width_divisor),
                s,
                batch_norm=self._batch_norm_in(i),
                activation=activation,
                init=init,
                name=f"block{i + 1}",
            )
            for i, (c, s) in enumerate(((64, 2), (128, 2), (256, 2), (512, 2), (512, 1)))
        ]
        # The last layer: a plain biased conv (register #14), linear.
        self.head = blocks.conv(1, 4, self.body[-1].filters, init=init, name="head")

    def _batch_norm_in(self, index):
        if self.d_style == "paper":
            return True
        return self.d_style == "pix2pix" and index > 0

    @property
    def has_batch_norm(self):
        """Whether any layer normalises over the batch (a gradient penalty needs False)."""
        return self.d_style not in D_STYLES_WITHOUT_BN

    def build(self, input_shape):
        _check_channels(self, input_shape, self.in_channels, self._input_name)
        width = self.in_channels
        for block in self.body:
            block.build(channels_shape(width))
            width = block.filters
        self.head.build(channels_shape(width))
        super().build(input_shape)

    @property
    def _input_name(self):
        return "concat(image, O)" if self.conditional else "one image"

    def call(self, x, training=None):
        _check_channels(self, x, self.in_channels, self._input_name)
        x = ops.cast(ops.convert_to_tensor(x), self.compute_dtype)
        for block in self.body:
            x = block(x, training=training)
        return float32_outputs(self.head(x))

    def compute_output_shape(self, input_shape):
        def out(size):
            return None if size is None else -(-size // 16)

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), 1)

    def get_config(self):
        return {
            **precision_free(super().get_config()),
            "conditional": self.conditional,
            "d_style": self.d_style,
            "width_divisor": self.width_divisor,
            "init": self.init,
        }


def rpgan_generator(**overrides):
    """G with the spec §7 defaults: 8,762,678 trainable parameters."""
    return RPGANGenerator(**{"name": "rpgan_generator", **overrides})


def rpgan_discriminator(**overrides):
    """D_cGAN (default, ``conditional=True``: 6,964,097 trainable parameters) or D_p
    (``conditional=False``: 6,961,025)."""
    conditional = overrides.get("conditional", True)
    name = "rpgan_d_cgan" if conditional else "rpgan_d_p"
    return RPGANDiscriminator(**{"name": name, **overrides})


def multiply_adds(height, width, network="generator", **config) -> int:
    """Convolution weight MACs of one forward on a ``height`` x ``width`` input (G pads to 4;
    transposed convolutions counted by input pixels, :mod:`models.flops`). ``network``:
    ``"generator"`` (66.41 GMAC per 256x256, 933.85 at 1280x720) or ``"discriminator"`` (D_cGAN
    2.79, D_p 2.74 with ``conditional=False``)."""
    _check("network", network, ("generator", "discriminator"))
    build = rpgan_generator if network == "generator" else rpgan_discriminator
    model = build(**config)
    return flops.count_macs(model, height, width, channels=model.in_channels)
