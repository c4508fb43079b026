"""(Blurred image, motion flow) pipelines of the synthetic flow sets for SEN: ``sen_rpgan.md`` §5
and register #27.

Layout (:mod:`data.synthetic` kind ``flow``, ``GOPRO_Large``):
``<root>/<split>/<sequence>/{blur,flow}/<frame>.{png,npy}`` (or ``<root>/<split>/{blur,flow}/``);
a label is float32 (H, W, 2) in ``uv_half`` pixels (u ≥ 0 to the right, v downwards, §2).

* :func:`flow_examples` ``(root, split)`` -> sorted list of (blur PNG, flow .npy) paths.
* :func:`flow_dataset` ``(root, split, batch_size, crop_size=None, shuffle=True, seed=0,
  repeat=True)`` -> ``tf.data.Dataset`` of (blur float32 (B, h, w, 3) in [0, 1], flow float32
  (B, h, w, 2) ``uv_half`` pixels); ``crop_size=None`` gives full images.
* :func:`mean_flow` ``(root, split="train")`` -> float64 (2,), the mean (u, v) label over every
  pixel of the split (the mean-flow baseline of the flow evaluation).

Per example (in numpy inside one ``tf.py_function``, in parallel): decode the PNG (OpenCV), load
and check the label, cut **one** random window from both (the window of
:func:`data.pipeline.crop_pair_np`, from bits 8–31 and 32–55 of the example's random value: the
label's float32 bytes travel as 8 extra uint8 channels, so blur and flow windows are identical by
construction). **No flips, rotations or noise** (register #27: the paper uses no augmentation, and a
mirror image has the flow (−u, v), which a flipped label map would not show; §5's samples are
exactly the 256² crop anyway). Blur is converted to float32 / 255; the flow is returned as stored.

Order and randomness follow :func:`data.pipeline.train_dataset`: every example gets a value of
``Dataset.random(seed, rerandomize_each_iteration=True)`` and the index order is shuffled with
``reshuffle_each_iteration`` (``shuffle=False``: the sorted order), so a fixed ``seed`` gives the
same batches whatever the parallelism (``seed=None``: fresh randomness). Batches are batched per
epoch (``drop_remainder=True`` by default: one epoch = ⌊N / B⌋ batches); ``repeat=True`` repeats
epochs, each with a new shuffle and new windows. For a resumable run build one dataset per epoch
with ``seed + epoch`` and ``repeat=False`` (as :func:`training.inputs.epoch_dataset_fn` does).

Distribution: ``batch_size`` is the **global** batch, and batches have a static shape, so the
training loop's ``strategy.experimental_distribute_dataset`` (``AutoShardPolicy.DATA``) splits
them over the replicas exactly as it does the (blur, sharp) pipeline's.

Bad data is a :class:`~data.errors.DataError` with one line naming the file: before the dataset is
built for a missing label, a folder of blurred images without any labels, an image that is not
8-bit RGB, or a label that is not float32 (H, W, 2) of its image's size (``.npy`` headers only);
while iterating (through :func:`data.errors.iterate`, as the training loop does) for a label with
NaN/Inf values or an image that cannot be decoded.

TensorFlow is imported only by :func:`flow_dataset` (listing and :func:`mean_flow` stay light).
"""

from __future__ import annotations

import os

import numpy as np

from data import image_io, readers
from data.errors import DataError

FLOW_CHANNELS = 2


def flow_examples(root: str, split: str) -> list[tuple[str, str]]:
    """Sorted (blur PNG, flow .npy) paths of ``root/split``; DataError (one line) if the split has
    no blurred images, no labels at all, or lacks some label (named)."""
    return readers.list_flow_examples(root, split)


def flow_dataset(
    root: str,
    split: str,
    batch_size: int,
    crop_size: int | None = None,
    shuffle: bool = True,
    seed: int | None = 0,
    repeat: bool = True,
    drop_remainder: bool = True,
):
    """(blur, flow) batches of ``root/split`` (module docstring); DataError naming a bad file."""
    import tensorflow as tf

    examples = flow_examples(root, split)
    sizes = readers.check_flow_examples(examples)
    h, w = _output_size(examples, sizes, batch_size, crop_size, drop_remainder)

    def load(index, random):
        blur_path, label_path = examples[int(index)]
        size = sizes[int(index)]
        blur = image_io.decode_rgb(blur_path, size)
        flow = readers.read_flow_label(label_path, size)
        if crop_size is None:
            return blur, flow
        return crop_example(blur, flow, int(random), crop_size, blur_path)

    def read(index, random):
        blur, flow = tf.py_function(load, [index, random], [tf.uint8, tf.float32])
        return tf.ensure_shape(blur, [h, w, 3]), tf.ensure_shape(flow, [h, w, FLOW_CHANNELS])

    def to_float(blur, flow):
        return tf.cast(blur, tf.float32) / 255.0, flow

    order = tf.data.Dataset.range(len(examples))
    if shuffle:
        order = order.shuffle(len(examples), seed=seed, reshuffle_each_iteration=True)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(order, randoms)
    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def crop_example(blur, flow, random: int, crop_size: int, name: str):
    """The (crop, crop) windows of uint8 blur (H, W, 3) and float32 flow (H, W, 2) chosen by
    ``random``: one window for both (:func:`data.pipeline.crop_pair_np` on blur | flow bytes)."""
    from data import pipeline

    raw = np.ascontiguousarray(flow, np.float32).view(np.uint8)  # (H, W, 8): bytes of (u, v)
    owner = readers.Pair(name, name, name)  # named in the too-small error
    window = pipeline.crop_pair_np(blur, raw, random, crop_size, False, owner)
    flow_window = np.ascontiguousarray(window[..., 3:]).view(np.float32)
    return np.ascontiguousarray(window[..., :3]), flow_window


def _output_size(examples, sizes, batch_size, crop_size, drop_remainder) -> tuple:
    """Static (h, w) of the batches (None where sizes differ); DataError for unusable settings."""
    if batch_size < 1 or (crop_size is not None and crop_size < 1):
        raise ValueError(f"batch_size and crop_size must be positive ({batch_size}, {crop_size}).")
    folder = _common_folder(examples)
    if drop_remainder and len(examples) < batch_size:
        raise DataError(
            f"{folder}: {len(examples)} examples, fewer than batch_size {batch_size} (no full "
            "batch; use drop_remainder=False or a smaller batch)."
        )
    if crop_size is not None:
        small = [
            (blur, h, w)
            for (blur, _), (h, w) in zip(examples, sizes, strict=True)
            if min(h, w) < crop_size
        ]
        if small:
            (blur, h, w), count = small[0], len(small)
            more = f" ({count} images in all)" if count > 1 else ""
            crop = f"{crop_size}x{crop_size}"
            raise DataError(f"{blur}: {w}x{h} is smaller than the {crop} crop{more}.")
        return crop_size, crop_size
    if len(set(sizes)) == 1:
        return sizes[0]
    if batch_size > 1:
        raise DataError(
            f"{folder}: images of {len(set(sizes))} different sizes cannot be batched whole "
            f"(batch_size {batch_size}); use a crop_size or batch_size 1."
        )
    return None, None


def _common_folder(examples) -> str:
    return os.path.commonpath([blur for blur, _ in examples])


def mean_flow(root: str, split: str = "train") -> np.ndarray:
    """Float64 (2,): the mean ``uv_half`` (u, v) over every pixel of every label of the split,
    streamed one ``.npy`` at a time (sums of integer-valued float32 in float64 are exact)."""
    total, count = np.zeros(FLOW_CHANNELS), 0
    for _, label_path in flow_examples(root, split):
        label = readers.read_flow_label(label_path)
        total += label.sum(axis=(0, 1), dtype=np.float64)
        count += label.shape[0] * label.shape[1]
    return total / count
