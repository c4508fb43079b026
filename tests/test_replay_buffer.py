"""Tests of the RP-GAN deconvolution cache and replay buffer (sen_rpgan.md §9, §13): tiny 40x48
images, small flows, a stand-in generator and SEN with the agreed call contracts."""

from __future__ import annotations

import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deconvolution.blur_operator import BlurOperator
from deconvolution.hqs import solve_data_term
from training.rpgan import deconv_cache, replay_buffer

H, W = 40, 48
NAMES = ("a/frame1", "b/frame2")


class StandInGenerator(keras.Model):
    """The generator contract: (N, H, W, 6) = concat(I*, O) -> (N, H, W, 3) linear; counts calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(3, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()
        self.calls = self.samples = 0

    def call(self, inputs, training=None):
        self.calls += 1
        self.samples += int(inputs.shape[0])
        return inputs[..., :3] + 0.1 * self.norm(self.conv(inputs), training=training)


class StandInSEN(keras.Model):
    """The SEN contract: (N, H, W, 3) -> (N, H, W, 2) flow in pixels (small: |flow| < 3)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(2, 3, padding="same")

    def call(self, images, training=None):
        return 3.0 * keras.ops.tanh(self.conv(images))


def _images(seed=0, with_labels=True):
    rng = np.random.default_rng(seed)
    sharp = [rng.random((H, W, 3)).astype(np.float32) for _ in NAMES]
    noise = [0.05 * rng.standard_normal(s.shape) for s in sharp]
    blurred = [np.clip(s + n, 0, 1).astype(np.float32) for s, n in zip(sharp, noise, strict=True)]
    flows = [rng.uniform(-3, 3, (H, W, 2)).astype(np.float32) for _ in NAMES]
    flows = flows if with_labels else None
    return deconv_cache.from_arrays(NAMES, blurred, sharp, flows)


def _sen(seed=1):
    keras.utils.set_random_seed(seed)
    model = StandInSEN()
    model(np.zeros((1, 8, 8, 3), np.float32))
    return model


def _generator(seed=2):
    keras.utils.set_random_seed(seed)
    model = StandInGenerator()
    model(np.zeros((1, 8, 8, 6), np.float32))
    model.calls = 0
    return model


def _fresh_solve(blurred, flow, beta=0.02):
    o = tf.constant(blurred[None])
    x, _ = solve_data_term(o, o, BlurOperator(tf.constant(flow[None])), beta)
    return x[0].numpy()


# --- level counts ----------------------------------------------------------------------------


def test_level_counts_paper_proportions():
    assert replay_buffer.level_counts(1000) == (500, 300, 200)
    assert replay_buffer.level_counts(10) == (5, 3, 2)
    assert replay_buffer.level_counts(7, (0.5, 0.5)) == (4, 3)
    assert sum(replay_buffer.level_counts(333, (0.2, 0.3, 0.5, 0.1))) == 333
    with pytest.raises(ValueError):
        replay_buffer.level_counts(10, (0.0, 0.0))


# --- deconvolution cache ---------------------------------------------------------------------


def test_cache_equals_fresh_solve_and_is_reused(tmp_path, monkeypatch):
    sen, images = _sen(), _images(with_labels=False)
    cache = deconv_cache.DeconvCache(str(tmp_path), images, sen=sen, dtype="float32")
    cache.prepare()
    blurred = images[0].load()[0]
    flow, istar = cache.entry(0)
    expected_flow = np.asarray(sen(blurred[None], training=False))[0]
    assert np.abs(expected_flow).max() > 0.1
    np.testing.assert_allclose(flow, expected_flow, atol=1e-6)
    np.testing.assert_allclose(istar, _fresh_solve(blurred, expected_flow), atol=1e-5)
    assert os.path.isfile(os.path.join(cache.folder, "manifest.json"))
    # a second cache object with the same settings reads the files: no solve
    again = deconv_cache.DeconvCache(str(tmp_path), images, sen=sen, dtype="float32")
    monkeypatch.setattr(again, "compute", lambda *a: pytest.fail("recomputed a cached entry"))
    np.testing.assert_array_equal(again.entry(0)[1], istar)
    # float16 storage (the default): I*_1 is solved with the stored (rounded) flow
    half = deconv_cache.DeconvCache(str(tmp_path), images, sen=sen)
    flow16, istar16 = (np.asarray(a, np.float32) for a in half.entry(0))
    np.testing.assert_array_equal(flow16, expected_flow.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(istar16, _fresh_solve(blurred, flow16), atol=1e-3)


def test_cache_key_changes_with_beta_sen_weights_and_image(tmp_path):
    sen, images = _sen(), _images(with_labels=False)

    def key(**kw):
        return deconv_cache.DeconvCache(str(tmp_path), images, **{"sen": sen, **kw}).key

    base = key()
    assert key() == base
    assert key(beta=0.03) != base
    assert key(tol=1e-4) != base
    assert key(max_iter=50) != base
    assert key(sen=_sen(seed=5)) != base
    assert key(flow_source="true") != base
    other = _sen()
    other.set_weights([w + 1e-3 for w in sen.get_weights()])
    assert key(sen=other) != base
    # the same SEN frozen, or under another Keras name, is the same SEN
    frozen = _sen()
    frozen.trainable = False
    assert key(sen=frozen) == base
    # a changed image gets another entry file in the same folder
    cache = deconv_cache.DeconvCache(str(tmp_path), images, sen=sen)
    changed = deconv_cache.DeconvCache(str(tmp_path), _images(seed=9, with_labels=False), sen=sen)
    assert cache.folder == changed.folder
    assert cache.ensure(0)[0] != changed.ensure(0)[0]


def test_cache_key_carries_code_versions_and_every_cg_setting(monkeypatch):
    """A bumped operator or data-step version, or any CG setting, gives another folder; the same
    inputs give the same key (sen_rpgan.md §9: no stale I*_1 after a code change)."""
    from deconvolution import blur_operator, hqs

    settings = {
        "flow_id": "true",
        "beta": 0.02,
        "tol": 1e-5,
        "max_iter": 100,
        "solver": "cg",
        "method": "auto",
        "dtype": "float16",
    }
    base, manifest = deconv_cache.cache_key(**settings)
    assert deconv_cache.cache_key(**settings) == (base, manifest)
    assert manifest["operator_version"] == blur_operator.OPERATOR_VERSION
    assert manifest["data_step_version"] == hqs.DATA_STEP_VERSION
    changed = {
        "beta": 0.1,
        "tol": 1e-6,
        "max_iter": 50,
        "solver": "tf",
        "method": "gather",
        "dtype": "float32",
        "flow_id": "sen:0",
    }
    for name, value in changed.items():
        assert deconv_cache.cache_key(**{**settings, name: value})[0] != base, name
    for module, name in (
        (blur_operator, "OPERATOR_VERSION"),
        (blur_operator, "MIN_WEIGHT"),
        (blur_operator, "EPS"),
        (hqs, "DATA_STEP_VERSION"),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(module, name, getattr(module, name) * 2)
            assert deconv_cache.cache_key(**settings)[0] != base, name
    assert deconv_cache.cache_key(**settings)[0] == base  # restored constants: the old key


def test_damaged_entry_is_recomputed(tmp_path):
    messages = []
    images = _images()
    cache = deconv_cache.DeconvCache(str(tmp_path), images, flow_source="true", log=messages.append)
    stem, _ = cache.ensure(1)
    good = np.array(cache.entry(1)[1])
    with open(stem + ".istar1.npy", "r+b") as handle:
        handle.truncate(200)
    again = deconv_cache.DeconvCache(str(tmp_path), images, flow_source="true", log=messages.append)
    np.testing.assert_array_equal(np.array(again.entry(1)[1]), good)
    assert len(messages) == 1
    assert messages[0].startswith(f"deconv_cache: {stem}.istar1.npy: damaged")


def test_true_flow_source_and_identical_windows(tmp_path):
    images = _images()
    cache = deconv_cache.DeconvCache(str(tmp_path), images, flow_source="true", dtype="float32")
    blurred, sharp, label = images[1].load()
    flow, istar = cache.entry(1)
    np.testing.assert_array_equal(flow, label)
    np.testing.assert_allclose(istar, _fresh_solve(blurred, label), atol=1e-5)
    win = cache.window(1, 5, 9, 32, 32)
    rows, cols = slice(5, 37), slice(9, 41)
    np.testing.assert_array_equal(win["blurred"], blurred[rows, cols])
    np.testing.assert_array_equal(win["sharp"], sharp[rows, cols])
    np.testing.assert_array_equal(win["flow"], label[rows, cols])
    np.testing.assert_array_equal(win["istar1"], istar[rows, cols])
    with pytest.raises(ValueError):
        cache.window(1, 10, 0, 32, 32)  # rows 10..42 of a 40-row image
    batch = cache.sample_batch(np.random.default_rng(0), 3, 32)
    assert {k: v.shape for k, v in batch.items()} == {
        "blurred": (3, 32, 32, 3),
        "sharp": (3, 32, 32, 3),
        "flow": (3, 32, 32, 2),
        "istar1": (3, 32, 32, 3),
    }
    with pytest.raises(ValueError):
        deconv_cache.DeconvCache(str(tmp_path), _images(with_labels=False))  # no SEN


def test_from_pairs_reads_images_and_labels(tmp_path):
    from data.readers import Pair

    rng = np.random.default_rng(4)
    seq = tmp_path / "train" / "seq"
    paths = {}
    for kind in ("blur", "sharp"):
        os.makedirs(seq / kind)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        paths[kind] = str(seq / kind / "000001.png")
        cv2.imwrite(paths[kind], image[..., ::-1])
    os.makedirs(seq / "flow")
    label = rng.uniform(-2, 2, (H, W, 2)).astype(np.float32)
    np.save(seq / "flow" / "000001.npy", label)
    images = deconv_cache.from_pairs([Pair(paths["blur"], paths["sharp"], "seq/000001")], True)
    blurred, sharp, loaded = images[0].load()
    assert blurred.dtype == np.float32 and blurred.shape == (H, W, 3) and blurred.max() <= 1
    np.testing.assert_array_equal(loaded, label)
    cache = deconv_cache.DeconvCache(str(tmp_path / "cache"), images, flow_source="true")
    assert cache.image_size(0) == (H, W)
    assert os.path.basename(cache.ensure(0)[0]).startswith("seq_000001-")


# --- replay buffer ---------------------------------------------------------------------------


def _buffer(tmp_path, generator, **kw):
    cache = deconv_cache.DeconvCache(str(tmp_path), _images(), flow_source="true", dtype="float32")
    options = {"size": 10, "crop_size": 32, "margin": 8, "batch_size": 4, "seed": 3}
    return replay_buffer.ReplayBuffer(cache, generator, **{**options, **kw})


def test_buffer_levels_passes_and_windows(tmp_path):
    generator = _generator()
    buffer = _buffer(tmp_path, generator)
    buffer.snapshot.calls = buffer.snapshot.samples = 0
    items = buffer.rebuild(cycle=0)
    assert np.bincount(items.levels).tolist() == [0, 5, 3, 2]
    np.testing.assert_array_equal(items.passes, items.levels - 1)
    # n - 1 passes of the snapshot per item, the items of one level batched together
    assert buffer.snapshot.samples == 3 * 1 + 2 * 2 and buffer.snapshot.calls == 1 + 2
    assert generator.calls == 0  # the live G is never used to make items
    assert items.istar.shape == (10, 32, 32, 3)
    assert items.istar.min() >= 0 and items.istar.max() <= 1
    for i in range(10):
        index, top, left = items.windows[i]
        win = buffer.cache.window(index, top, left, 32, 32)
        np.testing.assert_array_equal(items.blurred[i], win["blurred"])
        np.testing.assert_array_equal(items.sharp[i], win["sharp"])
        if items.levels[i] == 1:
            np.testing.assert_array_equal(items.istar[i], win["istar1"])
        else:  # deconvolved again: not the level-1 result
            assert np.abs(items.istar[i] - win["istar1"]).max() > 1e-4


def test_level2_item_is_margin_window_solve(tmp_path):
    buffer = _buffer(tmp_path, _generator())
    buffer.refresh_snapshot()
    index, top, left = 0, 4, 8
    istar, blurred, _, passes = buffer._deep_item(2, index, top, left)
    # extended window: rows 0..44 cut to 0..40 (the border), columns 0..48
    win = buffer.cache.window(index, 0, 0, H, W)
    inputs = np.concatenate([win["istar1"], win["blurred"]], -1)[None]
    z = np.clip(np.asarray(buffer.snapshot(inputs, training=False)), 0, 1)
    op = BlurOperator(tf.constant(win["flow"][None]))
    x, _ = solve_data_term(win["blurred"][None], z, op, 0.1)
    np.testing.assert_allclose(istar, x[0].numpy()[4:36, 8:40], atol=1e-5)
    np.testing.assert_array_equal(blurred, win["blurred"][4:36, 8:40])
    assert passes == 1


def test_snapshot_frozen_during_cycle(tmp_path):
    generator = _generator()
    buffer = _buffer(tmp_path, generator)
    buffer.rebuild(cycle=0)
    frozen = [np.array(w) for w in buffer.snapshot.get_weights()]
    assert not buffer.snapshot.trainable
    # the live G trains during the cycle
    optimizer = keras.optimizers.SGD(0.1)
    batches = list(buffer.batches())
    assert len(batches) == buffer.steps_per_cycle == 3 * 10 // 4
    for batch in batches:
        with tf.GradientTape() as tape:
            inputs = np.concatenate([batch["istar"], batch["blurred"]], -1)
            loss = tf.reduce_mean((generator(inputs, training=True) - batch["sharp"]) ** 2)
        grads = tape.gradient(loss, generator.trainable_variables)
        optimizer.apply_gradients(zip(grads, generator.trainable_variables, strict=True))
    live = generator.get_weights()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(live, frozen, strict=True))
    for a, b in zip(buffer.snapshot.get_weights(), frozen, strict=True):
        np.testing.assert_array_equal(a, b)
    buffer.rebuild(cycle=1)  # G̃ ← G
    for a, b in zip(buffer.snapshot.get_weights(), generator.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_buffer_deterministic_and_resumable(tmp_path):
    first = _buffer(tmp_path, _generator())
    second = _buffer(tmp_path, _generator())
    a, b = first.rebuild(cycle=4), second.rebuild(cycle=4)
    np.testing.assert_array_equal(a.windows, b.windows)
    np.testing.assert_allclose(a.istar, b.istar, atol=1e-6)
    all_batches = list(first.batches())
    resumed = list(second.batches(start=2))
    assert len(resumed) == len(all_batches) - 2
    np.testing.assert_array_equal(resumed[0]["levels"], all_batches[2]["levels"])
    # every pass visits every item once
    order = first.order()
    for p in range(3):
        assert sorted(order[p * 10 : (p + 1) * 10].tolist()) == list(range(10))
    assert not np.array_equal(first.plan(4), first.plan(5))
    assert len(all_batches) == first.steps_per_cycle


def test_snapshot_of_the_rpgan_generator():
    rpgan = pytest.importorskip("models.rpgan")
    generator = rpgan.rpgan_generator(width_divisor=32)
    generator(np.zeros((1, 8, 8, 6), np.float32))
    snapshot = replay_buffer.make_snapshot(generator)
    assert type(snapshot) is type(generator) and not snapshot.trainable
    x = np.random.default_rng(0).random((1, 20, 24, 6)).astype(np.float32)
    np.testing.assert_array_equal(
        np.asarray(snapshot(x, training=False)), np.asarray(generator(x, training=False))
    )
