"""Exports a deblurring model as a TensorFlow SavedModel that takes images of any size.

    python export.py --weights mimo_unet.weights.h5 --model mimo_unet --out exports/mimo_unet
    python export.py --checkpoint runs/mimo_unet_plus --self_ensemble rot4 --out exports/mimo_pp

Signatures (input name ``images``, output name ``restored``, batch and H x W dynamic):

* ``serving_default``: float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, H, W, 3), unclamped.
* ``serving_uint8``: uint8 (N, H, W, 3) RGB -> uint8 (N, H, W, 3): the float output clamped to
  [0, 1], x255 and rounded (ties to even), as evaluate.py's uint8 metrics and saved PNGs use.

Padding to the model's size multiple (edge replication at the bottom/right) and the crop back are
inside the graph; an optional ``--self_ensemble`` is baked in. The model name, kwargs, source,
self-ensemble and size multiple are stored in the variable ``metadata_json`` and in
``assets.extra/deblur_export.json``.
The export is written to a temporary folder ``.<name>.tmp-<pid>-<random>`` beside ``--out``,
reloaded and compared with the Keras model on an odd-sized input, and only then renamed to
``--out``: no half-written export remains, and the next export beside it removes the temporary
folders of killed runs (:mod:`fileio`). Folders and files get the umask's modes. An existing
``--out`` and an unusable output location are refused before the model is loaded; the result line
(``Exported ...``) is printed on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
from absl import app, flags, logging

import cli
import fileio
from inference import flags as inference_flags
from inference import outputs

FLAGS = flags.FLAGS
cli.define_once(flags.DEFINE_string, "out", None, inference_flags.OUT_HELP)
inference_flags.define_overwrite_flag()
cli.define_once(flags.DEFINE_bool, "verify", True, "Reload the export and compare it.")
cli.declare_key_flags(["out", "overwrite", "verify", *inference_flags.SOURCE_FLAGS])

VERIFY_SHAPE = (1, 37, 53, 3)  # odd sides: exercises the padding and the crop
VERIFY_ATOL = 1e-4


class ExportError(RuntimeError):
    """An export that cannot be written or does not match the Keras model."""


def build_module(model, self_ensemble="none", metadata=None):
    """(tf.Module to save, its signatures): the model's variables, metadata and two functions.

    The serving functions are closures, not attributes of the module, so that
    ``tf.saved_model.save`` stores only the two traced signatures and does not trace every Keras
    layer again (several seconds even for a tiny model).
    """
    import tensorflow as tf

    from inference import model_io
    from models import inference

    module = tf.Module(name="deblur_export")
    module.model_variables = list(model.variables)
    info = dict(metadata or {}, self_ensemble=self_ensemble)
    module.metadata_json = tf.Variable(json.dumps(info), trainable=False, name="metadata_json")

    def restore_float(images):
        """float32 NHWC [0, 1], any size -> {"restored": float32 NHWC full resolution}."""
        return {model_io.SIGNATURE_OUTPUT: inference.restore(model, images, self_ensemble)}

    float_fn = _traced(restore_float, tf.float32)

    def restore_uint8(images):
        """uint8 NHWC, any size -> {"restored": uint8 NHWC}: clamp, x255, round (ties to even)."""
        restored = float_fn(tf.cast(images, tf.float32) / 255.0)[model_io.SIGNATURE_OUTPUT]
        scaled = tf.round(tf.clip_by_value(restored, 0.0, 1.0) * 255.0)
        return {model_io.SIGNATURE_OUTPUT: tf.cast(scaled, tf.uint8)}

    signatures = {
        model_io.SIGNATURE_FLOAT: float_fn,
        model_io.SIGNATURE_UINT8: _traced(restore_uint8, tf.uint8),
    }
    return module, signatures


def _traced(fn, dtype):
    """The concrete function of ``fn`` on (N, H, W, 3) ``dtype`` input named ``images``."""
    import tensorflow as tf

    from inference import model_io

    spec = tf.TensorSpec([None, None, None, 3], dtype, name=model_io.SIGNATURE_INPUT)
    # No autograph: the model code has no tensor-dependent Python control flow; traces 2x faster.
    return tf.function(fn, input_signature=[spec], autograph=False).get_concrete_function()


def check_out(out, overwrite=False):
    """``--out`` can be created (or replaced, with ``overwrite``); raises OutputError in words."""
    outputs.check_new_folder(out, "--out")
    outputs.refuse_existing([out], "--out", overwrite)


def export(model, out, self_ensemble="none", metadata=None, overwrite=False, verify=True):
    """Writes the SavedModel of a built Keras ``model`` to ``out`` (atomically); returns ``out``."""
    import tensorflow as tf

    from models import inference

    out = os.path.abspath(out)
    check_out(out, overwrite)
    temp = fileio.temporary_dir(out)  # also removes the temporaries of killed exports
    try:
        metadata = dict(metadata or {}, size_multiple=inference.size_multiple(model))
        module, signatures = build_module(model, self_ensemble, metadata)
        tf.saved_model.save(module, temp, signatures=signatures)
        write_info(temp, json.loads(module.metadata_json.numpy().decode()))
        apply_umask_modes(temp)
        if verify:
            verify_export(model, temp, self_ensemble)
        fileio.replace_dir(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


def write_info(folder, info):
    """A human-readable copy of the metadata in ``assets.extra/`` (ignored by TensorFlow)."""
    from inference import model_io

    fileio.atomic_write_json(os.path.join(folder, "assets.extra", model_io.EXPORT_INFO), info)


def apply_umask_modes(folder):
    """Gives every folder and file under ``folder`` the umask's mode (TensorFlow's writers may
    create some with narrower modes)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), fileio.dir_mode())
        for name in files:
            os.chmod(os.path.join(root, name), fileio.file_mode())
    os.chmod(folder, fileio.dir_mode())


def verify_export(model, path, self_ensemble="none", shape=VERIFY_SHAPE, atol=VERIFY_ATOL):
    """Reloads ``path`` and checks both signatures against the Keras model on an odd size.

    Returns the largest float difference; raises :class:`ExportError` on a mismatch.
    """
    import tensorflow as tf

    from inference import model_io
    from models import inference

    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = np.asarray(inference.restore(model, images, self_ensemble))
    loaded = tf.saved_model.load(path)
    got = loaded.signatures[model_io.SIGNATURE_FLOAT](images=tf.constant(images))
    error = float(np.max(np.abs(got[model_io.SIGNATURE_OUTPUT].numpy() - expected)))
    if got[model_io.SIGNATURE_OUTPUT].shape != expected.shape or error > atol:
        raise ExportError(f"Reloaded export differs from the Keras model by {error:.3g} > {atol}.")
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    got8 = loaded.signatures[model_io.SIGNATURE_UINT8](images=tf.constant(as_uint8))
    expected8 = np.asarray(inference.restore(model, as_uint8 / np.float32(255), self_ensemble))
    diff8 = np.abs(got8[model_io.SIGNATURE_OUTPUT].numpy().astype(int) - _to_uint8(expected8))
    if diff8.max() > 1:  # a rounding tie may fall either way after float32 noise
        raise ExportError(f"Reloaded uint8 signature differs by {diff8.max()} levels.")
    logging.info("Verified the reloaded export on %s: max float difference %.3g.", shape, error)
    return error


def _to_uint8(x):
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(int)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if not FLAGS.out:
            raise ExportError("--out is required (the SavedModel directory to create).")
        if FLAGS.saved_model:
            raise ExportError("--saved_model is already an export; give --checkpoint or --weights.")
        check_out(FLAGS.out, FLAGS.overwrite)
        cli.import_tensorflow()
        from inference import model_io

        model, source = model_io.load_keras_model(
            FLAGS.checkpoint, FLAGS.weights, FLAGS.model, FLAGS.model_kwargs
        )
        out = export(model, FLAGS.out, FLAGS.self_ensemble, source, FLAGS.overwrite, FLAGS.verify)
    except (ExportError, OSError, ValueError) as error:  # + OutputError, ModelSourceError
        sys.exit(f"export.py: error: {error}")
    print(f"Exported {source.get('model')} ({source.get('kind')} {source.get('path')}) to {out}.")


if __name__ == "__main__":
    cli.run(main)
