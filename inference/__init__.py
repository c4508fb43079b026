"""Inference-only code of the user commands (evaluate.py, export.py, deblur.py).

Modules (import them directly; this package imports nothing at load time):

* :mod:`inference.flags`: the model-source flags, defined without importing TensorFlow, so that a
  command's ``--help`` and flag errors answer in about a second.
* :mod:`inference.model_io`: every model source (training run, checkpoint, Keras weights,
  ``.keras``, SavedModel) -> :class:`~inference.model_io.Restorer`, one image function of any size.
* :mod:`inference.tiling`: overlapping tiles blended with a raised-cosine window, for images too
  large to restore whole.

Nothing here trains; the only training module used is :mod:`training.tracking` (the checkpoint
layout the loop writes).
"""
