"""Reusable checks applied to every registered model (tiny configurations in tests).

Each helper takes a model *builder* (a zero-argument callable) or a built model and asserts one
property: output shapes at any size, ``get_config`` round trip, ``.keras`` save/load equality,
gradient flow. Images are NHWC float32 in [0, 1].
"""

from __future__ import annotations

import keras
import numpy as np

from models import inference

ODD_SIZES = ((37, 53), (1, 1), (5, 18))


def random_images(height, width, batch=1, seed=0):
    """A reproducible (batch, height, width, 3) float32 batch in [0, 1)."""
    return np.random.default_rng(seed).random((batch, height, width, 3), dtype=np.float32)


def assert_multiscale_shapes(model, height, width, scales=(4, 2, 1)):
    """A direct call on a valid size returns one image per scale, coarse to fine."""
    outputs = model(random_images(height, width, batch=2))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    expected = [(2, height // s, width // s, 3) for s in scales]
    assert [tuple(o.shape) for o in outputs] == expected


def assert_any_size(model, sizes=ODD_SIZES):
    """``inference.restore`` pads to the model's multiple and crops back for any H x W."""
    for height, width in sizes:
        out = inference.restore(model, random_images(height, width))
        assert tuple(out.shape) == (1, height, width, 3), (height, width)
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def assert_bad_size_raises(model):
    """A direct call on a size that is not a multiple names the rule instead of failing deep."""
    multiple = inference.size_multiple(model)
    if multiple <= 1:
        return
    try:
        model(random_images(multiple + 1, multiple))
    except ValueError as error:
        assert f"multiples of {multiple}" in str(error)
    else:
        raise AssertionError("a bad input size did not raise")


def assert_config_round_trip(model):
    """``from_config(get_config())`` rebuilds the same architecture and the same config."""
    config = model.get_config()
    clone = type(model).from_config(config)
    clone.build((None, None, None, 3))
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def assert_keras_save_load(model, path, height, width):
    """A ``.keras`` save and reload gives bit-identical outputs at every scale."""
    x = random_images(height, width)
    before = model(x)
    model.save(path)
    reloaded = keras.saving.load_model(path)
    after = reloaded(x)
    before = before if isinstance(before, (list, tuple)) else [before]
    after = after if isinstance(after, (list, tuple)) else [after]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
