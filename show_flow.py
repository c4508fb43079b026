"""See the motion flow SEN estimates in your own photos: a .npy of the flow and a picture of it.

    python show_flow.py --input photo.jpg --checkpoint runs/sen
    python show_flow.py --input shots/ --out_dir flows/ --saved_model exports/sen --grid 24
    python show_flow.py --input a.png b.jpg c.png --weights sen.weights.h5 --model sen

Model sources: see :mod:`inference.flow_io` (``--checkpoint`` of a ``train_sen.py`` run,
``--weights`` + ``--model sen``, ``--saved_model`` of a flow export). ``--input`` is an image file
or a folder (every image directly inside it, except earlier ``*_flow.png`` outputs); more files may
follow as positional arguments. Images are read as 8-bit RGB (16-bit, grayscale and alpha images
are converted), estimated whole at any size (padded to SEN's multiple of 64 and cropped back; no
tiling: a full-width SEN peaks at about 1.9 GB resident at 1280x720).

Per image ``<stem>``, next to the input or in ``--out_dir``:

* ``<stem>_flow.npy``: float32 (H, W, 2), pixels, ``uv_half`` (u right, v down, u >= 0): the
  per-pixel blur kernel is the centred segment of length sqrt(u^2 + v^2) along (u, v)
  (``../shared/specs/sen_rpgan.md`` §2).
* ``<stem>_flow.png``: left, the image (dimmed) with every ``--grid``-th pixel's kernel drawn as a
  green line centred on the pixel (true length); right, the Middlebury optical-flow colour code
  (hue = direction, saturation = magnitude / ``--max_flow``, default the image's largest) with a
  colour-wheel inset (:mod:`inference.flow_vis`). ``uv_half`` leaves only the right half of the
  wheel in use.

Every input is checked (exists, OpenCV has a reader for it) and every output location (writable,
no two inputs with one output, existing outputs refused unless ``--overwrite``) before the model is
loaded; an image that cannot be decoded stops the command with ``show_flow.py: error: <file>:
<problem>`` and exit status 1, the outputs written before it complete. Writes are atomic. Each
``input -> outputs`` line is printed on stdout.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys

import cv2
import numpy as np
from absl import flags

import cli
import fileio
from cli import inference_flags
from inference import outputs
from inference.source_config import ModelSource

FLAGS = flags.FLAGS
_define = cli.define_once
_define(flags.DEFINE_string, "input", None, "An image file or a folder of images.")
_define(flags.DEFINE_string, "out_dir", None, "Output folder (default: next to each input).")
_define(flags.DEFINE_integer, "grid", 16, "Draw a kernel glyph at every N-th pixel.")
_define(
    flags.DEFINE_float,
    "max_flow",
    0.0,
    "Magnitude (px) drawn fully saturated in the colour code; 0 = each image's largest.",
)
inference_flags.define_overwrite_flag()
inference_flags.define_jit_flag()
KEY_FLAGS = ["input", "out_dir", "grid", "max_flow", "overwrite"]
cli.declare_key_flags([*KEY_FLAGS, *inference_flags.FLOW_SOURCE_FLAGS, "jit_compile"])

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
SUFFIX = "_flow"
# Decoder messages meaning the data is damaged although OpenCV returned an image (libjpeg fills a
# truncated JPEG with grey and only warns).
DAMAGE_WORDS = ("corrupt", "premature end", "error", "invalid", "truncated")


class ShowFlowError(ValueError):
    """A bad input or output; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Inputs and outputs, checked before the model is loaded
# --------------------------------------------------------------------------------------------------


def list_inputs(paths):
    """The image files to process: each path itself, or the images directly inside a folder."""
    files = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            files.extend(_folder_images(path))
        else:
            raise ShowFlowError(f"{path}: no such file or folder.")
    if not files:
        raise ShowFlowError(f"--input {' '.join(paths)}: no image files found.")
    return files


def _folder_images(folder):
    images = []
    for name in sorted(os.listdir(folder)):
        stem, extension = os.path.splitext(name)
        full = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(full) or stem.endswith(SUFFIX):
            continue
        if extension.lower() in IMAGE_EXTENSIONS:
            images.append(full)
    return images


def output_paths(path, out_dir):
    """(``<stem>_flow.npy``, ``<stem>_flow.png``) in ``out_dir`` or beside ``path``."""
    stem = os.path.splitext(os.path.basename(path))[0] + SUFFIX
    folder = out_dir or os.path.dirname(os.path.abspath(path))
    return os.path.join(folder, stem + ".npy"), os.path.join(folder, stem + ".png")


def plan_outputs(inputs, out_dir=None, overwrite=False):
    """``[(input, npy, png), ...]`` after checking every input and output location."""
    flag = "--out_dir" if out_dir else "--input"
    if out_dir:
        outputs.check_folder(out_dir, "--out_dir")
    plan, sources = [], {}
    for path in inputs:
        if not cv2.haveImageReader(path):
            raise ShowFlowError(f"{path}: not an image file OpenCV can read.")
        npy, png = output_paths(path, out_dir)
        if os.path.abspath(png) == os.path.abspath(path):
            raise ShowFlowError(f"{path}: the output would overwrite the input; use --out_dir.")
        if npy in sources:
            raise ShowFlowError(
                f"{sources[npy]} and {path} would both be written to {npy}; process them "
                "separately or rename one."
            )
        sources[npy] = path
        if not out_dir:
            outputs.check_folder(os.path.dirname(npy), "--input")
        for target in (npy, png):
            outputs.check_file_target(target, flag)
        plan.append((path, npy, png))
    targets = [target for _, npy, png in plan for target in (npy, png)]
    outputs.refuse_existing(targets, flag, overwrite)
    return plan


# --------------------------------------------------------------------------------------------------
# Processing
# --------------------------------------------------------------------------------------------------


def read_rgb(path) -> np.ndarray:
    """uint8 RGB (H, W, 3) of any image OpenCV reads; damage raises :class:`ShowFlowError`."""
    from data import image_io
    from data.errors import DataError

    with cli.stderr_captured() as captured:  # the decoder's own words explain the damage
        try:
            image = image_io.decode_rgb(path)
        except DataError as error:
            raise ShowFlowError(str(error)) from None
        text = captured()
    messages = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if any(word in messages.lower() for word in DAMAGE_WORDS):
        raise ShowFlowError(f"{path}: damaged image data ({messages}).")
    return image


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def show_file(estimator, path, npy, png, grid=16, max_flow=0.0):
    """Estimates, writes the .npy and the picture of one image; returns the (H, W, 2) flow."""
    from inference import flow_vis

    image = read_rgb(path)
    flow = np.asarray(estimator(image[None].astype(np.float32) / 255.0), np.float32)[0]
    figure = flow_vis.flow_figure(image, flow, grid, max_flow or None)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ShowFlowError(f"{png}: PNG encoding failed.")
    fileio.atomic_write_bytes(npy, npy_bytes(flow))
    fileio.atomic_write_bytes(png, memoryview(encoded))
    return flow


def describe(flow) -> str:
    from inference import flow_vis

    length = flow_vis.flow_magnitude(flow)
    return f"kernel length mean {length.mean():.2f} px, max {length.max():.2f} px"


def run(estimator, plan, grid=16, max_flow=0.0) -> int:
    """Processes every ``(input, npy, png)`` in order; stops at the first bad file."""
    for path, npy, png in plan:
        flow = show_file(estimator, path, npy, png, grid, max_flow)
        print(f"{path} -> {npy}, {png} ({describe(flow)})", flush=True)
    return len(plan)


@dataclasses.dataclass(frozen=True)
class ShowFlowConfig:
    """One show_flow.py run, read from the flags and arguments once (:func:`config_from_flags`);
    ``inputs`` are ``--input`` and the positional paths."""

    source: ModelSource
    inputs: tuple[str, ...] = ()
    out_dir: str | None = None
    grid: int = 16
    max_flow: float = 0.0
    overwrite: bool = False


def config_from_flags(argv) -> ShowFlowConfig:
    """show_flow.py's flags (and positional paths) as one :class:`ShowFlowConfig`."""
    return ShowFlowConfig(
        source=inference_flags.model_source(),
        inputs=tuple(([FLAGS.input] if FLAGS.input else []) + list(argv[1:])),
        out_dir=FLAGS.out_dir,
        grid=FLAGS.grid,
        max_flow=FLAGS.max_flow,
        overwrite=FLAGS.overwrite,
    )


def check_config(config: ShowFlowConfig):
    """Every setting and path check that needs no model; returns the plan."""
    if not config.inputs:
        raise ShowFlowError("--input is required (an image file or a folder).")
    if config.grid < 1:
        raise ShowFlowError(f"--grid {config.grid}: must be a positive number of pixels.")
    if config.max_flow < 0:
        raise ShowFlowError(f"--max_flow {config.max_flow}: must be >= 0 (0 = each image's max).")
    return plan_outputs(list_inputs(list(config.inputs)), config.out_dir, config.overwrite)


def main(argv):
    config = config_from_flags(argv)
    try:
        plan = check_config(config)
        cli.import_tensorflow()
        from inference import flow_io

        estimator = flow_io.flow_estimator_from_source(config.source)
        count = run(estimator, plan, config.grid, config.max_flow)
    except (ValueError, OSError, cv2.error) as error:  # + OutputError, ModelSourceError
        sys.exit(f"show_flow.py: error: {error}")
    print(f"Estimated the flow of {count} image(s).")


if __name__ == "__main__":
    cli.run(main)
