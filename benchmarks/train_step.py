"""Seconds per training step, fraction of the machine's fp32 matmul peak and peak memory of every
paper's step (MIMO-UNet(+), IDC, Two-Way, SEN, the GradientNet GAN, RP-GAN) on this machine's CPU
(or GPU), in each ``--precision`` (float32, bfloat16, float16: :mod:`precision`).

Runs the real training step inside a ``tf.function`` under the default strategy (``--xla on``
compiles it with XLA, which the training scripts do not) on random (blur, sharp) batches, discards
warm-up steps (tracing), and prints a table with the median and range of the timed steps, the
effective GFLOP/s, its fraction of the fp32 matmul peak measured in the same process before and
after the steps (:mod:`benchmarks.peak`; the larger is kept) and the process's peak resident memory
(``resource.getrusage`` ``ru_maxrss``: TensorFlow allocates outside Python, so tracemalloc would
miss it). Each configuration runs in a fresh subprocess, so peaks do not mix.

``--variants`` names the steps: ``mimo_unet`` / ``mimo_unet_plus``
(``training.steps.mimo_unet_step.MimoUnetTrainStep``), ``idc`` and ``two_way`` (their paper steps,
polynomial decay over 1000 steps), ``sen`` (stage 1 of SEN, both stacks trained, on random
(blur, flow) batches) and ``gradientnet``
(``training.steps.gradientnet_step.GradientNetTrainStep``: the paper configuration, full width, 5
WGAN-GP critic updates then one generator update, VGG19 ``block4_conv3`` content term with seeded
random VGG weights, ``vgg_weights_path=None``; nothing is downloaded) and ``rpgan``
(``training.steps.rpgan_step.RPGANTrainStep``: the paper configuration, full width, one D_cGAN
update, one D_p update with weight clipping, one G update; VGG16 ``block2_conv2`` content term with
seeded random weights) on random (I*, O, I_s) batches (the deconvolved image, the blurred image, the
sharp image; the HQS data step that makes I* is not part of the step: see
``benchmarks/framework.py``). The paper trains RP-GAN with batch 16 of 256x256 crops: ``--variants
rpgan --batch 16``.

``--precision float32,bfloat16`` runs every configuration in each precision (its own process, the
Keras policy set before the networks are built); the rows then give bfloat16's speed-up over
float32 measured in the same run. bfloat16 is native only on CPUs with ``avx512_bf16`` or
``amx_bf16`` (the first line prints the CPU's flags); elsewhere it is emulated and slower.
``--json FILE`` writes one object per row with at least ``model``, ``precision``, ``xla``,
``seconds`` (median per step) and ``fraction_of_peak``.

Work per step (analytic multiply-adds of :mod:`models.flops`, convolution weights only, x batch;
losses, norms, activations and the optimizers are not counted):

* MIMO-UNet, IDC, Two-Way, SEN: 3 x the forward (the forward, the gradient with respect to the
  activations and the one with respect to the weights each cost about one forward).
* GradientNet GAN, with G, D, V the forward MACs of the generator, the critic and the VGG19 cut:
  each critic update is 12 D: 3 D for the sharp images and 3 D for G(b) (forward, gradients
  w.r.t. activations and weights), 6 D for the gradient penalty (forward 1, the nested tape's
  gradient w.r.t. the interpolated image 1, and the outer backprop through both, 2 each: the
  double backprop); the generator update is 3 G + 2 D + 3 V: G forward and backward, the critic
  forward on G(b) and its gradient w.r.t. the activations only (its weights are not updated), VGG
  forward on G(b) and on the sharp image plus the gradient through the G(b) branch. Total
  ``critic_steps`` x 12 D + 3 G + 2 D + 3 V.
* RP-GAN, with G, C, P, V the forward MACs of the generator, D_cGAN, D_p and the VGG16 cut: the
  D_cGAN update is 6 C (real and fake pairs, forward and both gradients), the D_p update 6 P (I*
  and O; clipping costs no MACs); the generator update is 3 G + 2 C + 3 P + 3 V: G forward (once
  per step, on the tape) and backward, D_cGAN forward on the fake pair and its activation
  gradient, D_p on G's output (forward and activation gradient) and on I_s (forward only), VGG on
  G's output and I_s plus the gradient of the first. Total 3 G + 8 C + 9 P + 3 V.

The GAN rows also split the step: in the same process, after the same warm-up, they time
``step.update_critics`` alone (GradientNet: the 5 critic updates; RP-GAN: the D_cGAN and D_p
updates; on a fixed G output) and
``step.update_generator`` (G forward on a tape, ``generator_loss``, one update), each in
its own ``tf.function``, interleaved with the full steps; "rest" is the full step minus the two
parts: the parts together do the step's work, so it is 0 s up to timing noise (on a machine shared
with other jobs, the noise). Each part's GFLOP/s uses its own share of the work.

    python benchmarks/train_step.py                          # MIMO-UNet, batch 4 x 256 x 256
    python benchmarks/train_step.py --variants mimo_unet,mimo_unet_plus --crops 128,256
    python benchmarks/train_step.py --variants gradientnet --steps 2 --warmup 1
    python benchmarks/train_step.py --variants rpgan --batch 16 --steps 2 --warmup 1
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
SINGLE_VARIANTS = (*MIMO_VARIANTS, "idc", "two_way", "sen")  # one network, one Adam
GAN_VARIANTS = ("gradientnet", "rpgan")
VARIANTS = SINGLE_VARIANTS + GAN_VARIANTS
PRECISIONS = ("float32", "bfloat16", "float16")
SIZE_MULTIPLE = 4  # every network here needs crops that are multiples of 4
MIN_GAN_CROP = 32  # Keras VGG16's and VGG19's smallest input

# Forward + gradient w.r.t. activations + gradient w.r.t. weights, each about one forward.
TRAIN_MACS_PER_FORWARD_MAC = 3
# One WGAN-GP critic update per critic-forward MAC: sharp 3 + G(b) 3 + penalty 6 (forward,
# gradient w.r.t. the input, and the outer backprop through both; see the module docstring).
CRITIC_UPDATE_MACS_PER_CRITIC_MAC = 12
# Generator update: G forward and backward 3 G, critic forward and activation gradient 2 D,
# VGG on G(b) and on the sharp image plus the activation gradient of the G(b) branch 3 V.
GENERATOR_UPDATE_MACS = {"generator": 3, "critic": 2, "vgg": 3}
FORWARD_KEYS = ("generator_forward", "critic_forward", "vgg_forward")  # per image, in gan_work
# RP-GAN (module docstring): D_cGAN update 6 C, D_p update 6 P; generator update 3 G + 2 C + 3 P
# + 3 V.
RPGAN_CRITIC_MACS = {"d_cgan": 6, "d_p": 6}
RPGAN_GENERATOR_MACS = {"generator": 3, "d_cgan": 2, "d_p": 3, "vgg": 3}


def _random_batch(batch, crop):
    """A (blur, sharp) pair of (batch, crop, crop, 3) float32 tensors in [0, 1]."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (batch, crop, crop, 3))
    blur = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1)
    return tf.constant(blur, tf.float32), tf.constant(sharp, tf.float32)


def _random_rpgan_batch(batch, crop):
    """An (I*, O, I_s) triple of (batch, crop, crop, 3) float32 tensors in [0, 1]: I* = I_s with
    ringing-like noise, O = I_s with blur-like noise (only the shapes and range matter here)."""
    import tensorflow as tf

    blur, sharp = _random_batch(batch, crop)
    deconvolved = tf.clip_by_value(sharp + 0.5 * (sharp - blur), 0.0, 1.0)
    return deconvolved, blur, sharp


def _set_threads(threads):
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def single_step(variant):
    """The (unbuilt) training step of a one-network variant at the paper's full width."""
    if variant in MIMO_VARIANTS:
        from training.steps.mimo_unet_step import MimoUnetTrainStep

        return MimoUnetTrainStep(variant, steps_per_epoch=1000)
    if variant == "idc":
        from training.steps.idc_step import IdcTrainStep

        return IdcTrainStep(total_steps=1000)
    if variant == "two_way":
        from training.steps.two_way_step import TwoWayTrainStep

        return TwoWayTrainStep(total_steps=1000)
    from training.steps.sen_step import SENTrainStep

    return SENTrainStep(stage=1)


def _single_batch(variant, batch, crop):
    """(blur, sharp) for a restorer's step; (blur, flow) in pixels for SEN's."""
    import numpy as np
    import tensorflow as tf

    blur, sharp = _random_batch(batch, crop)
    if variant != "sen":
        return blur, sharp
    flow = np.random.default_rng(1).uniform(-10, 10, (batch, crop, crop, 2))
    return blur, tf.constant(flow, tf.float32)


def measure(variant, batch, crop, steps, warmup, threads, xla=False, peak_n=4096, dtype=None):
    """Times ``steps`` training steps after ``warmup`` ones under ``dtype`` (a precision name,
    default float32); returns a dict of results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import precision

    precision.set_precision(dtype or "float32")
    if variant in GAN_VARIANTS:
        row = measure_gan(variant, batch, crop, steps, warmup, threads, xla=xla, peak_n=peak_n)
        return _with_common_keys(row, dtype)
    import numpy as np
    import tensorflow as tf

    _set_threads(threads)
    from models import flops

    peak_before = peak.matmul_peak(peak_n)
    strategy = tf.distribute.get_strategy()
    step = single_step(variant)
    step.build(strategy)
    macs = flops.count_macs(step.model, crop, crop) * batch * TRAIN_MACS_PER_FORWARD_MAC
    train_fn = tf.function(lambda b, s: step.train_step(b, s), jit_compile=xla)
    blur, sharp = _single_batch(variant, batch, crop)
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
    row = {
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
    return _with_common_keys(row, dtype)


def _with_common_keys(row, dtype):
    """The keys every benchmark row has (``--json``): model, precision, xla, seconds,
    fraction_of_peak."""
    return {
        "model": row["variant"],
        "precision": dtype or "float32",
        "seconds": row["median_s"],
        **row,
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


def rpgan_work(step, crop, batch) -> dict:
    """Multiply-adds of one RP-GAN step's parts (module docstring), for ``batch`` images; the same
    keys as :func:`gan_work` plus ``"d_p_forward"`` (``critic_forward`` is D_cGAN's)."""
    from models import flops

    def macs(model, channels=3):
        return flops.count_macs(model, crop, crop, channels=channels)

    forward = {
        "generator": macs(step.model, 6),
        "d_cgan": macs(step.critics["d_cgan"], 6),
        "d_p": macs(step.critics["d_p"]),
        "vgg": macs(step.vgg),
    }
    critic = sum(k * forward[name] for name, k in RPGAN_CRITIC_MACS.items()) * batch
    generator = sum(k * forward[name] for name, k in RPGAN_GENERATOR_MACS.items()) * batch
    return {
        "critic_updates": critic,
        "generator_update": generator,
        "total": critic + generator,
        "generator_forward": forward["generator"],
        "critic_forward": forward["d_cgan"],
        "d_p_forward": forward["d_p"],
        "vgg_forward": forward["vgg"],
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


def gan_setup(variant, crop, batch):
    """(built step, work dict, batch tensors) of a GAN variant (random VGG weights, never
    downloaded)."""
    import tensorflow as tf

    if variant == "rpgan":
        from training.steps.rpgan_step import RPGANTrainStep

        step = RPGANTrainStep(vgg_weights_path=None, log_lp_grad_ratio=False)  # the paper's step
        step.build(tf.distribute.get_strategy())
        return step, rpgan_work(step, crop, batch), _random_rpgan_batch(batch, crop)
    from training.steps.gradientnet_step import GradientNetTrainStep

    step = GradientNetTrainStep(vgg_weights_path=None)  # seeded random VGG19, never downloaded
    step.build(tf.distribute.get_strategy())
    return step, gan_work(step, crop, batch), _random_batch(batch, crop)


def _first(values):
    """``float`` of the first scalar of a step function's dict (waits for the function)."""
    return float(next(iter(values.values())))


def measure_gan(variant, batch, crop, steps, warmup, threads, xla=False, peak_n=4096):
    """A GAN step and its two parts, timed interleaved; returns a dict of results."""
    import tensorflow as tf

    _set_threads(threads)
    peak_before = peak.matmul_peak(peak_n)
    step, work, tensors = gan_setup(variant, crop, batch)
    full, critics, generator = gan_functions(step, xla)
    inputs, fake = tf.function(step.generate)(*tensors)  # G's output for the critic-only part
    runs = {
        "step": lambda: full(*tensors)["loss"],
        "critic": lambda: _first(critics(inputs, fake)),
        "generator": lambda: generator(*tensors)["loss"],
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
        "variant": variant,
        "xla": xla,
        "train_gmac": work["total"] / 1e9,
        "critic_gmac": work["critic_updates"] / 1e9,
        "generator_gmac": work["generator_update"] / 1e9,
        "forward_gmac": {k: v / 1e9 for k, v in work.items() if k.endswith("_forward")},
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
        "critic_params": sum(_count(critic) for critic in step.critics.values()),
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
            raise ValueError(f"--crops: {crop} < {MIN_GAN_CROP}, VGG's smallest input")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0 or args.peak_n < 1:
        raise ValueError("--batch, --steps and --peak_n must be positive, --warmup >= 0")
    if args.threads < 0:
        raise ValueError("--threads must be >= 0")
    unknown = sorted(set(precisions(args)) - set(PRECISIONS))
    if unknown or not precisions(args):
        raise ValueError(f"--precision: unknown {unknown}; choose from {list(PRECISIONS)}")
    return [(v, c) for v in variants for c in crops]


def precisions(args) -> list[str]:
    """The precisions of ``--precision`` (a comma list), in the order given."""
    return [p.strip() for p in args.precision.split(",") if p.strip()]


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
    parser.add_argument(
        "--precision",
        default="float32",
        help="comma list of float32, bfloat16, float16 (each in its own process); bfloat16 is "
        "native only with avx512_bf16 / amx_bf16, emulated (slower) on other CPUs",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    try:
        pairs = check_args(args)
    except ValueError as error:
        sys.exit(f"train_step.py: error: {error}")
    if args.one:
        variant, crop, xla, dtype = args.one.split(":")
        result = measure(
            variant,
            args.batch,
            int(crop),
            args.steps,
            args.warmup,
            args.threads,
            xla=bool(int(xla)),
            peak_n=args.peak_n,
            dtype=dtype,
        )
        print("RESULT " + json.dumps(result))
        return
    print(peak.describe_machine())
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    rows = []
    for variant, crop in pairs:
        for xla in settings:
            for dtype in precisions(args):
                rows.append(_run_child(args, variant, crop, xla, dtype))
    single = [r for r in rows if r["variant"] in SINGLE_VARIANTS]
    gan = [r for r in rows if r["variant"] in GAN_VARIANTS]
    if single:
        _print_table(single)
    printed = bool(single)
    for variant in GAN_VARIANTS:
        group = [r for r in gan if r["variant"] == variant]
        if group:
            if printed:
                print()
            _print_gan_table(group)
            printed = True
    peak.print_speedups(rows, key=lambda r: (r["variant"], _setting(r)))
    peak.print_end_load()
    if args.json:
        from fileio import atomic_write_json

        atomic_write_json(args.json, rows)


def _setting(row) -> str:
    return f"{row['batch']} x {row['crop']} px, XLA {'on' if row['xla'] else 'off'}"


def _run_child(args, variant, crop, xla, dtype):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        f"{variant}:{crop}:{int(xla)}:{dtype}",
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
    sys.exit(f"benchmark of {variant} at {crop} px ({dtype}) failed:\n{proc.stderr[-2000:]}")


def _print_table(rows):
    print(
        f"Single-network training steps on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores; median of the timed steps after warm-up; "
        f"work = {TRAIN_MACS_PER_FORWARD_MAC} x forward MACs x batch."
    )
    header = (
        "model",
        "precision",
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
                r["precision"],
                f"{r['params']:,}",
                f"{r['batch']} x {r['crop']}x{r['crop']}",
                r["device"],
                "on" if r["xla"] else "off",
                *_timing_cells(r),
                f"{r['peak_rss_mb']:.0f}",
            )
        )
    peak.print_markdown(lines, align="left")


def _print_gan_table(rows):
    """GAN rows: the whole step, then its split into the critic updates and the generator update."""
    print(_gan_title(rows[0]))
    header = (
        "model",
        "precision",
        "params G + critics",
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
                r["precision"],
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
    peak.print_markdown(lines, align="left")


def _gan_title(first):
    """The line above a GAN table: what one step does and its work formula (module docstring)."""
    forward = first["forward_gmac"]
    where = (
        f"on {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
        "medians of the timed steps after warm-up"
    )
    size = f"GMAC at {first['crop']}x{first['crop']}"
    if first["variant"] == "rpgan":
        return (
            "RP-GAN training step (1 D_cGAN update, 1 D_p update + clipping, 1 G update) on "
            f"random (I*, O, I_s) batches {where}; work = 3 G + 8 C + 9 P + 3 V per image (G "
            f"{forward['generator_forward']:.2f}, C = D_cGAN {forward['critic_forward']:.2f}, "
            f"P = D_p {forward['d_p_forward']:.2f}, V {forward['vgg_forward']:.2f} {size})."
        )
    return (
        f"GradientNet GAN training step ({first['critic_steps']} critic updates + 1 generator "
        f"update) {where}; work = critic_steps x 12 D + 3 G + 2 D + 3 V per image (G "
        f"{forward['generator_forward']:.2f}, D {forward['critic_forward']:.2f}, V "
        f"{forward['vgg_forward']:.2f} {size})."
    )


def _timing_cells(r):
    """Median and range of the step, GFLOP/s, the measured peak and the fraction of it."""
    return (
        f"{r['median_s']:.2f}",
        f"{r['min_s']:.2f}-{r['max_s']:.2f}",
        f"{r['gflops']:.1f}",
        f"{r['peak_gflops']:.1f}",
        f"{100 * r['fraction_of_peak']:.0f} %",
    )


if __name__ == "__main__":
    main()
