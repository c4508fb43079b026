"""Model registries: explicit mappings from a model name to its builder.

``MODEL_BUILDERS`` holds the **restorers**. Every builder takes keyword overrides of the model's
constructor arguments and returns an unbuilt Keras model whose ``call`` maps an (N, H, W, 3)
float32 image in [0, 1] to the list of restored images ordered coarse to fine (the last one is full
resolution). Each model declares ``size_multiple``, the side multiple its call needs;
:func:`models.inference.restore` pads any other size.

``FLOW_ESTIMATOR_BUILDERS`` holds the **motion-flow estimators** (SEN of the blind deblurring
framework, :mod:`models.sen`), which are not restorers: their ``call`` maps an (N, H, W, 3) image in
[0, 1] of any size (they pad to their ``size_multiple`` inside and crop back) to one (N, H, W, 2)
float32 flow map in pixels (u right, v down, ``uv_half``). Build them with
:func:`build_flow_estimator`.

``PRIOR_BUILDERS`` holds the **learned priors of the HQS framework** (RP-GAN's generator G,
:mod:`models.rpgan`): their ``call`` maps concat(I*, O), an (N, H, W, 6) float32 input in [0, 1]
(the deconvolved image and the observed blurred image), to an (N, H, W, 3) linear image (padded to
their ``size_multiple`` inside, cropped back). They restore nothing alone:
:class:`deconvolution.framework.BlindDeblurFramework` composes one with a flow estimator and the CG
data step. Build them with :func:`build_prior`.
"""

from __future__ import annotations

from models import gradientnet, idc, mimo_unet, rpgan, sen, two_way

MODEL_BUILDERS = {
    "mimo_unet": mimo_unet.mimo_unet,
    "mimo_unet_plus": mimo_unet.mimo_unet_plus,
    "idc": idc.idc,
    "two_way": two_way.two_way,
    "gradientnet": gradientnet.gradientnet,
}

FLOW_ESTIMATOR_BUILDERS = {
    "sen": sen.sen,
}

PRIOR_BUILDERS = {
    "rpgan_generator": rpgan.rpgan_generator,
}


def build_model(name: str, **overrides):
    """Builds a registered model by name; raises ``ValueError`` naming the choices."""
    if name not in MODEL_BUILDERS:
        raise ValueError(f"Unknown model {name!r}; registered models: {sorted(MODEL_BUILDERS)}.")
    return MODEL_BUILDERS[name](**overrides)


def model_names():
    return sorted(MODEL_BUILDERS)


def build_flow_estimator(name: str, **overrides):
    """Builds a registered flow estimator by name; raises ``ValueError`` naming the choices."""
    if name not in FLOW_ESTIMATOR_BUILDERS:
        raise ValueError(
            f"Unknown flow estimator {name!r}; registered flow estimators: "
            f"{sorted(FLOW_ESTIMATOR_BUILDERS)}."
        )
    return FLOW_ESTIMATOR_BUILDERS[name](**overrides)


def flow_estimator_names():
    return sorted(FLOW_ESTIMATOR_BUILDERS)


def build_prior(name: str, **overrides):
    """Builds a registered HQS prior (RP-GAN's G) by name; raises ``ValueError`` naming the
    choices."""
    if name not in PRIOR_BUILDERS:
        raise ValueError(f"Unknown prior {name!r}; registered priors: {sorted(PRIOR_BUILDERS)}.")
    return PRIOR_BUILDERS[name](**overrides)


def prior_names():
    return sorted(PRIOR_BUILDERS)
