"""Analytic multiply-accumulate (MAC) counts of a built Keras model's convolutions.

:func:`conv_costs` traces the model's forward symbolically (``compute_output_spec``: no pixel is
computed, so 1280×720 costs the same as 16×16) on a (batch, H, W, 3) input, records the static
input and output shape of every ``Conv2D`` / ``Conv2DTranspose`` call (a layer shared across scales
is recorded once per call) and returns one :class:`ConvCost` per call. Counted: kernel-weight
multiply-accumulates only, ``pixels × k_h × k_w × C_in / groups × C_out``; biases, activations,
additions, resizes and concatenations are not. A conv counts its output pixels; a transposed conv
counts its **input** pixels (every input pixel meets every kernel tap once: the true MAC count, the
convention of the project specs) or, with ``transposed_by="output"``, its output pixels (PyTorch's
``thop`` convention, 4× for stride 2). Other layer types (depthwise, dense, 1-D/3-D convs) are not
counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import keras
from keras import layers

from models import inference

TRANSPOSED_CONVENTIONS = ("input", "output")


@dataclasses.dataclass(frozen=True)
class ConvCost:
    """One convolution call: the layer's path, its input/output shapes (NHWC) and its MACs."""

    path: str
    transposed: bool
    input_shape: tuple
    output_shape: tuple
    macs: int


def conv_costs(model, height, width, *, batch=1, channels=3, transposed_by="input"):
    """Per-call convolution costs of one forward of ``model`` on a ``height`` x ``width`` input.

    The size is first padded up to the model's ``size_multiple``, as
    :func:`models.inference.restore` does before calling it. The model is built if needed.

    Returns:
        list of :class:`ConvCost`, in call order.
    """
    if transposed_by not in TRANSPOSED_CONVENTIONS:
        raise ValueError(f"transposed_by must be one of {TRANSPOSED_CONVENTIONS}.")
    multiple = inference.size_multiple(model)
    height, width = (math.ceil(s / multiple) * multiple for s in (height, width))
    if not model.built:
        model.build((None, None, None, channels))
    calls = []
    convs = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))
    ]
    with _recording(convs, calls):
        _Forward(model).compute_output_spec(keras.KerasTensor((batch, height, width, channels)))
    return [
        _cost(layer, shape_in, shape_out, transposed_by) for layer, shape_in, shape_out in calls
    ]


def count_macs(model, height, width, **options) -> int:
    """Total convolution MACs of one forward (see :func:`conv_costs` for the options)."""
    return sum(cost.macs for cost in conv_costs(model, height, width, **options))


class _Forward(layers.Layer):
    """Runs ``model.__call__`` inside a symbolic trace.

    ``Layer.compute_output_spec`` traces ``call`` on placeholders, so every sub-layer's ``call``
    runs; a Functional model's own ``compute_output_spec`` would only propagate shapes.
    """

    def __init__(self, model):
        super().__init__(name="flops_forward")
        self.model = model

    def call(self, x):
        return self.model(x)


@contextlib.contextmanager
def _recording(convs, calls):
    """Wraps each layer's ``call`` (an instance attribute, so the class is untouched) to log
    ``(layer, input shape, output shape)``; Keras has no forward hooks."""
    for layer in convs:
        object.__setattr__(layer, "call", _logged(layer, layer.call, calls))
    try:
        yield
    finally:
        for layer in convs:
            object.__delattr__(layer, "call")


def _logged(layer, call, calls):
    def wrapper(inputs, *args, **kwargs):
        outputs = call(inputs, *args, **kwargs)
        calls.append((layer, tuple(inputs.shape), tuple(outputs.shape)))
        return outputs

    return wrapper


def _cost(layer, shape_in, shape_out, transposed_by):
    transposed = isinstance(layer, layers.Conv2DTranspose)
    spatial = slice(1, 3) if layer.data_format == "channels_last" else slice(2, 4)
    channel = -1 if layer.data_format == "channels_last" else 1
    by_input = transposed and transposed_by == "input"
    counted = shape_in if by_input else shape_out
    if None in counted[:1] + counted[spatial]:
        raise ValueError(f"{layer.path}: dynamic shape {counted}; pass static sizes.")
    pixels = counted[0] * math.prod(counted[spatial])
    groups = getattr(layer, "groups", 1)
    per_pixel = math.prod(layer.kernel_size) * shape_in[channel] // groups * shape_out[channel]
    return ConvCost(layer.path, transposed, shape_in, shape_out, pixels * per_pixel)
