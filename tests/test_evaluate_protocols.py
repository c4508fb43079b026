"""evaluate.py under the benchmarks' protocols on small RealBlur- and Köhler-layout folders written
to tmp_path: layout detection, --predictions, the absent frame, a missing prediction, a wrong
layout (one line each), the HTML report whose every link resolves, and --save_images read back
by --predictions."""

from __future__ import annotations

import csv
import dataclasses
import html.parser
import json
import math
import os

import cv2
import numpy as np
import pytest
import skimage.data

import evaluate
from data import benchmarks
from inference import sources
from inference.source_config import ModelSource
from protocols import kohler
from tests.train_checks import run_main

WARP = np.array([[1.0, 0.006, 1.2], [-0.003, 1.0, -0.8], [0.0, 0.0, 1.0]], np.float32)


def write_png(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


@pytest.fixture(scope="module")
def photo():
    """A 112 x 144 crop of scikit-image's astronaut (RGB uint8)."""
    return np.ascontiguousarray(skimage.data.astronaut()[60:172, 160:304])


def warped(image, warp=WARP):
    size = (image.shape[1], image.shape[0])
    return cv2.warpPerspective(
        image, warp, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )


@pytest.fixture(scope="module")
def realblur_set(tmp_path_factory, photo):
    """RealBlur-J-like root: two scenes listed in RealBlur_J_test_list.txt (gt, then blur), and
    predictions that are the sharp images moved by a known homography."""
    root = tmp_path_factory.mktemp("realblur")
    predictions = tmp_path_factory.mktemp("realblur_predictions")
    lines = []
    for scene, flip in (("scene001", False), ("scene002", True)):
        sharp = photo[:, ::-1] if flip else photo
        gt = f"RealBlur-J_ECC_IMCORR_centroid_itensity_ref/{scene}/gt/gt_1.png"
        blur = f"RealBlur-J_ECC_IMCORR_centroid_itensity_ref/{scene}/blur/blur_1.png"
        write_png(root / gt, sharp)
        write_png(root / blur, cv2.GaussianBlur(warped(sharp), (9, 9), 2.0))
        write_png(predictions / blur, warped(sharp))
        lines.append(f"{gt} {blur}")
    (root / "RealBlur_J_test_list.txt").write_text("\n".join(lines) + "\n")
    return root, predictions


def shifted(image, shift):
    return kohler.shifted(image.astype(np.float64), shift).astype(np.uint8)


@pytest.fixture(scope="module")
def kohler_set(tmp_path_factory):
    """Köhler-like root: shots 1_1 and 1_3, each frame a noisy crop of the astronaut moved by
    its number; frame 2 of shot 1_3 is absent (as frame 30 of the real image 1, kernel 3).
    Predictions: shot 1_1's is its frame 2 moved by (3, -2) pixels (zero fill), shot 1_3's is
    its frame 3 exactly."""
    root = tmp_path_factory.mktemp("kohler")
    predictions = tmp_path_factory.mktemp("kohler_predictions")
    scene = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    frames = {}
    for shake, numbers in ((1, (1, 2, 3)), (3, (1, 3, 4))):
        for number in numbers:
            top, left = 60 + 2 * number, 160 - 3 * number
            frame = scene[top : top + 176, left : left + 192].astype(int)  # 5 MS-SSIM scales
            frame = np.clip(frame + rng.integers(-3, 4, frame.shape), 0, 255).astype(np.uint8)
            frames[(shake, number)] = frame
            folder = root / "Image1" / f"Kernel{shake}"
            write_png(folder / f"GroundTruth1_{shake}_{number}.png", frame)
        write_png(root / f"Blurry1_{shake}.png", cv2.GaussianBlur(frames[(shake, 1)], (9, 9), 3))
    write_png(predictions / "Blurry1_1.png", shifted(frames[(1, 2)], (3, -2)))
    write_png(predictions / "Blurry1_3.png", frames[(3, 3)])
    return root, predictions


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_layouts_are_detected(realblur_set, kohler_set, tmp_path):
    assert benchmarks.detect_protocol(str(realblur_set[0])) == "realblur"
    assert benchmarks.detect_protocol(str(kohler_set[0])) == "kohler"
    assert benchmarks.detect_protocol(None) == "gopro"
    (tmp_path / "test" / "SEQ" / "sharp").mkdir(parents=True)
    assert benchmarks.detect_protocol(str(tmp_path)) == "gopro"
    assert benchmarks.detect_protocol(str(tmp_path / "test")) == "plain"
    shots = benchmarks.list_kohler_shots(str(kohler_set[0]))
    assert [shot.name for shot in shots] == ["Blurry1_1", "Blurry1_3"]
    # The absent frame is skipped, the others in numeric order.
    names = [os.path.basename(path) for path in shots[1].frames]
    assert names == ["GroundTruth1_3_1.png", "GroundTruth1_3_3.png", "GroundTruth1_3_4.png"]


def test_realblur_predictions_are_aligned_before_scoring(realblur_set, tmp_path, capsys):
    root, predictions = realblur_set
    out = tmp_path / "out"
    args = ["--predictions", str(predictions), "--data_dir", str(root), "--out_dir", str(out)]
    assert run_main(evaluate, *args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "realblur" and summary["num_images"] == 2
    assert summary["psnr_mean"] > summary["unaligned_psnr_mean"] + 10
    assert summary["psnr_mean"] > summary["input_psnr_mean"] + 5
    assert summary["model_source"]["kind"] == "predictions"
    assert any("31.92" in line for line in summary["paper_reference"])
    rows = read_csv(out / "per_image.csv")
    assert {row["protocol"] for row in rows} == {"realblur"} and rows[0]["seconds"] == ""
    printed = capsys.readouterr().out
    assert "RealBlur-aligned" in printed and "2 images" in printed and "unaligned" in printed


def test_kohler_predictions_best_frame_and_identical_shot(kohler_set, tmp_path, capsys):
    root, predictions = kohler_set
    out = tmp_path / "out"
    args = ["--predictions", str(predictions), "--data_dir", str(root), "--out_dir", str(out)]
    assert run_main(evaluate, *args, "--report") == 0
    rows = {row["name"]: row for row in read_csv(out / "per_image.csv")}
    # Shot 1_1: its frame 2, moved; registration moves it back (only the border is lost).
    assert rows["Blurry1_1"]["best_frame"] == "GroundTruth1_1_2.png"
    assert float(rows["Blurry1_1"]["psnr"]) > 30 and rows["Blurry1_1"]["frames"] == "3"
    # Shot 1_3: exactly its frame 3: PSNR +inf, counted apart from the mean.
    assert rows["Blurry1_3"]["psnr"] == "inf" and rows["Blurry1_3"]["frames"] == "3"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "kohler" and summary["num_identical"] == 1
    assert summary["metrics"] == ["psnr", "msssim", "ssim"]
    assert math.isfinite(summary["input_msssim_mean"]) and summary["psnr_mean"] > 30
    printed = capsys.readouterr().out
    assert "Köhler" in printed and "MS-SSIM" in printed and "26.80" in printed
    assert_report_links_resolve(out)


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("href", "src")]


def assert_report_links_resolve(out):
    parser = Links()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    assert parser.links, "the report links no picture"
    for link in parser.links:
        assert not link.startswith(("http:", "https:", "/")), link
        assert (out / link).is_file(), link
        assert cv2.imread(str(out / link)) is not None, link


def test_missing_and_wrong_inputs_are_one_line_each(realblur_set, kohler_set, tmp_path):
    root, predictions = kohler_set
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "Blurry1_1.png").write_bytes((predictions / "Blurry1_1.png").read_bytes())
    out = tmp_path / "out"
    base = ["--data_dir", str(root), "--out_dir", str(out)]
    cases = {
        f"{partial / 'Blurry1_3.png'}: prediction of Blurry1_3 not found": [
            "--predictions",
            str(partial),
        ],
        "no Köhler shots": [
            "--predictions",
            str(partial),
            "--data_dir",
            str(realblur_set[0]),
            "--protocol",
            "kohler",
        ],  # fmt: skip
        "no RealBlur list file": ["--predictions", str(partial), "--protocol", "realblur"],
        "--metric_input must be uint8": ["--predictions", str(partial), "--metric_input", "float"],
        "drop --weights": ["--predictions", str(partial), "--weights", "w.weights.h5"],
        "--report writes report.html into --out_dir": [
            "--predictions",
            str(partial),
            "--out_dir",
            "",
            "--report",
        ],
    }
    for message, args in cases.items():
        code = run_main(evaluate, *base, *args)
        assert isinstance(code, str) and message in code and "\n" not in code, (message, code)
    assert not out.exists()  # nothing written
    (partial / "Blurry1_3.png").write_bytes(b"not a png")
    code = run_main(evaluate, *base, "--predictions", str(partial))
    assert isinstance(code, str) and "Blurry1_3.png" in code and "prediction of" in code, code


def test_missing_frame_folder_is_named(kohler_set, tmp_path):
    root = tmp_path / "k"
    root.mkdir()
    (root / "Blurry2_5.png").write_bytes((kohler_set[0] / "Blurry1_1.png").read_bytes())
    code = run_main(evaluate, "--predictions", str(kohler_set[1]), "--data_dir", str(root))
    assert isinstance(code, str) and f"{root / 'Image2' / 'Kernel5'}: folder" in code, code


def test_saved_images_score_the_same_as_predictions(tmp_path):
    """--save_images names each PNG as --predictions looks for it: the scores agree."""
    root, saved = tmp_path / "data", tmp_path / "saved"
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        sharp = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        write_png(root / "test" / "blur" / f"{name}.png", cv2.GaussianBlur(sharp, (5, 5), 1.0))
        write_png(root / "test" / "sharp" / f"{name}.png", sharp)
    restorer = sources.Restorer(lambda x: x * 0.9 + 0.05, {"kind": "test"}, None)
    config = evaluate.EvaluateConfig(
        source=ModelSource(),
        data_dir=str(root),
        save_images=str(saved),
        warmup=0,
        out_dir=str(tmp_path / "out"),
        report=True,
    )
    first = evaluate.run(config, restorer)
    assert sorted(os.listdir(saved / "test" / "blur")) == ["a.png", "b.png"]
    assert_report_links_resolve(tmp_path / "out")
    again = dataclasses.replace(
        config, save_images=None, predictions=str(saved), out_dir=None, report=False
    )
    second = evaluate.run(again, None)
    assert first["protocol"] == second["protocol"] == "plain"
    assert second["psnr_mean"] == pytest.approx(first["psnr_mean"], abs=1e-9)
    assert second["ssim_mean"] == pytest.approx(first["ssim_mean"], abs=1e-9)
