"""Seconds per training step, fraction of the machine's fp32 matmul peak and peak memory of
MIMO-UNet(+) on this machine's CPU (or GPU).

Runs the real training step (``training.mimo_unet_step.MimoUnetTrainStep`` inside the loop's
``tf.function`` under the default strategy; ``--xla on`` compiles that function with XLA, which
the training scripts do not) on random (blur, sharp) batches, discards warm-up steps (tracing),
and prints a table with the median and range of the timed steps, the effective GFLOP/s, its
fraction of the fp32 matmul peak measured in the same process before and after the steps
(:mod:`benchmarks.peak`; the larger is kept) and the process's peak resident memory
(``resource.getrusage`` ``ru_maxrss``: TensorFlow allocates outside Python, so tracemalloc would
miss it). Each configuration runs in a fresh subprocess, so peaks do not mix.

Work per step is counted as 3 x the forward's analytic multiply-adds (:mod:`models.flops`) x batch:
the forward, the gradient with respect to the activations and the one with respect to the weights
each cost about one forward; the loss, the optimizer and the activations are not counted.

    python benchmarks/train_step.py                          # MIMO-UNet, batch 4 x 256 x 256
    python benchmarks/train_step.py --variants mimo_unet,mimo_unet_plus --crops 128,256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import peak  # noqa: E402

# Forward + gradient w.r.t. activations + gradient w.r.t. weights, each about one forward.
TRAIN_MACS_PER_FORWARD_MAC = 3


def measure(variant, batch, crop, steps, warmup, threads, xla=False, peak_n=4096):
    """Times ``steps`` training steps after ``warmup`` ones; returns a dict of results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from models import flops
    from training.mimo_unet_step import MimoUnetTrainStep

    peak_before = peak.matmul_peak(peak_n)
    strategy = tf.distribute.get_strategy()
    step = MimoUnetTrainStep(variant, steps_per_epoch=1000)
    step.build(strategy)
    macs = flops.count_macs(step.model, crop, crop) * batch * TRAIN_MACS_PER_FORWARD_MAC
    train_fn = tf.function(lambda b, s: step.train_step(b, s), jit_compile=xla)
    rng = np.random.default_rng(0)
    sharp = tf.constant(rng.uniform(0, 1, (batch, crop, crop, 3)), tf.float32)
    blur = tf.constant(np.clip(sharp.numpy() + rng.normal(0, 0.05, sharp.shape), 0, 1), tf.float32)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = float(train_fn(blur, sharp)["loss"])  # float() waits for the step to finish
        if i >= warmup:
            times.append(time.perf_counter() - start)
    params = sum(int(np.prod(v.shape)) for v in step.model.trainable_variables)
    peak_after = peak.matmul_peak(peak_n)
    best_peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    gflops = 2 * macs / statistics.median(times) / 1e9
    return {
        "variant": variant,
        "xla": xla,
        "train_gmac": macs / 1e9,
        "gflops": gflops,
        "peak_gflops": best_peak["gflops"],
        "fraction_of_peak": peak.fraction(gflops, best_peak),
        "batch": batch,
        "crop": crop,
        "params": params,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loss": loss,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="mimo_unet")
    parser.add_argument("--crops", default="256")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (tracing)")
    parser.add_argument("--threads", type=int, default=0, help="TF thread pools (0 = default)")
    parser.add_argument(
        "--xla",
        choices=("off", "on", "both"),
        default="off",
        help="compile the step with XLA (off: as the training scripts run it)",
    )
    parser.add_argument("--peak_n", type=int, default=4096, help="side of the peak matmul")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.one:
        variant, crop, xla = args.one.split(":")
        result = measure(
            variant,
            args.batch,
            int(crop),
            args.steps,
            args.warmup,
            args.threads,
            xla=bool(int(xla)),
            peak_n=args.peak_n,
        )
        print("RESULT " + json.dumps(result))
        return
    print(peak.describe_machine())
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    rows = []
    for variant in args.variants.split(","):
        for crop in args.crops.split(","):
            for xla in settings:
                rows.append(_run_child(args, variant, crop, xla))
    _print_table(rows)
    print(f"load average at the end: {peak.load_average():.2f}")
    if args.json:
        from fileio import atomic_write_json

        atomic_write_json(args.json, rows)


def _run_child(args, variant, crop, xla):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        f"{variant}:{crop}:{int(xla)}",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--peak_n",
        str(args.peak_n),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.exit(f"benchmark of {variant} at {crop} px failed:\n{proc.stderr[-2000:]}")


def _print_table(rows):
    print(
        f"MIMO-UNet training step on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores; median of the timed steps after warm-up; "
        f"work = {TRAIN_MACS_PER_FORWARD_MAC} x forward MACs x batch."
    )
    header = (
        "model",
        "params",
        "batch x crop",
        "device",
        "XLA",
        "s/step median",
        "min-max",
        "GFLOP/s",
        "peak GFLOP/s",
        "of peak",
        "peak RSS MB",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["variant"],
                f"{r['params']:,}",
                f"{r['batch']} x {r['crop']}x{r['crop']}",
                r["device"],
                "on" if r["xla"] else "off",
                f"{r['median_s']:.2f}",
                f"{r['min_s']:.2f}-{r['max_s']:.2f}",
                f"{r['gflops']:.1f}",
                f"{r['peak_gflops']:.1f}",
                f"{100 * r['fraction_of_peak']:.0f} %",
                f"{r['peak_rss_mb']:.0f}",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
