"""Köhler et al.'s benchmark protocol (ECCV 2012; ``eval_image.m`` and its metric package).

Each of the 48 blurred shots (``Blurry{p}_{t}.png``, p = 1..4 scenes, t = 1..12 camera shakes)
has about 199 sharp frames recorded along its camera path
(``Image{p}/Kernel{t}/GroundTruth{p}_{t}_{f}.png``); a restored image is scored against **every**
frame and keeps the best (``data_and_evaluation.md`` §1.3). Per frame x, with the restored image z
(both float64 in 0..255, as MATLAB's ``double(imread(...))``):

1. **intensity**: z is scaled by the least-squares gain ``Σ x z / Σ z z`` (all channels);
2. **registration**: the integer shift registering the channel means, by DFT cross-correlation
   (``dftregistration`` at upsampling 1: the peak of ``|ifft2(X conj(Z))|``, X and Z the 2-D FFTs
   of the channel means of x and of the scaled z; a peak index past half the size wraps to a
   negative shift);
3. the scaled output and a mask of ones are shifted by it with **zero fill**; x is multiplied by
   the shifted mask;
4. both are converted to **luminance** 0.299 R + 0.587 G + 0.114 B (the metric package converts
   colour images before every metric);
5. **PSNR** = 10 log10(255² / MSE) over the whole image (the zero-filled border included);
   **MSSIM** = multi-scale SSIM (Wang, Simoncelli and Bovik 2003: five scales, weights 0.0448,
   0.2856, 0.3001, 0.2363, 0.1333, 2 x 2 average and subsample between scales, 11 x 11 Gaussian
   window sigma 1.5 over the valid positions, K1 0.01, K2 0.03, L 255) and single-scale **SSIM**
   (the same window and constants at full size) on the same luminance: the papers do not say which
   one their Köhler "SSIM" is, so both are reported, named.

A shot's scores are the best over its frames, each metric on its own (``best_frame`` is the frame
of the best PSNR); a set's, the mean over shots.

Cost (48 shots x ~199 frames of 800 x 800, and the evaluation scores the blurred input too):
:func:`score_shot` scores several images of a shot against each frame in one pass, the frame
decoded (:func:`read_frames`, ahead, in threads), converted, transformed (one FFT) and filtered
once for all of them, frames scored in parallel threads (OpenCV and NumPy release the GIL); the
fast path (below :func:`msssim`) computes the same numbers as the step-by-step functions above it
(to ~1e-12), in float64, by blocks of rows that stay in the cache.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from collections.abc import Iterable, Iterator, Mapping

import cv2
import numpy as np
import scipy.fft

LUMA = np.array([0.299, 0.587, 0.114])
PEAK = 255.0
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_SIZE = 0.01, 0.03, 1.5, 11
C1, C2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
EDGE = SSIM_SIZE - 1  # rows / columns a valid filtering loses
BLOCK = 64  # rows per block of the fast path's pixel-wise work (kept in the cache)


def gaussian_window(size: int = SSIM_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', size, sigma)`` as one separable 1-D factor (sums to 1)."""
    offsets = np.arange(size) - (size - 1) / 2.0
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


WINDOW = gaussian_window()


def luminance(image) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) float64, 0.299 R + 0.587 G + 0.114 B (values kept, not rounded)."""
    return np.asarray(image, dtype=np.float64) @ LUMA


def intensity_gain(output, sharp) -> float:
    """The least-squares gain ``Σ x z / Σ z z`` of the output z against the frame x."""
    return float(np.sum(sharp * output) / np.sum(output * output))


def mean_fft(image) -> np.ndarray:
    """The half-spectrum 2-D FFT of an (H, W, 3) image's channel mean."""
    return scipy.fft.rfft2(np.asarray(image, dtype=np.float64).mean(axis=2), workers=-1)


def registration_shift(sharp_mean_fft, output_mean_fft, shape) -> tuple[int, int]:
    """(row, column) integer shift that registers the output to the frame (``dftregistration``,
    upsampling 1): the argmax of ``|ifft2(X conj(Z))|``, wrapped to negative past half the size;
    ``shape`` is the images' (H, W), X and Z their :func:`mean_fft`.
    Shifting the output by it (``z'(i, j) = z(i - row, j - col)``) aligns it with the frame."""
    # Real images: the half-spectrum FFTs give the same correlation (real, so |.| as MATLAB's
    # max over a complex array) in half the time.
    correlation = np.abs(scipy.fft.irfft2(sharp_mean_fft * np.conj(output_mean_fft), s=shape))
    row, col = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    height, width = correlation.shape
    row = row - height if row >= height // 2 else row
    col = col - width if col >= width // 2 else col
    return int(row), int(col)


def shifted(image, shift) -> np.ndarray:
    """``image`` moved by (row, col) pixels with zero fill: out(i, j) = image(i - row, j - col)."""
    row, col = shift
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    if abs(row) >= height or abs(col) >= width:
        return out
    src_rows = slice(max(0, -row), height - max(0, row))
    dst_rows = slice(max(0, row), height - max(0, -row))
    src_cols = slice(max(0, -col), width - max(0, col))
    dst_cols = slice(max(0, col), width - max(0, -col))
    out[dst_rows, dst_cols] = image[src_rows, src_cols]
    return out


def psnr(reference, test) -> float:
    """10 log10(255² / MSE) of two luminance images (float64); +inf when equal."""
    mse = float(np.mean((reference - test) ** 2))
    return float(10.0 * np.log10(PEAK**2 / mse)) if mse > 0 else float("inf")


def _filter_valid(image) -> np.ndarray:
    """MATLAB ``filter2(window, image, 'valid')`` with the separable Gaussian window (float64;
    OpenCV's separable filter, whose border never reaches the valid positions kept)."""
    radius = (SSIM_SIZE - 1) // 2
    out = cv2.sepFilter2D(
        image, cv2.CV_64F, WINDOW, WINDOW, anchor=(-1, -1), borderType=cv2.BORDER_CONSTANT
    )
    return out[radius:-radius, radius:-radius]


def _ssim_and_cs(x, y) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term over the valid window positions (Wang's
    ``ssim_index_new``): population (window-weighted) variances, L = 255."""
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    mu_x, mu_y = _filter_valid(x), _filter_valid(y)
    var_x = _filter_valid(x * x) - mu_x**2
    var_y = _filter_valid(y * y) - mu_y**2
    cov = _filter_valid(x * y) - mu_x * mu_y
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return float(ssim_map.mean()), float(cs_map.mean())


def ssim(x, y) -> float:
    """Single-scale SSIM of two luminance images (11 x 11 Gaussian, valid positions, L = 255)."""
    return _ssim_and_cs(x, y)[0]


def structural_scores(x, y) -> tuple[float, float]:
    """(MS-SSIM, single-scale SSIM) of two luminance images: MS-SSIM (Wang, Simoncelli, Bovik
    2003) is the product of the first four scales' contrast-structure means and the fifth's SSIM,
    each to its weight (a negative mean to a fractional power is NaN, as it is complex in
    MATLAB); the single-scale SSIM is its first scale's."""
    value, first = 1.0, None
    for level, weight in enumerate(MSSSIM_WEIGHTS):
        ssim_mean, cs_mean = _ssim_and_cs(x, y)
        first = ssim_mean if first is None else first
        if level == len(MSSSIM_WEIGHTS) - 1:
            value *= ssim_mean**weight if ssim_mean >= 0 else float("nan")
        else:
            value *= cs_mean**weight if cs_mean >= 0 else float("nan")
            x, y = _downsample(x), _downsample(y)
    return float(value), float(first)


def _downsample(image) -> np.ndarray:
    """Wang's ``msssim.m`` between scales: ``imfilter(ones(2)/4, 'symmetric', 'same')`` then every
    other pixel from the first: 2 x 2 block means, the last row / column repeated at odd sizes."""
    padded = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2)), mode="symmetric")
    blocks = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    return 0.25 * blocks


def msssim(x, y) -> float:
    """Multi-scale SSIM of two luminance images (:func:`structural_scores`)."""
    return structural_scores(x, y)[0]


# ---- The fast path: the same numbers, the shared work done once ------------------------------
#
# Per shot and image z (:class:`_Output`): its float64 copy, luminance Ly, the spectrum of its
# channel sum, and the 'full' filtering of Ly (the valid filtering of the zero-padded image): at
# scale 1 the filtered statistics of the zero-filled shifted ``gain * Ly`` at the valid positions
# are a slice of those, times the gain and its square (luminance(gain * shifted(z)) =
# gain * shifted(Ly)). Per frame x (:class:`_Frame`): one conversion to float64 (by blocks of
# rows, with the gains' sums Σ x z of every image), its luminance Lx, one FFT, and the valid
# filtering of Lx and Lx². Per shift registered (shared by the images that register to it): the
# masked frame and its filtered statistics (only the windows across the mask's edge filtered
# again) and its MS-SSIM pyramid. Per image and frame: one inverse FFT, the PSNR, one filtering
# of the product x y at scale 1, three filterings per smaller scale. The pixel-wise SSIM maps are
# computed by blocks of rows (the memory traffic, not the arithmetic, is their cost).


_THREAD = threading.local()


def _scratch(name: str, shape) -> np.ndarray:
    """An uninitialised float64 array of ``shape`` kept by this thread under ``name`` (the next
    use of the name in this thread overwrites it): the large per-frame arrays reuse their memory,
    where fresh ones are new pages from the kernel (~6600 page faults a frame at 800 x 800, a
    fifth of the time). :func:`_release_scratch` frees them."""
    arrays = _THREAD.__dict__.setdefault("arrays", {})
    array = arrays.get(name)
    if array is None or array.shape != tuple(shape):
        array = arrays[name] = np.empty(shape)
    return array


def _release_scratch():
    _THREAD.__dict__.pop("arrays", None)


def _filter_valid_into(image, name) -> np.ndarray:
    """:func:`_filter_valid` written into the scratch array ``name``."""
    out = cv2.sepFilter2D(
        image,
        cv2.CV_64F,
        WINDOW,
        WINDOW,
        dst=_scratch(name, image.shape),
        anchor=(-1, -1),
        borderType=cv2.BORDER_CONSTANT,
    )
    radius = EDGE // 2
    return out[radius:-radius, radius:-radius]


def _half(image) -> np.ndarray:
    """:func:`_downsample` (OpenCV's area resize at even sizes: the same 2 x 2 means)."""
    height, width = image.shape
    if height % 2 or width % 2:
        return _downsample(image)
    return cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)


def _crop(array, top, left, shape) -> np.ndarray:
    """``out[p, q] = array[p + top, q + left]`` for (p, q) in ``shape``, zero outside ``array``
    (a view when it lies inside)."""
    height, width = shape
    rows, cols = array.shape
    if top >= 0 and left >= 0 and top + height <= rows and left + width <= cols:
        return array[top : top + height, left : left + width]
    out = np.zeros(shape)
    p0, p1 = max(0, -top), min(height, rows - top)
    q0, q1 = max(0, -left), min(width, cols - left)
    if p0 < p1 and q0 < q1:
        out[p0:p1, q0:q1] = array[p0 + top : p1 + top, q0 + left : q1 + left]
    return out


def _overlap(shift, shape):
    """The region the zero-filled :func:`shifted` fills: (rows, cols) in the shifted image and
    (rows, cols) of the source, or None when nothing is left."""
    row, col = shift
    height, width = shape
    if abs(row) >= height or abs(col) >= width:
        return None
    dst = (slice(max(0, row), height - max(0, -row)), slice(max(0, col), width - max(0, -col)))
    src = (slice(max(0, -row), height - max(0, row)), slice(max(0, -col), width - max(0, col)))
    return dst, src


def _masked_valid(image, full, box, out=None) -> np.ndarray:
    """``_filter_valid(image * mask)`` for the mask of ones on ``box`` = (r0, r1, c0, c1) (zero
    elsewhere), given ``full = _filter_valid(image)``: windows inside the box are copied, windows
    outside are zero, and only the bands of windows across its edges are filtered again."""
    r0, r1, c0, c1 = box
    height, width = image.shape
    if box == (0, height, 0, width):
        return full
    h, w = full.shape
    # Right inside the box, zero outside it, the bands across its edges filtered again.
    if out is None:
        out = full.copy()
    else:
        np.copyto(out, full)
    out[: max(0, r0 - EDGE)] = 0.0
    out[max(0, r1) :] = 0.0
    out[:, : max(0, c0 - EDGE)] = 0.0
    out[:, max(0, c1) :] = 0.0
    for a, b in ((r0 - EDGE, r0), (r1 - EDGE, r1)):  # bands of rows across the top / bottom
        a, b = max(a, 0), min(b, h)
        if a < b:
            sub = np.zeros((b - a + EDGE, width))
            s0, s1 = max(a, r0), min(b + EDGE, r1)
            if s0 < s1:
                sub[s0 - a : s1 - a, c0:c1] = image[s0:s1, c0:c1]
            out[a:b] = _filter_valid(sub)
    for a, b in ((c0 - EDGE, c0), (c1 - EDGE, c1)):  # bands of columns across left / right
        a, b = max(a, 0), min(b, w)
        if a < b:
            sub = np.zeros((height, b - a + EDGE))
            s0, s1 = max(a, c0), min(b + EDGE, c1)
            if s0 < s1:
                sub[r0:r1, s0 - a : s1 - a] = image[r0:r1, s0:s1]
            out[:, a:b] = _filter_valid(sub)
    return out


def _map_sums(prod, cross, mx2, my2, var_sum, gain) -> tuple[float, float]:
    """Sums of the SSIM map and of the contrast-structure map (:func:`_ssim_and_cs`) over a
    block of valid positions, from the filtered statistics with the image side unscaled:
    ``prod`` = mu_x mu_y / gain, ``cross`` = E[x y], ``my2`` = mu_y² / gain², ``var_sum`` =
    var_x + var_y + C2."""
    cs = cv2.divide(cv2.addWeighted(cross, 2.0, prod, -2.0 * gain, C2), var_sum)
    luminance_term = cv2.divide(
        cv2.addWeighted(prod, 2.0 * gain, prod, 0.0, C1),
        cv2.addWeighted(mx2, 1.0, my2, gain * gain, C1),
    )
    return float(np.einsum("ij,ij->", luminance_term, cs)), float(cv2.sumElems(cs)[0])


def _blocks(x):
    """The blocks of rows (a, b) of the valid positions of an image, or None if it has none."""
    height, width = x.shape[0] - EDGE, x.shape[1] - EDGE
    if height <= 0 or width <= 0:
        return None
    return [(a, min(height, a + BLOCK)) for a in range(0, height, BLOCK)]


def _first_scale(x, y, gain, mu_x, sq_x, y_stats) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure) at full size: x the masked frame with its filtered
    mu and E[x²], y = gain * the shifted output, ``y_stats(a, b)`` its (mu, mu², var) / (gain,
    gain², gain²) at rows a..b (slices of the output's full filtering)."""
    blocks = _blocks(x)
    if blocks is None:  # no valid position: NaN, as the mean of an empty map
        return float("nan"), float("nan")
    sums = np.zeros(2)
    for a, b in blocks:
        cross = _filter_valid(cv2.multiply(x[a : b + EDGE], y[a : b + EDGE]))
        mx = mu_x[a:b]
        mx2 = cv2.multiply(mx, mx)
        my, my2, var_y = y_stats(a, b)
        var_sum = cv2.scaleAdd(var_y, gain * gain, cv2.addWeighted(sq_x[a:b], 1.0, mx2, -1.0, C2))
        sums += _map_sums(cv2.multiply(mx, my), cross, mx2, my2, var_sum, gain)
    count = x[EDGE:, EDGE:].size
    return sums[0] / count, sums[1] / count


def _other_scale(x, mu_x, y) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure) at a smaller scale: mu_x the filtered x (shared by
    the images that register to the same shift), the rest filtered here by blocks of rows; one
    filtering of x² + y² gives var_x + var_y."""
    blocks = _blocks(x)
    if blocks is None:
        return float("nan"), float("nan")
    sums = np.zeros(2)
    for a, b in blocks:
        x_rows, y_rows = x[a : b + EDGE], y[a : b + EDGE]
        cross = _filter_valid(cv2.multiply(x_rows, y_rows))
        squares = cv2.multiply(x_rows, x_rows)
        cv2.accumulateSquare(y_rows, squares)
        my = _filter_valid(y_rows)
        mx = mu_x[a:b]
        mx2, my2 = cv2.multiply(mx, mx), cv2.multiply(my, my)
        var_sum = cv2.subtract(cv2.addWeighted(_filter_valid(squares), 1.0, mx2, -1.0, C2), my2)
        sums += _map_sums(cv2.multiply(mx, my), cross, mx2, my2, var_sum, 1.0)
    count = x[EDGE:, EDGE:].size
    return sums[0] / count, sums[1] / count


class _Output:
    """What a restored image contributes to every frame of its shot: its luminance, the spectrum
    of its channel sum, and the 'full' filtering of its luminance (the valid filtering of the
    zero-padded image: mu, mu², var)."""

    def __init__(self, image):
        z = np.ascontiguousarray(image, dtype=np.float64)
        if z.ndim != 3 or z.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got {z.shape}")
        self.z = z
        self.zz = float(np.einsum("ijk,ijk->", z, z))
        self.spectrum = cv2.dft(cv2.transform(z, np.ones((1, 3))))
        self.luma = cv2.transform(z, LUMA[None])
        padded = cv2.copyMakeBorder(self.luma, EDGE, EDGE, EDGE, EDGE, cv2.BORDER_CONSTANT)
        mu = _filter_valid(padded)
        mu2 = cv2.multiply(mu, mu)
        self.full = (mu, mu2, cv2.subtract(_filter_valid(cv2.multiply(padded, padded)), mu2))


class _Frame:
    """One sharp frame: converted, filtered and transformed once for all the images."""

    def __init__(self, frame, outputs: Mapping[str, _Output]):
        x = np.asarray(frame)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB frame, got {x.shape}")
        for output in outputs.values():
            if x.shape != output.z.shape:
                raise ValueError(f"frame size {x.shape} differs from the output's {output.z.shape}")
        height, width = x.shape[:2]
        self.luma = _scratch("luma", (height, width))
        channel_sum = _scratch("channel_sum", (height, width))
        self.xz = dict.fromkeys(outputs, 0.0)
        for a in range(0, height, BLOCK):  # float64 by blocks of rows, in the cache
            rows = x[a : a + BLOCK].astype(np.float64)
            self.luma[a : a + BLOCK] = cv2.transform(rows, LUMA[None])
            channel_sum[a : a + BLOCK] = cv2.transform(rows, np.ones((1, 3)))
            for label, output in outputs.items():
                self.xz[label] += float(np.einsum("ijk,ijk->", rows, output.z[a : a + BLOCK]))
        self.spectrum = cv2.dft(channel_sum, dst=_scratch("spectrum", (height, width)))
        self.luma2 = cv2.multiply(self.luma, self.luma, dst=_scratch("luma2", (height, width)))
        self.full_mu = _filter_valid_into(self.luma, "full_mu")
        self.full_sq = _filter_valid_into(self.luma2, "full_sq")
        self._references = {}

    def reference(self, shift, dst):
        """For a shift (cached: the images that register to the same one share it): the masked
        frame at full size with its filtered mu and E[x²], and at each smaller scale the
        (image, mu)."""
        if shift not in self._references:
            height, width = self.luma.shape
            if dst is None:
                box = (0, 0, 0, 0)
            else:
                box = (dst[0].start, dst[0].stop, dst[1].start, dst[1].stop)
            x, mu, sq = self.luma, self.full_mu, self.full_sq
            if box != (0, height, 0, width):
                index = len(self._references)  # scratch arrays of this frame's index-th shift
                x = _scratch(f"x{index}", x.shape)
                np.copyto(x, self.luma)
                x[: box[0]], x[box[1] :], x[:, : box[2]], x[:, box[3] :] = 0.0, 0.0, 0.0, 0.0
                valid = self.full_mu.shape
                mu = _masked_valid(self.luma, mu, box, _scratch(f"mu{index}", valid))
                sq = _masked_valid(self.luma2, sq, box, _scratch(f"sq{index}", valid))
            pyramid = []
            for _ in MSSSIM_WEIGHTS[1:]:
                x_k = _half(pyramid[-1][0] if pyramid else x)
                pyramid.append((x_k, _filter_valid(x_k)))
            self._references[shift] = (x, mu, sq, pyramid)
        return self._references[shift]


def _peak(correlation) -> tuple[int, int]:
    """(row, col) of ``np.argmax(np.abs(correlation))`` (the first in row-major order) from one
    pass of ``cv2.minMaxLoc``."""
    low, high, low_at, high_at = cv2.minMaxLoc(correlation)
    if -low > high or (-low == high and low_at[::-1] < high_at[::-1]):
        high_at = low_at
    return int(high_at[1]), int(high_at[0])


def _image_scores(frame: _Frame, label: str, output: _Output) -> dict:
    """:meth:`ShotScorer.frame_scores` of one image against one prepared frame."""
    gain = frame.xz[label] / output.zz
    height, width = frame.luma.shape
    product = cv2.mulSpectrums(
        frame.spectrum, output.spectrum, 0, _scratch("product", (height, width)), conjB=True
    )
    correlation = cv2.idft(
        product, dst=_scratch("correlation", (height, width)), flags=cv2.DFT_REAL_OUTPUT
    )
    row, col = _peak(correlation)
    shift = (row - height if row >= height // 2 else row,
             col - width if col >= width // 2 else col)  # fmt: skip
    overlap = _overlap(shift, (height, width))
    dst = None if overlap is None else overlap[0]
    x, mu_x, sq_x, pyramid = frame.reference(shift, dst)

    # The test image: gain * Ly shifted, zero outside ``dst``; at full size its filtered
    # statistics are slices of the output's full filtering.
    y = _scratch("y", (height, width))
    if overlap is None:
        y.fill(0.0)
    else:
        np.multiply(output.luma[overlap[1]], gain, out=y[dst])
        y[: dst[0].start], y[dst[0].stop :], y[:, : dst[1].start], y[:, dst[1].stop :] = 0, 0, 0, 0
    mse = cv2.norm(x, y, cv2.NORM_L2SQR) / (height * width)
    top, left = EDGE - shift[0], EDGE - shift[1]

    def y_stats(a, b):
        return tuple(_crop(full, top + a, left, (b - a, width - EDGE)) for full in output.full)

    first, cs_mean = _first_scale(x, y, gain, mu_x, sq_x, y_stats)
    value = cs_mean ** MSSSIM_WEIGHTS[0] if cs_mean >= 0 else float("nan")
    last = len(MSSSIM_WEIGHTS) - 1
    for level in range(1, last + 1):  # the 2 x 2 means of both, as the reference
        y = _half(y)
        ssim_mean, cs_mean = _other_scale(*pyramid[level - 1], y)
        term = ssim_mean if level == last else cs_mean
        weight = MSSSIM_WEIGHTS[level]
        value *= term**weight if term >= 0 else float("nan")
    return {
        "psnr": float(10.0 * np.log10(PEAK**2 / mse)) if mse > 0 else float("inf"),
        "msssim": float(value),
        "ssim": float(first),
        "shift": list(shift),
    }


def _frame_scores(outputs: Mapping[str, _Output], frame) -> dict[str, dict]:
    prepared = _Frame(frame, outputs)
    return {label: _image_scores(prepared, label, output) for label, output in outputs.items()}


def _scored(outputs, frames, workers) -> Iterator[tuple[str, dict[str, dict]]]:
    """(name, scores per label) for every frame, in order; ``workers`` threads score frames
    (OpenCV and NumPy release the GIL), at most two frames each ahead."""
    if workers <= 1:
        try:
            for name, frame in frames:
                yield name, _frame_scores(outputs, frame)
        finally:
            _release_scratch()
        return
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kohler") as pool:
        pending = collections.deque()
        try:
            for name, frame in frames:
                pending.append((name, pool.submit(_frame_scores, outputs, frame)))
                if len(pending) >= 2 * workers:
                    done_name, future = pending.popleft()
                    yield done_name, future.result()
            while pending:
                done_name, future = pending.popleft()
                yield done_name, future.result()
        finally:
            for _, future in pending:
                future.cancel()


class _Best:
    """The best of every metric over the frames (each on its own), the frame of the best PSNR."""

    def __init__(self):
        self.best = {"psnr": -np.inf, "msssim": -np.inf, "ssim": -np.inf}
        self.best_frame, self.count = None, 0

    def add(self, name, scores):
        self.count += 1
        if scores["psnr"] > self.best["psnr"]:
            self.best_frame = {"frame": name, "shift": scores["shift"]}
        for key in self.best:
            self.best[key] = max(self.best[key], scores[key])

    def result(self) -> dict:
        if self.count == 0:
            raise ValueError("no sharp frame to score against")
        return {**self.best, "frames": self.count, "best_frame": self.best_frame}


def procedure_frame_scores(output, frame) -> dict:
    """One image against one frame, the module docstring's procedure step by step on whole
    arrays (slow; the fast path of :class:`ShotScorer` and :func:`score_shot` must give its
    numbers): ``{"psnr", "msssim", "ssim", "shift"}``."""
    output, sharp = np.asarray(output, np.float64), np.asarray(frame, np.float64)
    gain = intensity_gain(output, sharp)
    shift = registration_shift(mean_fft(sharp), mean_fft(output), sharp.shape[:2])
    mask = shifted(np.ones(sharp.shape[:2]), shift)
    test = luminance(shifted(gain * output, shift))
    reference = luminance(sharp) * mask
    multi_scale, single_scale = structural_scores(reference, test)
    return {"psnr": psnr(reference, test), "msssim": multi_scale, "ssim": single_scale,
            "shift": list(shift)}  # fmt: skip


class ShotScorer:
    """Scores one restored image against the frames of its shot (module docstring).

    Args:
        output: (H, W, 3) RGB restored image, uint8 (or float in 0..255).
    """

    def __init__(self, output):
        self.output = np.asarray(output, dtype=np.float64)
        self.output_mean_fft = mean_fft(self.output)
        self._prepared = {"output": _Output(self.output)}

    def frame_scores(self, frame) -> dict:
        """``{"psnr", "msssim", "ssim", "shift"}`` against one sharp (H, W, 3) frame."""
        try:
            return _frame_scores(self._prepared, frame)["output"]
        finally:
            _release_scratch()  # one frame: no memory kept (best / score_shot keep it per pass)

    def best(self, frames, workers: int = 1) -> dict:
        """The best of every metric over ``frames`` (an iterable of (name, RGB array)); records
        the frame of the best PSNR and how many frames were scored."""
        best = _Best()
        for name, scores in _scored(self._prepared, frames, workers):
            best.add(name, scores["output"])
        return best.result()


def score_shot(
    images: Mapping[str, np.ndarray], frames: Iterable, workers: int = 2
) -> dict[str, dict]:
    """Scores several images of one shot (e.g. ``{"restored": ..., "blurred": ...}``, each
    (H, W, 3) RGB uint8) against its sharp frames (an iterable of (name, (H, W, 3) RGB uint8),
    e.g. :func:`read_frames`), each frame decoded and prepared once for all of them, ``workers``
    threads scoring frames. Returns per label :meth:`ShotScorer.best`'s dict:
    ``{"psnr", "msssim", "ssim", "frames", "best_frame": {"frame", "shift"}}``."""
    if not images:
        raise ValueError("no image to score")
    outputs = {label: _Output(image) for label, image in images.items()}
    best = {label: _Best() for label in outputs}
    for name, scores in _scored(outputs, frames, workers):
        for label, label_scores in scores.items():
            best[label].add(name, label_scores)
    return {label: reducer.result() for label, reducer in best.items()}


def _decode(path) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frames(paths: Iterable, workers: int = 2) -> Iterator[tuple[str, np.ndarray]]:
    """(file name, (H, W, 3) RGB uint8) of every PNG in ``paths``, in order, decoded ahead by
    ``workers`` threads (``cv2.imread``); ValueError("<path>: cannot decode") on a bad file."""
    paths = list(paths)
    with concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="png") as pool:
        pending = collections.deque()
        try:
            for path in paths:
                pending.append((path, pool.submit(_decode, path)))
                if len(pending) > 2 * workers:
                    done, future = pending.popleft()
                    yield os.path.basename(done), future.result()
            while pending:
                done, future = pending.popleft()
                yield os.path.basename(done), future.result()
        finally:
            for _, future in pending:
                future.cancel()
