"""deblur.py and inference/tiling.py: tiling geometry and seams, automatic tiling, image formats,
files, output checks before the model, bad input refused."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from absl import flags

import deblur
import metrics
import models
from inference import outputs, sources, tiling
from tests.bad_files import write_damaged_png
from tests.train_checks import run_main

FLAGS = flags.FLAGS
TINY = {"num_res": 1, "base_channels": 8}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(Keras restorer, weights path) of a tiny MIMO-UNet (effective receptive field ~ +-6 px)."""
    model = models.build_model("mimo_unet", **TINY)
    model.build((None, None, None, 3))
    path = str(tmp_path_factory.mktemp("weights") / "tiny.weights.h5")
    model.save_weights(path)
    return sources.keras_restorer(model), path


def identity():
    return sources.Restorer(lambda x: x, {"kind": "identity"}, None)


# --------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 40, 41, 64, 97, 300, 1283])
@pytest.mark.parametrize(("tile", "overlap", "align"), [(40, 16, 4), (64, 8, 1), (512, 32, 4)])
def test_tile_spans_cover_overlap_align_and_touch_the_border(size, tile, overlap, align):
    spans = tiling.tile_spans(size, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == size
    for (start, stop), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert start % align == 0 and next_start % align == 0
        assert stop - next_start >= overlap and next_start > start
    assert all(stop - start <= tile + align - 1 for start, stop in spans)


def test_bad_tiling_is_refused():
    with pytest.raises(ValueError, match="too small"):
        tiling.check_tiling(32, 16, 4)


def test_identity_tiling_is_exact():
    image = np.random.default_rng(0).random((45, 70, 3), dtype=np.float32)
    np.testing.assert_allclose(tiling.restore_tiled(identity(), image, 24, 8, 4), image, atol=1e-6)


def test_tiled_matches_untiled_without_seams(tiny):
    """Overlap 16 > the tiny model's receptive field: the PSNR difference is far below 0.05 dB."""
    from skimage import data as skdata

    restorer = tiny[0]
    sharp = cv2.resize(skdata.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    blur = cv2.GaussianBlur(sharp, (7, 7), 2.0).astype(np.float32) / 255
    whole = restorer(blur[None]).numpy()[0]
    tiled = tiling.restore_tiled(restorer, blur, 40, 16, 4)  # 3 x 3 tiles
    hard = tiling.restore_tiled(restorer, blur, 40, 0, 4)  # no overlap: hard seams
    psnr_whole = metrics.psnr(metrics.to_uint8(whole), sharp)
    assert abs(metrics.psnr(metrics.to_uint8(tiled), sharp) - psnr_whole) < 0.05
    agreement = metrics.psnr(np.clip(tiled, 0, 1), np.clip(whole, 0, 1))
    assert (
        agreement > 60 and agreement > metrics.psnr(np.clip(hard, 0, 1), np.clip(whole, 0, 1)) + 20
    )


# --------------------------------------------------------------------------------------------------
# Image formats (identity restorer: the round trip must be exact)
# --------------------------------------------------------------------------------------------------


def _round_trip(tmp_path, image, name="in.png"):
    source, target = str(tmp_path / name), str(tmp_path / "out.png")
    assert cv2.imwrite(source, image)
    deblur.deblur_file(identity(), source, target)
    return cv2.imread(target, cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize(
    "shape_dtype",
    [
        ((13, 17, 3), np.uint8),
        ((13, 17), np.uint8),
        ((13, 17, 4), np.uint8),
        ((13, 17, 3), np.uint16),
        ((13, 17), np.uint16),
        ((13, 17, 4), np.uint16),
    ],
)
def test_formats_round_trip_exactly(tmp_path, shape_dtype):
    shape, dtype = shape_dtype
    image = np.random.default_rng(1).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    out = _round_trip(tmp_path, image)
    assert out.dtype == dtype and out.shape == image.shape
    np.testing.assert_array_equal(out, image)


def test_alpha_is_kept_and_colour_order_is_rgb(tmp_path):
    seen = []

    def record(x):
        seen.append(np.asarray(x))
        return 1.0 - x  # invert the colour

    bgra = np.zeros((12, 12, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, np.arange(12, dtype=np.uint8)[:, None] * 20  # blue; alpha
    source, target = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    cv2.imwrite(source, bgra)
    deblur.deblur_file(sources.Restorer(record, {}, None), source, target)
    assert seen[0][0, 0, 0].tolist() == [0.0, 0.0, 1.0]  # the model sees RGB
    out = cv2.imread(target, cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out[..., 3], bgra[..., 3])
    assert out[0, 0, :3].tolist() == [0, 255, 255]


def test_png_is_streamed_to_a_temporary_and_renamed(tmp_path):
    """write_image: the same PNG bytes as cv2.imencode, no temporary left, a dead process's
    temporary removed."""
    image = np.random.default_rng(5).integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    stale = tmp_path / ".out.png.tmp-999999999-partial.png"  # no such process
    stale.write_bytes(b"half a PNG")
    deblur.write_image(str(tmp_path / "out.png"), image)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]
    assert (tmp_path / "out.png").read_bytes() == cv2.imencode(".png", image)[1].tobytes()


def test_jpeg_input_gives_png_output_next_to_it(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "photo.jpg"), image)
    inputs = deblur.list_inputs(str(tmp_path), "_deblurred")
    assert deblur.run(identity(), deblur.plan_outputs(inputs, None, "_deblurred"), 0, 32) == 1
    assert (tmp_path / "photo_deblurred.png").is_file()
    assert deblur.list_inputs(str(tmp_path), "_deblurred") == [str(tmp_path / "photo.jpg")]
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    with pytest.raises(deblur.ImageError, match="would both be written"):
        deblur.plan_outputs(deblur.list_inputs(str(tmp_path), "_deblurred"), None, "_deblurred")
    with pytest.raises(deblur.ImageError, match="overwrite the input"):
        deblur.output_path(str(tmp_path / "x.png"), None, "")


def test_unsupported_and_damaged_images_are_refused_clearly(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cv2.imwrite(str(tmp_path / "float.tiff"), np.zeros((8, 8, 3), np.float32))
    damaged = write_damaged_png(tmp_path / "damaged.png")
    with pytest.raises(deblur.ImageError, match="broken.png: cannot be decoded"):
        deblur.read_image(str(tmp_path / "broken.png"))
    with pytest.raises(deblur.ImageError, match="float32 samples are not supported"):
        deblur.read_image(str(tmp_path / "float.tiff"))
    assert cv2.haveImageReader(damaged)  # the header is intact: only decoding finds the damage
    with pytest.raises(deblur.ImageError, match="damaged.png: cannot be decoded .*libpng"):
        deblur.read_image(damaged)


def test_auto_tiling_for_a_small_budget_matches_the_whole_image(tiny):
    """--tile auto: a budget below the whole-image estimate tiles; the result equals the whole,
    and writing it into the input array itself gives the same values."""
    model = tiny[0].model
    restorer = sources.keras_restorer(model, source={"model": "mimo_unet", "model_kwargs": TINY})
    per_pixel = tiling.forward_bytes_per_pixel(restorer.source)
    full = tiling.FORWARD_BYTES_PER_PIXEL["mimo_unet"]
    assert per_pixel == pytest.approx(full * (0.25 + 0.75 * 8 / 32))  # scaled by the width
    rgb = np.random.default_rng(4).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    # Room for the process with 40-px tiles (the model's multiple is 4), not 44 nor the whole.
    budget_gb = tiling.tiled_bytes(restorer.source, 64, 80, rgb.nbytes, 40, 4) / tiling.GB
    assert deblur.choose_tile(restorer, 64, 80, "auto", 12, budget_gb=100) == 0
    side = deblur.choose_tile(restorer, 64, 80, "auto", 12, budget_gb, rgb.nbytes)
    assert side == 40
    assert deblur.choose_tile(restorer, 64, 80, 0, 12) == 0
    assert deblur.choose_tile(restorer, 64, 80, 100, 12) == 0
    layout = {"dtype": np.dtype(np.uint8), "gray": False, "alpha": None}
    whole = deblur.deblur_values(restorer, rgb, layout, 0)
    tiled = deblur.deblur_values(restorer, rgb, layout, side, 12)
    assert tiled.dtype == np.uint8 and tiled.shape == rgb.shape
    assert np.abs(tiled.astype(int) - whole).max() <= 3
    assert metrics.psnr(tiled, whole) > 45
    in_place = deblur.deblur_values(restorer, rgb, layout, side, 12, out=rgb)
    assert in_place is rgb
    np.testing.assert_array_equal(in_place, tiled)


def test_in_place_tiling_keeps_alpha_and_gray(tmp_path):
    """The tiled path writes into the decoded array: alpha rows are copied before they are
    overwritten, and grayscale stays exact (identity restorer)."""
    rng = np.random.default_rng(7)
    for shape in ((45, 70, 4), (45, 70)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        values, layout = image.copy(), {"dtype": np.dtype(np.uint8), "gray": len(shape) == 2}
        layout["alpha"] = values[..., 3] if len(shape) == 3 else None
        out = deblur.deblur_values(identity(), values, layout, 24, 8, out=values)
        np.testing.assert_array_equal(out, image)


def test_forward_memory_estimate_scales_with_each_models_full_width():
    """GradientNet's entry is at its full width 64; the 32-wide models keep their numbers."""
    estimate, table = tiling.forward_bytes_per_pixel, tiling.FORWARD_BYTES_PER_PIXEL
    full = table["gradientnet"]
    assert estimate({"model": "gradientnet"}) == full
    assert estimate({"model": "gradientnet", "model_kwargs": {"base_channels": 64}}) == full
    half = {"model": "gradientnet", "model_kwargs": {"base_channels": 32}}
    assert estimate(half) == pytest.approx(full * (0.25 + 0.75 / 2))
    assert estimate({**half, "self_ensemble": "rot4"}) == pytest.approx(2 * estimate(half))
    mimo = {"model": "mimo_unet", "model_kwargs": {"base_channels": 32}}
    assert estimate(mimo) == table["mimo_unet"]
    assert estimate({"model": "two_way", "model_kwargs": {"channels": 8}}) == pytest.approx(
        table["two_way"] * (0.25 + 0.75 * 8 / 32)
    )
    assert estimate({"model": "unknown"}) == max(table.values())


@pytest.mark.parametrize(
    "source",
    [{"model": name} for name in models.model_names()]
    + [{"model": "rpgan_generator", "framework": {"levels": 3}}],
    ids=lambda source: "framework" if "framework" in source else source["model"],
)
def test_default_plan_keeps_a_10000x8000_photo_within_2_gib(source):
    """The issue's bound: --tile auto under the default --memory_budget_gb plans the whole
    process (TensorFlow, weights, a tile's forward, the band, the image array) within 2 GiB, for
    every restorer and the framework, with tiles large enough to be efficient."""
    height, width = 8000, 10000
    restorer = sources.Restorer(lambda x: x, source, None)
    if "framework" in source:
        restorer.source.update(tile_multiple=4, min_tile_overlap=96)
    overlap = deblur.auto_overlap(restorer, "auto", 32)
    budget = deblur.DeblurConfig.memory_budget_gb
    side = deblur.choose_tile(restorer, height, width, "auto", overlap, budget, 3 * height * width)
    assert side >= 256
    align = deblur.restorer_multiple(restorer)
    estimate = tiling.tiled_bytes(source, height, width, 3 * height * width, side, align)
    assert estimate <= 2 * 2**30
    # and the next larger aligned tile would not have fitted the budget
    assert tiling.tiled_bytes(source, height, width, 3 * height * width, side + align, align) > (
        budget * tiling.GB
    )


def test_banded_tiling_equals_the_two_dimensional_weights():
    """restore_bands' separable weights and carried bands give the plain weighted average."""
    image = np.random.default_rng(6).random((45, 70, 3), dtype=np.float32)

    def restorer(x):
        return np.sin(7 * np.asarray(x)) + np.asarray(x).mean()

    for tile, overlap, align in [(24, 8, 4), (13, 4, 1), (17, 6, 1)]:
        total = np.zeros_like(image)
        weight = np.zeros(image.shape[:2] + (1,), np.float32)
        rows = tiling.tile_spans(45, tile, overlap, align)
        cols = tiling.tile_spans(70, tile, overlap, align)
        for i, (top, bottom) in enumerate(rows):
            wy = tiling.ramp(bottom - top, overlap, i > 0, i < len(rows) - 1)
            for j, (left, right) in enumerate(cols):
                wx = tiling.ramp(right - left, overlap, j > 0, j < len(cols) - 1)
                window = (wy[:, None] * wx[None, :])[..., None]
                total[top:bottom, left:right] += restorer(image[top:bottom, left:right]) * window
                weight[top:bottom, left:right] += window
        got = tiling.restore_tiled(lambda x: restorer(x[0])[None], image, tile, overlap, align)
        np.testing.assert_allclose(got, total / weight, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def test_main_tiles_and_refuses_a_damaged_file_keeping_finished_outputs(tiny, tmp_path, capsys):
    restorer, weights = tiny
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    image = np.random.default_rng(3).integers(0, 256, (50, 61, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "good.png"), image)
    write_damaged_png(folder / "later.png")
    (folder / "notes.txt").write_text("not an image: skipped")
    source = ["--weights", weights, "--model", "mimo_unet", "--model_kwargs", json.dumps(TINY)]
    args = [*source, "--input", str(folder), "--out", str(out), "--tile", "40"]
    code = run_main(deblur, *args, "--tile_overlap", "16")
    assert isinstance(code, str) and code.startswith("deblur.py: error: ")
    assert "later.png" in code and "\n" not in code
    assert sorted(os.listdir(out)) == ["good_deblurred.png"]  # complete, no temporaries
    assert f"good.png -> {out / 'good_deblurred.png'}" in capsys.readouterr().out
    whole = restorer(image[None, ..., ::-1] / np.float32(255)).numpy()[0]
    written = cv2.imread(str(out / "good_deblurred.png"))[..., ::-1]
    assert metrics.psnr(written, metrics.to_uint8(whole)) > 45


def test_outputs_are_checked_before_the_model_is_loaded(tmp_path):
    """Existing targets, an --out that is a file or under one: refused in words before the
    (here missing) weights are opened; with --overwrite the weights are the next problem."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(folder / f"{name}.png"), np.zeros((8, 8, 3), np.uint8))
        (folder / f"{name}_deblurred.png").write_bytes(b"an earlier result")
    (tmp_path / "file").write_text("x")
    source = ["--weights", str(tmp_path / "missing.weights.h5"), "--model", "mimo_unet"]
    cases = {
        "a_deblurred.png exists (and 2 more); pass --overwrite": ["--input", str(folder)],
        "is a file, not a folder": ["--input", str(folder), "--out", str(tmp_path / "file")],
        "is under the file": ["--input", str(folder), "--out", str(tmp_path / "file" / "x")],
        "missing.weights.h5: no such file": ["--input", str(folder), "--overwrite"],
    }
    for message, args in cases.items():
        code = run_main(deblur, *source, *args)
        assert isinstance(code, str) and message in code, (message, code)
    assert (folder / "a_deblurred.png").read_bytes() == b"an earlier result"
    with pytest.raises(outputs.OutputError, match="not writable"):
        os.chmod(folder, 0o500)
        try:
            if os.access(folder, os.W_OK):  # running as root: permissions do not apply
                raise outputs.OutputError("not writable (root: skipped)")
            deblur.plan_outputs([str(folder / "a.png")], None, "_new")
        finally:
            os.chmod(folder, 0o700)


def test_main_bad_inputs(tiny, tmp_path):
    weights = tiny[1]
    image = str(tmp_path / "x.png")
    cv2.imwrite(image, np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    cases = {
        "--input is required": ["--weights", weights, "--model", "mimo_unet"],
        "no such file or folder": [
            "--input",
            str(tmp_path / "nope.png"),
            "--weights",
            weights,
            "--model",
            "mimo_unet",
        ],
        "no image files": [
            "--input",
            str(tmp_path / "empty"),
            "--weights",
            weights,
            "--model",
            "mimo_unet",
        ],
        "not registered": ["--input", image, "--weights", weights, "--model", "unet9000"],
        "not a SavedModel": ["--input", image, "--saved_model", str(tmp_path / "empty")],
        "too small": [
            "--input",
            image,
            "--weights",
            weights,
            "--model",
            "mimo_unet",
            "--tile",
            "16",
            "--tile_overlap",
            "16",
        ],
    }
    for message, args in cases.items():
        code = run_main(deblur, *args)
        assert isinstance(code, str) and message in code, (message, code)


@pytest.mark.slow
def test_the_three_commands_run_as_subprocesses(tmp_path):
    """Each CLI as a user runs it: bad input -> non-zero exit and a message on stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cases = [
        (
            "deblur.py",
            ["--input", str(tmp_path / "missing.png"), "--saved_model", str(tmp_path)],
            "no such file or folder",
        ),
        ("evaluate.py", ["--saved_model", str(tmp_path)], "not a SavedModel directory"),
        (
            "export.py",
            ["--weights", "w.weights.h5", "--model", "nonet", "--out", "x"],
            "not registered",
        ),
    ]
    for script, args, message in cases:
        done = subprocess.run(
            [sys.executable, script, *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode != 0 and message in done.stderr, (script, done.stderr[-2000:])


def test_compare_writes_blurred_and_restored_side_by_side(tmp_path):
    """--compare: <stem>_compare.png holds the two previews over the two full-resolution crops,
    the crop where the image changed; it is planned (refused if present) like the output."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (300, 1800, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), image)

    def restorer(x):  # changes only a patch at rows 100-160, columns 1500-1560
        x = np.array(x)
        x[:, 100:160, 1500:1560] = 0.5
        return x

    target = str(tmp_path / "photo_deblurred.png")
    plan = deblur.plan_outputs([str(path)], None, "_deblurred", compare=True)
    assert plan == [(str(path), target)]
    fake = sources.Restorer(restorer, {"kind": "test"}, None)
    deblur.run(fake, plan, tile=0, compare=True)
    picture = cv2.imread(str(tmp_path / "photo_deblurred_compare.png"))[..., ::-1]
    half = (1536 - 8) // 2
    preview_height = round(300 * half / 1800)
    side = 150  # half the image's shorter side (below 256)
    assert picture.shape == (preview_height + 8 + side, 2 * half + 8, 3)
    crop_blurred, crop_restored = picture[-side:, :side], picture[-side:, side + 8 : 2 * side + 8]
    # The restored crop holds the whole grey patch, the blurred one the noise there.
    grey = (crop_restored == 128).all(axis=2)
    assert grey.sum() >= 0.9 * 60 * 60  # the box is found on the previews: a few px off
    assert not (crop_blurred[grey] == 128).all(axis=1).any()
    with pytest.raises(outputs.OutputError, match="photo_deblurred_compare.png exists"):
        os.remove(target)
        deblur.plan_outputs([str(path)], None, "_deblurred", compare=True)
