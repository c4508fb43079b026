"""The GAN papers' (GradientNet, RP-GAN) ``vgg_weights`` setting -> a local VGG notop file, checked
without TensorFlow at module load; :class:`config.ConfigError` with one line naming the file, its
md5 and where to put it. Never downloads.
"""

from __future__ import annotations

from config import ConfigError

RANDOM_VGG_ID = "random (seeded He-uniform, models.vgg.RANDOM_VGG_SEED)"


def vgg_weights(value: str, architecture: str) -> tuple[str | None, str]:
    """``(path or None, identity for run_config.json)`` of a ``vgg_weights`` value ("imagenet",
    a PATH or "random") for Keras' ``architecture`` ("vgg16" / "vgg19") notop file; ``None`` =
    seeded random weights. Raises ``ConfigError`` (one line naming the file, its md5 and where to
    put it) when the file is missing or wrong; never downloads. Imports TensorFlow (models/)."""
    from models.vgg import VGGWeightsError, architecture_name
    from training.vgg_weights import file_md5, resolve_vgg_weights

    try:
        path = resolve_vgg_weights(value, architecture=architecture)
    except VGGWeightsError as error:
        raise ConfigError(str(error)) from None
    if path is None:
        return None, RANDOM_VGG_ID
    return path, f"{architecture_name(architecture)} notop, md5 {file_md5(path)}"
