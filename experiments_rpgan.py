"""The experiments of Wu et al. (SEN + HQS + RP-GAN; ``sen_rpgan.md`` §11) as commands on any
paired data set: Table 2 / 3 (global iterations), Table 4 (HQS levels), Appendix B (no D_p).

    python experiments_rpgan.py --table 2 --checkpoint runs/rpgan --data_dir /data/GOPRO_Large
    python experiments_rpgan.py --table 3 --checkpoint runs/rpgan --data_dir /data/kohler_pairs
    python experiments_rpgan.py --table 4 --checkpoint runs/rpgan --max_images 20
    python experiments_rpgan.py --table appendix_b --checkpoint runs/rpgan \\
        --no_dp_checkpoint runs/rpgan_no_dp --out appendix_b.json

Tables (each a set of runs of :class:`deconvolution.framework.BlindDeblurFramework`):

* ``2``: global iterations 1, 2, 3 (``--iterations_list``) at ``--levels`` 3.
* ``3``: Table 3 is Table 2 on the Köhler set: the same command with ``--data_dir`` a paired
  folder of the Köhler images (``test/{blur,sharp}/``); only the paper's reference column differs.
* ``4``: levels 1..5 (``--levels_list``), one global iteration.
* ``appendix_b``: the main run against a ``use_dp=False`` run (``--no_dp_checkpoint``, trained
  with ``train_rpgan.py --nouse_dp``), ``--levels`` 3, one global iteration; both use the main
  run's SEN (or ``--sen_checkpoint``) so that only G differs.

Model source: ``--checkpoint`` an RP-GAN run directory of ``train_rpgan.py`` (or its ``best/``
folder or a checkpoint prefix inside it), loaded as evaluate.py loads the framework
(:mod:`inference.framework_io`): G from its latest checkpoint (else ``final.weights.h5``), the
run's frozen SEN from ``<run>/sen.weights.h5``, CG settings (and β when it has one per level)
from its ``"framework"`` entry; ``--sen_checkpoint`` (a SEN run, checkpoint or ``.weights.h5``)
replaces the run's SEN.

Rows of every table: the blurred input; the identity-prior HQS (Z_n = I*_n, the framework without
G) with SEN's flows; the RP-GAN framework with SEN's flows (the paper's method: the paper's numbers
are printed beside these rows only, labelled with their data set, which is not this one); and,
when every pair of the set has a flow label (synthetic flow sets: ``<seq>/flow/<frame>.npy``), the
same two with the TRUE flow (the framework uses it in the first global iteration and SEN's flow of
the restored image after it). Each row prints mean PSNR / SSIM (:func:`metrics.image_metrics`,
uint8 convention: clamp, x255, round; identical images are left out of the PSNR mean) and the
mean seconds per image. Each method runs once per image at the table's largest setting and every
row is read from its intermediates: the g-th global iteration of a 3-iteration run is the
g-iteration framework's output, and level n of a 5-level run with the ladder β_n = 0.02·5^{n−1}
is the n-level framework's output (Table 4 always uses that ladder). Each global iteration runs
as one ``tf.function`` (K a ``SparseTensor``; 3-4x faster than eagerly at 256² on 2 cores), so a
row's seconds are the wall time (SEN + K + CG + G, after one untimed warm-up run on the first
image) until the end of the global iteration that produced it: Table 2/3 rows have them, Table 4
rows below the run's last level do not (they end inside the graph).

Data: ``--data_dir`` (any layout the data layer reads), ``--split`` (test), ``--blur_variant``,
``--max_images`` (0 = all). Without ``--data_dir`` the small synthetic flow test set of
:func:`data.default_data.default_flow_dir` is used (200 pairs of 256x256 with true flows; flow-23,
or flow-46 when the run's SEN was trained on flow-46 data; generated on first use, 10-20 minutes
on 2 cores). ``--out FILE.json`` also writes every row,
atomically (existing files are refused unless ``--overwrite``). Bad flags, paths and data stop
with ``experiments_rpgan.py: error: <problem>`` and exit status 1.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import time

import numpy as np
from absl import flags, logging

import cli

FLAGS = flags.FLAGS
TABLES = ("2", "3", "4", "appendix_b")
PROGRAM = "experiments_rpgan.py"


def _define_flags():
    """Flags; names shared with other commands are defined once per process (``cli``)."""
    define = cli.define_once
    define(
        flags.DEFINE_enum,
        "table",
        "2",
        "2 (global iterations), 3 (= Table 2 on the Köhler set: give its --data_dir), 4 "
        "(levels), appendix_b (no D_p).",
        enum_values=list(TABLES),
    )
    define(flags.DEFINE_string, "checkpoint", None, "RP-GAN run dir (train_rpgan.py).")
    define(flags.DEFINE_string, "sen_checkpoint", None, "SEN run/checkpoint/.weights.h5 to use.")
    define(flags.DEFINE_string, "no_dp_checkpoint", None, "Appendix B: the use_dp=False run dir.")
    define(
        flags.DEFINE_string,
        "data_dir",
        None,
        "Paired data (any reader layout); none = the small synthetic flow test set.",
    )
    define(flags.DEFINE_string, "split", "test", "Data split to evaluate.")
    variants = ["blur", "blur_gamma"]
    define(flags.DEFINE_enum, "blur_variant", "blur", "GoPro input variant.", enum_values=variants)
    define(flags.DEFINE_integer, "max_images", 0, "First N pairs only (0 = all).", lower_bound=0)
    define(flags.DEFINE_integer, "levels", 3, "HQS levels of Tables 2/3 and Appendix B.")
    define(flags.DEFINE_list, "iterations_list", ["1", "2", "3"], "Tables 2/3: global iterations.")
    define(flags.DEFINE_list, "levels_list", ["1", "2", "3", "4", "5"], "Table 4: HQS levels.")
    define(flags.DEFINE_string, "out", None, "Also write the rows to this JSON file.")
    define(flags.DEFINE_bool, "overwrite", False, "Replace an existing --out file.")


_define_flags()
cli.define_precision_flag()
cli.declare_key_flags(
    ["table", "checkpoint", "sen_checkpoint", "no_dp_checkpoint", "data_dir", "split"]
    + ["blur_variant", "max_images", "levels", "iterations_list", "levels_list", "out"]
    + ["overwrite", "precision"]
)

# sen_rpgan.md §11: Wu et al.'s numbers, (PSNR, SSIM, seconds on an NVIDIA 1080 Ti) per setting.
PAPER = {
    "2": {
        "label": "paper, GoPro",
        1: (30.03, 0.9352, 17.0),
        2: (30.96, 0.9487, 32.0),
        3: (31.25, 0.9518, 47.0),
    },
    "3": {"label": "paper, Köhler", 1: (27.25, 0.8642), 2: (28.46, 0.8933), 3: (29.19, 0.9128)},
    "4": {
        "label": "paper, data set not stated",
        1: (28.77,),
        2: (29.58,),
        3: (29.86,),
        4: (29.83,),
        5: (29.84,),
    },
}


class ExperimentError(ValueError):
    """A bad flag, path or data set; the message names it."""


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


def positive_ints(values, flag):
    """``--flag`` list values -> sorted unique positive ints; ExperimentError otherwise."""
    try:
        numbers = sorted({int(v) for v in values})
    except ValueError:
        raise ExperimentError(f"--{flag} {','.join(values)}: expected integers.") from None
    if not numbers or numbers[0] < 1:
        raise ExperimentError(f"--{flag} {','.join(values)}: expected positive integers.")
    return numbers


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiments_rpgan.py run, read from the flags once (:func:`config_from_flags`)."""

    checkpoint: str | None = None
    table: str = "2"
    sen_checkpoint: str | None = None
    no_dp_checkpoint: str | None = None
    data_dir: str | None = None
    split: str = "test"
    blur_variant: str = "blur"
    max_images: int = 0
    levels: int | None = 3
    iterations_list: tuple[str, ...] = ("1", "2", "3")
    levels_list: tuple[str, ...] = ("1", "2", "3", "4", "5")
    out: str | None = None
    overwrite: bool = False
    precision: str = "float32"


def config_from_flags() -> ExperimentConfig:
    """experiments_rpgan.py's flags as one :class:`ExperimentConfig`."""
    names = [field.name for field in dataclasses.fields(ExperimentConfig)]
    values = {name: FLAGS[name].value for name in names}
    for name in ("iterations_list", "levels_list"):
        values[name] = tuple(values[name] or ())
    return ExperimentConfig(**values)


def check_config(config: ExperimentConfig):
    """Every check that needs nothing loaded; returns the table's settings dict."""
    if not config.checkpoint:
        raise ExperimentError("--checkpoint: required (an RP-GAN run directory of train_rpgan.py).")
    for flag in ("checkpoint", "sen_checkpoint", "no_dp_checkpoint"):
        path = getattr(config, flag)
        if path and not (os.path.exists(path) or os.path.exists(path + ".index")):
            raise ExperimentError(f"--{flag} {path}: no such file or directory.")
    if config.table == "appendix_b" and not config.no_dp_checkpoint:
        raise ExperimentError("--table appendix_b needs --no_dp_checkpoint (a use_dp=False run).")
    if config.no_dp_checkpoint and config.table != "appendix_b":
        raise ExperimentError("--no_dp_checkpoint is used by --table appendix_b only.")
    levels = config.levels if config.levels is not None else 3
    if levels < 1:
        raise ExperimentError(f"--levels {levels}: expected a positive integer.")
    if config.out:
        from inference import outputs

        outputs.check_file_target(config.out, "--out")
        outputs.refuse_existing([config.out], "--out", config.overwrite, config.out)
    return {
        "table": config.table,
        "levels": levels,
        "iterations": positive_ints(config.iterations_list, "iterations_list"),
        "levels_list": positive_ints(config.levels_list, "levels_list"),
    }


# --------------------------------------------------------------------------------------------------
# Models: an RP-GAN run directory (sen_rpgan run-directory contract)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RPGANRun:
    """G and SEN of an RP-GAN run, and what the run recorded.

    ``generator``: Keras G, concat(I*, O) (N, H, W, 6) -> (N, H, W, 3) linear. ``sen``: Keras SEN,
    (N, H, W, 3) in [0, 1] -> (N, H, W, 2) flow (``None`` for the Appendix B run, whose G is used
    with the main run's SEN). ``framework``: the run's settings (levels, betas, cg_tol,
    cg_max_iter). ``info``: JSON-able source description.
    """

    generator: object
    sen: object
    framework: dict
    info: dict


def _renamed(error, flag):
    """An :class:`ExperimentError` of a loader's one-line message, naming ``--flag``."""
    return ExperimentError(str(error).replace("--checkpoint ", f"--{flag} "))


def read_run_config(path, flag):
    """``run_config.json`` of the RP-GAN run (or its checkpoint folder / prefix) ``--flag path``."""
    import models
    from inference import framework_io, sources

    try:
        config = framework_io.framework_run_config(path)
        if config is None:
            sources.resolve_checkpoint(path)  # the precise error of a path without checkpoints
            raise ExperimentError(
                f"--{flag} {path}: not an RP-GAN run (its run_config.json must name one of "
                f"{', '.join(models.prior_names())})."
            )
    except sources.ModelSourceError as error:
        raise _renamed(error, flag) from None
    return config


def load_rpgan_run(checkpoint, sen_checkpoint=None):
    """:class:`RPGANRun` of an RP-GAN run: G and SEN (the run's, or ``sen_checkpoint``) as
    ``inference.framework_io`` (evaluate.py's framework source) loads them."""
    from inference import framework_io, sources

    try:
        framework, source = framework_io.load_framework(checkpoint, sen_checkpoint=sen_checkpoint)
    except sources.ModelSourceError as error:
        raise _renamed(error, "checkpoint") from None
    info = {k: source.get(k) for k in ("path", "model", "model_kwargs", "sen", "framework")}
    return RPGANRun(framework.generator, framework.sen, dict(source["framework"]), info)


def load_generator_run(path, flag):
    """:class:`RPGANRun` of G alone (Appendix B's ``--no_dp_checkpoint``); refuses a run that
    records ``use_dp=true``."""
    from inference import framework_io, sources

    config = read_run_config(path, flag)
    if (config.get("loss") or {}).get("use_dp") is True:
        raise ExperimentError(
            f"--{flag} {path}: its run_config.json records use_dp=true (train it with --nouse_dp)."
        )
    try:
        generator, location = framework_io.load_generator(path, config)
    except sources.ModelSourceError as error:
        raise _renamed(error, flag) from None
    info = {"path": location, "model_kwargs": config.get("model_kwargs") or {}, "use_dp": False}
    return RPGANRun(generator, None, dict(config.get("framework") or {}), info)


# --------------------------------------------------------------------------------------------------
# The framework's parts as the framework calls them
# --------------------------------------------------------------------------------------------------


_TRACED = {}  # id(model) -> (model, tf.function): one trace per model per process


def traced(model, build):
    """``build()``'s function for ``model``, built once (tracing SEN takes seconds)."""
    if id(model) not in _TRACED:
        _TRACED[id(model)] = (model, build())
    return _TRACED[id(model)][1]


def flow_function(model):
    """SEN as one ``tf.function`` of any H x W (padded to 64 and cropped back), callable as the
    framework calls its ``sen`` (``sen(images, training=False)``)."""

    def build():
        import tensorflow as tf

        from inference import flow_io

        spec = tf.TensorSpec([None, None, None, 3], tf.float32)
        return tf.function(lambda x: flow_io.estimate_flow(model, x), input_signature=[spec])

    function = traced(model, build)
    return lambda images, training=False: function(images)


def identity_prior(inputs, training=False):
    """The identity prior: Z_n = I*_n (the first three channels of concat(I*, O))."""
    del training
    return inputs[..., :3]


def prior_function(generator):
    """G as one ``tf.function`` of any (N, H, W, 6) input; ``None`` = :func:`identity_prior`."""
    if generator is None:
        return identity_prior

    def build():
        import tensorflow as tf

        spec = tf.TensorSpec([None, None, None, generator.in_channels], tf.float32)
        return tf.function(lambda x: generator(x, training=False), input_signature=[spec])

    function = traced(generator, build)
    return lambda inputs, training=False: function(inputs)


@dataclasses.dataclass
class Method:
    """One framework run per image and the (global iteration, level) results read from it."""

    key: str
    label: str
    flow: str  # "SEN" or "true"
    prior: object  # G as a traced function, or identity_prior
    levels: int
    global_iterations: int
    points: list  # [(g, n)]
    betas: tuple
    paper: bool = False  # the paper's method: its numbers go beside these rows

    def global_iteration(self, sen, cg_settings):
        """One global iteration of this method's framework as one ``tf.function`` (any H x W;
        K a ``SparseTensor``): ``(O, true flow or None) -> intermediates``."""
        import tensorflow as tf

        from deconvolution.framework import BlindDeblurFramework

        framework = BlindDeblurFramework(
            sen,
            self.prior,
            levels=self.levels,
            global_iterations=self.global_iterations,
            betas=self.betas,
            flow_source="true" if self.flow == "true" else "sen",
            **cg_settings,
        )
        return tf.function(framework.global_iteration, reduce_retracing=True)


def run_betas(run, levels):
    """The run's β when it has one per level, else the ladder 0.02·5^{n−1}."""
    from deconvolution.hqs import beta_ladder

    betas = run.framework.get("betas")
    if betas and len(betas) == levels:
        return tuple(float(b) for b in betas)
    return beta_ladder(levels)


def methods_of(settings, runs, has_flows):
    """The methods of a table (see the module docstring)."""
    from deconvolution.hqs import beta_ladder

    table, main = settings["table"], runs["main"]
    if table == "4":
        levels, iterations = max(settings["levels_list"]), 1
        points = [(1, n) for n in settings["levels_list"]]
        betas = beta_ladder(levels)
    else:
        levels, iterations = settings["levels"], max(settings["iterations"])
        points = [(g, levels) for g in settings["iterations"]]
        betas = run_betas(main, levels)
    if table == "appendix_b":
        iterations, points = 1, [(1, levels)]
    identity_points = points if table == "4" else [(1, levels)]
    generators = [("rpgan", "RP-GAN framework", main.generator)]
    if table == "appendix_b":
        generators = [
            ("rpgan", "RP-GAN with D_p (main run)", main.generator),
            ("rpgan_no_dp", "RP-GAN without D_p (use_dp=False)", runs["no_dp"].generator),
        ]
    methods = []
    for flow in ["SEN", "true"] if has_flows else ["SEN"]:
        identity = prior_function(None)
        key = f"identity_{flow.lower()}"
        methods.append(
            Method(key, "identity-prior HQS", flow, identity, levels, 1, identity_points, betas)
        )
        for name, label, generator in generators:
            prior = prior_function(generator)
            paper = name == "rpgan" and flow == "SEN" and table != "appendix_b"
            key = f"{name}_{flow.lower()}"
            methods.append(
                Method(key, label, flow, prior, levels, iterations, points, betas, paper=paper)
            )
    return methods


def cg_settings(run):
    """CG tolerance and iteration limit the run validated with (register #21 defaults)."""
    framework = run.framework
    return {
        "cg_tol": float(framework.get("cg_tol", 1e-5)),
        "cg_max_iter": int(framework.get("cg_max_iter", 100)),
    }


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def default_u_max(checkpoint):
    """The flow bound of the default data: the run's SEN's ``u_max`` (23 or 46) when recorded,
    else 23 (the quick preset's)."""
    config = read_run_config(checkpoint, "checkpoint")
    u_max = (config.get("sen") or {}).get("u_max")
    return float(u_max) if u_max in (23, 46) else 23.0


def open_data(data_dir, split, blur_variant, u_max=23.0):
    """(source, description, flow label path per pair name or None) through evaluate.py's
    reading; without ``data_dir`` the synthetic flow-``u_max`` test set (generated on first use)."""
    import evaluate

    if not data_dir:
        from data import default_data

        print(
            f"No --data_dir: using the synthetic flow-{u_max:g} test set (true flows; generated on "
            "first use, 10-20 minutes on 2 cores); its numbers say nothing about GoPro.",
            flush=True,
        )
        data_dir = default_data.default_flow_dir(u_max)
    try:
        source, info = evaluate.open_source(data_dir, split, blur_variant)
    except evaluate.EvaluationError as error:
        raise ExperimentError(str(error)) from None
    return source, info, flow_labels(source)


def flow_labels(source):
    """{pair name: flow label path} when every pair has one, ``None`` when none has; a set with
    some labels missing is refused (naming the first)."""
    from data import readers

    pairs = getattr(source, "pairs", None)
    if not pairs:
        return None
    paths = {pair.name: readers.label_path_of(pair.blur) for pair in pairs}
    missing = [pair.blur for pair in pairs if not os.path.isfile(paths[pair.name])]
    if len(missing) == len(pairs):
        return None
    if missing:
        raise ExperimentError(
            f"{readers.label_path_of(missing[0])}: flow label of {missing[0]} not found "
            f"({len(missing)} of {len(pairs)} labels missing)."
        )
    return paths


def read_pairs(source, split, labels, max_images):
    """(name, blur (1, H, W, 3), sharp (H, W, 3), true flow (1, H, W, 2) or None) in order."""
    import evaluate
    from data import DataError, readers

    try:
        for name, blur, sharp in itertools.islice(
            evaluate.iterate_pairs(source, split), max_images or None
        ):
            flow = None
            if labels is not None:
                flow = readers.read_flow_label(labels[name], blur.shape[1:3])[None]
            yield name, blur, sharp, flow
    except (evaluate.EvaluationError, DataError) as error:
        raise ExperimentError(str(error)) from None


# --------------------------------------------------------------------------------------------------
# Running and scoring
# --------------------------------------------------------------------------------------------------


def run_method(method, step, blur, flow):
    """{(g, n): (Z (H, W, 3), seconds or None)} of one image: the global iterations run one
    traced ``step`` each, O <- Z_N between them; a result's seconds are the wall time until its
    global iteration ended, given only for its last level (earlier levels end inside the graph)."""
    start, out, blurred = time.perf_counter(), {}, blur
    for g in range(1, method.global_iterations + 1):
        given = flow if (method.flow == "true" and g == 1) else None
        result = step(blurred, given)
        zs = [np.asarray(z)[0] for z in result["z"]]  # waits for the whole global iteration
        seconds = time.perf_counter() - start
        for point_g, n in method.points:
            if point_g == g:
                out[(g, n)] = (zs[n - 1], seconds if n == method.levels else None)
        blurred = result["z"][-1]
    return out


def score_images(methods, sen, settings_cg, pairs):
    """Runs every method on every pair; returns {row key: [per-image dicts]} (row key
    ``"blurred"`` or (method key, g, n))."""
    import metrics

    steps = {m.key: m.global_iteration(sen, settings_cg) for m in methods}
    scores = {"blurred": []}
    for index, (name, blur, sharp, flow) in enumerate(pairs):
        scores["blurred"].append(metrics.image_metrics(blur[0], sharp))
        for method in methods:
            if index == 0:  # warm-up: tracing, XLA compilation of the CG update
                run_method(method, steps[method.key], blur, flow)
            for (g, n), (z, seconds) in run_method(method, steps[method.key], blur, flow).items():
                values = metrics.image_metrics(z, sharp)
                if seconds is not None:
                    values["seconds"] = seconds
                scores.setdefault((method.key, g, n), []).append(values)
        logging.info("%4d %s done", index, name)
    return scores


def mean_of(values):
    return float(np.mean(values)) if values else None


def summarize(entries):
    """Mean PSNR (finite values only), SSIM and seconds of a row's per-image dicts."""
    psnrs = [e["psnr"] for e in entries if math.isfinite(e["psnr"])]
    seconds = [e["seconds"] for e in entries if "seconds" in e]
    return {
        "psnr": mean_of(psnrs),
        "ssim": mean_of([e["ssim"] for e in entries]),
        "seconds": mean_of(seconds),
        "num_images": len(entries),
        "num_identical": len(entries) - len(psnrs),
    }


def paper_cell(table, g, n):
    """The paper's number for the paper's method at (g, n), or None."""
    reference = PAPER.get(table)
    if reference is None:
        return None
    values = reference.get(n if table == "4" else g)
    if values is None or (table != "4" and n != 3):
        return None
    parts = [f"{values[0]:.2f}"] + ([f"{values[1]:.4f}"] if len(values) > 1 else [])
    text = " / ".join(parts) + (f", {values[2]:g} s (1080 Ti)" if len(values) > 2 else "")
    return text


def table_rows(settings, methods, scores):
    """The printed / saved rows: the blurred input, then every method's points."""
    rows = [{"method": "blurred input", "flow": "-", "levels": None, "global_iterations": None}]
    rows[0].update(summarize(scores["blurred"]), seconds=None)
    for method in methods:
        for g, n in method.points:
            row = {
                "method": method.label,
                "flow": method.flow,
                "levels": n,
                "global_iterations": g,
                **summarize(scores[(method.key, g, n)]),
            }
            if method.paper:
                row["paper"] = paper_cell(settings["table"], g, n)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

TITLES = {
    "2": "Table 2: global iterations",
    "3": "Table 3 (= Table 2 on the Köhler set): global iterations",
    "4": "Table 4: HQS levels (one global iteration)",
    "appendix_b": "Appendix B: RP-GAN with and without the artifacts-penalised critic D_p",
}


def fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(settings, rows, data_info, num_images):
    """The table as Markdown on stdout, with the paper's column where it applies."""
    table = settings["table"]
    print(
        f"{TITLES[table]} on {data_info['data_dir']} (split {data_info['split']!r}), "
        f"{num_images} image(s); PSNR / SSIM uint8 convention; seconds per image after a "
        "warm-up."
    )
    reference = PAPER.get(table)
    header = ["method", "flow", "levels", "global it.", "PSNR", "SSIM", "s/image"]
    if reference:
        header.append(f"{reference['label']} (not this set)")
    lines = [header]
    for row in rows:
        line = [
            row["method"],
            "true (1st global it.)"
            if row["flow"] == "true" and row["global_iterations"] != 1
            else row["flow"],
            "-" if row["levels"] is None else str(row["levels"]),
            "-" if row["global_iterations"] is None else str(row["global_iterations"]),
            fmt(row["psnr"], 2),
            fmt(row["ssim"], 4),
            "-" if row["seconds"] is None else f"{row['seconds']:.2f}",
        ]
        if reference:
            line.append(row.get("paper") or "")
        lines.append(line)
    from benchmarks.peak import print_markdown

    print_markdown(lines, align="left")
    if reference:
        print(
            f"The last column is Wu et al.'s ({reference['label']}; PyTorch on an NVIDIA 1080 Ti) "
            "for their trained models: a reference for trends, not a value this set should match."
        )


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def load_runs(config: ExperimentConfig, settings):
    """{"main": RPGANRun[, "no_dp": RPGANRun]}; the no-D_p run's G with the main run's SEN."""
    runs = {"main": load_rpgan_run(config.checkpoint, config.sen_checkpoint)}
    if settings["table"] == "appendix_b":
        runs["no_dp"] = load_generator_run(config.no_dp_checkpoint, "no_dp_checkpoint")
    return runs


def run(config: ExperimentConfig, settings):
    """Loads, runs and prints one table; returns the JSON-able result. The networks compute in
    ``config.precision`` (:mod:`precision`)."""
    cli.import_tensorflow()
    import precision

    precision.set_precision(config.precision)
    u_max = 23.0 if config.data_dir else default_u_max(config.checkpoint)
    source, data_info, labels = open_data(config.data_dir, config.split, config.blur_variant, u_max)
    runs = load_runs(config, settings)
    methods = methods_of(settings, runs, labels is not None)
    pairs = read_pairs(source, config.split, labels, config.max_images)
    sen = flow_function(runs["main"].sen)
    scores = score_images(methods, sen, cg_settings(runs["main"]), pairs)
    if not scores["blurred"]:
        raise ExperimentError(f"No images in {data_info['data_dir']} (split {config.split!r}).")
    rows = table_rows(settings, methods, scores)
    print_table(settings, rows, data_info, len(scores["blurred"]))
    if labels is None:
        print("No flow labels in this set: the true-flow rows are left out.")
    return {
        "table": settings["table"],
        "data": data_info,
        "num_images": len(scores["blurred"]),
        "true_flow_rows": labels is not None,
        "models": {name: r.info for name, r in runs.items()},
        "betas": list(methods[-1].betas),
        "cg": cg_settings(runs["main"]),
        "metric_input": "uint8",
        "rows": rows,
        "paper": {str(k): v for k, v in PAPER.get(settings["table"], {}).items()},
    }


def main(argv):
    if len(argv) > 1:
        sys.exit(f"{PROGRAM}: error: unexpected arguments {argv[1:]}")
    config = config_from_flags()
    try:
        settings = check_config(config)
        result = run(config, settings)
        if config.out:
            import fileio

            fileio.atomic_write_json(config.out, result)
            print(f"Wrote {config.out}")
    except (ExperimentError, OSError, ValueError) as error:  # + DataError, ModelSourceError
        sys.exit(f"{PROGRAM}: error: {error}")


if __name__ == "__main__":
    cli.run(main)
