"""The contract of an export.py SavedModel and the two kinds of model, without TensorFlow.

An export holds two serving signatures, :data:`SIGNATURE_FLOAT` (float32 NHWC in [0, 1]) and
:data:`SIGNATURE_UINT8` (uint8 NHWC), each taking :data:`SIGNATURE_INPUT` and returning
:data:`SIGNATURE_OUTPUT`, plus a human-readable copy of its metadata in
``assets.extra/`` :data:`EXPORT_INFO`. A model is a restorer (image -> restored image: evaluate.py,
deblur.py) or a flow estimator (image -> motion flow: evaluate_flow.py, show_flow.py).
"""

from __future__ import annotations

EXPORT_INFO = "deblur_export.json"  # beside the SavedModel, in assets.extra/ (see export.py)
SIGNATURE_FLOAT = "serving_default"
SIGNATURE_UINT8 = "serving_uint8"
SIGNATURE_INPUT = "images"
SIGNATURE_OUTPUT = "restored"
SIGNATURE_FLOW_OUTPUT = "flow"  # the output of a flow estimator's signatures
TASK_RESTORER = "restorer"  # image -> restored image (evaluate.py, deblur.py)
TASK_FLOW = "flow_estimator"  # image -> motion flow (evaluate_flow.py, show_flow.py)
TASK_WORDS = {TASK_RESTORER: "a deblurring model", TASK_FLOW: "a flow estimator"}
TASK_COMMANDS = {
    TASK_RESTORER: "evaluate.py, deblur.py or export.py",
    TASK_FLOW: "evaluate_flow.py, show_flow.py or export.py",
}
