"""The benchmark authors' own evaluation protocols, as their official code computes them (numpy,
OpenCV, scikit-image; no TensorFlow): :mod:`protocols.realblur` (RealBlur's ECC-aligned PSNR /
SSIM) and :mod:`protocols.kohler` (Köhler et al.'s best-over-frames PSNR / MS-SSIM / SSIM on the
registered luminance)."""
