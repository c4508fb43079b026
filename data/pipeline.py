"""``tf.data`` training and evaluation pipelines over a :class:`~data.sources.PairedSource`.

Training (:func:`train_dataset`), per pair and per epoch:

1. decode (OpenCV inside ``tf.py_function``, parallel; with ``cache=True`` the decoded uint8 pairs
   stay in memory after their first use, in the source object, so every dataset built from the
   same source shares them: about 5.5 MB per 1280x720 pair, i.e. ~11.6 GB for the GoPro training
   split);
2. a **paired random crop**: one window is drawn per pair and cut from both images (for folder
   sources in numpy right after decoding, so only the crop reaches TensorFlow; for TFDS sources
   blur and sharp are concatenated along the channels and cropped by one
   ``stateless_random_crop``), so the two windows are identical by construction;
3. images smaller than the crop are a :class:`~data.errors.DataError` naming the file (raised
   before training starts for folder sources), or, with ``pad_small``, are padded to the crop by
   symmetric (edge-duplicating) reflection, centred;
4. each pair independently: horizontal flip with p = 0.5 (``hflip``), optional vertical flip with
   p = 0.5 (``vflip``) and optional 90° rotation with p = 0.5 (``rot90``; with both flips this
   gives all 8 dihedral transforms), applied to blur and sharp jointly (for folder sources in
   numpy with the crop, otherwise per batch in TensorFlow; the same bits decide in both);
5. conversion to float32 in [0, 1], then Gaussian noise on the **blurred input only**:
   ``"random_sigma"`` (IDC's recipe: σ = |s| per image, s ~ N(0, noise_sigma²), noise_sigma =
   2/255 by default) or ``"fixed_sigma"`` (σ = noise_sigma); no clipping afterwards.

Steps 4 (TFDS) and 5 run once per batch, vectorised with per-pair decisions, rather than once per
pair: the per-op overhead of small tensors otherwise dominates the cached pipeline.

Order and randomness: the pair indices are reshuffled at every iteration of the returned dataset
(one iteration = one epoch, no repeat). Every random decision comes from a
``Dataset.random(seed, rerandomize_each_iteration=True)`` value attached to each pair (crop window
and flips from its bits, or for TFDS sources the window from stateless ops seeded by it; noise
from stateless ops seeded by the batch's values), so with a ``seed`` the sequence of epochs is
reproducible and independent of the degree of parallelism; ``seed=None`` draws fresh randomness.
Batches: ``(blur, sharp)`` float32 (B, crop, crop, 3); the last partial batch is dropped by
default; prefetched.

TFDS sources (no file list) are read with shuffled files, or with ``cache=True`` in their stored
order through one ``Dataset.cache()`` of the decoded images per source object
(:meth:`~data.sources.PairedSource.cached_images`, shared by every dataset built from the source),
cropped as above and shuffled through a buffer of min(N, 1024) crops.

Epochs and resume: build one dataset per epoch with its own seed (``seed + epoch``, as
:func:`training.inputs.epoch_dataset_fn` does); with or without ``cache`` the batches of an epoch
then depend only on the seed, so a resumed run sees exactly the batches of an uninterrupted one.

Evaluation (:func:`eval_dataset`): full-size dicts ``{"blur", "sharp"}`` float32 (1, H, W, 3) in
[0, 1] and ``"name"`` (1,) string, in the source's deterministic order.

Damaged files: decoding happens in OpenCV (``cv2.imread`` returns nothing for damaged data), and a
file that cannot be decoded raises :class:`~data.errors.DataError` naming it inside the pipeline.
Iterating a training dataset through :func:`data.errors.iterate` (as the training loop does)
re-raises that DataError; the evaluation dataset does it by itself (:class:`CheckedDataset`).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from data.errors import DataError, iterate
from data.sources import FolderSource, PairedSource, TfdsSource, load_cached

NOISE_MODES = ("off", "random_sigma", "fixed_sigma")
_TFDS_SHUFFLE_BUFFER = 1024


def train_dataset(
    source: PairedSource,
    *,
    batch_size: int,
    crop_size: int,
    hflip: bool = True,
    vflip: bool = False,
    rot90: bool = False,
    noise: str = "off",
    noise_sigma: float = 2 / 255,
    cache: bool = False,
    pad_small: bool = False,
    seed: int | None = None,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """One epoch of augmented training crops per iteration (see the module docstring)."""
    _check_args(source, batch_size, crop_size, noise, drop_remainder)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    flips = (hflip, vflip, rot90)
    if isinstance(source, FolderSource):
        if not pad_small:
            _check_sizes(source, crop_size)
        crops = _folder_crops(source, randoms, crop_size, pad_small, flips, cache, seed)
        flips = (False, False, False)  # done in numpy with the crop
    else:
        crops = _generic_crops(source, randoms, crop_size, pad_small, cache, seed)
    batches = crops.batch(batch_size, drop_remainder=drop_remainder)

    def augment(pairs, random):
        return augment_batch(pairs, random, *flips, noise, noise_sigma)

    batches = batches.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)


class CheckedDataset:
    """A ``tf.data.Dataset`` whose iteration raises :class:`~data.errors.DataError` naming a file
    that cannot be decoded (instead of a ``tf.errors.OpError`` with a traceback in its message).

    Every other attribute is the wrapped dataset's; methods returning a dataset (``take``,
    ``map``, ...) return it wrapped again. ``dataset`` is the plain ``tf.data.Dataset`` (for
    ``tf.distribute`` or ``as_numpy_iterator``, which do not convert errors).
    """

    def __init__(self, dataset: tf.data.Dataset):
        self.dataset = dataset

    def __iter__(self):
        return iterate(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        attribute = getattr(self.dataset, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def wrapped(*args, **kwargs):
            result = attribute(*args, **kwargs)
            return CheckedDataset(result) if isinstance(result, tf.data.Dataset) else result

        return wrapped


def eval_dataset(source: PairedSource) -> CheckedDataset:
    """Full-size float32 pairs in [0, 1], batch 1, in order (see the module docstring); a file
    that cannot be decoded raises :class:`~data.errors.DataError` naming it when reached."""

    def to_float(example):
        return {
            "blur": _to_float(example["blur"]),
            "sharp": _to_float(example["sharp"]),
            "name": example["name"],
        }

    ds = source.images().map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return CheckedDataset(ds.batch(1).prefetch(tf.data.AUTOTUNE))


def _check_args(source, batch_size, crop_size, noise, drop_remainder) -> None:
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}.")
    if batch_size < 1 or crop_size < 1:
        raise ValueError(f"batch_size and crop_size must be positive ({batch_size}, {crop_size}).")
    if len(source) == 0:
        raise DataError(f"{source.name}: no pairs.")
    if drop_remainder and len(source) < batch_size:
        raise DataError(
            f"{source.name}: {len(source)} pairs, fewer than batch_size {batch_size} "
            "(no full batch; use drop_remainder=False or a smaller batch)."
        )


def _check_sizes(source: FolderSource, crop_size: int) -> None:
    small = [
        f"{p.blur} ({w}x{h})"
        for p, size in zip(source.pairs, source.sizes, strict=True)
        if size is not None
        for h, w in [size]
        if h < crop_size or w < crop_size
    ]
    if small:
        listed = "; ".join(small[:5]) + (f"; ... ({len(small)} in all)" if len(small) > 5 else "")
        raise DataError(
            f"{len(small)} image(s) smaller than the {crop_size}x{crop_size} crop in "
            f"{source.name}: {listed}. Use a smaller crop or pad_small=True."
        )


# --- per pair: decode and crop -------------------------------------------------------------------


def _folder_crops(source: FolderSource, randoms, crop_size, pad_small, flips, cache, seed):
    """(uint8 (crop, crop, 6) blur|sharp, int64 random) per pair, in a reshuffled order.

    Decoding, cropping, padding and flips happen in one ``py_function`` in numpy, so only the
    crop reaches TensorFlow (a full 1280x720 pair would be copied twice more).
    """
    n = len(source)
    memory = source.decoded if cache else None  # shared by every dataset of this source

    def load_crop(index, random):
        index, random = int(index), int(random)
        blur, sharp = load_cached(source, index, memory)
        window = crop_pair_np(blur, sharp, random, crop_size, pad_small, source.pairs[index])
        return np.ascontiguousarray(flip_np(window, random, *flips))

    def crop(index, random):
        pair = tf.py_function(load_crop, [index, random], tf.uint8)
        return tf.ensure_shape(pair, [crop_size, crop_size, 6]), random

    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip(order, randoms)
    return ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def crop_pair_np(blur, sharp, random: int, crop_size: int, pad_small: bool, pair) -> np.ndarray:
    """The (crop, crop, 6) uint8 window of blur|sharp chosen by ``random`` (numpy).

    The window's top and left come from bits 8–31 and 32–55 of the uniform 64-bit ``random``
    (modulo the number of positions; bias < 1e-4); bits 0–2 are left to the flips. Images smaller
    than the crop are padded (``pad_small``) or a DataError naming the file.
    """
    h, w = blur.shape[:2]
    if (h < crop_size or w < crop_size) and not pad_small:
        raise DataError(f"{pair.blur}: {w}x{h} is smaller than the {crop_size}x{crop_size} crop.")
    ch, cw = min(h, crop_size), min(w, crop_size)
    top = ((random >> 8) & 0xFFFFFF) % (h - ch + 1)
    left = ((random >> 32) & 0xFFFFFF) % (w - cw + 1)
    crop = np.s_[top : top + ch, left : left + cw]
    window = np.concatenate([blur[crop], sharp[crop]], axis=-1)
    return reflect_pad_np(window, crop_size) if (ch, cw) != (crop_size, crop_size) else window


def flip_np(pair: np.ndarray, random: int, hflip: bool, vflip: bool, rot90: bool) -> np.ndarray:
    """numpy twin of the flips of :func:`augment_batch` (same bits, same order; views only)."""
    if hflip and random & 1:
        pair = pair[:, ::-1]
    if vflip and random & 2:
        pair = pair[::-1]
    if rot90 and random & 4:
        pair = np.rot90(pair)  # counter-clockwise, as in augment_batch
    return pair


def reflect_pad_np(image: np.ndarray, size: int) -> np.ndarray:
    """numpy twin of :func:`reflect_pad_to` (centred symmetric reflection to size x size)."""
    rows = _reflect_indices_np(image.shape[0], size)
    cols = _reflect_indices_np(image.shape[1], size)
    return image[rows][:, cols]


def _reflect_indices_np(n: int, size: int) -> np.ndarray:
    pad = max(size - n, 0)
    j = np.mod(np.arange(-(pad // 2), n + pad - pad // 2), 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


def _generic_crops(source: PairedSource, randoms, crop_size, pad_small, cache, seed):
    if cache:  # one cache per source in the stored order: epochs (and resumed runs) agree on it
        images = source.cached_images()
    elif isinstance(source, TfdsSource):
        images = source.images(shuffle_files=True, seed=seed)
    else:
        images = source.images()

    def crop(example, random):
        pair = tf.concat([example["blur"], example["sharp"]], axis=-1)
        return _crop(pair, random, crop_size, pad_small, example["name"]), random

    ds = tf.data.Dataset.zip(images, randoms)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    buffer = max(1, min(len(source), _TFDS_SHUFFLE_BUFFER))
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def _crop(pair, random, crop_size: int, pad_small: bool, name):
    """Random crop_size x crop_size window of a (H, W, 6) blur|sharp pair (padded if allowed)."""
    pair = reflect_pad_to(pair, crop_size) if pad_small else _assert_fits(pair, crop_size, name)
    seed = tf.random.experimental.stateless_split(tf.stack([random, 1]), 1)[0]
    return tf.image.stateless_random_crop(pair, [crop_size, crop_size, 6], seed)


def _assert_fits(pair, crop_size: int, name):
    shape = tf.shape(pair)
    fits = tf.logical_and(shape[0] >= crop_size, shape[1] >= crop_size)
    check = tf.debugging.Assert(
        fits, ["Image smaller than the crop (use pad_small=True):", name, shape, crop_size]
    )
    with tf.control_dependencies([check]):
        return tf.identity(pair)


def reflect_pad_to(image, size: int):
    """Pads an (H, W, C) tensor to at least size x size by symmetric reflection, centred.

    Any amount of padding works (indices reflect periodically), unlike ``tf.pad(mode="SYMMETRIC")``
    which is limited to the image size.
    """
    shape = tf.shape(image)
    rows = _reflect_indices(shape[0], size)
    cols = _reflect_indices(shape[1], size)
    return tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)


def _reflect_indices(n, size: int):
    pad = tf.maximum(size - n, 0)
    index = tf.range(-(pad // 2), n + pad - pad // 2)
    period = 2 * n
    j = tf.math.floormod(index, period)
    return tf.where(j >= n, period - 1 - j, j)


# --- per batch: flips, rotation, conversion, noise ----------------------------------------------


def augment_batch(pairs, random, hflip, vflip, rot90, noise, noise_sigma):
    """(B, c, c, 6) uint8 blur|sharp + (B,) int64 randoms -> float32 (blur, sharp), (B, c, c, 3).

    Bits 0, 1, 2 of each pair's random value decide its horizontal flip, vertical flip and 90°
    rotation (fair coins: the values are uniform 64-bit integers).
    """
    if hflip:
        pairs = _where(_bit(random, 0), tf.reverse(pairs, [2]), pairs)
    if vflip:
        pairs = _where(_bit(random, 1), tf.reverse(pairs, [1]), pairs)
    if rot90:  # transpose + flip rows = rotation by 90° counter-clockwise (square crops)
        pairs = _where(_bit(random, 2), tf.reverse(tf.transpose(pairs, [0, 2, 1, 3]), [1]), pairs)
    pairs = _to_float(pairs)
    blur, sharp = pairs[..., :3], pairs[..., 3:]
    return _add_noise(blur, random, noise, noise_sigma), sharp


def _bit(random, k: int):
    return tf.equal(tf.bitwise.bitwise_and(tf.bitwise.right_shift(random, k), 1), 1)


def _where(mask, yes, no):
    return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), yes, no)


def _add_noise(blur, random, mode: str, sigma: float):
    if mode == "off":
        return blur
    # The batch's first and last random values seed its noise (deterministic under a seed).
    seeds = tf.random.experimental.stateless_split(tf.stack([random[0], random[-1]]), 2)
    if mode == "random_sigma":  # IDC: sigma = |s|, s ~ N(0, sigma^2), drawn per image
        batch = tf.shape(blur)[:1]
        shape = tf.concat([batch, [1, 1, 1]], axis=0)
        sigma = tf.abs(tf.random.stateless_normal(shape, seeds[0], stddev=sigma))
    return blur + tf.random.stateless_normal(tf.shape(blur), seeds[1]) * sigma


def _to_float(image):
    return tf.cast(image, tf.float32) / 255.0
