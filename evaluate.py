"""Evaluates a deblurring model, or saved results, on a benchmark under its official protocol:
per-image and mean PSNR / SSIM beside the blurred input's, runtime, an HTML report.

    python evaluate.py --weights mimo_unet.weights.h5 --model mimo_unet --data_dir /data/GOPRO
    python evaluate.py --checkpoint runs/mimo_unet --out_dir results/mimo --self_ensemble rot4
    python evaluate.py --checkpoint runs/plus --data_dir /data/RealBlur --report --out_dir results
    python evaluate.py --predictions results/kohler --data_dir /data/Kohler --out_dir results/k

Model sources: see :mod:`inference.model_io` (``--checkpoint``, ``--weights`` + ``--model``,
``--saved_model``). An RP-GAN run as ``--checkpoint`` is the blind deblurring framework (SEN + K +
CG + G, :mod:`inference.framework_io`) with ``--levels``, ``--global_iterations``, ``--betas``,
``--flow_source`` and ``--sen_checkpoint``; ``--flow_source true`` gives it each pair's true flow,
the label ``<sequence>/flow/<frame>.npy`` of a synthetic flow set (all labels are checked before the
model loads; a missing one is named).

Data: ``--data_dir`` (any layout the data layer reads, ``tfds:gopro``, or none = the embedded
synthetic set), ``--split`` (test), ``--blur_variant`` (``blur``; GoPro's ``blur_gamma`` is a
different, harder input), ``--datalist`` (a list file, sharp path then blurred path per line,
relative to ``--data_dir``; RealBlur's official lists are found without it). Images of any size are
padded to the model's multiple and cropped back; batch 1, full images.

Protocols (``--protocol``, default ``auto``: chosen from the data layout; see
:mod:`inference.scorers`): ``gopro`` (sequence folders, the embedded set, ``tfds:gopro``) and
``plain`` (any other folder) use the project's definitions (:mod:`metrics`): ``--metric_input
uint8`` (default) clamps the output to [0, 1], scales by 255 and rounds, the values a saved PNG
holds; ``float`` is MIMO-UNet's official convention; PSNR and SSIM (11x11 Gaussian, sigma 1.5,
mean over R, G, B) per image, then the mean over images; identical images (PSNR +inf) are counted
separately. ``realblur`` (``RealBlur_{J,R}_test_list.txt`` in the data root) is the RealBlur
authors' ECC-aligned evaluation (unaligned numbers beside); ``kohler`` (``Blurry{p}_{t}.png`` and
``Image{p}/Kernel{t}/GroundTruth{p}_{t}_{f}.png``) is Köhler et al.'s best-over-frames protocol on
the registered luminance (PSNR, MS-SSIM and SSIM, named). Both score PNG values (uint8). The
blurred input is scored beside under the same protocol, and the papers' reported numbers for the
set are printed as a reference (:mod:`inference.paper_results`).

Saved results: ``--predictions DIR`` scores PNGs any method wrote, with no model: each named by
the blurred input's path relative to the data root (``DIR/test/GOPR0384_11_00/blur/000001.png``,
``DIR/Blurry1_1.png``), as ``--save_images DIR`` writes them. Every prediction is checked before
scoring starts; a missing or unreadable one is named, exit 1, nothing written.

Runtime: ``--warmup`` passes on the first image, then the wall time of the forward pass alone per
image (including the copy of its result to the host, which synchronises a GPU); the median is
reported.

Output: ``<out_dir>/per_image.csv`` (name, protocol, the protocol's numbers for the output and the
input, seconds) and ``<out_dir>/summary.json``, written atomically; without ``--out_dir`` the
summary JSON is printed. ``--report`` adds ``<out_dir>/report.html`` (:mod:`inference.report`):
means against the blurred input and the papers' numbers, every image's row, and blurred |
restored | sharp strips of the best, median and worst images. The result line (protocol, means,
baseline, runtime) is printed on stdout; a progress line with a count and ETA on stderr; the
per-image lines with ``--verbosity 1`` (``-v 1``).

Checked before the model is loaded and before the first image: ``--out_dir`` and ``--save_images``
must be (or be creatable as) writable folders; existing ``per_image.csv`` / ``summary.json`` /
``report.html`` in ``--out_dir`` or any PNG this run would write into ``--save_images`` are
refused unless ``--overwrite``. A damaged image (e.g. a PNG with corrupt image data) stops the run
with ``evaluate.py: error: <file>: <problem>`` and exit status 1. Without ``--data_dir`` the
embedded synthetic test split is scored, and the console says so.
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
import progress as progress_lib
from cli import inference_flags
from inference import outputs, paper_results, scorers
from inference.source_config import FrameworkSettings, ModelSource

FLAGS = flags.FLAGS
PROTOCOL_CHOICES = ["auto", "gopro", "realblur", "kohler", "plain"]


def _define_flags():
    """Defines evaluate.py's flags; ``--data_dir``/``--blur_variant`` are shared with training
    (cli/train_flags.py), so every definition is skipped when the name already exists."""
    define = cli.define_once
    define(
        flags.DEFINE_string,
        "data_dir",
        None,
        "Data folder (any reader layout, RealBlur, Köhler), 'tfds:gopro', or none for the "
        "embedded synthetic set.",
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
        "protocol",
        "auto",
        "Evaluation protocol: gopro, realblur (official ECC-aligned), kohler (official best over "
        "frames), plain; auto = chosen from the data layout.",
        enum_values=PROTOCOL_CHOICES,
    )
    define(
        flags.DEFINE_string,
        "datalist",
        None,
        "List file of the pairs (sharp path, blurred path per line, relative to --data_dir); "
        "RealBlur's official lists are found without it.",
    )
    define(
        flags.DEFINE_string,
        "predictions",
        None,
        "Score the PNGs in this folder (named by the blurred input's path relative to the data "
        "root) instead of running a model.",
    )
    define(
        flags.DEFINE_enum,
        "metric_input",
        "uint8",
        "uint8 (PNG values) or float (official MIMO-UNet; gopro and plain protocols).",
        enum_values=list(inference_flags.METRIC_CONVENTIONS),
    )
    define(flags.DEFINE_string, "out_dir", None, "Folder for per_image.csv and summary.json.")
    define(flags.DEFINE_bool, "report", False, "Also write <out_dir>/report.html with pictures.")
    define(flags.DEFINE_string, "save_images", None, "Folder for the restored images (PNG).")
    define(flags.DEFINE_integer, "warmup", 2, "Untimed passes on the first image.", lower_bound=0)
    define(
        flags.DEFINE_integer, "limit", 0, "Evaluate the first N images (0 = all).", lower_bound=0
    )
    inference_flags.define_jit_flag()
    inference_flags.define_overwrite_flag()
    inference_flags.define_framework_flags()


_define_flags()
KEY_FLAGS = ["data_dir", "split", "blur_variant", "protocol", "datalist", "predictions"]
KEY_FLAGS += ["metric_input", "out_dir", "report", "save_images", "warmup", "limit"]
KEY_FLAGS += ["overwrite", "jit_compile"]
cli.declare_key_flags([*KEY_FLAGS, *inference_flags.SOURCE_FLAGS, *inference_flags.FRAMEWORK_FLAGS])
RESULT_FILES = ("per_image.csv", "summary.json")
REPORT_FILES = ("report.html", "report")


class EvaluationError(RuntimeError):
    """Bad data, predictions or output location; the message names it."""


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def open_source(data_dir, split, blur_variant, datalist=None):
    """Opens a split through the data layer: (source, description dict); lists the images but
    decodes none. Errors raise :class:`EvaluationError`."""
    try:
        import data
    except ImportError as error:
        raise EvaluationError(f"The data layer (data/) is not importable: {error}") from error
    try:
        source = data.open_split(data_dir, split, blur_variant=blur_variant, datalist=datalist)
    except data.DataError as error:
        raise EvaluationError(str(error)) from error
    info = {
        "data_dir": data_dir or "embedded synthetic set",
        "split": split,
        "blur_variant": blur_variant,
        "source": repr(source),
    }
    if datalist:
        info["datalist"] = datalist
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


def iterate_shots(shots):
    """(name, blur (1, H, W, 3) float32 [0, 1], the shot's frame paths) of Köhler shots."""
    import data
    from data import image_io

    for shot in shots:
        try:
            blur = image_io.decode_rgb(shot.blur)
        except data.DataError as error:
            raise EvaluationError(str(error)) from error
        yield shot.name, (blur[None] / np.float32(255)).astype(np.float32), shot.frames


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


@dataclasses.dataclass
class EvalData:
    """The images one run scores under ``protocol``: a paired ``source`` (gopro, plain,
    realblur) or Köhler ``shots``; ``data_dir`` as given (``None``: the embedded set, whose
    folder is the root of the blurred inputs' relative paths, the prediction and saved-image
    names; ``tfds:``: no files)."""

    protocol: str
    info: dict
    data_dir: str | None = None
    source: object = None
    shots: list | None = None

    @property
    def root(self) -> str | None:
        if self.data_dir is None:
            import data

            return data.default_data_dir()
        return None if self.data_dir.startswith("tfds:") else self.data_dir

    def names(self, limit=0):
        names = [s.name for s in self.shots] if self.shots is not None else None
        names = image_names(self.source) if names is None else names
        return None if names is None else names[: limit or None]

    def blurred_paths(self, limit=0) -> dict | None:
        """{name: blurred input's path} (``None`` without files)."""
        items = self.shots if self.shots is not None else getattr(self.source, "pairs", None)
        if items is None:
            return None
        return {item.name: item.blur for item in items[: limit or None]}

    def relative_paths(self, limit=0) -> dict | None:
        """{name: the blurred input's path relative to ``root``}: the name of its prediction
        (and saved image); a path outside ``root`` (an absolute list entry) keeps its name."""
        paths = self.blurred_paths(limit)
        if not paths:
            return paths
        root = self.root
        return {name: relative_name(path, root, name) for name, path in paths.items()}

    def items(self, split="test"):
        """(name, blur (1, H, W, 3) float32, reference) in order (:func:`iterate_pairs`)."""
        if self.shots is not None:
            return iterate_shots(self.shots)
        return iterate_pairs(self.source, split)

    def items_named(self, names, split="test"):
        """:meth:`items` of ``names`` only: decoding just those where the files are listed."""
        if self.shots is not None:
            return iterate_shots([shot for shot in self.shots if shot.name in names])
        if not hasattr(self.source, "load_pair"):  # TFDS: read through, keep the named ones
            return (item for item in self.items(split) if item[0] in names)
        return self._load_pairs(names)

    def _load_pairs(self, names):
        import data

        for index, pair in enumerate(self.source.pairs):
            if pair.name in names:
                try:
                    blur, sharp = self.source.load_pair(index)
                except data.DataError as error:
                    raise EvaluationError(str(error)) from error
                yield pair.name, (blur[None] / np.float32(255)), sharp / np.float32(255)


def relative_name(path, root, fallback) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return fallback if relative.startswith("..") else relative.replace(os.sep, "/")


def resolve_protocol(protocol, data_dir, split) -> str:
    """``protocol``, or the data layout's (``auto``)."""
    if protocol != "auto":
        return protocol
    from data import benchmarks

    return benchmarks.detect_protocol(data_dir, split)


def open_data(config) -> EvalData:
    """Opens the images of ``config`` under its protocol; errors raise :class:`EvaluationError`."""
    import data
    from data import benchmarks

    protocol = resolve_protocol(config.protocol, config.data_dir, config.split)
    if protocol in ("realblur", "kohler") and not config.data_dir:
        raise EvaluationError(f"--protocol {protocol} needs --data_dir (the benchmark's folder).")
    try:
        if protocol == "kohler":
            shots = benchmarks.list_kohler_shots(config.data_dir)
            info = {"data_dir": config.data_dir, "shots": len(shots)}
            info["frames"] = sum(len(shot.frames) for shot in shots)
            return EvalData(protocol, info, config.data_dir, shots=shots)
        datalist = config.datalist
        if protocol == "realblur":
            datalist = benchmarks.realblur_list(config.data_dir, config.split, datalist)
    except data.DataError as error:
        raise EvaluationError(str(error)) from error
    extra = {"datalist": datalist} if datalist else {}
    source, info = open_source(config.data_dir, config.split, config.blur_variant, **extra)
    return EvalData(protocol, info, config.data_dir, source=source)


# --------------------------------------------------------------------------------------------------
# Saved predictions
# --------------------------------------------------------------------------------------------------


class SavedPredictions:
    """A restorer's stand-in for ``--predictions``: image ``name``'s output is the PNG at
    ``folder/<its relative path>`` (:meth:`EvalData.relative_paths`), read as float32 [0, 1]."""

    def __init__(self, folder, relative_paths):
        self.folder, self.paths = folder, relative_paths
        self.source = {"kind": "predictions", "path": os.path.abspath(folder)}

    def path(self, name) -> str:
        return image_path(self.folder, self.paths[name])

    def check(self) -> None:
        """Every prediction exists and is an 8-bit RGB PNG/JPEG (header and end checked)."""
        import data
        from data import image_io

        for name in self.paths:
            path = self.path(name)
            if not os.path.isfile(path):
                raise EvaluationError(f"{path}: prediction of {name} not found.")
            try:
                image_io.check_rgb8(path)
            except data.DataError as error:
                raise EvaluationError(f"{error} (prediction of {name})") from error

    def read(self, name, shape) -> np.ndarray:
        """The (H, W, 3) float32 prediction of ``name``; its size must be ``shape``'s."""
        import data
        from data import image_io

        path = self.path(name)
        try:
            image = image_io.decode_rgb(path)
        except data.DataError as error:
            raise EvaluationError(str(error)) from error
        if image.shape != tuple(shape):
            raise EvaluationError(
                f"{path}: prediction size {image.shape[1]}x{image.shape[0]} differs from the "
                f"blurred input's {shape[1]}x{shape[0]}."
            )
        return image.astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------------------------------
# The evaluation loop
# --------------------------------------------------------------------------------------------------


def timed(restorer, blur):
    """(output (H, W, 3) float32, seconds of the forward pass incl. the copy to the host)."""
    start = time.perf_counter()
    output = np.asarray(restorer(blur))
    return output[0], time.perf_counter() - start


def restore(restorer, name, blur, warmup=0, labels=None):
    """(output (H, W, 3) float32, seconds or None) of one image: a model's forward after
    ``warmup`` untimed passes, or a saved prediction (no time)."""
    if isinstance(restorer, SavedPredictions):
        return restorer.read(name, np.shape(blur)[1:]), None
    forward = restorer
    if labels is not None:
        flow = read_label(labels[name], blur)

        def forward(image, flow=flow):
            return restorer(image, true_flow=flow)

    for _ in range(warmup):
        forward(blur)
    return timed(forward, blur)


def evaluate(
    restorer,
    pairs,
    convention="uint8",
    warmup=2,
    save_dir=None,
    limit=0,
    labels=None,
    scorer=None,
    save_names=None,
    progress=None,
):
    """Runs ``restorer`` over ``pairs`` and scores every output; returns the per-image rows.

    Args:
        restorer: a :class:`~inference.sources.Restorer` or :class:`SavedPredictions`.
        pairs: (name, blur (1, H, W, 3) float32, reference) in order (:meth:`EvalData.items`).
        scorer: the protocol's (:mod:`inference.scorers`; default ``plain`` under ``convention``).
        labels: {name: flow label path} (:func:`flow_labels`) for a restorer that needs each
            image's true flow (read outside the timed forward).
        save_names: {name: relative path} of the saved PNGs in ``save_dir`` (default: the name).
        progress: a :class:`progress.CountProgress` (none by default).
    Only the rows are kept, so memory stays flat over any number of images.
    """
    scorer = scorer or scorers.PairScorer("plain", convention)
    rows = []
    for index, (name, blur, reference) in enumerate(itertools.islice(pairs, limit or None)):
        output, seconds = restore(restorer, name, blur, warmup if index == 0 else 0, labels)
        try:
            values = scorer.score(output, np.asarray(blur)[0], reference)
        except ValueError as error:  # e.g. smaller than the SSIM window, size mismatch
            raise EvaluationError(f"{name}: {error}") from error
        rows.append({"name": name, "protocol": scorer.protocol, **values, "seconds": seconds})
        if save_dir:
            save_png(save_dir, (save_names or {}).get(name, name), output)
        report_image(progress, rows, index)
    return rows


def report_image(progress, rows, index) -> None:
    """The per-image line (``--verbosity 1``) and the progress line's update."""
    row = rows[-1]
    if logging.vlog_is_on(1):
        seconds = "" if row["seconds"] is None else f" {row['seconds']:.3f}s"
        line = f"{index:5d} {row['name']} PSNR {row['psnr']:.4f} SSIM {row['ssim']:.4f}{seconds}"
        (progress.message if progress else logging.info)(line)
    if progress is not None:
        finite = [r for r in rows if math.isfinite(r["psnr"]) and math.isfinite(r["input_psnr"])]
        gain = _mean([r["psnr"] - r["input_psnr"] for r in finite])
        detail = "" if gain is None else f"PSNR {gain:+.2f} dB over blurred so far"
        progress.update(len(rows), detail)


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
    path = image_path(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fileio.atomic_write_bytes(path, encoded.tobytes())


def summarize(rows, restorer, data_info, convention, scorer=None, model=None):
    """The JSON summary: protocol, sources, n, means (finite values only) of the output's and the
    input's numbers, definitions, the papers' numbers, runtime, device."""
    scorer = scorer or scorers.PairScorer("plain", convention)
    protocol = scorer.protocol
    psnrs = [r["psnr"] for r in rows]
    summary = {
        "protocol": protocol,
        "protocol_label": scorers.LABELS[protocol],
        "model_source": restorer.source,
        "data": data_info,
        "num_images": len(rows),
        "metrics": list(scorer.metrics),
    }
    for key in scorer.metrics:
        summary[f"{key}_mean"] = _finite_mean(rows, key)
        summary[f"input_{key}_mean"] = _finite_mean(rows, f"input_{key}")
    both = [r for r in rows if math.isfinite(r["psnr"]) and math.isfinite(r["input_psnr"])]
    # Over the images where both PSNRs are finite: psnr_mean and input_psnr_mean each leave out
    # their own +inf images, so their difference can be over two different sets of images.
    summary["psnr_gain_mean"] = _mean([r["psnr"] - r["input_psnr"] for r in both])
    summary["num_identical"] = sum(1 for p in psnrs if p == math.inf)
    summary["num_not_aligned"] = sum(1 for p in psnrs if math.isnan(p))
    summary["input_note"] = "the blurred input itself scored under the same protocol (baseline)"
    summary["metric_input"] = convention if protocol in ("gopro", "plain") else "uint8"
    summary["definitions"] = scorer.definitions()
    summary["paper_reference"] = paper_results.reference_lines(protocol, model)
    summary["self_ensemble"] = restorer.source.get("self_ensemble", "none")
    summary["precision"] = restorer.source.get("precision", "float32")
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
    summary["runtime_median_seconds"] = statistics.median(seconds) if seconds else None
    summary["runtime_note"] = "forward pass only (batch 1, after warm-up), incl. copy to host"
    summary["device"] = device_description()
    notes = []
    if summary["num_identical"]:
        notes.append(
            f"{summary['num_identical']} image(s) identical to the ground truth (PSNR +inf) are "
            "left out of psnr_mean (SSIM mean includes them)."
        )
    if summary["num_not_aligned"]:
        notes.append(
            f"{summary['num_not_aligned']} image(s) could not be aligned (ECC did not converge; "
            "aligned numbers NaN) and are left out of the aligned means."
        )
    if notes:
        summary["note"] = " ".join(notes)
    return summary


def _finite_mean(rows, key):
    return _mean([r[key] for r in rows if math.isfinite(r[key])])


def device_description():
    from inference import sources

    return sources.device_description()


def _mean(values):
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def per_image_csv(rows) -> str:
    """name, protocol, the protocol's numbers (output, then input), extras, seconds."""
    keys = [k for k in (rows[0] if rows else {}) if k not in ("name", "protocol", "seconds")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "protocol", *keys, "seconds"])
    for row in rows:
        cells = [_cell(key, row[key]) for key in keys]
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.4f}"
        writer.writerow([row["name"], row["protocol"], *cells, seconds])
    return buffer.getvalue()


def _cell(key, value) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if "psnr" in key else f"{value:.6f}"


def write_results(out_dir, rows, summary):
    """Writes per_image.csv and summary.json atomically into ``out_dir``."""
    fileio.write_results(out_dir, per_image_csv(rows), summary)


def result_line(summary) -> str:
    """One line: protocol, number of images, means against the blurred input's, runtime."""

    def fmt(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    def scores(prefix):
        if summary["protocol"] == "kohler":
            return (
                f"PSNR {fmt(summary[f'{prefix}psnr_mean'])} dB, MS-SSIM "
                f"{fmt(summary[f'{prefix}msssim_mean'])}, SSIM {fmt(summary[f'{prefix}ssim_mean'])}"
            )
        text = f"PSNR {fmt(summary[f'{prefix}psnr_mean'])} dB, SSIM "
        text += fmt(summary[f"{prefix}ssim_mean"])
        if summary["protocol"] == "realblur":
            text += (
                f" (unaligned {fmt(summary[f'{prefix}unaligned_psnr_mean'])} dB, "
                f"{fmt(summary[f'{prefix}unaligned_ssim_mean'])})"
            )
        return text

    precision = summary.get("precision", "float32")
    networks = "" if precision == "float32" else f", {precision} networks"
    if summary["model_source"].get("kind") == "predictions":
        runtime = "saved predictions"
    else:
        runtime = f"median {summary['runtime_median_seconds'] or 0.0:.4f} s/image"
    return (
        f"{summary['protocol_label']}: {summary['num_images']} images: {scores('')} (blurred "
        f"input: {scores('input_')}) ({summary['metric_input']}{networks}), {runtime} on "
        f"{summary['device']}"
    )


def check_outputs(out_dir, save_images, report=False):
    """The output folders can be written (before anything is loaded); raises OutputError."""
    if report and not out_dir:
        raise EvaluationError("--report writes report.html into --out_dir: give --out_dir.")
    if out_dir:
        outputs.check_folder(out_dir, "--out_dir")
    if save_images:
        outputs.check_folder(save_images, "--save_images")


def refuse_existing_results(out_dir, save_images, names, overwrite, report=False):
    """Existing results of this run are refused unless ``overwrite`` (before the model loads).

    ``names`` are the images this run would save (``None``: unknown, then any PNG in
    ``save_images`` counts)."""
    if out_dir:
        files = RESULT_FILES + (REPORT_FILES if report else ())
        paths = [os.path.join(out_dir, name) for name in files]
        outputs.refuse_existing(paths, "--out_dir", overwrite, out_dir)
    if save_images and os.path.isdir(save_images):
        if names is None:
            paths = [os.path.join(save_images, n) for n in sorted(os.listdir(save_images))]
            paths = [p for p in paths if p.endswith(".png")]
        else:
            paths = [image_path(save_images, name) for name in names]
        outputs.refuse_existing(paths, "--save_images", overwrite, save_images)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """One evaluate.py run, read from the flags once (:func:`config_from_flags`): the data and
    its protocol, the metric convention, outputs, and the model
    (:class:`~inference.source_config.ModelSource`,
    :class:`~inference.source_config.FrameworkSettings`) or ``predictions``."""

    source: ModelSource
    framework: FrameworkSettings = FrameworkSettings()
    data_dir: str | None = None
    split: str = "test"
    blur_variant: str = "blur"
    protocol: str = "auto"
    datalist: str | None = None
    predictions: str | None = None
    metric_input: str = "uint8"
    out_dir: str | None = None
    report: bool = False
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
        protocol=FLAGS.protocol,
        datalist=FLAGS.datalist,
        predictions=FLAGS.predictions,
        metric_input=FLAGS.metric_input,
        out_dir=FLAGS.out_dir,
        report=FLAGS.report,
        save_images=FLAGS.save_images,
        warmup=FLAGS.warmup,
        limit=FLAGS.limit,
        overwrite=FLAGS.overwrite,
    )


def check_config(config: EvaluateConfig) -> None:
    """Combinations that cannot work, in one line each."""
    if config.predictions:
        given = [f"--{name}" for name in ("checkpoint", "weights", "saved_model")]
        given = [flag for flag in given if getattr(config.source, flag[2:])]
        given += [f"--{k}" for k, v in config.framework.given().items() if v is not None]
        if given:
            raise EvaluationError(
                f"--predictions scores saved images without a model: drop {', '.join(given)}."
            )
        if config.save_images:
            raise EvaluationError("--save_images with --predictions: the predictions are saved.")


def prepare(config: EvaluateConfig) -> EvalData:
    """Every check that needs no model: output folders, data and protocol, predictions,
    existing results. Prints which data is scored when no --data_dir is given."""
    check_config(config)
    check_outputs(config.out_dir, config.save_images, config.report)
    cli.import_tensorflow()
    data = open_data(config)
    if data.protocol in ("realblur", "kohler") and config.metric_input != "uint8":
        raise EvaluationError(
            f"--protocol {data.protocol} scores PNG values: --metric_input must be uint8."
        )
    if not config.data_dir:
        print(
            f"No --data_dir: scoring the embedded synthetic set, split {config.split!r} "
            f"({data.source!r}); its numbers say nothing about GoPro.",
            flush=True,
        )
    saved = data.relative_paths(config.limit)
    names = data.names(config.limit) if saved is None else list(saved.values())
    refuse_existing_results(
        config.out_dir, config.save_images, names, config.overwrite, config.report
    )
    if config.framework.flow_source == "true":
        flow_labels(data.source, config.limit)  # every label exists, before the model loads
    if config.predictions:
        predictions_of(config, data).check()
    return data


def predictions_of(config, data) -> SavedPredictions:
    paths = data.relative_paths(config.limit)
    if paths is None:
        raise EvaluationError(
            f"--predictions: {config.data_dir} has no files to name predictions by; use a folder."
        )
    return SavedPredictions(config.predictions, paths)


def run(config: EvaluateConfig, restorer, data=None):
    """Evaluates ``restorer`` (or ``config.predictions``) as ``config`` says; returns the
    summary dict."""
    data = data or open_data(config)
    if config.predictions:
        restorer = predictions_of(config, data)
    labels = None
    if getattr(restorer, "needs_true_flow", False):
        labels = flow_labels(data.source, config.limit)
        data.info["flow"] = "true flow labels (<sequence>/flow/<frame>.npy)"
    scorer = scorers.scorer_for(data.protocol, config.metric_input)
    names = data.names(config.limit)
    show = progress_lib.CountProgress(None if names is None else len(names), "image")
    rows = evaluate(
        restorer,
        data.items(config.split),
        config.metric_input,
        config.warmup,
        config.save_images,
        config.limit,
        labels,
        scorer,
        data.relative_paths(config.limit),
        show,
    )
    if not rows:
        raise EvaluationError(f"No images in {data.info['data_dir']} (split {config.split!r}).")
    model = None if config.predictions else restorer.source.get("model")
    summary = summarize(rows, restorer, data.info, config.metric_input, scorer, model)
    if not config.data_dir:  # the embedded set is no benchmark: no paper to compare with
        summary["paper_reference"] = []
    if config.out_dir:
        if config.report:
            write_report(config, data, restorer, rows, summary, labels)
        write_results(config.out_dir, rows, summary)
    else:
        print(json.dumps(summary, indent=2))
    print(result_line(summary), flush=True)
    for line in summary["paper_reference"]:
        print(f"  {line}", flush=True)
    if config.report and config.out_dir:
        print(f"Report: {os.path.join(config.out_dir, 'report.html')}", flush=True)
    return summary


def write_report(config, data, restorer, rows, summary, labels=None):
    """``report.html`` and its strips in ``config.out_dir`` (:mod:`inference.report`): the best,
    median and worst images by PSNR gain over the blurred input are restored again (or re-read)
    for their pictures."""
    from inference import report

    chosen = report.pick_examples(rows)
    wanted = {row["name"]: kind for kind, row in chosen}
    pictures = {}
    for name, blur, reference in data.items_named(wanted, config.split):
        output, _ = restore(restorer, name, blur, 0, labels)
        row = next(r for r in rows if r["name"] == name)
        pictures[name] = report.example_images(blur[0], output, reference_image(reference, row))
        if len(pictures) == len(wanted):
            break
    report.write_report(config.out_dir, summary, rows, chosen, pictures)


def reference_image(reference, row) -> np.ndarray:
    """The sharp image a strip shows: the pair's, or the Köhler frame of the best PSNR."""
    if not isinstance(reference, tuple):
        return reference
    from data import image_io

    frame = next(path for path in reference if os.path.basename(path) == row["best_frame"])
    return image_io.decode_rgb(frame)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    try:
        data = prepare(config)
        restorer = None
        if not config.predictions:
            from inference import model_io

            restorer = model_io.restorer_from_source(config.source, config.framework)
        run(config, restorer, data)
    except (EvaluationError, OSError, ValueError) as error:  # + DataError, ModelSourceError
        sys.exit(f"evaluate.py: error: {error}")


if __name__ == "__main__":
    cli.run(main)
