"""Inference-only code of the user commands (evaluate.py, export.py, deblur.py, evaluate_flow.py,
show_flow.py).

Modules (import them directly; this package imports nothing at load time):

* :mod:`inference.flags`: the model-source flags, defined without importing TensorFlow, so that a
  command's ``--help`` and flag errors answer in about a second.
* :mod:`inference.model_io`: every model source (training run, checkpoint, Keras weights,
  ``.keras``, SavedModel) -> :class:`~inference.sources.Restorer`, one image function of any size.
* :mod:`inference.tiling`: overlapping tiles blended with a raised-cosine window, for images too
  large to restore whole.
* :mod:`inference.flow_io`: every source of a motion-flow estimator (SEN) ->
  :class:`~inference.flow_io.FlowEstimator` (evaluate_flow.py, show_flow.py); a restorer source is
  refused where a flow estimator is needed, and the reverse (:func:`inference.sources.check_task`).
* :mod:`inference.flow_vis`: pictures of a flow (Middlebury colour code, kernel glyphs; no
  TensorFlow).

Nothing here trains; the only training module used is :mod:`training.tracking` (the checkpoint
layout the loop writes).
"""
