"""TensorBoard scalar and image summaries written with ``tf.summary.write``.

The records carry the plugin metadata TensorBoard's "scalars" and "images" dashboards read, so the
event files are those ``tf.summary.scalar`` / ``tf.summary.image`` write, without routing every call
through the ``tensorboard`` package's summary API (the viewer is in the requirements).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin_name):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name)
    )


def scalar(name, value, step=None):
    """A float32 scalar for the Scalars dashboard (same record as ``tf.summary.scalar``)."""
    tensor = tf.cast(tf.convert_to_tensor(value), tf.float32)
    return tf.summary.write(name, tensor, step=step, metadata=_metadata("scalars"))


def image(name, images, step=None, max_outputs=3):
    """Images for the Images dashboard (same record as ``tf.summary.image``).

    Args:
        images: (K, H, W, C) float in [0, 1] (clamped) or uint8, C in {1, 3, 4}.
    """
    images = tf.convert_to_tensor(images)[:max_outputs]
    images = tf.image.convert_image_dtype(images, tf.uint8, saturate=True)
    encoded = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
    shape = tf.shape(images)
    dimensions = tf.stack([tf.strings.as_string(shape[2]), tf.strings.as_string(shape[1])])
    tensor = tf.concat([dimensions, encoded], axis=0)
    return tf.summary.write(name, tensor, step=step, metadata=_metadata("images"))


def read_scalars(logdir):
    """``{tag: [(step, value), ...]}`` of every scalar in the event files under ``logdir``
    (for tests and scripts; no tensorboard package needed)."""
    from tensorflow.core.util import event_pb2

    out = {}
    for path in sorted(tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = float(tf.make_ndarray(value.tensor))
                    out.setdefault(value.tag, []).append((event.step, number))
    return out


def read_image_tags(logdir):
    """The set of image-summary tags in the event files under ``logdir``."""
    from tensorflow.core.util import event_pb2

    tags = set()
    for path in sorted(tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            for value in event_pb2.Event.FromString(record.numpy()).summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    tags.add(value.tag)
    return tags
