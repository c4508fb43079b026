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
of the best PSNR); a set's, the mean over shots. Cost: the restored image's FFT once per shot, one
FFT per frame, and the structural metrics share the restored image's filtered statistics between
frames that register to the same shift.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft

LUMA = np.array([0.299, 0.587, 0.114])
PEAK = 255.0
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_SIZE = 0.01, 0.03, 1.5, 11


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


class ShotScorer:
    """Scores one restored image against the frames of its shot (module docstring).

    Args:
        output: (H, W, 3) RGB restored image, uint8 (or float in 0..255).
    """

    def __init__(self, output):
        self.output = np.asarray(output, dtype=np.float64)
        self.output_mean_fft = mean_fft(self.output)

    def frame_scores(self, frame) -> dict:
        """``{"psnr", "msssim", "ssim", "shift"}`` against one sharp (H, W, 3) frame."""
        sharp = np.asarray(frame, dtype=np.float64)
        if sharp.shape != self.output.shape:
            raise ValueError(
                f"frame size {sharp.shape} differs from the output's {self.output.shape}"
            )
        gain = intensity_gain(self.output, sharp)
        shape = sharp.shape[:2]
        shift = registration_shift(mean_fft(sharp), self.output_mean_fft, shape)
        mask = shifted(np.ones(sharp.shape[:2]), shift)
        test = luminance(shifted(gain * self.output, shift))
        reference = luminance(sharp) * mask
        multi_scale, single_scale = structural_scores(reference, test)
        return {
            "psnr": psnr(reference, test),
            "msssim": multi_scale,
            "ssim": single_scale,
            "shift": list(shift),
        }

    def best(self, frames) -> dict:
        """The best of every metric over ``frames`` (an iterable of (name, RGB array)); records
        the frame of the best PSNR and how many frames were scored."""
        best = {"psnr": -np.inf, "msssim": -np.inf, "ssim": -np.inf}
        best_frame, count = None, 0
        for name, frame in frames:
            scores = self.frame_scores(frame)
            count += 1
            if scores["psnr"] > best["psnr"]:
                best_frame = {"frame": name, "shift": scores["shift"]}
            for key in best:
                best[key] = max(best[key], scores[key])
        if count == 0:
            raise ValueError("no sharp frame to score against")
        return {**best, "frames": count, "best_frame": best_frame}
