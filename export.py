"""Exports a deblurring model or a flow estimator (SEN) as a TensorFlow SavedModel that takes
images of any size.

    python export.py --weights mimo_unet.weights.h5 --model mimo_unet --out exports/mimo_unet
    python export.py --checkpoint runs/mimo_unet_plus --self_ensemble rot4 --out exports/mimo_pp
    python export.py --checkpoint runs/sen --out exports/sen

Signatures of a deblurring model (input name ``images``, output name ``restored``, batch and H x W
dynamic):

* ``serving_default``: float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, H, W, 3), unclamped.
* ``serving_uint8``: uint8 (N, H, W, 3) RGB -> uint8 (N, H, W, 3): the float output clamped to
  [0, 1], x255 and rounded (ties to even), as evaluate.py's uint8 metrics and saved PNGs use.

Signatures of a flow estimator (output name ``flow``):

* ``serving_default``: float32 (N, H, W, 3) RGB in [0, 1] -> float32 (N, H, W, 2) motion flow in
  pixels, ``uv_half`` (u right, v down, u >= 0; ``../shared/specs/sen_rpgan.md`` §2).
* ``serving_uint8``: uint8 (N, H, W, 3) RGB -> the same float32 flow (the image is divided by 255).

The blind deblurring framework (``--checkpoint <RP-GAN run>``, :mod:`inference.framework_io`) is
exported whole: SEN, the construction of K (a ``tf.SparseTensor``), CG (a ``tf.while_loop``) and
G, with ``--levels`` / ``--global_iterations`` / ``--betas`` baked in, under the restorer
signatures above (output already in [0, 1]; any N, H, W); the settings, G's and SEN's
descriptions are in the metadata (``kind`` ``framework``, ``framework``, ``sen``). Its
verification compares with the eager framework within 1e-3. ``--flow_source true`` cannot be
exported (a true flow is not an input of the signatures).

Padding to the model's size multiple (edge replication at the bottom/right; 64 for SEN) and the crop
back are inside the graph; an optional ``--self_ensemble`` is baked in (restorers only). The task
(``restorer`` or ``flow_estimator``), model name, kwargs, source (a SEN run's ``u_max`` too),
self-ensemble and size multiple are stored in the variable ``metadata_json`` and in
``assets.extra/deblur_export.json``; evaluate.py / deblur.py load restorer exports and refuse flow
exports in one line, evaluate_flow.py / show_flow.py the reverse.
The export is written to a temporary folder ``.<name>.tmp-<pid>-<random>`` beside ``--out``,
reloaded and compared with the Keras model on an odd-sized input, and only then renamed to
``--out``: no half-written export remains, and the next export beside it removes the temporary
folders of killed runs (:mod:`fileio`). Folders and files get the umask's modes. An existing
``--out`` and an unusable output location are refused before the model is loaded; the result line
(``Exported ...``) is printed on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
from absl import app, flags, logging

import cli
import fileio
from cli import inference_flags
from inference import outputs, signatures
from inference.source_config import FrameworkSettings, ModelSource

FLAGS = flags.FLAGS
cli.define_once(flags.DEFINE_string, "out", None, inference_flags.OUT_HELP)
inference_flags.define_overwrite_flag()
cli.define_once(flags.DEFINE_bool, "verify", True, "Reload the export and compare it.")
inference_flags.define_framework_flags()
cli.declare_key_flags(
    ["out", "overwrite", "verify", *inference_flags.SOURCE_FLAGS, *inference_flags.FRAMEWORK_FLAGS]
)

VERIFY_SHAPE = (1, 37, 53, 3)  # odd sides: exercises the padding and the crop
VERIFY_ATOL = 1e-4  # restorers: [0, 1] images; flows (pixels) get 1e-4 x max(1, largest |flow|)
# The framework: the export's K is a tf.SparseTensor, the eager reference's a CSR matrix; their
# float32 sums differ in order, and CG's tolerance test may then stop one iteration apart.
VERIFY_ATOL_FRAMEWORK = 1e-3


class ExportError(RuntimeError):
    """An export that cannot be written or does not match the Keras model."""


def build_module(model, self_ensemble="none", metadata=None):
    """(tf.Module to save, its signatures): the model's variables, metadata and two functions.

    The serving functions are closures, not attributes of the module, so that
    ``tf.saved_model.save`` stores only the two traced signatures and does not trace every Keras
    layer again (several seconds even for a tiny model). A ``metadata`` with ``task``
    ``flow_estimator`` gives the flow signatures (:func:`flow_signatures`).
    """
    import tensorflow as tf

    from models import inference

    module = tf.Module(name="deblur_export")
    module.model_variables = list(model.variables)
    info = dict(metadata or {}, self_ensemble=self_ensemble)
    module.metadata_json = tf.Variable(json.dumps(info), trainable=False, name="metadata_json")
    if info.get("task") == signatures.TASK_FLOW:
        return module, flow_signatures(model)

    def restore_float(images):
        """float32 NHWC [0, 1], any size -> {"restored": float32 NHWC full resolution}."""
        return {signatures.SIGNATURE_OUTPUT: inference.restore(model, images, self_ensemble)}

    float_fn = _traced(restore_float, tf.float32)

    def restore_uint8(images):
        """uint8 NHWC, any size -> {"restored": uint8 NHWC}: clamp, x255, round (ties to even)."""
        restored = float_fn(tf.cast(images, tf.float32) / 255.0)[signatures.SIGNATURE_OUTPUT]
        scaled = tf.round(tf.clip_by_value(restored, 0.0, 1.0) * 255.0)
        return {signatures.SIGNATURE_OUTPUT: tf.cast(scaled, tf.uint8)}

    return module, {
        signatures.SIGNATURE_FLOAT: float_fn,
        signatures.SIGNATURE_UINT8: _traced(restore_uint8, tf.uint8),
    }


def flow_signatures(model):
    """The two signatures of a flow estimator: float32 or uint8 images -> {"flow": float32
    (N, H, W, 2)} (pixels, uv_half), padded to the model's multiple and cropped back inside."""
    import tensorflow as tf

    from inference import flow_io

    def flow_float(images):
        """float32 NHWC [0, 1], any size -> {"flow": float32 (N, H, W, 2)}."""
        return {signatures.SIGNATURE_FLOW_OUTPUT: flow_io.estimate_flow(model, images)}

    float_fn = _traced(flow_float, tf.float32)

    def flow_uint8(images):
        """uint8 NHWC, any size -> {"flow": float32 (N, H, W, 2)} of images / 255."""
        return float_fn(tf.cast(images, tf.float32) / 255.0)

    return {
        signatures.SIGNATURE_FLOAT: float_fn,
        signatures.SIGNATURE_UINT8: _traced(flow_uint8, tf.uint8),
    }


def _traced(fn, dtype):
    """The concrete function of ``fn`` on (N, H, W, 3) ``dtype`` input named ``images``."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, None, None, 3], dtype, name=signatures.SIGNATURE_INPUT)
    # No autograph: the model code has no tensor-dependent Python control flow; traces 2x faster.
    return tf.function(fn, input_signature=[spec], autograph=False).get_concrete_function()


def check_out(out, overwrite=False):
    """``--out`` can be created (or replaced, with ``overwrite``); raises OutputError in words."""
    outputs.check_new_folder(out, "--out")
    outputs.refuse_existing([out], "--out", overwrite)


def export(model, out, self_ensemble="none", metadata=None, overwrite=False, verify=True):
    """Writes the SavedModel of a built Keras ``model`` to ``out`` (atomically); returns ``out``.

    The task (restorer or flow estimator) is ``metadata["task"]``, else the registry's for
    ``metadata["model"]``, else read from the model's output channels (:func:`task_of`).
    """

    from models import inference

    out = os.path.abspath(out)
    check_out(out, overwrite)
    task = task_of(model, metadata)
    check_ensemble_for(task, self_ensemble)
    metadata = dict(metadata or {}, task=task, size_multiple=inference.size_multiple(model))

    def check(temp):
        return verify_export(model, temp, self_ensemble, task=task)

    return _write(
        out, lambda: build_module(model, self_ensemble, metadata), check if verify else None
    )


def _write(out, make_module, verify=None):
    """Saves ``make_module()``'s (module, signatures) into a temporary folder beside ``out``,
    writes the info JSON, applies the umask's modes, runs ``verify(temp)`` and renames."""
    import tensorflow as tf

    temp = fileio.temporary_dir(out)  # also removes the temporaries of killed exports
    try:
        module, signatures = make_module()
        tf.saved_model.save(module, temp, signatures=signatures)
        write_info(temp, json.loads(module.metadata_json.numpy().decode()))
        apply_umask_modes(temp)
        if verify:
            verify(temp)
        fileio.replace_dir(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------------
# The blind deblurring framework (SEN + K + CG + G, inference/framework_io.py)
# --------------------------------------------------------------------------------------------------


def framework_module(fw, metadata):
    """(tf.Module, signatures) of the whole framework with its settings baked in: the restorer
    signatures (``serving_default`` float32, ``serving_uint8``), any N, H, W. The module tracks
    SEN's and G's variables; the traced graph holds K's construction (a ``tf.SparseTensor``) and
    CG's ``tf.while_loop``. The output is already in [0, 1]."""
    import tensorflow as tf

    module = tf.Module(name="deblur_export")
    module.model_variables = list(fw.variables)
    info = dict(metadata, self_ensemble="none")
    module.metadata_json = tf.Variable(json.dumps(info), trainable=False, name="metadata_json")

    def restore_float(images):
        """float32 NHWC [0, 1], any size -> {"restored": float32 NHWC in [0, 1]}."""
        return {signatures.SIGNATURE_OUTPUT: fw(images)}

    float_fn = _traced(restore_float, tf.float32)

    def restore_uint8(images):
        """uint8 NHWC, any size -> {"restored": uint8 NHWC}: x255, round (ties to even)."""
        restored = float_fn(tf.cast(images, tf.float32) / 255.0)[signatures.SIGNATURE_OUTPUT]
        scaled = tf.round(tf.clip_by_value(restored, 0.0, 1.0) * 255.0)
        return {signatures.SIGNATURE_OUTPUT: tf.cast(scaled, tf.uint8)}

    return module, {
        signatures.SIGNATURE_FLOAT: float_fn,
        signatures.SIGNATURE_UINT8: _traced(restore_uint8, tf.uint8),
    }


def export_framework(fw, out, source, overwrite=False, verify=True):
    """Writes the framework ``fw`` (settings in ``source["framework"]``) as one SavedModel; the
    true-flow variant cannot be exported (a user's image has no true flow)."""
    out = os.path.abspath(out)
    check_out(out, overwrite)
    if fw.flow_source == "true":
        raise ExportError(
            "--flow_source true: cannot be exported (a SavedModel's users have no true flow); "
            "export with --flow_source sen."
        )
    metadata = dict(source, task="restorer", self_ensemble="none")

    def check(temp):
        return verify_framework_export(fw, temp)

    return _write(out, lambda: framework_module(fw, metadata), check if verify else None)


def verify_framework_export(fw, path, shape=VERIFY_SHAPE, atol=VERIFY_ATOL_FRAMEWORK):
    """Reloads a framework export and checks both signatures against the eager framework on an
    odd size; returns the largest float difference, raises :class:`ExportError` on a mismatch."""
    import tensorflow as tf

    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    loaded = tf.saved_model.load(path)
    got = loaded.signatures[signatures.SIGNATURE_FLOAT](images=tf.constant(images))
    error = float(np.max(np.abs(got[signatures.SIGNATURE_OUTPUT].numpy() - fw(images).numpy())))
    if got[signatures.SIGNATURE_OUTPUT].shape != shape or error > atol:
        raise ExportError(f"Reloaded export differs from the framework by {error:.3g} > {atol}.")
    got8 = loaded.signatures[signatures.SIGNATURE_UINT8](images=tf.constant(as_uint8))
    expected8 = _to_uint8(fw(as_uint8 / np.float32(255)).numpy())
    diff8 = np.abs(got8[signatures.SIGNATURE_OUTPUT].numpy().astype(int) - expected8)
    if diff8.max() > 1:
        raise ExportError(f"Reloaded uint8 signature differs by {diff8.max()} levels.")
    logging.info("Verified the framework export on %s: max float difference %.3g.", shape, error)
    return error


def task_of(model, metadata=None) -> str:
    """``restorer`` or ``flow_estimator`` for ``model`` (see :func:`export`)."""
    from inference import sources

    metadata = metadata or {}
    return (
        metadata.get("task")
        or sources.model_task(metadata.get("model"))
        or sources.keras_model_task(model)
        or signatures.TASK_RESTORER
    )


def check_ensemble_for(task, self_ensemble):
    """A self-ensemble is for restorers only (rotating an image rotates its flow vectors)."""

    if task == signatures.TASK_FLOW and self_ensemble != "none":
        raise ExportError(f"--self_ensemble {self_ensemble}: not available for flow estimators.")


def write_info(folder, info):
    """A human-readable copy of the metadata in ``assets.extra/`` (ignored by TensorFlow)."""

    fileio.atomic_write_json(os.path.join(folder, "assets.extra", signatures.EXPORT_INFO), info)


def apply_umask_modes(folder):
    """Gives every folder and file under ``folder`` the umask's mode (TensorFlow's writers may
    create some with narrower modes)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), fileio.dir_mode())
        for name in files:
            os.chmod(os.path.join(root, name), fileio.file_mode())
    os.chmod(folder, fileio.dir_mode())


def verify_export(
    model, path, self_ensemble="none", shape=VERIFY_SHAPE, atol=VERIFY_ATOL, task=None
):
    """Reloads ``path`` and checks both signatures against the Keras model on an odd size.

    Returns the largest float difference; raises :class:`ExportError` on a mismatch.
    """
    import tensorflow as tf

    from models import inference

    if task == signatures.TASK_FLOW:
        return verify_flow_export(model, path, shape, atol)
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = np.asarray(inference.restore(model, images, self_ensemble))
    loaded = tf.saved_model.load(path)
    got = loaded.signatures[signatures.SIGNATURE_FLOAT](images=tf.constant(images))
    error = float(np.max(np.abs(got[signatures.SIGNATURE_OUTPUT].numpy() - expected)))
    if got[signatures.SIGNATURE_OUTPUT].shape != expected.shape or error > atol:
        raise ExportError(f"Reloaded export differs from the Keras model by {error:.3g} > {atol}.")
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    got8 = loaded.signatures[signatures.SIGNATURE_UINT8](images=tf.constant(as_uint8))
    expected8 = np.asarray(inference.restore(model, as_uint8 / np.float32(255), self_ensemble))
    diff8 = np.abs(got8[signatures.SIGNATURE_OUTPUT].numpy().astype(int) - _to_uint8(expected8))
    if diff8.max() > 1:  # a rounding tie may fall either way after float32 noise
        raise ExportError(f"Reloaded uint8 signature differs by {diff8.max()} levels.")
    logging.info("Verified the reloaded export on %s: max float difference %.3g.", shape, error)
    return error


def verify_flow_export(model, path, shape=VERIFY_SHAPE, atol=VERIFY_ATOL):
    """Both flow signatures of the reloaded export against the Keras model on an odd size; the
    tolerance is ``atol`` x max(1, largest |flow|) (flows are pixels, not [0, 1] values)."""
    import tensorflow as tf

    from inference import flow_io

    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    loaded = tf.saved_model.load(path)
    worst = 0.0
    for name, given, reference in (
        (signatures.SIGNATURE_FLOAT, images, images),
        (signatures.SIGNATURE_UINT8, as_uint8, as_uint8 / np.float32(255)),
    ):
        expected = np.asarray(flow_io.estimate_flow(model, tf.constant(reference)))
        got = loaded.signatures[name](images=tf.constant(given))[signatures.SIGNATURE_FLOW_OUTPUT]
        error = float(np.max(np.abs(got.numpy() - expected)))
        limit = atol * max(1.0, float(np.max(np.abs(expected))))
        if got.shape != expected.shape or error > limit:
            raise ExportError(
                f"Reloaded flow export ({name}) differs from the Keras model by {error:.3g} > "
                f"{limit:.3g}."
            )
        worst = max(worst, error)
    logging.info("Verified the reloaded flow export on %s: max difference %.3g px.", shape, worst)
    return worst


def _to_uint8(x):
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(int)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """One export.py run, read from the flags once (:func:`config_from_flags`)."""

    source: ModelSource
    framework: FrameworkSettings = FrameworkSettings()
    out: str | None = None
    overwrite: bool = False
    verify: bool = True


def config_from_flags() -> ExportConfig:
    """export.py's flags as one :class:`ExportConfig`."""
    return ExportConfig(
        source=inference_flags.model_source(),
        framework=inference_flags.framework_settings(),
        out=FLAGS.out,
        overwrite=FLAGS.overwrite,
        verify=FLAGS.verify,
    )


def check_config(config: ExportConfig) -> None:
    """Every check that needs no model (output folder, source kind, framework settings)."""
    if not config.out:
        raise ExportError("--out is required (the SavedModel directory to create).")
    if config.source.saved_model:
        raise ExportError("--saved_model is already an export; give --checkpoint or --weights.")
    check_out(config.out, config.overwrite)
    if config.framework.flow_source == "true":
        raise ExportError(
            "--flow_source true: cannot be exported (a SavedModel's users have no true "
            "flow); export with --flow_source sen."
        )


def run(config: ExportConfig):
    """Loads the model of ``config`` and exports it; returns (out, source description). The
    networks are built under ``--precision`` (the export computes in it behind the same float32 /
    uint8 signatures; its metadata records it)."""
    from inference import sources

    with sources.precision_scope_of(config.source):
        return _load_and_export(config)


def _load_and_export(config: ExportConfig):
    from inference import framework_io, model_io, sources

    source = config.source
    framework_run = source.checkpoint and not source.model
    if framework_run and framework_io.framework_run_config(source.checkpoint):
        return _export_framework(config)
    framework_io.refuse_framework_flags(
        config.framework.given(),
        "only for the blind deblurring framework (--checkpoint <an RP-GAN run>).",
    )
    model_io.refuse_prior(source.model, source.weights)
    model, info = sources.load_keras_model(
        source.checkpoint, source.weights, source.model, source.model_kwargs
    )
    info = dict(info, precision=source.precision)
    out = export(model, config.out, source.self_ensemble, info, config.overwrite, config.verify)
    return out, info


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    try:
        check_config(config)
        cli.import_tensorflow()
        out, source = run(config)
    except (ExportError, OSError, ValueError) as error:  # + OutputError, ModelSourceError
        sys.exit(f"export.py: error: {error}")
    print(f"Exported {describe(source)} to {out}.")


def _export_framework(config: ExportConfig):
    """(out, source) of export.py on an RP-GAN run (the framework settings apply)."""
    from inference import framework_io, sources

    checkpoint = config.source.checkpoint
    sources.check_framework_options(
        config.source.self_ensemble, False, f"--checkpoint {checkpoint}"
    )
    fw, source = framework_io.load_framework(checkpoint, **config.framework.given())
    source = dict(source, precision=config.source.precision)
    return export_framework(fw, config.out, source, config.overwrite, config.verify), source


def describe(source) -> str:
    """'mimo_unet (weights /path)', 'sen (flow estimator) (...)' or, for the framework,
    'the blind deblurring framework (SEN + K + CG + rpgan_generator, levels 3, ...) (...)'."""

    where = f"({source.get('kind')} {source.get('path')})"
    if source.get("kind") == "framework":
        settings = source["framework"]
        return (
            f"the blind deblurring framework (SEN + K + CG + {source.get('model')}, levels "
            f"{settings['levels']}, global iterations {settings['global_iterations']}, betas "
            f"{settings['betas']}) {where}"
        )
    what = " (flow estimator)" if source.get("task") == signatures.TASK_FLOW else ""
    return f"{source.get('model')}{what} {where}"


if __name__ == "__main__":
    cli.run(main)
