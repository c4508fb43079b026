"""Flags of the inference commands (model source, self-ensemble, XLA, the blind deblurring
framework's settings), defined once per process.

This module imports neither TensorFlow nor Keras: ``--help`` and flag errors must answer in about a
second. The names the help text lists are therefore stated here; ``tests/test_cli.py`` checks them
against the registry (:data:`models.MODEL_BUILDERS`; :data:`FLOW_MODEL_NAMES` the flow estimators of
``models.FLOW_ESTIMATOR_BUILDERS``), :data:`models.inference.ENSEMBLE_MODES` and
:data:`metrics.CONVENTIONS`.
"""

from __future__ import annotations

from absl import flags

from cli import define_once, define_precision_flag
from inference.source_config import FrameworkSettings, ModelSource

FLAGS = flags.FLAGS

MODEL_NAMES = ("gradientnet", "idc", "mimo_unet", "mimo_unet_plus", "two_way")
FLOW_MODEL_NAMES = ("sen",)  # flow estimators (evaluate_flow.py, show_flow.py, export.py)
ENSEMBLE_MODES = ("none", "rot4", "x8")
METRIC_CONVENTIONS = ("uint8", "float")
FRAMEWORK_FLOW_SOURCES = ("sen", "true")  # deconvolution.framework.FLOW_SOURCES
OUT_HELP = "Output: export.py the SavedModel folder to create; deblur.py the results folder."


def define_model_source_flags():
    """Defines the model-source flags, ``--self_ensemble`` and ``--precision`` (once per
    process)."""
    define_precision_flag()
    string = flags.DEFINE_string
    define_once(string, "checkpoint", None, "Training run dir, checkpoint dir or prefix.")
    define_once(string, "weights", None, "Keras FILE.weights.h5 (needs --model) or FILE.keras.")
    define_once(
        string,
        "model",
        None,
        f"Registered model name: {', '.join(MODEL_NAMES)}; flow estimator: "
        f"{', '.join(FLOW_MODEL_NAMES)}.",
    )
    define_once(string, "model_kwargs", None, 'Model kwargs as JSON, e.g. {"num_res": 8}.')
    define_once(string, "saved_model", None, "SavedModel directory written by export.py.")
    define_once(
        flags.DEFINE_enum,
        "self_ensemble",
        "none",
        "Geometric self-ensemble: none, rot4 (MIMO-UNet++: 4 rotations) or x8 (EDSR).",
        enum_values=list(ENSEMBLE_MODES),
    )


def define_framework_flags():
    """The blind deblurring framework's settings (evaluate.py, deblur.py, export.py), used with
    ``--checkpoint <an RP-GAN run>`` (:mod:`inference.framework_io`). Defaults are ``None`` so
    that a value given with any other source is refused in one line."""
    define_once(
        flags.DEFINE_integer,
        "levels",
        None,
        "Framework: HQS levels N (default: the RP-GAN run's, else 3).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_integer,
        "global_iterations",
        None,
        "Framework: global iterations, O <- Z_N each time (default 1; 3 = the paper's best rows).",
        lower_bound=1,
    )
    define_once(
        flags.DEFINE_string,
        "betas",
        None,
        "Framework: comma list of one beta per level (default: the run's, else 0.02*5^(n-1)).",
    )
    define_once(
        flags.DEFINE_enum,
        "flow_source",
        None,
        "Framework: motion flow from SEN (default) or the data set's true flow labels "
        "(evaluate.py only).",
        enum_values=list(FRAMEWORK_FLOW_SOURCES),
    )
    define_once(
        flags.DEFINE_string,
        "sen_checkpoint",
        None,
        "Framework: SEN run, checkpoint or .weights.h5 replacing the run's sen.weights.h5.",
    )


def define_jit_flag():
    """``--jit_compile`` of the commands that run the model many times (evaluate.py, deblur.py,
    evaluate_flow.py, show_flow.py)."""
    define_once(
        flags.DEFINE_bool,
        "jit_compile",
        False,
        "Compile the model with XLA (compiled once per image size; on the CPUs measured slower for "
        "every restorer, 1.6x faster for SEN: see benchmarks/inference.py).",
    )


def define_overwrite_flag():
    """``--overwrite``: the one rule of evaluate.py, export.py, deblur.py and convert_mimo_unet.py
    for existing results."""
    define_once(
        flags.DEFINE_bool,
        "overwrite",
        False,
        "Replace existing results; without it a command refuses before loading the model.",
    )


SOURCE_FLAGS = (
    *("checkpoint", "weights", "model", "model_kwargs", "saved_model"),
    *("self_ensemble", "precision"),
)
# No self-ensemble for flow estimators.
FLOW_SOURCE_FLAGS = tuple(name for name in SOURCE_FLAGS if name != "self_ensemble")
FRAMEWORK_FLAGS = FrameworkSettings.names()  # levels, global_iterations, betas, ...

define_model_source_flags()


def model_source():
    """The model-source flags as an :class:`inference.source_config.ModelSource` (read once, at
    a command's entry point); ``jit_compile`` False where the command has no such flag."""
    return ModelSource(
        checkpoint=FLAGS.checkpoint,
        weights=FLAGS.weights,
        model=FLAGS.model,
        model_kwargs=FLAGS.model_kwargs,
        saved_model=FLAGS.saved_model,
        self_ensemble=FLAGS.self_ensemble,
        jit_compile="jit_compile" in FLAGS and FLAGS.jit_compile,
        precision=FLAGS.precision,
    )


def framework_settings():
    """The framework flags given on the command line as
    :class:`inference.source_config.FrameworkSettings` (None = not given: a flag's declared
    default depends on which command defined it first in the process, e.g. experiments_rpgan.py's
    ``--levels`` 3)."""
    given = {name: FLAGS[name].value for name in FRAMEWORK_FLAGS if name in FLAGS}
    given = {name: value for name, value in given.items() if FLAGS[name].present}
    return FrameworkSettings(**given)
