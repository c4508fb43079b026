"""Dataset checker: ``python -m data.check DIR [--splits train,test] [--quick] ...``.

For every split of ``DIR`` (the sub-folders in any layout :mod:`data.readers` recognises, or
``DIR`` itself if it is a split, or the pairs of ``--datalist``) and every blur variant present
(``blur``, and ``blur_gamma`` if such folders exist), it reports:

* the layout, the number of pairs (and of sequences) and the image sizes;
* missing counterparts and folders, duplicate names, size mismatches between blur and sharp;
* unreadable, empty and truncated files (header and end checks, then a full read of every file
  unless ``--quick``: PNG chunk checksums and an OpenCV decode, which find damage inside a file,
  with the same message training gives);
* grayscale, grey+alpha, RGBA, CMYK and 16-bit images (the readers refuse them);
* ignored files (warnings only).

Exit status: 0 if no errors were found, 1 otherwise (2 for bad arguments).
"""

from __future__ import annotations

import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from absl import app, flags

import cli
from data import image_io, readers
from data.errors import DataError
from data.readers import Problem

FLAGS = flags.FLAGS
KNOWN_SPLITS = ("train", "test", "val", "valid", "validation")


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, so importing never clashes)."""
    flags.DEFINE_list("splits", None, "Splits to check (default: every split folder found).")
    flags.DEFINE_enum(
        "blur_variant", "all", ["all", "blur", "blur_gamma"], "Blur folder(s) to check."
    )
    flags.DEFINE_string("datalist", None, "SRN/RealBlur pair list (paths relative to DIR).")
    flags.DEFINE_bool("quick", False, "Header and end checks only (no full decode).")
    flags.DEFINE_integer("workers", 2, "Decoding threads.")
    flags.DEFINE_integer("max_listed", 10, "Problems listed per kind.")


class SplitReport(NamedTuple):
    split: str
    variant: str
    layout: str
    pairs: list[readers.Pair]
    sizes: collections.Counter
    problems: list[Problem]


def find_splits(root: str) -> list[str]:
    """Split folders of ``root``: the usual split names first, else ``["."]`` if ``root`` is
    itself a split, else any sub-folder in a recognised layout."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: folder not found.")
    known = [s for s in KNOWN_SPLITS if _is_split(os.path.join(root, s))]
    if known:
        return known
    if _is_split(root):
        return ["."]
    subfolders = sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)))
    splits = [n for n in subfolders if _is_split(os.path.join(root, n))]
    if not splits:
        raise DataError(f"{root}: no split folder in a recognised layout (found {subfolders}).")
    return splits


def _is_split(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    try:
        readers.detect_layout(path)
        return True
    except DataError:
        return False


def variants_present(split_dir: str) -> list[str]:
    """``blur`` plus ``blur_gamma`` if the split has such a folder (flat or in a sequence)."""
    found = ["blur"]
    for dirpath, dirnames, _ in os.walk(split_dir):
        if "blur_gamma" in dirnames:
            return found + ["blur_gamma"]
        if dirpath != split_dir:
            dirnames[:] = []  # sequences are one level deep
    return found


def check_split(root, split, variant, datalist=None, quick=False, workers=2, decoded=None):
    """Scans one split and variant; ``decoded`` caches full-decode results across calls."""
    scan = readers.scan_split(root, split, variant, datalist, check_images=True)
    problems = list(scan.problems)
    if not quick:
        flagged = {p.path for p in problems if p.error}
        paths = [q for p in scan.pairs for q in (p.blur, p.sharp) if q not in flagged]
        problems += _decode_all(paths, workers, {} if decoded is None else decoded)
    sizes = collections.Counter(
        f"{scan.infos[p.blur].width}x{scan.infos[p.blur].height}"
        for p in scan.pairs
        if p.blur in scan.infos
    )
    return SplitReport(split, variant, scan.layout, scan.pairs, sizes, problems)


def _decode_all(paths, workers: int, decoded: dict) -> list[Problem]:
    todo = [p for p in dict.fromkeys(paths) if p not in decoded]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for path, error in zip(todo, pool.map(_decode_error, todo), strict=True):
            decoded[path] = error
    return [Problem(p, "unreadable", decoded[p]) for p in dict.fromkeys(paths) if decoded[p]]


def _decode_error(path: str) -> str | None:
    try:
        image_io.decode_strict(path)
    except DataError as e:
        return str(e)
    return None


def check_dataset(root, splits=None, variant="all", datalist=None, quick=False, workers=2):
    """Reports of every split and blur variant of a data set."""
    if not splits:
        splits = ["."] if datalist else find_splits(root)
    decoded, reports, seen = {}, [], set()
    for split in splits:
        split_dir = os.path.join(root, split)
        variants = [variant] if variant != "all" else _variants(split_dir, datalist)
        for v in variants:
            report = check_split(root, split, v, datalist, quick, workers, decoded)
            # A sharp file's problem shows up once per blur variant: report it once.
            fresh = [p for p in report.problems if p not in seen]
            seen.update(fresh)
            reports.append(report._replace(problems=fresh))
    return reports


def _variants(split_dir: str, datalist) -> list[str]:
    if datalist or not os.path.isdir(split_dir):
        return ["blur"]
    return variants_present(split_dir)


def format_report(reports: list[SplitReport], max_listed: int = 10) -> str:
    lines = []
    for r in reports:
        sequences = len({os.path.dirname(os.path.dirname(p.blur)) for p in r.pairs})
        plural = "s" if sequences != 1 else ""
        seq = f", {sequences} sequence{plural}" if r.layout == "gopro" else ""
        sizes = ", ".join(f"{k} ({n})" for k, n in r.sizes.most_common(5)) or "-"
        lines.append(f"[{r.split}] {r.variant}: {r.layout} layout, {len(r.pairs)} pairs{seq}")
        lines.append(f"  sizes: {sizes}")
        lines += _format_problems(r.problems, max_listed)
    errors = sum(p.error for r in reports for p in r.problems)
    warnings = sum(not p.error for r in reports for p in r.problems)
    lines.append(f"{'FAILED' if errors else 'OK'}: {errors} error(s), {warnings} warning(s).")
    return "\n".join(lines)


def _format_problems(problems: list[Problem], max_listed: int) -> list[str]:
    by_kind = collections.defaultdict(list)
    for p in problems:
        by_kind[(p.error, p.kind)].append(p)
    lines = []
    for (error, kind), items in sorted(by_kind.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        label = "ERROR" if error else "warning"
        lines.append(f"  {label} {_kind_label(kind, items)}: {len(items)}")
        lines += [f"    {p.message}" for p in items[:max_listed]]
        if len(items) > max_listed:
            lines.append(f"    ... and {len(items) - max_listed} more")
    return lines


def _kind_label(kind: str, items: list[Problem]) -> str:
    if kind != "pixel_format":
        return kind.replace("_", " ")
    formats = collections.Counter(p.message.split(": ", 1)[-1].split(" (")[0] for p in items)
    return "pixel format (" + ", ".join(sorted(formats)) + ")"


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("usage: python -m data.check DIR [flags]")
    try:
        reports = check_dataset(
            argv[1], FLAGS.splits, FLAGS.blur_variant, FLAGS.datalist, FLAGS.quick, FLAGS.workers
        )
    except DataError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    print(format_report(reports, FLAGS.max_listed))
    return 1 if any(p.error for r in reports for p in r.problems) else 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
