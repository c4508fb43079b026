"""Inference helpers shared by every entry point: padding to a model's size multiple, self-ensemble.

All functions take and return NHWC float tensors (nominally [0, 1]) and use ``keras.ops`` only, so
they run eagerly, inside ``tf.function`` and inside an exported SavedModel with dynamic H and W.

Padding convention (docs/fidelity.md): **edge replication at the bottom and right** by
``(-H) mod m`` rows and ``(-W) mod m`` columns. Bottom/right keeps the pixel grid (and so which
pixels a 0.5x nearest subsampling picks) unchanged; replication, unlike reflection, is defined for
any size down to one pixel. Sizes that are already multiples of ``m`` are left untouched, so the
result is then exactly the bare model's.
"""

from __future__ import annotations

from keras import ops

ENSEMBLE_MODES = ("none", "rot4", "x8")


def size_multiple(model) -> int:
    """The side multiple a model needs (``model.size_multiple``; 1 when the model declares none)."""
    return int(getattr(model, "size_multiple", 1))


def pad_to_multiple(x, multiple: int):
    """Edge-replicates the bottom rows and right columns of ``x`` up to the next multiple.

    Args:
        x: (N, H, W, C) tensor.
        multiple: required side multiple (>= 1).
    Returns:
        The padded (N, H', W', C) tensor; ``x`` itself when nothing needs padding.
    """
    if multiple <= 1:
        return x
    static_h, static_w = x.shape[1], x.shape[2]
    if None not in (static_h, static_w) and static_h % multiple == 0 == static_w % multiple:
        return x
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    x = _replicate_to(x, height, _round_up(height, multiple), axis=1)
    return _replicate_to(x, width, _round_up(width, multiple), axis=2)


def _round_up(size, multiple):
    return ((size + multiple - 1) // multiple) * multiple


def _replicate_to(x, size, target, axis):
    """Gathers indices 0..target-1 clamped to size-1 along ``axis`` (works with dynamic sizes)."""
    index = ops.minimum(ops.arange(target), size - 1)
    return ops.take(x, index, axis=axis)


def crop_to(x, height, width):
    """Crops an NHWC tensor to its top-left ``height`` x ``width`` window."""
    return x[:, :height, :width, :]


def final_output(outputs):
    """The full-resolution image of a model's output (the last of a coarse-to-fine list)."""
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs


def restore(model, x, self_ensemble: str = "none", training: bool = False):
    """Deblurs a batch of any size: pad to the model's multiple, run, crop back.

    Args:
        model: a registered deblurring model (callable on NHWC, returns an image or a list of
            images ordered coarse to fine).
        x: (N, H, W, 3) float32 tensor in [0, 1], any H, W >= 1.
        self_ensemble: ``"none"``, ``"rot4"`` (MIMO-UNet++: four rotations, no flips) or ``"x8"``
            (EDSR: four rotations times a horizontal flip).
    Returns:
        (N, H, W, 3) full-resolution output, **not clamped** (clamp once, for evaluation or saving).
    """
    height, width = ops.shape(x)[1], ops.shape(x)[2]
    padded = pad_to_multiple(x, size_multiple(model))

    def forward(batch):
        return final_output(model(batch, training=training))

    return crop_to(ensemble(forward, padded, self_ensemble), height, width)


def ensemble(fn, x, mode: str = "none"):
    """Geometric self-ensemble of an image-to-image function ``fn`` on NHWC input.

    Each transformed input is passed through ``fn``, transformed back, and the results are averaged
    (in float, before any clamping). 90-degree rotations swap H and W; callers pad to a multiple
    that holds for both orientations (a square multiple, as :func:`pad_to_multiple` gives).
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"Unknown self-ensemble mode {mode!r}; expected one of {ENSEMBLE_MODES}.")
    if mode == "none":
        return fn(x)
    flips = (False, True) if mode == "x8" else (False,)
    results = []
    for flip in flips:
        source = ops.flip(x, axis=2) if flip else x
        for k in range(4):
            out = _rot90(fn(_rot90(source, k)), (4 - k) % 4)
            results.append(ops.flip(out, axis=2) if flip else out)
    return ops.mean(ops.stack(results, axis=0), axis=0)


def _rot90(x, k):
    """Rotates NHWC images by k * 90 degrees counter-clockwise (``np.rot90(x, k, axes=(1, 2))``).

    Written with flips and transposes because ``keras.ops.rot90`` on the TensorFlow backend leaves
    the rotated axes last for 4-D inputs (Keras 3.15), scrambling channels.
    """
    k %= 4
    if k == 1:
        return ops.transpose(ops.flip(x, axis=2), (0, 2, 1, 3))
    if k == 2:
        return ops.flip(ops.flip(x, axis=1), axis=2)
    if k == 3:
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)
    return x
