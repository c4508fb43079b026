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
tile rows is accumulated, so beyond the caller's image array (which the caller may also write the
result into) the cost is one band (about ``tile x W x 12`` bytes) plus one tile's forward pass.
:func:`auto_tile` plans the **whole process's** peak (:func:`tiled_bytes`: TensorFlow and the
model, one tile's forward, the band, the image array) against a budget, and restores whole when
:func:`whole_bytes` fits.
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
        modify ``band`` in place and should drop it before asking for the next one (only one band
        is then alive). Rows above ``stop`` are never read again, so the caller may write the
        output into the array ``read_tile`` reads.
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
    carried = None  # the rows of the last band that the next row of tiles also covers
    for i, ((top, bottom), wy) in enumerate(zip(rows, row_windows, strict=True)):
        band = np.zeros((bottom - top, width, 3), np.float32)
        if carried is not None:  # rows top.. of earlier tile rows (bottoms never decrease)
            band[: len(carried)] += carried
        for (left, right), wx in zip(cols, col_windows, strict=True):
            patch = np.ascontiguousarray(read_tile(top, bottom, left, right), np.float32)[None]
            band[:, left:right] += np.asarray(restorer(patch))[0] * (wy[:, None] * wx)[..., None]
        stop = rows[i + 1][0] if i + 1 < len(rows) else height
        # A copy, so that no view keeps this band alive under the next one (two bands at once).
        carried = band[stop - top :].copy()
        done = band[: stop - top]
        del band, patch
        done /= weight_y[top:stop, None, None] * weight_x[None, :, None]
        yield top, stop, done
        del done  # the caller drops its reference too (deblur.py), before the next row of tiles


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
        del band
    return output


# --------------------------------------------------------------------------------------------------
# When to tile: the whole process's peak memory
# --------------------------------------------------------------------------------------------------

# The plan covers the process's peak resident memory, not only the forward pass:
#   base (Python, TensorFlow, the model's weights, the traced forward)
#   + the forward pass of one tile (its marginal bytes per padded pixel)
#   + the image arrays (the decoded file, which the tiled path also writes its result into)
#   + one band of float32 accumulators (tile rows x image width) and the per-tile temporaries.
# Measured with benchmarks/deblur_memory.py --probe (VmHWM of a child process, TensorFlow imported
# without jax and glibc's mmap threshold fixed at 1 MiB as deblur.py does), full width, random
# weights, three forwards of 384x384 to 392x392 (MIMO-UNet: 512x512 to 512x520).
# BASE_BYTES: peak after a first 64x64 forward, rounded up to 10 MB, plus 60 MB of margin.
# FORWARD_BYTES_PER_PIXEL: (peak of the tiles - that peak) / the largest tile's pixels, x 1.25
# (margin: peaks differ by a few per cent from run to run and grow slightly with the tile).
BASE_BYTES = {
    "mimo_unet": 0.80e9,  # 0.735 GiB measured
    "mimo_unet_plus": 0.90e9,  # 0.840
    "idc": 0.80e9,  # 0.732
    "two_way": 0.80e9,  # 0.731
    "gradientnet": 0.89e9,  # 0.824
}
FORWARD_BYTES_PER_PIXEL = {
    "mimo_unet": 2600,  # 2,060 measured
    "mimo_unet_plus": 2500,  # 1,970
    "idc": 3350,  # 2,680
    "two_way": 1400,  # 1,120
    "gradientnet": 1420,  # 1,130
}
FULL_WIDTH = 32  # MIMO-UNet's, IDC's and Two-Way's full ``base_channels`` / ``channels``
# Models whose full width is not FULL_WIDTH (GradientNet GAN: c = base_channels = 64, spec 2).
FULL_WIDTHS = {"gradientnet": 64}
WIDTH_KWARGS = ("base_channels", "channels")  # the width argument of every registered model
MIN_BYTES_PER_PIXEL = 100  # input, padded copy and output tensors of any model
# The blind deblurring framework (SEN + K + CG + G, inference/framework_io.py), full-width SEN and
# G with random weights, SEN's flow replaced by a smooth flow-46 field (|u|, |v| <= 46 px; K's taps
# grow with the flow, and a random SEN's flow is near zero), traced as deblur.py runs it, peaks of
# 256x256 and 384x384 tiles: 1,452 and 1,614 MiB, so 2,070 bytes per pixel (x 1.25) over a base
# of 1,322 MiB (SEN's 77 M parameters, G's 8.8 M, the traced graph, K's XLA-compiled tap kernel).
FRAMEWORK_BASE_BYTES = 1.45e9
FRAMEWORK_BYTES_PER_PIXEL = 2600
# Beside the forward: the (tile + align - 1) x width float32 band, its carried overlap and the
# conversion of finished rows to the file's type (bytes per band pixel), and the tile's own
# float32 copies (input, output, weighted output; bytes per tile pixel).
BAND_BYTES_PER_PIXEL = 24
TILE_COPY_BYTES_PER_PIXEL = 48
# The whole-image path: the float32 input and output images and their copies (bytes per pixel).
WHOLE_BYTES_PER_PIXEL = 48
GB = 1e9  # --memory_budget_gb's unit


def full_width(name) -> int:
    """The width (``base_channels`` / ``channels``) at which ``name``'s entry was measured."""
    return FULL_WIDTHS.get(name, FULL_WIDTH)


def base_bytes(source: dict) -> float:
    """Estimated resident bytes of the process before its first large forward: Python,
    TensorFlow, the full-width model's weights and its traced forward (widths below full cost
    less; the full entry errs on the safe side). An unknown model gets the largest entry."""
    if source.get("framework"):
        return FRAMEWORK_BASE_BYTES
    return BASE_BYTES.get(source.get("model"), max(BASE_BYTES.values()))


def forward_bytes_per_pixel(source: dict) -> float:
    """Estimated marginal peak bytes per input pixel of one forward of the described model
    (above :func:`base_bytes`).

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


def whole_bytes(source: dict, height: int, width: int, image_bytes: int, align: int = 1) -> float:
    """Estimated peak bytes of the process restoring an image whole; ``image_bytes`` is the size
    of its decoded file array (and again of the output array)."""
    pixels = padded_pixels(height, width, align)
    forward = pixels * (forward_bytes_per_pixel(source) + WHOLE_BYTES_PER_PIXEL)
    return base_bytes(source) + forward + 2 * image_bytes


def tiled_bytes(source, height, width, image_bytes, tile, align=1) -> float:
    """Estimated peak bytes of the process restoring an image in tiles of side ``tile``: one tile's
    forward and copies, one band of rows, and the one file array the result is written into."""
    side = min(tile + align - 1, max(height, width))  # a last tile may be align - 1 px longer
    tile_pixels = padded_pixels(min(side, height), min(side, width), align)
    per_tile = tile_pixels * (forward_bytes_per_pixel(source) + TILE_COPY_BYTES_PER_PIXEL)
    band = min(side, height) * width * BAND_BYTES_PER_PIXEL
    return base_bytes(source) + per_tile + band + image_bytes


def auto_tile(source, height, width, image_bytes, budget_bytes, overlap, align=1) -> int:
    """0 (restore whole) when the whole-image estimate (:func:`whole_bytes`) fits
    ``budget_bytes``, else the largest tile side (a multiple of ``align``, at least
    ``2 * overlap + align``) whose :func:`tiled_bytes` fits; the smallest such side when none fits
    (the image arrays alone may exceed a small budget)."""
    if whole_bytes(source, height, width, image_bytes, align) <= budget_bytes:
        return 0

    def fits(side):
        return tiled_bytes(source, height, width, image_bytes, side, align) <= budget_bytes

    smallest = -(-(2 * overlap + align) // align) * align
    side = max(height, width) // align * align
    while side > smallest and not fits(side):
        side -= align
    return max(side, smallest)
