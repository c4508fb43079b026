"""Flow sets for SEN (sen_rpgan.md §5, §13; register #25, #27): the flow model, the "valid" blur,
the split by sharp source, the (blur, flow) pipeline, label checks, mean flow, the quick set."""

import math
import os

import numpy as np
import pytest

from data import default_data, flow_pipeline, image_io, make_synthetic, synthetic
from data import motion_blur as mb
from data.errors import DataError, iterate

TINY_FLOW = dict(kind="flow", size=64, train_pairs=6, test_pairs=4, u_max=6.0, flows_per_image=2)


# --- flow model (§5) -----------------------------------------------------------------------------


def gong_flow(height, width, tx, ty, tx_acc, ty_acc, tz, rot_z, cen):
    """Literal transcription of Gong's gen_mf.m (meshgrid, alpha_1 = alpha - pi/2)."""
    wcoor, hcoor = np.meshgrid(np.arange(1, width + 1), np.arange(1, height + 1))
    tx_line = np.arange(1, width + 1) * (tx_acc * tx / width) + tx * (1 - tx_acc / 2)
    mu = np.tile(tx_line, (height, 1))
    ty_line = np.arange(height, 0, -1)[:, None] * (ty_acc * ty / height) + ty * (1 - ty_acc / 2)
    mv = np.tile(ty_line, (1, width))
    zrot_l = np.sqrt((wcoor - cen[1]) ** 2 + (hcoor - cen[0]) ** 2)
    zrot_s = np.tan(rot_z) * zrot_l
    alpha = np.arctan2((1 + height - hcoor) - cen[0], wcoor - cen[1])
    mu = mu + np.sin(alpha - np.pi / 2) * zrot_s
    mv = mv + np.cos(alpha - np.pi / 2) * zrot_s
    s = tz * zrot_l**1.5
    return mu + s * np.sin(alpha), mv + s * np.cos(alpha)


@pytest.mark.parametrize("u_max", [23.0, 46.0])
def test_random_flow_is_gongs_model_rescaled_and_rounded(u_max):
    h, w = 40, 56
    for seed in range(6):
        flow = mb.random_flow(np.random.default_rng(seed), h, w, u_max, zero_prob=0.0)
        rng = np.random.default_rng(seed)  # the documented draw order
        rng.random()  # zero-field test
        tx, ty = rng.uniform(-u_max, u_max, 2)
        tx_acc, ty_acc = rng.uniform(-0.3, 0.3, 2)
        tz, rot_z = rng.uniform(-5e-3, 5e-3), rng.uniform(-math.pi / 70, math.pi / 70)
        cen = np.array([h / 2, w / 2]) + rng.uniform(-1, 1, 2) * 15
        u, v = gong_flow(h, w, tx, ty, tx_acc, ty_acc, tz, rot_z, cen)
        scale = min(1.0, u_max / max(np.abs(u).max(), np.abs(v).max()))
        expected = mb.matlab_round(np.stack([u, v], -1) * scale)
        np.testing.assert_array_equal(flow, expected)


@pytest.mark.parametrize("u_max", [23.0, 46.0])
def test_flow_labels_are_uv_half_integers_within_u_max(u_max):
    flows = [mb.random_flow(np.random.default_rng(s), 64, 64, u_max) for s in range(60)]
    for flow in flows:
        label = mb.to_uv_half(flow)
        assert label.dtype == np.float32 and label.shape == (64, 64, 2)
        assert label[..., 0].min() >= 0
        np.testing.assert_array_equal(label, np.round(label))
        assert np.abs(label).max() <= u_max
    assert sum(np.abs(f).max() == u_max for f in flows) >= 5  # rescaled fields reach u_max


def test_about_two_percent_of_flows_are_zero_and_draws_are_deterministic():
    rng = np.random.default_rng(1)
    zeros = sum(not np.any(mb.random_flow(rng, 2, 2, 23.0)) for _ in range(10_000))
    assert 150 <= zeros <= 250  # expected 200, binomial sd 14
    a = mb.random_flow(np.random.default_rng(5), 32, 32, 46.0)
    np.testing.assert_array_equal(a, mb.random_flow(np.random.default_rng(5), 32, 32, 46.0))
    assert not np.array_equal(a, mb.random_flow(np.random.default_rng(6), 32, 32, 46.0))


def test_margin_covers_the_largest_kernels():
    for u_max, margin in [(23.0, 18), (46.0, 34)]:
        assert mb.flow_margin(u_max) == margin
        r = u_max * math.sqrt(2)  # the longest kernel, (u_max, ±u_max)
        assert mb.kernel_image(u_max, u_max).shape[0] // 2 <= math.floor((r - 1) / 2 + 1) < margin


def test_valid_blur_equals_the_full_image_blur_in_the_interior():
    # A whole 110 x 110 image blurred by its own (non-replicated) 23-px field; the 64 x 64 centre
    # made as the generator does (window = centre + margin, flow of the centre only) agrees.
    u_max, size = 23.0, 64
    m = mb.flow_margin(u_max)
    rng = np.random.default_rng(2)
    image = rng.random((size + 2 * m + 10, size + 2 * m + 10, 3))
    flow = mb.random_flow(np.random.default_rng(3), *image.shape[:2], u_max, zero_prob=0.0)
    full = mb.blur_nonuniform(image, flow)
    top = m + 4
    centre = np.s_[top : top + size, top : top + size]
    window = image[top - m : top + size + m, top - m : top + size + m]
    np.testing.assert_allclose(mb.blur_valid(window, flow[centre]), full[centre], atol=1e-12)


# --- data sets (split by sharp source, labels) ---------------------------------------------------


@pytest.fixture(scope="module")
def flow_set(tmp_path_factory):
    cfg = synthetic.SynthConfig(**TINY_FLOW, seed=3)
    return synthetic.build_dataset(str(tmp_path_factory.mktemp("flow") / "set"), cfg), cfg


def test_generated_labels_are_the_generators_uv_half_flows(flow_set):
    root, cfg = flow_set
    examples = flow_pipeline.flow_examples(root, "train")
    assert len(examples) == cfg.train_pairs
    for blur, label_path in examples:
        index, label = int(os.path.basename(blur)[:-4]), np.load(label_path)
        flow = mb.random_flow(synthetic.pair_rng(cfg, "train", index, 2), 64, 64, cfg.u_max)
        np.testing.assert_array_equal(label, mb.to_uv_half(flow))
        assert not np.signbit(label[label == 0]).any()  # no -0.0 from the rounding
        assert image_io.read_info(blur).width == 64


def test_split_is_by_sharp_source(flow_set):
    root, cfg = flow_set
    sharp = {}
    for split in synthetic.SPLITS:
        sources = {}  # pair index -> (source name, sharp pixels)
        for folder, _, files in os.walk(os.path.join(root, split)):
            if os.path.basename(folder) == "sharp":
                name = os.path.basename(os.path.dirname(folder))[4:].rsplit("_", 1)[0]
                for f in files:
                    pixels = image_io.decode_rgb(os.path.join(folder, f)).tobytes()
                    sources[int(f[:-4])] = name, pixels
        assert sorted(sources) == list(range(cfg.pairs(split)))
        for index, source in sources.items():  # the pairs of a group share their source
            assert source == sources[index - index % cfg.flows_per_image]
        sharp[split] = {pixels for _, pixels in sources.values()}
        assert len(sharp[split]) == cfg.pairs(split) // cfg.flows_per_image
        names = {name for name, _ in sources.values()}
        assert names <= set(synthetic.sources.split_sources(split)) | {"deadleaves"}, names
    assert not sharp["test"] & sharp["train"]  # no test source in train


def test_shards_take_whole_groups():
    cfg = synthetic.SynthConfig(**{**TINY_FLOW, "train_pairs": 7, "flows_per_image": 3})
    shards = [list(synthetic.shard_indices(cfg, "train", k, 2)) for k in range(2)]
    assert shards == [[0, 1, 2, 6], [3, 4, 5]]


def test_make_synthetic_defaults_are_the_papers_flow_sets():
    assert make_synthetic.pair_counts("flow", None, None) == (10_000, 2_000)
    assert make_synthetic.pair_counts("flow", 1000, None) == (1000, 200)
    assert make_synthetic.pair_counts("gopro", None, None) == (200, 50)
    flow46 = synthetic.SynthConfig(kind="flow", train_pairs=10_000, test_pairs=2_000, u_max=46.0)
    assert flow46.pairs("train") // flow46.flows_per_image == 500
    assert flow46.pairs("test") // flow46.flows_per_image == 100
    name = default_data.folder_name(flow46)
    assert name == "synthetic_flow_v2_s256_n10000-2000_seed0_u46"


def test_default_flow_dir_is_the_quick_set_generated_once(tmp_path, monkeypatch):
    cfg = default_data.flow_quick_config()
    assert (cfg.train_pairs, cfg.test_pairs, cfg.size, cfg.u_max) == (1200, 200, 256, 23.0)
    assert default_data.folder_name(cfg) == "synthetic_flow_v2_s256_n1200-200_seed0_u23"
    monkeypatch.setenv(default_data.CACHE_ENV, str(tmp_path))
    tiny = synthetic.SynthConfig(**{**TINY_FLOW, "train_pairs": 2, "test_pairs": 2})
    monkeypatch.setattr(default_data, "flow_quick_config", lambda u_max: tiny)
    path = default_data.default_flow_dir(workers=1)
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert len(flow_pipeline.flow_examples(path, "test")) == 2
    monkeypatch.setattr(synthetic, "build_dataset", None)  # a second call must not regenerate
    assert default_data.default_flow_dir() == path


# --- pipeline -------------------------------------------------------------------------------------


def write_example(root, seq, frame, blur, flow):
    for folder in ("blur", "flow"):
        os.makedirs(os.path.join(root, "train", seq, folder), exist_ok=True)
    image_io.write_png(os.path.join(root, "train", seq, "blur", f"{frame}.png"), blur)
    path = os.path.join(root, "train", seq, "flow", f"{frame}.npy")
    np.save(path, flow)
    return path


@pytest.fixture
def coordinate_set(tmp_path):
    """Three 48 x 64 examples whose blur is (row, column, example) and flow (row, column)."""
    rows, cols = np.mgrid[0:48, 0:64]
    for k in range(3):
        blur = np.stack([rows, cols, np.full_like(rows, 100 + k)], -1).astype(np.uint8)
        flow = np.stack([rows + 1000 * k, cols], -1).astype(np.float32)
        write_example(str(tmp_path), f"SEQ_{k // 2}", f"{k:06d}", blur, flow)
    return str(tmp_path)


def batches(root, n=6, **kw):
    ds = flow_pipeline.flow_dataset(root, "train", **{"batch_size": 2, **kw})
    return [(b.numpy(), f.numpy()) for b, f in iterate(ds.take(n))]


def test_crops_cut_the_same_window_from_blur_and_flow_without_flips(coordinate_set):
    seen = set()
    for blur, flow in batches(coordinate_set, crop_size=24, seed=4):
        assert blur.shape == (2, 24, 24, 3) and flow.shape == (2, 24, 24, 2)
        assert blur.dtype == flow.dtype == np.float32 and 0 <= blur.min() <= blur.max() <= 1
        pixels = np.rint(blur * 255)
        k = pixels[:, 0, 0, 2] - 100
        np.testing.assert_array_equal(pixels[..., 0], flow[..., 0] - 1000 * k[:, None, None])
        np.testing.assert_array_equal(pixels[..., 1], flow[..., 1])
        # rows grow downwards and columns to the right: no flip, no rotation
        assert (np.diff(flow[..., 0], axis=1) == 1).all()
        assert (np.diff(flow[..., 1], axis=2) == 1).all()
        seen |= {(int(a), int(b)) for a, b in pixels[:, 0, 0, :2]}
    assert len(seen) > 3  # random windows


def test_full_images_in_order_and_deterministic_per_seed(coordinate_set):
    examples = flow_pipeline.flow_examples(coordinate_set, "train")
    assert [os.path.basename(b) for b, _ in examples] == ["000000.png", "000001.png", "000002.png"]
    full = batches(coordinate_set, n=1, batch_size=3, shuffle=False, repeat=False)
    ((blur, flow),) = full
    for i, (blur_path, label_path) in enumerate(examples):
        np.testing.assert_array_equal(np.rint(blur[i] * 255), image_io.decode_rgb(blur_path))
        np.testing.assert_array_equal(flow[i], np.load(label_path))
    a = batches(coordinate_set, crop_size=16, seed=7)
    b = batches(coordinate_set, crop_size=16, seed=7)
    c = batches(coordinate_set, crop_size=16, seed=8)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b, strict=True))
    assert not all((x[1] == y[1]).all() for x, y in zip(a, c, strict=True))
    assert len(batches(coordinate_set, n=10, repeat=False)) == 1  # 3 // 2, remainder dropped


def test_mean_flow_matches_numpy(coordinate_set):
    labels = [np.load(p) for _, p in flow_pipeline.flow_examples(coordinate_set, "train")]
    expected = np.mean(np.stack(labels).astype(np.float64), axis=(0, 1, 2))
    np.testing.assert_allclose(flow_pipeline.mean_flow(coordinate_set), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "label, message",
    [
        (np.zeros((48, 64, 3), np.float32), r"shape \(48, 64, 3\), expected \(H, W, 2\)"),
        (np.zeros((48, 64, 2), np.float64), "dtype float64, expected float32"),
        (np.zeros((40, 64, 2), np.float32), "flow label is 64x40, its blurred image"),
        (b"not an array", "cannot read flow label"),
    ],
)
def test_bad_label_is_one_line_naming_the_file(coordinate_set, label, message):
    path = os.path.join(coordinate_set, "train", "SEQ_0", "flow", "000001.npy")
    if isinstance(label, bytes):
        with open(path, "wb") as f:
            f.write(label)
    else:
        np.save(path, label)
    with pytest.raises(DataError, match=message) as error:
        flow_pipeline.flow_dataset(coordinate_set, "train", 2)
    assert str(error.value).startswith(path + ": ") and "\n" not in str(error.value)


def test_non_finite_label_stops_iteration_and_mean_flow_naming_the_file(coordinate_set):
    path = os.path.join(coordinate_set, "train", "SEQ_1", "flow", "000002.npy")
    label = np.load(path)
    label[3, 4, 1] = np.nan
    np.save(path, label)
    with pytest.raises(DataError, match="non-finite") as error:
        batches(coordinate_set, n=4, shuffle=False)
    assert str(error.value).startswith(path + ": ") and "\n" not in str(error.value)
    with pytest.raises(DataError, match="1 non-finite value"):
        flow_pipeline.mean_flow(coordinate_set)


def test_missing_labels_are_named(coordinate_set):
    label = os.path.join(coordinate_set, "train", "SEQ_0", "flow", "000000.npy")
    os.remove(label)
    with pytest.raises(DataError, match="flow label of .*000000.png not found") as error:
        flow_pipeline.flow_examples(coordinate_set, "train")
    assert str(error.value).startswith(label + ": ")
    for folder in ("SEQ_0", "SEQ_1"):
        for name in os.listdir(os.path.join(coordinate_set, "train", folder, "flow")):
            os.remove(os.path.join(coordinate_set, "train", folder, "flow", name))
    with pytest.raises(DataError, match="3 blurred image.* but no flow labels") as error:
        flow_pipeline.flow_dataset(coordinate_set, "train", 2)
    assert "\n" not in str(error.value)


def test_crop_larger_than_the_images_is_named(coordinate_set):
    with pytest.raises(DataError, match=r"000000.png: 64x48 is smaller than the 56x56 crop \(3"):
        flow_pipeline.flow_dataset(coordinate_set, "train", 2, crop_size=56)
