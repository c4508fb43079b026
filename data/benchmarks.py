"""The layouts of the papers' other benchmarks, and which evaluation protocol a folder calls for
(``data_and_evaluation.md`` §1.2, §1.3; no TensorFlow).

* **RealBlur** (-J / -R): the official list files ``RealBlur_J_test_list.txt`` /
  ``RealBlur_R_test_list.txt`` in the data root, one pair per line, sharp path then blurred path,
  relative to the root (read by :mod:`data.readers` as a datalist).
* **Köhler**: ``Blurry{p}_{t}.png`` in the data root (p = 1..4 scenes, t = 1..12 camera shakes) and
  the sharp frames of each shot in ``Image{p}/Kernel{t}/GroundTruth{p}_{t}_{f}.png`` (about 199
  per shot; gaps are allowed: frame 30 of image 1, kernel 3 is absent from the download).

:func:`detect_protocol` names the protocol of a data folder: ``kohler``, ``realblur``, ``gopro``
(sequence folders, the embedded synthetic set, ``tfds:gopro``) or ``plain`` (anything else the
data layer reads). Every problem is a :class:`~data.errors.DataError` naming the file or folder.
"""

from __future__ import annotations

import glob
import os
import re
from typing import NamedTuple

from data import image_io
from data.errors import DataError

PROTOCOLS = ("gopro", "realblur", "kohler", "plain")
REALBLUR_LISTS = ("RealBlur_J_{split}_list.txt", "RealBlur_R_{split}_list.txt")
KOHLER_SHOT = re.compile(r"^Blurry(\d+)_(\d+)\.png$")
KOHLER_FRAME = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)\.png$")


class KohlerShot(NamedTuple):
    """One blurred shot of the Köhler benchmark and its sharp frames (numeric order)."""

    name: str  # "Blurry{p}_{t}"
    blur: str  # path of Blurry{p}_{t}.png
    frames: tuple[str, ...]  # paths of GroundTruth{p}_{t}_{f}.png, by f


def detect_protocol(data_dir: str | None, split: str = "test") -> str:
    """The protocol a data folder calls for (module docstring); ``None`` = the embedded set."""
    if data_dir is None or os.fspath(data_dir).startswith("tfds:"):
        return "gopro"
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        return "plain"  # the data layer names the missing folder
    names = os.listdir(data_dir)
    if any(KOHLER_SHOT.match(name) for name in names):
        return "kohler"
    if realblur_lists(data_dir, split):
        return "realblur"
    split_dir = os.path.join(data_dir, split)
    if os.path.isdir(split_dir) and _has_sequences(split_dir):
        return "gopro"
    return "plain"


def _has_sequences(split_dir: str) -> bool:
    for entry in os.listdir(split_dir):
        path = os.path.join(split_dir, entry)
        if os.path.isdir(path) and os.path.isdir(os.path.join(path, "sharp")):
            return True
    return False


def realblur_lists(data_dir: str, split: str = "test") -> list[str]:
    """The official RealBlur list files of ``split`` present in ``data_dir``."""
    paths = [os.path.join(data_dir, name.format(split=split)) for name in REALBLUR_LISTS]
    return [path for path in paths if os.path.isfile(path)]


def realblur_list(data_dir: str, split: str = "test", datalist: str | None = None) -> str:
    """The list file to score: ``datalist`` when given, else the one official list in
    ``data_dir`` (both -J and -R present need ``datalist`` to choose)."""
    if datalist:
        if not os.path.isfile(datalist):
            raise DataError(f"{datalist}: list file not found.")
        return datalist
    found = realblur_lists(data_dir, split)
    expected = " or ".join(name.format(split=split) for name in REALBLUR_LISTS)
    if not found:
        raise DataError(f"{data_dir}: no RealBlur list file ({expected}) for --protocol realblur.")
    if len(found) > 1:
        raise DataError(
            f"{data_dir}: both RealBlur-J and RealBlur-R lists are present; choose one with "
            f"--datalist ({', '.join(os.path.basename(p) for p in found)})."
        )
    return found[0]


def list_kohler_shots(data_dir: str) -> list[KohlerShot]:
    """Every shot of a Köhler folder with its frames, sorted by (scene, shake); every file's
    header is checked (8-bit RGB PNG) and every frame must have its shot's size."""
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data folder not found.")
    shots = []
    for name in sorted(os.listdir(data_dir)):
        match = KOHLER_SHOT.match(name)
        if match:
            scene, shake = int(match.group(1)), int(match.group(2))
            shots.append((scene, shake, _kohler_shot(data_dir, name, scene, shake)))
    if not shots:
        raise DataError(
            f"{data_dir}: no Köhler shots (expected Blurry{{p}}_{{t}}.png beside "
            "Image{p}/Kernel{t}/GroundTruth{p}_{t}_{f}.png)."
        )
    return [shot for _, _, shot in sorted(shots)]


def _kohler_shot(data_dir: str, name: str, scene: int, shake: int) -> KohlerShot:
    blur = os.path.join(data_dir, name)
    folder = os.path.join(data_dir, f"Image{scene}", f"Kernel{shake}")
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder of the sharp frames of {name} not found.")
    frames = []
    for path in glob.glob(os.path.join(glob.escape(folder), "GroundTruth*.png")):
        match = KOHLER_FRAME.match(os.path.basename(path))
        if match and (int(match.group(1)), int(match.group(2))) == (scene, shake):
            frames.append((int(match.group(3)), path))
    if not frames:
        raise DataError(f"{folder}: no GroundTruth{scene}_{shake}_<frame>.png frames for {name}.")
    size = _size(blur)
    for _, path in frames:
        if _size(path) != size:
            raise DataError(
                f"{path}: frame size {_size(path)[1]}x{_size(path)[0]} differs from {name}'s "
                f"{size[1]}x{size[0]}."
            )
    return KohlerShot(name[: -len(".png")], blur, tuple(path for _, path in sorted(frames)))


def _size(path: str) -> tuple[int, int]:
    info = image_io.check_rgb8(path)
    return info.height, info.width
