"""Config values of the GAN papers (GradientNet, RP-GAN) checked without flags: the VGG content
loss's ``vgg_weights`` setting -> a local file, and a JSON kwargs text (``critic_kwargs``,
``model_kwargs``) checked against a class's constructor.

Both raise :class:`config.ConfigError` with the one-line message the flag-reading versions
(:func:`cli.train_flags.vgg_weights_flag`, :func:`cli.train_flags.checked_kwargs`) give as
``app.UsageError``. Nothing here imports absl or, at module load, TensorFlow: the constructor
arguments are read from the model's source with ``ast``, so a bad key fails before TensorFlow is
imported.
"""

from __future__ import annotations

import ast
import json
import os

from config import ConfigError

RANDOM_VGG_ID = "random (seeded He-uniform, models.vgg.RANDOM_VGG_SEED)"
# Class key -> (module file in models/, class): where the constructor's arguments are. The same
# table as cli.train_flags.MODEL_CLASSES (tests/test_vgg_config.py checks it).
MODEL_CLASSES = {
    "mimo_unet": ("mimo_unet.py", "MIMOUNet"),
    "mimo_unet_plus": ("mimo_unet.py", "MIMOUNet"),
    "idc": ("idc.py", "IDC"),
    "two_way": ("two_way.py", "TwoWay"),
    "gradientnet": ("gradientnet.py", "GradientNetGAN"),
    "sen": ("sen.py", "SEN"),
    "rpgan_generator": ("rpgan.py", "RPGANGenerator"),
    "gradientnet_critic": ("gradientnet.py", "PatchGANCritic"),
    "rpgan_discriminator": ("rpgan.py", "RPGANDiscriminator"),
}
_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


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


def constructor_arguments(class_key: str) -> list[str]:
    """The named constructor arguments of ``MODEL_CLASSES[class_key]`` (``**kw`` excluded), read
    from its source without importing it."""
    filename, class_name = MODEL_CLASSES[class_key]
    with open(os.path.join(_MODELS_DIR, filename), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    names = [a.arg for a in item.args.args + item.args.kwonlyargs]
                    return [n for n in names if n != "self"]
    raise LookupError(f"models/{filename}: no {class_name}.__init__")


def parse_json_kwargs(text: str | None, flag: str) -> dict:
    """The JSON object ``text`` of ``--<flag>`` as a dict (empty for None or ""); raises
    ``ConfigError`` for text that is not JSON or not an object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--{flag} is not valid JSON ({error}): {text}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{flag} must be a JSON object, got {text}")
    return value


def check_json_kwargs(text: str | None, flag: str, class_key: str) -> dict:
    """``--<flag>``'s JSON ``text`` as a dict whose keys are all constructor arguments of
    ``MODEL_CLASSES[class_key]`` (e.g. ``critic_kwargs`` of a GAN's critic); raises
    ``ConfigError`` naming a bad key and the accepted ones."""
    kwargs = parse_json_kwargs(text, flag)
    accepted = constructor_arguments(class_key)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"--{flag}: {class_key} has no argument {key!r} (its arguments: "
                f"{', '.join(accepted)})."
            )
    return kwargs
