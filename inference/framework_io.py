"""The blind deblurring framework (SEN + K + CG + RP-GAN's G, ``sen_rpgan.md`` §10) as one model
source of evaluate.py, deblur.py and export.py.

Source: ``--checkpoint`` names a ``train_rpgan.py`` run (its ``run_config.json`` names a registered
prior, ``models.PRIOR_BUILDERS``: ``"rpgan_generator"``), one of its checkpoint folders
(``checkpoints/``, ``best/``) or a checkpoint prefix. The run-directory contract (notes/COMMON.md):

* G: the ``model`` entry of the ``tf.train.Checkpoint`` (restored strictly, as
  :func:`inference.sources.load_checkpoint` does), or ``<run>/final.weights.h5`` when the run has
  no checkpoint; built by ``models.build_prior(run_config["model"], **run_config["model_kwargs"])``.
* SEN: ``<run>/sen.weights.h5`` built from ``run_config["sen"]`` (model and kwargs), or
  ``--sen_checkpoint`` (a SEN run, checkpoint folder or prefix, or a ``.weights.h5`` file; loaded
  by the flow-estimator loader), which overrides it. With ``--flow_source true`` and one global
  iteration no SEN is needed and none is loaded.
* Settings (flags override the run's ``run_config["framework"]``): ``--levels`` (the run's, else
  3), ``--global_iterations`` (1), ``--betas`` (comma list; default the run's ladder when its
  length matches the levels, else 0.02·5^(n−1)), ``--flow_source sen|true`` (``sen``), CG
  tolerance and iteration cap from the run (1e-5, 100).

The restorer (:class:`inference.sources.Restorer` with ``needs_true_flow`` for
``--flow_source true``) maps a (1, H, W, 3) float32 image in [0, 1], any H x W, to the (1, H, W, 3)
restored Z_N in [0, 1]; SEN pads to 64 and G to 4 inside, so no outer padding is applied (its
``size_multiple`` is 1; ``tile_multiple`` 4 aligns deblur.py's tiles to G's grid, and
``min_tile_overlap`` (:data:`TILE_OVERLAP`, 96 px) is the least overlap of its ``--tile auto``
tiles: the framework is restored tile by tile like any model, its blur and deconvolution reaching
across the seams).

It runs inside **one** ``tf.function`` (dynamic H, W; traced once for a data set of mixed sizes; K
is then a ``tf.SparseTensor``), the graph export.py saves. Measured (2 shared CPU cores, 256x256,
tiny SEN and G of ``width_divisor`` 16, levels 3, best of 3 after warm-up): with SEN's flow
(~0.4 px: CG stops after 0-1 iterations) 0.51 s traced against 1.67 s eagerly (K as CSR); with a
true flow of 2-14 px (CG 37 / 18 / 9 iterations) 1.77 s against 8.0 s, of which eager CG alone
took 7.3 s: eagerly every CG iteration is a round of small Python-dispatched ops, which the graph
removes; Keras layers called eagerly cost 2-3x their graph time too.

Every problem is a :class:`inference.sources.ModelSourceError` of one line naming the path or flag.
"""

from __future__ import annotations

import os

import tensorflow as tf

import models
import rundir
from deconvolution import framework as framework_lib
from deconvolution import hqs
from inference import signatures, sources
from inference.source_config import FrameworkSettings

DEFAULT_LEVELS = 3
DEFAULT_CG_TOL = 1e-5
DEFAULT_CG_MAX_ITER = 100
FLOW_SOURCES = framework_lib.FLOW_SOURCES
TILE_MULTIPLE = 4  # G's size multiple: deblur.py's tile starts keep G's pixel grid
# deblur.py's smallest tile overlap for the framework with --tile auto (its tiles are small: SEN,
# K and CG take ~5 KB per pixel). A pixel near a seam is blurred by neighbours up to |u| <= 46 px
# away (flow-46) on either side; the tile's K clamps at the tile's edge and CG spreads that
# error further, so both sides of a seam get 46 px and the raised-cosine ramp spans 2 x 46,
# rounded up to 96. SEN's receptive field is larger still; its flows are smooth, so the flow near
# a tile's edge errs little. Larger overlaps: --tile N --tile_overlap M.
TILE_OVERLAP = 96
# The framework settings a command may give (flags of the same names; None = not given).
FRAMEWORK_FLAGS = FrameworkSettings.names()


def is_prior(name) -> bool:
    """Whether ``name`` is a registered HQS prior (a run of it is a framework source)."""
    return name in getattr(models, "PRIOR_BUILDERS", {})


def framework_run_config(checkpoint):
    """The run config of ``checkpoint`` when it is a framework (prior) run, else ``None``; no
    error for sources that are not checkpoints (the restorer loader reports those)."""
    try:
        prefix, fallback = sources.resolve_checkpoint(checkpoint)
        config = sources.find_run_config(prefix or fallback)
    except sources.ModelSourceError:
        return None
    return config if config is not None and is_prior(config.get("model")) else None


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def parse_betas(text):
    """``--betas`` "0.02,0.1,0.5" (or a list) -> tuple of positive floats; ``None`` passes."""
    if text is None or text == "":
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        betas = tuple(float(part) for part in parts)
    except (TypeError, ValueError) as error:
        raise sources.ModelSourceError(
            f"--betas {text!r}: expected a comma-separated list of numbers, e.g. 0.02,0.1,0.5."
        ) from error
    if not betas or any(not beta > 0 for beta in betas):
        raise sources.ModelSourceError(f"--betas {text!r}: every beta must be positive.")
    return betas


def settings(config, levels=None, global_iterations=None, betas=None, flow_source=None) -> dict:
    """The framework settings: flags (non-``None``) over the run's ``"framework"`` entry over the
    defaults. Raises a one-line :class:`ModelSourceError` naming the flag on a bad value."""
    run = config.get("framework") or {}
    levels = int(levels if levels is not None else run.get("levels", DEFAULT_LEVELS))
    iterations = int(global_iterations if global_iterations is not None else 1)
    if levels < 1:
        raise sources.ModelSourceError(f"--levels {levels}: must be at least 1.")
    if iterations < 1:
        raise sources.ModelSourceError(f"--global_iterations {iterations}: must be at least 1.")
    given = parse_betas(betas)
    if given is not None and len(given) != levels:
        raise sources.ModelSourceError(
            f"--betas {betas}: {len(given)} value(s) for --levels {levels}; give one per level."
        )
    run_betas = run.get("betas")
    if given is None and run_betas and len(run_betas) == levels:
        given = tuple(float(b) for b in run_betas)
    flow_source = flow_source or "sen"
    if flow_source not in FLOW_SOURCES:
        raise sources.ModelSourceError(
            f"--flow_source {flow_source}: expected one of {', '.join(FLOW_SOURCES)}."
        )
    return {
        "levels": levels,
        "global_iterations": iterations,
        "betas": list(given or hqs.beta_ladder(levels)),
        "flow_source": flow_source,
        "cg_tol": float(run.get("cg_tol", DEFAULT_CG_TOL)),
        "cg_max_iter": int(run.get("cg_max_iter", DEFAULT_CG_MAX_ITER)),
    }


def needs_sen(chosen) -> bool:
    """SEN is used unless the true flow serves the only global iteration."""
    return chosen["flow_source"] == "sen" or chosen["global_iterations"] > 1


# --------------------------------------------------------------------------------------------------
# The networks
# --------------------------------------------------------------------------------------------------


def load_generator(checkpoint, config):
    """(G restored from the run's checkpoint or final.weights.h5, its location)."""
    prefix, fallback = sources.resolve_checkpoint(checkpoint)
    name, kwargs = config["model"], config.get("model_kwargs") or {}
    try:
        generator = models.build_prior(name, **kwargs)
    except (ValueError, TypeError) as error:
        raise sources.ModelSourceError(
            f"--checkpoint {checkpoint}: cannot build prior {name!r} with {kwargs}: "
            f"{sources.first_lines(error)}"
        ) from error
    generator.build((None, None, None, 6))  # concat(I*, O)
    if prefix is None:
        sources.load_h5_weights(generator, fallback)
    else:
        sources.restore_checkpoint(generator, prefix)
    return generator, os.path.abspath(prefix or fallback)


def run_dir_of(checkpoint):
    """The run folder of ``checkpoint`` (where sen.weights.h5 lies), or None."""
    prefix, fallback = sources.resolve_checkpoint(checkpoint)
    return rundir.find_run(prefix or fallback)


def load_sen(checkpoint, config, sen_checkpoint=None, why=""):
    """(SEN Keras model, description): ``--sen_checkpoint`` if given, else the run's
    ``sen.weights.h5`` with ``config["sen"]``'s model and kwargs; ``why`` is added to the error
    when neither exists."""
    entry = config.get("sen") or {}
    if sen_checkpoint:
        return _load_given_sen(sen_checkpoint, entry)
    run_dir = run_dir_of(checkpoint)
    path = os.path.join(run_dir or "", entry.get("weights") or rundir.SEN_WEIGHTS)
    if run_dir is None or not os.path.isfile(path):
        raise sources.ModelSourceError(
            f"--checkpoint {checkpoint}: the run has no {rundir.SEN_WEIGHTS} (its frozen SEN, "
            f"{path}){why}; pass --sen_checkpoint <SEN run | checkpoint | weights file>."
        )
    name, kwargs = entry.get("model", "sen"), entry.get("model_kwargs") or {}
    sources.check_task(sources.model_task(name), signatures.TASK_FLOW, path, name)
    sen = sources.build(name, kwargs)
    sources.load_h5_weights(sen, path)
    info = {"model": name, "model_kwargs": kwargs, "path": path, "from": "run"}
    return sen, dict(info, **{k: entry[k] for k in ("source", "digest", "u_max") if k in entry})


def _load_given_sen(path, entry):
    """A SEN from ``--sen_checkpoint``: a run / checkpoint folder / prefix, or a weights file
    (architecture from a run_config.json beside it, else from the RP-GAN run's SEN entry)."""
    try:
        if os.path.isfile(path):
            beside = rundir.run_config_path(os.path.dirname(os.path.abspath(path)))
            name, kwargs = (None, None) if os.path.isfile(beside) else _entry_model(entry)
            model, info = sources.load_keras_model(
                weights=path, model=name, model_kwargs=kwargs, task=signatures.TASK_FLOW
            )
        else:
            model, info = sources.load_keras_model(checkpoint=path, task=signatures.TASK_FLOW)
    except sources.ModelSourceError as error:
        message = str(error)
        for flag in ("--checkpoint ", "--weights "):  # the loader names its own flag
            message = message.removeprefix(flag)
        if not message.startswith(path):
            message = f"{path}: {message}"
        raise sources.ModelSourceError(f"--sen_checkpoint {message}") from error
    return model, dict(info, path=info.get("path", os.path.abspath(path)), **{"from": "flag"})


def _entry_model(entry):
    return entry.get("model", "sen"), entry.get("model_kwargs") or {}


# --------------------------------------------------------------------------------------------------
# The framework and its restorer
# --------------------------------------------------------------------------------------------------


def load_framework(
    checkpoint,
    levels=None,
    global_iterations=None,
    betas=None,
    flow_source=None,
    sen_checkpoint=None,
):
    """(:class:`deconvolution.framework.BlindDeblurFramework`, JSON-able source description) of an
    RP-GAN run (module docstring). Settings are checked before anything is loaded."""
    config = framework_run_config(checkpoint)
    if config is None:
        sources.resolve_checkpoint(checkpoint)  # the precise error of a bad path
        raise sources.ModelSourceError(
            f"--checkpoint {checkpoint}: not a run of a framework prior "
            f"({', '.join(models.prior_names())})."
        )
    chosen = settings(config, levels, global_iterations, betas, flow_source)
    sen, sen_info = None, None
    if needs_sen(chosen) or sen_checkpoint:
        why = "" if chosen["flow_source"] == "sen" else ", needed by --global_iterations > 1"
        sen, sen_info = load_sen(checkpoint, config, sen_checkpoint, why)
    generator, location = load_generator(checkpoint, config)
    try:
        fw = framework_lib.BlindDeblurFramework(sen, generator, **chosen)
    except ValueError as error:  # the framework's own checks, should the ones above miss one
        raise sources.ModelSourceError(
            f"--checkpoint {checkpoint}: {sources.first_lines(error)}"
        ) from error
    source = {
        "kind": "framework",
        "path": location,
        "model": config["model"],
        "model_kwargs": config.get("model_kwargs") or {},
        "sen": sen_info,
        "framework": chosen,
        "size_multiple": 1,
        "tile_multiple": TILE_MULTIPLE,
        "min_tile_overlap": TILE_OVERLAP,
        "task": signatures.TASK_RESTORER,
    }
    return fw, source


def framework_restorer(fw, source, traced=True) -> sources.Restorer:
    """The framework as a :class:`Restorer` (``needs_true_flow`` with ``flow_source="true"``).

    ``traced`` (default, the faster path, module docstring): one ``tf.function`` of a
    (1, H, W, 3) image (and a (1, H, W, 2) flow) with dynamic H, W, K a ``tf.SparseTensor``, as
    export.py saves it; ``traced=False`` runs eagerly (K as CSR; for debugging and timings of
    the parts, :meth:`BlindDeblurFramework.intermediates`).
    """
    needs_flow = fw.flow_source == "true"

    def forward(images, true_flow=None):
        return fw(images, true_flow)

    fn = forward
    if traced:
        specs = [tf.TensorSpec([1, None, None, 3], tf.float32)]
        specs += [tf.TensorSpec([1, None, None, 2], tf.float32)] if needs_flow else []
        fn = tf.function(forward, input_signature=specs, autograph=False, reduce_retracing=True)
    source = dict(source, self_ensemble="none", jit_compile=False, traced=bool(traced))
    return sources.Restorer(fn, source, None, needs_true_flow=needs_flow)


def load_framework_restorer(checkpoint, self_ensemble="none", jit_compile=False, **framework_args):
    """:func:`load_framework` + :func:`framework_restorer` after the option checks."""
    sources.check_framework_options(self_ensemble, jit_compile, f"--checkpoint {checkpoint}")
    fw, source = load_framework(checkpoint, **framework_args)
    return framework_restorer(fw, source)


def refuse_framework_flags(given, why):
    """Framework flags given with a source that is not a framework checkpoint: one line."""
    named = [f"--{name}" for name in FRAMEWORK_FLAGS if given.get(name) is not None]
    if named:
        raise sources.ModelSourceError(f"{', '.join(named)}: {why}")
