"""Seconds per training step, fraction of the machine's fp32 matmul peak and peak memory of
MIMO-UNet(+) and of the GradientNet GAN on this machine's CPU (or GPU).

Runs the real training step inside a ``tf.function`` under the default strategy (``--xla on``
compiles it with XLA, which the training scripts do not) on random (blur, sharp) batches, discards
warm-up steps (tracing), and prints a table with the median and range of the timed steps, the
effective GFLOP/s, its fraction of the fp32 matmul peak measured in the same process before and
after the steps (:mod:`benchmarks.peak`; the larger is kept) and the process's peak resident memory
(``resource.getrusage`` ``ru_maxrss``: TensorFlow allocates outside Python, so tracemalloc would
miss it). Each configuration runs in a fresh subprocess, so peaks do not mix.

``--variants`` names the steps: ``mimo_unet`` / ``mimo_unet_plus``
(``training.mimo_unet_step.MimoUnetTrainStep``) and ``gradientnet``
(``training.gradientnet_step.GradientNetTrainStep``: the paper configuration, full width, 5
WGAN-GP critic updates then one generator update, VGG19 ``block4_conv3`` content term with seeded
random VGG weights, ``vgg_weights_path=None``; nothing is downloaded).

Work per step (analytic multiply-adds of :mod:`models.flops`, convolution weights only, x batch;
losses, norms, activations and the optimizers are not counted):

* MIMO-UNet: 3 x the forward (the forward, the gradient with respect to the activations and the
  one with respect to the weights each cost about one forward).
* GradientNet GAN, with G, D, V the forward MACs of the generator, the critic and the VGG19 cut:
  each critic update is 12 D: 3 D for the sharp images and 3 D for G(b) (forward, gradients
  w.r.t. activations and weights), 6 D for the gradient penalty (forward 1, the nested tape's
  gradient w.r.t. the interpolated image 1, and the outer backprop through both, 2 each: the
  double backprop); the generator update is 3 G + 2 D + 3 V: G forward and backward, the critic
  forward on G(b) and its gradient w.r.t. the activations only (its weights are not updated), VGG
  forward on G(b) and on the sharp image plus the gradient through the G(b) branch. Total
  ``critic_steps`` x 12 D + 3 G + 2 D + 3 V.

The GradientNet row also splits the step: in the same process, after the same warm-up, it times
``step.update_critics`` alone (the 5 critic updates on a fixed G(b)) and
``step.update_generator`` (G forward on a tape, ``generator_loss``, one update), each in
its own ``tf.function``, interleaved with the full steps; "rest" is the full step minus the two
parts: the parts together do the step's work, so it is 0 s up to timing noise (on a machine shared
with other jobs, the noise). Each part's GFLOP/s uses its own share of the work.

    python benchmarks/train_step.py                          # MIMO-UNet, batch 4 x 256 x 256
    python benchmarks/train_step.py --variants mimo_unet,mimo_unet_plus --crops 128,256
    python benchmarks/train_step.py --variants gradientnet --steps 2 --warmup 1
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

MIMO_VARIANTS = ("mimo_unet", "mimo_unet_plus")
GAN_VARIANTS = ("gradientnet",)
VARIANTS = MIMO_VARIANTS + GAN_VARIANTS
SIZE_MULTIPLE = 4  # every network here needs crops that are multiples of 4
MIN_GAN_CROP = 32  # VGG19's smallest input

# Forward + gradient w.r.t. activations + gradient w.r.t. weights, each about one forward.
TRAIN_MACS_PER_FORWARD_MAC = 3
# One WGAN-GP critic update per critic-forward MAC: sharp 3 + G(b) 3 + penalty 6 (forward,
# gradient w.r.t. the input, and the outer backprop through both; see the module docstring).
CRITIC_UPDATE_MACS_PER_CRITIC_MAC = 12
# Generator update: G forward and backward 3 G, critic forward and activation gradient 2 D,
# VGG on G(b) and on the sharp image plus the activation gradient of the G(b) branch 3 V.
GENERATOR_UPDATE_MACS = {"generator": 3, "critic": 2, "vgg": 3}
FORWARD_KEYS = ("generator_forward", "critic_forward", "vgg_forward")  # per image, in gan_work


def _random_batch(batch, crop):
    """A (blur, sharp) pair of (batch, crop, crop, 3) float32 tensors in [0, 1]."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (batch, crop, crop, 3))
    blur = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1)
    return tf.constant(blur, tf.float32), tf.constant(sharp, tf.float32)


def _set_threads(threads):
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def measure(variant, batch, crop, steps, warmup, threads, xla=False, peak_n=4096):
    """Times ``steps`` training steps after ``warmup`` ones; returns a dict of results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if variant in GAN_VARIANTS:
        return measure_gan(batch, crop, steps, warmup, threads, xla=xla, peak_n=peak_n)
    import numpy as np
    import tensorflow as tf

    _set_threads(threads)
    from models import flops
    from training.mimo_unet_step import MimoUnetTrainStep

    peak_before = peak.matmul_peak(peak_n)
    strategy = tf.distribute.get_strategy()
    step = MimoUnetTrainStep(variant, steps_per_epoch=1000)
    step.build(strategy)
    macs = flops.count_macs(step.model, crop, crop) * batch * TRAIN_MACS_PER_FORWARD_MAC
    train_fn = tf.function(lambda b, s: step.train_step(b, s), jit_compile=xla)
    blur, sharp = _random_batch(batch, crop)
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


def gan_work(step, crop, batch) -> dict:
    """Multiply-adds of one GAN step's parts (see the module docstring), for ``batch`` images.

    Returns:
        ``{"critic_updates", "generator_update", "total"}`` MACs and the per-image forward MACs
        ``{"generator_forward", "critic_forward", "vgg_forward"}``.
    """
    from models import flops

    g = flops.count_macs(step.model, crop, crop)
    d = flops.count_macs(step.critics["critic"], crop, crop)
    v = 0 if step.vgg is None else flops.count_macs(step.vgg, crop, crop)
    critic = step.critic_steps * CRITIC_UPDATE_MACS_PER_CRITIC_MAC * d * batch
    k = GENERATOR_UPDATE_MACS
    generator = (k["generator"] * g + k["critic"] * d + k["vgg"] * v) * batch
    return {
        "critic_updates": critic,
        "generator_update": generator,
        "total": critic + generator,
        "generator_forward": g,
        "critic_forward": d,
        "vgg_forward": v,
    }


def gan_functions(step, xla):
    """``(full, critics, generator)`` step functions of a built GAN step object.

    ``full(blur, sharp)`` is ``step.train_step``; ``critics(inputs, fake)`` is
    ``step.update_critics``; ``generator(blur, sharp)`` is ``step.update_generator`` (G forward
    on the tape, ``generator_loss``, one update of G). Each returns a dict of
    scalars whose ``float()`` waits for the function (a ``tf.function`` runs all its updates
    before returning).
    """
    import tensorflow as tf

    full = tf.function(step.train_step, jit_compile=xla)
    critics = tf.function(step.update_critics, jit_compile=xla)
    return full, critics, tf.function(step.update_generator, jit_compile=xla)


def measure_gan(batch, crop, steps, warmup, threads, xla=False, peak_n=4096):
    """The GradientNet GAN step and its two parts, timed interleaved; returns a dict of results."""
    import tensorflow as tf

    _set_threads(threads)
    from training.gradientnet_step import GradientNetTrainStep

    peak_before = peak.matmul_peak(peak_n)
    step = GradientNetTrainStep(vgg_weights_path=None)  # seeded random VGG19, never downloaded
    step.build(tf.distribute.get_strategy())
    work = gan_work(step, crop, batch)
    full, critics, generator = gan_functions(step, xla)
    blur, sharp = _random_batch(batch, crop)
    inputs, fake = tf.function(step.generate)(blur, sharp)  # G(b) for the critic-only part
    runs = {
        "step": lambda: full(blur, sharp)["loss"],
        "critic": lambda: critics(inputs, fake)["critic_loss"],
        "generator": lambda: generator(blur, sharp)["loss"],
    }
    times = {name: [] for name in runs}
    loss = None
    for i in range(warmup + steps):
        for name, run in runs.items():
            start = time.perf_counter()
            value = float(run())  # float() waits for the function to finish
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
            if name == "step":
                loss = value
    peak_after = peak.matmul_peak(peak_n)
    best_peak = max(peak_before, peak_after, key=lambda p: p["gflops"])
    median = {name: statistics.median(values) for name, values in times.items()}
    gflops = 2 * work["total"] / median["step"] / 1e9
    critic_gflops = 2 * work["critic_updates"] / median["critic"] / 1e9
    generator_gflops = 2 * work["generator_update"] / median["generator"] / 1e9
    return {
        "variant": "gradientnet",
        "xla": xla,
        "train_gmac": work["total"] / 1e9,
        "critic_gmac": work["critic_updates"] / 1e9,
        "generator_gmac": work["generator_update"] / 1e9,
        "forward_gmac": {k: work[k] / 1e9 for k in FORWARD_KEYS},
        "critic_steps": step.critic_steps,
        "gflops": gflops,
        "peak_gflops": best_peak["gflops"],
        "fraction_of_peak": peak.fraction(gflops, best_peak),
        "critic_s": median["critic"],
        "critic_fraction_of_peak": peak.fraction(critic_gflops, best_peak),
        "generator_s": median["generator"],
        "generator_fraction_of_peak": peak.fraction(generator_gflops, best_peak),
        "rest_s": median["step"] - median["critic"] - median["generator"],
        "batch": batch,
        "crop": crop,
        "params": _count(step.model),
        "critic_params": _count(step.critics["critic"]),
        "median_s": median["step"],
        "min_s": min(times["step"]),
        "max_s": max(times["step"]),
        "all_s": times,
        "steps": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loss": loss,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }


def _count(model):
    import numpy as np

    return int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))


def check_args(args) -> list[tuple[str, int]]:
    """The (variant, crop) pairs to run; raises ``ValueError`` naming the bad flag."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if not variants or unknown:
        raise ValueError(f"--variants: unknown {unknown or variants}; choose from {list(VARIANTS)}")
    try:
        crops = [int(c) for c in args.crops.split(",")]
    except ValueError:
        raise ValueError(f"--crops {args.crops!r}: expected integers, e.g. 128,256") from None
    for crop in crops:
        if crop < 1 or crop % SIZE_MULTIPLE:
            raise ValueError(f"--crops: {crop} is not a positive multiple of {SIZE_MULTIPLE}")
        if crop < MIN_GAN_CROP and set(variants) & set(GAN_VARIANTS):
            raise ValueError(f"--crops: {crop} < {MIN_GAN_CROP}, VGG19's smallest input")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.peak_n < 1:
        raise ValueError("--batch, --steps and --peak_n must be positive, --warmup >= 0")
    if args.threads < 0:
        raise ValueError("--threads must be >= 0")
    return [(v, c) for v in variants for c in crops]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="mimo_unet", help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
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
    try:
        pairs = check_args(args)
    except ValueError as error:
        sys.exit(f"train_step.py: error: {error}")
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
    for variant, crop in pairs:
        for xla in settings:
            rows.append(_run_child(args, variant, crop, xla))
    mimo = [r for r in rows if r["variant"] in MIMO_VARIANTS]
    gan = [r for r in rows if r["variant"] in GAN_VARIANTS]
    if mimo:
        _print_table(mimo)
    if gan:
        if mimo:
            print()
        _print_gan_table(gan)
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
        "--variants",
        variant,
        "--crops",
        str(crop),
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
                *_timing_cells(r),
                f"{r['peak_rss_mb']:.0f}",
            )
        )
    _print_markdown(lines)


def _print_gan_table(rows):
    """GAN rows: the whole step, then its split into the critic updates and the generator update."""
    first = rows[0]
    forward = first["forward_gmac"]
    print(
        f"GradientNet GAN training step ({first['critic_steps']} critic updates + 1 generator "
        f"update) on {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
        "cores; medians of the timed steps after warm-up; work = critic_steps x 12 D + 3 G + "
        f"2 D + 3 V per image (G {forward['generator_forward']:.2f}, D "
        f"{forward['critic_forward']:.2f}, V {forward['vgg_forward']:.2f} GMAC at "
        f"{first['crop']}x{first['crop']})."
    )
    header = (
        "model",
        "params G + D",
        "batch x crop",
        "device",
        "XLA",
        "GMAC",
        "s/step median",
        "min-max",
        "GFLOP/s",
        "peak GFLOP/s",
        "of peak",
        "critic updates s (of peak)",
        "generator update s (of peak)",
        "rest s",
        "peak RSS MB",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["variant"],
                f"{r['params']:,} + {r['critic_params']:,}",
                f"{r['batch']} x {r['crop']}x{r['crop']}",
                r["device"],
                "on" if r["xla"] else "off",
                f"{r['train_gmac']:,.1f}",
                *_timing_cells(r),
                f"{r['critic_s']:.2f} ({100 * r['critic_fraction_of_peak']:.0f} %)",
                f"{r['generator_s']:.2f} ({100 * r['generator_fraction_of_peak']:.0f} %)",
                f"{r['rest_s']:+.2f}",
                f"{r['peak_rss_mb']:.0f}",
            )
        )
    _print_markdown(lines)


def _timing_cells(r):
    """Median and range of the step, GFLOP/s, the measured peak and the fraction of it."""
    return (
        f"{r['median_s']:.2f}",
        f"{r['min_s']:.2f}-{r['max_s']:.2f}",
        f"{r['gflops']:.1f}",
        f"{r['peak_gflops']:.1f}",
        f"{100 * r['fraction_of_peak']:.0f} %",
    )


def _print_markdown(lines):
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


if __name__ == "__main__":
    main()
