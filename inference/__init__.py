"""Inference-only code of the user commands (evaluate.py, export.py, deblur.py, evaluate_flow.py,
show_flow.py). Their flags are defined in :mod:`cli.inference_flags` (the command layer).

Modules (import them directly; this package imports nothing at load time):

* :mod:`inference.sources`: Keras models from runs, checkpoints and weight files, export.py's
  SavedModels -> :class:`~inference.sources.Restorer`, one image function of any size.
* :mod:`inference.signatures`: the SavedModel contract and the two kinds of model (no TensorFlow).
* :mod:`inference.framework_io`: the blind deblurring framework (SEN + K + CG + G) of an RP-GAN run.
* :mod:`inference.model_io`: which of them a command runs (exactly one source -> a Restorer).
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
