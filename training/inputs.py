"""Training inputs from the shared flags: the training source, per-epoch datasets, validation set.

Uses the data layer's contract (``data.open_split``, ``data.pipeline.train_dataset`` /
``eval_dataset``, ``data.DataError``); ``data`` is imported lazily so that the loop and its unit
tests do not depend on it.

Validation (mimo_unet.md section 13.3; the official ``valid/`` folder usually does not exist,
chosj95/MIMO-UNet issues #13 and #33): the first ``--val_images`` pairs, in the reader's sorted
order, of ``--val_split`` (default ``test``) of ``--val_data_dir`` (default ``--data_dir``),
centre-cropped to ``--val_crop`` or full size. On GoPro that is a fixed subset of the *test* split,
and the logs say so. The images are decoded at start-up, so a damaged validation file stops the
command before step 1 with a ``data.DataError`` naming it. Only a split folder that does not
exist at all (``data.MissingSplitError``) under the default ``--data_dir`` gives a warning and a
run without validation; with an explicit ``--val_data_dir`` it is an error too.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.loop import ValidationSet


def open_train_source(data_dir, blur_variant="blur"):
    """The training :class:`data.PairedSource`; ``data.DataError`` names what is wrong."""
    import data

    return data.open_split(data_dir, "train", blur_variant=blur_variant)


def describe_data_dir(data_dir) -> str:
    return "embedded synthetic set" if not data_dir else str(data_dir)


def epoch_dataset_fn(
    source,
    *,
    batch_size,
    crop_size,
    hflip=True,
    vflip=False,
    rot90=False,
    noise="off",
    noise_sigma=2 / 255,
    cache=False,
    pad_small=False,
    seed=0,
):
    """``epoch -> tf.data.Dataset`` of (blur, sharp) batches of one epoch (drop remainder).

    ``noise`` / ``noise_sigma`` (in [0, 1] units) add Gaussian noise to the blurred input only, in
    the pipeline (``data.pipeline.train_dataset``; IDC's ``"random_sigma"``, 2/255).

    Epoch ``e`` is built with seed ``seed + e``: a fixed shuffle and crop sequence per epoch, so
    a run resumed in any epoch, mid-epoch included, sees exactly the batches of an uninterrupted
    one. With ``cache`` too: the decoded images live in the source object (folders) or in one
    cached dataset per source (TFDS), shared by every epoch's dataset. With ``seed < 0`` (or
    ``None``) every epoch draws fresh randomness, so a resumed run sees a different shuffle and
    different crops (the same data) from the resumed epoch on.
    """
    from data import pipeline

    def build(dataset_seed):
        return pipeline.train_dataset(
            source,
            batch_size=batch_size,
            crop_size=crop_size,
            hflip=hflip,
            vflip=vflip,
            rot90=rot90,
            noise=noise,
            noise_sigma=noise_sigma,
            cache=cache,
            pad_small=pad_small,
            seed=dataset_seed,
            drop_remainder=True,
        )

    return per_epoch(build, seed)


def per_epoch(build, seed):
    """``epoch -> build(seed + epoch)``: a fixed dataset per epoch (exact resume), or with ``seed``
    None or negative ``build(None)`` every epoch (fresh randomness)."""
    if seed is None or seed < 0:
        return lambda epoch: build(None)
    return lambda epoch: build(seed + epoch)


def load_validation(
    data_dir,
    *,
    split="test",
    num_images=20,
    crop=0,
    blur_variant="blur",
    explicit_dir=False,
    log=print,
):
    """The :class:`training.loop.ValidationSet`, or None (with a warning) if the split is missing.

    Args:
        data_dir: validation data folder (None = the embedded synthetic set).
        split: split name; ``num_images`` first pairs (0 = all); ``crop`` centre crop (0 = full).
        explicit_dir: the user passed ``--val_data_dir`` (then a missing split is an error).

    Raises ``data.DataError`` naming the file for any damaged, unreadable or wrongly typed file
    among the validation pairs (all of them are decoded here, before training starts).
    """
    import data
    from data import pipeline

    try:
        source = data.open_split(data_dir, split, blur_variant=blur_variant)
    except data.MissingSplitError as error:
        if explicit_dir:
            raise
        log(
            f"WARNING: no validation: {error} Training continues without validation; pass "
            "--val_data_dir/--val_split to enable it."
        )
        return None
    dataset = pipeline.eval_dataset(source)
    if num_images:
        dataset = dataset.take(num_images)
    pairs = [_pair(element, crop) for element in dataset]
    return ValidationSet(pairs, _label(data_dir, split, len(pairs), len(source), crop))


def _pair(element, crop):
    blur = _to_uint8(element["blur"][0])
    sharp = _to_uint8(element["sharp"][0])
    if crop:
        blur, sharp = centre_crop(blur, crop), centre_crop(sharp, crop)
    name = element["name"].numpy() if isinstance(element["name"], tf.Tensor) else element["name"]
    name = name.reshape(-1)[0] if isinstance(name, np.ndarray) else name
    return (name.decode() if isinstance(name, bytes) else str(name)), blur, sharp


def _to_uint8(image):
    # The pipeline's floats are uint8 / 255: rounding back is exact and quarters the memory.
    return np.rint(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def centre_crop(image, size):
    """The central ``size`` x ``size`` window of an H x W x C array (whole sides if smaller)."""
    h, w = image.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return image[top : top + size, left : left + size]


def _label(data_dir, split, count, total, crop):
    what = f"first {count} of {total} pairs of split {split!r} of {describe_data_dir(data_dir)}"
    size = f"centre {crop}x{crop} crops" if crop else "full size"
    note = (
        " (a fixed subset of the test split, not a held-out validation set: GoPro has none)"
        if split == "test"
        else ""
    )
    return f"{what}, {size}{note}"
