"""Deblurs your own images: one file or every image in a folder, any size, any format OpenCV reads.

    python deblur.py --input photo.jpg --weights mimo_unet.weights.h5 --model mimo_unet
    python deblur.py --input shots/ --out sharp/ --saved_model exports/mimo_unet --tile 512

Model sources: see :mod:`inference.model_io`. Each output is a PNG named ``<stem><suffix>.png``
(``--suffix``, default ``_deblurred``), written atomically next to its input or into ``--out``.

What is read (``cv2.IMREAD_UNCHANGED``) and written:

* 8-bit colour (BGR): deblurred as RGB, written as 8-bit colour.
* grayscale: replicated to three channels, deblurred, averaged back to one, written as grayscale.
* with alpha (BGRA): the colour is deblurred, the alpha channel is copied unchanged.
* 16-bit: processed in float (value / 65535) and written as a 16-bit PNG, so no precision is lost.
* anything else (float images, 2-channel images, unreadable files) is refused with a message naming
  the file; the other files are still processed and the exit status is non-zero at the end.

Outputs are clamped to [0, 1] and rounded to the file's bit depth. ``--tile SIZE`` restores large
images in overlapping tiles blended with a raised-cosine window (:mod:`inference.tiling`): the
network's memory is then bounded by the tile size (the image and its float32 accumulators still take
about 30 bytes per pixel); ``--tile_overlap`` should exceed the model's effective receptive field
for seamless results. When a folder is given, files already ending in the suffix are skipped.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np
from absl import app, flags, logging

import cli
from inference import flags as inference_flags
from inference import model_io, tiling

FLAGS = flags.FLAGS
_define = cli.define_once
_define(flags.DEFINE_string, "input", None, "An image file or a folder of images.")
_define(
    flags.DEFINE_string, "out", None, inference_flags.OUT_HELP + " Default: next to each input."
)
_define(flags.DEFINE_integer, "tile", 0, "Tile side in pixels for large images (0 = whole).")
_define(flags.DEFINE_integer, "tile_overlap", 32, "Minimum overlap of neighbouring tiles (px).")
_define(flags.DEFINE_string, "suffix", "_deblurred", "Appended to the input's stem for outputs.")
inference_flags.define_jit_flag()

# Extensions OpenCV can decode (cv2.imread); other files in a folder are skipped, not failed.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm"}
    | {".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic"}
)
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class ImageError(ValueError):
    """An image that cannot be read, processed or written; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------


def read_image(path):
    """Reads ``path`` -> (RGB (H, W, 3) float32 in [0, 1], layout dict for :func:`write_image`)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not readable as an image by OpenCV.")
    if image.dtype not in MAX_VALUE:
        raise ImageError(f"{path}: {image.dtype} samples are not supported (8- or 16-bit only).")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels not in (1, 3, 4):
        raise ImageError(f"{path}: {channels} channels are not supported (1, 3 or 4).")
    layout = {"dtype": image.dtype, "gray": channels == 1, "alpha": None}
    if channels == 1:
        rgb = np.repeat(image[..., None], 3, axis=2)
    else:
        rgb = image[..., 2::-1]  # BGR(A) -> RGB
        layout["alpha"] = image[..., 3] if channels == 4 else None
    return rgb.astype(np.float32) / np.float32(MAX_VALUE[image.dtype]), layout


def to_file_values(rgb, layout):
    """Restored RGB float (H, W, 3) -> the array OpenCV writes (gray, BGR or BGRA, input depth)."""
    maximum = MAX_VALUE[layout["dtype"]]
    if layout["gray"]:
        rgb = rgb.mean(axis=2, keepdims=True)
    values = np.rint(np.clip(rgb, 0.0, 1.0) * maximum).astype(layout["dtype"])
    if layout["gray"]:
        return values[..., 0]
    values = values[..., ::-1]
    if layout["alpha"] is not None:
        values = np.concatenate([values, layout["alpha"][..., None]], axis=2)
    return np.ascontiguousarray(values)


def write_image(path, rgb, layout):
    """Encodes as PNG and writes ``path`` atomically (temporary file + rename)."""
    ok, encoded = cv2.imencode(".png", to_file_values(rgb, layout))
    if not ok:
        raise ImageError(f"{path}: PNG encoding failed.")
    model_io.atomic_write_bytes(path, encoded.tobytes())


# --------------------------------------------------------------------------------------------------
# Inputs and outputs
# --------------------------------------------------------------------------------------------------


def list_inputs(path, suffix):
    """The image files to process: ``path`` itself, or the images directly inside a folder."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ImageError(f"--input {path}: no such file or folder.")
    files = []
    for name in sorted(os.listdir(path)):
        stem, extension = os.path.splitext(name)
        full = os.path.join(path, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        if extension.lower() not in IMAGE_EXTENSIONS or (suffix and stem.endswith(suffix)):
            logging.info("Skipping %s (not an image extension, or already an output).", full)
            continue
        files.append(full)
    return files


def output_path(path, out_dir, suffix):
    """``<out_dir or the input's folder>/<stem><suffix>.png``; never the input itself."""
    stem = os.path.splitext(os.path.basename(path))[0]
    target = os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), stem + suffix + ".png")
    if os.path.abspath(target) == os.path.abspath(path):
        raise ImageError(f"{path}: the output would overwrite the input; set --suffix or --out.")
    return target


# --------------------------------------------------------------------------------------------------
# Processing
# --------------------------------------------------------------------------------------------------


def deblur_array(restorer, rgb, tile=0, overlap=32):
    """(H, W, 3) float32 [0, 1] -> (H, W, 3) float32 unclamped; tiled when ``tile`` > 0."""
    if tile and max(rgb.shape[:2]) > tile:
        return tiling.restore_tiled(restorer, rgb, tile, overlap, restorer_multiple(restorer))
    return np.asarray(restorer(rgb[None]))[0]


def restorer_multiple(restorer):
    """The side multiple of the restorer's model (tile starts are aligned to it)."""
    if restorer.model is not None:
        return int(getattr(restorer.model, "size_multiple", 1))
    return int(restorer.source.get("size_multiple", 1))


def deblur_file(restorer, path, target, tile=0, overlap=32):
    """Reads, deblurs and writes one image; raises :class:`ImageError` naming the file."""
    rgb, layout = read_image(path)
    try:
        restored = deblur_array(restorer, rgb, tile, overlap)
    except Exception as error:  # out of memory, etc.: name the file, suggest tiling
        hint = "" if tile else " (for large images try --tile 512)"
        raise ImageError(f"{path}: restoration failed{hint}: {error}") from error
    write_image(target, restored, layout)


def run(restorer, inputs, out_dir, suffix, tile, overlap):
    """Processes every input; returns the list of failure messages."""
    failures, written = [], set()
    for path in inputs:
        try:
            target = output_path(path, out_dir, suffix)
            if target in written:  # e.g. a.jpg and a.png in one folder
                raise ImageError(f"{path}: {target} was already written from another input.")
            written.add(target)
            deblur_file(restorer, path, target, tile, overlap)
            logging.info("%s -> %s", path, target)
        except (ImageError, OSError, cv2.error) as error:
            logging.error("%s", error)
            failures.append(str(error))
    return failures


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        if not FLAGS.input:
            raise ImageError("--input is required (an image file or a folder).")
        if FLAGS.tile:
            tiling.check_tiling(FLAGS.tile, FLAGS.tile_overlap)
        inputs = list_inputs(FLAGS.input, FLAGS.suffix)
        if not inputs:
            raise ImageError(f"--input {FLAGS.input}: no image files found.")
        restorer = model_io.restorer_from_flags()
    except (ImageError, model_io.ModelSourceError, ValueError) as error:
        sys.exit(f"deblur.py: error: {error}")
    failures = run(restorer, inputs, FLAGS.out, FLAGS.suffix, FLAGS.tile, FLAGS.tile_overlap)
    if failures:
        sys.exit(
            f"deblur.py: {len(failures)} of {len(inputs)} image(s) failed:\n  "
            + "\n  ".join(failures)
        )
    logging.info("Deblurred %d image(s).", len(inputs))


if __name__ == "__main__":
    app.run(main)
