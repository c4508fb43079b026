"""Evaluates a deblurring model on a data split: per-image and mean PSNR / SSIM, runtime.

    python evaluate.py --weights mimo_unet.weights.h5 --model mimo_unet --data_dir /data/GOPRO
    python evaluate.py --checkpoint runs/mimo_unet --out_dir results/mimo --self_ensemble rot4

Model sources: see :mod:`inference.model_io` (``--checkpoint``, ``--weights`` + ``--model``,
``--saved_model``). An RP-GAN run as ``--checkpoint`` is the blind deblurring framework (SEN + K +
CG + G, :mod:`inference.framework_io`) with ``--levels``, ``--global_iterations``, ``--betas``,
``--flow_source`` and ``--sen_checkpoint``; ``--flow_source true`` gives it each pair's true flow,
the label ``<sequence>/flow/<frame>.npy`` of a synthetic flow set (all labels are checked before the
model loads; a missing one is named).

Data: ``--data_dir`` (any layout the data layer reads, ``tfds:gopro``, or none = the embedded
synthetic set), ``--split`` (test), ``--blur_variant`` (``blur``; GoPro's ``blur_gamma`` is a
different, harder input). Images of any size are padded to the model's multiple and cropped back;
batch 1, full images.

Metrics (definitions in :mod:`metrics`): ``--metric_input uint8`` (default) clamps the output to
[0, 1], scales by 255 and rounds, the values a saved PNG holds; ``float`` is MIMO-UNet's official
convention (clamped float output, data range 1). PSNR and SSIM (11x11 Gaussian, sigma 1.5, mean over
R, G, B) per image, then the mean over images; identical images (PSNR +inf) are counted separately
and left out of the mean. Runtime: ``--warmup`` passes on the first image, then the wall time of the
forward pass alone per image (including the copy of its result to the host, which synchronises a
GPU); the median is reported.

Output: ``<out_dir>/per_image.csv`` (name, psnr, ssim, seconds) and ``<out_dir>/summary.json``,
both written atomically; without ``--out_dir`` the summary JSON is printed. ``--save_images DIR``
writes ``DIR/<name>.png`` (clamp, x255, round; atomically). The result line (means, baseline,
runtime) is printed on stdout; per-image lines are absl INFO logs on stderr.

Checked before the model is loaded and before the first image: ``--out_dir`` and ``--save_images``
must be (or be creatable as) writable folders; existing ``per_image.csv`` / ``summary.json`` in
``--out_dir`` or any ``<name>.png`` this run would write into ``--save_images`` are refused unless
``--overwrite``. A damaged image (e.g. a PNG with corrupt image data) stops the run with
``evaluate.py: error: <file>: <problem>`` and exit status 1. Without ``--data_dir`` the embedded
synthetic test split is scored, and the console says so.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import statistics
import sys
import time

import numpy as np
from absl import app, flags, logging

import cli
import fileio
from cli import inference_flags
from inference import outputs
from inference.source_config import FrameworkSettings, ModelSource

FLAGS = flags.FLAGS


def _define_flags():
    """Defines evaluate.py's flags; ``--data_dir``/``--blur_variant`` are shared with training
    (cli/train_flags.py), so every definition is skipped when the name already exists."""
    define = cli.define_once
    define(
        flags.DEFINE_string,
        "data_dir",
        None,
        "Data folder (any reader layout), 'tfds:gopro', or none for the embedded synthetic set.",
    )
    define(flags.DEFINE_string, "split", "test", "Data split to evaluate.")
    define(
        flags.DEFINE_enum,
        "blur_variant",
        "blur",
        "GoPro input variant.",
        enum_values=["blur", "blur_gamma"],
    )
    define(
        flags.DEFINE_enum,
        "metric_input",
        "uint8",
        "uint8 (PNG values) or float (official).",
        enum_values=list(inference_flags.METRIC_CONVENTIONS),
    )
    define(flags.DEFINE_string, "out_dir", None, "Folder for per_image.csv and summary.json.")
    define(flags.DEFINE_string, "save_images", None, "Folder for the restored <name>.png images.")
    define(flags.DEFINE_integer, "warmup", 2, "Untimed passes on the first image.", lower_bound=0)
    define(
        flags.DEFINE_integer, "limit", 0, "Evaluate the first N images (0 = all).", lower_bound=0
    )
    inference_flags.define_jit_flag()
    inference_flags.define_overwrite_flag()
    inference_flags.define_framework_flags()


_define_flags()
KEY_FLAGS = ["data_dir", "split", "blur_variant", "metric_input", "out_dir", "save_images"]
KEY_FLAGS += ["warmup", "limit", "overwrite", "jit_compile"]
cli.declare_key_flags([*KEY_FLAGS, *inference_flags.SOURCE_FLAGS, *inference_flags.FRAMEWORK_FLAGS])
RESULT_FILES = ("per_image.csv", "summary.json")


class EvaluationError(RuntimeError):
    """Bad data or output location; the message names it."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def open_source(data_dir, split, blur_variant):
    """Opens a split through the data layer: (source, description dict); lists the images but
    decodes none. Errors raise :class:`EvaluationError`."""
    try:
        import data
    except ImportError as error:
        raise EvaluationError(f"The data layer (data/) is not importable: {error}") from error
    try:
        source = data.open_split(data_dir, split, blur_variant=blur_variant)
    except data.DataError as error:
        raise EvaluationError(str(error)) from error
    info = {
        "data_dir": data_dir or "embedded synthetic set",
        "split": split,
        "blur_variant": blur_variant,
        "source": repr(source),
    }
    return source, info


def image_names(source, limit=0):
    """The names of the pairs to evaluate (``None`` when the source cannot list them, TFDS)."""
    pairs = getattr(source, "pairs", None)
    if pairs is None:
        return None
    names = [pair.name for pair in pairs]
    return names[:limit] if limit else names


def iterate_pairs(source, split="test"):
    """(name, blur (1, H, W, 3) float32 [0, 1], sharp (H, W, 3) float32 [0, 1]) in order.

    A file the data layer cannot decode raises :class:`EvaluationError` with the data layer's
    message (``<file>: <problem>``)."""
    import tensorflow as tf

    import data
    from data import pipeline

    where = f"{getattr(source, 'name', source)} (split {split!r})"
    try:
        for element in pipeline.eval_dataset(source):
            name = element["name"].numpy()[0].decode("utf-8")
            yield name, element["blur"].numpy(), element["sharp"].numpy()[0]
    except data.DataError as error:
        raise EvaluationError(str(error)) from error
    except tf.errors.OpError as error:
        raise EvaluationError(op_error_text(error, where)) from error


def op_error_text(error, where) -> str:
    """One line for a TensorFlow error raised while reading the data set: the data layer's
    ``DataError`` message when the error wraps one (raised inside a tf.data function), else the
    first line of TensorFlow's message after ``where``."""
    message = error.message.strip()
    marker = "DataError: "
    if marker in message:
        return message.rsplit(marker, 1)[1].strip().splitlines()[0]
    return f"{where}: {(message.splitlines() or [type(error).__name__])[0]}"


def flow_labels(source, limit=0) -> dict:
    """{pair name: path of its ``uv_half`` flow label} of every pair to evaluate, for the
    framework with ``--flow_source true`` (``<sequence>/flow/<frame>.npy``, as the synthetic
    ``flow`` sets hold); a missing label raises :class:`EvaluationError` naming the file."""
    import data

    pairs = getattr(source, "pairs", None)
    if pairs is None:
        raise EvaluationError(
            f"--flow_source true: {source!r} cannot list its files, so it has no flow labels; "
            "use a folder data set with <sequence>/flow/<frame>.npy labels."
        )
    try:
        return {pair.name: data.flow_label_path(pair) for pair in pairs[: limit or None]}
    except data.DataError as error:
        raise EvaluationError(f"--flow_source true: {error}") from error


def read_label(path, blur):
    """The (H, W, 2) float32 flow label at ``path`` for the (1, H, W, 3) ``blur``."""
    from data import readers

    try:
        return readers.read_flow_label(path, tuple(np.shape(blur)[1:3]))
    except ValueError as error:  # DataError: wrong size, dtype, non-finite values
        raise EvaluationError(str(error)) from error


def open_pairs(data_dir, split, blur_variant):
    """Opens a split: (description dict, iterator of :func:`iterate_pairs`)."""
    source, info = open_source(data_dir, split, blur_variant)
    return info, iterate_pairs(source, split)


# --------------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------------


def timed(restorer, blur):
    """(output (H, W, 3) float32, seconds of the forward pass incl. the copy to the host)."""
    start = time.perf_counter()
    output = np.asarray(restorer(blur))
    return output[0], time.perf_counter() - start


def evaluate(restorer, pairs, convention="uint8", warmup=2, save_dir=None, limit=0, labels=None):
    """Runs ``restorer`` over ``pairs``; returns the per-image rows (name, psnr, ssim, seconds).

    ``labels`` ({name: flow label path}, :func:`flow_labels`) gives each image's true flow to a
    restorer that needs it (the framework with ``--flow_source true``; the label is read outside
    the timed forward). Only the rows are kept, so memory stays flat over any number of images.
    """
    import metrics

    rows = []
    for index, (name, blur, sharp) in enumerate(itertools.islice(pairs, limit or None)):
        forward = restorer
        if labels is not None:
            flow = read_label(labels[name], blur)

            def forward(image, flow=flow):
                return restorer(image, true_flow=flow)

        for _ in range(warmup if index == 0 else 0):
            forward(blur)
        output, seconds = timed(forward, blur)
        try:
            values = metrics.image_metrics(output, sharp, convention=convention)
            # The blurred input scored the same way: the baseline a model has to beat.
            baseline = metrics.image_metrics(np.asarray(blur)[0], sharp, convention=convention)
        except ValueError as error:  # e.g. smaller than the SSIM window, size mismatch
            raise EvaluationError(f"{name}: {error}") from error
        rows.append(
            {
                "name": name,
                **values,
                "input_psnr": baseline["psnr"],
                "input_ssim": baseline["ssim"],
                "seconds": seconds,
            }
        )
        if save_dir:
            save_png(save_dir, name, output)
        logging.info(
            "%5d %s PSNR %.4f SSIM %.4f %.3fs", index, name, values["psnr"], values["ssim"], seconds
        )
    return rows


def image_path(folder, name):
    """``folder/<name>`` with a ``.png`` extension; ``..``/``.``/empty parts of ``name`` become
    ``_`` so that no name writes outside ``folder``."""
    parts = [p if p not in ("", ".", "..") else "_" for p in name.replace("\\", "/").split("/")]
    return os.path.splitext(os.path.join(folder, *parts))[0] + ".png"


def save_png(folder, name, output):
    """Writes clamp(output, 0, 1) * 255 rounded as ``folder/<name>.png`` (RGB), atomically."""
    import cv2

    import metrics

    ok, encoded = cv2.imencode(".png", metrics.to_uint8(output)[..., ::-1])
    if not ok:
        raise EvaluationError(f"Could not encode {name} as PNG.")
    fileio.atomic_write_bytes(image_path(folder, name), encoded.tobytes())


def summarize(rows, restorer, data_info, convention):
    """The JSON summary: sources, n, means (finite PSNRs only), definitions, runtime, device."""
    psnrs = [r["psnr"] for r in rows]
    finite = [r for r in rows if math.isfinite(r["psnr"])]
    summary = {
        "model_source": restorer.source,
        "data": data_info,
        "num_images": len(rows),
        "psnr_mean": _mean([r["psnr"] for r in finite]),
        "ssim_mean": _mean([r["ssim"] for r in rows]),
        "num_identical": len(psnrs) - len(finite),
        "input_psnr_mean": _mean([r["input_psnr"] for r in rows if math.isfinite(r["input_psnr"])]),
        "input_ssim_mean": _mean([r["input_ssim"] for r in rows]),
        "input_note": "the blurred input itself scored with the same definitions (baseline)",
        "metric_input": convention,
        "definitions": definitions(convention),
        "self_ensemble": restorer.source.get("self_ensemble", "none"),
        "precision": restorer.source.get("precision", "float32"),
        "runtime_median_seconds": statistics.median([r["seconds"] for r in rows]) if rows else None,
        "runtime_note": "forward pass only (batch 1, after warm-up), incl. copy to host",
        "device": device_description(),
    }
    if summary["num_identical"]:
        summary["note"] = (
            f"{summary['num_identical']} image(s) identical to the ground truth (PSNR +inf) are "
            "left out of psnr_mean (SSIM mean includes them)."
        )
    return summary


def device_description():
    from inference import sources

    return sources.device_description()


def _mean(values):
    return float(np.mean(values)) if values else None


def definitions(convention):
    """The metric definitions, as strings for the summary (see :mod:`metrics`)."""
    import metrics

    if convention == "uint8":
        prep = "output clamped to [0,1], x255, rounded to uint8 vs uint8 ground truth; R=255"
    else:
        prep = "output clamped to [0,1] as float vs ground truth/255 (MIMO-UNet official); R=1"
    return {
        "input": prep + "; full image, RGB, no border crop, no Y channel",
        "psnr": "10*log10(R^2/MSE), MSE over HxWx3; mean of per-image values (+inf excluded)",
        "ssim": (
            f"Wang et al. 2004, {metrics.SSIM_WINDOW}x{metrics.SSIM_WINDOW} Gaussian window, "
            f"sigma {metrics.SSIM_SIGMA}, K1={metrics.SSIM_K1}, K2={metrics.SSIM_K2}, valid "
            "positions, per channel then mean over RGB (= tf.image.ssim; skimage with "
            "gaussian_weights=True, use_sample_covariance=False); not MATLAB's 3-D ssim"
        ),
    }


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def per_image_csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim", "input_psnr", "input_ssim", "seconds"])
    for row in rows:
        writer.writerow(
            [
                row["name"],
                f"{row['psnr']:.4f}",
                f"{row['ssim']:.6f}",
                f"{row['input_psnr']:.4f}",
                f"{row['input_ssim']:.6f}",
                f"{row['seconds']:.4f}",
            ]
        )
    return buffer.getvalue()


def write_results(out_dir, rows, summary):
    """Writes per_image.csv and summary.json atomically into ``out_dir``."""
    fileio.write_results(out_dir, per_image_csv(rows), summary)


def result_line(summary) -> str:
    """One line: number of images, mean PSNR / SSIM, the blurred input's, runtime, device."""

    def fmt(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    precision = summary.get("precision", "float32")
    networks = "" if precision == "float32" else f", {precision} networks"
    return (
        f"{summary['num_images']} images: PSNR {fmt(summary['psnr_mean'])} dB, SSIM "
        f"{fmt(summary['ssim_mean'])} (blurred input: {fmt(summary['input_psnr_mean'])} dB, "
        f"{fmt(summary['input_ssim_mean'])}) ({summary['metric_input']}{networks}), median "
        f"{summary['runtime_median_seconds'] or 0.0:.4f} s/image on {summary['device']}"
    )


def check_outputs(out_dir, save_images):
    """The output folders can be written (before anything is loaded); raises OutputError."""
    if out_dir:
        outputs.check_folder(out_dir, "--out_dir")
    if save_images:
        outputs.check_folder(save_images, "--save_images")


def refuse_existing_results(out_dir, save_images, names, overwrite):
    """Existing results of this run are refused unless ``overwrite`` (before the model loads).

    ``names`` are the images this run would save (``None``: unknown, then any PNG in
    ``save_images`` counts)."""
    if out_dir:
        paths = [os.path.join(out_dir, name) for name in RESULT_FILES]
        outputs.refuse_existing(paths, "--out_dir", overwrite, out_dir)
    if save_images and os.path.isdir(save_images):
        if names is None:
            paths = [os.path.join(save_images, n) for n in sorted(os.listdir(save_images))]
            paths = [p for p in paths if p.endswith(".png")]
        else:
            paths = [image_path(save_images, name) for name in names]
        outputs.refuse_existing(paths, "--save_images", overwrite, save_images)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluate.py run, read from the flags once (:func:`config_from_flags`): the data, the
    metric convention, outputs, and the model (:class:`~inference.source_config.ModelSource`,
    :class:`~inference.source_config.FrameworkSettings`)."""

    source: ModelSource
    framework: FrameworkSettings = FrameworkSettings()
    data_dir: str | None = None
    split: str = "test"
    blur_variant: str = "blur"
    metric_input: str = "uint8"
    out_dir: str | None = None
    save_images: str | None = None
    warmup: int = 2
    limit: int = 0
    overwrite: bool = False


def config_from_flags() -> EvaluateConfig:
    """evaluate.py's flags as one :class:`EvaluateConfig`."""
    return EvaluateConfig(
        source=inference_flags.model_source(),
        framework=inference_flags.framework_settings(),
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        blur_variant=FLAGS.blur_variant,
        metric_input=FLAGS.metric_input,
        out_dir=FLAGS.out_dir,
        save_images=FLAGS.save_images,
        warmup=FLAGS.warmup,
        limit=FLAGS.limit,
        overwrite=FLAGS.overwrite,
    )


def prepare(config: EvaluateConfig):
    """Every check that needs no model: output folders, data split, existing results.

    Returns (source, data description). Prints which data is scored when no --data_dir is given.
    """
    check_outputs(config.out_dir, config.save_images)
    cli.import_tensorflow()
    source, data_info = open_source(config.data_dir, config.split, config.blur_variant)
    if not config.data_dir:
        print(
            f"No --data_dir: scoring the embedded synthetic set, split {config.split!r} "
            f"({source!r}); its numbers say nothing about GoPro.",
            flush=True,
        )
    names = image_names(source, config.limit)
    refuse_existing_results(config.out_dir, config.save_images, names, config.overwrite)
    if config.framework.flow_source == "true":
        flow_labels(source, config.limit)  # every label exists, before the model loads
    return source, data_info


def run(config: EvaluateConfig, restorer, source=None, data_info=None):
    """Evaluates ``restorer`` as ``config`` says; returns the summary dict."""
    if source is None:
        source, data_info = open_source(config.data_dir, config.split, config.blur_variant)
    labels = (
        flow_labels(source, config.limit) if getattr(restorer, "needs_true_flow", False) else None
    )
    if labels is not None:
        data_info = dict(data_info, flow="true flow labels (<sequence>/flow/<frame>.npy)")
    pairs = iterate_pairs(source, config.split)
    rows = evaluate(
        restorer,
        pairs,
        config.metric_input,
        config.warmup,
        config.save_images,
        config.limit,
        labels,
    )
    if not rows:
        raise EvaluationError(f"No images in {data_info['data_dir']} (split {config.split!r}).")
    summary = summarize(rows, restorer, data_info, config.metric_input)
    if config.out_dir:
        write_results(config.out_dir, rows, summary)
    else:
        print(json.dumps(summary, indent=2))
    print(result_line(summary), flush=True)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    try:
        source, data_info = prepare(config)
        from inference import model_io

        restorer = model_io.restorer_from_source(config.source, config.framework)
        run(config, restorer, source, data_info)
    except (EvaluationError, OSError, ValueError) as error:  # + DataError, ModelSourceError
        sys.exit(f"evaluate.py: error: {error}")


if __name__ == "__main__":
    cli.run(main)
