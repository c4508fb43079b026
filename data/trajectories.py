"""Boracchi–Foi random camera-shake trajectories and uniform-blur PSFs: ``data_and_evaluation.md``
§2.1 (the sampler of DeblurGAN's implementation, with the project fixes).

Trajectory: canvas 64 px, M = 2000 samples, path length L_max = 60 px, exposure parameter
``expl`` = 0.1·U(0, 1) when not given; centripetal = 0.7·U, prob_big_shake = 0.2·U,
gaussian_shake = 10·U, v₀ = e^{iθ₀}, θ₀ = 2π·U; positions are complex numbers (real = column,
imaginary = row), x₀ = 0, Δ = L_max/(M − 1), v = v₀·expl (v₀·Δ if expl = 0); for t = 0..M−2: an
impulsive reversal nextDir = 2v·e^{i(π + U − 0.5)} with probability prob_big_shake·expl (else 0),
dv = nextDir + expl·(gaussian_shake·(N + iN′) − centripetal·x_t)·Δ, v ← v + dv, v ← v·Δ/|v|,
x_{t+1} = x_t + v.

PSF for an exposure fraction f (default 1): the samples t < f·M are **centred on their centroid**
(mean position moved to the canvas centre ``canvas // 2``, exact, no resampling) and splatted
bilinearly (triangle weights) onto the canvas; the PSF is **normalised to sum 1**; nothing is
min–max renormalised. Rejection: a trajectory is redrawn when its bounding box exceeds the canvas
minus 2 px, and also (project choice, so that no sample can fall off the canvas after the centroid
shift) when a centred sample lies outside [1, canvas − 2].

:func:`blur_uniform` convolves each channel with the PSF (true convolution, the PSF's centre pixel
``canvas // 2`` is the origin) with a **reflect** boundary (OpenCV ``BORDER_REFLECT_101``); the
synthetic data builder additionally blurs a window with a margin and keeps the centre, so the
boundary never reaches the stored pairs.
"""

from __future__ import annotations

import cv2
import numpy as np


def random_trajectory(
    rng: np.random.Generator,
    canvas: int = 64,
    n_samples: int = 2000,
    max_length: float = 60.0,
    expl: float | None = None,
    fraction: float = 1.0,
) -> np.ndarray:
    """A complex (M,) trajectory (real = column, imag = row), redrawn until it fits the canvas."""
    while True:
        e = 0.1 * rng.random() if expl is None else expl
        x = _sample_path(rng, n_samples, max_length, e)
        used = x[: _n_used(n_samples, fraction)]
        centred = used - used.mean() + complex(canvas // 2, canvas // 2)
        span = max(np.ptp(x.real), np.ptp(x.imag))
        inside = (
            min(centred.real.min(), centred.imag.min()) >= 1
            and max(centred.real.max(), centred.imag.max()) <= canvas - 2
        )
        if span <= canvas - 2 and inside:
            return x


def _sample_path(rng, m: int, max_length: float, expl: float) -> np.ndarray:
    centripetal, big_shake, gauss_shake = 0.7 * rng.random(), 0.2 * rng.random(), 10 * rng.random()
    step = max_length / (m - 1)
    v = np.exp(1j * 2 * np.pi * rng.random()) * (expl if expl > 0 else step)
    shake_u, angle_u = rng.random(m - 1), rng.random(m - 1)
    noise = rng.standard_normal((m - 1, 2))
    x = np.zeros(m, np.complex128)
    for t in range(m - 1):  # sequential by nature: each velocity depends on the previous one
        jump = (
            2 * v * np.exp(1j * (np.pi + angle_u[t] - 0.5)) if shake_u[t] < big_shake * expl else 0
        )
        v = v + jump + expl * (gauss_shake * complex(*noise[t]) - centripetal * x[t]) * step
        v = v * step / abs(v)
        x[t + 1] = x[t] + v
    return x


def _n_used(m: int, fraction: float) -> int:
    return max(1, int(np.ceil(fraction * m)))  # samples with t < f·M


def trajectory_psf(trajectory: np.ndarray, canvas: int = 64, fraction: float = 1.0) -> np.ndarray:
    """Float64 (canvas, canvas) PSF summing to 1 with its centroid at (canvas//2, canvas//2)."""
    used = trajectory[: _n_used(len(trajectory), fraction)]
    pos = used - used.mean() + complex(canvas // 2, canvas // 2)
    col, row = pos.real, pos.imag
    c0, r0 = np.floor(col).astype(int), np.floor(row).astype(int)
    fc, fr = col - c0, row - r0
    psf = np.zeros((canvas, canvas))
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc))):
        np.add.at(psf, (r0 + dr, c0 + dc), w)
    np.add.at(psf, (r0 + 1, c0 + 1), fr * fc)
    return psf / psf.sum()


def random_psf(rng: np.random.Generator, canvas: int = 64, fraction: float = 1.0, **kw):
    """A PSF from a fresh random trajectory (keyword arguments go to :func:`random_trajectory`)."""
    traj = random_trajectory(rng, canvas=canvas, fraction=fraction, **kw)
    return trajectory_psf(traj, canvas, fraction)


def psf_centroid(psf: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass of a PSF."""
    rows, cols = np.indices(psf.shape)
    total = psf.sum()
    return float((rows * psf).sum() / total), float((cols * psf).sum() / total)


def blur_uniform(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolves each channel of a float (H, W[, C]) image with ``psf`` (reflect boundary).

    The PSF's origin is its pixel (k//2, k//2) for a k x k PSF, so a centroid-centred PSF does not
    shift the image. Returns the input's float dtype; values are not renormalised.
    """
    k = psf.shape[0]
    anchor = k - 1 - k // 2  # correlation with the flipped kernel == convolution
    kernel = np.ascontiguousarray(psf[::-1, ::-1]).astype(image.dtype)
    return cv2.filter2D(
        image, -1, kernel, anchor=(anchor, anchor), borderType=cv2.BORDER_REFLECT_101
    )
