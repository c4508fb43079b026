"""Readers of paired blur/sharp data sets (no TensorFlow): ``data_and_evaluation.md`` §1.1, §1.2.

:func:`list_pairs` auto-detects the layout of ``root/split``:

* **GoPro** (``GOPRO_Large``): ``split/<SEQUENCE>/{blur,blur_gamma,sharp}/<frame>.png``. The blur
  variant is chosen by ``blur_variant`` (default ``"blur"``, as the official SRN and MIMO-UNet code
  use; spec §1.1). This is also the layout of the project's synthetic data sets.
* **Paired folder**: ``split/{blur,sharp}/<name>`` with matching file names. This covers the
  flattened layout of the official MIMO-UNet preprocessing (``<SEQUENCE>_<frame>.png``) and any
  user folder; ``blur_variant`` names the blur folder here too.
* **Datalist** (``datalist=`` a text file): SRN's ``datalist_gopro.txt`` format, one pair per line,
  *sharp path first, then blur path*, separated by white space, relative to ``root`` (absolute
  paths are used as they are); ``#`` comments and blank lines are skipped. RealBlur's official
  ``RealBlur_{J,R}_{train,test}_list.txt`` files have the same ``gt blur`` order and are read the
  same way. With ``blur_variant="blur_gamma"`` a ``blur`` folder component of each listed blur path
  is replaced by ``blur_gamma``. ``split`` is only used in messages in this mode.

Every :class:`Pair` carries a ``name`` that is unique within the split and keeps the sequence,
because GoPro frame names repeat across sequences: ``<SEQUENCE>_<frame>.png`` for GoPro, the file
name for paired folders, and for datalists the blur path without its ``blur`` folder component and
without the leading folders common to all entries, joined by ``_``
(``GOPR0372_07_00/blur/000047.png`` -> ``GOPR0372_07_00_000047.png``).

Flow sets (``sen_rpgan.md`` §5; :mod:`data.synthetic` kind ``flow``): :func:`list_flow_examples`
lists (blurred image, ``uv_half`` label) paths of ``split/<SEQUENCE>/{blur,flow}/<frame>.{png,npy}``
(or ``split/{blur,flow}/``), :func:`check_flow_examples` validates every label's ``.npy`` header
(float32 (H, W, 2)) and its image's size, :func:`read_flow_label` loads one label (and rejects
non-finite values). Each problem is a :class:`~data.errors.DataError` naming the file.

Problems are collected as :class:`Problem` records (the checker reports all of them);
:func:`list_pairs` raises one :class:`~data.errors.DataError` listing the errors. Files with other
extensions (``.DS_Store``, ``Thumbs.db``) are skipped with a warning; image files must be 8-bit RGB
PNG or JPEG (see :mod:`data.image_io`).
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import NamedTuple

import numpy as np

from data import image_io
from data.errors import DataError, MissingSplitError

BLUR_VARIANTS = ("blur", "blur_gamma")
FLOW_FOLDER = "flow"  # <sequence>/flow/<frame>.npy: float32 (H, W, 2) uv_half labels
_MAX_LISTED = 10  # problems quoted in one DataError message


class Pair(NamedTuple):
    """Absolute paths of a blurred image and its sharp counterpart, and a split-unique name."""

    blur: str
    sharp: str
    name: str


class Problem(NamedTuple):
    """One finding about a data set; ``error=False`` marks a warning (e.g. a stray file)."""

    path: str
    kind: str
    message: str
    error: bool = True


class Scan(NamedTuple):
    """Result of scanning one split: its layout name, the pairs found and every problem."""

    layout: str
    pairs: list[Pair]
    problems: list[Problem]
    infos: dict[str, image_io.ImageInfo]


def list_pairs(
    root: str,
    split: str,
    blur_variant: str = "blur",
    datalist: str | None = None,
    check_images: bool = True,
) -> list[Pair]:
    """Pairs of ``root/split`` (or of ``datalist``), sorted by name; DataError on any problem.

    ``check_images`` also validates the header and end of every file (8-bit RGB PNG/JPEG, not
    truncated) and that blur and sharp sizes agree.
    """
    scan = scan_split(root, split, blur_variant, datalist, check_images=check_images)
    raise_for_problems(scan.problems, f"{split!r} split of {root}")
    return scan.pairs


def scan_split(
    root: str,
    split: str,
    blur_variant: str = "blur",
    datalist: str | None = None,
    check_images: bool = True,
) -> Scan:
    """Finds the pairs of one split and collects every problem instead of raising."""
    if blur_variant not in BLUR_VARIANTS:
        raise DataError(f"blur_variant must be one of {BLUR_VARIANTS}, got {blur_variant!r}.")
    if datalist is not None:
        layout, (pairs, problems) = "datalist", _scan_datalist(root, datalist, blur_variant)
    else:
        split_dir = _split_dir(root, split)
        layout = detect_layout(split_dir)
        scanner = _scan_paired if layout == "paired" else _scan_gopro
        pairs, problems = scanner(split_dir, blur_variant)
    problems += _duplicate_names(pairs)
    infos = {}
    if check_images:
        infos, image_problems = check_pair_images(pairs)
        problems += image_problems
    if not pairs:
        where = datalist or os.path.join(root, split)
        problems.append(Problem(where, "no_pairs", f"{where}: no image pairs found."))
    return Scan(layout, sorted(pairs, key=lambda p: p.name), problems, infos)


def raise_for_problems(problems: list[Problem], context: str) -> None:
    """Raises one DataError quoting the first errors of ``problems`` (warnings are ignored).

    A single error is raised as its own one-line message (``<file>: <problem>``).
    """
    errors = [p for p in problems if p.error]
    if not errors:
        return
    if len(errors) == 1:
        raise DataError(errors[0].message)
    lines = [f"  - {p.message}" for p in errors[:_MAX_LISTED]]
    if len(errors) > _MAX_LISTED:
        lines.append(f"  ... and {len(errors) - _MAX_LISTED} more (run `python -m data.check`).")
    raise DataError(f"{len(errors)} problem(s) in the {context}:\n" + "\n".join(lines))


def _split_dir(root: str, split: str) -> str:
    if not os.path.isdir(root):
        raise MissingSplitError(f"{root}: data folder not found.")
    split_dir = os.path.join(root, split)
    if os.path.isdir(split_dir):
        return split_dir
    nested = [d for d in ("GOPRO_Large", "GoPro", "GOPRO") if os.path.isdir(os.path.join(root, d))]
    hint = f" Did you mean {os.path.join(root, nested[0])}?" if nested else ""
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    raise MissingSplitError(f"{split_dir}: split folder not found (subfolders: {found}).{hint}")


def detect_layout(split_dir: str) -> str:
    """``"paired"`` (``blur*/`` + ``sharp/`` inside) or ``"gopro"`` (sequence folders)."""
    entries = sorted(os.listdir(split_dir))
    if "sharp" in entries or any(v in entries for v in BLUR_VARIANTS):
        return "paired"
    if any(_is_sequence(os.path.join(split_dir, e)) for e in entries):
        return "gopro"
    raise DataError(
        f"{split_dir}: unrecognised layout: expected blur/ and sharp/ folders, or sequence folders "
        f"each holding blur/ and sharp/ (found {entries[:8]})."
    )


def _is_sequence(path: str) -> bool:
    names = ("sharp", *BLUR_VARIANTS)
    return os.path.isdir(path) and any(os.path.isdir(os.path.join(path, n)) for n in names)


def _scan_gopro(split_dir: str, variant: str) -> tuple[list[Pair], list[Problem]]:
    pairs, problems = [], []
    for seq in sorted(os.listdir(split_dir)):
        seq_dir = os.path.join(split_dir, seq)
        if not _is_sequence(seq_dir):
            problems.append(_stray(seq_dir, "not a sequence folder (no blur/ or sharp/)"))
            continue
        seq_pairs, seq_problems = _scan_paired(seq_dir, variant, prefix=f"{seq}_")
        pairs += seq_pairs
        problems += seq_problems
    return pairs, problems


def _scan_paired(folder: str, variant: str, prefix: str = "") -> tuple[list[Pair], list[Problem]]:
    blur_dir, sharp_dir = os.path.join(folder, variant), os.path.join(folder, "sharp")
    problems = [
        Problem(d, "missing_folder", f"{d}: folder not found.")
        for d in (blur_dir, sharp_dir)
        if not os.path.isdir(d)
    ]
    if problems:
        return [], problems
    blurs, stray_b = _image_files(blur_dir)
    sharps, stray_s = _image_files(sharp_dir)
    problems = stray_b + stray_s + _missing(blur_dir, sharp_dir, blurs, sharps)
    pairs = [
        Pair(os.path.join(blur_dir, n), os.path.join(sharp_dir, n), prefix + n)
        for n in sorted(blurs & sharps)
    ]
    return pairs, problems


def _image_files(folder: str) -> tuple[set[str], list[Problem]]:
    images, stray = set(), []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if image_io.is_image_name(name) and not os.path.isdir(path):
            images.add(name)
        elif not name.startswith("."):
            stray.append(_stray(path, "not a PNG/JPEG image file, ignored"))
    return images, stray


def _stray(path: str, why: str) -> Problem:
    return Problem(path, "ignored", f"{path}: {why}.", error=False)


def _missing(blur_dir, sharp_dir, blurs: set[str], sharps: set[str]) -> list[Problem]:
    out = [
        Problem(
            os.path.join(blur_dir, n),
            "missing_counterpart",
            f"{os.path.join(blur_dir, n)}: no sharp counterpart {os.path.join(sharp_dir, n)}.",
        )
        for n in sorted(blurs - sharps)
    ]
    out += [
        Problem(
            os.path.join(sharp_dir, n),
            "missing_counterpart",
            f"{os.path.join(sharp_dir, n)}: no blurred counterpart {os.path.join(blur_dir, n)}.",
        )
        for n in sorted(sharps - blurs)
    ]
    return out


def _scan_datalist(root: str, datalist: str, variant: str) -> tuple[list[Pair], list[Problem]]:
    entries, problems = _read_datalist(datalist, variant)
    names = _datalist_names([blur for _, blur in entries])
    pairs = []
    for (sharp_rel, blur_rel), name in zip(entries, names, strict=True):
        sharp, blur = (os.path.join(root, p) for p in (sharp_rel, blur_rel))
        missing = [p for p in (blur, sharp) if not os.path.isfile(p)]
        problems += [
            Problem(p, "missing_file", f"{p}: listed in {datalist} but not found.") for p in missing
        ]
        if not missing:
            pairs.append(Pair(blur, sharp, name))
    return pairs, problems


def _read_datalist(datalist: str, variant: str) -> tuple[list[tuple[str, str]], list[Problem]]:
    try:
        with open(datalist, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{datalist}: cannot read datalist ({e}).") from e
    entries, problems = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            msg = f"{datalist}:{number}: expected 'sharp_path blur_path', got {line.strip()!r}."
            problems.append(Problem(datalist, "bad_datalist_line", msg))
            continue
        entries.append((fields[0], _with_variant(fields[1], variant)))
    return entries, problems


def _with_variant(blur_path: str, variant: str) -> str:
    if variant == "blur":
        return blur_path
    parts = blur_path.replace("\\", "/").split("/")
    return "/".join(variant if p == "blur" else p for p in parts)


def _datalist_names(blur_paths: list[str]) -> list[str]:
    """Split-unique names: path parts minus blur folders and minus the common leading folders."""
    parts = [
        [p for p in path.replace("\\", "/").split("/") if p not in ("", ".", *BLUR_VARIANTS)]
        for path in blur_paths
    ]
    common = os.path.commonprefix([p[:-1] for p in parts]) if len(parts) > 1 else []
    return ["_".join(p[len(common) :]) if len(p) > len(common) else p[-1] for p in parts]


def _duplicate_names(pairs: list[Pair]) -> list[Problem]:
    seen, problems = {}, []
    for pair in pairs:
        if pair.name in seen:
            msg = f"{pair.blur}: name {pair.name!r} also used by {seen[pair.name]}."
            problems.append(Problem(pair.blur, "duplicate_name", msg))
        seen[pair.name] = pair.blur
    return problems


def check_pair_images(pairs: list[Pair]) -> tuple[dict[str, image_io.ImageInfo], list[Problem]]:
    """Header checks of every file of ``pairs`` and blur/sharp size agreement."""
    infos, problems = {}, []
    for pair in pairs:
        for path in (pair.blur, pair.sharp):
            try:
                infos[path] = info = image_io.read_info(path)
            except DataError as e:
                problems.append(Problem(path, _kind_of(str(e)), str(e)))
                continue
            bad = image_io.pixel_format_problem(info)
            if bad:
                problems.append(Problem(path, "pixel_format", f"{path}: {bad}."))
        problems += _size_mismatch(pair, infos)
    return infos, problems


def _kind_of(message: str) -> str:
    return "truncated" if "truncated" in message else "unreadable"


def _size_mismatch(pair: Pair, infos: dict[str, image_io.ImageInfo]) -> list[Problem]:
    blur, sharp = infos.get(pair.blur), infos.get(pair.sharp)
    if blur is None or sharp is None or (blur.width, blur.height) == (sharp.width, sharp.height):
        return []
    msg = (
        f"{pair.blur}: size {blur.width}x{blur.height} differs from its sharp counterpart "
        f"{pair.sharp} ({sharp.width}x{sharp.height})."
    )
    return [Problem(pair.blur, "size_mismatch", msg)]


def label_path_of(blur_path: str) -> str:
    """``<sequence>/flow/<frame>.npy``, the label path of ``<sequence>/blur/<frame>.png``."""
    seq_dir = os.path.dirname(os.path.dirname(blur_path))
    stem = os.path.splitext(os.path.basename(blur_path))[0]
    return os.path.join(seq_dir, FLOW_FOLDER, stem + ".npy")


def flow_label_path(pair: Pair) -> str:
    """Path of the ``uv_half`` flow label (``<sequence>/flow/<frame>.npy``, float32 (H, W, 2)) of a
    pair of a synthetic ``flow`` data set; DataError if it does not exist."""
    path = label_path_of(pair.blur)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no flow label for {pair.blur} (not a synthetic 'flow' set?).")
    return path


# --- flow sets (sen_rpgan.md §5) ------------------------------------------------------------------


def list_flow_examples(root: str, split: str) -> list[tuple[str, str]]:
    """Sorted (blurred image, flow label) paths of ``root/split`` (see the module docstring).

    DataError (one line) if the split has no blurred images, has blurred images but no labels at
    all (not a flow set), or lacks the label of some image (the first one is named).
    """
    split_dir = _split_dir(root, split)
    if os.path.isdir(os.path.join(split_dir, "blur")):
        folders = [split_dir]
    else:
        folders = [os.path.join(split_dir, name) for name in sorted(os.listdir(split_dir))]
    examples = []
    for folder in folders:
        blur_dir = os.path.join(folder, "blur")
        if os.path.isdir(blur_dir):
            names = (n for n in os.listdir(blur_dir) if image_io.is_image_name(n))
            examples += [
                (os.path.join(blur_dir, n), label_path_of(os.path.join(blur_dir, n))) for n in names
            ]
    if not examples:
        raise DataError(f"{split_dir}: no blurred images (<sequence>/blur/<frame>.png) found.")
    missing = [(blur, label) for blur, label in sorted(examples) if not os.path.isfile(label)]
    if len(missing) == len(examples):
        raise DataError(
            f"{split_dir}: {len(examples)} blurred image(s) but no flow labels "
            f"(<sequence>/{FLOW_FOLDER}/<frame>.npy): not a flow data set (make one with "
            "`python -m data.make_synthetic --kind flow`)."
        )
    if missing:
        more = f" ({len(missing)} of {len(examples)} labels missing)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0][1]}: flow label of {missing[0][0]} not found{more}.")
    return sorted(examples)


# numpy parses a .npy header with ast.literal_eval, which CPython 3.11 cannot run in parallel
# threads (python/cpython#106905: "SystemError: AST constructor recursion depth mismatch", seen
# in tf.data's parallel map of the flow pipeline); the headers are read one at a time.
_NPY_LOCK = threading.Lock()


def load_npy(path: str, mmap: bool = False) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (no pickles; memory-mapped read-only with ``mmap``), safe
    to call from several threads."""
    with _NPY_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _load_label(path: str, mmap: bool) -> np.ndarray:
    try:
        label = load_npy(path, mmap)
    except FileNotFoundError:
        raise DataError(f"{path}: flow label not found.") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise DataError(f"{path}: cannot read flow label ({error}).") from None
    if not isinstance(label, np.ndarray):  # e.g. an .npz archive under a .npy name
        raise DataError(f"{path}: not a .npy array file.")
    if label.dtype != np.float32:
        raise DataError(f"{path}: flow label has dtype {label.dtype}, expected float32.")
    if label.ndim != 3 or label.shape[-1] != 2 or 0 in label.shape:
        raise DataError(f"{path}: flow label has shape {label.shape}, expected (H, W, 2).")
    return label


def _check_label_size(path: str, label_hw, image_hw, image: str | None = None) -> None:
    if image_hw is not None and tuple(label_hw) != tuple(image_hw):
        (h, w), (ih, iw) = label_hw, image_hw
        of = f" {image}" if image else ""
        raise DataError(f"{path}: flow label is {w}x{h}, its blurred image{of} is {iw}x{ih}.")


def read_flow_label(path: str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """The float32 (H, W, 2) ``uv_half`` label at ``path``; DataError naming the file if it is
    missing, unreadable, not float32 (H, W, 2), not ``expected_hw`` in size, or not finite."""
    label = _load_label(path, mmap=False)
    _check_label_size(path, label.shape[:2], expected_hw)
    bad = int(label.size - np.count_nonzero(np.isfinite(label)))
    if bad:
        raise DataError(f"{path}: flow label has {bad} non-finite value(s) (NaN or Inf).")
    return label


def check_flow_examples(examples: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """(H, W) of every example from the file headers: the image must be 8-bit RGB PNG/JPEG and its
    label a float32 (H, W, 2) array of the same size (values are checked when read). Raises one
    DataError naming the first bad file."""
    sizes = []
    for blur, label in examples:
        info = image_io.check_rgb8(blur)
        label_hw = _load_label(label, mmap=True).shape[:2]
        _check_label_size(label, label_hw, (info.height, info.width), blur)
        sizes.append((info.height, info.width))
    return sizes
