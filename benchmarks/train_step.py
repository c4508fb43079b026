"""Seconds per training step and peak memory of MIMO-UNet(+) on this machine's CPU (or GPU).

Runs the real training step (``training.mimo_unet_step.MimoUnetTrainStep`` inside the loop's
``tf.function`` under the default strategy) on random (blur, sharp) batches, discards warm-up steps
(tracing), and prints a table with the median and range of the timed steps and the process's peak
resident memory (``resource.getrusage`` ``ru_maxrss``: TensorFlow allocates outside Python, so
tracemalloc would miss it). Each configuration runs in a fresh subprocess, so peaks do not mix.

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


def measure(variant, batch, crop, steps, warmup, threads):
    """Times ``steps`` training steps after ``warmup`` ones; returns a dict of results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from training.mimo_unet_step import MimoUnetTrainStep

    strategy = tf.distribute.get_strategy()
    step = MimoUnetTrainStep(variant, steps_per_epoch=1000)
    step.build(strategy)
    train_fn = tf.function(lambda b, s: step.train_step(b, s))
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
    return {
        "variant": variant,
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
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.one:
        variant, crop = args.one.split(":")
        result = measure(variant, args.batch, int(crop), args.steps, args.warmup, args.threads)
        print("RESULT " + json.dumps(result))
        return
    rows = []
    for variant in args.variants.split(","):
        for crop in args.crops.split(","):
            rows.append(_run_child(args, variant, crop))
    _print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _run_child(args, variant, crop):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        f"{variant}:{crop}",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.exit(f"benchmark of {variant} at {crop} px failed:\n{proc.stderr[-2000:]}")


def _print_table(rows):
    print(
        f"MIMO-UNet training step on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores; median of the timed steps after warm-up."
    )
    header = (
        "model",
        "params",
        "batch x crop",
        "device",
        "s/step median",
        "min-max",
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
                f"{r['median_s']:.2f}",
                f"{r['min_s']:.2f}-{r['max_s']:.2f}",
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
