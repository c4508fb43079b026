"""Evaluation metrics: PSNR and SSIM under the project's conventions.

Definitions (data_and_evaluation.md section 3; mimo_unet.md sections 9 and 13.2):

* **Output handling, convention ``uint8`` (default).** The model's full-resolution output is
  clamped to [0, 1], multiplied by 255 and rounded to the nearest integer (``np.rint``: ties to
  even; exact ties do not occur in practice) to uint8, i.e. the values a saved PNG holds. The ground
  truth is the uint8 image as read. Metrics use these uint8 RGB arrays at full resolution: no border
  crop, no Y channel.
* **Convention ``float``** (MIMO-UNet's official ``eval.py``): the output clamped to [0, 1] as
  float, against the float ground truth (uint8 / 255), data range 1, no quantisation. It differs
  from ``uint8`` by about 0.003 dB.
* **PSNR** = 10 * log10(R^2 / MSE), MSE over all H x W x 3 values (as float64), R = 255 (uint8) or
  1 (float); per image, then the arithmetic mean of the per-image values over the data set (not the
  PSNR of the mean MSE). Identical images give +inf; they are left out of the mean and counted
  separately. Equal to ``skimage.metrics.peak_signal_noise_ratio(gt, out, data_range=R)`` and to
  ``tf.image.psnr(..., max_val=R)``.
* **SSIM** (Wang et al. 2004): 11 x 11 Gaussian window with sigma 1.5 (normalised to sum 1),
  K1 = 0.01, K2 = 0.03, dynamic range R = 255 (uint8) or 1 (float); the SSIM map is evaluated only
  at the valid window positions ((H - 10) x (W - 10), no padding), averaged over them, computed per
  channel and averaged over R, G, B; per image, then the mean over the data set. It equals
  ``tf.image.ssim(..., max_val=R)`` and scikit-image's ``structural_similarity(gt, out,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=-1)``
  (not scikit-image's default, which uses a 7 x 7 uniform window with sample covariance). Images
  smaller than 11 pixels on a side raise ``ValueError`` (scikit-image also refuses them).
* **Caveat.** The papers do not publish their SSIM code (MIMO-UNet has none; several GoPro papers
  use MATLAB's ``ssim`` on H x W x 3 volumes, which is a different quantity), so SSIM values are not
  comparable with the papers' to the third decimal. PSNR values are comparable.

API: :func:`to_uint8`, :func:`psnr`, :func:`ssim`, :func:`image_metrics` (numpy, per image),
:func:`average_psnr` and :class:`MeanMetrics` (averaging), :func:`batch_psnr_ssim` (TensorFlow,
for validation inside training).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from scipy import ndimage

CONVENTIONS = ("uint8", "float")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# --------------------------------------------------------------------------------------------------
# Per-image metrics (numpy)
# --------------------------------------------------------------------------------------------------


def to_uint8(image):
    """Float image (any layout) -> uint8: clamp to [0, 1], x255, round to nearest (ties to even)."""
    image = np.asarray(image, dtype=np.float64)
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_pair(pred, target):
    """Validates a pair of images; returns (pred, target, default data range)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"Shape mismatch: prediction {pred.shape} vs target {target.shape}.")
    kinds = {pred.dtype == np.uint8, target.dtype == np.uint8}
    if len(kinds) == 2:
        raise ValueError(
            f"Mixed dtypes {pred.dtype} and {target.dtype}: pass both as uint8 (use to_uint8) "
            "or both as float in [0, 1]."
        )
    for name, array in (("prediction", pred), ("target", target)):
        if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"The {name} must be uint8 or floating point, got {array.dtype}.")
    return pred, target, (255.0 if pred.dtype == np.uint8 else 1.0)


def psnr(pred, target, data_range=None):
    """PSNR in dB of one image pair: 10 * log10(R^2 / MSE), MSE over all values.

    Args:
        pred, target: arrays of the same shape (H x W x 3), both uint8 or both floating point.
            They are compared as given (no clamping here; see :func:`image_metrics`).
        data_range: R; ``None`` means 255 for uint8 and 1.0 for floats.

    Returns:
        a Python float; ``float("inf")`` for identical images.
    """
    pred, target, default_range = _check_pair(pred, target)
    data_range = default_range if data_range is None else float(data_range)
    # float64 before subtracting: uint8 differences would wrap around.
    mse = np.mean(np.square(pred.astype(np.float64) - target.astype(np.float64)))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


def _gaussian_window_1d(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-0.5 * (coords / sigma) ** 2)
    return window / window.sum()


def _filter_valid(image):
    """Gaussian-weighted local mean of an H x W x C float64 array, valid positions only."""
    window = _gaussian_window_1d()
    # The border mode does not matter: the border rows/columns it affects are cropped off.
    out = ndimage.correlate1d(image, window, axis=0, mode="reflect")
    out = ndimage.correlate1d(out, window, axis=1, mode="reflect")
    pad = SSIM_WINDOW // 2
    return out[pad:-pad, pad:-pad]


def ssim(pred, target, data_range=None):
    """SSIM of one image pair (Wang et al. 2004; definition in the module docstring).

    Args:
        pred, target: H x W x C arrays (C = 3 for RGB), both uint8 or both floating point,
            H, W >= 11.
        data_range: R; ``None`` means 255 for uint8 and 1.0 for floats.

    Returns:
        a Python float: the mean of the SSIM map over the valid 11 x 11 window positions of each
        channel, averaged over the channels.
    """
    pred, target, default_range = _check_pair(pred, target)
    data_range = default_range if data_range is None else float(data_range)
    if pred.ndim != 3:
        raise ValueError(f"SSIM expects H x W x C images, got shape {pred.shape}.")
    if min(pred.shape[:2]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (the Gaussian "
            f"window), got {pred.shape[0]}x{pred.shape[1]}."
        )
    x, y = pred.astype(np.float64), target.astype(np.float64)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = _filter_valid(x), _filter_valid(y)
    var_x = _filter_valid(x * x) - mu_x**2
    var_y = _filter_valid(y * y) - mu_y**2
    cov_xy = _filter_valid(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    # Mean over positions per channel, then over channels (equal to the mean of the whole map).
    return float(np.mean(np.mean(ssim_map, axis=(0, 1))))


def image_metrics(output_float, sharp, convention="uint8"):
    """PSNR and SSIM of one restored image under an evaluation convention.

    Args:
        output_float: H x W x 3 float model output (unclipped; finest scale, in [0, 1] nominally).
        sharp: H x W x 3 ground truth, uint8 as read, or float in [0, 1] (e.g. uint8 / 255; under
            ``"uint8"`` it is rounded back with :func:`to_uint8`, which is exact for such input).
        convention: ``"uint8"`` (default: clamp, x255, round; R = 255) or ``"float"`` (MIMO-UNet
            official: clamped float output against the float ground truth; R = 1).

    Returns:
        ``{"psnr": float, "ssim": float}``.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown convention {convention!r}; expected one of {CONVENTIONS}.")
    output_float, sharp = np.asarray(output_float), np.asarray(sharp)
    if output_float.dtype == np.uint8:
        raise ValueError("image_metrics expects the float model output, got uint8.")
    if convention == "uint8":
        pred = to_uint8(output_float)
        target = sharp if sharp.dtype == np.uint8 else to_uint8(sharp)
    else:
        pred = np.clip(output_float.astype(np.float64), 0.0, 1.0)
        target = sharp / 255.0 if sharp.dtype == np.uint8 else sharp.astype(np.float64)
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}


# --------------------------------------------------------------------------------------------------
# Averaging
# --------------------------------------------------------------------------------------------------


def average_psnr(values):
    """Mean of per-image PSNRs with identical images (+inf) counted separately.

    Returns:
        ``{"psnr": mean of the finite values, "num_infinite": count of +inf, "num_images": n}``.
        ``psnr`` is +inf if every image is identical and NaN if there are no images.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    infinite = np.isposinf(values)
    finite = values[~infinite]
    if finite.size:
        mean = float(np.mean(finite))
    elif values.size:
        mean = float("inf")  # every image identical
    else:
        mean = float("nan")  # no images
    return {"psnr": mean, "num_infinite": int(infinite.sum()), "num_images": int(values.size)}


class MeanMetrics:
    """Accumulates per-image metric values and returns their means.

    ``update(psnr=..., ssim=...)`` takes scalars or 1-D per-image arrays (e.g. the tensors of
    :func:`batch_psnr_ssim`). :meth:`result` returns the mean of every metric over the images,
    where +inf values (identical images; PSNR) are left out of the mean; ``num_images`` and, for
    ``psnr``, ``psnr_num_infinite`` are added. The per-image values stay in :attr:`values`.
    """

    def __init__(self):
        self.values: dict[str, list[float]] = {}

    def update(self, **metrics):
        for name, value in metrics.items():
            flat = np.asarray(value, dtype=np.float64).reshape(-1)
            self.values.setdefault(name, []).extend(float(v) for v in flat)

    def reset(self):
        self.values = {}

    def result(self):
        out = {}
        for name, values in self.values.items():
            summary = average_psnr(values)
            out[name] = summary["psnr"]
            out["num_images"] = summary["num_images"]
            if name == "psnr":
                out["psnr_num_infinite"] = summary["num_infinite"]
        return out


# --------------------------------------------------------------------------------------------------
# Batched metrics in TensorFlow (validation during training)
# --------------------------------------------------------------------------------------------------


def quantize(images):
    """NHWC float tensor -> uint8 values as float32: clamp to [0, 1], x255, round (ties to even)."""
    images = tf.cast(images, tf.float32)
    return tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)


def batch_psnr_ssim(pred, target):
    """Per-image PSNR and SSIM of NHWC float batches under the ``uint8`` convention.

    Both batches are quantised with :func:`quantize` (for a target that is uint8 / 255 this is
    exact), then ``tf.image.psnr`` and ``tf.image.ssim`` with max_val 255 are applied: the same
    definitions as :func:`psnr` / :func:`ssim`. H, W >= 11.

    Returns:
        ``(psnr, ssim)``, two float32 tensors of shape (N,); PSNR is +inf for identical images.
    """
    pred_q, target_q = quantize(pred), quantize(target)
    psnr_values = tf.image.psnr(pred_q, target_q, max_val=255.0)
    ssim_values = tf.image.ssim(
        pred_q,
        target_q,
        max_val=255.0,
        filter_size=SSIM_WINDOW,
        filter_sigma=SSIM_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
    )
    return psnr_values, ssim_values
