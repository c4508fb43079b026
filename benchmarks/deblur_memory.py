"""Peak memory of deblur.py on a very large photograph (default 10000 x 8000, 80 Mpixel).

    python benchmarks/deblur_memory.py                                   # full MIMO-UNet (slow)
    python benchmarks/deblur_memory.py --model_kwargs '{"base_channels": 8, "num_res": 1}'

Generates a smooth random JPEG of ``--width`` x ``--height`` in a temporary folder, saves random
weights of the model, and runs ``deblur.py`` on it in a subprocess (``--tile auto`` with the
default ``--memory_budget_gb`` unless given), once on the large image and once, with the same tile
side, on an image of 2 x 2 tiles (the constant: TensorFlow, the model, one tile's forward pass).
Prints the peak resident set size
of each run (``/usr/bin/time -f %M``, else ``getrusage`` of the children), seconds, and bytes per
pixel: the peak over the image's pixels and the marginal cost ``(peak - small peak) / pixels``,
which is what the image arrays take. The arrays' memory does not depend on the model, so a
width-reduced model shows the bound in a minute; the full model takes tens of minutes on 2 cores.
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
TIME = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)


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


def save_weights(folder, model, kwargs):
    """Random weights of ``model`` (built in a subprocess, so this process stays small)."""
    path = os.path.join(folder, "random.weights.h5")
    code = (
        "import json, sys, models; m = models.build_model(sys.argv[1], **json.loads(sys.argv[2]));"
        "m.build((None, None, None, 3)); m.save_weights(sys.argv[3])"
    )
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-c", code, model, json.dumps(kwargs), path]
    subprocess.run(command, env=env, check=True)
    return path


def run_deblur(image, weights, model, kwargs, extra):
    """Runs deblur.py on ``image``; returns (peak RSS bytes, seconds, stdout)."""
    out = os.path.join(os.path.dirname(image), "out")
    args = [os.path.join(REPO, "deblur.py"), "--input", image, "--out", out, "--overwrite"]
    args += ["--weights", weights, "--model", model, "--model_kwargs", json.dumps(kwargs), *extra]
    report = image + ".time"
    command = [sys.executable, *args]
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
            peak = int(handle.read().strip().splitlines()[-1]) * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return peak, seconds, done.stdout + done.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=8000)
    parser.add_argument("--width", type=int, default=10000)
    parser.add_argument("--model", default="mimo_unet")
    parser.add_argument("--model_kwargs", default="{}", help="JSON, e.g. a reduced width")
    parser.add_argument("--deblur_args", default="", help="extra deblur.py flags, one string")
    args = parser.parse_args()
    kwargs = json.loads(args.model_kwargs)
    extra = args.deblur_args.split()
    with tempfile.TemporaryDirectory(prefix="deblur_memory_") as folder:
        weights = save_weights(folder, args.model, kwargs)
        large = measure(folder, "large", args.height, args.width, weights, args, kwargs, extra)
        # The constant: the same tiles on an image of 2 x 2 tiles (whole: a 256 x 256 image).
        tile = large[-1]
        side = 256 if tile == "whole" else 2 * int(tile)
        more = [] if tile == "whole" else ["--tile", tile]
        small = measure(folder, "reference", side, side, weights, args, kwargs, extra + more)
    print(f"model {args.model} {kwargs or '(full)'}; deblur.py {' '.join(extra) or '--tile auto'}")
    print("| image | tile | peak RSS | bytes/pixel | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name, height, width, peak, seconds, tile in (large, small):
        print(
            f"| {width}x{height} ({name}) | {tile} | {peak / 2**30:.2f} GiB | "
            f"{peak / (height * width):.1f} | {seconds:.1f} |"
        )
    pixels = args.height * args.width - small[1] * small[2]
    marginal = (large[3] - small[3]) / pixels
    print(f"marginal: (large - reference peak) / extra pixels = {marginal:.1f} bytes")


def measure(folder, name, height, width, weights, args, kwargs, extra):
    """(name, height, width, peak RSS bytes, seconds, tile side or 'whole') of one deblur.py run."""
    os.makedirs(os.path.join(folder, name))
    image = os.path.join(folder, name, f"{name}.jpg")
    make_jpeg(image, height, width)
    peak, seconds, log = run_deblur(image, weights, args.model, kwargs, extra)
    os.remove(image)
    tiles = [line.split("in tiles of ")[1].split(" px")[0] for line in log.splitlines()
             if "in tiles of" in line]  # fmt: skip
    forced = extra[extra.index("--tile") + 1] if "--tile" in extra else None
    return name, height, width, peak, seconds, tiles[0] if tiles else (forced or "whole")


if __name__ == "__main__":
    main()
