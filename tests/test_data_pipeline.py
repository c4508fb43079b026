"""The tf.data training and evaluation pipelines: paired crops, augmentation, noise, determinism,
caching, padding and errors."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import data
from data import errors as data_errors
from data import pipeline
from tests.train_checks import damage_png

SIZE = (40, 48)


def write(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Paired folder of 6 pairs with blur = 255 - sharp, so any window mismatch shows."""
    root = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(0)
    for i in range(6):
        sharp = rng.integers(0, 256, SIZE + (3,), dtype=np.uint8)
        write(root / "train" / "blur" / f"{i:02d}.png", 255 - sharp)
        write(root / "train" / "sharp" / f"{i:02d}.png", sharp)
    return root


@pytest.fixture(scope="module")
def source(folder):
    return data.open_split(str(folder), "train")


def epochs(ds, n=1):
    return [[tuple(t.numpy() for t in batch) for batch in ds] for _ in range(n)]


def find_window(crop, image):
    """(y, x) where ``crop`` occurs in ``image`` (exhaustive search), or None."""
    c = crop.shape[0]
    for y in range(image.shape[0] - c + 1):
        for x in range(image.shape[1] - c + 1):
            if np.array_equal(image[y : y + c, x : x + c], crop):
                return y, x
    return None


def test_source_and_images(source, folder):
    assert len(source) == 6 and source.pairs[0].name == "00.png"
    first = next(iter(source.images()))
    assert first["blur"].dtype == tf.uint8 and first["blur"].shape == SIZE + (3,)
    sharp = cv2.imread(str(folder / "train" / "sharp" / "00.png"))[..., ::-1]
    np.testing.assert_array_equal(first["sharp"].numpy(), sharp)
    assert first["name"].numpy() == b"00.png"


def test_paired_crop_is_one_window_of_both_images(source):
    ds = pipeline.train_dataset(source, batch_size=2, crop_size=16, hflip=False, seed=1)
    (batches,) = epochs(ds)
    assert len(batches) == 3  # one epoch, remainder dropped
    originals = [source.load_pair(i)[1] for i in range(len(source))]
    for blur, sharp in batches:
        assert blur.shape == (2, 16, 16, 3) and blur.dtype == np.float32
        np.testing.assert_allclose(blur, 1.0 - sharp, atol=1e-6)
        for crop in np.rint(sharp * 255).astype(np.uint8):
            assert any(find_window(crop, image) is not None for image in originals)


def test_flips_and_rotations_are_applied_to_both(source):
    ds = pipeline.train_dataset(
        source, batch_size=3, crop_size=24, vflip=True, rot90=True, seed=2, drop_remainder=False
    )
    for blur, sharp in epochs(ds, 2)[1]:
        np.testing.assert_allclose(blur, 1.0 - sharp, atol=1e-6)


def test_augmentations_do_occur(source):
    ds = pipeline.train_dataset(source, batch_size=6, crop_size=40, rot90=True, seed=3)
    originals = {source.load_pair(i)[1].tobytes() for i in range(len(source))}
    crops = [np.rint(s * 255).astype(np.uint8) for s in epochs(ds, 3)[2][0][1]]
    # 40x40 crops of 40x48 images: without a transform every crop is some original window.
    untouched = [c for c in crops if any(find_window(c, o) for o in map(_img, originals))]
    assert len(untouched) < len(crops)


def _img(raw):
    return np.frombuffer(raw, np.uint8).reshape(SIZE + (3,))


@pytest.mark.parametrize("mode", ["fixed_sigma", "random_sigma"])
def test_noise_only_on_the_blurred_input(source, mode):
    clean = epochs(pipeline.train_dataset(source, batch_size=6, crop_size=32, seed=4), 2)
    noisy = epochs(
        pipeline.train_dataset(
            source, batch_size=6, crop_size=32, seed=4, noise=mode, noise_sigma=0.05
        ),
        2,
    )
    for (cb, cs), (nb, ns) in zip(clean[1], noisy[1], strict=True):
        np.testing.assert_array_equal(cs, ns)  # sharp untouched
        noise = nb - cb
        assert nb.min() < 0 or nb.max() > 1  # not clipped
        stds = noise.reshape(6, -1).std(axis=1)
        if mode == "fixed_sigma":
            np.testing.assert_allclose(stds, 0.05, rtol=0.1)
        else:
            assert stds.std() > 0.005 and stds.max() < 0.25  # a per-image sigma = |s|


def test_same_seed_same_epochs_and_reshuffled_every_epoch(source):
    def run(seed, **kw):
        ds = pipeline.train_dataset(
            source, batch_size=2, crop_size=16, seed=seed, noise="random_sigma", **kw
        )
        return epochs(ds, 2)

    a, b, c = run(5), run(5), run(6)
    for ea, eb in zip(a, b, strict=True):
        for (ab, asharp), (bb, bsharp) in zip(ea, eb, strict=True):
            np.testing.assert_array_equal(ab, bb)
            np.testing.assert_array_equal(asharp, bsharp)
    assert not np.array_equal(a[0][0][1], a[1][0][1])  # epoch 2 differs from epoch 1
    assert not np.array_equal(a[0][0][1], c[0][0][1])
    cached = run(5, cache=True)
    for ea, ec in zip(a, cached, strict=True):
        for (ab, _), (cb, _) in zip(ea, ec, strict=True):
            np.testing.assert_array_equal(ab, cb)


def test_eval_dataset(source, folder):
    items = list(pipeline.eval_dataset(source))
    assert [i["name"].numpy()[0] for i in items] == [f"{k:02d}.png".encode() for k in range(6)]
    first = items[0]
    assert first["blur"].shape == (1,) + SIZE + (3,) and first["blur"].dtype == tf.float32
    blur = cv2.imread(str(folder / "train" / "blur" / "00.png"))[..., ::-1]
    np.testing.assert_allclose(first["blur"].numpy()[0], blur / 255.0, atol=1e-7)


def test_small_images_error_or_pad(tmp_path):
    rng = np.random.default_rng(1)
    for name, (h, w) in {"big.png": (32, 32), "small.png": (12, 20)}.items():
        sharp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        write(tmp_path / "s" / "blur" / name, 255 - sharp)
        write(tmp_path / "s" / "sharp" / name, sharp)
    src = data.open_split(str(tmp_path), "s")
    with pytest.raises(data.DataError, match=r"smaller than the 24x24 crop.*small\.png \(20x12\)"):
        pipeline.train_dataset(src, batch_size=1, crop_size=24)
    ds = pipeline.train_dataset(src, batch_size=2, crop_size=24, pad_small=True, seed=0)
    (batches,) = epochs(ds)
    blur, sharp = batches[0]
    assert blur.shape == (2, 24, 24, 3)
    np.testing.assert_allclose(blur, 1.0 - sharp, atol=1e-6)


def test_reflect_padding_matches_numpy_symmetric():
    image = np.arange(5 * 3 * 1).reshape(5, 3, 1)
    padded = pipeline.reflect_pad_to(tf.constant(image), 9).numpy()
    np.testing.assert_array_equal(padded, np.pad(image, ((2, 2), (3, 3), (0, 0)), "symmetric"))
    tiny = pipeline.reflect_pad_to(tf.constant(np.arange(2).reshape(1, 2, 1)), 7).numpy()
    assert tiny.shape == (7, 7, 1) and set(np.unique(tiny)) == {0, 1}


def _damaged_split(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png", "c.png"):
        sharp = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write(tmp_path / "s" / "blur" / name, sharp)
        write(tmp_path / "s" / "sharp" / name, sharp)
    damage_png(tmp_path / "s" / "blur" / "b.png")
    return data.open_split(str(tmp_path), "s")  # header and end are fine: opening passes


@pytest.mark.parametrize("cache", [False, True])
def test_damaged_file_raises_data_error_naming_it(tmp_path, cache):
    src = _damaged_split(tmp_path)
    ds = pipeline.train_dataset(src, batch_size=1, crop_size=16, seed=0, cache=cache)
    with pytest.raises(data.DataError, match=r"b\.png: damaged PNG data") as info:
        list(data_errors.iterate(ds))
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    # The raw tf.data error carries the same line, which from_op_error recovers.
    with pytest.raises(tf.errors.OpError) as raw:
        list(ds)
    assert str(data_errors.from_op_error(raw.value)) == str(info.value)


def test_eval_dataset_raises_data_error_naming_the_file(tmp_path):
    src = _damaged_split(tmp_path)
    with pytest.raises(data.DataError, match=r"s/blur/b\.png: damaged PNG data"):
        list(pipeline.eval_dataset(src))
    first = list(pipeline.eval_dataset(src).take(1))  # wrapped methods keep the conversion
    assert len(first) == 1 and first[0]["name"].numpy()[0] == b"a.png"
    with pytest.raises(data.DataError, match=r"b\.png"):
        list(pipeline.eval_dataset(src).skip(1))


def test_other_pipeline_errors_pass_through_iterate():
    ds = tf.data.Dataset.from_tensor_slices(["1", "x"]).map(tf.strings.to_number)
    with pytest.raises(tf.errors.InvalidArgumentError, match="could not correctly convert"):
        list(data_errors.iterate(ds))


def test_cached_epochs_are_reproducible_after_a_restart(folder):
    """--cache keeps resume batch-exact: epoch 2 rebuilt in a fresh process state (new source
    object, empty cache) equals epoch 2 of a run that went through epochs 0 and 1."""
    from training import inputs

    def epoch_batches(make, epoch):
        return [b.numpy() for b, _ in make(epoch)]

    kwargs = {"batch_size": 2, "crop_size": 16, "cache": True, "seed": 5, "noise": "random_sigma"}
    first = inputs.epoch_dataset_fn(data.open_split(str(folder), "train"), **kwargs)
    ran = [epoch_batches(first, epoch) for epoch in range(3)]
    assert not np.array_equal(ran[1][0], ran[2][0])  # epochs differ
    restarted = inputs.epoch_dataset_fn(data.open_split(str(folder), "train"), **kwargs)
    for a, b in zip(ran[2], epoch_batches(restarted, 2), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same for a non-folder source (one Dataset.cache() per source object).
    memory = data.open_split(str(folder), "train")
    arrays = [memory.load_pair(i) for i in range(len(memory))]
    first = inputs.epoch_dataset_fn(MemorySource(arrays), **kwargs)
    ran = [epoch_batches(first, epoch) for epoch in range(3)]
    restarted = inputs.epoch_dataset_fn(MemorySource(arrays), **kwargs)
    for a, b in zip(ran[2], epoch_batches(restarted, 2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_argument_errors(source):
    with pytest.raises(ValueError, match="noise"):
        pipeline.train_dataset(source, batch_size=1, crop_size=8, noise="gaussian")
    with pytest.raises(data.DataError, match="fewer than batch_size"):
        pipeline.train_dataset(source, batch_size=7, crop_size=8)
    assert (
        len(list(pipeline.train_dataset(source, batch_size=4, crop_size=8, drop_remainder=False)))
        == 2
    )


class MemorySource(data.PairedSource):
    """A non-folder source (the TFDS code path) over in-memory arrays."""

    def __init__(self, pairs):
        self._pairs, self.name = pairs, "memory"

    def __len__(self):
        return len(self._pairs)

    def images(self):
        blur = tf.constant(np.stack([b for b, _ in self._pairs]))
        sharp = tf.constant(np.stack([s for _, s in self._pairs]))
        names = tf.constant([f"{i}.png" for i in range(len(self._pairs))])
        return tf.data.Dataset.from_tensor_slices({"blur": blur, "sharp": sharp, "name": names})


def test_generic_source_crops_flips_and_rotates_both(source):
    memory = MemorySource([source.load_pair(i) for i in range(len(source))])
    ds = pipeline.train_dataset(memory, batch_size=3, crop_size=24, vflip=True, rot90=True, seed=1)
    (batches,) = epochs(ds)
    assert len(batches) == 2
    for blur, sharp in batches:
        np.testing.assert_allclose(blur, 1.0 - sharp, atol=1e-6)


def test_numpy_and_tensorflow_flips_agree():
    pair = np.random.default_rng(0).integers(0, 256, (5, 5, 6), dtype=np.uint8)
    for bits in range(8):
        expected = pipeline.flip_np(pair, bits, True, True, True)
        blur, sharp = pipeline.augment_batch(
            tf.constant(pair[None]), tf.constant([bits], tf.int64), True, True, True, "off", 0.0
        )
        got = np.concatenate([blur.numpy()[0], sharp.numpy()[0]], axis=-1)
        np.testing.assert_allclose(got, expected / 255.0, atol=1e-7)


def test_cache_is_shared_by_datasets_of_one_source(folder):
    src = data.open_split(str(folder), "train")
    list(pipeline.train_dataset(src, batch_size=3, crop_size=16, cache=True, seed=0))
    assert sorted(src.decoded) == list(range(6))
    list(pipeline.train_dataset(src, batch_size=3, crop_size=16, cache=False, seed=0))
    assert len(src.decoded) == 6
