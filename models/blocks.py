"""Layers shared by several papers.

Everything here uses ``keras.layers`` and ``keras.ops`` only, so the models run under the
TensorFlow, JAX and PyTorch backends of Keras 3. Tensors are NHWC, float32 or the
mixed-precision policy's compute dtype inside a model; every model's outputs are float32.

Initialisation presets (``init`` argument):

* ``"glorot"``: Keras defaults, Glorot-uniform kernels and zero biases. This is the Xavier
  initialisation that IDC, Two-Way and SRN (TensorFlow papers) state.
* ``"torch"``: PyTorch's default for ``nn.Conv2d`` / ``nn.ConvTranspose2d``: kernels and biases
  uniform in +-1/sqrt(fan_in) (Kaiming-uniform with a = sqrt(5)). Used by the PyTorch papers
  (MIMO-UNet) so that training from scratch starts from the official distribution.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

INIT_PRESETS = ("glorot", "torch")


@keras.saving.register_keras_serializable(package="deblur")
class DeblurModel(keras.Model):
    """Base class of every deblurring network in the registry.

    Subclasses map an (N, H, W, 3) float32 image in [0, 1] to a list of restored images ordered
    coarse to fine (the last is full resolution) and set ``size_multiple``, the side multiple their
    ``call`` accepts (:func:`models.inference.restore` pads other sizes). ``build`` traces ``call``
    symbolically, so ``model.build((None, None, None, 3))`` creates every weight without data.
    """

    size_multiple = 1

    def build(self, input_shape):
        if not self.built:
            # Unknown sides become a valid size: some backends trace None as an arbitrary size.
            shape = [d if d is not None else 2 * self.size_multiple for d in input_shape]
            self.compute_output_spec(keras.KerasTensor(tuple(shape), dtype=self.compute_dtype))
        super().build(input_shape)

    def get_config(self):
        return precision_free(super().get_config())

    def check_input_size(self, x):
        """Raises a clear ``ValueError`` if a static side is not a multiple of ``size_multiple``."""
        for side, size in (("height", x.shape[1]), ("width", x.shape[2])):
            if size is not None and size % self.size_multiple:
                raise ValueError(
                    f"{type(self).__name__} needs H and W to be multiples of "
                    f"{self.size_multiple}, got {side} {size}. Use "
                    "models.inference.restore(model, x), which pads and crops back."
                )


def float32_outputs(outputs):
    """A model's output (a tensor, or a list / tuple of them) cast to float32.

    Every model ends with this: under a mixed-precision policy (:mod:`precision`) the network
    computes in bfloat16 / float16, and whatever reads its outputs (losses, metrics, the blur
    operator, conjugate gradients, image files) gets float32. A no-op in float32.
    """
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(float32_outputs(output) for output in outputs)
    return ops.cast(outputs, "float32")


def precision_free(config: dict) -> dict:
    """A model's ``get_config`` without its dtype policy: a model saved (``.keras``) under one
    precision loads under the policy in force when it is loaded, like its weight files."""
    return {key: value for key, value in config.items() if key != "dtype"}


def initializers(init: str, fan_in: int) -> dict:
    """Returns the ``kernel_initializer`` / ``bias_initializer`` pair of an init preset.

    ``fan_in`` is kernel_h * kernel_w * (second-to-last kernel axis): input channels for a
    ``Conv2D``, output channels for a ``Conv2DTranspose`` (as in PyTorch).
    """
    if init == "glorot":
        return {"kernel_initializer": "glorot_uniform", "bias_initializer": "zeros"}
    if init == "torch":
        return {
            "kernel_initializer": keras.initializers.VarianceScaling(
                scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
            ),
            "bias_initializer": keras.initializers.RandomUniform(
                -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in)
            ),
        }
    raise ValueError(f"Unknown init preset {init!r}; expected one of {INIT_PRESETS}.")


def conv(
    filters, kernel_size, in_channels, *, strides=1, activation=None, init="glorot", name=None
):
    """A biased ``Conv2D`` with "same" padding (symmetric k//2 at stride 1)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        activation=activation,
        name=name,
        **initializers(init, kernel_size * kernel_size * in_channels),
    )


def deconv(filters, kernel_size, *, strides=2, activation=None, init="glorot", name=None):
    """A biased ``Conv2DTranspose`` with "same" padding: output exactly ``strides`` x the input."""
    return layers.Conv2DTranspose(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        activation=activation,
        name=name,
        **initializers(init, kernel_size * kernel_size * filters),
    )


@keras.saving.register_keras_serializable(package="deblur")
class SymmetricStridedConv(layers.Layer):
    """Strided convolution with PyTorch's symmetric zero padding ``k // 2`` on every side.

    TensorFlow's ``padding="same"`` at stride 2 on an even size pads 0 before and 1 after, which
    shifts the sampling grid by one pixel against PyTorch's ``padding=k//2``. Input NHWC.
    """

    def __init__(self, filters, kernel_size=3, strides=2, activation=None, init="glorot", **kw):
        super().__init__(**kw)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.activation, self.init = activation, init
        self.conv = None

    def build(self, input_shape):
        self.conv = layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            activation=self.activation,
            name="conv",
            **initializers(self.init, self.kernel_size**2 * input_shape[-1]),
        )
        pad = self.kernel_size // 2
        padded = list(input_shape)
        for axis in (1, 2):
            padded[axis] = None if input_shape[axis] is None else input_shape[axis] + 2 * pad
        self.conv.build(tuple(padded))

    def call(self, x):
        pad = self.kernel_size // 2
        return self.conv(ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]))

    def compute_output_shape(self, input_shape):
        def out(size):
            return (
                None
                if size is None
                else (size + 2 * (self.kernel_size // 2) - self.kernel_size) // self.strides + 1
            )

        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "activation": self.activation,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class ResBlock(layers.Layer):
    """Residual block ``x + conv(relu(conv(x)))`` at constant width; no normalisation.

    This is both MIMO-UNet's "modified residual block" (3x3, official ``ResBlock``) and SRN's
    ResBlock used by IDC (5x5) and Two-Way (3x3): identity add, no activation after the add.
    """

    def __init__(self, channels, kernel_size=3, init="glorot", **kw):
        super().__init__(**kw)
        self.channels, self.kernel_size, self.init = channels, kernel_size, init
        self.conv1 = conv(
            channels, kernel_size, channels, activation="relu", init=init, name="conv1"
        )
        self.conv2 = conv(channels, kernel_size, channels, init=init, name="conv2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(input_shape[:-1] + (self.channels,))

    def call(self, x):
        return x + self.conv2(self.conv1(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "kernel_size": self.kernel_size,
            "init": self.init,
        }


@keras.saving.register_keras_serializable(package="deblur")
class ResGroup(layers.Layer):
    """A plain chain of ``num_blocks`` :class:`ResBlock` at constant width (MIMO-UNet's EB/DB)."""

    def __init__(self, channels, num_blocks, kernel_size=3, init="glorot", **kw):
        super().__init__(**kw)
        self.channels, self.num_blocks = channels, num_blocks
        self.kernel_size, self.init = kernel_size, init
        self.blocks = [
            ResBlock(channels, kernel_size, init=init, name=f"res{i}") for i in range(num_blocks)
        ]

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "num_blocks": self.num_blocks,
            "kernel_size": self.kernel_size,
            "init": self.init,
        }


def strided_shape(input_shape, strides, channels):
    """Output shape (N, ceil(H/s), ceil(W/s), channels) of a "same" stride-``s`` layer (NHWC)."""

    def out(size):
        return None if size is None else -(-size // strides)

    return (input_shape[0], out(input_shape[1]), out(input_shape[2]), channels)


def subsample2(x):
    """Nearest 0.5x: keeps pixel (2i, 2j), the top-left of each 2x2 block (PyTorch's nearest)."""
    return x[:, ::2, ::2, :]


def repeat2(x):
    """Nearest 2x: each pixel copied to a 2x2 block."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def resize_bilinear(x, height, width):
    """Bilinear resize with half-pixel centres and no antialiasing.

    This is PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` and TF2's
    ``tf.image.resize(..., "bilinear", antialias=False)``. On an even size, halving gives exactly
    the 2x2 box mean. ``height``/``width`` may be scalar tensors (dynamic shapes in a traced
    function), which ``keras.ops.image.resize`` refuses; a gather-based resize is used then.
    """
    if isinstance(height, int) and isinstance(width, int):
        return ops.image.resize(
            x,
            (height, width),
            interpolation="bilinear",
            antialias=False,
            data_format="channels_last",
        )
    return _dynamic_resize_bilinear(x, height, width)


def _dynamic_resize_bilinear(x, height, width):
    """Separable half-pixel bilinear resize written with gathers, for sizes known only at run time.

    Same sampling as ``ops.image.resize(..., "bilinear", antialias=False)``: output pixel i reads
    the source at (i + 0.5) * in / out - 0.5, clamped to the image.
    """
    x = _resize_axis(x, ops.shape(x)[1], height, axis=1)
    return _resize_axis(x, ops.shape(x)[2], width, axis=2)


def _resize_axis(x, size_in, size_out, axis):
    scale = ops.cast(size_in, "float32") / ops.cast(size_out, "float32")
    source = (ops.cast(ops.arange(size_out), "float32") + 0.5) * scale - 0.5
    source = ops.maximum(source, 0.0)
    lower = ops.cast(ops.floor(source), "int32")
    upper = ops.minimum(lower + 1, size_in - 1)
    weight = ops.reshape(
        source - ops.cast(lower, "float32"), [-1 if a == axis else 1 for a in range(4)]
    )
    weight = ops.cast(weight, x.dtype)
    return ops.take(x, lower, axis=axis) * (1 - weight) + ops.take(x, upper, axis=axis) * weight


def image_pyramid(x, num_scales=3, mode="sequential"):
    """Bilinear image pyramid of an NHWC batch, ordered coarse to fine ``[1/4, 1/2, 1]``.

    Args:
        x: (N, H, W, C) tensor; H and W may be dynamic (unknown when traced).
        num_scales: number of levels (level k is ``H // 2**k``).
        mode: ``"sequential"`` halves the previous level each time (IDC / Two-Way: "two
            downsamplings of the original blurred image"; level 1/4 is the 4x4 box mean on sizes
            divisible by 4); ``"direct"`` resizes the full image straight to each size (SRN code,
            and MIMO-UNet's loss labels, where level 1/4 is the mean of the central 2x2 of each 4x4
            block).
    """
    if mode not in ("sequential", "direct"):
        raise ValueError(f"Unknown pyramid mode {mode!r}; expected 'sequential' or 'direct'.")
    height, width = spatial_size(x)
    levels = [x]
    for k in range(1, num_scales):
        source = levels[-1] if mode == "sequential" else x
        levels.append(resize_bilinear(source, height // 2**k, width // 2**k))
    return levels[::-1]


def spatial_size(x):
    """(H, W) of an NHWC tensor: Python ints when static, scalar tensors when dynamic."""
    dynamic = ops.shape(x)
    return tuple(x.shape[a] if x.shape[a] is not None else dynamic[a] for a in (1, 2))
