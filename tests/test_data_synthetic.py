"""Synthetic data: dead leaves, trajectory PSFs, frame averaging, data set builds and the embedded
default (data_and_evaluation.md §2)."""

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data
from data import dead_leaves, default_data, synthetic, trajectories
from data.readers import flow_label_path, list_pairs

TINY = dict(size=32, train_pairs=3, test_pairs=2, seed=7)


# --- dead leaves (§2.5) -------------------------------------------------------------------------


def test_dead_leaves_radii_follow_the_inverse_cube_law():
    radii = dead_leaves.sample_radii(np.random.default_rng(0), 200_000, 1.5, 64.0)
    assert radii.min() >= 1.5 and radii.max() <= 64.0
    edges = np.geomspace(1.5, 30.0, 16)
    counts, _ = np.histogram(radii, edges)
    density = counts / np.diff(edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    slope = np.polyfit(np.log(centres), np.log(density), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.1)


def test_dead_leaves_image_is_deterministic_and_covered():
    a = dead_leaves.dead_leaves(48, np.random.default_rng(3))
    b = dead_leaves.dead_leaves(48, np.random.default_rng(3))
    c = dead_leaves.dead_leaves(48, np.random.default_rng(4))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    labels, centres, radii = dead_leaves._paint_labels(
        48, np.random.default_rng(3), 1.5, 12, 4, 50_000
    )
    assert labels.min() >= 1  # every canvas pixel covered by a disk
    assert len(centres) == len(radii) and labels.max() < len(radii)


def test_skipping_hidden_disks_gives_the_same_picture_as_painting_all():
    # Paint every sampled disk back to front and compare with the culled rendering.
    size, ss = 24, 4
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    labels, centres, _ = dead_leaves._paint_labels(size, rng_a, 1.5, 6.0, ss, 50_000)
    sampled_c, sampled_r = [], []
    uncovered = np.full((size * ss, size * ss), 255, np.uint8)
    batch, count = 512, 0
    while count < 50_000 and uncovered.any():
        c, r = dead_leaves._candidate_disks(rng_b, size, 1.5, 6.0, min(batch, 50_000 - count))
        count += len(r)
        visible = dead_leaves._maybe_visible(uncovered, *dead_leaves._canvas_disks(c, r, ss), ss)
        dead_leaves._draw(uncovered, c[visible], r[visible], ss, None)
        sampled_c.append(c)
        sampled_r.append(r)
        batch = min(2 * batch, dead_leaves._BATCH)
    all_c, all_r = np.concatenate(sampled_c)[::-1], np.concatenate(sampled_r)[::-1]
    full = np.zeros_like(labels)
    dead_leaves._draw(full, all_c, all_r, ss, range(1, len(all_r) + 1))
    full_centres = np.concatenate([np.zeros((1, 2)), all_c])
    np.testing.assert_array_equal(centres[labels], full_centres[full])


# --- trajectories (§2.1) ------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.1])
def test_psf_sums_to_one_and_is_centroid_centred(fraction):
    for seed in range(3):
        psf = trajectories.random_psf(np.random.default_rng(seed), fraction=fraction)
        assert psf.shape == (64, 64) and psf.min() >= 0
        assert psf.sum() == pytest.approx(1.0, abs=1e-12)
        row, col = trajectories.psf_centroid(psf)
        assert abs(row - 32) < 0.05 and abs(col - 32) < 0.05
        assert psf.max() < 1.0  # not min-max renormalised


def test_trajectory_is_a_constant_speed_path_within_the_canvas():
    traj = trajectories.random_trajectory(np.random.default_rng(5))
    steps = np.abs(np.diff(traj))
    np.testing.assert_allclose(steps, 60 / 1999, rtol=1e-9)
    assert max(np.ptp(traj.real), np.ptp(traj.imag)) <= 62


def test_uniform_blur_is_a_true_convolution_with_reflect_boundary():
    rng = np.random.default_rng(0)
    psf = np.zeros((64, 64))
    psf[32, 32] = 1.0
    image = rng.random((40, 50, 3)).astype(np.float32)
    np.testing.assert_array_equal(trajectories.blur_uniform(image, psf), image)
    psf = trajectories.random_psf(rng)
    delta = np.zeros((128, 128), np.float64)
    delta[64, 64] = 1.0
    np.testing.assert_allclose(trajectories.blur_uniform(delta, psf)[32:96, 32:96], psf, atol=1e-12)
    flat = np.full((30, 30), 0.4)
    np.testing.assert_allclose(trajectories.blur_uniform(flat, psf), flat, atol=1e-6)


# --- frame averaging (§2.3) -----------------------------------------------------------------------


def window(size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size + 96, size + 96, 3)).astype(np.uint8)


def zero_path():
    return synthetic.CameraPath(lambda t: np.zeros((np.size(t), 2)), 0.0, 0.0)


def test_frame_times_put_the_middle_frame_at_zero():
    for n in (7, 9, 11, 13):
        t = synthetic.frame_times(n)
        assert t[n // 2] == 0.0 and t[0] == pytest.approx(-0.5 + 0.5 / n)


def test_one_frame_or_a_zero_path_returns_the_sharp_image_exactly():
    win = window()
    crop = win[48:80, 48:80]
    path = synthetic.sample_camera_path(np.random.default_rng(1))
    one = synthetic.render_gopro(win, 32, path, 1)
    still = synthetic.render_gopro(win, 32, zero_path(), 9)
    for images in (one, still):
        np.testing.assert_array_equal(synthetic.quantise(images["sharp"]), crop)
        np.testing.assert_array_equal(synthetic.quantise(images["blur"]), crop)
        np.testing.assert_array_equal(synthetic.quantise(images["blur_gamma"]), crop)


def test_middle_frame_is_the_unresampled_crop_and_motion_blurs():
    win = window(seed=2)
    path = synthetic.sample_camera_path(np.random.default_rng(3))
    images = synthetic.render_gopro(win, 32, path, 11)
    np.testing.assert_array_equal(images["sharp"], win[48:80, 48:80])
    assert np.abs(images["blur"] - images["sharp"]).mean() > 1.0


def test_blur_and_blur_gamma_coincide_for_a_constant_image():
    win = np.full((128, 128, 3), 137, np.uint8)
    path = synthetic.sample_camera_path(np.random.default_rng(4))
    images = synthetic.render_gopro(win, 32, path, 13)
    np.testing.assert_array_equal(synthetic.quantise(images["blur"]), 137)
    np.testing.assert_array_equal(synthetic.quantise(images["blur_gamma"]), 137)


def test_gamma_average_is_brighter_than_plain_average_on_edges():
    frames = [np.zeros((2, 2, 3), np.float32), np.full((2, 2, 3), 255, np.float32)]
    blur, blur_gamma = synthetic.average_frames(frames)
    assert blur[0, 0, 0] == pytest.approx(127.5)
    assert blur_gamma[0, 0, 0] == pytest.approx(255 * 0.5 ** (1 / 2.2), rel=1e-5)


def test_camera_path_length_and_identity_at_zero():
    for seed in range(5):
        for kind in ("poly", "boracchi"):
            path = synthetic.sample_camera_path(np.random.default_rng(seed), kind)
            np.testing.assert_allclose(path.translation(0.0), 0.0, atol=1e-12)
            assert 3 - 1e-6 <= synthetic._path_length(path.translation) <= 30 + 1e-6
            assert abs(path.omega_max) <= np.radians(1.5) and abs(path.zeta) <= 0.03


def test_sprites_sit_at_their_integer_start_in_the_ground_truth():
    rng = np.random.default_rng(8)
    sprites = synthetic.sample_sprites(rng, "train", 32, exclude="astronaut")
    assert 1 <= len(sprites) <= 2
    win = window(seed=5)
    images = synthetic.render_gopro(win, 32, zero_path(), 7, sprites)
    expected = win[48:80, 48:80].astype(np.float32)
    for sprite in sprites:
        expected = synthetic.composite(expected, sprite, 0.0)
    np.testing.assert_array_equal(images["sharp"], expected)


# --- data sets --------------------------------------------------------------------------------


def build(root, **kw):
    cfg = synthetic.SynthConfig(**{**TINY, **kw})
    return synthetic.build_dataset(str(root), cfg)


def files_of(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_same_seed_gives_byte_identical_files(tmp_path, kind):
    a = build(tmp_path / "a", kind=kind, flows_per_image=2)
    b = build(tmp_path / "b", kind=kind, flows_per_image=2)
    names = files_of(a)
    assert names == files_of(b) and synthetic.MANIFEST in names
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors
    c = build(tmp_path / "c", kind=kind, flows_per_image=2, seed=8)
    differ = [n for n in names if n.endswith(".png") and os.path.exists(os.path.join(c, n))]
    assert files_of(c) != names or not all(
        filecmp.cmp(f"{a}/{n}", f"{c}/{n}", False) for n in differ
    )


def test_gopro_kind_layout_is_read_by_the_readers(tmp_path):
    root = build(tmp_path / "g")
    train = list_pairs(root, "train")
    test = list_pairs(root, "test")
    assert len(train) == 3 and len(test) == 2
    assert all(p.name.startswith("SYN_") and p.name.endswith(".png") for p in train + test)
    assert len(list_pairs(root, "train", blur_variant="blur_gamma")) == 3
    sources = {p.name.split("_")[1] for p in test}
    assert sources <= {"coffee", "rocket", "deadleaves"}  # test photos only (§2.6)
    with open(os.path.join(root, synthetic.MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["version"] == synthetic.VERSION and manifest["config"]["kind"] == "gopro"
    assert synthetic.version("gopro") == 1  # the embedded default set is unchanged


def test_flow_kind_saves_uv_half_labels(tmp_path):
    root = build(tmp_path / "f", kind="flow", u_max=6.0, flows_per_image=2)
    pairs = list_pairs(root, "train")
    with pytest.raises(data.DataError, match="blur_gamma"):
        list_pairs(root, "train", blur_variant="blur_gamma")
    for pair in pairs:
        label = np.load(flow_label_path(pair))
        assert label.shape == (32, 32, 2) and label.dtype == np.float32
        assert label[..., 0].min() >= 0 and np.abs(label).max() <= 6
        np.testing.assert_array_equal(label, np.round(label))
    assert filecmp.cmp(pairs[0].sharp, pairs[1].sharp, shallow=False)  # one shared sharp window


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_data_set_files_get_the_umask_modes(tmp_path, mask):
    """Not tempfile's 0600 / 0700: files 0666 & ~umask, folders 0777 & ~umask; an overwrite
    keeps them and leaves no temporary folder."""
    old = os.umask(mask)
    try:
        root = build(tmp_path / "g")
        synthetic.build_dataset(root, synthetic.SynthConfig(**TINY), overwrite=True)
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["g"]
    modes = {os.stat(root).st_mode & 0o777}
    for folder, dirs, files in os.walk(root):
        modes |= {os.stat(os.path.join(folder, d)).st_mode & 0o777 for d in dirs}
        file_modes = {os.stat(os.path.join(folder, f)).st_mode & 0o777 for f in files}
        assert file_modes <= {0o666 & ~mask}, (folder, file_modes)
    assert modes == {0o777 & ~mask}


def test_trajectory_kind_writes_blur_and_sharp(tmp_path):
    root = build(tmp_path / "t", kind="trajectory")
    assert len(list_pairs(root, "test")) == 2


def test_default_data_dir_generates_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv(default_data.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(default_data, "DEFAULT_CONFIG", synthetic.SynthConfig(**TINY))
    path = default_data.default_data_dir(workers=1)
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) == "synthetic_gopro_v1_s32_n3-2_seed7"
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary folder left behind

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    monkeypatch.setattr(synthetic, "build_dataset", fail)
    assert data.default_data_dir() == path
    source = data.open_split(None, "test")
    assert len(source) == 2 and source.pairs[0].blur.startswith(path)


def test_folder_name_tags_non_default_options():
    base = default_data.folder_name(synthetic.SynthConfig())
    assert base == "synthetic_gopro_v1_s256_n200-50_seed0"
    flow = default_data.folder_name(synthetic.SynthConfig(kind="flow", u_max=46.0))
    assert flow == "synthetic_flow_v2_s256_n200-50_seed0_u46"  # u_max named, no digest
    odd = default_data.folder_name(synthetic.SynthConfig(kind="flow", flows_per_image=10))
    assert odd.startswith("synthetic_flow_v2_s256_n200-50_seed0_u23_")
    other = default_data.folder_name(synthetic.SynthConfig(noise_sigma=0.01))
    assert other.startswith(base + "_") and other == default_data.folder_name(
        synthetic.SynthConfig(noise_sigma=0.01)
    )


def test_make_synthetic_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "data.make_synthetic", "--out", str(out), "--kind", "trajectory"]
    cmd += ["--pairs", "2", "--size", "24", "--seed", "3", "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert len(list_pairs(str(out), "train")) == 2 and len(list_pairs(str(out), "test")) == 1
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gopro", "flow"])
def test_worker_processes_give_the_same_files(tmp_path, kind):
    # flow: workers take whole groups of flows_per_image pairs (5 pairs: groups of 2, 2, 1)
    cfg = synthetic.SynthConfig(**{**TINY, "train_pairs": 5, "kind": kind, "flows_per_image": 2})
    a = synthetic.build_dataset(str(tmp_path / "a"), cfg, workers=1)
    b = synthetic.build_dataset(str(tmp_path / "b"), cfg, workers=2)
    names = files_of(a)
    assert names == files_of(b)
    assert not filecmp.cmpfiles(a, b, names, shallow=False)[1]
