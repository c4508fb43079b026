"""Flow estimators (SEN) from every model source, as one function of an image of any size.

Sources (exactly one), as for the restorers (:mod:`inference.model_io`):

* ``--checkpoint RUN``: a ``train_sen.py`` run folder (``run_config.json`` names ``"sen"``), a
  checkpoint folder such as ``RUN/best`` or a prefix;
* ``--weights FILE.weights.h5 --model sen [--model_kwargs JSON]`` (or a run's ``final.weights.h5``,
  whose ``run_config.json`` supplies the rest);
* ``--saved_model DIR``: a flow-estimator export of ``export.py``.

A restorer given where a flow estimator is needed (a MIMO-UNet run, ``--model mimo_unet``, a
restorer export) is refused in one line naming the path and what it holds, and the restorer
commands refuse a flow estimator the same way (:func:`inference.sources.check_task`).

Every source gives a :class:`FlowEstimator`: a callable from a (1, H, W, 3) float32 image in [0, 1],
any H x W, to the (1, H, W, 2) float32 motion flow in pixels, ``uv_half`` (u right, v down, u >= 0;
``../shared/specs/sen_rpgan.md`` §2). Keras models are padded to their ``size_multiple`` (64 for
SEN) by edge replication at the bottom/right, run, and cropped back, inside one ``tf.function``
with dynamic H and W (one trace for a data set of mixed sizes); SavedModels pad inside their
signature.
The source description carries the training data's ``u_max`` when the run recorded it.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from inference import signatures, sources
from models import inference as model_inference

FLOW_CHANNELS = 2


@dataclasses.dataclass
class FlowEstimator(sources.Restorer):
    """A loaded flow estimator as one function of NHWC float32 images (a :class:`Restorer` whose
    output is a flow).

    Attributes:
        fn: (1, H, W, 3) float32 tensor in [0, 1] -> (1, H, W, 2) float32 flow (pixels, uv_half).
        source: JSON-able description (kind, path, model, model_kwargs, task, u_max if known).
        model: the Keras model, or ``None`` for a SavedModel.
    """


def estimate_flow(model, images, training=False):
    """The flow of a batch of any size: pad to the model's multiple, run, crop back.

    Args:
        model: a flow estimator (SEN: ``call`` returns the last stack's (N, H', W', 2) flow; a list
            is reduced to its last element).
        images: (N, H, W, 3) float32 in [0, 1].
    Returns:
        (N, H, W, 2) flow in pixels, ``uv_half``. SEN pads to 64 inside its own call too; the
        outer padding makes that a no-op and lets any model with a ``size_multiple`` be used.
    """
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = model_inference.pad_to_multiple(images, model_inference.size_multiple(model))
    flow = model_inference.final_output(model(padded, training=training))
    return model_inference.crop_to(flow, height, width)


def keras_flow_estimator(model, source=None, jit_compile=False) -> FlowEstimator:
    """Wraps a built Keras flow estimator: one trace for every H x W (batch 1)."""
    function = sources.image_function(lambda images: estimate_flow(model, images), jit_compile)
    source = dict(source or {}, task=signatures.TASK_FLOW, jit_compile=jit_compile)
    return FlowEstimator(function, source, model)


def saved_model_flow_estimator(path, jit_compile=False) -> FlowEstimator:
    """Loads a flow-estimator export of export.py (padding is inside its signature)."""
    loaded, info = sources.load_saved_model(path, signatures.TASK_FLOW)
    signature = loaded.signatures[signatures.SIGNATURE_FLOAT]

    def forward(images):
        return signature(**{signatures.SIGNATURE_INPUT: images})[signatures.SIGNATURE_FLOW_OUTPUT]

    function = sources.image_function(forward, jit_compile)
    function.loaded = loaded  # keeps the SavedModel's variables alive with the function
    source = dict(info, kind="saved_model", path=os.path.abspath(path), jit_compile=jit_compile)
    return FlowEstimator(function, source, None)


def load_flow_estimator(
    checkpoint=None,
    weights=None,
    model=None,
    model_kwargs=None,
    saved_model=None,
    jit_compile=False,
) -> FlowEstimator:
    """The :class:`FlowEstimator` of exactly one model source (see the module docstring)."""
    sources.check_one_source(
        checkpoint, weights, saved_model, what="flow-estimator source", model_flag="--model sen"
    )
    if saved_model:
        return saved_model_flow_estimator(saved_model, jit_compile)
    keras_model, source = sources.load_keras_model(
        checkpoint, weights, model, model_kwargs, signatures.TASK_FLOW
    )
    return keras_flow_estimator(keras_model, source, jit_compile)


def flow_estimator_from_source(source) -> FlowEstimator:
    """:func:`load_flow_estimator` of an :class:`inference.source_config.ModelSource`.

    A self-ensemble does not apply (rotating an image rotates its flow vectors and breaks the
    ``uv_half`` sign convention) and is refused when set.
    """
    if source.self_ensemble != "none":
        raise sources.ModelSourceError(
            f"--self_ensemble {source.self_ensemble}: not available for flow estimators."
        )
    return sources.built_in_precision(
        source,
        lambda: load_flow_estimator(
            checkpoint=source.checkpoint,
            weights=source.weights,
            model=source.model,
            model_kwargs=source.model_kwargs,
            saved_model=source.saved_model,
            jit_compile=source.jit_compile,
        ),
    )
