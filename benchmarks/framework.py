"""Seconds per image of the whole SEN + K + CG + G framework (``sen_rpgan.md`` §10) and the share
of each part, against the paper's 17 / 32 / 47 s per image on a GPU (§11, Table 2).

    python benchmarks/framework.py [--size 720x1280] [--levels 3] [--global_iterations 1]
        [--u_max 23] [--repeats 1] [--warmup 1] [--xla]

One process: the machine's fp32 matmul peak (:mod:`benchmarks.peak`), then the framework
(:class:`deconvolution.framework.BlindDeblurFramework`) at full width with random weights (the
default two-stack SEN, 76,974,030 parameters; the full G, up widths 256/128) on one H x W image,
``--warmup`` untimed runs of one global iteration (tracing, XLA compilation of the CG update),
then ``--repeats`` timed runs of ``--global_iterations``, then the peak again (the larger is
kept). The framework runs eagerly (``intermediates(timings=True)``, which waits for each part
before stopping its clock); SEN and G are each one ``tf.function`` (XLA with ``--xla``), as
``inference.flow_io`` runs SEN.

**The flow.** SEN is run and timed at every global iteration, on that iteration's input, but its
output is replaced by a smooth synthetic flow: a random Gong flow field with |u|, |v| ≤
``--u_max`` px (:func:`data.motion_blur.random_flow`, the flow-23 model of §5), because a SEN with
random weights gives meaningless flows (near zero: K = 𝕀 and CG would stop after one iteration).
The input O is a sharp photo (scikit-image's astronaut) blurred by K of that flow, so CG's
iteration counts are those of a real flow-23 deblurring problem at the first global iteration;
later global iterations deconvolve the random G's output with the same flow.

Printed, per number of global iterations g = 1..``--global_iterations`` (one run of the largest g;
its first g global iterations are exactly the g-iteration framework): seconds per image (SEN + K +
CG + G of those iterations, the median run), each part's seconds and share, the CG iterations per
level, SEN's and G's effective GFLOP/s as a fraction of the peak (analytic multiply-adds of
:mod:`models.flops`: SEN on the image padded to 64, 626.25 GMAC at 720x1280; G 933.85 GMAC per
pass at 1280x720), and the paper's seconds (PyTorch on an NVIDIA 1080 Ti). The framework's own
Python (concatenations, clips) is the whole call's wall time minus the four parts, printed once.
The load average is printed at the start and the end: on a shared machine the seconds move with
it; the fractions of a peak measured at the same moment are the numbers to compare.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402
from benchmarks import peak  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "720x1280", "Image size HEIGHTxWIDTH (GoPro: 720x1280).")
flags.DEFINE_integer("levels", 3, "HQS levels N (the paper's 3).", lower_bound=1)
flags.DEFINE_integer(
    "global_iterations",
    1,
    "Global iterations; rows 1..this are reported (paper: 1-3).",
    lower_bound=1,
)
flags.DEFINE_float("u_max", 23.0, "Largest |u|, |v| of the synthetic flow (px).", lower_bound=1.0)
flags.DEFINE_integer("repeats", 1, "Timed runs (the median run is reported).", lower_bound=1)
flags.DEFINE_integer("warmup", 1, "Untimed runs of one global iteration first.", lower_bound=0)
flags.DEFINE_bool("xla", False, "Compile SEN and G with XLA (the commands do not by default).")
flags.DEFINE_integer(
    "peak_n", 4096, "Side of the fp32 matmul that measures the peak.", lower_bound=1
)
flags.DEFINE_integer("peak_repeats", 5, "Timed matmuls of the peak (best kept).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the synthetic flow and the random weights.")
flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
cli.declare_key_flags(
    ["size", "levels", "global_iterations", "u_max", "repeats", "warmup", "xla", "peak_n"]
    + ["peak_repeats", "seed", "json"]
)


@dataclasses.dataclass(frozen=True)
class FrameworkBenchmarkConfig:
    """One framework.py run, read from the flags once (:func:`config_from_flags`)."""

    size: str = "720x1280"
    levels: int = 3
    global_iterations: int = 1
    u_max: float = 23.0
    repeats: int = 1
    warmup: int = 1
    xla: bool = False
    peak_n: int = 4096
    peak_repeats: int = 5
    seed: int = 0
    json: str | None = None


def config_from_flags() -> FrameworkBenchmarkConfig:
    """framework.py's flags as one :class:`FrameworkBenchmarkConfig`."""
    names = [field.name for field in dataclasses.fields(FrameworkBenchmarkConfig)]
    return FrameworkBenchmarkConfig(**{name: FLAGS[name].value for name in names})


PARTS = ("sen", "operator", "cg", "g")
PART_NAMES = {"sen": "SEN", "operator": "K", "cg": "CG", "g": "G"}
PAPER_GPU_SECONDS = {1: 17.0, 2: 32.0, 3: 47.0}  # Table 2, NVIDIA 1080 Ti, GoPro 1280x720


class TimedSEN:
    """Runs the real SEN (``forward``) and waits for it, so that the framework's SEN clock measures
    it, but returns ``flow`` (the synthetic flow; see the module docstring)."""

    def __init__(self, forward, flow):
        self.forward, self.flow = forward, flow

    def __call__(self, images, training=False):
        del training
        self.forward(images).numpy()
        return self.flow


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
    """(SEN forward, G callable, SEN MACs, G MACs per pass): full width, random weights."""
    import tensorflow as tf

    import models
    from inference import flow_io
    from models import flops

    sen = models.build_flow_estimator("sen")
    sen.build((None, None, None, 3))
    generator = models.build_prior("rpgan_generator")
    generator.build((None, None, None, generator.in_channels))
    sen_forward = tf.function(lambda x: flow_io.estimate_flow(sen, x), jit_compile=xla)
    g_forward = tf.function(lambda x: generator(x, training=False), jit_compile=xla)

    def g_call(inputs, training=False):
        del training
        return g_forward(inputs)

    sen_macs = flops.count_macs(sen, height, width)
    g_macs = flops.count_macs(generator, height, width, channels=generator.in_channels)
    return sen_forward, g_call, sen_macs, g_macs


def run_framework(framework, blurred):
    """(whole-call seconds, intermediates) of one eager run with timings."""
    start = time.perf_counter()
    results = framework.intermediates(blurred, timings=True)
    results[-1]["z"][-1].numpy()
    return time.perf_counter() - start, results


def measure(config: FrameworkBenchmarkConfig, height: int, width: int) -> dict:
    """Peak, the framework runs, the peak again; the result dict."""
    import keras

    from deconvolution.framework import BlindDeblurFramework

    keras.utils.set_random_seed(config.seed)
    load_start = peak.load_average()
    peak_before = peak.matmul_peak(config.peak_n, config.peak_repeats)
    sen_forward, g_call, sen_macs, g_macs = build_parts(height, width, config.xla)
    blurred, flow = problem(height, width, config.u_max, config.seed)
    sen = TimedSEN(sen_forward, flow)
    warm = BlindDeblurFramework(sen, g_call, levels=config.levels, global_iterations=1)
    start = time.perf_counter()
    for _ in range(config.warmup):
        run_framework(warm, blurred)
    warmup_seconds = time.perf_counter() - start
    framework = BlindDeblurFramework(
        sen, g_call, levels=config.levels, global_iterations=config.global_iterations
    )
    runs = [run_framework(framework, blurred) for _ in range(config.repeats)]
    peak_after = peak.matmul_peak(config.peak_n, config.peak_repeats)
    best_peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    wall, results = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    rows = [row(results[:g], sen_macs, g_macs, best_peak) for g in range(1, len(results) + 1)]
    return {
        "size": [height, width],
        "levels": config.levels,
        "betas": list(framework.betas),
        "u_max": config.u_max,
        "xla": config.xla,
        "sen_gmac": sen_macs / 1e9,
        "g_gmac_per_pass": g_macs / 1e9,
        "rows": rows,
        "wall_seconds": wall,
        "all_wall_seconds": [run[0] for run in runs],
        "other_seconds": wall - rows[-1]["seconds"],
        "warmup_seconds": warmup_seconds,
        "peak_gflops": best_peak["gflops"],
        "peak_gflops_before_after": [peak_before["gflops"], peak_after["gflops"]],
        "peak_rss_gib": peak.rss_gib(),
        "load": [load_start, peak.load_average()],
    }


def row(results, sen_macs, g_macs, best_peak) -> dict:
    """The numbers of the first ``len(results)`` global iterations."""
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
        "sen_gflops": sen_gflops,
        "g_gflops": g_gflops,
        "sen_fraction_of_peak": peak.fraction(sen_gflops, best_peak),
        "g_fraction_of_peak": peak.fraction(g_gflops, best_peak),
        "paper_gpu_seconds": PAPER_GPU_SECONDS.get(g),
    }


def print_table(config: FrameworkBenchmarkConfig, result):
    """The result as the printed header, markdown table and summary line."""
    height, width = result["size"]
    print(
        f"Framework at {height}x{width}, batch 1, levels {result['levels']} (betas "
        f"{', '.join(f'{b:g}' for b in result['betas'])}), CG tol 1e-5, <= 100 iterations; "
        "full-width SEN (2 stacks) and G, random weights; XLA "
        f"{'on' if result['xla'] else 'off'} for SEN and G; median of {config.repeats} run(s) "
        f"after {config.warmup} warm-up run(s) ({result['warmup_seconds']:.1f} s)."
    )
    print(
        f"SEN is run and timed, but K is built from a smooth synthetic flow, |u|, |v| <= "
        f"{result['u_max']:g} px (random SEN weights give meaningless flows); O = a photo "
        "blurred by that flow."
    )
    header = ["global it.", "s/image"] + [f"{PART_NAMES[p]} s (share)" for p in PARTS]
    header += ["CG iterations per level", "SEN of peak", "G of peak", "paper s (1080 Ti)"]
    lines = [header]
    for r in result["rows"]:
        paper = r["paper_gpu_seconds"]
        lines.append(
            [
                str(r["global_iterations"]),
                f"{r['seconds']:.1f}",
                *(f"{r['parts'][p]:.1f} ({100 * r['shares'][p]:.0f} %)" for p in PARTS),
                " + ".join("/".join(str(c) for c in counts) for counts in r["cg_iterations"]),
                f"{100 * r['sen_fraction_of_peak']:.0f} %",
                f"{100 * r['g_fraction_of_peak']:.0f} %",
                "-" if paper is None else f"{paper:g}",
            ]
        )
    peak.print_markdown(lines)
    print(
        f"SEN {result['sen_gmac']:.2f} GMAC per pass (padded to 64), G "
        f"{result['g_gmac_per_pass']:.2f} GMAC per pass; peak {result['peak_gflops']:.1f} "
        f"GFLOP/s (fp32 matmul, before/after "
        f"{'/'.join(f'{v:.1f}' for v in result['peak_gflops_before_after'])}); whole call "
        f"{result['wall_seconds']:.1f} s, of which {result['other_seconds']:.2f} s outside the "
        f"four parts; peak RSS {result['peak_rss_gib']:.2f} GiB; load average "
        f"{result['load'][0]:.2f} at the start."
    )


def main(argv):
    if len(argv) > 1:
        sys.exit(f"framework.py: error: unexpected arguments {argv[1:]}")
    config = config_from_flags()
    try:
        height, width = peak.parse_size(config.size)
        if config.json:
            from inference import outputs

            outputs.check_file_target(config.json, "--json")
    except (ValueError, OSError) as error:
        sys.exit(f"framework.py: error: {error}")
    cli.import_tensorflow()
    print(peak.describe_machine(), flush=True)
    result = measure(config, height, width)
    print_table(config, result)
    peak.print_end_load()
    if config.json:
        from fileio import atomic_write_json

        atomic_write_json(config.json, result)


if __name__ == "__main__":
    cli.run(main)
