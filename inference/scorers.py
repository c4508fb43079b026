"""One scorer per evaluation protocol: the per-image numbers ``evaluate.py`` records, for a
restored image and for the blurred input beside it (``data_and_evaluation.md`` §1.2, §1.3, §3).

* ``gopro`` / ``plain`` (:class:`PairScorer`): the project's definitions (:mod:`metrics`): RGB
  PSNR / SSIM at full size under ``--metric_input`` (``uint8``: the saved PNG's values).
* ``realblur`` (:class:`RealBlurScorer`): RealBlur's official aligned PSNR / SSIM
  (:mod:`protocols.realblur`) on the uint8 images, the unaligned ones beside.
* ``kohler`` (:class:`KohlerScorer`): Köhler et al.'s best-over-frames registered luminance PSNR,
  MS-SSIM and SSIM (:mod:`protocols.kohler`) on the uint8 images.

A scorer's :meth:`score` takes the restored image (H, W, 3) float in [0, 1] (or uint8), the
blurred input the same way, and the reference (the sharp (H, W, 3) image; for Köhler the tuple of
the shot's frame paths); it returns the row's numbers: ``<metric>`` and ``input_<metric>`` for
each of :attr:`metrics`, plus protocol extras. No TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np

LABELS = {
    "gopro": "GoPro (RGB PSNR / SSIM, full image)",
    "plain": "plain (RGB PSNR / SSIM, full image)",
    "realblur": "RealBlur-aligned (official ECC evaluation)",
    "kohler": "Köhler (official: best over frames, registered luminance)",
}


class PairScorer:
    """``gopro`` and ``plain``: :func:`metrics.image_metrics` of the output and of the input."""

    metrics = ("psnr", "ssim")

    def __init__(self, protocol: str = "plain", convention: str = "uint8"):
        self.protocol, self.convention = protocol, convention

    def score(self, output, blur, sharp) -> dict:
        import metrics as metric_defs

        values = metric_defs.image_metrics(output, sharp, convention=self.convention)
        baseline = metric_defs.image_metrics(blur, sharp, convention=self.convention)
        return {**values, **{f"input_{k}": v for k, v in baseline.items()}}

    def definitions(self) -> dict:
        return metric_definitions(self.convention)


class RealBlurScorer:
    """``realblur``: aligned PSNR / SSIM, unaligned beside; a failed ECC alignment gives NaN
    aligned numbers (left out of the means, counted) rather than ending the run."""

    metrics = ("psnr", "ssim", "unaligned_psnr", "unaligned_ssim")
    protocol = "realblur"

    def score(self, output, blur, sharp) -> dict:
        sharp = as_uint8(sharp)
        images = (("", as_uint8(output)), ("input_", as_uint8(blur)))
        # The two ECC alignments are independent and OpenCV releases the GIL: one thread each.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda item: self._scores(item[1], sharp, item[0]), images))
        return {**parts[0], **parts[1]}

    def _scores(self, image, sharp, prefix) -> dict:
        row = self._aligned(image, sharp, prefix)
        unaligned = realblur().unaligned_scores(image, sharp)
        row[f"{prefix}unaligned_psnr"] = unaligned["psnr"]
        row[f"{prefix}unaligned_ssim"] = unaligned["ssim"]
        return row

    @staticmethod
    def _aligned(image, sharp, prefix) -> dict:
        module = realblur()
        try:
            scores = module.aligned_scores(image, sharp)
        except module.AlignmentError:
            return {f"{prefix}psnr": math.nan, f"{prefix}ssim": math.nan}
        return {f"{prefix}psnr": scores["psnr"], f"{prefix}ssim": scores["ssim"]}

    def definitions(self) -> dict:
        return {
            "input": "PNG values (uint8) / 255; RGB; full image",
            "psnr": "RealBlur-aligned: least-squares intensity gain, ECC homography (100 "
            "iterations, epsilon 0, Gaussian 5), cubic warp of the output and nearest warp of a "
            "mask; 10*log10(1 / (sum squared error / sum mask))",
            "ssim": "RealBlur-aligned: scikit-image Gaussian SSIM map (sigma 1.5, population "
            "covariance, data range 1) x mask, cropped by 5 px, / cropped mask sum per channel, "
            "mean over RGB",
            "unaligned": "the same definitions with a mask of ones, no gain, no warp",
        }


class KohlerScorer:
    """``kohler``: the best over the shot's frames of each metric, for output and input at once
    (one decode of every frame)."""

    metrics = ("psnr", "msssim", "ssim")
    protocol = "kohler"

    def score(self, output, blur, frames) -> dict:
        from protocols import kohler

        images = {"restored": as_uint8(output), "blurred": as_uint8(blur)}
        best = kohler.score_shot(images, kohler.read_frames(frames))
        row = {key: best["restored"][key] for key in self.metrics}
        row.update({f"input_{key}": best["blurred"][key] for key in self.metrics})
        row["frames"] = best["restored"]["frames"]
        row["best_frame"] = best["restored"]["best_frame"]["frame"]
        return row

    def definitions(self) -> dict:
        return {
            "input": "PNG values (uint8) as 0..255 doubles; per sharp frame: least-squares "
            "intensity gain, integer DFT registration of the channel means, zero-filled shift; "
            "luminance 0.299 R + 0.587 G + 0.114 B; best over the shot's frames, each metric",
            "psnr": "10*log10(255^2/MSE) over the whole image (zero-filled border included)",
            "msssim": "multi-scale SSIM (Wang, Simoncelli, Bovik 2003; the benchmark's 'MSSIM')",
            "ssim": "single-scale SSIM (11x11 Gaussian, sigma 1.5) on the same luminance",
        }


def scorer_for(protocol: str, convention: str = "uint8"):
    """The scorer of ``protocol``; realblur and kohler score PNG values (``uint8``) only."""
    if protocol == "realblur":
        return RealBlurScorer()
    if protocol == "kohler":
        return KohlerScorer()
    return PairScorer(protocol, convention)


def realblur():
    from protocols import realblur as module

    return module


def as_uint8(image) -> np.ndarray:
    """uint8 (H, W, 3): float images are clamped, x255 and rounded (the saved PNG's values)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.rint(np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def metric_definitions(convention: str) -> dict:
    """The project's metric definitions (gopro / plain), as strings for the summary."""
    import metrics as metric_defs

    if convention == "uint8":
        prep = "output clamped to [0,1], x255, rounded to uint8 vs uint8 ground truth; R=255"
    else:
        prep = "output clamped to [0,1] as float vs ground truth/255 (MIMO-UNet official); R=1"
    w = metric_defs.SSIM_WINDOW
    return {
        "input": prep + "; full image, RGB, no border crop, no Y channel",
        "psnr": "10*log10(R^2/MSE), MSE over HxWx3; mean of per-image values (+inf excluded)",
        "ssim": (
            f"Wang et al. 2004, {w}x{w} Gaussian window, sigma {metric_defs.SSIM_SIGMA}, "
            f"K1={metric_defs.SSIM_K1}, K2={metric_defs.SSIM_K2}, valid positions, per channel "
            "then mean over RGB (= tf.image.ssim; skimage with gaussian_weights=True, "
            "use_sample_covariance=False); not MATLAB's 3-D ssim"
        ),
    }
