"""SEN, the Stacked Estimate residual Net of Wu, Di, Huang and Zhang, "Integrating neural networks
into the blind deblurring framework to compete with end-to-end learning-based methods" (arXiv
1903.02731, IEEE TIP 2020), paper §3 and Appendix A; spec ``sen_rpgan.md`` §4 and register §12.

SEN regresses a per-pixel motion-flow map from a blurred image (no public code exists; the network
is built from Appendix A's layer list and Fig. 8):

* input: (N, H, W, 3) float, the blurred RGB image in [0, 1], any H, W >= 1;
* output: (N, H, W, 2) float (the model's compute dtype), the flow of the **last** stack in pixels
  of the full-resolution image: channel 0 = u (horizontal, positive to the right), channel 1 = v
  (vertical, positive downwards), in Gong et al.'s ``uv_half`` encoding (u >= 0, spec §2). It is a
  regression output (eq. 1, MSE against the label) and is not clipped.

One stack (:class:`SENStack`, spec §4 table; widths for ``width_divisor=1``): three dilated CBR
layers (7x7x64 stride 1, 5x5x128 stride 2, 5x5x256 stride 2 -> a0 at H/4), four max-pool + Res2
levels (256 -> a1, 512 -> a2, 512 -> a3, 512 at H/64), four nearest x2 up-samplings each followed
by a concatenation with a3, a2, a1, a0 and a Res2 (512, 512, 256, 128), Res2(64), Res2out(2) at H/4,
bilinear x4 to H x W. Stack 1 reads O (3 channels), stack 2 reads concat(O, U1) (5 channels).

Register choices (spec §12; also in docs/fidelity.md):

* #1 dilation rates: 2 for the three front layers (paper: "three dilated convolution layers", rates
  not given); ``dilation_rates`` changes them.
* #2 a stride-2 dilated convolution (Keras cannot combine stride > 1 with dilation > 1) is
  decimation ``x[:, ::2, ::2]`` followed by a stride-1 "same" convolution with dilation d / 2:
  exactly PyTorch's stride-2, dilation-d convolution with padding d (k - 1) / 2, at the strided
  cost. Odd rates use the alternative (stride-1 dilated "same" conv, then decimation; 4x the cost,
  same result); rate 1 is a stride-2 conv after an explicit symmetric pad (k - 1) / 2 (PyTorch's
  grid).
* #3 output resolution: the Appendix's layers end at H/4 while eq. (1) regresses H x W; by default
  each stack up-samples its H/4 map bilinearly x4 (half-pixel centres, values unchanged: they are
  already full-resolution displacements) and the loss is taken at full resolution.
  ``sen_output="quarter"``: :meth:`SEN.stack_outputs` returns the H/4 maps (loss at 1/4 against
  the label averaged over 4x4 blocks, ``training.steps.sen_step.quarter_box_label``); stack 2 and
  :meth:`SEN.call` still use the x4 up-sampled map.
* #4 skips: Fig. 8 draws skip connections the layer list does not place; the encoder tensor entering
  each max-pool (a0..a3) is **concatenated** after the up-sampled tensor of the same resolution,
  before that level's decoder Res2 (additive hourglass skips do not close with the Appendix widths).
  ``sen_skips="none"`` drops them.
* #5 up-sampling "upsample 2*2": nearest x2 (stacked hourglass); ``upsampling="bilinear"``.
* #6 Res2's skip branch: always a CBR 3x3 projection ("+ input * CBR 3*3*c:1"), even when the input
  has c channels; ``res2_skip="identity"`` uses the identity when the channels match (hourglass).
* #7 odd c in Res2: the middle width is ceil(c / 2).
* #8 output blocks: :class:`Res2Out` (the Appendix's "Res2 2") ends in **linear** biased
  convolutions on both branches, since a final BN + ReLU would force the signed flow to be
  non-negative.
* #26 no convolution bias in front of a batch normalisation (CBR).
* #28 zero "same" padding inside the network (PyTorch padding k // 2, times the dilation); the
  image is padded to multiples of 64 (:attr:`SEN.size_multiple`) by **edge replication at the
  bottom and right** inside :meth:`SEN.call` and the flow is cropped back
  (:func:`models.inference.pad_to_multiple`; 1280x720 runs at 1280x768).

Batch normalisation: Keras momentum 0.9 (PyTorch 0.1), epsilon 1e-5, PyTorch's initial values.
A stack with ``trainable = False`` (stack 1 while stack 2 trains, register #9) also runs its BN in
inference mode (moving statistics), as Keras 3 does for any frozen BN. Convolutions use PyTorch's
default initialisation (``init="torch"``, the original being PyTorch; ``"glorot"`` available).

Size (spec §4): stack 1 38,463,395 trainable parameters (38,483,879 with the BN moving statistics),
stack 2 38,469,667 (38,490,151), the default two-stack SEN 76,933,062; 20.67 / 21.08 GMAC per
stack per 256x256 image, 310.04 / 316.21 at 1280x768 (convolution weight MACs,
:mod:`models.flops`). ``width_divisor`` divides every width (not the 2 output channels) for tests.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from models import blocks, flops, inference
from models.blocks import float32_outputs, precision_free, repeat2, resize_bilinear, spatial_size
from models.scale_recurrent import channels_shape

SKIPS = ("concat", "none")
OUTPUTS = ("full", "quarter")
UPSAMPLINGS = ("nearest", "bilinear")
RES2_SKIPS = ("conv", "identity")
INITS = blocks.INIT_PRESETS
BN_MOMENTUM = 0.9  # Keras convention: PyTorch's momentum 0.1
BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default (Keras' is 1e-3)
SIZE_MULTIPLE = 64  # two stride-2 convs and four max-pools
FLOW_CHANNELS = 2


def _check(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _kernel_initializer(init, fan_in):
    return blocks.initializers(init, fan_in)["kernel_initializer"]


@keras.saving.register_keras_serializable(package="deblur")
class PhaseConv2D(layers.Conv2D):
    """CBR's unbiased ``Conv2D``; ``call(x, phases=True)`` also takes the :func:`space_to_batch2`
    phases of an image and convolves each with dilation d / 2: for an even d that is the dilated
    conv of the image, each output phase reading only its own input phase, zero padding included
    (the argument of register #2). Same variables and MAC count (:mod:`models.flops` records
    this call: 4N x H/2 x W/2 output pixels) as the plain dilated call. NHWC.
    """

    def call(self, inputs, phases=False):
        if not phases:
            return super().call(inputs)
        dilation = tuple(d // 2 for d in self.dilation_rate)
        return ops.conv(inputs, self.kernel, 1, self.padding, dilation_rate=dilation)


def space_to_batch2(x):
    """(N, H, W, C) -> (4N, H/2, W/2, C), H and W even: the four pixel phases as batch blocks,
    block 2p + q holding rows p::2 and columns q::2 (block 0 = ``x[:, ::2, ::2]``)."""
    height, width = spatial_size(x)
    channels = x.shape[-1]
    x = ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
    x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
    return ops.reshape(x, (-1, height // 2, width // 2, channels))


@keras.saving.register_keras_serializable(package="deblur")
class CBR(layers.Layer):
    """Appendix A's ``CBR k*k*c:s``: conv (no bias, register #26), BatchNorm, ReLU. NHWC.

    ``dilation_rate`` d dilates the kernel (register #1). Zero padding as PyTorch's
    ``padding = d (k - 1) / 2`` (odd k). ``strides=2`` with an even d is implemented as decimation
    ``x[:, ::2, ::2]`` then a stride-1 conv with dilation d / 2 (register #2): output pixel i of the
    strided, dilated conv reads input rows 2i + d (t - (k - 1) / 2) = 2 (i + d/2 (t - (k - 1) / 2)),
    i.e. only even rows, and a row is out of range in the input exactly when its half is out of
    range in the decimated input, so zero padding agrees too. Odd d > 1: stride-1 dilated conv then
    decimation (same result, 4x cost); d = 1: explicit symmetric pad, then a stride-2 valid conv.
    """

    def __init__(self, filters, kernel_size=3, strides=1, dilation_rate=1, init="torch", **kw):
        super().__init__(**kw)
        _check("strides", strides, (1, 2))
        _check("init", init, INITS)
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        if dilation_rate < 1:
            raise ValueError(f"dilation_rate must be >= 1, got {dilation_rate}.")
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.dilation_rate, self.init = int(strides), int(dilation_rate), init
        self.conv = None
        self.bn = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn")

    @property
    def mode(self):
        """How the conv is applied: ``"conv"`` (stride 1), ``"decimate_conv"`` (stride 2, even
        dilation), ``"pad_strided"`` (stride 2, no dilation), ``"conv_decimate"`` (stride 2, odd
        dilation > 1)."""
        if self.strides == 1:
            return "conv"
        if self.dilation_rate % 2 == 0:
            return "decimate_conv"
        return "pad_strided" if self.dilation_rate == 1 else "conv_decimate"

    def build(self, input_shape):
        mode = self.mode
        dilation = self.dilation_rate // 2 if mode == "decimate_conv" else self.dilation_rate
        self.conv = PhaseConv2D(
            self.filters,
            self.kernel_size,
            strides=2 if mode == "pad_strided" else 1,
            padding="valid" if mode == "pad_strided" else "same",
            dilation_rate=dilation,
            use_bias=False,
            kernel_initializer=_kernel_initializer(
                self.init, self.kernel_size**2 * input_shape[-1]
            ),
            name="conv",
        )
        self.conv.build(channels_shape(input_shape[-1]))
        self.bn.build(channels_shape(self.filters))

    @property
    def phased(self):
        """Whether :meth:`phases` applies: a stride-1 conv with an even dilation."""
        return self.mode == "conv" and self.dilation_rate % 2 == 0

    def _convolve(self, x, decimated=False):
        """The conv; ``decimated``: ``x`` is already ``x[:, ::2, ::2]`` (mode decimate_conv)."""
        mode = self.mode
        if mode == "decimate_conv":
            return self.conv(x if decimated else x[:, ::2, ::2, :])
        if mode == "pad_strided":
            pad = self.kernel_size // 2
            return self.conv(ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]))
        y = self.conv(x)
        return y[:, ::2, ::2, :] if mode == "conv_decimate" else y

    def call(self, x, training=None, decimated=False):
        """``decimated``: ``x`` is the decimated input of a ``decimate_conv`` layer (the
        stack hands over phase 0 of :meth:`phases`, so the full-resolution tensor is never
        sliced)."""
        return ops.relu(self.bn(self._convolve(x, decimated), training=training))

    def phases(self, x, training=None):
        """:meth:`call` of an even-dilated stride-1 CBR (:attr:`phased`) in the phase layout:
        (N, H, W, C) -> (4N, H/2, W/2, filters), block 0 = ``call(x)[:, ::2, ::2]`` (H, W even).
        The same pixels and BN statistics as :meth:`call`, without TensorFlow's space-to-batch
        round trip of the full-resolution output."""
        y = self.conv(space_to_batch2(x), phases=True)
        # One BN over the 4N phases: the same pixels, so the same batch statistics.
        return ops.relu(self.bn(y, training=training))

    def compute_output_shape(self, input_shape):
        return blocks.strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class Res2(layers.Layer):
    """Appendix A's ``Res2 c`` (the stacked-hourglass residual module with 3x3 kernels). NHWC.

    main = CBR(3, m) -> CBR(3, m) -> CBR(3, c), m = ceil(c / 2) (register #7); skip = CBR(3, c) on
    the block input ("+ input * CBR 3*3*c:1", register #6: present even when the input already has
    c channels; ``skip="identity"`` uses the input itself when it has c channels); output =
    main + skip, nothing after the add. Any input width (the decoder blocks absorb the
    concatenated skips through both branches).
    """

    def __init__(self, channels, skip="conv", init="torch", **kw):
        super().__init__(**kw)
        _check("res2_skip", skip, RES2_SKIPS)
        self.channels, self.skip, self.init = int(channels), skip, init
        mid = math.ceil(self.channels / 2)
        self.cbr1 = CBR(mid, 3, init=init, name="cbr1")
        self.cbr2 = CBR(mid, 3, init=init, name="cbr2")
        self.cbr3 = CBR(self.channels, 3, init=init, name="cbr3")
        self.projection = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.cbr1.build(channels_shape(in_channels))
        self.cbr2.build(channels_shape(self.cbr1.filters))
        self.cbr3.build(channels_shape(self.cbr2.filters))
        if self.skip == "conv" or in_channels != self.channels:
            self.projection = CBR(self.channels, 3, init=self.init, name="projection")
            self.projection.build(channels_shape(in_channels))

    def call(self, x, training=None):
        main = self.cbr1(x, training=training)
        main = self.cbr3(self.cbr2(main, training=training), training=training)
        skip = x if self.projection is None else self.projection(x, training=training)
        return main + skip

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "skip": self.skip,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class Res2Out(layers.Layer):
    """The Appendix's last "Res2 2" as an output block (register #8). NHWC, linear output.

    main = CBR(3, m) -> CBR(3, m) -> **linear** biased 3x3 conv to c, m = ceil(c / 2) (1 for the
    flow's c = 2); skip = **linear** biased 3x3 conv of the input to c; output = main + skip. A
    final BN + ReLU (the literal Res2) would make the signed flow non-negative.
    """

    def __init__(self, channels=FLOW_CHANNELS, init="torch", **kw):
        super().__init__(**kw)
        self.channels, self.init = int(channels), init
        mid = math.ceil(self.channels / 2)
        self.cbr1 = CBR(mid, 3, init=init, name="cbr1")
        self.cbr2 = CBR(mid, 3, init=init, name="cbr2")
        self.conv = blocks.conv(self.channels, 3, mid, init=init, name="conv")
        self.projection = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.cbr1.build(channels_shape(in_channels))
        self.cbr2.build(channels_shape(self.cbr1.filters))
        self.conv.build(channels_shape(self.cbr2.filters))
        self.projection = blocks.conv(
            self.channels, 3, in_channels, init=self.init, name="projection"
        )
        self.projection.build(channels_shape(in_channels))

    def call(self, x, training=None):
        main = self.conv(self.cbr2(self.cbr1(x, training=training), training=training))
        return main + self.projection(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "init": self.init}


@keras.saving.register_keras_serializable(package="deblur")
class SENStack(layers.Layer):
    """One SEN stack (spec §4 table, Appendix A "Stack 1", Fig. 8).

    Input (N, H, W, C) with H, W multiples of 64: the image (C = 3, stack 1) or concat(image, flow)
    (C = 5, later stacks); the width of the input is taken at build time. Output (N, H, W, 2), the
    flow in full-resolution pixels (``output_resolution="full"``), or the (N, H/4, W/4, 2) map
    before the bilinear x4 (``"quarter"``). Arguments are those of :class:`SEN` (``skips`` =
    ``sen_skips``, ``output_resolution`` = ``sen_output``).
    """

    def __init__(
        self,
        skips="concat",
        output_resolution="full",
        dilation_rates=(2, 2, 2),
        upsampling="nearest",
        width_divisor=1,
        res2_skip="conv",
        init="torch",
        **kw,
    ):
        super().__init__(**kw)
        _check("sen_skips", skips, SKIPS)
        _check("sen_output", output_resolution, OUTPUTS)
        _check("upsampling", upsampling, UPSAMPLINGS)
        if len(dilation_rates) != 3:
            raise ValueError(f"dilation_rates needs 3 rates, got {list(dilation_rates)}.")
        if int(width_divisor) < 1:
            raise ValueError(f"width_divisor must be >= 1, got {width_divisor}.")
        self.skips, self.output_resolution = skips, output_resolution
        self.upsampling = upsampling
        self.dilation_rates = tuple(int(d) for d in dilation_rates)
        self.width_divisor, self.res2_skip, self.init = int(width_divisor), res2_skip, init

        def width(c):
            return max(1, c // self.width_divisor)

        def res2(c, name):
            return Res2(width(c), res2_skip, init, name=name)

        self.front = [
            CBR(width(c), k, s, d, init, name=f"front{i + 1}")
            for i, (c, k, s, d) in enumerate(
                zip((64, 128, 256), (7, 5, 5), (1, 2, 2), self.dilation_rates, strict=True)
            )
        ]
        self.down = [res2(c, f"down{i + 1}") for i, c in enumerate((256, 512, 512, 512))]
        self.up = [res2(c, f"up{i + 1}") for i, c in enumerate((512, 512, 256, 128))]
        self.head = res2(64, "head")
        self.out = Res2Out(FLOW_CHANNELS, init, name="out")

    def build(self, input_shape):
        width = input_shape[-1]
        for layer in self.front:
            layer.build(channels_shape(width))
            width = layer.filters
        skip_widths = [width]  # a0, a1, a2, a3: the tensors entering each max-pool
        for layer in self.down:
            layer.build(channels_shape(width))
            width = layer.channels
            skip_widths.append(width)
        for layer, skip in zip(self.up, skip_widths[-2::-1], strict=True):
            layer.build(channels_shape(width + (skip if self.skips == "concat" else 0)))
            width = layer.channels
        self.head.build(channels_shape(width))
        self.out.build(channels_shape(self.head.channels))

    def _upsample2(self, x):
        if self.upsampling == "nearest":
            return repeat2(x)
        height, width = spatial_size(x)
        return resize_bilinear(x, 2 * height, 2 * width)

    def _front_layers(self, x, training):
        """The three front CBRs. When the first is even-dilated at stride 1 and the second
        decimates its input, the first runs in phases and hands over phase 0 (the only pixels the
        second reads): no slicing and no space-to-batch round trip of its full-resolution
        output."""
        first, second, *rest = self.front
        if first.phased and second.mode == "decimate_conv":
            phase0 = first.phases(x, training=training)[: ops.shape(x)[0]]
            x = second(phase0, training=training, decimated=True)
        else:
            x = second(first(x, training=training), training=training)
        for layer in rest:
            x = layer(x, training=training)
        return x

    def call(self, x, training=None):
        x = self._front_layers(x, training)
        skips = []
        for layer in self.down:
            skips.append(x)
            x = layer(ops.max_pool(x, 2, 2, padding="valid"), training=training)
        for layer, skip in zip(self.up, reversed(skips), strict=True):
            x = self._upsample2(x)
            if self.skips == "concat":
                x = ops.concatenate([x, skip], axis=-1)
            x = layer(x, training=training)
        flow = self.out(self.head(x, training=training), training=training)
        return upsample4(flow) if self.output_resolution == "full" else flow

    def compute_output_shape(self, input_shape):
        scale = 1 if self.output_resolution == "full" else 4

        def out(size):
            return None if size is None else size // scale

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), FLOW_CHANNELS)

    def get_config(self):
        return {
            **super().get_config(),
            "skips": self.skips,
            "output_resolution": self.output_resolution,
            "dilation_rates": list(self.dilation_rates),
            "upsampling": self.upsampling,
            "width_divisor": self.width_divisor,
            "res2_skip": self.res2_skip,
            "init": self.init,
        }


def upsample4(flow):
    """Bilinear x4 with half-pixel centres (register #3), values unchanged: (N, h, w, C) ->
    (N, 4h, 4w, C). The values are already displacements in full-resolution pixels."""
    height, width = spatial_size(flow)
    return resize_bilinear(flow, 4 * height, 4 * width)


@keras.saving.register_keras_serializable(package="deblur")
class SEN(keras.Model):
    """The Stacked Estimate residual Net (paper §3, Appendix A; spec §4). See the module docstring
    for the layout, the value range and every register choice.

    ``call(images)``: (N, H, W, 3) float in [0, 1], any H, W -> (N, H, W, 2) flow (pixels,
    ``uv_half``) of the last stack. :meth:`stack_outputs` returns every stack's output (the training
    targets of eq. 1). ``model.stacks[i]`` is stack i + 1; ``model.stacks[0].trainable = False``
    freezes stack 1 (weights and BN statistics) while stack 2 trains (register #9). U1 is not
    detached: with both stacks trainable (joint fine-tuning) stack 2's loss reaches stack 1.

    Args:
        num_stacks: stacks (2, "we take two stacks in practice"); stack s > 1 reads
            concat(image, U_{s-1}) with U_{s-1} at full resolution.
        sen_skips: ``"concat"`` (register #4 default) or ``"none"``.
        sen_output: ``"full"`` (register #3 default) or ``"quarter"``.
        dilation_rates: the three front layers' rates (register #1), default (2, 2, 2).
        upsampling: ``"nearest"`` (register #5 default) or ``"bilinear"`` x2 in the decoder.
        width_divisor: every width c becomes max(1, c // width_divisor) (tests use 16).
        res2_skip: ``"conv"`` (register #6 default) or ``"identity"``.
        init: ``"torch"`` (PyTorch's default initialisation) or ``"glorot"``.
    """

    size_multiple = SIZE_MULTIPLE

    def __init__(
        self,
        num_stacks=2,
        sen_skips="concat",
        sen_output="full",
        dilation_rates=(2, 2, 2),
        upsampling="nearest",
        width_divisor=1,
        res2_skip="conv",
        init="torch",
        **kw,
    ):
        super().__init__(**kw)
        if int(num_stacks) < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}.")
        self.num_stacks, self.sen_skips, self.sen_output = int(num_stacks), sen_skips, sen_output
        self.dilation_rates = tuple(int(d) for d in dilation_rates)
        self.upsampling, self.width_divisor = upsampling, int(width_divisor)
        self.res2_skip, self.init = res2_skip, init
        self.stacks = [
            SENStack(
                sen_skips,
                sen_output,
                self.dilation_rates,
                upsampling,
                self.width_divisor,
                res2_skip,
                init,
                name=f"stack{i + 1}",
            )
            for i in range(self.num_stacks)
        ]

    def build(self, input_shape):
        # Explicit builds: no symbolic trace of 77M parameters' worth of layers.
        channels = input_shape[-1] or 3
        for i, stack in enumerate(self.stacks):
            if not stack.built:
                stack.build(channels_shape(channels if i == 0 else channels + FLOW_CHANNELS))
        super().build(input_shape)

    def _forward(self, images, training):
        """Runs every stack on the padded image: (list of padded outputs, last full flow)."""
        images = ops.cast(ops.convert_to_tensor(images), self.compute_dtype)
        if not self.built:  # stack_outputs bypasses __call__, which builds
            self.build(images.shape)
        padded = inference.pad_to_multiple(images, self.size_multiple)
        outputs, flow = [], None
        for stack in self.stacks:
            x = padded if flow is None else ops.concatenate([padded, flow], axis=-1)
            outputs.append(stack(x, training=training))
            flow = outputs[-1] if self.sen_output == "full" else upsample4(outputs[-1])
        return outputs, flow

    def call(self, images, training=None):
        height, width = spatial_size(images)
        _, flow = self._forward(images, training)
        return float32_outputs(inference.crop_to(flow, height, width))

    def stack_outputs(self, images, training=None):
        """Every stack's output, cropped back: (N, H, W, 2) each for ``sen_output="full"``,
        (N, ceil(H/4), ceil(W/4), 2) for ``"quarter"`` (quarter pixel (i, j) stands for the
        full-resolution rows 4i..4i+3, columns 4j..4j+3)."""
        height, width = spatial_size(images)
        if self.sen_output == "quarter":
            height, width = (height + 3) // 4, (width + 3) // 4
        outputs, _ = self._forward(images, training)
        return float32_outputs([inference.crop_to(out, height, width) for out in outputs])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (FLOW_CHANNELS,)

    def get_config(self):
        return {
            **precision_free(super().get_config()),
            "num_stacks": self.num_stacks,
            "sen_skips": self.sen_skips,
            "sen_output": self.sen_output,
            "dilation_rates": list(self.dilation_rates),
            "upsampling": self.upsampling,
            "width_divisor": self.width_divisor,
            "res2_skip": self.res2_skip,
            "init": self.init,
        }


def sen(**overrides):
    """SEN with the spec §4 defaults: two stacks, 76,933,062 trainable parameters."""
    return SEN(**{"name": "sen", **overrides})


def multiply_adds(height, width, **config) -> int:
    """Convolution weight MACs of one forward on a ``height`` x ``width`` image padded to 64
    (:mod:`models.flops`): 41.75 GMAC per 256x256 for the default two stacks (20.67 + 21.08)."""
    return flops.count_macs(sen(**config), height, width)
