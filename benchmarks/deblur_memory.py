"""Peak memory of deblur.py on a very large photograph (default 10000 x 8000, 80 Mpixel), for every
registered restorer and the blind deblurring framework.

    python benchmarks/deblur_memory.py                                 # full-width MIMO-UNet, slow
    python benchmarks/deblur_memory.py --models all --width_divisor 8  # every model, 1/8 width
    python benchmarks/deblur_memory.py --models all --probe 384        # inference.tiling's numbers

Generates a smooth random JPEG of ``--width`` x ``--height`` in a temporary folder, saves random
weights of each model (``--width_divisor`` divides its width, ``base_channels``; the framework's SEN
and G get ``width_divisor``), and runs ``deblur.py`` on it in a subprocess (``--tile auto`` under
the default ``--memory_budget_gb`` unless ``--deblur_args`` says otherwise), then, unless
``--no_reference``, once more with the same tile side and overlap on an image of 2 x 2 tiles (the
constant part: TensorFlow, the model, one tile's forward). Prints each run's peak resident set size
(``/usr/bin/time -f %M``, else ``getrusage`` of the children), seconds, and the marginal bytes per
pixel ``(peak - reference peak) / extra pixels`` (the image arrays).

**The framework** (``framework`` in ``--models``) needs a ``train_rpgan.py`` run folder; this script
writes one with random weights: ``run_config.json``, ``sen.weights.h5`` (two-stack SEN) and
``final.weights.h5`` (G), both at full width unless ``--width_divisor``. A random SEN's flow is near
zero (K = identity, few taps), which would understate K's memory, so the last stack's output block
is set to a constant flow of ``--flow`` px (16: a 45-px diagonal blur, about the tap count of an
average flow-46 field) while the rest of SEN runs as usual. The run's CG is capped at
``--cg_max_iter`` iterations (3): CG's memory does not depend on its iteration count, its time does.

``--probe SIDE`` measures, per model at the given width, what :mod:`inference.tiling` plans with:
the peak after TensorFlow, the model and a 64x64 forward (the base), then the peak of three
forwards of about SIDE x SIDE (the framework: two, with SEN's flow a flow-46 field); it prints the
base and the marginal bytes per pixel, in a child process that starts as ``deblur.py`` does
(glibc's mmap threshold fixed, TensorFlow imported without jax).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import peak  # noqa: E402

TIME = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
FRAMEWORK = "framework"
FULL_WIDTH = {"gradientnet": 64}  # the others: 32 (inference.tiling.full_width)
GIB = 2**30


def make_jpeg(path, height, width, seed=0):
    """A smooth random colour image (low-resolution noise upscaled, plus fine noise) as JPEG, built
    band by band so that this process never holds a float copy of it."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for top in range(0, height, 1024):
        band = image[top : top + 1024]
        band[...] = cv2.add(band, rng.integers(0, 12, band.shape, dtype=np.uint8))
    assert cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92])


def model_kwargs(name, divisor, extra=None):
    """The constructor arguments of ``name`` at 1/``divisor`` of its full width, plus ``extra``."""
    kwargs = {}
    if divisor > 1:
        if name == FRAMEWORK:
            kwargs = {"width_divisor": divisor}
        else:
            full = FULL_WIDTH.get(name, 32)
            kwargs = {"base_channels": max(1, full // divisor)}  # every restorer's width
    return {**kwargs, **(extra or {})}


# --------------------------------------------------------------------------------------------------
# Children: each builds models in a process of its own, so this one stays small
# --------------------------------------------------------------------------------------------------


def run_child(task: dict) -> str:
    """Runs ``task`` in a fresh interpreter (this script with ``--child``); returns its stdout."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(task)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{task['task']} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def child_weights(task):
    """Random weights of a restorer -> ``task["path"]``."""
    import models

    model = models.build_model(task["model"], **task["kwargs"])
    model.build((None, None, None, 3))
    model.save_weights(task["path"])


def constant_flow(sen, flow):
    """Makes SEN's output the constant flow (``flow``, ``flow``) px: the last stack's output block
    (:class:`models.sen.Res2Out`, main + skip convolutions) gets zero kernels and that bias."""
    out = sen.stacks[-1].out
    for conv in (out.conv, out.projection):
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
        conv.bias.assign(np.zeros(conv.bias.shape, np.float32))
    out.conv.bias.assign(np.full(out.conv.bias.shape, flow, np.float32))


def child_framework_run(task):
    """A ``train_rpgan.py`` run folder of random weights in ``task["path"]`` (module docstring)."""
    import models

    kwargs = task["kwargs"]
    generator = models.build_prior("rpgan_generator", **kwargs)
    generator.build((None, None, None, 6))
    sen = models.build_flow_estimator("sen", **kwargs)
    sen.build((None, None, None, 3))
    constant_flow(sen, task["flow"])
    run = task["path"]
    os.makedirs(run, exist_ok=True)
    config = {
        "model": "rpgan_generator",
        "model_kwargs": kwargs,
        "paper": "rpgan",
        "config": {},
        "sen": {"model": "sen", "model_kwargs": kwargs, "weights": "sen.weights.h5", "u_max": 46},
        "framework": {"levels": 3, "cg_tol": 1e-5, "cg_max_iter": task["cg_max_iter"]},
    }
    with open(os.path.join(run, "run_config.json"), "w") as handle:
        json.dump(config, handle)
    sen.save_weights(os.path.join(run, "sen.weights.h5"))
    generator.save_weights(os.path.join(run, "final.weights.h5"))


def status_mib():
    """(current, peak) resident MiB of this process (``/proc/self/status`` VmRSS, VmHWM)."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def probe_forward(name, kwargs):
    """The restorer deblur.py would run: (1, h, w, 3) float32 -> output (a traced function)."""
    if name != FRAMEWORK:
        import models
        from inference import sources

        model = models.build_model(name, **kwargs)
        model.build((None, None, None, 3))
        return sources.keras_restorer(model, source={"model": name, "model_kwargs": kwargs})
    return probe_framework(kwargs)


def probe_framework(kwargs):
    """The framework of full-width (or reduced) random SEN and G, traced as deblur.py runs it, with
    SEN's flow replaced by a smooth flow-46 field of the input's size (K's taps grow with it)."""
    import tensorflow as tf

    import models
    from data import motion_blur
    from deconvolution import framework as framework_lib

    sen = models.build_flow_estimator("sen", **kwargs)
    sen.build((None, None, None, 3))
    generator = models.build_prior("rpgan_generator", **kwargs)
    generator.build((None, None, None, 6))

    def field(height, width):
        flow = motion_blur.random_flow(np.random.default_rng(0), int(height), int(width), 46.0, 0.0)
        return flow.astype(np.float32)

    def flow_46(images, training=False):
        flow = sen(images, training=False)  # run, for its memory; its flow is replaced
        shape = tf.shape(images)
        replaced = tf.numpy_function(field, [shape[1], shape[2]], tf.float32, stateful=False)
        return flow * 0.0 + tf.reshape(replaced, tf.shape(flow))

    fw = framework_lib.BlindDeblurFramework(flow_46, generator, levels=3)
    spec = [tf.TensorSpec([1, None, None, 3], tf.float32)]
    return tf.function(fw, input_signature=spec, autograph=False)


def child_probe(task):
    """Base and marginal forward memory of one model (module docstring); prints one JSON row."""
    import deblur

    deblur.import_tensorflow_lean()
    name, side = task["model"], task["side"]
    forward = probe_forward(name, task["kwargs"])
    rng = np.random.default_rng(0)
    np.asarray(forward(rng.random((1, 64, 64, 3), dtype=np.float32)))
    base = status_mib()[1]
    start, pixels = time.perf_counter(), 0
    sizes = [(side, side + 4 * i) for i in range(2 if name == FRAMEWORK else 3)]
    for height, width in sizes:  # a few sizes: a retrace per size, as tiles of a photo differ
        np.asarray(forward(rng.random((1, height, width, 3), dtype=np.float32)))
        pixels = max(pixels, height * width)
    top = status_mib()[1]
    seconds = (time.perf_counter() - start) / len(sizes)
    marginal = (top - base) * 2**20 / pixels
    print(json.dumps({"model": name, "base_mib": base, "peak_mib": top, "side": side,
                      "bytes_per_pixel": marginal, "seconds": seconds}))  # fmt: skip


def child_names(task):
    """Prints the registered restorers' names as JSON."""
    import models

    del task
    print(json.dumps(models.model_names()))


CHILDREN = {
    "weights": child_weights,
    "framework_run": child_framework_run,
    "probe": child_probe,
    "names": child_names,
}


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------


def source_args(folder, name, kwargs, args):
    """deblur.py's model-source flags for ``name`` (weights or a framework run written here)."""
    path = os.path.join(folder, f"{name}-source")
    if name == FRAMEWORK:
        task = {"task": "framework_run", "path": path, "kwargs": kwargs}
        run_child({**task, "flow": args.flow, "cg_max_iter": args.cg_max_iter})
        return ["--checkpoint", path]
    path += ".weights.h5"
    run_child({"task": "weights", "model": name, "kwargs": kwargs, "path": path})
    return ["--weights", path, "--model", name, "--model_kwargs", json.dumps(kwargs)]


def run_deblur(image, source, extra):
    """Runs deblur.py on ``image``; returns (peak RSS bytes, seconds, stdout + stderr)."""
    out = os.path.join(os.path.dirname(image), "out")
    args = [os.path.join(REPO, "deblur.py"), "--input", image, "--out", out, "--overwrite"]
    report = image + ".time"
    command = [sys.executable, *args, *source, *extra]
    if TIME:
        command = [TIME, "-f", "%M", "-o", report, *command]
    env = dict(os.environ, PYTHONPATH=REPO)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"deblur.py failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if TIME:
        with open(report) as handle:
            top = int(handle.read().strip().splitlines()[-1]) * 1024
    else:
        top = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return top, seconds, done.stdout + done.stderr


def measure(folder, name, height, width, source, extra):
    """(name, height, width, peak RSS bytes, seconds, tile side or 'whole') of one deblur.py run."""
    os.makedirs(os.path.join(folder, name))
    image = os.path.join(folder, name, f"{name}.jpg")
    make_jpeg(image, height, width)
    top, seconds, log = run_deblur(image, source, extra)
    shutil.rmtree(os.path.join(folder, name))
    tiles = [line.split("in tiles of ")[1].split(" px")[0] for line in log.splitlines()
             if "in tiles of" in line]  # fmt: skip
    forced = extra[extra.index("--tile") + 1] if "--tile" in extra else None
    return name, height, width, top, seconds, tiles[0] if tiles else (forced or "whole")


def reference_run(tile, overlap):
    """(side, deblur.py flags) of the reference: a square of 2 x 2 tiles of side ``tile`` (any size
    multiple up to 16), or a 256 x 256 image restored whole."""
    if tile == "whole":
        return 256, []
    side = (2 * int(tile) - overlap - 16) // 16 * 16
    return side, ["--tile", tile, "--tile_overlap", str(overlap)]


def measure_model(name, args):
    """The rows of one model: the large image and (unless ``--no_reference``) 2 x 2 tiles."""
    extra = args.deblur_args.split()
    extra_kwargs = json.loads(args.model_kwargs)
    kwargs = model_kwargs(name, args.width_divisor, extra_kwargs)
    # The overlap deblur.py used (--tile auto raises the framework's to its 96 px).
    overlap = int(extra[extra.index("--tile_overlap") + 1]) if "--tile_overlap" in extra else 32
    if name == FRAMEWORK and "--tile" not in extra:
        overlap = max(overlap, 96)
    with tempfile.TemporaryDirectory(prefix="deblur_memory_") as folder:
        source = source_args(folder, name, kwargs, args)
        rows = [measure(folder, "large", args.height, args.width, source, extra)]
        if not args.no_reference:  # the constant: the same tiles on an image of 2 x 2 tiles
            side, more = reference_run(rows[0][-1], overlap)
            rest = [a for i, a in enumerate(extra) if not _is_tile_flag(extra, i)]
            rows.append(measure(folder, "reference", side, side, source, rest + more))
    return kwargs, rows


def _is_tile_flag(args, index):
    """Whether ``args[index]`` is ``--tile`` / ``--tile_overlap`` or the value after one."""
    flags = ("--tile", "--tile_overlap")
    return args[index] in flags or (index > 0 and args[index - 1] in flags)


def print_rows(name, kwargs, rows, args):
    """The Markdown rows of one model (Markdown table, one line per run)."""
    width = f"1/{args.width_divisor} {json.dumps(kwargs)}" if kwargs else "full"
    for label, height, image_width, top, seconds, tile in rows:
        per_pixel = top / (height * image_width)
        print(f"| {name} | {width} | {image_width}x{height} ({label}) | {tile} | "
              f"{top / GIB:.2f} GiB | {per_pixel:.1f} | {seconds:.0f} |", flush=True)  # fmt: skip
    if len(rows) == 2:
        large, small = rows
        pixels = large[1] * large[2] - small[1] * small[2]
        print(f"|   | marginal (image arrays): {(large[3] - small[3]) / pixels:.1f} bytes/pixel |")


def model_names(args):
    """``--models`` as names (``all``: every registered restorer, then the framework)."""
    registered = json.loads(run_child({"task": "names"}).strip().splitlines()[-1])
    names = registered + [FRAMEWORK] if args.models == "all" else args.models.split(",")
    unknown = [name for name in names if name not in registered + [FRAMEWORK]]
    if unknown:
        sys.exit(f"--models: unknown {unknown}; registered: {registered} and {FRAMEWORK}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=8000)
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--models", default="mimo_unet", help="comma list, or all (+ framework)")
    parser.add_argument("--width_divisor", type=int, default=1, help="1 = full width")
    parser.add_argument("--model_kwargs", default="{}", help="JSON, added to every model's")
    parser.add_argument("--deblur_args", default="", help="extra deblur.py flags, one string")
    parser.add_argument("--no_reference", action="store_true", help="skip the 2 x 2 tiles run")
    parser.add_argument("--flow", type=float, default=16.0, help="framework: SEN's flow (px)")
    parser.add_argument("--cg_max_iter", type=int, default=3, help="framework: CG's cap")
    parser.add_argument("--probe", type=int, default=0, help="measure tiling's constants at SIDE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task = json.loads(args.child)
        CHILDREN[task["task"]](task)
        return
    if args.width_divisor < 1:
        parser.error("--width_divisor must be >= 1")
    names = model_names(args)
    print(peak.describe_machine())
    if args.probe:
        probe(names, args)
        return
    print("| model | width | image | tile | peak RSS | bytes/pixel | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        kwargs, rows = measure_model(name, args)
        print_rows(name, kwargs, rows, args)
    peak.print_end_load()


def probe(names, args):
    """Prints, per model, the base and marginal forward memory (``--probe``)."""
    print("| model | width | base (MiB) | peak (MiB) | tile | forward bytes/pixel | s/forward |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        kwargs = model_kwargs(name, args.width_divisor, json.loads(args.model_kwargs))
        row = json.loads(run_child({"task": "probe", "model": name, "kwargs": kwargs,
                                    "side": args.probe}).strip().splitlines()[-1])  # fmt: skip
        print(f"| {name} | {json.dumps(kwargs) if kwargs else 'full'} | {row['base_mib']:.0f} | "
              f"{row['peak_mib']:.0f} | {row['side']} | {row['bytes_per_pixel']:.0f} | "
              f"{row['seconds']:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
