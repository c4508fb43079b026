"""Flags of the inference commands (model source, self-ensemble, XLA), defined once per process.

This module imports neither TensorFlow nor Keras: ``--help`` and flag errors must answer in about a
second. The names the help text lists are therefore stated here; ``tests/test_cli.py`` checks them
against the registry (:data:`models.MODEL_BUILDERS`; :data:`FLOW_MODEL_NAMES` the flow estimators of
``models.FLOW_ESTIMATOR_BUILDERS``), :data:`models.inference.ENSEMBLE_MODES` and
:data:`metrics.CONVENTIONS`.
"""

from __future__ import annotations

from absl import flags

from cli import define_once

MODEL_NAMES = ("gradientnet", "idc", "mimo_unet", "mimo_unet_plus", "two_way")
FLOW_MODEL_NAMES = ("sen",)  # flow estimators (evaluate_flow.py, show_flow.py, export.py)
ENSEMBLE_MODES = ("none", "rot4", "x8")
METRIC_CONVENTIONS = ("uint8", "float")
OUT_HELP = "Output: export.py the SavedModel folder to create; deblur.py the results folder."


def define_model_source_flags():
    """Defines the model-source flags and ``--self_ensemble`` (once per process)."""
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


SOURCE_FLAGS = ("checkpoint", "weights", "model", "model_kwargs", "saved_model", "self_ensemble")
FLOW_SOURCE_FLAGS = SOURCE_FLAGS[:-1]  # no self-ensemble for flow estimators

define_model_source_flags()
