"""A report a user can look at: ``evaluate.py --report`` writes ``report.html`` (self-contained:
inline style, relative links, no network) and its pictures in ``report/``; ``deblur.py
--compare`` writes the same side-by-side strip for one photo (no TensorFlow).

Top to bottom the page shows what was scored (protocol, model, data, number of images), the means
of the restored images against the blurred input's with the gain and the papers' numbers for the
set, the best, median and worst images by PSNR gain over their blurred input as blurred | restored
| sharp strips (scaled to fit, linked to the full-size strip) with a full-resolution crop where the
restoration changed most (256 px, or half a small image's side; drawn enlarged, square pixels),
the table of every image, and the metric definitions.

Images are (H, W, 3) RGB: uint8, or float in [0, 1] (clamped, x255, rounded as a saved PNG).
"""

from __future__ import annotations

import datetime
import html
import math
import os

import cv2
import numpy as np

import fileio
from inference.scorers import as_uint8 as to_uint8

FOLDER = "report"
PAGE = "report.html"
MAX_STRIP_WIDTH = 1536  # the strip shown in the page; the linked file is full size
CROP = 256  # side of the full-resolution crop
GAP = 8  # white pixels between panels


def strip(panels) -> np.ndarray:
    """Panels (RGB, one height) side by side with white gaps, full size."""
    height = max(panel.shape[0] for panel in panels)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    parts = []
    for panel in panels:
        pad = height - panel.shape[0]
        parts += [np.pad(panel, ((0, pad), (0, 0), (0, 0)), constant_values=255), gap]
    return np.concatenate(parts[:-1], axis=1)


def fitted(image, width=MAX_STRIP_WIDTH) -> np.ndarray:
    """``image`` scaled down (area interpolation) to at most ``width`` columns."""
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def crop_box(before, after, reference=None, size=CROP) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a ``size`` square where the images differ most: the
    largest drop of the local squared error to ``reference`` when given, else the largest local
    change from ``before`` to ``after``."""
    height, width = before.shape[:2]
    side = min(size, height, width)
    b, a = (np.asarray(x, np.float32).mean(axis=2) for x in (before, after))
    if reference is None:
        change = (a - b) ** 2
    else:
        r = np.asarray(reference, np.float32).mean(axis=2)
        change = (b - r) ** 2 - (a - r) ** 2
    local = cv2.boxFilter(change, -1, (side, side), normalize=True, borderType=cv2.BORDER_REFLECT)
    half = side // 2
    inner = local[half : height - (side - half) + 1, half : width - (side - half) + 1]
    row, col = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(row), int(col), int(row) + side, int(col) + side


def crop_side(height, width) -> int:
    """The crop's side: :data:`CROP`, or half the image's shorter side for small images (a crop
    of the whole image would show nothing new)."""
    return max(1, min(CROP, height // 2, width // 2))


def comparison(images: dict) -> tuple[np.ndarray, np.ndarray]:
    """(full-size strip, strip of full-resolution crops) of ``images`` ({label: RGB}, in
    order: blurred, restored[, sharp]); the crop is where the restoration helped most."""
    panels = [to_uint8(image) for image in images.values()]
    reference = panels[2] if len(panels) > 2 else None
    side = crop_side(*panels[0].shape[:2])
    top, left, bottom, right = crop_box(panels[0], panels[1], reference, side)
    return strip(panels), strip([panel[top:bottom, left:right] for panel in panels])


def write_png(path, rgb) -> None:
    """Atomic RGB PNG write (the folder must exist)."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: could not encode the picture as PNG.")
    fileio.atomic_write_bytes(path, encoded.tobytes())


def stacked(top, bottom) -> np.ndarray:
    """``top`` over ``bottom`` (RGB uint8) with a white gap, left-aligned."""
    width = max(top.shape[1], bottom.shape[1])
    rows = [np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255)
            for x in (top, np.full((GAP, 1, 3), 255, np.uint8), bottom)]  # fmt: skip
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------------------------------
# evaluate.py --report
# --------------------------------------------------------------------------------------------------


def gain(row) -> float:
    return row["psnr"] - row["input_psnr"]


def pick_examples(rows) -> list[tuple[str, dict]]:
    """[(kind, row)] of the best, median and worst images by PSNR gain over the blurred input
    (finite values only; fewer when there are fewer images)."""
    ranked = sorted(
        (row for row in rows if math.isfinite(row["psnr"]) and math.isfinite(row["input_psnr"])),
        key=gain,
        reverse=True,
    )
    if not ranked:
        return []
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    seen, chosen = set(), []
    for kind, row in picks:
        if row["name"] not in seen:
            seen.add(row["name"])
            chosen.append((kind, row))
    return chosen


def example_images(blur, output, reference) -> dict:
    """The labelled images of one example: blurred, restored, sharp (uint8)."""
    return {
        "blurred": to_uint8(blur),
        "restored": to_uint8(output),
        "sharp": to_uint8(reference),
    }


def write_report(out_dir, summary, rows, chosen, pictures) -> str:
    """Writes ``out_dir/report.html`` and ``out_dir/report/*.png``; returns the page's path.

    ``chosen`` is :func:`pick_examples`'s list, ``pictures`` {name: :func:`example_images`}."""
    folder = os.path.join(out_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    sections = []
    for kind, row in chosen:
        if row["name"] not in pictures:
            continue
        full, crops = comparison(pictures[row["name"]])
        names = {f"{kind}.png": full, f"{kind}_crop.png": crops}
        if full.shape[1] > MAX_STRIP_WIDTH:
            names[f"{kind}_shown.png"] = fitted(full)
        for file_name, image in names.items():
            write_png(os.path.join(folder, file_name), image)
        zoom = max(1, min(4, MAX_STRIP_WIDTH // crops.shape[1]))
        shown = f"{kind}_shown.png" if f"{kind}_shown.png" in names else f"{kind}.png"
        labels = list(pictures[row["name"]])
        sections.append(_example_html(kind, row, labels, shown, crops.shape[1] * zoom))
    page = _page(summary, rows, sections)
    path = os.path.join(out_dir, PAGE)
    fileio.atomic_write_bytes(path, page.encode("utf-8"))
    return path


def _example_html(kind, row, labels, shown, crop_width) -> str:
    """One example: the strip (``shown``, linked to the full-size strip) and the crops, drawn
    ``crop_width`` px wide with square pixels (a zoom of a small crop stays pixel-exact)."""
    name = html.escape(row["name"])
    caption = " | ".join(html.escape(label) for label in labels)
    return (
        f"<section><h3>{kind.capitalize()}: {name} ({gain(row):+.2f} dB over blurred; PSNR "
        f"{row['psnr']:.2f} dB)</h3>\n<p class=cap>{caption} (click for the full-size file)</p>"
        f'\n<a href="{FOLDER}/{kind}.png"><img src="{FOLDER}/{shown}" alt="{kind}: {caption}">'
        f"</a>\n<p class=cap>{caption}: a crop where the restoration changed most, pixels "
        f'enlarged</p>\n<img class=zoom src="{FOLDER}/{kind}_crop.png" width={crop_width} '
        f'alt="{kind} crop: {caption}">\n</section>'
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1600px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    ".cap{color:#555;margin:.3em 0}.good{color:#080}.bad{color:#a00}section{margin:2em 0}"
    ".zoom{image-rendering:pixelated;max-width:none}"
)


def _page(summary, rows, sections) -> str:
    title = f"Evaluation report: {summary['protocol_label']}"
    parts = [
        f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _facts(summary),
        "<h2>Means</h2>",
        _means(summary),
        _references(summary),
        "<h2>Best, median and worst images (by PSNR gain over the blurred input)</h2>",
        *(sections or ["<p>No image with finite scores.</p>"]),
        "<h2>Every image</h2>",
        _image_table(rows),
        "<h2>Definitions</h2>",
        _definitions(summary),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _facts(summary) -> str:
    source = summary["model_source"]
    model = source.get("model") or source.get("kind", "?")
    data = summary["data"]
    facts = {
        "Protocol": f"{summary['protocol']} ({summary['protocol_label']})",
        "Model": f"{model} ({source.get('kind', '?')}: {source.get('path', '')})",
        "Data": f"{data.get('data_dir')} (split {data.get('split', '-')})",
        "Images": str(summary["num_images"]),
        "Precision": summary.get("precision", "float32"),
        "Written": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    if summary.get("note"):
        facts["Note"] = summary["note"]
    items = "".join(f"<li><b>{k}</b>: {html.escape(str(v))}</li>" for k, v in facts.items())
    return f"<ul>{items}</ul>"


def _metric_keys(summary) -> list[str]:
    return list(summary.get("metrics", ("psnr", "ssim")))


def _means(summary) -> str:
    keys = _metric_keys(summary)
    head = "".join(f"<th>{html.escape(_title(k))}</th>" for k in keys)
    rows = []
    for label, prefix in (("restored", ""), ("blurred input", "input_")):
        cells = "".join(f"<td>{_number(k, summary.get(f'{prefix}{k}_mean'))}</td>" for k in keys)
        rows.append(f"<tr><td>{label}</td>{cells}</tr>")
    gains = []
    for key in keys:
        mine, base = summary.get(f"{key}_mean"), summary.get(f"input_{key}_mean")
        gains.append(None if mine is None or base is None else mine - base)
    cells = "".join(f"<td>{_signed(k, g)}</td>" for k, g in zip(keys, gains, strict=True))
    rows.append(f"<tr><td>gain</td>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _references(summary) -> str:
    lines = summary.get("paper_reference") or []
    if not lines:
        return "<p class=cap>No paper number to compare with for this set.</p>"
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<p>The papers' numbers for this set (their own SSIM definitions):</p><ul>{items}</ul>"


def _image_table(rows) -> str:
    keys = [k for k in ("psnr", "ssim", "msssim") if rows and k in rows[0]]
    head = "".join(f"<th>{_title(k)}</th>" for k in keys)
    lines = [f"<table><tr><th>image</th>{head}<th>PSNR gain over blurred</th></tr>"]
    for row in rows:
        cells = "".join(f"<td>{_number(k, row[k])}</td>" for k in keys)
        lines.append(
            f"<tr><td>{html.escape(row['name'])}</td>{cells}<td>{_signed('psnr', gain(row))}</td>"
            "</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _definitions(summary) -> str:
    items = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
        for k, v in summary.get("definitions", {}).items()
    )
    return f"<ul>{items}</ul>"


TITLES = {"psnr": "PSNR", "ssim": "SSIM", "msssim": "MS-SSIM"}


def _title(key) -> str:
    prefix = "unaligned " if key.startswith("unaligned_") else ""
    return prefix + TITLES.get(key.removeprefix("unaligned_"), key)


def _number(key, value) -> str:
    if value is None or not math.isfinite(value):
        return "n/a" if value is None else str(value)
    return f"{value:.2f} dB" if "psnr" in key else f"{value:.4f}"


def _signed(key, value) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    css = "good" if value > 0 else "bad" if value < 0 else ""
    text = f"{value:+.2f} dB" if "psnr" in key else f"{value:+.4f}"
    return f"<span class={css}>{text}</span>" if css else text
