"""Which model a user command runs: one :class:`inference.sources.Restorer` from exactly one
source (evaluate.py, deblur.py, export.py).

A ``--checkpoint`` whose ``run_config.json`` names a registered prior (``models.PRIOR_BUILDERS``:
an RP-GAN run) is the blind deblurring framework (:mod:`inference.framework_io`, with its settings
``levels``, ``global_iterations``, ``betas``, ``flow_source``, ``sen_checkpoint``); every other
source is a Keras model or an export.py SavedModel (:mod:`inference.sources`, whose docstring
lists them). This module is the only one that knows both.
"""

from __future__ import annotations

import os

import rundir
from inference import framework_io, signatures, sources


def load_restorer(
    checkpoint=None,
    weights=None,
    model=None,
    model_kwargs=None,
    saved_model=None,
    self_ensemble="none",
    jit_compile=False,
    **framework_args,
) -> sources.Restorer:
    """The :class:`Restorer` of exactly one model source (see the module docstring); with
    ``jit_compile`` its forward is XLA-compiled (:func:`image_function`).

    A ``checkpoint`` whose ``run_config.json`` names a registered prior (``models.PRIOR_BUILDERS``:
    an RP-GAN run) gives the blind deblurring framework (:mod:`inference.framework_io`);
    ``framework_args`` (``levels``, ``global_iterations``, ``betas``, ``flow_source``,
    ``sen_checkpoint``; ``None`` = not given) apply to it only and are refused with any other
    source in one line.
    """
    sources.check_one_source(checkpoint, weights, saved_model)
    if checkpoint and not model and framework_io.framework_run_config(checkpoint) is not None:
        return framework_io.load_framework_restorer(
            checkpoint, self_ensemble, jit_compile, **framework_args
        )
    if saved_model:
        framework_io.refuse_framework_flags(
            framework_args,
            "the settings of a SavedModel are fixed at export; pass them to export.py, or "
            "evaluate the RP-GAN run with --checkpoint.",
        )
        return sources.saved_model_restorer(saved_model, self_ensemble, jit_compile)
    framework_io.refuse_framework_flags(
        framework_args,
        "only for the blind deblurring framework (--checkpoint <an RP-GAN run>).",
    )
    refuse_prior(model, weights)
    keras_model, source = sources.load_keras_model(
        checkpoint, weights, model, model_kwargs, signatures.TASK_RESTORER
    )
    return sources.keras_restorer(keras_model, self_ensemble, source, jit_compile)


def refuse_prior(model, weights):
    """``--model rpgan_generator`` or a prior run's ``final.weights.h5`` as ``--weights``: G alone
    restores nothing; point at the run instead (one line)."""
    config = None
    if weights and os.path.isfile(weights):
        beside = rundir.run_config_path(os.path.dirname(os.path.abspath(weights)))
        config = sources.read_run_config(beside) if os.path.isfile(beside) else None
    name = model or (config or {}).get("model")
    if framework_io.is_prior(name):
        where = f"--model {model}" if model else f"--weights {weights}"
        raise sources.ModelSourceError(
            f"{where}: {name!r} is the prior of the blind deblurring framework, not a restorer on "
            "its own; pass its RP-GAN run directory as --checkpoint."
        )


def restorer_from_source(source, framework=None) -> sources.Restorer:
    """:func:`load_restorer` of an :class:`inference.source_config.ModelSource` and, for an RP-GAN
    run, its :class:`~inference.source_config.FrameworkSettings` (None: none given). The networks
    are built under ``source.precision`` (:func:`sources.precision_scope_of`); the restorer's
    ``source`` records it."""
    settings = framework.given() if framework is not None else {}
    return sources.built_in_precision(
        source,
        lambda: load_restorer(
            checkpoint=source.checkpoint,
            weights=source.weights,
            model=source.model,
            model_kwargs=source.model_kwargs,
            saved_model=source.saved_model,
            self_ensemble=source.self_ensemble,
            jit_compile=source.jit_compile,
            **settings,
        ),
    )
