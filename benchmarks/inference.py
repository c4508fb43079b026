"""Inference cost of every registered model: parameters, MACs and CPU time at 720x1280.

    python benchmarks/inference.py [--models mimo_unet,idc] [--height 720] [--width 1280]

For each model, in a fresh subprocess (so that peak memory is the model's own): the parameter
count, the analytic multiply-adds of one forward (convolution weights only, transposed
convolutions by input pixels; :mod:`models.flops`), the wall time of one forward of a single
H x W image (one warm-up pass, then the median of ``--repeats``), the effective GFLOP/s
(2 x multiply-adds / seconds) and the process's peak resident memory. The forward is a
``tf.function`` with a fixed input shape, the way ``evaluate.py`` runs it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_list("models", None, "Registry names to benchmark (default: all).")
flags.DEFINE_integer("height", 720, "Image height.")
flags.DEFINE_integer("width", 1280, "Image width.")
flags.DEFINE_integer("repeats", 3, "Timed forwards after the warm-up (median reported).")
flags.DEFINE_bool("jit_compile", True, "Compile the forward with XLA (much faster on CPU).")
flags.DEFINE_string("child", None, "Internal: benchmark this one model and print JSON.")


def measure(name: str, height: int, width: int, repeats: int) -> dict:
    """Builds ``name`` and returns its parameter count, MACs, seconds and peak memory."""
    import numpy as np
    import tensorflow as tf

    import models
    from models import flops, inference

    model = models.build_model(name)
    model.build((None, None, None, 3))
    macs = flops.count_macs(model, height, width)
    forward = tf.function(lambda x: inference.restore(model, x), jit_compile=FLAGS.jit_compile)
    image = tf.constant(np.random.default_rng(0).random((1, height, width, 3), np.float32))
    forward(image).numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(image).numpy()
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {
        "model": name,
        "parameters": int(model.count_params()),
        "gmac": macs / 1e9,
        "seconds": median,
        "gflops": 2 * macs / median / 1e9,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_child(name: str) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--child={name}",
        f"--height={FLAGS.height}",
        f"--width={FLAGS.width}",
        f"--repeats={FLAGS.repeats}",
        f"--jit_compile={FLAGS.jit_compile}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode:
        return {"model": name, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows, height, width):
    compiler = "XLA" if FLAGS.jit_compile else "no XLA"
    print(f"Inference at {height}x{width}, batch 1, {os.cpu_count()} CPU cores, {compiler}")
    header = ["model", "parameters", "GMAC", "seconds", "GFLOP/s", "peak RSS GiB"]
    lines = [header]
    for row in rows:
        if "error" in row:
            lines.append([row["model"], "failed", str(row["error"]), "", "", ""])
            continue
        lines.append(
            [
                row["model"],
                f"{row['parameters']:,}",
                f"{row['gmac']:.2f}",
                f"{row['seconds']:.2f}",
                f"{row['gflops']:.1f}",
                f"{row['peak_rss_gib']:.2f}",
            ]
        )
    print_markdown(lines)


def print_markdown(lines):
    """Prints rows of strings as a Markdown table (first row = header)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for index, line in enumerate(lines):
        print("| " + " | ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(measure(FLAGS.child, FLAGS.height, FLAGS.width, FLAGS.repeats)))
        return
    import models

    names = FLAGS.models or models.model_names()
    unknown = sorted(set(names) - set(models.model_names()))
    if unknown:
        raise app.UsageError(f"Unknown models {unknown}; registered: {models.model_names()}.")
    print_table([run_child(name) for name in names], FLAGS.height, FLAGS.width)


if __name__ == "__main__":
    app.run(main)
