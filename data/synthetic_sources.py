"""Sharp image sources bundled with installed packages: ``data_and_evaluation.md`` §2.6.

RGB photographs from ``skimage.data`` (all ship inside the scikit-image wheel, so no download):
``astronaut``, ``coffee``, ``chelsea``, ``rocket``, ``hubble_deep_field``, ``immunohistochemistry``,
``retina`` and both views of ``stereo_motorcycle``; grayscale textures ``camera``, ``brick``,
``grass``, ``gravel``, ``coins``, ``moon``, ``page``, ``text`` are replicated to RGB and, with
probability 0.5, tinted by per-channel gains in [0.6, 1] (project choice for "optionally
colour-tinted"). Excluded: ``clock`` (motion-blurred), ``horse`` (binary), ``logo`` (RGBA),
``colorwheel`` and the phantom.

Split (spec default): **test = coffee, rocket**; every other photo and all textures are training
sources (both motorcycle views in the same split). A source is used for a window only if its
shorter side is at least the window (so ``chelsea`` and the small textures serve only small S).
Images are uint8 RGB (H, W, 3).
"""

from __future__ import annotations

import functools

import numpy as np

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
)
TEXTURES = ("camera", "brick", "grass", "gravel", "coins", "moon", "page", "text")
TEST_PHOTOS = ("coffee", "rocket")


def split_sources(split: str) -> tuple[str, ...]:
    """Names of the photo/texture sources of a split (``"train"`` or ``"test"``)."""
    if split == "test":
        return TEST_PHOTOS
    if split == "train":
        return tuple(p for p in PHOTOS if p not in TEST_PHOTOS) + TEXTURES
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def usable_sources(split: str, min_side: int) -> tuple[str, ...]:
    """Sources of ``split`` whose shorter side is at least ``min_side`` pixels."""
    return tuple(n for n in split_sources(split) if min(load_source(n).shape[:2]) >= min_side)


@functools.cache
def load_source(name: str) -> np.ndarray:
    """The named source as uint8 RGB (H, W, 3) (textures replicated to three channels)."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        image = left if name.endswith("left") else right
    elif name in PHOTOS or name in TEXTURES:
        image = getattr(skimage.data, name)()
    else:
        raise ValueError(f"unknown source {name!r}.")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image.setflags(write=False)
    return image


def is_texture(name: str) -> bool:
    return name in TEXTURES


def colour_samples(split: str, rng: np.random.Generator, n: int = 4096) -> np.ndarray:
    """(n, 3) uint8 pixel colours of a random photo of the split (dead-leaves disk colours)."""
    photos = [p for p in split_sources(split) if not is_texture(p)]
    image = load_source(photos[rng.integers(len(photos))]).reshape(-1, 3)
    return image[rng.integers(0, len(image), n)]
