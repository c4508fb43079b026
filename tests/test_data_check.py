"""The dataset checker (python -m data.check): counts, every problem kind, exit status."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data import check


def write(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if image.ndim == 3:
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    assert cv2.imwrite(str(path), image)


def rgb(seed, h=16, w=20):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def good(tmp_path):
    for split, sequences in {"train": ("S1", "S2"), "test": ("S3",)}.items():
        for s, seq in enumerate(sequences):
            for f in range(2):
                for kind in ("blur", "blur_gamma", "sharp"):
                    write(tmp_path / split / seq / kind / f"{f:06d}.png", rgb(10 * s + f))
    return tmp_path


def run_cli(*args):
    cmd = [sys.executable, "-m", "data.check", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def test_good_data_set_passes(good):
    reports = check.check_dataset(str(good))
    assert [(r.split, r.variant, len(r.pairs)) for r in reports] == [
        ("train", "blur", 4),
        ("train", "blur_gamma", 4),
        ("test", "blur", 2),
        ("test", "blur_gamma", 2),
    ]
    text = check.format_report(reports)
    assert "[train] blur: gopro layout, 4 pairs, 2 sequences" in text
    assert "sizes: 20x16 (4)" in text and text.endswith("OK: 0 error(s), 0 warning(s).")
    done = run_cli(good)
    assert done.returncode == 0 and "OK: 0 error(s)" in done.stdout


def test_every_problem_is_reported_and_the_exit_status_is_nonzero(good):
    seq = good / "train" / "S1"
    write(seq / "blur" / "000009.png", rgb(1))  # missing counterpart
    write(seq / "sharp" / "000001.png", rgb(2, h=12))  # size mismatch
    (seq / "blur_gamma" / "000000.png").write_bytes(cv2.imencode(".png", rgb(3))[1].tobytes()[:-30])
    write(good / "train" / "S2" / "blur" / "000000.png", rgb(4)[..., 0])  # grayscale
    write(good / "train" / "S2" / "blur" / "000001.png", np.dstack([rgb(5), rgb(5)[..., :1]]))
    write(good / "test" / "S3" / "sharp" / "000000.png", rgb(6).astype(np.uint16) * 257)
    corrupt = good / "test" / "S3" / "blur" / "000001.png"
    raw = bytearray(corrupt.read_bytes())
    raw[60:80] = b"\x00" * 20  # inside the compressed data: header and IEND intact
    corrupt.write_bytes(bytes(raw))
    (good / "test" / "S3" / "blur" / "notes.txt").write_text("x")
    text = check.format_report(check.check_dataset(str(good)))
    for expected in (
        "ERROR missing counterpart",
        "000009.png: no sharp counterpart",
        "ERROR size mismatch",
        "ERROR truncated",
        "pixel format (RGBA, grayscale): 2",
        "ERROR pixel format (16-bit per channel): 1",
        "ERROR unreadable: 1",
        "000001.png: damaged PNG data",
        "warning ignored: 1",
    ):
        assert expected in text, expected
    assert "FAILED" in text
    quick = check.format_report(check.check_dataset(str(good), quick=True))
    assert "damaged" not in quick  # only a full read finds damage inside a file
    done = run_cli(good, "--splits", "test", "--blur_variant", "blur")
    assert done.returncode == 1 and "[test] blur:" in done.stdout and "[train]" not in done.stdout


def test_split_folder_flat_layout_and_datalist(tmp_path):
    for name in ("a.png", "b.png"):
        write(tmp_path / "blur" / name, rgb(1))
        write(tmp_path / "sharp" / name, rgb(2))
    reports = check.check_dataset(str(tmp_path))
    assert [(r.split, r.layout, len(r.pairs)) for r in reports] == [(".", "paired", 2)]
    (tmp_path / "list.txt").write_text("sharp/a.png blur/a.png\nsharp/b.png blur/missing.png\n")
    reports = check.check_dataset(str(tmp_path), datalist=str(tmp_path / "list.txt"))
    assert reports[0].layout == "datalist" and len(reports[0].pairs) == 1
    assert any("missing.png" in p.message for p in reports[0].problems)


def test_cli_errors(tmp_path):
    assert run_cli(tmp_path / "absent").returncode == 1
    (tmp_path / "x").mkdir()
    done = run_cli(tmp_path)
    assert done.returncode == 1 and "no split folder" in done.stderr
    assert run_cli().returncode != 0


def test_damage_inside_the_image_data_is_found_and_named(good):
    """200 bytes overwritten inside the IDAT data of a larger PNG (header, chunk layout and IEND
    intact): --quick passes, the full check names the file (chunk checksum), exit 1, and libpng's
    own error line never reaches the output."""
    from tests.train_checks import damage_png

    bad = good / "train" / "S1" / "blur" / "000001.png"
    write(bad, rgb(7, h=96, w=128))
    write(good / "train" / "S1" / "sharp" / "000001.png", rgb(8, h=96, w=128))
    write(good / "train" / "S1" / "blur_gamma" / "000001.png", rgb(9, h=96, w=128))
    damage_png(bad)
    assert "damaged" not in check.format_report(check.check_dataset(str(good), quick=True))
    done = run_cli(good, "--splits", "train", "--blur_variant", "blur")
    assert done.returncode == 1
    assert f"{bad}: damaged PNG data (checksum mismatch in the IDAT chunk" in done.stdout
    assert "libpng" not in done.stdout + done.stderr
