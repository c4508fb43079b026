"""Structures-Guided GAN with GradientNet: "Structures Guided Dynamic Scene Deblurring Method"
(Qing Qi, Wireless Communications and Mobile Computing 2022, article 2254077), Sec. 3.1.

No public code exists and the generator figure is unavailable; the network is reconstructed from
the text, eqs. 2-7 and the public ancestors the paper paraphrases (spec ``gradientnet.md``
Sec. 2-3: DeblurGAN skeleton and PatchGAN critic, Cross-SRN's cross convolution and hierarchical
block, RCAN channel attention). Layout NHWC float32. The generator works in [-1, 1]
(:meth:`GradientNetGAN.generate`); the registered model's ``call`` takes and returns [0, 1] images
(a list of one full-resolution image). :class:`PatchGANCritic` is the WGAN-GP critic.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from models import blocks, flops
from models.blocks import DeblurModel, float32_outputs, precision_free
from models.scale_recurrent import channels_shape

INITS = ("normal", "torch")
RGCL_MODES = ("cross", "plain")
RGCL_SIGMAS = ("literal", "gate", "none")
RECURRENCES = ("residual", "iterate")
ATTACHMENTS = ("residual", "concat", "replace")
SKIPS = ("add", "concat")
UPSAMPLINGS = ("transposed", "resize")
PADDINGS = ("reflect", "zero")
ACTIVATIONS = ("relu", "leaky_relu")
IN_EPSILON = 1e-5  # PyTorch InstanceNorm2d's default (Keras' GroupNormalization uses 1e-3)


def _check(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _initializers(init, fan_in):
    """``"normal"``: N(0, 0.02) kernels, zero biases (DeblurGAN / pix2pix, spec §1, register 24);
    ``"torch"``: PyTorch's default (see :func:`models.blocks.initializers`); ``"zeros"`` (only the
    output convolution, ``output_init``): all zero."""
    if init == "zeros":
        return {"kernel_initializer": "zeros", "bias_initializer": "zeros"}
    _check("init", init, INITS)
    if init == "normal":
        return {
            "kernel_initializer": keras.initializers.RandomNormal(0.0, 0.02),
            "bias_initializer": "zeros",
        }
    return blocks.initializers("torch", fan_in)


def _conv(
    filters, kernel_size, in_channels, *, init, strides=1, padding="same", name=None, layer=None
):
    """A biased ``Conv2D`` (or ``layer``, a subclass); ``kernel_size`` an int or a (rows, columns)
    pair."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    return (layer or layers.Conv2D)(
        filters,
        (kh, kw),
        strides=strides,
        padding=padding,
        name=name,
        **_initializers(init, kh * kw * in_channels),
    )


def instance_norm(name):
    """Instance normalisation without affine parameters, eps 1e-5 (PyTorch InstanceNorm2d)."""
    return layers.GroupNormalization(
        groups=-1, center=False, scale=False, epsilon=IN_EPSILON, name=name
    )


def _activation(kind, slope):
    return layers.ReLU() if kind == "relu" else layers.LeakyReLU(negative_slope=slope)


NARROW_FILTERS = 8  # fewer output channels than one AVX2 register of float32


@keras.saving.register_keras_serializable(package="deblur")
class AdjointConv2D(layers.Conv2D):
    """A stride-1 ``"valid"`` ``Conv2D`` computed as the transposed convolution of its kernel.

    oneDNN runs a convolution with very few output channels (the 7x7 64 -> 3 head) at about a
    quarter of the speed of the rest of the network; the same sum written as a transposed
    convolution (the kernel's in/out axes swapped and its taps flipped, "same" padding, then the
    ``k // 2`` border cropped) runs it in the layout oneDNN is fast in, about 1.6x faster on AVX2.
    Same variables and output up to float32 rounding (only the summation order differs); the
    border crop wastes ``2 (k // 2)`` rows and columns. NHWC.
    """

    def convolution_op(self, inputs, kernel):
        kh, kw = self.kernel_size
        flipped = ops.flip(ops.transpose(kernel, (0, 1, 3, 2)), axis=(0, 1))
        full = ops.conv_transpose(inputs, flipped, strides=1, padding="same")
        ph, pw = kh // 2, kw // 2
        return full[:, ph : ops.shape(full)[1] - ph, pw : ops.shape(full)[2] - pw, :]


@keras.saving.register_keras_serializable(package="deblur")
class PaddedConv(layers.Layer):
    """Stride-1 ``k x k`` conv after an explicit ``k // 2`` pad, ``"reflect"`` or ``"zero"``.

    DeblurGAN's ``ReflectionPad2d(3)`` + ``Conv2d(k=7, padding=0)`` (spec §1). Input NHWC. Fewer
    than ``NARROW_FILTERS`` output channels (the 3-channel head) run as :class:`AdjointConv2D`.
    """

    def __init__(self, filters, kernel_size=7, padding="reflect", init="normal", **kw):
        super().__init__(**kw)
        _check("padding", padding, PADDINGS)
        self.filters, self.kernel_size = filters, kernel_size
        self.padding, self.init = padding, init
        self.conv = None

    def build(self, input_shape):
        self.conv = _conv(
            self.filters,
            self.kernel_size,
            input_shape[-1],
            init=self.init,
            padding="valid",
            name="conv",
            layer=AdjointConv2D if self.filters < NARROW_FILTERS else None,
        )
        self.conv.build(channels_shape(input_shape[-1]))

    def call(self, x):
        p = self.kernel_size // 2
        mode = "reflect" if self.padding == "reflect" else "constant"
        return self.conv(ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode=mode))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "padding": self.padding,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class ChannelAttention(layers.Layer):
    """RCAN channel attention / SE (spec §1 ``CA(c)``): x * sigmoid(W2 relu(W1 gap(x))).

    W1: 1x1 conv c -> max(c // reduction, 1), W2: 1x1 conv back to c, both biased unless
    ``use_bias=False`` (register 14's "SE without biases").
    """

    def __init__(self, channels, reduction=16, use_bias=True, init="normal", **kw):
        super().__init__(**kw)
        self.channels, self.reduction = channels, reduction
        self.use_bias, self.init = bool(use_bias), init
        hidden = max(channels // reduction, 1)
        self.squeeze = layers.Conv2D(
            hidden, 1, use_bias=self.use_bias, name="squeeze", **_initializers(init, channels)
        )
        self.excite = layers.Conv2D(
            channels, 1, use_bias=self.use_bias, name="excite", **_initializers(init, hidden)
        )

    def build(self, input_shape):
        self.squeeze.build(channels_shape(self.channels))
        self.excite.build(channels_shape(self.squeeze.filters))

    def call(self, x):
        w = ops.mean(x, axis=(1, 2), keepdims=True)
        w = ops.sigmoid(self.excite(ops.relu(self.squeeze(w))))
        return x * w

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "reduction": self.reduction,
            "use_bias": self.use_bias,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class RGCL(layers.Layer):
    """Recurrent gradient convolutional layer (paper eq. 7, Fig. 3; spec §2.1), width C -> C.

    ``mode="cross"`` (default): one step
    f(Z) = CA(sigmoid(conv3x3(LReLU(conv1x3(Z) + conv3x1(Z))))), with conv1x3 one row by three
    columns (horizontal) and conv3x1 three rows by one column (vertical). ``steps`` applications
    with the **same weights** (the variables do not depend on ``steps``):
    ``recurrence="residual"``: X_1 = f(U), X_t = f(U + X_{t-1}); ``"iterate"``: X_t = f(X_{t-1})
    (X_0 = U). Output U + X_steps ("+ Input").
    ``sigma``: ``"literal"`` (sigmoid before CA, eq. 7), ``"gate"`` (Z * sigmoid(.) before CA),
    ``"none"`` (sigmoid only inside CA) - register 11.
    ``mode="plain"`` (the "w/o RGCL" ablation): LReLU(conv3x3(U)); no recurrence, sigmoid or CA.
    """

    def __init__(
        self,
        channels,
        mode="cross",
        steps=3,
        recurrence="residual",
        sigma="literal",
        slope=0.01,
        ca_reduction=16,
        ca_bias=True,
        init="normal",
        **kw,
    ):
        super().__init__(**kw)
        _check("rgcl_mode", mode, RGCL_MODES)
        _check("rgcl_recurrence", recurrence, RECURRENCES)
        _check("rgcl_sigma", sigma, RGCL_SIGMAS)
        if steps < 1:
            raise ValueError(f"rgcl_steps must be >= 1, got {steps}.")
        self.channels, self.mode, self.steps = channels, mode, int(steps)
        self.recurrence, self.sigma, self.slope = recurrence, sigma, slope
        self.ca_reduction, self.ca_bias, self.init = ca_reduction, bool(ca_bias), init
        c = channels
        self.conv = _conv(c, 3, c, init=init, name="conv")
        self.conv_h = self.conv_v = self.ca = None
        if mode == "cross":
            self.conv_h = _conv(c, (1, 3), c, init=init, name="conv_h")
            self.conv_v = _conv(c, (3, 1), c, init=init, name="conv_v")
            self.ca = ChannelAttention(c, ca_reduction, ca_bias, init, name="ca")

    def build(self, input_shape):
        for layer in (self.conv_h, self.conv_v, self.conv, self.ca):
            if layer is not None:
                layer.build(channels_shape(self.channels))

    def step(self, z):
        """One application f(Z) of the shared weights."""
        h = ops.leaky_relu(self.conv_h(z) + self.conv_v(z), negative_slope=self.slope)
        h = self.conv(h)
        if self.sigma == "literal":
            h = ops.sigmoid(h)
        elif self.sigma == "gate":
            h = z * ops.sigmoid(h)
        return self.ca(h)

    def call(self, u):
        if self.mode == "plain":
            return ops.leaky_relu(self.conv(u), negative_slope=self.slope)
        x = self.step(u)
        for _ in range(self.steps - 1):
            x = self.step(u + x if self.recurrence == "residual" else x)
        return u + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "mode": self.mode,
            "steps": self.steps,
            "recurrence": self.recurrence,
            "sigma": self.sigma,
            "slope": self.slope,
            "ca_reduction": self.ca_reduction,
            "ca_bias": self.ca_bias,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class MBRB(layers.Layer):
    """Multi-branch reuse block (paper eqs. 5-6; spec §2.1), width C -> C.

    ``branches`` RGCLs with separate weights, each on the block input X; concatenation (when
    ``branches > 1``); CA(branches * C); f_FE3 conv ``fuse_kernel`` (1x1; 3x3 is register 9's
    alternative) to C; ReLU (``activation="leaky_relu"``: register 10); f_FE4 conv 3x3; + X.
    ``rgcl`` holds the :class:`RGCL` keyword arguments.
    """

    def __init__(
        self,
        channels,
        branches=3,
        fuse_kernel=1,
        activation="relu",
        slope=0.01,
        ca_reduction=16,
        ca_bias=True,
        rgcl=None,
        init="normal",
        **kw,
    ):
        super().__init__(**kw)
        _check("mbrb_activation", activation, ACTIVATIONS)
        if branches < 1:
            raise ValueError(f"mbrb_branches must be >= 1, got {branches}.")
        self.channels, self.branches, self.fuse_kernel = channels, int(branches), fuse_kernel
        self.activation, self.slope = activation, slope
        self.ca_reduction, self.ca_bias, self.init = ca_reduction, bool(ca_bias), init
        self.rgcl = dict(rgcl or {})
        c, wide = channels, self.branches * channels
        self.rgcls = [
            RGCL(
                c,
                slope=slope,
                ca_reduction=ca_reduction,
                ca_bias=ca_bias,
                init=init,
                name=f"rgcl{i}",
                **self.rgcl,
            )
            for i in range(self.branches)
        ]
        self.ca = ChannelAttention(wide, ca_reduction, ca_bias, init, name="ca")
        self.fuse = _conv(c, fuse_kernel, wide, init=init, name="fuse")
        self.act = _activation(activation, slope)
        self.conv = _conv(c, 3, c, init=init, name="conv")

    def build(self, input_shape):
        for rgcl in self.rgcls:
            rgcl.build(channels_shape(self.channels))
        self.ca.build(channels_shape(self.branches * self.channels))
        self.fuse.build(channels_shape(self.branches * self.channels))
        self.conv.build(channels_shape(self.channels))

    def call(self, x):
        paths = [rgcl(x) for rgcl in self.rgcls]
        h = paths[0] if len(paths) == 1 else ops.concatenate(paths, axis=-1)
        return x + self.conv(self.act(self.fuse(self.ca(h))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "branches": self.branches,
            "fuse_kernel": self.fuse_kernel,
            "activation": self.activation,
            "slope": self.slope,
            "ca_reduction": self.ca_reduction,
            "ca_bias": self.ca_bias,
            "rgcl": dict(self.rgcl),
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class GradientNet(layers.Layer):
    """GradientNet (paper eqs. 2-4; spec §2.1), no normalisation, at H/4.

    PRFTM: conv3x3 (in -> C), LReLU (``prftm_activation``; register 7), conv3x3 (C -> C); MBRU:
    ``num_mbrb`` :class:`MBRB` in cascade, then CA(C); proj: conv3x3 (C -> ``out_channels``).
    Returns proj's output; the generator attaches it (residual by default).
    """

    def __init__(
        self,
        in_channels=256,
        channels=64,
        num_mbrb=10,
        out_channels=256,
        prftm_activation=True,
        slope=0.01,
        ca_reduction=16,
        ca_bias=True,
        mbrb=None,
        init="normal",
        **kw,
    ):
        super().__init__(**kw)
        self.in_channels, self.channels, self.num_mbrb = in_channels, channels, int(num_mbrb)
        self.out_channels, self.prftm_activation = out_channels, bool(prftm_activation)
        self.slope, self.ca_reduction, self.ca_bias = slope, ca_reduction, bool(ca_bias)
        self.mbrb, self.init = dict(mbrb or {}), init
        c = channels
        self.prftm = [
            _conv(c, 3, in_channels, init=init, name="prftm0"),
            _conv(c, 3, c, init=init, name="prftm1"),
        ]
        self.mbrbs = [
            MBRB(
                c,
                slope=slope,
                ca_reduction=ca_reduction,
                ca_bias=ca_bias,
                init=init,
                name=f"mbrb{i}",
                **self.mbrb,
            )
            for i in range(self.num_mbrb)
        ]
        self.ca = ChannelAttention(c, ca_reduction, ca_bias, init, name="ca")
        self.proj = _conv(out_channels, 3, c, init=init, name="proj")

    def build(self, input_shape):
        self.prftm[0].build(channels_shape(self.in_channels))
        for layer in [self.prftm[1], *self.mbrbs, self.ca, self.proj]:
            layer.build(channels_shape(self.channels))

    def call(self, x):
        h = self.prftm[0](x)
        if self.prftm_activation:
            h = ops.leaky_relu(h, negative_slope=self.slope)
        h = self.prftm[1](h)
        for block in self.mbrbs:
            h = block(h)
        return self.proj(self.ca(h))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "channels": self.channels,
            "num_mbrb": self.num_mbrb,
            "out_channels": self.out_channels,
            "prftm_activation": self.prftm_activation,
            "slope": self.slope,
            "ca_reduction": self.ca_reduction,
            "ca_bias": self.ca_bias,
            "mbrb": dict(self.mbrb),
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class UpStage(layers.Layer):
    """Decoder up-sampling x2 -> IN -> ReLU: transposed conv 3x3 stride 2 (default) or
    ``"resize"``: nearest x2 then conv 3x3 (register 3)."""

    def __init__(self, filters, in_channels, upsampling="transposed", init="normal", **kw):
        super().__init__(**kw)
        _check("upsampling", upsampling, UPSAMPLINGS)
        self.filters, self.in_channels = filters, in_channels
        self.upsampling, self.init = upsampling, init
        if upsampling == "transposed":
            # PyTorch's fan_in of a transposed conv is k * k * out_channels.
            self.conv = layers.Conv2DTranspose(
                filters,
                3,
                strides=2,
                padding="same",
                name="conv",
                **_initializers(init, 9 * filters),
            )
        else:
            self.conv = _conv(filters, 3, in_channels, init=init, name="conv")
        self.norm = instance_norm("norm")

    def build(self, input_shape):
        self.conv.build(channels_shape(self.in_channels))
        self.norm.build(channels_shape(self.filters))

    def call(self, x):
        if self.upsampling == "resize":
            x = blocks.repeat2(x)
        return ops.relu(self.norm(self.conv(x)))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "in_channels": self.in_channels,
            "upsampling": self.upsampling,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class GradientNetGAN(DeblurModel):
    """Generator G of the Structures-Guided GAN, configuration A (spec §2, paper Sec. 3.1).

    Layout: ``call`` takes (N, H, W, 3) float32 RGB in [0, 1], H and W multiples of 4
    (:func:`models.inference.restore` pads other sizes by bottom/right edge replication and crops
    back), and returns ``[(G(2x - 1) + 1) / 2]``, a list of one full-resolution image in [0, 1]
    (Tanh output). :meth:`generate` is G itself on [-1, 1] images (training, losses, critic).

    Configuration A (3,496,759 parameters, 451.22 GMAC at 1280x720), c = ``base_channels`` = 64:

    * E0 reflect-pad 3, conv7x7 (3 -> c), IN, ReLU; E1, E2 conv3x3 stride 2 (-> 2c, 4c), IN, ReLU;
    * B = E2 + GradientNet(E2) (C = ``gradient_channels`` = 64, 10 MBRBs of three RGCLs with three
      shared-weight recurrent steps, CA; :class:`GradientNet`);
    * D1 transposed conv3x3 stride 2 (4c -> 2c), IN, ReLU, + E1; D0 (2c -> c), IN, ReLU, + E0;
    * OUT reflect-pad 3, conv7x7 (c -> 3), Tanh. No global residual.

    IN = instance norm without affine parameters, eps 1e-5; LReLU slope 0.01; N(0, 0.02) kernels,
    zero biases. Transposed convolutions use Keras' "same" padding (exactly 2x; PyTorch's
    padding=1, output_padding=1 aligns the grid the same way up to a half-pixel shift, harmless when
    training from scratch).

    Register of spec §9 (default first, then the switch): 1 depth (fixed, DeblurGAN skeleton);
    2 ``skip="add"`` / ``"concat"``; 3 ``upsampling="transposed"`` / ``"resize"``;
    4 ``global_residual=False`` / True (clamp(x + out, -1, 1), DeblurGAN); 5
    ``attachment="residual"`` / ``"concat"`` (into D1) / ``"replace"``; 6 ``gradient_channels``;
    7 ``prftm_activation``; 8 three parallel RGCLs (the channel-split alternative is not built);
    9 ``fuse_kernel`` 1 / 3; 10 ``mbrb_activation="relu"`` / ``"leaky_relu"``; 11 ``rgcl_sigma``
    ``"literal"`` / ``"gate"`` / ``"none"``; 12 ``rgcl_recurrence="residual"`` / ``"iterate"``,
    ``rgcl_steps`` 3 (weights always shared); 13 ``slope``; 14 ``ca_reduction``, ``ca_bias``;
    15 ``padding="reflect"`` / ``"zero"``; 24 ``init="normal"`` / ``"torch"``.
    ``output_init="zeros"`` (not a paper choice; ``--preset quick`` only) zero-initialises the
    output convolution, so that with ``global_residual=True`` G starts as the identity (otherwise
    the N(0, 0.02) head adds noise of std ~0.5 that a short CPU run spends its steps removing).

    Ablations (paper Table 5; spec §6): ``rgcl_mode="plain"`` (w/o RGCL, 2,738,239 parameters),
    ``mbrb_branches=1`` (w/o MBRBs, 2,128,279), ``use_gradientnet=False`` (w/o GradientNet,
    756,739). ``num_mbrb`` (10) and the widths exist for tests.
    """

    size_multiple = 4

    def __init__(
        self,
        base_channels=64,
        gradient_channels=64,
        num_mbrb=10,
        use_gradientnet=True,
        rgcl_mode="cross",
        rgcl_steps=3,
        rgcl_recurrence="residual",
        rgcl_sigma="literal",
        mbrb_branches=3,
        fuse_kernel=1,
        mbrb_activation="relu",
        prftm_activation=True,
        slope=0.01,
        ca_reduction=16,
        ca_bias=True,
        attachment="residual",
        skip="add",
        upsampling="transposed",
        global_residual=False,
        padding="reflect",
        init="normal",
        output_init=None,
        **kw,
    ):
        super().__init__(**kw)
        _check("attachment", attachment, ATTACHMENTS)
        _check("output_init", output_init, (None, "zeros"))
        _check("skip", skip, SKIPS)
        self.base_channels, self.gradient_channels = base_channels, gradient_channels
        self.num_mbrb, self.use_gradientnet = num_mbrb, bool(use_gradientnet)
        self.rgcl_mode, self.rgcl_steps = rgcl_mode, rgcl_steps
        self.rgcl_recurrence, self.rgcl_sigma = rgcl_recurrence, rgcl_sigma
        self.mbrb_branches, self.fuse_kernel = mbrb_branches, fuse_kernel
        self.mbrb_activation, self.prftm_activation = mbrb_activation, bool(prftm_activation)
        self.slope, self.ca_reduction, self.ca_bias = slope, ca_reduction, bool(ca_bias)
        self.attachment, self.skip, self.upsampling = attachment, skip, upsampling
        self.global_residual, self.padding = bool(global_residual), padding
        self.init, self.output_init = init, output_init
        c = base_channels
        self.e0 = PaddedConv(c, 7, padding, init, name="e0")
        self.e1 = _conv(2 * c, 3, c, init=init, strides=2, name="e1")
        self.e2 = _conv(4 * c, 3, 2 * c, init=init, strides=2, name="e2")
        self.norms = [instance_norm(f"e{i}_norm") for i in range(3)]
        self.gradientnet = None
        if self.use_gradientnet:
            self.gradientnet = GradientNet(
                4 * c,
                gradient_channels,
                num_mbrb,
                4 * c,
                prftm_activation,
                slope,
                ca_reduction,
                ca_bias,
                mbrb=self._mbrb_options(),
                init=init,
                name="gradientnet",
            )
        d1_in = 8 * c if self.use_gradientnet and attachment == "concat" else 4 * c
        widen = 2 if skip == "concat" else 1
        self.d1 = UpStage(2 * c, d1_in, upsampling, init, name="d1")
        self.d0 = UpStage(c, 2 * c * widen, upsampling, init, name="d0")
        self.out = PaddedConv(3, 7, padding, output_init or init, name="out")
        self._out_in = c * widen

    def _mbrb_options(self):
        return {
            "branches": self.mbrb_branches,
            "fuse_kernel": self.fuse_kernel,
            "activation": self.mbrb_activation,
            "rgcl": {
                "mode": self.rgcl_mode,
                "steps": self.rgcl_steps,
                "recurrence": self.rgcl_recurrence,
                "sigma": self.rgcl_sigma,
            },
        }

    def build(self, input_shape):
        c = self.base_channels
        self.e0.build(channels_shape(input_shape[-1]))
        self.e1.build(channels_shape(c))
        self.e2.build(channels_shape(2 * c))
        for norm, width in zip(self.norms, (c, 2 * c, 4 * c), strict=True):
            norm.build(channels_shape(width))
        if self.gradientnet is not None:
            self.gradientnet.build(channels_shape(4 * c))
        self.d1.build(channels_shape(self.d1.in_channels))
        self.d0.build(channels_shape(self.d0.in_channels))
        self.out.build(channels_shape(self._out_in))
        super().build(input_shape)

    def _merge(self, decoded, skip):
        if self.skip == "add":
            return decoded + skip
        return ops.concatenate([decoded, skip], axis=-1)

    def generate(self, blurry, training=False):
        """G on [-1, 1] images: (N, H, W, 3) -> (N, H, W, 3) float32 in [-1, 1] (H, W multiples
        of 4), computed in the model's compute dtype (a direct call skips Keras' autocast)."""
        self.check_input_size(blurry)
        e0 = ops.relu(self.norms[0](self.e0(ops.cast(blurry, self.compute_dtype))))
        e1 = ops.relu(self.norms[1](self.e1(e0)))
        b = ops.relu(self.norms[2](self.e2(e1)))
        if self.gradientnet is not None:
            g = self.gradientnet(b)
            if self.attachment == "residual":
                b = b + g
            elif self.attachment == "concat":
                b = ops.concatenate([b, g], axis=-1)
            else:
                b = g
        d = self._merge(self.d1(b), e1)
        d = self._merge(self.d0(d), e0)
        out = float32_outputs(ops.tanh(self.out(d)))
        if self.global_residual:  # the image skip in float32, as the input was given
            out = ops.clip(ops.cast(blurry, "float32") + out, -1.0, 1.0)
        return out

    def call(self, blurry, training=False):
        """[0, 1] in, ``[restored]`` in [0, 1] out (the registry's contract)."""
        return [(self.generate(2.0 * blurry - 1.0, training=training) + 1.0) * 0.5]  # float32

    def get_config(self):
        return {
            **super().get_config(),
            "base_channels": self.base_channels,
            "gradient_channels": self.gradient_channels,
            "num_mbrb": self.num_mbrb,
            "use_gradientnet": self.use_gradientnet,
            "rgcl_mode": self.rgcl_mode,
            "rgcl_steps": self.rgcl_steps,
            "rgcl_recurrence": self.rgcl_recurrence,
            "rgcl_sigma": self.rgcl_sigma,
            "mbrb_branches": self.mbrb_branches,
            "fuse_kernel": self.fuse_kernel,
            "mbrb_activation": self.mbrb_activation,
            "prftm_activation": self.prftm_activation,
            "slope": self.slope,
            "ca_reduction": self.ca_reduction,
            "ca_bias": self.ca_bias,
            "attachment": self.attachment,
            "skip": self.skip,
            "upsampling": self.upsampling,
            "global_residual": self.global_residual,
            "padding": self.padding,
            "init": self.init,
            "output_init": self.output_init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class PatchGANCritic(keras.Model):
    """WGAN-GP critic D, DeblurGAN's PatchGAN layout (spec §3, register 16).

    Input (N, H, W, ``in_channels``) float32 in [-1, 1] (3: unconditional, the default; 6 for a
    conditional critic on concat(blurred, image), built by the caller). Five zero-pad-2 4x4
    convolutions: strides 2, 2, 2, 1, 1, widths c, 2c, 4c, 8c, 1 (c = ``base_channels`` = 64);
    LReLU(0.2) after the first four, IN after the 2nd-4th (``norm=False`` removes it); the last is
    linear (``sigmoid=True`` adds the paper wording's sigmoid, incompatible with WGAN-GP). Output
    (N, h, w, 1), 35 x 35 on 256 x 256 ((H/8 + 3) x (W/8 + 3) for multiples of 8); each value sees
    a 70 x 70 px window (receptive field 1 + 3 (1 + 2 + 4 + 8 + 8), pix2pix's 70x70 PatchGAN;
    windows 8 px apart; tested), though IN makes every value depend on the whole image through the
    statistics. 3.61 GMAC per 256 x 256 image; 2,764,737 parameters. The critic value of an image
    is :func:`losses.critic_value` (the mean of the map; the WGAN-GP penalty differentiates that
    mean, see :mod:`training.adversarial`).
    """

    def __init__(
        self,
        base_channels=64,
        in_channels=3,
        norm=True,
        sigmoid=False,
        slope=0.2,
        init="normal",
        **kw,
    ):
        super().__init__(**kw)
        self.base_channels, self.in_channels = base_channels, in_channels
        self.norm, self.sigmoid = bool(norm), bool(sigmoid)
        self.slope, self.init = slope, init
        c = base_channels
        self.widths = (c, 2 * c, 4 * c, 8 * c, 1)
        self.strides = (2, 2, 2, 1, 1)
        ins = (in_channels, *self.widths[:-1])
        self.convs = [
            _conv(w, 4, n, init=init, strides=s, padding="valid", name=f"conv{i}")
            for i, (w, n, s) in enumerate(zip(self.widths, ins, self.strides, strict=True))
        ]
        self.norms = [
            instance_norm(f"norm{i}") if self.norm and i in (1, 2, 3) else None for i in range(5)
        ]

    def build(self, input_shape):
        width = self.in_channels
        for conv, out, norm in zip(self.convs, self.widths, self.norms, strict=True):
            conv.build(channels_shape(width))
            if norm is not None:
                norm.build(channels_shape(out))
            width = out
        super().build(input_shape)

    def call(self, x, training=False):
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = conv(ops.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]))
            if norm is not None:
                x = norm(x)
            if i < 4:
                x = ops.leaky_relu(x, negative_slope=self.slope)
        return float32_outputs(ops.sigmoid(x) if self.sigmoid else x)

    def get_config(self):
        return {
            **precision_free(super().get_config()),
            "base_channels": self.base_channels,
            "in_channels": self.in_channels,
            "norm": self.norm,
            "sigmoid": self.sigmoid,
            "slope": self.slope,
            "init": self.init,
        }


def gradientnet(**overrides):
    """Generator, configuration A (spec §2): 3,496,759 parameters, [0, 1] in and out."""
    return GradientNetGAN(**{"name": "gradientnet", **overrides})


def critic(**overrides):
    """PatchGAN critic (spec §3): 2,764,737 parameters, no sigmoid."""
    return PatchGANCritic(**{"name": "gradientnet_critic", **overrides})


def multiply_adds(height, width, **config) -> int:
    """Conv/transposed-conv weight MACs of one generator forward on a ``height`` x ``width`` image
    (padded to 4 as :func:`models.inference.restore` does); transposed convolutions counted by
    input pixels. 451.22 GMAC at 720x1280 (spec §2.2; the paper's "446.98 G FLOPs")."""
    return flops.count_macs(gradientnet(**config), height, width)
