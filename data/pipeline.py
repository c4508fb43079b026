"""``tf.data`` training and evaluation pipelines over a :class:`~data.sources.PairedSource`.

Training (:func:`train_dataset`), per pair and per epoch:

1. decode (OpenCV inside ``tf.py_function``, parallel; with ``cache=True`` the decoded uint8 pairs
   stay in memory after their first use: about 5.5 MB per 1280x720 pair, i.e. ~11.6 GB for the
   GoPro training split);
2. optional symmetric (edge-duplicating) reflection padding of images smaller than the crop
   (``pad_small``); otherwise such images are a :class:`~data.errors.DataError` naming the file,
   raised before training starts for folder sources;
3. a **paired random crop**: blur and sharp are concatenated along the channels and cropped by one
   ``stateless_random_crop``, so their windows are identical by construction;
4. horizontal flip with p = 0.5 (``hflip``), optional vertical flip with p = 0.5 (``vflip``) and
   optional 90° rotation with p = 0.5 (``rot90``; with both flips this gives all 8 dihedral
   transforms), applied to the pair jointly;
5. conversion to float32 in [0, 1], then Gaussian noise on the **blurred input only**:
   ``"random_sigma"`` (IDC's recipe: σ = |s| per image, s ~ N(0, noise_sigma²), noise_sigma =
   2/255 by default) or ``"fixed_sigma"`` (σ = noise_sigma); no clipping afterwards.

Order: the pair indices are reshuffled at every iteration of the returned dataset (one iteration
= one epoch, no repeat); every random decision uses stateless ops seeded from a
``Dataset.random(seed, rerandomize_each_iteration=True)`` stream, so with a ``seed`` the sequence
of epochs is reproducible (and independent of the degree of parallelism); ``seed=None`` draws
fresh randomness. Batches: ``(blur, sharp)`` float32 (B, crop, crop, 3), last partial batch dropped
by default; prefetched.

TFDS sources (no file list) are read in TFDS's order with shuffled files, optionally cached
(``Dataset.cache()``), cropped and augmented the same way, and shuffled through a buffer of
min(N, 1024) crops.

Evaluation (:func:`eval_dataset`): full-size dicts ``{"blur", "sharp"}`` float32 (1, H, W, 3) in
[0, 1] and ``"name"`` (1,) string, in the source's deterministic order.
"""

from __future__ import annotations

import tensorflow as tf

from data.errors import DataError
from data.sources import FolderSource, PairedSource, TfdsSource, tf_pair_loader

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
    augment = _augmenter(crop_size, hflip, vflip, rot90, noise, noise_sigma, pad_small)
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    if isinstance(source, FolderSource):
        if not pad_small:
            _check_sizes(source, crop_size)
        ds = _folder_crops(source, randoms, augment, cache, seed)
    else:
        ds = _generic_crops(source, randoms, augment, cache, seed)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(source: PairedSource) -> tf.data.Dataset:
    """Full-size float32 pairs in [0, 1], batch 1, in order (see the module docstring)."""

    def to_float(example):
        return {
            "blur": _to_float(example["blur"]),
            "sharp": _to_float(example["sharp"]),
            "name": example["name"],
        }

    ds = source.images().map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(1).prefetch(tf.data.AUTOTUNE)


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


def _folder_crops(source: FolderSource, randoms, augment, cache: bool, seed):
    n = len(source)
    load = tf_pair_loader(source, {} if cache else None)
    names = tf.constant([p.name for p in source.pairs], tf.string)
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def crop(index, random):
        blur, sharp = load(index)
        return augment(blur, sharp, random, tf.gather(names, index))

    ds = tf.data.Dataset.zip(order, randoms)
    return ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _generic_crops(source: PairedSource, randoms, augment, cache: bool, seed):
    is_tfds = isinstance(source, TfdsSource)
    images = source.images(shuffle_files=True, seed=seed) if is_tfds else source.images()
    if cache:
        images = images.cache()
    ds = tf.data.Dataset.zip(images, randoms)
    ds = ds.map(
        lambda ex, random: augment(ex["blur"], ex["sharp"], random, ex["name"]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    buffer = max(1, min(len(source), _TFDS_SHUFFLE_BUFFER))
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)


def _augmenter(crop_size, hflip, vflip, rot90, noise, noise_sigma, pad_small):
    """The per-pair graph function (blur, sharp uint8, random int64, name) -> (blur, sharp)."""

    def augment(blur, sharp, random, name):
        seeds = tf.random.experimental.stateless_split(tf.stack([random, 0]), 6)
        pair = tf.concat([blur, sharp], axis=-1)  # one crop/flip for both: identical windows
        pair = reflect_pad_to(pair, crop_size) if pad_small else _assert_fits(pair, crop_size, name)
        pair = tf.image.stateless_random_crop(pair, [crop_size, crop_size, 6], seeds[0])
        pair = _geometric(pair, seeds, hflip, vflip, rot90)
        blur, sharp = _to_float(pair[..., :3]), _to_float(pair[..., 3:])
        return _add_noise(blur, noise, noise_sigma, seeds[4], seeds[5]), sharp

    return augment


def _geometric(pair, seeds, hflip: bool, vflip: bool, rot90: bool):
    if hflip:
        pair = tf.image.stateless_random_flip_left_right(pair, seeds[1])
    if vflip:
        pair = tf.image.stateless_random_flip_up_down(pair, seeds[2])
    if rot90:
        k = tf.random.stateless_uniform([], seeds[3], minval=0, maxval=2, dtype=tf.int32)
        pair = tf.image.rot90(pair, k)
    return pair


def _add_noise(blur, mode: str, sigma: float, seed_sigma, seed_noise):
    if mode == "off":
        return blur
    if mode == "random_sigma":  # IDC: sigma = |s|, s ~ N(0, sigma^2), drawn per image
        sigma = tf.abs(tf.random.stateless_normal([], seed_sigma, stddev=sigma))
    return blur + tf.random.stateless_normal(tf.shape(blur), seed_noise) * sigma


def _to_float(image):
    return tf.cast(image, tf.float32) / 255.0


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
