"""The model sources of the user commands (evaluate.py, export.py, deblur.py, evaluate_flow.py,
show_flow.py): Keras models from run directories, checkpoints and weight files, export.py's
SavedModels, and the :class:`Restorer` every source becomes. :mod:`inference.model_io` chooses
among them (and the blind deblurring framework, :mod:`inference.framework_io`); this module
depends on neither.

Sources (exactly one):

* ``--checkpoint PATH``: a training run directory (``<run>/run_config.json`` names the model and
  its kwargs; the latest checkpoint of ``<run>/checkpoints/`` is used, or ``<run>/final.weights.h5``
  when that folder holds none), a checkpoint folder such as ``<run>/best/`` (its latest
  checkpoint), or a checkpoint prefix such as ``<run>/checkpoints/ckpt-12``. The
  ``tf.train.Checkpoint`` holds the Keras model under the attribute ``model``; everything else in
  it (optimizer, step) is ignored.
  ``run_config.json`` is looked up beside the path and up to two folders above it; ``--model`` /
  ``--model_kwargs`` stand in when there is none.
* ``--weights FILE.weights.h5`` with ``--model NAME`` (and ``--model_kwargs`` JSON): Keras weights,
  including official MIMO-UNet weights converted by ``convert_mimo_unet.py``. Without
  ``--model_kwargs``, a ``run_config.json`` beside the file (a training run's
  ``final.weights.h5``) supplies the model and its kwargs.
  ``--weights FILE.keras`` loads a whole saved Keras model (no ``--model`` needed).
* ``--saved_model DIR``: a SavedModel written by ``export.py``.
* ``--checkpoint <RP-GAN run>`` (its ``run_config.json`` names a prior of
  ``models.PRIOR_BUILDERS``): the blind deblurring framework, SEN + K + CG + G, with the framework
  flags ``--levels``, ``--global_iterations``, ``--betas``, ``--flow_source``, ``--sen_checkpoint``
  (:mod:`inference.framework_io`); those flags are refused with any other source.

Two kinds of model share these sources (:data:`TASK_RESTORER`, the registry
:data:`models.MODEL_BUILDERS`, and :data:`TASK_FLOW`, ``models.FLOW_ESTIMATOR_BUILDERS``: SEN);
the loaders of one kind refuse the other in one line naming the path and what it holds
(:func:`check_task`); flow estimators are wrapped by :mod:`inference.flow_io`.

Every restorer source gives a :class:`Restorer`: a callable from a (1, H, W, 3) float32 image in
[0, 1], any H x W, to the (1, H, W, 3) float32 full-resolution output, **not clamped**. Keras models
run through :func:`models.inference.restore` (pad to the model's multiple by edge replication, run,
crop back, optional geometric self-ensemble) inside one ``tf.function`` whose input signature has
dynamic H and W, so a test set of mixed sizes is traced once and memory stays flat. SavedModels run
their serving signature (padding is inside it); the self-ensemble is applied around it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import models
import rundir
from inference.signatures import (
    SIGNATURE_FLOAT,
    SIGNATURE_INPUT,
    SIGNATURE_OUTPUT,
    TASK_COMMANDS,
    TASK_FLOW,
    TASK_RESTORER,
    TASK_WORDS,
)
from models import inference as model_inference
from training.tracking import track_layer_lists


class ModelSourceError(ValueError):
    """A model source that cannot be used; the message names the path and the problem."""


# --------------------------------------------------------------------------------------------------
# Kinds of model: restorers and flow estimators
# --------------------------------------------------------------------------------------------------


def flow_estimator_names() -> list[str]:
    """Registered flow estimators (``models.FLOW_ESTIMATOR_BUILDERS``; empty before SEN exists)."""
    return sorted(getattr(models, "FLOW_ESTIMATOR_BUILDERS", {}))


def model_task(name) -> str | None:
    """:data:`TASK_FLOW`, :data:`TASK_RESTORER` or ``None`` for an unregistered name."""
    if name in flow_estimator_names():
        return TASK_FLOW
    if name in models.model_names():
        return TASK_RESTORER
    return None


def registered_names(task=None) -> list[str]:
    """The registered names of ``task`` (both kinds when ``None``)."""
    restorers, flows = models.model_names(), flow_estimator_names()
    return {TASK_RESTORER: restorers, TASK_FLOW: flows}.get(task, restorers + flows)


def check_task(actual, wanted, where, model=None, verb="holds"):
    """Refuses a source holding the other kind of model, in one line naming ``where`` (a path or
    flag) and what it holds, e.g. ``--checkpoint runs/sen: holds a flow estimator (model 'sen'),
    not a deblurring model; use it with evaluate_flow.py, show_flow.py or export.py.``
    ``wanted`` ``None`` accepts both; an unknown ``actual`` passes."""
    if wanted is None or actual is None or actual == wanted:
        return
    named = f" (model {model!r})" if model else ""
    raise ModelSourceError(
        f"{where}: {verb} {TASK_WORDS[actual]}{named}, not {TASK_WORDS[wanted]}; use it with "
        f"{TASK_COMMANDS[actual]}."
    )


def keras_model_task(model) -> str | None:
    """The task of a loaded Keras model from its output channels (2: flow, 3: image); ``None``
    when its output cannot be traced symbolically."""
    side = max(int(getattr(model, "size_multiple", 1)), 8)
    try:
        spec = model.compute_output_spec(keras.KerasTensor((1, side, side, 3)))
    except Exception:  # a model that cannot trace symbolically: no verdict, no refusal
        return None
    spec = model_inference.final_output(spec)
    channels = getattr(spec, "shape", (None,))[-1]
    return {2: TASK_FLOW, 3: TASK_RESTORER}.get(channels)


# --------------------------------------------------------------------------------------------------
# The restorer
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Restorer:
    """A loaded model as one function of NHWC float32 images.

    Attributes:
        fn: (1, H, W, 3) float32 tensor in [0, 1] -> (1, H, W, 3) float32, unclamped; with
            ``needs_true_flow``, ``fn(image, true_flow)``.
        source: JSON-able description (kind, path, model, model_kwargs, self_ensemble).
        model: the Keras model, or ``None`` for a SavedModel or the framework.
        needs_true_flow: the blind deblurring framework with ``--flow_source true``
            (:mod:`inference.framework_io`): every call needs the image's true motion flow,
            (1, H, W, 2) float32 in pixels (a data set's ``uv_half`` label).
    """

    fn: Callable
    source: dict
    model: keras.Model | None = None
    needs_true_flow: bool = False

    def __call__(self, image, true_flow=None):
        image = tf.convert_to_tensor(image, tf.float32)
        if not self.needs_true_flow:
            return self.fn(image)
        if true_flow is None:
            raise ModelSourceError(
                "--flow_source true: this restorer needs each image's true flow (a data set with "
                "flow labels, <sequence>/flow/<frame>.npy)."
            )
        flow = tf.convert_to_tensor(true_flow, tf.float32)
        return self.fn(image, flow[None] if flow.shape.rank == 3 else flow)


def image_function(fn, jit_compile=False):
    """``fn`` as one ``tf.function`` of a (1, H, W, 3) float32 batch, traced once for every H x W.

    With ``jit_compile`` XLA compiles it once per distinct image size. It is off by default: on the
    CPUs measured it is slower than the plain graph (``benchmarks/inference.py``: MIMO-UNet at
    720x1280 reached 34 % of the fp32 matmul peak with XLA, 62 % without); it may pay elsewhere
    (a GPU), checked there with ``benchmarks/inference.py --xla both``.
    """
    return tf.function(
        fn,
        input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
        reduce_retracing=True,
        autograph=False,  # no tensor-dependent Python control flow; halves the tracing time
        jit_compile=jit_compile,
    )


def keras_restorer(model, self_ensemble="none", source=None, jit_compile=False) -> Restorer:
    """Wraps a built Keras model: one trace for every H x W (batch 1), optionally XLA-compiled."""
    check_ensemble_mode(self_ensemble)

    def forward(images):
        return model_inference.restore(model, images, self_ensemble)

    source = dict(source or {}, self_ensemble=self_ensemble, jit_compile=jit_compile)
    return Restorer(image_function(forward, jit_compile), source, model)


def check_framework_options(self_ensemble="none", jit_compile=False, where="--checkpoint"):
    """The blind deblurring framework refuses a self-ensemble (a rotated image has a rotated flow,
    and a given true flow would need rotating too) and XLA (K's sparse matrix is not
    XLA-compilable); ``where`` names the source in the one-line error."""
    if self_ensemble not in (None, "none"):
        raise ModelSourceError(
            f"--self_ensemble {self_ensemble}: not available for the blind deblurring framework "
            f"({where})."
        )
    if jit_compile:
        raise ModelSourceError(
            f"--jit_compile: not available for the blind deblurring framework ({where}: its blur "
            "operator is a sparse matrix, which XLA cannot compile)."
        )


def precision_scope_of(source):
    """The :func:`precision.precision_scope` to build the networks of ``source`` (an
    :class:`inference.source_config.ModelSource`) in. A SavedModel computes in the precision it
    was exported with: another ``--precision`` than float32 is refused with it (one line)."""
    import precision

    if source.saved_model and source.precision != "float32":
        raise ModelSourceError(
            f"--precision {source.precision}: a SavedModel computes in the precision it was "
            "exported with (export.py --precision); give --checkpoint or --weights instead."
        )
    return precision.precision_scope(source.precision)


def built_in_precision(source, load):
    """``load()`` (a :class:`Restorer` or flow estimator) run in :func:`precision_scope_of`
    ``source``; the result's ``source`` records the precision (an export's own if it has one)."""
    with precision_scope_of(source):
        loaded = load()
    loaded.source.setdefault("precision", source.precision)
    return loaded


def check_ensemble_mode(mode):
    if mode not in model_inference.ENSEMBLE_MODES:
        raise ModelSourceError(
            f"--self_ensemble {mode!r}: expected one of {model_inference.ENSEMBLE_MODES}."
        )


def saved_model_restorer(path, self_ensemble="none", jit_compile=False) -> Restorer:
    """Loads an export.py SavedModel; the self-ensemble (if any) runs around its signature.
    A framework export (``kind`` ``framework``) refuses a self-ensemble and XLA like its
    checkpoint (:func:`check_framework_options`)."""
    check_ensemble_mode(self_ensemble)
    loaded, info = load_saved_model(path, TASK_RESTORER)
    if info.get("kind") == "framework":
        check_framework_options(self_ensemble, jit_compile, f"--saved_model {path}")
    baked = info.get("self_ensemble", "none")
    if baked != "none" and self_ensemble != "none":
        raise ModelSourceError(
            f"{path}: the export already applies the {baked!r} self-ensemble; "
            f"do not add --self_ensemble {self_ensemble}."
        )
    signature = loaded.signatures[SIGNATURE_FLOAT]
    multiple = int(info.get("size_multiple", 1))

    def serve(images):
        return signature(**{SIGNATURE_INPUT: images})[SIGNATURE_OUTPUT]

    def forward(images):
        # Pad once before the ensemble, as models.inference.restore does, so that the result
        # equals the Keras model's; the signature then finds nothing left to pad.
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        padded = model_inference.pad_to_multiple(images, multiple)
        return model_inference.crop_to(
            model_inference.ensemble(serve, padded, self_ensemble), height, width
        )

    function = image_function(forward, jit_compile)
    function.loaded = loaded  # keeps the SavedModel's variables alive with the function
    source = dict(info, kind="saved_model", path=os.path.abspath(path), jit_compile=jit_compile)
    source["exported"] = info.get("kind")
    source["self_ensemble"] = baked if baked != "none" else self_ensemble
    return Restorer(function, source, None)


def load_saved_model(path, task=None):
    """(loaded SavedModel, its export metadata) of an export.py folder; refuses an export of the
    other kind of model (:func:`check_task`; exports without a ``task`` are restorers)."""
    loaded = _load_saved_model(path)
    info = _saved_model_info(loaded)
    actual = info.get("task", TASK_RESTORER)
    check_task(actual, task, f"--saved_model {path}", info.get("model"))
    return loaded, info


def _load_saved_model(path):
    if not os.path.isdir(path):
        raise ModelSourceError(f"--saved_model {path}: no such directory.")
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ModelSourceError(
            f"--saved_model {path}: not a SavedModel directory (no saved_model.pb). "
            "Pass the directory written by export.py --out."
        )
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # TF raises many types for a damaged SavedModel
        raise ModelSourceError(
            f"--saved_model {path}: cannot be loaded ({first_lines(error)})."
        ) from error
    if SIGNATURE_FLOAT not in loaded.signatures:
        raise ModelSourceError(
            f"--saved_model {path}: no {SIGNATURE_FLOAT!r} signature; "
            f"found {sorted(loaded.signatures)}. Was it written by export.py?"
        )
    return loaded


def _saved_model_info(loaded) -> dict:
    """The model name/kwargs/self-ensemble export.py stored in the SavedModel ({} if absent)."""
    variable = getattr(loaded, "metadata_json", None)
    if variable is None:
        return {}
    try:
        return json.loads(variable.numpy().decode())
    except (ValueError, AttributeError):
        return {}


# --------------------------------------------------------------------------------------------------
# Keras models from checkpoints and weight files
# --------------------------------------------------------------------------------------------------


def build(name, model_kwargs=None):
    """Builds a registered model (restorer or flow estimator) with all its weights (dynamic H,
    W); clear error otherwise."""
    kwargs = model_kwargs or {}
    try:
        if model_task(name) == TASK_FLOW:
            model = models.build_flow_estimator(name, **kwargs)
        else:
            model = models.build_model(name, **kwargs)
    except (ValueError, TypeError) as error:
        raise ModelSourceError(
            f"Cannot build model {name!r} with {model_kwargs}: {first_lines(error)}"
        ) from error
    model.build((None, None, None, 3))
    return model


def parse_model_kwargs(text) -> dict:
    """``--model_kwargs`` JSON -> dict (``None``/empty -> {})."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ModelSourceError(f"--model_kwargs is not valid JSON ({error}): {text!r}") from error
    if not isinstance(value, dict):
        raise ModelSourceError(f"--model_kwargs must be a JSON object, got {text!r}.")
    return value


def load_weights_file(path, name=None, model_kwargs=None, task=None):
    """A Keras model from ``.weights.h5`` or ``.keras``: (model, info).

    For ``.weights.h5`` the architecture comes from ``--model`` / ``--model_kwargs``; when
    ``model_kwargs`` is ``None`` (not given) and a training run's ``run_config.json`` lies beside
    the file (``<run>/final.weights.h5``), its model and kwargs are used, so a run's weights load
    with the run's architecture. A ``--model`` that disagrees with that file is an error, and so
    is a file of the other ``task`` (:func:`check_task`).
    """
    if not os.path.isfile(path):
        raise ModelSourceError(f"--weights {path}: no such file.")
    if path.endswith(".keras"):
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as error:  # Keras raises many types for a damaged archive
            raise ModelSourceError(
                f"--weights {path}: not a loadable .keras file ({first_lines(error)})."
            ) from error
        if task is not None:
            check_task(keras_model_task(model), task, f"--weights {path}", model.name)
        return model, {"kind": "keras", "path": os.path.abspath(path), "model": model.name}
    info = {"kind": "weights", "path": os.path.abspath(path)}
    config_path = rundir.run_config_path(os.path.dirname(os.path.abspath(path)))
    if model_kwargs is None and os.path.isfile(config_path):
        config = read_run_config(config_path)
        if name and name != config["model"]:
            raise ModelSourceError(
                f"--model {name} disagrees with {config_path} (model {config['model']!r}); drop "
                "--model, or give --model_kwargs to ignore that file."
            )
        check_task(model_task(config["model"]), task, f"--weights {path}", config["model"])
        name, model_kwargs = config["model"], config.get("model_kwargs") or {}
        info.update(run_config=config_path, **run_config_extras(config))
    if not name:
        raise ModelSourceError(
            f"--weights {path}: also pass --model (one of {registered_names(task)})."
        )
    model = build(name, model_kwargs)
    load_h5_weights(model, path)
    return model, dict(info, model=name, model_kwargs=model_kwargs or {})


def first_lines(error, limit=300) -> str:
    """The first two non-empty lines of an exception's message, at most ``limit`` characters
    (Keras appends kilobytes of object reprs after its summary)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2]) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_h5_weights(model, path):
    """``model.load_weights(path)`` with one-line errors naming the file."""
    try:
        model.load_weights(path)
    except Exception as error:  # h5py / Keras raise many types (missing layer, shape, format)
        raise ModelSourceError(
            f"{path}: these weights do not fit model {model.name!r} (wrong --model or "
            f"--model_kwargs?) or the file is not Keras weights: {first_lines(error)}"
        ) from error


def load_checkpoint(path, name=None, model_kwargs=None, task=None):
    """A Keras model from a run dir, checkpoint dir or prefix; returns (model, info). A run of
    the other ``task`` is refused before anything is built (:func:`check_task`)."""
    prefix, fallback_h5 = resolve_checkpoint(path)
    config = find_run_config(prefix or fallback_h5)
    if config is None and not name:
        raise ModelSourceError(
            f"--checkpoint {path}: no {rundir.RUN_CONFIG} found beside it; pass --model (and "
            "--model_kwargs) to name the architecture."
        )
    if not name:
        check_task(model_task(config["model"]), task, f"--checkpoint {path}", config["model"])
    name = name or config["model"]
    model_kwargs = model_kwargs if model_kwargs else (config or {}).get("model_kwargs", {})
    model = build(name, model_kwargs)
    if prefix is None:
        load_h5_weights(model, fallback_h5)
    else:
        restore_checkpoint(model, prefix)
    location = os.path.abspath(prefix or fallback_h5)
    return model, {
        "kind": "checkpoint",
        "path": location,
        "model": name,
        "model_kwargs": model_kwargs,
        **run_config_extras(config or {}),
    }


def run_config_extras(config) -> dict:
    """What a run's configuration adds to a source description: ``u_max`` of a flow estimator's
    training data (evaluate_flow.py picks the paper's reference number by it)."""
    return {"u_max": config["u_max"]} if config.get("u_max") is not None else {}


def resolve_checkpoint(path):
    """(checkpoint prefix, None) or (None, final.weights.h5) for a run dir, checkpoint folder or
    prefix (:func:`rundir.resolve_checkpoint`); errors name ``--checkpoint``."""
    try:
        return rundir.resolve_checkpoint(path)
    except rundir.RunDirError as error:
        raise ModelSourceError(f"--checkpoint {error}") from None


def find_run_config(path):
    """The run configuration of the run ``path`` belongs to (:func:`rundir.find_run_config`),
    ``None`` if it has none."""
    try:
        return rundir.find_run_config(path)
    except rundir.RunDirError as error:
        raise ModelSourceError(str(error)) from None


def read_run_config(path):
    """:func:`rundir.read_run_config` with :class:`ModelSourceError`."""
    try:
        return rundir.read_run_config(path)
    except rundir.RunDirError as error:
        raise ModelSourceError(str(error)) from None


def restore_checkpoint(model, prefix):
    """Restores ``model`` from the ``model`` entry of a ``tf.train.Checkpoint``, strictly.

    ``expect_partial`` (needed to skip the optimizer) would silently leave weights missing from the
    checkpoint at their random init, so every float weight is first set to NaN and any weight still
    NaN afterwards is reported; a checkpoint with more model variables than the model is refused.
    """
    stored = checkpoint_model_variables(prefix)
    if len(stored) > len(model.variables):
        raise ModelSourceError(
            f"{prefix}: the checkpoint's 'model' holds {len(stored)} variables, model "
            f"{model.name!r} has {len(model.variables)}: wrong --model/--model_kwargs?"
        )
    track_layer_lists(model)  # the layout the training loop writes (training/tracking.py)
    weights = [v for v in model.weights if "float" in str(v.dtype)]
    for variable in weights:
        variable.assign(tf.fill(variable.shape, float("nan")))
    try:
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    except (ValueError, tf.errors.OpError) as error:  # shape mismatch, unreadable file
        raise ModelSourceError(
            f"{prefix}: does not fit model {model.name!r}: {first_lines(error)}"
        ) from error
    missing = [v.path for v in weights if np.isnan(v.numpy()).any()]
    if missing:
        raise ModelSourceError(
            f"{prefix}: {len(missing)} of the {len(weights)} weights of model {model.name!r} are "
            f"missing from the checkpoint (or NaN), e.g. {missing[:3]}. Wrong --model_kwargs, or a "
            "checkpoint that did not track every layer of the model."
        )


def checkpoint_model_variables(prefix):
    """Names of the variables stored under the checkpoint's ``model`` attribute."""
    try:
        names = [name for name, _ in tf.train.list_variables(prefix)]
    except (tf.errors.OpError, ValueError) as error:
        raise ModelSourceError(
            f"{prefix}: not a readable checkpoint ({first_lines(error)})."
        ) from error
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    return [
        n
        for n in names
        if n.startswith("model/") and n.endswith(suffix) and "OPTIMIZER_SLOT" not in n
    ]


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------


def load_keras_model(checkpoint=None, weights=None, model=None, model_kwargs=None, task=None):
    """(Keras model, source description) from a checkpoint or a weights file.

    ``task`` (:data:`TASK_RESTORER`, :data:`TASK_FLOW` or ``None`` = either, export.py) refuses a
    source of the other kind in one line. The description's ``task`` says which kind was loaded.
    """
    kwargs = parse_model_kwargs(model_kwargs) if isinstance(model_kwargs, str) else model_kwargs
    if model is not None and model_task(model) is None:
        raise ModelSourceError(
            f"--model {model!r} is not registered; choose from {registered_names(task)}."
        )
    if model is not None:
        check_task(model_task(model), task, f"--model {model}", verb="is")
    if checkpoint and weights:
        raise ModelSourceError("Give either --checkpoint or --weights, not both.")
    if not (checkpoint or weights):
        raise ModelSourceError(
            "Give a model source: --checkpoint, --weights (+ --model) or --saved_model."
        )
    if checkpoint:
        keras_model, info = load_checkpoint(checkpoint, model, kwargs, task)
    else:
        keras_model, info = load_weights_file(weights, model, kwargs, task)
    actual = model_task(info.get("model")) or keras_model_task(keras_model)
    return keras_model, dict(info, task=actual or task or TASK_RESTORER)


def check_one_source(checkpoint, weights, saved_model, what="model source", model_flag="--model"):
    """Raises :class:`ModelSourceError` unless exactly one of the three sources is given."""
    given = [
        name
        for name, value in (
            ("--checkpoint", checkpoint),
            ("--weights", weights),
            ("--saved_model", saved_model),
        )
        if value
    ]
    if len(given) != 1:
        raise ModelSourceError(
            f"Give exactly one {what}: --checkpoint, --weights (+ {model_flag}) or --saved_model"
            + (f"; got {' and '.join(given)}." if given else ".")
        )


# --------------------------------------------------------------------------------------------------
# Small shared helpers of the CLIs
# --------------------------------------------------------------------------------------------------


def device_description() -> str:
    """'GPU: <name>' when TensorFlow sees a GPU, else 'CPU (<n> logical cores)'; float32."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}, float32"
    return f"CPU ({os.cpu_count()} logical cores), float32"
