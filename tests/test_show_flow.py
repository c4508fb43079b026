"""show_flow.py and inference/flow_vis.py: the Middlebury colour code's directions, kernel glyphs
centred on their pixels, .npy + PNG outputs of the right shape from tiny SEN weights and from a
flow SavedModel, bad inputs and existing outputs refused in one line before the model loads."""

import json
import os

import cv2
import numpy as np
import tensorflow as tf

import models
import show_flow
from inference import flow_io, flow_vis
from tests.test_evaluate_flow import TINY_SEN, write_standin_flow_export
from tests.train_checks import run_main


def test_colour_code_directions_and_saturation():
    flow = np.array([[[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0], [0.5, 0], [2, 0]]], np.float32)
    right, left, down, up, still, half, beyond = flow_vis.flow_to_colour(flow, max_flow=1.0)[0]
    assert tuple(right) == (255, 0, 0) and tuple(still) == (255, 255, 255)  # red; white
    assert left[0] == 0 and left[1] > 150 and left[2] == 255  # cyan
    assert down[0] == 255 and down[1] > 200 and down[2] == 0  # yellow
    assert up[2] == 255 and up[1] == 0  # blue-violet
    assert tuple(half) == (255, 127, 127)  # half the magnitude: half saturated
    assert tuple(beyond) == (191, 0, 0)  # beyond --max_flow: darkened (x0.75)
    # Default normalisation: the flow's own largest magnitude saturates.
    assert tuple(flow_vis.flow_to_colour(flow * 3)[0, 6]) == (255, 0, 0)
    assert flow_vis.colour_wheel().shape == (55, 3)


def green(canvas):
    """Pixels mostly covered by a glyph (anti-aliased ends included)."""
    return (canvas[..., 1] > 180) & (canvas[..., 0] < 60)


def test_kernel_glyph_is_a_segment_centred_on_its_pixel():
    image = np.full((33, 33, 3), 200, np.uint8)
    flow = np.zeros((33, 33, 2), np.float32)
    flow[16, 16] = (10, 0)  # horizontal kernel of length 10 at the single grid point (16, 16)
    canvas = flow_vis.draw_kernels(image, flow, grid=32, thickness=1)
    rows, cols = np.nonzero(green(canvas))
    assert set(rows) == {16} and cols.min() == 11 and cols.max() == 21
    flow[16, 16] = (0, 6)  # vertical, length 6
    rows, cols = np.nonzero(green(flow_vis.draw_kernels(image, flow, grid=32, thickness=1)))
    assert set(cols) == {16} and rows.min() == 13 and rows.max() == 19
    figure = flow_vis.flow_figure(np.zeros((120, 160, 3), np.uint8), np.ones((120, 160, 2)))
    assert figure.shape == (120, 2 * 160 + flow_vis.GAP, 3)


def write_image(path, h, w, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


def test_main_with_tiny_sen_writes_npy_and_png(tmp_path, capsys):
    model = models.build_flow_estimator("sen", **TINY_SEN)
    model.build((None, None, None, 3))
    weights = str(tmp_path / "sen.weights.h5")
    model.save_weights(weights)
    photos = tmp_path / "photos"
    photos.mkdir()
    images = {"a": write_image(photos / "a.png", 64, 64, 0)}
    images["b"] = write_image(photos / "b.jpg", 50, 70, 1)  # padded to 64x128, cropped back
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["--input", str(photos), "--out_dir", str(out), "--weights", weights, "--model", "sen"]
    args += ["--model_kwargs", json.dumps(TINY_SEN), "--grid", "8"]
    assert run_main(show_flow, *args) == 0
    assert sorted(os.listdir(out)) == ["a_flow.npy", "a_flow.png", "b_flow.npy", "b_flow.png"]
    for name, (h, w) in (("a", (64, 64)), ("b", (50, 70))):
        flow = np.load(out / f"{name}_flow.npy")
        assert flow.shape == (h, w, 2) and flow.dtype == np.float32
        if name == "b":  # the odd size: padded to 64x128 inside and cropped back
            rgb = cv2.imread(str(photos / "b.jpg"))[..., ::-1]
            batch = tf.constant(rgb[None].astype(np.float32) / 255.0)
            np.testing.assert_allclose(flow, flow_io.estimate_flow(model, batch)[0], atol=1e-5)
        assert cv2.imread(str(out / f"{name}_flow.png")).shape == (h, 2 * w + flow_vis.GAP, 3)
    text = capsys.readouterr().out
    assert "a_flow.npy" in text and "Estimated the flow of 2 image(s)." in text
    # A second run over the same folder refuses the existing outputs unless --overwrite.
    code = run_main(show_flow, *args)
    assert isinstance(code, str) and "a_flow.npy exists (and 3 more); pass --overwrite" in code


def test_flow_saved_model_beside_the_input(tmp_path):
    _, export_path = write_standin_flow_export(tmp_path / "export")
    photo = tmp_path / "shot.png"
    write_image(photo, 20, 30, 2)
    assert run_main(show_flow, "--input", str(photo), "--saved_model", export_path) == 0
    assert np.load(tmp_path / "shot_flow.npy").shape == (20, 30, 2)
    assert (tmp_path / "shot_flow.png").is_file()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporaries left


def test_bad_inputs_are_one_line(tmp_path):
    good = tmp_path / "good.png"
    write_image(good, 16, 16, 3)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    export_path = str(tmp_path / "no_export")
    source = ["--saved_model", export_path]
    cases = {
        "missing.png: no such file or folder": ["--input", str(tmp_path / "missing.png")],
        "--input is required": [],
        "--grid 0: must be a positive": ["--input", str(good), "--grid", "0"],
        "no_export: no such directory": ["--input", str(good), "--out_dir", str(tmp_path / "o")],
    }
    for message, args in cases.items():
        code = run_main(show_flow, *args, *source)
        assert isinstance(code, str) and code.startswith("show_flow.py: error: "), code
        assert message in code and "\n" not in code, (message, code)
    # A damaged file is named when it is read (after the model loads): one line, nothing written.
    _, path = write_standin_flow_export(tmp_path / "export")
    code = run_main(show_flow, "--input", str(garbage), "--saved_model", path)
    assert isinstance(code, str) and "garbage.png" in code and "\n" not in code, code
    assert not (tmp_path / "garbage_flow.npy").exists()


def test_restorer_source_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"model": "two_way"}))
    (run / "final.weights.h5").write_bytes(b"")
    photo = tmp_path / "p.png"
    write_image(photo, 16, 16, 4)
    code = run_main(show_flow, "--input", str(photo), "--checkpoint", str(run))
    assert isinstance(code, str) and "holds a deblurring model (model 'two_way')" in code
