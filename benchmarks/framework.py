"""Seconds per image of the whole SEN + K + CG + G framework (``sen_rpgan.md`` §10) and the share
of each part, per network precision, against the paper's 17 / 32 / 47 s per image on a GPU (§11,
Table 2).

    python benchmarks/framework.py [--precision float32,bfloat16] [--size 720x1280] [--levels 3]
        [--global_iterations 1] [--u_max 23] [--repeats 1] [--warmup 1] [--xla] [--json FILE]

Each precision (``--precision``, a comma list of float32, bfloat16, float16) runs in its own child
process (the Keras policy is process-wide; :func:`precision.set_precision` is called before any
network is built, as the commands do). Each child:

1. measures the machine's fp32 matmul peak (:mod:`benchmarks.peak`);
2. builds the framework (:class:`deconvolution.framework.BlindDeblurFramework`) at full width with
   random weights (the default two-stack SEN, 76,974,030 parameters; the full G, up widths
   256/128) on one H x W image;
3. **total**: runs it the way ``deblur.py`` and ``evaluate.py`` do, through
   :func:`inference.framework_io.framework_restorer` (one ``tf.function`` of the whole framework,
   dynamic H, W, K a sparse matrix, no XLA: framework sources refuse ``--jit_compile``):
   ``--warmup`` untimed calls (the first traces; "first s"), then the median of ``--repeats``;
4. **split**: runs it eagerly with ``intermediates(timings=True)``, which waits for each part
   before stopping its clock: SEN and G each one ``tf.function`` (XLA with ``--xla``; so their
   seconds are graph seconds), K's construction and CG eagerly (K as CSR). The traced total minus
   SEN minus G is the data step and glue (K's construction, CG, concatenations, clips, casts) **as
   the commands run it**, the number the issue's 15 % target is about; the eager K and CG seconds
   are printed beside it;
5. measures the peak again (the larger is kept).

**The flow.** SEN is run and timed (in the traced total too: the flow depends on its output
through a control dependency, so the graph cannot prune it), but its output is replaced by a
smooth synthetic flow: a random Gong flow field with |u|, |v| ≤ ``--u_max`` px
(:func:`data.motion_blur.random_flow`, the flow-23 model of §5), because a SEN with random weights
gives meaningless flows (near zero: K = 𝕀 and CG would stop after one iteration). The input O is a
sharp photo (scikit-image's astronaut) blurred by K of that flow, so CG's iteration counts are
those of a real flow-23 deblurring problem at the first global iteration; later global iterations
deconvolve the random G's output with the same flow.

Printed: the CPU, its ISA flags and whether it computes bfloat16 natively
(:func:`precision.native_bfloat16`: **without avx512_bf16 / amx_bf16, bfloat16 is emulated and
slower than float32**), then per precision: seconds per image (traced), the effective GFLOP/s of
the whole (2 x (SEN + levels x G) multiply-adds of :mod:`models.flops` per global iteration /
seconds) as a fraction of the fp32 peak, SEN, G and data step + glue seconds and shares of the
traced total, the eager split's K and CG seconds and CG iterations per level, the paper's seconds.
The per-global-iteration eager rows (g = 1..``--global_iterations``) are in the JSON. The load
average is printed at the start and the end: on a shared machine the seconds move with it; the
fractions of a peak measured at the same moment are the numbers to compare.

``--json FILE`` writes a list with one object per precision: ``model`` ("framework"),
``precision``, ``xla``, ``seconds`` (per image, traced), ``fraction_of_peak``, ``sen_seconds``,
``g_seconds``, ``data_step_seconds`` (traced total − SEN − G), their ``shares``, ``eager``
(the split per global iteration: SEN, K, CG, G seconds, CG iterations), the peak, load, CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402
import precision  # noqa: E402
from benchmarks import peak  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "precision",
    ["float32"],
    f"Network precisions, a comma list of {', '.join(precision.PRECISIONS)}.",
)
flags.DEFINE_string("size", "720x1280", "Image size HEIGHTxWIDTH (GoPro: 720x1280).")
flags.DEFINE_integer("levels", 3, "HQS levels N (the paper's 3).", lower_bound=1)
flags.DEFINE_integer(
    "global_iterations",
    1,
    "Global iterations; the eager split has rows 1..this (paper: 1-3).",
    lower_bound=1,
)
flags.DEFINE_float("u_max", 23.0, "Largest |u|, |v| of the synthetic flow (px).", lower_bound=1.0)
flags.DEFINE_integer("repeats", 1, "Timed runs of each path (median reported).", lower_bound=1)
flags.DEFINE_integer(
    "warmup", 1, "Untimed runs of each path at 64x128 first (tracing).", lower_bound=0
)
flags.DEFINE_bool(
    "eager_split", True, "Also run the eager split (K and CG seconds; one more full run)."
)
flags.DEFINE_bool("xla", False, "Compile SEN and G of the eager split with XLA.")
flags.DEFINE_integer(
    "peak_n", 4096, "Side of the fp32 matmul that measures the peak.", lower_bound=1
)
flags.DEFINE_integer("peak_repeats", 5, "Timed matmuls of the peak (best kept).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the synthetic flow and the random weights.")
flags.DEFINE_string("json", None, "Also write the rows (one per precision) to this JSON file.")
flags.DEFINE_string("child", None, "Internal: measure this precision and print one JSON row.")
cli.declare_key_flags(
    ["precision", "size", "levels", "global_iterations", "u_max", "repeats", "warmup", "xla"]
    + ["eager_split"]
    + ["peak_n", "peak_repeats", "seed", "json"]
)


@dataclasses.dataclass(frozen=True)
class FrameworkBenchmarkConfig:
    """One framework.py run, read from the flags once (:func:`config_from_flags`); ``child``: the
    precision a child process measures."""

    precision: tuple[str, ...] = ("float32",)
    size: str = "720x1280"
    levels: int = 3
    global_iterations: int = 1
    u_max: float = 23.0
    repeats: int = 1
    warmup: int = 1
    eager_split: bool = True
    xla: bool = False
    peak_n: int = 4096
    peak_repeats: int = 5
    seed: int = 0
    json: str | None = None
    child: str | None = None


def config_from_flags() -> FrameworkBenchmarkConfig:
    """framework.py's flags as one :class:`FrameworkBenchmarkConfig`."""
    names = [field.name for field in dataclasses.fields(FrameworkBenchmarkConfig)]
    values = {name: FLAGS[name].value for name in names}
    values["precision"] = tuple(values["precision"])
    return FrameworkBenchmarkConfig(**values)


def child_command(config: FrameworkBenchmarkConfig, name: str) -> list[str]:
    """The argv of the child process that measures precision ``name``."""
    settings = dataclasses.asdict(config)
    del settings["precision"], settings["json"], settings["child"]
    booleans = ("xla", "eager_split")
    flags_ = [f"--{key}={value}" for key, value in settings.items() if key not in booleans]
    flags_ += [f"--{'' if settings[key] else 'no'}{key}" for key in booleans]
    return [sys.executable, os.path.abspath(__file__), f"--child={name}", *flags_]


PARTS = ("sen", "operator", "cg", "g")
PART_NAMES = {"sen": "SEN", "operator": "K", "cg": "CG", "g": "G"}
PAPER_GPU_SECONDS = {1: 17.0, 2: 32.0, 3: 47.0}  # Table 2, NVIDIA 1080 Ti, GoPro 1280x720
WARMUP_SIZE = (64, 128)  # the warm-up problem: traces every function for any size, cheaply


class TimedSEN:
    """Runs the real SEN (``forward``) and waits for it, so that the eager split's SEN clock
    measures it, but returns ``flow`` (the synthetic flow of the image's size; see the module
    docstring)."""

    def __init__(self, forward, flow):
        self.forward, self.flow = forward, flow

    def __call__(self, images, training=False):
        del training
        self.forward(images).numpy()
        return self.flow


class SyntheticFlowSEN:
    """The SEN Keras model called as the framework calls it, returning the synthetic flow once
    SEN has run (a control dependency: inside the traced framework the graph still runs SEN).
    The flow is a variable of dynamic size (:meth:`set_flow`), so one trace serves the warm-up
    size and the measured one."""

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self.flow = tf.Variable(tf.zeros([1, 1, 1, 2]), shape=[1, None, None, 2], trainable=False)

    @property
    def variables(self):
        return self.model.variables

    def set_flow(self, flow):
        self.flow.assign(flow)
        return self

    def __call__(self, images, training=False):
        import tensorflow as tf

        estimated = self.model(images, training=training)
        with tf.control_dependencies([estimated]):
            return tf.identity(self.flow)


def sharp_photo(height: int, width: int):
    """scikit-image's astronaut resized to (height, width), float32 RGB in [0, 1]."""
    import cv2
    import numpy as np
    import skimage.data

    photo = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return photo.astype(np.float32) / 255.0


def problem(height: int, width: int, u_max: float, seed: int):
    """(O (1, H, W, 3), flow (1, H, W, 2)): the photo blurred by a smooth Gong flow ≤ u_max."""
    import numpy as np
    import tensorflow as tf

    from data import motion_blur
    from deconvolution.blur_operator import BlurOperator

    rng = np.random.default_rng(seed)
    flow = motion_blur.random_flow(rng, height, width, u_max, zero_prob=0.0)[None]
    flow = tf.constant(flow, tf.float32)
    sharp = tf.constant(sharp_photo(height, width)[None])
    blurred = tf.clip_by_value(BlurOperator(flow).forward(sharp), 0.0, 1.0)
    return blurred, flow


def build_parts(height: int, width: int, xla: bool):
    """(SEN model, G model, SEN forward, G forward, SEN MACs, G MACs per pass): full width,
    random weights, in the Keras policy in force; the two forwards (``tf.function``, any size)
    are the eager split's parts and the standalone SEN and G timings."""
    import tensorflow as tf

    import models
    from inference import flow_io
    from models import flops

    sen = models.build_flow_estimator("sen")
    sen.build((None, None, None, 3))
    generator = models.build_prior("rpgan_generator")
    generator.build((None, None, None, generator.in_channels))
    image = [tf.TensorSpec([1, None, None, 3], tf.float32)]
    pair = [tf.TensorSpec([1, None, None, generator.in_channels], tf.float32)]
    sen_forward = tf.function(
        lambda x: flow_io.estimate_flow(sen, x), input_signature=image, jit_compile=xla
    )
    g_forward = tf.function(
        lambda x: generator(x, training=False), input_signature=pair, jit_compile=xla
    )
    sen_macs = flops.count_macs(sen, height, width)
    g_macs = flops.count_macs(generator, height, width, channels=generator.in_channels)
    return sen, generator, sen_forward, g_forward, sen_macs, g_macs


def median_seconds(run, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``repeats`` calls of
    ``run`` (which waits for its result). CPU seconds count every thread of the process and
    move much less than wall seconds when other jobs share the cores."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def traced_path(config, sen, generator, problems):
    """The framework as the commands run it (:func:`inference.framework_io.framework_restorer`)
    on the warm-up problem (``config.warmup`` times: tracing), then on the measured one.

    Returns ``{"first_seconds", "seconds" (median), "cpu_seconds" (median),
    "data_step_alone_seconds", "data_step_alone_cpu_seconds"}``; the last two time the traced
    identity-prior ladder alone at the measured size (no networks; a first call compiles the XLA
    kernels of K's construction and CG for that size before the framework is timed).
    """
    import tensorflow as tf

    from deconvolution.framework import BlindDeblurFramework
    from inference import framework_io

    (small, small_flow), (blurred, flow) = problems
    sen_stand_in = SyntheticFlowSEN(sen)
    fw = BlindDeblurFramework(
        sen_stand_in, generator, levels=config.levels, global_iterations=config.global_iterations
    )
    restorer = framework_io.framework_restorer(fw, {"kind": "framework"}, traced=True)
    first = None
    sen_stand_in.set_flow(small_flow)
    for _ in range(config.warmup):
        start = time.perf_counter()
        restorer(small).numpy()
        first = first or time.perf_counter() - start
    identity = BlindDeblurFramework(None, None, levels=config.levels, flow_source="true")
    ladder = tf.function(lambda b, f: identity(b, f), autograph=False)
    ladder(blurred, flow).numpy()  # compiles the XLA kernels at this size
    alone = median_seconds(lambda: ladder(blurred, flow).numpy(), 1)
    sen_stand_in.set_flow(flow)
    seconds, cpu = median_seconds(lambda: restorer(blurred).numpy(), config.repeats)
    return {
        "first_seconds": first,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "data_step_alone_seconds": alone[0],
        "data_step_alone_cpu_seconds": alone[1],
    }


def eager_split(config, sen_forward, g_forward, problems):
    """The median timed eager run with timings (:meth:`intermediates`): (wall s, results);
    warm-up runs on the small problem."""
    from deconvolution.framework import BlindDeblurFramework

    def run(blurred, flow):
        sen = TimedSEN(sen_forward, flow)
        fw = BlindDeblurFramework(
            sen,
            lambda x, training=False: g_forward(x),
            levels=config.levels,
            global_iterations=config.global_iterations,
        )
        start = time.perf_counter()
        results = fw.intermediates(blurred, timings=True)
        results[-1]["z"][-1].numpy()
        return time.perf_counter() - start, results

    for _ in range(config.warmup):
        run(*problems[0])
    runs = [run(*problems[1]) for _ in range(config.repeats)]
    return sorted(runs, key=lambda run_: run_[0])[len(runs) // 2]


def measure(config: FrameworkBenchmarkConfig, name: str, height: int, width: int) -> dict:
    """Peak, the traced total, SEN and G alone, the eager split, the peak again: one
    precision's row."""
    import keras
    import tensorflow as tf

    precision.set_precision(name)  # before any network is built
    keras.utils.set_random_seed(config.seed)
    load_start = peak.load_average()
    peak_before = peak.matmul_peak(config.peak_n, config.peak_repeats)
    sen, generator, sen_forward, g_forward, sen_macs, g_macs = build_parts(
        height, width, config.xla
    )
    problems = [problem(*WARMUP_SIZE, config.u_max, config.seed)]
    problems.append(problem(height, width, config.u_max, config.seed))
    traced = traced_path(config, sen, generator, problems)
    (small, _), (blurred, _) = problems
    sen_forward(small).numpy(), g_forward(tf.concat([small, small], -1)).numpy()  # traces
    sen_clock = median_seconds(lambda: sen_forward(blurred).numpy(), config.repeats)
    pair = tf.concat([blurred, blurred], -1)
    g_clock = median_seconds(lambda: g_forward(pair).numpy(), config.repeats)
    eager = []
    if config.eager_split:
        wall, results = eager_split(config, sen_forward, g_forward, problems)
    peak_after = peak.matmul_peak(config.peak_n, config.peak_repeats)
    best_peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    if config.eager_split:
        counts = range(1, len(results) + 1)
        eager = [split_row(results[:g], sen_macs, g_macs, best_peak) for g in counts]
        eager[-1]["wall_seconds"] = wall
    passes = config.global_iterations
    gflops = 2 * (sen_macs + config.levels * g_macs) * passes / traced["seconds"] / 1e9
    row = {
        "model": "framework",
        "precision": name,
        "native_bfloat16": precision.native_bfloat16(),
        "xla": config.xla,
        "size": [height, width],
        "levels": config.levels,
        "global_iterations": passes,
        "u_max": config.u_max,
        **traced,
        "gflops": gflops,
        "fraction_of_peak": peak.fraction(gflops, best_peak),
        "g_pass_seconds": g_clock[0],
    }
    for clock in (0, 1):  # wall, then CPU seconds
        row |= part_seconds(
            traced, sen_clock[clock] * passes, g_clock[clock] * config.levels * passes, clock
        )
    return row | {
        "eager": eager,
        "sen_gmac": sen_macs / 1e9,
        "g_gmac_per_pass": g_macs / 1e9,
        "peak_gflops": best_peak["gflops"],
        "peak_gflops_before_after": [peak_before["gflops"], peak_after["gflops"]],
        "peak_rss_gib": peak.rss_gib(),
        "load": [load_start, peak.load_average()],
        "cpu": peak.cpu_info(),
        "paper_gpu_seconds": PAPER_GPU_SECONDS.get(passes),
    }


def part_seconds(traced, sen, g, clock) -> dict:
    """SEN's, G's and the data step's (traced total - SEN - G) seconds and shares of the traced
    total, in wall (``clock`` 0) or CPU (1) seconds."""
    suffix = ("seconds", "cpu_seconds")[clock]
    total = traced[suffix]
    data_step = total - sen - g
    shares = {"sen": sen / total, "g": g / total, "data_step": data_step / total}
    return {
        f"sen_{suffix}": sen,
        f"g_{suffix}": g,
        f"data_step_{suffix}": data_step,
        ("shares", "cpu_shares")[clock]: shares,
    }


def split_row(results, sen_macs, g_macs, best_peak) -> dict:
    """The eager split of the first ``len(results)`` global iterations."""
    parts = {part: sum(r["seconds"][part] for r in results) for part in PARTS}
    total = sum(parts.values())
    g = len(results)
    levels = len(results[0]["z"])
    sen_gflops = 2 * sen_macs * g / parts["sen"] / 1e9
    g_gflops = 2 * g_macs * levels * g / parts["g"] / 1e9
    return {
        "global_iterations": g,
        "seconds": total,
        "parts": parts,
        "shares": {part: parts[part] / total for part in PARTS},
        "cg_iterations": [[int(c) for c in r["cg_iterations"]] for r in results],
        "sen_fraction_of_peak": peak.fraction(sen_gflops, best_peak),
        "g_fraction_of_peak": peak.fraction(g_gflops, best_peak),
        "paper_gpu_seconds": PAPER_GPU_SECONDS.get(g),
    }


def print_table(config: FrameworkBenchmarkConfig, rows):
    """The rows as the printed header, markdown table and notes."""
    height, width = peak.parse_size(config.size)
    print(
        f"\nFramework at {height}x{width}, batch 1, levels {config.levels}, "
        f"{config.global_iterations} global iteration(s), CG tol 1e-5, <= 100 iterations; "
        "full-width SEN (2 stacks) and G, random weights; K from a smooth synthetic flow, |u|, "
        f"|v| <= {config.u_max:g} px. s/image: traced, as deblur.py / evaluate.py run it "
        f"(median of {config.repeats}, after {config.warmup} warm-up(s) at 64x128); SEN, G: "
        f"alone, graph (XLA {'on' if config.xla else 'off'}), G x levels; data step = s/image "
        "- SEN - G (K's construction, CG, glue), its CPU share the same in this process's CPU "
        "seconds (less sensitive to other jobs); data step alone: the traced identity-prior "
        "ladder without networks; eager K / CG: the eager split."
    )
    header = ["precision", "s/image", "of peak", "SEN s (share)", "G s (share)"]
    header += ["data step s (share)", "data step CPU share", "data step alone s"]
    header += ["eager K / CG s", "CG iterations"]
    header += ["peak GFLOP/s", "load", "paper s (1080 Ti)"]
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append([r["precision"], "failed", r["error"]] + [""] * (len(header) - 3))
            continue
        share, paper, eager = r["shares"], r["paper_gpu_seconds"], r["eager"]
        split = eager[-1]["parts"] if eager else None
        lines.append(
            [
                r["precision"],
                f"{r['seconds']:.1f}",
                f"{100 * r['fraction_of_peak']:.0f} %",
                f"{r['sen_seconds']:.1f} ({100 * share['sen']:.0f} %)",
                f"{r['g_seconds']:.1f} ({100 * share['g']:.0f} %)",
                f"{r['data_step_seconds']:.1f} ({100 * share['data_step']:.0f} %)",
                f"{100 * r['cpu_shares']['data_step']:.0f} %",
                f"{r['data_step_alone_seconds']:.1f}",
                f"{split['operator']:.1f} / {split['cg']:.1f}" if split else "-",
                " + ".join("/".join(map(str, c)) for c in eager[-1]["cg_iterations"])
                if eager
                else "-",
                f"{r['peak_gflops']:.1f}",
                "-".join(f"{v:.1f}" for v in r["load"]),
                "-" if paper is None else f"{paper:g}",
            ]
        )
    peak.print_markdown(lines)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"framework.py: error: unexpected arguments {argv[1:]}")
    config = config_from_flags()
    try:
        height, width = peak.parse_size(config.size)
        for name in config.precision + ((config.child,) if config.child else ()):
            precision.check_precision(name)
        if config.json:
            from inference import outputs

            outputs.check_file_target(config.json, "--json")
    except (ValueError, OSError) as error:
        sys.exit(f"framework.py: error: {error}")
    if config.child:
        cli.import_tensorflow()
        print(json.dumps(measure(config, config.child, height, width)))
        return
    machine = peak.describe_machine()
    if "bfloat16" not in machine:  # whether it is emulated decides the bfloat16 row
        bf16 = "native" if precision.native_bfloat16() else "emulated (slower than float32)"
        machine += f"; bfloat16 {bf16} on this CPU"
    print(machine, flush=True)
    rows = []
    for name in config.precision:
        row = peak.run_json_child(child_command(config, name), {"precision": name})
        rows.append(row)
        print(f"  {name}: {_summary(row)}", file=sys.stderr, flush=True)
    print_table(config, rows)
    peak.print_end_load()
    if config.json:
        from fileio import atomic_write_json

        atomic_write_json(config.json, rows)


def _summary(row) -> str:
    """One progress line of a row."""
    if "error" in row:
        return f"failed: {row['error']}"
    return (
        f"{row['seconds']:.1f} s/image, data step {row['data_step_seconds']:.1f} s "
        f"({100 * row['shares']['data_step']:.0f} %), peak {row['peak_gflops']:.0f} GFLOP/s"
    )


if __name__ == "__main__":
    cli.run(main)
