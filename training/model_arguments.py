"""Constructor arguments of the registered models and critics, read from their sources with ``ast``
(no TensorFlow, no Keras), so that a JSON kwargs setting (``--model_kwargs``, ``--critic_kwargs``)
is checked in about a second, before TensorFlow is imported. Errors are one-line
:class:`config.ConfigError` naming the flag.
"""

from __future__ import annotations

import ast
import json
import os

from config import ConfigError

# Class key -> (module file in models/, class): where the constructor's arguments are.
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
