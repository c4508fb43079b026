"""RealBlur's official aligned evaluation (Rim et al., ECCV 2020; ``evaluation_RealBlur_ecc.py``).

The RealBlur pairs come from a two-camera rig: a restored image and its sharp reference are not
pixel-aligned, so the benchmark aligns each output to its reference before scoring
(``data_and_evaluation.md`` §1.2). Step by step, exactly as the authors' script:

1. both images as float32 in [0, 1] (uint8 / 255);
2. **intensity**: the output z is scaled by the least-squares gain ``Σ x z / Σ z z`` against the
   sharp image x (sums over all pixels and channels);
3. **homography**: OpenCV's ECC (``cv2.findTransformECC``, ``MOTION_HOMOGRAPHY``, identity start,
   100 iterations, epsilon 0, Gaussian filter size 5) with the grey sharp image as template and the
   grey scaled output as input (``cv2.COLOR_RGB2GRAY``);
4. **warp**: the scaled output with that homography (``INTER_CUBIC + WARP_INVERSE_MAP``, reflected
   border), and a mask of ones (``INTER_NEAREST + WARP_INVERSE_MAP``, zero border); output and
   sharp image are multiplied by the mask;
5. **PSNR** = 10 log10(1 / (Σ squared error / Σ mask)) (data range 1);
6. **SSIM**: scikit-image's ``structural_similarity`` map (Gaussian weights, sigma 1.5, population
   covariance, data range 1, per channel) times the mask, cropped by the window radius (5 px) on
   every side, summed per channel and divided by the cropped mask's sum per channel, then averaged
   over the channels.

:func:`unaligned_scores` gives the same two numbers without steps 2-4 (mask of ones), which the
evaluation reports beside. Arrays are (H, W, 3) RGB uint8 (or float in [0, 1]); no TensorFlow.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import structural_similarity

ECC_ITERATIONS = 100
ECC_EPSILON = 0.0
ECC_GAUSSIAN_SIZE = 5
SSIM_SIGMA = 1.5
# scikit-image's Gaussian window radius, int(3.5 * sigma + 0.5) = 5 (an 11 x 11 window).
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)


class AlignmentError(ValueError):
    """ECC did not converge (images uncorrelated or without overlap)."""


def as_unit_float(image) -> np.ndarray:
    """(H, W, 3) uint8 -> float32 in [0, 1] (``astype(float32) / 255``); float input is cast."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def intensity_matched(output, sharp) -> np.ndarray:
    """The output scaled by the least-squares gain ``Σ x z / Σ z z`` against the sharp image."""
    gain = np.sum(sharp * output) / np.sum(output * output)
    return (gain * output).astype(np.float32)


def homography(sharp, output) -> np.ndarray:
    """The 3 x 3 float32 ECC homography mapping the sharp image's grid into the output's."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPSILON)
    template = cv2.cvtColor(sharp, cv2.COLOR_RGB2GRAY)
    moving = cv2.cvtColor(output, cv2.COLOR_RGB2GRAY)
    warp = np.eye(3, 3, dtype=np.float32)
    try:
        _, warp = cv2.findTransformECC(
            template, moving, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, ECC_GAUSSIAN_SIZE
        )
    except cv2.error as error:
        detail = str(error).strip().splitlines()[-1]
        raise AlignmentError(f"ECC alignment failed ({detail})") from None
    return warp


def align(output, sharp):
    """Steps 2-4 of the module docstring: (warped output x mask, sharp x mask, mask, homography),
    all (H, W, 3) float32 but the 3 x 3 homography."""
    scaled = intensity_matched(output, sharp)
    warp = homography(sharp, scaled)
    size = (sharp.shape[1], sharp.shape[0])
    warped = cv2.warpPerspective(
        scaled,
        warp,
        size,
        flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    mask = cv2.warpPerspective(
        np.ones_like(scaled, dtype=np.float32),
        warp,
        size,
        flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return warped * mask, sharp * mask, mask, warp


def masked_psnr(sharp, output, mask) -> float:
    """10 log10(1 / (Σ (x - z)^2 / Σ mask)), data range 1 (float64 sums)."""
    error = np.sum((sharp - output) ** 2, dtype=np.float64) / np.sum(mask, dtype=np.float64)
    return float(10.0 * np.log10(1.0 / error)) if error > 0 else float("inf")


def masked_ssim(sharp, output, mask) -> float:
    """scikit-image's Gaussian SSIM map times the mask, cropped by the window radius, summed per
    channel over the cropped mask's sum, averaged over channels."""
    _, ssim_map = structural_similarity(
        sharp,
        output,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        data_range=1.0,
        full=True,
    )
    r = SSIM_RADIUS
    cropped = (ssim_map * mask)[r:-r, r:-r, :]
    cropped_mask = mask[r:-r, r:-r, :]
    return float(np.mean(cropped.sum(axis=(0, 1)) / cropped_mask.sum(axis=(0, 1))))


def aligned_scores(output, sharp) -> dict:
    """RealBlur's official aligned PSNR / SSIM of one restored image (module docstring).

    Args:
        output, sharp: (H, W, 3) RGB, uint8 or float in [0, 1], the same size.
    Returns:
        ``{"psnr", "ssim", "homography"}`` (homography as a nested list).
    Raises:
        AlignmentError: ECC failed to converge; ValueError: the sizes differ.
    """
    output, sharp = as_unit_float(output), as_unit_float(sharp)
    _check_shapes(output, sharp)
    warped, reference, mask, warp = align(output, sharp)
    return {
        "psnr": masked_psnr(reference, warped, mask),
        "ssim": masked_ssim(reference, warped, mask),
        "homography": warp.tolist(),
    }


def unaligned_scores(output, sharp) -> dict:
    """The same PSNR / SSIM definitions without alignment (mask of ones, no intensity match)."""
    output, sharp = as_unit_float(output), as_unit_float(sharp)
    _check_shapes(output, sharp)
    mask = np.ones_like(sharp)
    return {"psnr": masked_psnr(sharp, output, mask), "ssim": masked_ssim(sharp, output, mask)}


def _check_shapes(output, sharp):
    if output.shape != sharp.shape or output.ndim != 3 or output.shape[-1] != 3:
        raise ValueError(
            f"RealBlur scoring needs two (H, W, 3) images of one size, got {output.shape} and "
            f"{sharp.shape}."
        )
