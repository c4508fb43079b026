"""Tiled restoration of images too large to run whole: overlapping tiles blended seamlessly.

Layout: an image is an (H, W, 3) float32 numpy array in [0, 1]; a restorer maps a (1, h, w, 3)
float32 batch to a (1, h, w, 3) output (any h, w: it pads to its model's multiple and crops back,
see :mod:`training.model_io`).

Why it is seamless: every tile overlaps its neighbours by at least ``overlap`` pixels; each tile's
output is weighted by a separable window that ramps up (raised cosine, strictly positive) over the
first ``overlap`` pixels of every side that borders another tile and is 1 elsewhere, including along
the image border; the weighted outputs and the weights are accumulated in float32 and divided. The
pixels near a tile's inner edges, where the network saw zero padding instead of image, get small
weights, and no hard edge remains. Tile starts are multiples of ``align`` (the model's size
multiple) so each tile subsamples the same pixel grid as the whole image; the last tile of a row or
column ends exactly at the border (it may be up to ``align - 1`` pixels longer than ``tile``).
"""

from __future__ import annotations

import math

import numpy as np


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(size)`` with overlaps of at least ``overlap``.

    Starts are multiples of ``align``; the first starts at 0 and the last stops at ``size``.
    """
    check_tiling(tile, overlap, align)
    if size <= tile:
        return [(0, size)]
    # The largest step that keeps >= overlap after rounding the starts down to ``align``.
    max_step = tile - overlap - (align - 1)
    count = math.ceil((size - tile) / max_step) + 1
    last = ((size - tile) // align) * align
    if last == 0:  # the image is less than ``align`` pixels longer than a tile
        return [(0, size)]
    starts = [int((i * last / (count - 1)) // align) * align for i in range(count)]
    return [(s, s + tile) for s in starts[:-1]] + [(last, size)]


def check_tiling(tile: int, overlap: int, align: int = 1):
    """Raises ``ValueError`` with the rule when ``tile``/``overlap`` cannot blend."""
    if overlap < 0:
        raise ValueError(f"--tile_overlap must be >= 0, got {overlap}.")
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}.")
    if tile < 2 * overlap + align:
        raise ValueError(
            f"--tile {tile} is too small for --tile_overlap {overlap}: need tile >= "
            f"2 * overlap + {align} (the model's size multiple)."
        )


def ramp(length: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D window of ``length``: raised-cosine rise/fall over ``overlap`` pixels, 1 elsewhere.

    Values are strictly positive, so every pixel keeps a defined weighted average.
    """
    window = np.ones(length, np.float32)
    n = min(overlap, length)
    if n == 0:
        return window
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n)
    if rise:
        window[:n] = np.minimum(window[:n], edge)
    if fall:
        window[length - n :] = np.minimum(window[length - n :], edge[::-1])
    return window


def restore_tiled(restorer, image: np.ndarray, tile: int, overlap: int, align: int = 1):
    """Restores an (H, W, 3) float32 image tile by tile; returns the (H, W, 3) float32 output.

    Args:
        restorer: (1, h, w, 3) float32 -> (1, h, w, 3) (tensor or array), unclamped.
        image: (H, W, 3) float32 in [0, 1].
        tile, overlap: tile side and minimum overlap in pixels.
        align: tile starts are multiples of this (use the model's size multiple).
    """
    height, width = image.shape[:2]
    rows = tile_spans(height, tile, overlap, align)
    cols = tile_spans(width, tile, overlap, align)
    total = np.zeros(image.shape, np.float32)
    weight = np.zeros((height, width, 1), np.float32)
    for i, (top, bottom) in enumerate(rows):
        wy = ramp(bottom - top, overlap, rise=i > 0, fall=i < len(rows) - 1)
        for j, (left, right) in enumerate(cols):
            wx = ramp(right - left, overlap, rise=j > 0, fall=j < len(cols) - 1)
            patch = np.ascontiguousarray(image[None, top:bottom, left:right])
            out = np.asarray(restorer(patch))[0]
            window = (wy[:, None] * wx[None, :])[..., None]
            total[top:bottom, left:right] += out * window
            weight[top:bottom, left:right] += window
    return total / weight
