"""Evaluates a deblurring model on a data split: per-image and mean PSNR / SSIM, runtime.

    python evaluate.py --weights mimo_unet.weights.h5 --model mimo_unet --data_dir /data/GOPRO
    python evaluate.py --checkpoint runs/mimo_unet --out_dir results/mimo --self_ensemble rot4

Model sources: see :mod:`inference.model_io` (``--checkpoint``, ``--weights`` + ``--model``,
``--saved_model``). Data: ``--data_dir`` (any layout the data layer reads, ``tfds:gopro``, or none =
the embedded synthetic set), ``--split`` (test), ``--blur_variant`` (``blur``; GoPro's
``blur_gamma`` is a different, harder input). Images of any size are padded to the model's multiple
and cropped back; batch 1, full images.

Metrics (definitions in :mod:`metrics`): ``--metric_input uint8`` (default) clamps the output to
[0, 1], scales by 255 and rounds, the values a saved PNG holds; ``float`` is MIMO-UNet's official
convention (clamped float output, data range 1). PSNR and SSIM (11x11 Gaussian, sigma 1.5, mean over
R, G, B) per image, then the mean over images; identical images (PSNR +inf) are counted separately
and left out of the mean. Runtime: ``--warmup`` passes on the first image, then the wall time of the
forward pass alone per image (including the copy of its result to the host, which synchronises a
GPU); the median is reported.

Output: ``<out_dir>/per_image.csv`` (name, psnr, ssim, seconds) and ``<out_dir>/summary.json``,
both written atomically; without ``--out_dir`` the summary is printed. ``--save_images DIR`` writes
``DIR/<name>.png`` (clamp, x255, round; atomically).
"""

from __future__ import annotations

import csv
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
import metrics
from inference import flags as inference_flags
from inference import model_io

FLAGS = flags.FLAGS


def _define_flags():
    """Defines evaluate.py's flags; ``--data_dir``/``--blur_variant`` are shared with training
    (training/flags.py), so every definition is skipped when the name already exists."""
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
        enum_values=list(metrics.CONVENTIONS),
    )
    define(flags.DEFINE_string, "out_dir", None, "Folder for per_image.csv and summary.json.")
    define(flags.DEFINE_string, "save_images", None, "Folder for the restored <name>.png images.")
    define(flags.DEFINE_integer, "warmup", 2, "Untimed passes on the first image.", lower_bound=0)
    define(
        flags.DEFINE_integer, "limit", 0, "Evaluate the first N images (0 = all).", lower_bound=0
    )
    inference_flags.define_jit_flag()


_define_flags()


class EvaluationError(RuntimeError):
    """Bad data or output location; the message names it."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def open_pairs(data_dir, split, blur_variant):
    """Opens a split through the data layer.

    Returns:
        (description dict, iterator of (name, blur (1, H, W, 3) float32 [0, 1], sharp (H, W, 3)
        float32 [0, 1])) in the data set's order. Errors raise :class:`EvaluationError`.
    """
    try:
        import data
        from data import pipeline
    except ImportError as error:
        raise EvaluationError(f"The data layer (data/) is not importable: {error}") from error
    where = f"{data_dir or 'the embedded synthetic set'} (split {split!r})"
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
    return info, _iterate(pipeline.eval_dataset(source), (data.DataError,), where)


def _iterate(dataset, errors, where):
    import tensorflow as tf

    try:
        for element in dataset:
            name = element["name"].numpy()[0].decode("utf-8")
            yield name, element["blur"].numpy(), element["sharp"].numpy()[0]
    except (*errors, tf.errors.OpError) as error:
        raise EvaluationError(f"{where}: {error}") from error


# --------------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------------


def timed(restorer, blur):
    """(output (H, W, 3) float32, seconds of the forward pass incl. the copy to the host)."""
    start = time.perf_counter()
    output = np.asarray(restorer(blur))
    return output[0], time.perf_counter() - start


def evaluate(restorer, pairs, convention="uint8", warmup=2, save_dir=None, limit=0):
    """Runs ``restorer`` over ``pairs``; returns the per-image rows (name, psnr, ssim, seconds).

    Only the rows are kept, so memory stays flat over any number of images.
    """
    rows = []
    for index, (name, blur, sharp) in enumerate(itertools.islice(pairs, limit or None)):
        for _ in range(warmup if index == 0 else 0):
            restorer(blur)
        output, seconds = timed(restorer, blur)
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


def save_png(folder, name, output):
    """Writes clamp(output, 0, 1) * 255 rounded as ``folder/<name>.png`` (RGB), atomically."""
    import cv2

    parts = [p if p not in ("", ".", "..") else "_" for p in name.replace("\\", "/").split("/")]
    stem = os.path.splitext(os.path.join(folder, *parts))[0]
    ok, encoded = cv2.imencode(".png", metrics.to_uint8(output)[..., ::-1])
    if not ok:
        raise EvaluationError(f"Could not encode {name} as PNG.")
    model_io.atomic_write_bytes(stem + ".png", encoded.tobytes())


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
        "runtime_median_seconds": statistics.median([r["seconds"] for r in rows]) if rows else None,
        "runtime_note": "forward pass only (batch 1, after warm-up), incl. copy to host",
        "device": model_io.device_description(),
    }
    if summary["num_identical"]:
        summary["note"] = (
            f"{summary['num_identical']} image(s) identical to the ground truth (PSNR +inf) are "
            "left out of psnr_mean (SSIM mean includes them)."
        )
    return summary


def _mean(values):
    return float(np.mean(values)) if values else None


def definitions(convention):
    """The metric definitions, as strings for the summary (see :mod:`metrics`)."""
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
    model_io.atomic_write_bytes(
        os.path.join(out_dir, "per_image.csv"), per_image_csv(rows).encode()
    )
    text = json.dumps(summary, indent=2, allow_nan=False) + "\n"
    model_io.atomic_write_bytes(os.path.join(out_dir, "summary.json"), text.encode())


def report(summary):
    psnr = summary["psnr_mean"]
    ssim = summary["ssim_mean"]
    base_psnr, base_ssim = summary["input_psnr_mean"], summary["input_ssim_mean"]
    logging.info(
        "%d images: PSNR %s dB, SSIM %s (blurred input: %s dB, %s) (%s), median %.4f s/image on %s",
        summary["num_images"],
        "n/a" if psnr is None else f"{psnr:.4f}",
        "n/a" if ssim is None else f"{ssim:.4f}",
        "n/a" if base_psnr is None else f"{base_psnr:.4f}",
        "n/a" if base_ssim is None else f"{base_ssim:.4f}",
        summary["metric_input"],
        summary["runtime_median_seconds"] or 0.0,
        summary["device"],
    )


def run(restorer):
    """Evaluates with the flag values; returns the summary dict."""
    data_info, pairs = open_pairs(FLAGS.data_dir, FLAGS.split, FLAGS.blur_variant)
    rows = evaluate(
        restorer, pairs, FLAGS.metric_input, FLAGS.warmup, FLAGS.save_images, FLAGS.limit
    )
    if not rows:
        raise EvaluationError(f"No images in {data_info['data_dir']} (split {FLAGS.split!r}).")
    summary = summarize(rows, restorer, data_info, FLAGS.metric_input)
    if FLAGS.out_dir:
        write_results(FLAGS.out_dir, rows, summary)
    else:
        print(json.dumps(summary, indent=2))
    report(summary)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        restorer = model_io.restorer_from_flags()
        run(restorer)
    except (model_io.ModelSourceError, EvaluationError, OSError, ValueError) as error:
        sys.exit(f"evaluate.py: error: {error}")


if __name__ == "__main__":
    app.run(main)
