"""Evaluates a motion-flow estimator (SEN) on a flow data set: the flow MSE of the paper's Table 1.

    python evaluate_flow.py --checkpoint runs/sen --out_dir runs/sen/eval_flow
    python evaluate_flow.py --saved_model exports/sen --data_dir /data/flow --u_max 46

Model sources: see :mod:`inference.flow_io` (``--checkpoint`` of a ``train_sen.py`` run,
``--weights`` + ``--model sen``, ``--saved_model`` of a flow export); a deblurring model is refused
in one line. Data: ``--data_dir`` (a flow set in the ``GOPRO_Large`` layout,
``<split>/<sequence>/{blur,flow}/<frame>.{png,npy}``, as ``python -m data.make_synthetic --kind
flow`` writes it; :mod:`data.flow_pipeline`), ``--split`` (test); without ``--data_dir`` the small
generated flow set (``data.default_data.default_flow_dir``, flow-``u_max``, default 23), which
the console then names; a folder holding ``flow-23`` / ``flow-46`` sets (``train_sen.py``'s
``--data_dir``) scores the ``flow-<u_max>`` one. ``u_max`` is ``--u_max``, else the model run's
(its ``run_config.json``). ``--max_images N`` scores the first N images (sorted order).

Metric (``sen_rpgan.md`` §5, paper Table 1): the **flow MSE**, the mean of (U* - U_label)^2 over all
pixels and both components of all images, in ``uv_half`` pixels (= the mean of the per-image MSEs
when all images have one size, as the 256x256 synthetic sets do). Printed beside it, scored the
same way:

* the **zero flow** (U* = 0): the mean of label^2, the error of predicting "no blur";
* the **training set's mean flow** (U* = the mean (u, v) of every label pixel of the ``train``
  split of the same ``--data_dir``, :func:`data.flow_pipeline.mean_flow`): what a constant guess
  reaches; skipped, with a note, when the folder has no train split;
* the paper's SEN numbers: **2.71** on MSCOCO-23 and **4.24** on MSCOCO-46 (flow-23 / flow-46
  here; a different sharp-image source, so a reference, not a target), picked by ``--u_max``, else
  the model run's ``u_max``, else the data set's manifest.

Also per image: the mean end-point error ``epe`` = mean over pixels of |U* - U_label| (Euclidean,
pixels) and ``epe_symmetric`` = the same with the sign ambiguity of a blur kernel removed
(min(|U* - U|, |U* + U|): (u, v) and (-u, -v) are one kernel, and ``uv_half`` labels jump
between them near vertical motion, §2).

Output: ``<out_dir>/per_image.csv`` (image, mse, zero_flow_mse, mean_flow_mse, epe, epe_symmetric,
seconds) and ``<out_dir>/summary.json`` (model and data source, counts, the four MSEs, EPEs,
definitions, runtime, device), written atomically; without ``--out_dir`` the summary JSON is
printed. The result line is printed on stdout, per-image lines are absl INFO logs on stderr.

Checked before the model is loaded: ``--out_dir`` must be (or be creatable as) a writable folder,
its ``per_image.csv`` / ``summary.json`` are refused unless ``--overwrite``; the split must list
(blurred image, label) pairs whose headers agree (a missing label, a label of the wrong shape or
type, a missing folder: ``evaluate_flow.py: error: <file>: <problem>``, exit status 1). A file
damaged inside stops the run with the same one line when it is read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import statistics
import sys
import time

import numpy as np
from absl import flags, logging

import cli
import fileio
import rundir
from cli import inference_flags
from inference import outputs
from inference.source_config import ModelSource

FLAGS = flags.FLAGS
_define = cli.define_once
_define(
    flags.DEFINE_string,
    "data_dir",
    None,
    "Flow data folder (GOPRO_Large layout with flow/ labels); none = the generated flow set.",
)
_define(flags.DEFINE_string, "split", "test", "Data split to evaluate.")
_define(
    flags.DEFINE_integer,
    "u_max",
    None,
    "Largest flow component of the data (23 or 46): picks the paper's reference MSE and the "
    "generated set when no --data_dir. Default: the run's, else the data set's, else 23.",
)
_define(flags.DEFINE_integer, "max_images", 0, "Score the first N images (0 = all).", lower_bound=0)
_define(flags.DEFINE_string, "out_dir", None, "Folder for per_image.csv and summary.json.")
inference_flags.define_overwrite_flag()
inference_flags.define_jit_flag()
KEY_FLAGS = ["data_dir", "split", "u_max", "max_images", "out_dir", "overwrite"]
cli.declare_key_flags([*KEY_FLAGS, *inference_flags.FLOW_SOURCE_FLAGS, "jit_compile"])

RESULT_FILES = ("per_image.csv", "summary.json")
# Wu et al., Table 1: SEN's flow MSE on their MSCOCO-23 / MSCOCO-46 test sets (2,000 images each).
PAPER_SEN_MSE = {23: 2.71, 46: 4.24}
DEFAULT_U_MAX = 23
CSV_COLUMNS = ("image", "mse", "zero_flow_mse", "mean_flow_mse", "epe", "epe_symmetric", "seconds")


class EvaluationError(ValueError):
    """Bad data, flag or output location; the message names it."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def open_split(data_dir, split, limit=0):
    """The (blur PNG, label .npy) paths to score, headers checked; EvaluationError naming the
    problem (missing folder, missing label, wrong label shape/type, not 8-bit RGB)."""
    from data import flow_pipeline, readers
    from data.errors import DataError

    try:
        examples = flow_pipeline.flow_examples(data_dir, split)
        examples = examples[:limit] if limit else examples
        readers.check_flow_examples(examples)
    except DataError as error:
        raise EvaluationError(str(error)) from error
    return examples


def image_name(root, split, blur_path) -> str:
    """``<sequence>_<frame>.png`` (GoPro frame numbers repeat across sequences), or the file name
    for a split without sequence folders."""
    parts = os.path.relpath(blur_path, os.path.join(root, split)).split(os.sep)
    return f"{parts[0]}_{parts[-1]}" if len(parts) >= 3 else parts[-1]


def read_example(blur_path, label_path):
    """(blur (1, H, W, 3) float32 [0, 1], label (H, W, 2) float32); EvaluationError naming a
    damaged file."""
    from data import image_io, readers
    from data.errors import DataError

    try:
        blur = image_io.decode_rgb(blur_path)
        label = readers.read_flow_label(label_path, blur.shape[:2])
    except DataError as error:
        raise EvaluationError(str(error)) from error
    return blur[None].astype(np.float32) / np.float32(255), label


def training_mean_flow(data_dir):
    """(mean (u, v) float64 (2,), None) of ``data_dir``'s train split, or (None, why) when it has
    no train split."""
    from data import flow_pipeline
    from data.errors import DataError, MissingSplitError

    if not os.path.isdir(os.path.join(data_dir, "train")):
        return None, f"{data_dir} has no train split: the mean-flow baseline is skipped."
    try:
        return np.asarray(flow_pipeline.mean_flow(data_dir, "train"), np.float64), None
    except MissingSplitError:
        return None, f"{data_dir} has no train split: the mean-flow baseline is skipped."
    except DataError as error:
        raise EvaluationError(f"mean flow of the train split: {error}") from error


def dataset_u_max(data_dir):
    """``u_max`` of a generated flow set (its ``synthetic.json`` manifest), else ``None``."""
    path = os.path.join(data_dir, "synthetic.json")
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)["config"]["u_max"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, (int, float)) else None


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def image_errors(flow, label, mean=None) -> dict:
    """Per-image errors of an (H, W, 2) ``flow`` against its (H, W, 2) ``label`` (float64 sums).

    Returns squared-error sums and means of the flow, the zero flow and (if given) the constant
    ``mean`` (u, v), the pixel count, and the mean end-point errors (plain and sign-symmetric).
    """
    flow = np.asarray(flow, np.float64)
    label = np.asarray(label, np.float64)
    values = label.size
    squared = float(np.sum((flow - label) ** 2))
    zero = float(np.sum(label**2))
    row = {
        "values": values,
        "squared_error": squared,
        "zero_squared_error": zero,
        "mse": squared / values,
        "zero_flow_mse": zero / values,
        "epe": float(np.mean(np.linalg.norm(flow - label, axis=-1))),
        "epe_symmetric": float(
            np.mean(
                np.minimum(
                    np.linalg.norm(flow - label, axis=-1), np.linalg.norm(flow + label, axis=-1)
                )
            )
        ),
    }
    if mean is not None:
        mean_error = float(np.sum((np.asarray(mean, np.float64) - label) ** 2))
        row.update(mean_squared_error=mean_error, mean_flow_mse=mean_error / values)
    return row


def evaluate(estimator, examples, root, split, mean=None, warmup=1):
    """Runs ``estimator`` over ``examples`` (batch 1, full images); returns the per-image rows.

    ``warmup`` untimed passes on the first image (tracing) precede the timed ones.
    """
    rows = []
    for index, (blur_path, label_path) in enumerate(examples):
        blur, label = read_example(blur_path, label_path)
        for _ in range(warmup if index == 0 else 0):
            estimator(blur)
        start = time.perf_counter()
        flow = np.asarray(estimator(blur))[0]
        seconds = time.perf_counter() - start
        if flow.shape != label.shape:
            raise EvaluationError(
                f"{blur_path}: the model returned a flow of shape {flow.shape}, the label is "
                f"{label.shape} (is it a flow estimator?)."
            )
        name = image_name(root, split, blur_path)
        rows.append({"image": name, **image_errors(flow, label, mean), "seconds": seconds})
        logging.info(
            "%5d %s flow MSE %.4f (zero flow %.4f) EPE %.3f px %.3fs",
            index,
            name,
            rows[-1]["mse"],
            rows[-1]["zero_flow_mse"],
            rows[-1]["epe"],
            seconds,
        )
    return rows


def pooled(rows, key):
    """Sum of ``key`` over rows / total values: the MSE over all pixels and components of all
    images (``None`` if a row lacks it)."""
    if not rows or any(key not in row for row in rows):
        return None
    return sum(row[key] for row in rows) / sum(row["values"] for row in rows)


def summarize(rows, source, data_info, mean=None, mean_note=None, u_max=None) -> dict:
    """The JSON summary (see the module docstring)."""
    reference = PAPER_SEN_MSE.get(u_max) if u_max is not None else None
    summary = {
        "model_source": source,
        "data": data_info,
        "num_images": len(rows),
        "num_values": sum(row["values"] for row in rows),
        "flow_mse": pooled(rows, "squared_error"),
        "zero_flow_mse": pooled(rows, "zero_squared_error"),
        "mean_flow_mse": pooled(rows, "mean_squared_error") if mean is not None else None,
        "training_mean_flow": None if mean is None else [float(v) for v in mean],
        "epe_mean": _mean([row["epe"] for row in rows]),
        "epe_symmetric_mean": _mean([row["epe_symmetric"] for row in rows]),
        "u_max": u_max,
        "paper_sen_mse": reference,
        "paper_note": (
            "Wu et al. Table 1, SEN flow MSE: 2.71 (MSCOCO-23), 4.24 (MSCOCO-46); Gong et al. "
            "5.54 / 7.21; Sun et al. 24.34 / 63.37. Other sharp images here: a reference only."
        ),
        "definitions": DEFINITIONS,
        "runtime_median_seconds": statistics.median([r["seconds"] for r in rows]) if rows else None,
        "runtime_note": "forward pass only (batch 1, after warm-up), incl. copy to host",
        "device": device_description(),
    }
    if mean_note:
        summary["mean_flow_note"] = mean_note
    return summary


DEFINITIONS = {
    "flow_mse": (
        "mean of (U* - U_label)^2 over all pixels and both components (u, v) of all images, "
        "uv_half pixels (sen_rpgan.md section 5; paper eq. 1 and Table 1)"
    ),
    "zero_flow_mse": "flow_mse of U* = 0 (mean of U_label^2)",
    "mean_flow_mse": (
        "flow_mse of the constant U* = mean (u, v) of every pixel of every train-split label"
    ),
    "epe": "per image, mean over pixels of |U* - U_label| (Euclidean, pixels); then the mean",
    "epe_symmetric": (
        "as epe with min(|U* - U_label|, |U* + U_label|): (u, v) and (-u, -v) are one kernel"
    ),
}


def device_description():
    from inference import sources

    return sources.device_description()


def _mean(values):
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def per_image_csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        mean = row.get("mean_flow_mse")
        writer.writerow(
            [
                row["image"],
                f"{row['mse']:.6f}",
                f"{row['zero_flow_mse']:.6f}",
                "" if mean is None else f"{mean:.6f}",
                f"{row['epe']:.6f}",
                f"{row['epe_symmetric']:.6f}",
                f"{row['seconds']:.4f}",
            ]
        )
    return buffer.getvalue()


def write_results(out_dir, rows, summary):
    """Writes per_image.csv and summary.json atomically into ``out_dir``."""
    fileio.write_results(out_dir, per_image_csv(rows), summary)


def result_line(summary) -> str:
    """One line: images, flow MSE, both baselines, the paper's number, EPE, runtime, device."""

    def fmt(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    mean = fmt(summary["mean_flow_mse"]) if summary["mean_flow_mse"] is not None else "skipped"
    if summary["paper_sen_mse"] is not None:
        paper = f"paper SEN on flow-{summary['u_max']:g}: {summary['paper_sen_mse']}"
    else:
        paper = "paper SEN: 2.71 flow-23 / 4.24 flow-46 (give --u_max)"
    return (
        f"{summary['num_images']} images: flow MSE {fmt(summary['flow_mse'])} (zero flow "
        f"{fmt(summary['zero_flow_mse'])}, training mean flow {mean}; {paper}), EPE "
        f"{fmt(summary['epe_mean'], 3)} px (sign-symmetric {fmt(summary['epe_symmetric_mean'], 3)})"
        f", median {summary['runtime_median_seconds'] or 0.0:.4f} s/image on {summary['device']}"
    )


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlowEvaluateConfig:
    """One evaluate_flow.py run, read from the flags once (:func:`config_from_flags`);
    ``u_max`` None: not given (the model run's, else the data set's)."""

    source: ModelSource
    data_dir: str | None = None
    split: str = "test"
    u_max: float | None = None
    max_images: int = 0
    out_dir: str | None = None
    overwrite: bool = False


def config_from_flags() -> FlowEvaluateConfig:
    """evaluate_flow.py's flags as one :class:`FlowEvaluateConfig`."""
    return FlowEvaluateConfig(
        source=inference_flags.model_source(),
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        u_max=FLAGS.u_max if FLAGS["u_max"].present else None,
        max_images=FLAGS.max_images,
        out_dir=FLAGS.out_dir,
        overwrite=FLAGS.overwrite,
    )


def run_u_max(source: ModelSource):
    """``u_max`` of the ``run_config.json`` of the source's checkpoint or weights (its run),
    read without loading anything; ``None`` when there is none."""
    path = source.checkpoint or source.weights
    if not path:
        return None
    try:
        config = rundir.find_run_config(path)
    except rundir.RunDirError:
        return None  # the model loader reports an unreadable run_config.json
    value = (config or {}).get("u_max")
    return value if isinstance(value, (int, float)) else None


def resolve_data_dir(data_dir, u_max, split="test"):
    """The flow set to score (announced on stdout when it is not ``data_dir`` itself).

    ``data_dir`` itself when it holds the split; a folder of ``flow-23`` / ``flow-46`` sets (the
    ``--data_dir`` of ``train_sen.py``): the ``flow-<u_max>`` one, or its only one; no
    ``data_dir``: the generated flow set of ``u_max`` (default 23).
    """
    if not data_dir:
        from data import default_data

        u_max = u_max or DEFAULT_U_MAX
        path = default_data.default_flow_dir(u_max)
        print(
            f"No --data_dir: scoring the generated flow-{u_max:g} set ({path}); its numbers are "
            "not the paper's MSCOCO sets.",
            flush=True,
        )
        return path
    if not os.path.isdir(data_dir):
        raise EvaluationError(f"--data_dir {data_dir}: no such folder.")
    if os.path.isdir(os.path.join(data_dir, split)):
        return data_dir
    sets = sorted(n for n in os.listdir(data_dir) if n.startswith("flow-"))
    chosen = f"flow-{u_max:g}" if u_max else (sets[0] if len(sets) == 1 else None)
    if chosen is None and sets:
        raise EvaluationError(
            f"--data_dir {data_dir} holds {' and '.join(sets)}: give --u_max to pick one."
        )
    if chosen not in sets:
        return data_dir  # the data layer names the missing split
    print(f"Scoring {os.path.join(data_dir, chosen)} (--u_max / the run's u_max).", flush=True)
    return os.path.join(data_dir, chosen)


def prepare(config: FlowEvaluateConfig):
    """Every check that needs no model: output folder, data split, existing results, mean flow.

    Returns (data_dir, examples, data description, mean flow or None, note or None).
    """
    if config.out_dir:
        outputs.check_folder(config.out_dir, "--out_dir")
        paths = [os.path.join(config.out_dir, name) for name in RESULT_FILES]
        outputs.refuse_existing(paths, "--out_dir", config.overwrite, config.out_dir)
    u_max = config.u_max or run_u_max(config.source)
    data_dir = resolve_data_dir(config.data_dir, u_max, config.split)
    examples = open_split(data_dir, config.split, config.max_images)
    mean, note = training_mean_flow(data_dir)
    if note:
        print(note, flush=True)
    info = {
        "data_dir": os.path.abspath(data_dir),
        "generated": not config.data_dir,
        "split": config.split,
        "max_images": config.max_images,
        "u_max_of_data": dataset_u_max(data_dir),
    }
    return data_dir, examples, info, mean, note


def pick_u_max(given, source, data_info):
    """``--u_max`` (``given``), else the model run's ``u_max``, else the data set's; ``None`` if
    unknown."""
    for value in (given, source.get("u_max"), data_info.get("u_max_of_data")):
        if value is not None:
            return value
    return None


def run(config, estimator, data_dir, examples, data_info, mean=None, note=None):
    """Scores, writes and prints; returns the summary dict."""
    rows = evaluate(estimator, examples, data_dir, config.split, mean)
    u_max = pick_u_max(config.u_max, estimator.source, data_info)
    summary = summarize(rows, estimator.source, data_info, mean, note, u_max)
    if config.out_dir:
        write_results(config.out_dir, rows, summary)
    else:
        print(json.dumps(summary, indent=2))
    print(result_line(summary), flush=True)
    return summary


def main(argv):
    if len(argv) > 1:
        sys.exit(f"evaluate_flow.py: error: unexpected arguments: {' '.join(argv[1:])}")
    config = config_from_flags()
    try:
        if config.u_max is not None and config.u_max <= 0:
            raise EvaluationError(f"--u_max {config.u_max}: must be positive.")
        data_dir, examples, data_info, mean, note = prepare(config)
        cli.import_tensorflow()
        from inference import flow_io

        estimator = flow_io.flow_estimator_from_source(config.source)
        run(config, estimator, data_dir, examples, data_info, mean, note)
    except (EvaluationError, OSError, ValueError) as error:  # + DataError, ModelSourceError
        sys.exit(f"evaluate_flow.py: error: {error}")


if __name__ == "__main__":
    cli.run(main)
