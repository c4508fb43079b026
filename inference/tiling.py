"""Tiled restoration of images too large to run whole: overlapping tiles blended seamlessly.

Layout: an image is an (H, W, 3) float32 numpy array in [0, 1]; a restorer maps a (1, h, w, 3)
float32 batch to a (1, h, w, 3) output (any h, w: it pads to its model's multiple and crops back,
see :mod:`inference.model_io`).

Why it is seamless: every tile overlaps its neighbours by at least ``overlap`` pixels; each tile's
output is weighted by a separable window that ramps up (raised cosine, strictly positive) over the
first ``overlap`` pixels of every side that borders another tile and is 1 elsewhere, including along
the image border; the weighted outputs are accumulated in float32 and divided by the sum of the
weights (separable: the outer product of two 1-D sums). The pixels near a tile's inner edges, where
the network saw zero padding instead of image, get small weights, and no hard edge remains. Tile
starts are multiples of ``align`` (the model's size multiple) so each tile subsamples the same pixel
grid as the whole image; the last tile of a row or column ends exactly at the border (it may be up
to ``align - 1`` pixels longer than ``tile``).

Memory (:func:`restore_bands`): tiles are converted to float32 one at a time and only one band of
tile rows is accumulated, so beyond the caller's own input and output arrays the cost is one band
(about ``tile x W x 12`` bytes) plus one tile's forward pass. :func:`auto_tile` decides when to tile
from an estimate of the whole-image forward's memory (:func:`forward_bytes_per_pixel`).
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


def restore_bands(restorer, read_tile, height: int, width: int, tile: int, overlap: int, align=1):
    """Restores an image tile by tile and yields its finished rows, top to bottom.

    Only one band of float32 accumulators (at most ``tile + align - 1`` rows x ``width`` x 3) is
    held: a row of tiles finishes every pixel above the next row's start, which is yielded and
    dropped, and the overlap is carried into the next band. The blending weight of tile (i, j) is
    ``wy_i(y) * wx_j(x)``; every tile of row i shares ``wy_i`` (of column j ``wx_j``), so the
    total weight is the outer product of two 1-D sums: no (H, W) weight array.

    Args:
        restorer: (1, h, w, 3) float32 -> (1, h, w, 3) (tensor or array), unclamped.
        read_tile: ``(top, bottom, left, right) -> (h, w, 3)`` float32 input in [0, 1]; called
            once per tile, so the caller keeps the image in its file dtype (uint8) and converts
            tiles only.
        height, width: image size; tile, overlap: tile side and minimum overlap in pixels.
        align: tile starts are multiples of this (use the model's size multiple).

    Yields:
        ``(top, stop, band)``: the final (stop - top, width, 3) float32 output of rows
        ``top:stop``; consecutive bands cover the image without gaps or overlap. The caller may
        modify ``band`` in place (it is dropped after the next row of tiles starts).
    """
    rows = tile_spans(height, tile, overlap, align)
    cols = tile_spans(width, tile, overlap, align)
    row_windows = [ramp(b - t, overlap, i > 0, i < len(rows) - 1) for i, (t, b) in enumerate(rows)]
    col_windows = [ramp(r - c, overlap, j > 0, j < len(cols) - 1) for j, (c, r) in enumerate(cols)]
    weight_y, weight_x = np.zeros(height, np.float32), np.zeros(width, np.float32)
    for (top, bottom), window in zip(rows, row_windows, strict=True):
        weight_y[top:bottom] += window
    for (left, right), window in zip(cols, col_windows, strict=True):
        weight_x[left:right] += window
    band, band_top = None, 0
    for i, ((top, bottom), wy) in enumerate(zip(rows, row_windows, strict=True)):
        carried = None if band is None else band[top - band_top :]
        band, band_top = np.zeros((bottom - top, width, 3), np.float32), top
        if carried is not None:  # rows top.. of earlier tile rows (bottoms never decrease)
            band[: len(carried)] += carried
        for (left, right), wx in zip(cols, col_windows, strict=True):
            patch = np.ascontiguousarray(read_tile(top, bottom, left, right), np.float32)[None]
            band[:, left:right] += np.asarray(restorer(patch))[0] * (wy[:, None] * wx)[..., None]
        stop = rows[i + 1][0] if i + 1 < len(rows) else height
        done = band[: stop - top]
        done /= weight_y[top:stop, None, None] * weight_x[None, :, None]
        yield top, stop, done


def restore_tiled(restorer, image: np.ndarray, tile: int, overlap: int, align: int = 1):
    """Restores an (H, W, 3) float32 image tile by tile; returns the (H, W, 3) float32 output.

    Args:
        restorer: (1, h, w, 3) float32 -> (1, h, w, 3) (tensor or array), unclamped.
        image: (H, W, 3) float32 in [0, 1].
        tile, overlap: tile side and minimum overlap in pixels.
        align: tile starts are multiples of this (use the model's size multiple).
    """
    height, width = image.shape[:2]
    output = np.empty(image.shape, np.float32)

    def read_tile(top, bottom, left, right):
        return image[top:bottom, left:right]

    for top, stop, band in restore_bands(restorer, read_tile, height, width, tile, overlap, align):
        output[top:stop] = band
    return output


# --------------------------------------------------------------------------------------------------
# When to tile: the forward pass's memory
# --------------------------------------------------------------------------------------------------

# Peak resident memory of one whole-image forward per input pixel, in bytes, of the full-width
# models, measured with benchmarks/inference.py at 720x1280: the process's peak RSS (ru_maxrss)
# over the 921,600 pixels, rounded up, TensorFlow's own 0.5-0.9 GB included, so the estimate errs
# on the safe side. MIMO-UNet(+), IDC, Two-Way: 3.09 / 3.16 / 2.93 / 2.43 GiB with XLA (the
# benchmark's default then; docs/benchmarks.md). GradientNet GAN: 2.55 GiB with XLA (kept, the
# larger), 1.85 GiB without; its marginal cost without XLA is 1,410 bytes per pixel (peak RSS
# 1.15 / 1.58 GiB at 512x512 / 768x768 over 0.88 GiB at 64x64), below the entry. Only part of it
# grows with the width: a MIMO-UNet of width 8 with one residual block took about 1 KB per pixel
# (benchmarks/deblur_memory.py, 2108-px tiles), hence the 1/4 + 3/4 * width / full width scaling
# below.
FORWARD_BYTES_PER_PIXEL = {
    "mimo_unet": 3600,
    "mimo_unet_plus": 3700,
    "idc": 3400,
    "two_way": 2900,
    "gradientnet": 3000,
}
FULL_WIDTH = 32  # MIMO-UNet's, IDC's and Two-Way's full ``base_channels`` / ``channels``
# Models whose full width is not FULL_WIDTH (GradientNet GAN: c = base_channels = 64, spec 2).
FULL_WIDTHS = {"gradientnet": 64}
WIDTH_KWARGS = ("base_channels", "channels")  # the width argument of every registered model
MIN_BYTES_PER_PIXEL = 100  # input, padded copy and output images of any model
# The blind deblurring framework (SEN + K + CG + G; inference/framework_io.py), not measured as a
# whole: building K peaks at ~4,000 bytes per pixel for flow-46 flows (3.7 GB above the process at
# 720x1280, deconvolution/blur_operator.py) and the networks run one after the other, so K's
# peak plus the largest network entry above. Independent of the networks' widths (K dominates).
FRAMEWORK_BYTES_PER_PIXEL = 4000 + 3700
GB = 1e9


def full_width(name) -> int:
    """The width (``base_channels`` / ``channels``) at which ``name``'s entry was measured."""
    return FULL_WIDTHS.get(name, FULL_WIDTH)


def forward_bytes_per_pixel(source: dict) -> float:
    """Estimated peak bytes per input pixel of one whole-image forward of the described model.

    ``source`` is a restorer's description (``model``, ``model_kwargs``, ``self_ensemble``); an
    unknown model gets the largest entry, the blind deblurring framework (a ``framework`` entry)
    :data:`FRAMEWORK_BYTES_PER_PIXEL`. The width-dependent 3/4 of the entry scales with the
    model's width argument over its full width (:func:`full_width`). A self-ensemble runs its
    passes in one graph, up to two at once on TensorFlow's inter-op threads, hence twice the memory.
    """
    if source.get("framework"):  # a framework checkpoint or export (settings recorded)
        return float(FRAMEWORK_BYTES_PER_PIXEL)
    name = source.get("model")
    per_pixel = FORWARD_BYTES_PER_PIXEL.get(name, max(FORWARD_BYTES_PER_PIXEL.values()))
    kwargs = source.get("model_kwargs") or {}
    full = full_width(name)
    width = next((kwargs[k] for k in WIDTH_KWARGS if isinstance(kwargs.get(k), int)), full)
    per_pixel = max(MIN_BYTES_PER_PIXEL, per_pixel * (0.25 + 0.75 * width / full))
    if source.get("self_ensemble", "none") != "none":
        per_pixel *= 2
    return per_pixel


def padded_pixels(height: int, width: int, align: int) -> int:
    return math.ceil(height / align) * align * math.ceil(width / align) * align


def auto_tile(height, width, bytes_per_pixel, budget_bytes, overlap, align=1) -> int:
    """0 (restore whole) when a whole-image forward fits ``budget_bytes``, else the largest tile
    side (a multiple of ``align``, at least ``2 * overlap + align``) whose forward fits."""
    if padded_pixels(height, width, align) * bytes_per_pixel <= budget_bytes:
        return 0
    side = int(math.sqrt(budget_bytes / bytes_per_pixel)) // align * align
    return max(side, 2 * overlap + align)
