"""Model registry: an explicit mapping from a model name to its builder.

Every builder takes keyword overrides of the model's constructor arguments and returns an unbuilt
Keras model whose ``call`` maps an (N, H, W, 3) float32 image in [0, 1] to the list of restored
images ordered coarse to fine (the last one is full resolution). Each model declares
``size_multiple``, the side multiple its call needs; :func:`models.inference.restore` pads any
other size.
"""

from __future__ import annotations

from models import gradientnet, idc, mimo_unet, two_way

MODEL_BUILDERS = {
    "mimo_unet": mimo_unet.mimo_unet,
    "mimo_unet_plus": mimo_unet.mimo_unet_plus,
    "idc": idc.idc,
    "two_way": two_way.two_way,
    "gradientnet": gradientnet.gradientnet,
}


def build_model(name: str, **overrides):
    """Builds a registered model by name; raises ``ValueError`` naming the choices."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model {name!r}; registered models: {sorted(MODEL_BUILDERS)}.")
    return MODEL_BUILDERS[name](**overrides)


def model_names():
    return sorted(MODEL_BUILDERS)
