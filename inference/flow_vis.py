"""Pictures of a motion-flow map: the optical-flow colour code and per-pixel kernel glyphs.

No TensorFlow: NumPy and OpenCV only. Flows are (H, W, 2) float arrays in pixels, u (index 0)
positive to the right, v (index 1) positive downwards (``../shared/specs/sen_rpgan.md`` §2).

* :func:`flow_to_colour`: the Middlebury colour code (Baker et al., "A database and evaluation
  methodology for optical flow", IJCV 2011; the wheel of their ``colorcode.cpp``): hue = direction
  (right red, down yellow-green, left cyan, up blue-violet), saturation = magnitude / ``max_flow``
  (white = no motion); vectors beyond ``max_flow`` are drawn darker (x0.75). With ``uv_half`` labels
  (u >= 0) only the right half of the wheel occurs: a kernel and its negation are one kernel.
* :func:`draw_kernels`: at every ``grid``-th pixel a line segment centred on the pixel along
  (u, v) with the kernel's length L = sqrt(u^2 + v^2), what Gong et al.'s motion-flow code draws
  over an image. A blur kernel is a centred, symmetric segment, so ``uv_half``'s sign choice does
  not change the glyph.
* :func:`colour_wheel_legend` and :func:`flow_figure`: the image with glyphs beside the colour
  code, with a wheel inset naming the magnitude that saturates.
"""

from __future__ import annotations

import cv2
import numpy as np

# Middlebury colour wheel: segment lengths red-yellow, yellow-green, green-cyan, cyan-blue,
# blue-magenta, magenta-red (55 hues).
WHEEL_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))
GLYPH_COLOUR = (0, 255, 0)  # RGB; over an image dimmed to DIM
DIM = 0.6
GAP = 4  # white pixels between the two panels
_SHIFT = 4  # fixed-point bits of cv2.line coordinates (sub-pixel end points)


def colour_wheel() -> np.ndarray:
    """The (55, 3) float RGB wheel in [0, 255], as Baker et al.'s ``makecolorwheel``."""
    # Per segment and channel: a constant, "up" = floor(255 i / n) or "down" = 255 - up.
    ramps = {
        "RY": (255, "up", 0),
        "YG": ("down", 255, 0),
        "GC": (0, 255, "up"),
        "CB": (0, "down", 255),
        "BM": ("up", 0, 255),
        "MR": (255, 0, "down"),
    }
    rows = []
    for name, length in WHEEL_SEGMENTS:
        up = np.floor(255 * np.arange(length) / length)
        values = {"up": up, "down": 255 - up}
        rows.append(np.stack([values.get(c, np.full(length, c)) for c in ramps[name]], axis=1))
    return np.concatenate(rows, axis=0)


def flow_magnitude(flow) -> np.ndarray:
    """(H, W) kernel length sqrt(u^2 + v^2) in pixels."""
    flow = np.asarray(flow, np.float64)
    return np.hypot(flow[..., 0], flow[..., 1])


def flow_to_colour(flow, max_flow=None) -> np.ndarray:
    """Middlebury colour code of an (H, W, 2) flow as uint8 RGB (H, W, 3).

    Args:
        flow: (H, W, 2) u right, v down, pixels.
        max_flow: the magnitude drawn fully saturated; ``None`` or <= 0: this flow's largest.
    """
    flow = np.nan_to_num(np.asarray(flow, np.float64))
    scale = resolve_max_flow(flow, max_flow)
    u, v = flow[..., 0] / scale, flow[..., 1] / scale
    wheel = colour_wheel()
    count = len(wheel)
    radius = np.hypot(u, v)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    position = (angle + 1) / 2 * (count - 1)
    low = np.floor(position).astype(int)
    high = (low + 1) % count
    fraction = (position - low)[..., None]
    colour = ((1 - fraction) * wheel[low] + fraction * wheel[high]) / 255.0
    inside = (radius <= 1)[..., None]
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
    return np.floor(255 * np.clip(colour, 0, 1)).astype(np.uint8)


def resolve_max_flow(flow, max_flow=None) -> float:
    """``max_flow`` if positive, else the largest magnitude of ``flow`` (1 for a zero flow)."""
    if max_flow is not None and max_flow > 0:
        return float(max_flow)
    largest = float(flow_magnitude(flow).max()) if np.size(flow) else 0.0
    return largest if largest > 0 else 1.0


def grid_points(height, width, grid):
    """Row and column indices of the glyph centres: every ``grid``-th pixel, the first at
    ``grid // 2`` so that the grid is centred in its cells."""
    return np.arange(grid // 2, height, grid), np.arange(grid // 2, width, grid)


def draw_kernels(image, flow, grid=16, colour=GLYPH_COLOUR, thickness=None) -> np.ndarray:
    """The uint8 RGB ``image`` dimmed, with each sampled pixel's kernel drawn as a line.

    At every centre (r, c) of :func:`grid_points` the segment from (c - u/2, r - v/2) to
    (c + u/2, r + v/2) (x right, y down) is drawn anti-aliased with sub-pixel end points; a zero
    flow draws a dot. Segments longer than ``grid`` overlap their neighbours (true lengths).
    """
    height, width = image.shape[:2]
    canvas = np.ascontiguousarray(np.rint(image.astype(np.float32) * DIM).astype(np.uint8))
    thickness = thickness or max(1, round(min(height, width) / 480))
    rows, cols = grid_points(height, width, grid)
    one = 1 << _SHIFT
    for r in rows:
        for c in cols:
            u, v = (float(x) for x in np.nan_to_num(flow[r, c]))
            start = (round((c - u / 2) * one), round((r - v / 2) * one))
            end = (round((c + u / 2) * one), round((r + v / 2) * one))
            cv2.line(canvas, start, end, colour, thickness, cv2.LINE_AA, _SHIFT)
    return canvas


def colour_wheel_legend(size) -> np.ndarray:
    """A (size, size, 3) uint8 RGB disc of the colour code (edge = ``max_flow``), white outside,
    with a grey rim."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(axis, axis)
    disc = flow_to_colour(np.stack([u, v], axis=-1), max_flow=1.0)
    disc[np.hypot(u, v) > 1] = 255
    centre = (size - 1) / 2
    one = 1 << _SHIFT
    cv2.circle(
        disc, (round(centre * one),) * 2, round(centre * one), (128, 128, 128), 1, cv2.LINE_AA, 4
    )
    return disc


def flow_figure(image, flow, grid=16, max_flow=None) -> np.ndarray:
    """Side by side: the image with kernel glyphs | the colour code with a wheel inset.

    Args:
        image: uint8 RGB (H, W, 3).
        flow: (H, W, 2) pixels.
    Returns:
        uint8 RGB (H, 2 W + :data:`GAP`, 3). The inset (a fifth of the shorter side, from 24 px
        images up) sits in the colour panel's top-right corner, labelled with the magnitude that
        saturates when the panel is large enough for text.
    """
    height, width = image.shape[:2]
    scale = resolve_max_flow(flow, max_flow)
    coded = flow_to_colour(flow, scale)
    add_legend(coded, scale)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    return np.concatenate([draw_kernels(image, flow, grid), gap, coded], axis=1)


def add_legend(panel, max_flow):
    """Draws the colour-wheel inset (and ``max N px`` under it) into ``panel`` in place."""
    height, width = panel.shape[:2]
    size = min(height, width) // 5
    if size < 24:
        return
    margin = max(2, size // 10)
    top, left = margin, width - margin - size
    panel[top : top + size, left : left + size] = colour_wheel_legend(size)
    text = f"max {max_flow:.1f} px"
    font_scale = size / 160
    (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    if text_w > size * 1.6 or text_h < 6:
        return
    origin = (width - margin - text_w, top + size + margin + text_h)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(panel, text, origin, font, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
