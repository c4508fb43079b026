"""Gong et al. motion-flow fields and Jian Sun's exact non-uniform linear blur operator K and its
adjoint Kᵀ: ``sen_rpgan.md`` §2, §3 and §5 (numpy + scipy.sparse; importable without TensorFlow).

Conventions (§2): a flow map is float (H, W, 2) with U[..., 0] = u = horizontal motion, **positive
to the right** (column index increasing) and U[..., 1] = v = vertical motion, **positive
downwards** (row index increasing), in pixels. Each pixel's kernel is a centred, symmetric line
segment of length L = √(u² + v²) along (u, v), so K(u, v) = K(−u, −v). :func:`to_uv_half` gives
the ``uv_half`` labels SEN regresses (u ≥ 0).

Operator (§3, Jian Sun's ``motionBlurConv``, reproduced exactly): θ from a = −v (0 → 1e-16),
θ = atan(u/a)·180/π (+180 if negative); half = (L − 1)/2, c = cos θ, s = sin θ; window
|dr| ≤ ⌊|half·c + sgn(c) − L·ε|⌋, |dc| ≤ ⌊|half·s + 1 − L·ε|⌋; d = dc·c + dr·s; end-cap rule
(|d| ≤ 1 and √(dr² + dc²) ≥ half: e = half − |(dr + d·s)/c|, d ← √(d² + e²)); weight
max(0, 1 + ε − |d|), normalised per pixel. The kernel belongs to the **output** pixel (gather) and
the boundary is replicate (clamped indices); Kᵀ scatters with the same clamping (exact transpose).
The same K is applied to every colour channel.

Implementation (§3 "A. tap table / sparse matrix"): the weights depend only on the flow, so
:class:`NonUniformBlur` builds a ``scipy.sparse`` CSR matrix once (rows p = i·W + j, columns the
clamped source pixels, duplicates from clamping summed) and applies K as ``A @ x`` and Kᵀ as
``A.T @ r`` on (H·W, C) views. Only the taps that can be non-zero are evaluated: since
|d| < 1 + ε is necessary, for each offset along the kernel's dominant axis at most four offsets
across it are candidates, so construction costs about 4·(2R + 1) evaluations per pixel instead of
(2R + 1)². Weights are computed in float64 by default (``dtype`` selects float32; they agree to
≤ 1e-6). :func:`blur_taps` exposes the COO tap table for a TensorFlow port (``tf.sparse``).

Flow fields (§5, Gong's random model as written, on a 1-based H x W grid): see
:func:`random_flow`; the field is rescaled by min(1, u_max / max(|u|, |v|)) and rounded to integers
(MATLAB rounding, half away from zero); 2 % of samples are the zero field.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse

EPS = 2.2204e-16  # MATLAB eps as written in Jian Sun's code


class KernelGeometry(NamedTuple):
    """Per-pixel quantities of §3 (arrays of the flow's spatial shape)."""

    half: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    rows: np.ndarray  # S_r, window half-height
    cols: np.ndarray  # S_c, window half-width


def kernel_geometry(u, v, dtype=np.float64) -> KernelGeometry:
    """θ, half-length and window of the line kernels of flows (u, v) (arrays or scalars)."""
    dtype = np.dtype(dtype).type
    u, v = np.asarray(u, dtype), np.asarray(v, dtype)
    length = np.sqrt(u * u + v * v)
    a = -v
    a = np.where(a == 0, dtype(1e-16), a)
    theta = np.arctan(u / a) * dtype(180 / math.pi)
    theta = np.where(theta < 0, theta + dtype(180), theta)
    phi = theta * dtype(math.pi / 180)
    c, s = np.cos(phi), np.sin(phi)
    half = (length - 1) / 2
    sgn_c = np.where(c >= 0, dtype(1), dtype(-1))
    leps = length * dtype(EPS)
    rows = np.floor(np.abs(half * c + sgn_c - leps)).astype(np.int64)
    cols = np.floor(np.abs(half * s + 1 - leps)).astype(np.int64)
    return KernelGeometry(half, c, s, rows, cols)


def tap_weights(geo: KernelGeometry, dr, dc) -> np.ndarray:
    """Raw (unnormalised) weight of offsets (dr, dc) for pixels of geometry ``geo`` (§3)."""
    dtype = geo.cos.dtype.type
    dr, dc = np.asarray(dr, geo.cos.dtype), np.asarray(dc, geo.cos.dtype)
    d = dc * geo.cos + dr * geo.sin
    rho = np.sqrt(dr * dr + dc * dc)
    cap = (np.abs(d) <= 1) & (rho >= geo.half)
    with np.errstate(divide="ignore", invalid="ignore"):  # cos is never exactly 0 (see §3)
        e = geo.half - np.abs((dr + d * geo.sin) / geo.cos)
    d = np.where(cap, np.sqrt(d * d + e * e), d)
    w = np.maximum(dtype(0), dtype(1) + dtype(EPS) - np.abs(d))
    inside = (np.abs(dr) <= geo.rows) & (np.abs(dc) <= geo.cols)
    return np.where(inside, w, dtype(0))


def kernel_image(u: float, v: float, dtype=np.float64) -> np.ndarray:
    """The normalised (2R+1) x (2R+1) kernel of one flow vector, centre at (R, R) (for tests)."""
    geo = kernel_geometry(u, v, dtype)
    r = int(max(geo.rows, geo.cols))
    dr, dc = np.mgrid[-r : r + 1, -r : r + 1]
    w = tap_weights(geo, dr, dc)
    return w / w.sum()


class Taps(NamedTuple):
    """Tap table in CSR order: output pixel p has ``cols/weights[indptr[p]:indptr[p + 1]]``.

    ``cols`` are clamped flat source indices (i·W + j; a row may repeat a column at the border,
    the entries then add up), ``weights`` are normalised (each row sums to 1) and ``rows`` is the
    expanded row index of every entry (COO form, e.g. for ``tf.sparse.SparseTensor``).
    """

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]


def blur_taps(flow: np.ndarray, dtype=np.float64) -> Taps:
    """All non-zero taps of K for a flow map (H, W, 2), built from the distinct flow vectors."""
    h, w = flow.shape[:2]
    index = np.int32 if h * w * 4 < 2**31 else np.int64
    # One complex number per pixel makes the search for distinct vectors a fast 1-D unique.
    keys = np.ascontiguousarray(flow, np.float64).reshape(-1, 2).view(np.complex128).ravel()
    uniq, kernel_of = np.unique(keys, return_inverse=True)
    kid, dr, dc, wt = _nonzero_taps(kernel_geometry(uniq.real, uniq.imag, dtype))
    order = np.argsort(kid, kind="stable")
    kid, dr, dc, wt = kid[order], dr[order].astype(index), dc[order].astype(index), wt[order]
    wt = wt / np.bincount(kid, weights=wt, minlength=len(uniq))[kid].astype(wt.dtype)
    counts = np.bincount(kid, minlength=len(uniq)).astype(index)
    per_pixel = counts[kernel_of]
    indptr = np.zeros(h * w + 1, index)
    np.cumsum(per_pixel, out=indptr[1:])
    shift = (np.cumsum(counts) - counts)[kernel_of].astype(index) - indptr[:-1]
    tap = np.arange(indptr[-1], dtype=index) + np.repeat(shift, per_pixel)
    cols = np.repeat(np.arange(h * w, dtype=index), per_pixel)
    rows = cols.copy()
    cols += (dr * index(w) + dc)[tap]
    _clamp_border(
        cols, rows, dr[tap], dc[tap], (h, w), int(max(np.abs(dr).max(), np.abs(dc).max()))
    )
    return Taps(rows, cols, wt[tap], indptr, (h, w))


def _clamp_border(cols, rows, dr, dc, shape, reach):
    """Replaces the unclamped source index of taps of pixels within ``reach`` of the border."""
    h, w = shape
    i, j = np.divmod(rows, rows.dtype.type(w))
    near = (i < reach) | (i >= h - reach) | (j < reach) | (j >= w - reach)
    if near.any():
        ii, jj = i[near], j[near]
        cols[near] = np.clip(ii + dr[near], 0, h - 1) * w + np.clip(jj + dc[near], 0, w - 1)


def _nonzero_taps(geo: KernelGeometry):
    """(kernel, dr, dc, raw weight) of every tap with a positive weight, for each kernel of geo."""
    vertical = np.abs(geo.cos) >= np.abs(geo.sin)  # dominant axis of the line: rows
    major = np.where(vertical, geo.rows, geo.cols)
    with np.errstate(divide="ignore", invalid="ignore"):  # the unused branch may divide by 0
        ratio = np.where(vertical, -geo.sin / geo.cos, -geo.cos / geo.sin)
    out = []
    for k in range(-int(major.max()), int(major.max()) + 1):
        pix = np.flatnonzero(major >= abs(k))
        base = np.floor(k * ratio[pix]).astype(np.int64)
        sub = KernelGeometry(*(g[pix] for g in geo))
        for j in (-1, 0, 1, 2):  # |d| < 1 + eps leaves < 2.83 px across the line: 4 candidates
            minor = base + j
            dr = np.where(vertical[pix], k, minor)
            dc = np.where(vertical[pix], minor, k)
            wt = tap_weights(sub, dr, dc)
            keep = wt > 0
            out.append((pix[keep], dr[keep], dc[keep], wt[keep]))
    return (np.concatenate(x) for x in zip(*out, strict=True))


class NonUniformBlur:
    """K and Kᵀ of a fixed flow map as a sparse matrix; build once, apply many times (e.g. CG).

    Images are float (H, W) or (H, W, C) arrays; results have the image's shape and dtype. Kᵀ uses
    the CSC view of the same matrix (no copy).
    """

    def __init__(self, flow: np.ndarray, dtype=np.float64):
        flow = np.asarray(flow)
        if flow.ndim != 3 or flow.shape[-1] != 2:
            raise ValueError(f"flow must be (H, W, 2), got {flow.shape}.")
        taps = blur_taps(flow, dtype)
        n = taps.shape[0] * taps.shape[1]
        self.shape = taps.shape
        self.matrix = scipy.sparse.csr_matrix((taps.weights, taps.cols, taps.indptr), shape=(n, n))

    def forward(self, image: np.ndarray) -> np.ndarray:
        """K x (gather with replicate boundary)."""
        return self._apply(self.matrix, image)

    def adjoint(self, image: np.ndarray) -> np.ndarray:
        """Kᵀ r (scatter with the same clamping: the exact transpose)."""
        return self._apply(self.matrix.T, image)

    __call__ = forward

    def _apply(self, matrix, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.shape[:2] != self.shape:
            raise ValueError(f"image is {image.shape[:2]}, the flow map {self.shape}.")
        flat = image.reshape(self.shape[0] * self.shape[1], -1)
        if image.dtype == np.float32 and matrix.dtype != np.float32:
            matrix = matrix.astype(np.float32)
        return (matrix @ flat).astype(image.dtype, copy=False).reshape(image.shape)


def blur_nonuniform(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """K image: non-uniform linear motion blur of ``image`` (H, W[, C]) by ``flow`` (H, W, 2)."""
    return NonUniformBlur(flow).forward(image)


def blur_nonuniform_adjoint(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Kᵀ image, the exact adjoint of :func:`blur_nonuniform`."""
    return NonUniformBlur(flow).adjoint(image)


def to_uv_half(flow: np.ndarray) -> np.ndarray:
    """``uv_half`` labels (§2): where u < 0 negate both components (u = 0 keeps v's sign)."""
    flow = np.asarray(flow)
    sign = np.where(flow[..., :1] < 0, -1, 1).astype(flow.dtype)
    return flow * sign


def matlab_round(x: np.ndarray) -> np.ndarray:
    """Rounding half away from zero, as MATLAB's ``round`` in Gong's code."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def random_flow(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    u_max: float = 23.0,
    zero_prob: float = 0.02,
) -> np.ndarray:
    """A random smooth motion-flow field (§5), float32 (H, W, 2), integer-valued, signed (u, v).

    Draw order (fixed, for reproducibility): zero-field test, tx, ty, tx_acc, ty_acc, tz, rot_z,
    centre shift (row, column).
    """
    if rng.random() < zero_prob:
        return np.zeros((height, width, 2), np.float32)
    tx, ty = rng.uniform(-u_max, u_max, 2)
    tx_acc, ty_acc = rng.uniform(-0.3, 0.3, 2)
    tz, rot_z = rng.uniform(-5e-3, 5e-3), rng.uniform(-math.pi / 70, math.pi / 70)
    c_row, c_col = np.array([height / 2, width / 2]) + rng.uniform(-1, 1, 2) * 15
    i, j = np.mgrid[1 : height + 1, 1 : width + 1].astype(np.float64)
    r = np.sqrt((j - c_col) ** 2 + (i - c_row) ** 2)
    alpha = np.arctan2((height + 1 - i) - c_row, j - c_col)
    rot, zoom = math.tan(rot_z) * r, tz * r**1.5
    u = tx * (1 - tx_acc / 2) + j * tx_acc * tx / width - np.cos(alpha) * rot + np.sin(alpha) * zoom
    v = ty * (1 - ty_acc / 2) + (height - i + 1) * ty_acc * ty / height
    v = v + np.sin(alpha) * rot + np.cos(alpha) * zoom
    peak = max(np.abs(u).max(), np.abs(v).max())
    scale = min(1.0, u_max / peak) if peak > 0 else 1.0
    return matlab_round(np.stack([u, v], axis=-1) * scale).astype(np.float32)


def flow_margin(u_max: float) -> int:
    """Margin m = ⌈u_max·√2/2⌉ + 1 of the sharp window around the output (§5)."""
    return int(math.ceil(u_max * math.sqrt(2) / 2)) + 1


def blur_valid(window: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Blurs a sharp window with ``flow`` extended by edge replication and keeps the centre (§5).

    ``window`` is float (H + 2m, W + 2m[, C]), ``flow`` (H, W, 2); returns (H, W[, C]). Since
    every output pixel uses only its own kernel, this is a border-free ("valid") blur when m
    exceeds the kernels' half-extent.
    """
    h, w = flow.shape[:2]
    m = (window.shape[0] - h) // 2
    if window.shape[0] != h + 2 * m or window.shape[1] != w + 2 * m:
        raise ValueError(f"window {window.shape[:2]} is not the flow {(h, w)} plus a margin.")
    extended = np.pad(flow, ((m, m), (m, m), (0, 0)), mode="edge")
    return NonUniformBlur(extended).forward(window)[m : m + h, m : m + w]
