"""Make every layer of a Keras 3 model visible to ``tf.train.Checkpoint``.

Keras 3 (3.15, TensorFlow backend) tracks layers held in Python lists (``self.encoders = [...]``)
for its own weight lists and ``save_weights``, but does not register them as ``tf.train.Checkpoint``
dependencies: a ``tf.train.Checkpoint(model=mimo_unet)`` stores only the variables of layers
assigned directly as attributes (MIMO-UNet: the FAM/SCM modules, 22 of 234 variables), and a
restore into such a model silently leaves the rest at their initial values.

:func:`track_layer_lists` adds the missing dependencies the way TensorFlow itself tracks a list
attribute of a ``tf.Module``: ``<attribute>/<index>/...`` (e.g.
``model/encoders/0/blocks/2/conv1/kernel``). Training applies it to every model before building its
checkpoint; a reader must apply it to the fresh model before ``restore`` (or the models must track
their lists natively with the same layout, after which this function finds nothing to add).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.trackable import data_structures

_Trackable = tf.__internal__.tracking.Trackable


def track_layer_lists(model):
    """Registers list/tuple attributes of trackables (layers, variables) of ``model`` and all its
    sublayers as checkpoint dependencies. Idempotent; returns the number of lists added."""
    added = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        existing = set(layer._trackable_children(save_type="checkpoint"))
        for name, value in sorted(vars(layer).items()):
            if name.startswith("_") or name in existing or not _is_trackable_list(value):
                continue
            layer._track_trackable(data_structures.ListWrapper(list(value)), name=name)
            added += 1
    return added


def untrack_model_variables(optimizer):
    """Drops the Keras optimizer's checkpoint dependency on the model variables it updates.

    A Keras 3 optimizer keeps ``_trainable_variables`` (the model's variables) as a tracked list, so
    a checkpoint with both ``model`` and ``optimizer`` names every model variable after its
    shortest path, ``optimizer/_trainable_variables/<i>``. Without that edge the variables are
    stored under ``model/...`` (what a model-only reader looks for); the optimizer's own state
    (iterations, moments) is unaffected. Call after ``optimizer.build``. Idempotent.
    """
    if "_trainable_variables" in optimizer._trackable_children(save_type="checkpoint"):
        optimizer._delete_tracking("_trainable_variables")


def _is_trackable_list(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(item, _Trackable) for item in value)
    )


def checkpointed_variable_count(prefix, attribute="model"):
    """Number of variables a checkpoint stores under ``attribute`` (not counting optimizer
    slots); equals ``len(model.weights)`` for a fully tracked model."""
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    return sum(
        1
        for name, _ in tf.train.list_variables(prefix)
        if name.startswith(attribute + "/")
        and name.endswith(suffix)
        and "OPTIMIZER_SLOT" not in name
    )
