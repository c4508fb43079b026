"""Deblurs your own images: one file or every image in a folder, any size, any format OpenCV reads.

    python deblur.py --input photo.jpg --weights mimo_unet.weights.h5 --model mimo_unet
    python deblur.py --input shots/ --out sharp/ --saved_model exports/mimo_unet --tile 512

Model sources: see :mod:`inference.model_io`; an RP-GAN run as ``--checkpoint`` is the blind
deblurring framework (SEN + K + CG + G) with ``--levels``, ``--global_iterations``, ``--betas`` and
``--sen_checkpoint`` (``--flow_source true`` is refused: photos have no true flow).

Each output is a PNG named ``<stem><suffix>.png`` (``--suffix``, default ``_deblurred``), written
atomically next to its input or into ``--out``; each ``input -> output`` line and the final count
are printed on stdout, a progress line with a count and ETA on stderr (several images).
``--compare`` adds ``<stem><suffix>_compare.png`` beside it: blurred | restored side by side,
scaled to fit 1536 px, over a full-resolution 256-px crop of both where the restoration changed
most (:mod:`inference.report`).

What is read (``cv2.IMREAD_UNCHANGED``) and written:

* 8-bit colour (BGR): deblurred as RGB, written as 8-bit colour.
* grayscale: replicated to three channels, deblurred, averaged back to one, written as grayscale.
* with alpha (BGRA): the colour is deblurred, the alpha channel is copied unchanged.
* 16-bit: processed in float (value / 65535) and written as a 16-bit PNG, so no precision is lost.

Bad files are refused, not skipped: a file OpenCV cannot read (checked for every input before the
model is loaded), damage found while decoding (a PNG with corrupt image data, a truncated JPEG),
float or 2-channel images stop the command with ``deblur.py: error: <file>: <problem>`` and exit
status 1; the outputs written before stay complete. Existing outputs are refused before the model is
loaded unless ``--overwrite`` is given; every output folder is checked first.

Large images: ``--tile auto`` (default) plans the **whole process's** peak memory against
``--memory_budget_gb`` (default 2 GB): TensorFlow and the model's weights, one forward pass, the
image arrays (:func:`inference.tiling.whole_bytes` / :func:`~inference.tiling.tiled_bytes`, per
model and width); an image is restored whole when that fits, else in the largest tiles that do.
``--tile N`` always tiles images larger than N, ``--tile 0`` never tiles. Tiles overlap by
``--tile_overlap`` (the framework's auto tiles by at least 96 px) and are blended with a
raised-cosine window (:mod:`inference.tiling`); the tiled path keeps the image in its file dtype,
converts one tile at a time and writes finished bands of rows back into the decoded array (rows
already restored are never read again), and the PNG is streamed to its file, so beyond the constant
its memory is the image itself (3 bytes per pixel for 8-bit colour) and one band of rows.
``--tile_overlap`` should exceed the model's effective receptive field for seamless results. When a
folder is given, files already ending in the suffix are skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import sys

import cv2
import numpy as np
from absl import app, flags, logging

import cli
import fileio
import progress as progress_lib
from cli import inference_flags
from inference import outputs, report, tiling
from inference.source_config import FrameworkSettings, ModelSource

FLAGS = flags.FLAGS
_define = cli.define_once
_define(flags.DEFINE_string, "input", None, "An image file or a folder of images.")
_define(
    flags.DEFINE_string, "out", None, inference_flags.OUT_HELP + " Default: next to each input."
)
_define(
    flags.DEFINE_string,
    "tile",
    "auto",
    "Tile side in pixels: auto (tile only when a whole-image forward would exceed "
    "--memory_budget_gb), 0 (never tile) or N (tile images larger than N).",
)
_define(flags.DEFINE_integer, "tile_overlap", 32, "Minimum overlap of neighbouring tiles (px).")
_define(
    flags.DEFINE_float,
    "memory_budget_gb",
    2.0,
    "Peak memory of the whole process (GB, 1e9 bytes) that --tile auto plans for: TensorFlow, "
    "the model, one tile's forward pass and the image arrays; an image is restored whole when "
    "that fits, else in the largest tiles that do.",
)
_define(flags.DEFINE_string, "suffix", "_deblurred", "Appended to the input's stem for outputs.")
_define(
    flags.DEFINE_bool,
    "compare",
    False,
    "Also write <output stem>_compare.png: blurred | restored side by side (scaled to fit) over "
    "a full-resolution crop of both where the restoration changed most.",
)
inference_flags.define_jit_flag()
inference_flags.define_overwrite_flag()
inference_flags.define_framework_flags()
KEY_FLAGS = ["input", "out", "tile", "tile_overlap", "memory_budget_gb", "suffix", "compare"]
KEY_FLAGS += ["overwrite"]
cli.declare_key_flags(
    [*KEY_FLAGS, *inference_flags.SOURCE_FLAGS, "jit_compile", *inference_flags.FRAMEWORK_FLAGS]
)

# Extensions OpenCV can decode (cv2.imread); other files in a folder are skipped, not failed.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".dib", ".jpeg", ".jpg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm"}
    | {".ppm", ".pxm", ".pnm", ".pfm", ".sr", ".ras", ".tiff", ".tif", ".exr", ".hdr", ".pic"}
)
MAX_VALUE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# Decoder messages that mean the file's data is damaged although OpenCV returned an image
# (libjpeg fills the missing part of a truncated or corrupt JPEG with grey and only warns).
DAMAGE_WORDS = ("corrupt", "premature end", "error", "invalid", "truncated")


class ImageError(ValueError):
    """An image that cannot be read, processed or written; the message names the file."""


# --------------------------------------------------------------------------------------------------
# Reading and writing: images stay in their file layout (uint8/uint16, gray/BGR/BGRA)
# --------------------------------------------------------------------------------------------------


def read_image(path):
    """Reads ``path`` -> (values as OpenCV decodes them, layout dict).

    ``values`` is (H, W) gray or (H, W, 3|4) BGR(A), uint8 or uint16; ``layout`` holds its dtype,
    ``gray`` and ``alpha`` (the (H, W) alpha plane or ``None``). Damage reported by the decoder
    (libpng / libjpeg messages, normally printed on stderr) raises :class:`ImageError` with it.
    """
    with cli.stderr_captured() as captured:  # the decoder's own messages explain the damage
        values = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        text = captured()
    messages = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if values is None:
        detail = f" ({messages})" if messages else ""
        raise ImageError(f"{path}: cannot be decoded (damaged, or not an image){detail}.")
    if any(word in messages.lower() for word in DAMAGE_WORDS):
        raise ImageError(f"{path}: damaged image data ({messages}).")
    if values.dtype not in MAX_VALUE:
        raise ImageError(f"{path}: {values.dtype} samples are not supported (8- or 16-bit only).")
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    channels = 1 if values.ndim == 2 else values.shape[2]
    if channels not in (1, 3, 4):
        raise ImageError(f"{path}: {channels} channels are not supported (1, 3 or 4).")
    alpha = values[..., 3] if channels == 4 else None
    return values, {"dtype": values.dtype, "gray": channels == 1, "alpha": alpha}


def rgb_float(values, layout, rows=slice(None), cols=slice(None)):
    """The RGB float32 (h, w, 3) in [0, 1] of ``values[rows, cols]`` (gray replicated)."""
    part = values[rows, cols]
    rgb = np.repeat(part[..., None], 3, axis=2) if layout["gray"] else part[..., 2::-1]
    return rgb.astype(np.float32) / np.float32(MAX_VALUE[layout["dtype"]])


def to_file_values(rgb, layout, alpha=None):
    """Restored RGB float (h, w, 3) -> the array OpenCV writes (gray, BGR or BGRA, input depth).

    ``rgb`` is clamped and scaled in place (it is a temporary of the caller); ``alpha`` is the
    matching (h, w) alpha plane or ``None``.
    """
    maximum = MAX_VALUE[layout["dtype"]]
    if layout["gray"]:
        rgb = rgb.mean(axis=2, keepdims=True)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    rgb *= maximum
    values = np.rint(rgb, out=rgb).astype(layout["dtype"])
    if layout["gray"]:
        return values[..., 0]
    values = values[..., ::-1]
    if alpha is not None:
        values = np.concatenate([values, alpha[..., None]], axis=2)
    return np.ascontiguousarray(values)


def write_image(path, values):
    """Writes file ``values`` as a PNG at ``path`` atomically (temporary file + rename).

    ``cv2.imwrite`` streams the encoded rows to the file; ``cv2.imencode`` would hold the whole
    encoded PNG in memory beside the image (up to its size again for a noisy photo). The temporary
    ``.<name>.tmp-<pid>-partial.png`` (OpenCV picks the encoder from the suffix) is what
    :func:`fileio.remove_stale_temporaries` removes if the process is killed.
    """
    with fileio.atomic_path(path, ".png", sync=True) as temp:
        with cli.stderr_captured() as captured:  # the encoder's own message explains a failure
            ok = cv2.imwrite(temp, values)
            text = captured().strip()
        if not ok:
            detail = f" ({' '.join(text.split())})" if text else ""
            raise ImageError(f"{path}: PNG encoding or writing failed{detail}.")


# --------------------------------------------------------------------------------------------------
# Inputs and outputs, all checked before the model is loaded
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


def compare_path(target) -> str:
    """``--compare``'s picture beside ``target``: ``<target stem>_compare.png``."""
    return os.path.splitext(target)[0] + "_compare.png"


def plan_outputs(inputs, out_dir, suffix, overwrite=False, compare=False):
    """``[(input, target), ...]`` after checking every output before any work (with
    ``compare``, the :func:`compare_path` of every target too).

    Refuses (:class:`ImageError` / :class:`inference.outputs.OutputError`): an input OpenCV has no
    reader for, two inputs with one target (``a.jpg`` and ``a.png``), an output folder that is a
    file, under a file or not writable, and existing targets unless ``overwrite``.
    """
    if out_dir:
        outputs.check_folder(out_dir, "--out")
    plan, sources = [], {}
    for path in inputs:
        if not cv2.haveImageReader(path):
            raise ImageError(f"{path}: not an image file OpenCV can read.")
        target = output_path(path, out_dir, suffix)
        key = os.path.abspath(target)
        if key in sources:
            raise ImageError(
                f"{sources[key]} and {path} would both be written to {target}; use --suffix or "
                "process them separately."
            )
        sources[key] = path
        if not out_dir:
            outputs.check_folder(os.path.dirname(key), "--input")
        outputs.check_file_target(target, "--out" if out_dir else "--input")
        plan.append((path, target))
    targets = [t for _, t in plan] + ([compare_path(t) for _, t in plan] if compare else [])
    outputs.refuse_existing(targets, "--out" if out_dir else "--input", overwrite)
    return plan


# --------------------------------------------------------------------------------------------------
# Processing
# --------------------------------------------------------------------------------------------------


def parse_tile(text) -> str | int:
    """``--tile``: 'auto' or a non-negative integer."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ImageError(f"--tile {text}: expected auto, 0 or a tile side in pixels.")
    return value


def restorer_multiple(restorer):
    """The side multiple tile starts are aligned to: the restorer's ``tile_multiple`` (the
    framework: G's 4, although it pads inside and needs no outer padding), else its model's."""
    if restorer.source.get("tile_multiple"):
        return int(restorer.source["tile_multiple"])
    if restorer.model is not None:
        return int(getattr(restorer.model, "size_multiple", 1))
    return int(restorer.source.get("size_multiple", 1))


def choose_tile(restorer, height, width, tile="auto", overlap=32, budget_gb=2.0, image_bytes=None):
    """The tile side for an image (0 = whole): ``tile`` itself, or for 'auto' the result of
    :func:`inference.tiling.auto_tile`, which keeps the estimated peak of the whole process
    within ``budget_gb``; ``image_bytes`` is the decoded file array's size (default: 8-bit
    colour, 3 bytes per pixel)."""
    align = restorer_multiple(restorer)
    if tile != "auto":
        return tile if tile and max(height, width) > tile else 0
    image_bytes = 3 * height * width if image_bytes is None else image_bytes
    budget = budget_gb * tiling.GB
    return tiling.auto_tile(restorer.source, height, width, image_bytes, budget, overlap, align)


def auto_overlap(restorer, tile="auto", overlap=32) -> int:
    """``--tile_overlap``, raised for ``--tile auto`` to the restorer's ``min_tile_overlap`` (the
    framework's, :mod:`inference.framework_io`); a given ``--tile N`` keeps the flag's value."""
    if tile != "auto":
        return overlap
    return max(overlap, int(restorer.source.get("min_tile_overlap", 0)))


def deblur_values(restorer, values, layout, tile=0, overlap=32, out=None):
    """File ``values`` -> restored file values of the same shape and dtype; tiled when ``tile``.

    The tiled path writes into ``out`` (may be ``values`` itself: rows already restored are never
    read again, and the alpha rows are copied before they are overwritten, so the image needs
    one array instead of two); default a new array.
    """
    height, width = values.shape[:2]
    if not tile:
        restored = np.array(restorer(rgb_float(values, layout)[None]), np.float32)[0]
        return to_file_values(restored, layout, layout["alpha"])
    output = np.empty_like(values) if out is None else out

    def read_tile(top, bottom, left, right):
        return rgb_float(values, layout, slice(top, bottom), slice(left, right))

    align = restorer_multiple(restorer)
    bands = tiling.restore_bands(restorer, read_tile, height, width, tile, overlap, align)
    for top, stop, band in bands:
        alpha = None if layout["alpha"] is None else layout["alpha"][top:stop]
        output[top:stop] = to_file_values(band, layout, alpha)
        del band, alpha  # one band alive at a time (inference.tiling.restore_bands)
    return output


def deblur_file(restorer, path, target, tile=0, overlap=32, budget_gb=2.0, compare=False):
    """Reads, deblurs and writes one image (and its :func:`compare_path` picture with
    ``compare``); returns the tile side used (0 = whole).

    Raises :class:`ImageError` naming the file.
    """
    values, layout = read_image(path)
    before = preview(values, layout) if compare else None
    height, width = values.shape[:2]
    overlap = auto_overlap(restorer, tile, overlap)
    side = choose_tile(restorer, height, width, tile, overlap, budget_gb, values.nbytes)
    if side and tile == "auto":
        logging.info("%s: %dx%d, in tiles of %d px (--memory_budget_gb)", path, width, height, side)
    try:
        restored = deblur_values(restorer, values, layout, side, overlap, out=values)
    except Exception as error:  # out of memory (MemoryError, ResourceExhaustedError), etc.
        hint = "" if side else " (for large images try --tile 512 or a smaller --memory_budget_gb)"
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImageError(f"{path}: restoration failed{hint}: {first}") from error
    # The tiled result is ``values`` itself, the whole one replaced it; the alpha plane is a view
    # of ``values``, so only the layout's dtype and gray flag are kept (--compare's crops).
    layout = dict(layout, alpha=None)
    del values
    after = box = restored_crop = None
    if compare:
        after = preview(restored, layout)
        box = full_box(before, after, restored.shape[:2])
        restored_crop = rgb_uint8(restored[box], layout)
    write_image(target, restored)
    del restored
    if compare:
        blurred_crop = rgb_uint8(read_image(path)[0][box], layout)
        top = report.strip([before, after])
        picture = report.stacked(top, report.strip([blurred_crop, restored_crop]))
        with cli.stderr_captured():
            report.write_png(compare_path(target), picture)
    return side


def rgb_uint8(values, layout) -> np.ndarray:
    """File ``values`` (any depth, gray / BGR(A)) as RGB uint8 for a picture."""
    return np.rint(rgb_float(values, layout) * 255.0).astype(np.uint8)


def preview(values, layout) -> np.ndarray:
    """RGB uint8 of ``values`` scaled down (area) to half of a comparison strip's width."""
    width = (report.MAX_STRIP_WIDTH - report.GAP) // 2
    return rgb_uint8(report.fitted(values, width), layout)


def full_box(before, after, shape) -> tuple[slice, slice]:
    """The full-resolution crop (rows, cols) where ``before`` -> ``after`` (previews of an image
    of ``shape``) changed most: :func:`inference.report.crop_box` at the preview's scale."""
    height, width = shape
    scale = before.shape[1] / width
    side = report.crop_side(height, width)
    top, left, _, _ = report.crop_box(before, after, size=max(1, round(side * scale)))
    top = min(round(top / scale), height - side)
    left = min(round(left / scale), width - side)
    return slice(top, top + side), slice(left, left + side)


def run(restorer, plan, tile="auto", overlap=32, budget_gb=2.0, compare=False) -> int:
    """Deblurs every ``(input, target)`` of ``plan`` in order, printing ``input -> target``
    (and a progress line on stderr for several images); stops at the first bad file
    (:class:`ImageError`). Returns the number written."""
    show = progress_lib.CountProgress(len(plan), "image") if len(plan) > 1 else None
    for count, (path, target) in enumerate(plan, 1):
        deblur_file(restorer, path, target, tile, overlap, budget_gb, compare)
        if show:
            show.clear()
        print(f"{path} -> {target}", flush=True)
        if show:
            show.update(count)
    return len(plan)


# --------------------------------------------------------------------------------------------------
# The process's own memory (docs/inference.md#memory)
# --------------------------------------------------------------------------------------------------

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold() -> bool:
    """Fixes glibc's mmap threshold at 1 MiB, so every freed tensor of 1 MiB or more goes back
    to the system; returns whether it was set (False off glibc: nothing changes).

    Why: TensorFlow's CPU allocator takes tensors from malloc, and glibc's threshold rises to up
    to 32 MiB after the first large free, so later activations below it come from the heap, which
    fragments and keeps what it got. Measured (MIMO-UNet, 512x512 tiles): peak 1.26 GiB against
    1.36-1.42, 0.73 GiB between tiles against 0.88-0.93, at the same speed.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def keras_backend() -> str:
    """The backend Keras will load: ``KERAS_BACKEND``, else ``keras.json``'s, else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as handle:
            return str(json.load(handle).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


@contextlib.contextmanager
def jax_hidden():
    """Makes ``import jax`` fail inside the block when Keras's backend is TensorFlow.

    Why: TensorFlow's import pulls in jax when it is installed (TF Lite's converter,
    ``tensorflow/lite/python/util.py``, which falls back on ImportError): 116 MB resident and
    1.6 s of start-up measured, for nothing deblur.py uses.
    """
    hide = "jax" not in sys.modules and keras_backend() == "tensorflow"
    if hide:
        sys.modules["jax"] = None  # the import system's "not importable" marker
    try:
        yield
    finally:
        if hide and "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]


def import_tensorflow_lean():
    """Imports TensorFlow with the two start-up settings above, in a fresh process only (in a
    process that already has TensorFlow, such as the tests', nothing is changed)."""
    if "tensorflow" not in sys.modules:
        fix_mmap_threshold()
        with jax_hidden():
            cli.import_tensorflow()
    return cli.import_tensorflow()


@dataclasses.dataclass(frozen=True)
class DeblurConfig:
    """One deblur.py run, read from the flags once (:func:`config_from_flags`)."""

    source: ModelSource
    framework: FrameworkSettings = FrameworkSettings()
    input: str | None = None
    out: str | None = None
    tile: str = "auto"
    tile_overlap: int = 32
    memory_budget_gb: float = 2.0
    suffix: str = "_deblurred"
    compare: bool = False
    overwrite: bool = False


def config_from_flags() -> DeblurConfig:
    """deblur.py's flags as one :class:`DeblurConfig`."""
    return DeblurConfig(
        source=inference_flags.model_source(),
        framework=inference_flags.framework_settings(),
        input=FLAGS.input,
        out=FLAGS.out,
        tile=FLAGS.tile,
        tile_overlap=FLAGS.tile_overlap,
        memory_budget_gb=FLAGS.memory_budget_gb,
        suffix=FLAGS.suffix,
        compare=FLAGS.compare,
        overwrite=FLAGS.overwrite,
    )


def check_config(config: DeblurConfig):
    """Every setting and path check that needs no model; returns (plan, tile)."""
    if not config.input:
        raise ImageError("--input is required (an image file or a folder).")
    if config.framework.flow_source == "true":
        raise ImageError(
            "--flow_source true: your images have no true motion flow; use --flow_source sen "
            "(the default), or evaluate.py on a data set with flow labels."
        )
    tile = parse_tile(config.tile)
    if tile not in ("auto", 0):
        tiling.check_tiling(tile, config.tile_overlap)
    elif config.tile_overlap < 0:
        raise ImageError(f"--tile_overlap must be >= 0, got {config.tile_overlap}.")
    if config.memory_budget_gb <= 0:
        raise ImageError(f"--memory_budget_gb {config.memory_budget_gb}: must be positive.")
    inputs = list_inputs(config.input, config.suffix)
    if not inputs:
        raise ImageError(f"--input {config.input}: no image files found.")
    plan = plan_outputs(inputs, config.out, config.suffix, config.overwrite, config.compare)
    return plan, tile


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    try:
        plan, tile = check_config(config)
        import_tensorflow_lean()
        from inference import model_io

        restorer = model_io.restorer_from_source(config.source, config.framework)
        count = run(
            restorer, plan, tile, config.tile_overlap, config.memory_budget_gb, config.compare
        )
    except (ValueError, OSError, cv2.error) as error:  # ImageError, OutputError, ModelSourceError
        sys.exit(f"deblur.py: error: {error}")
    print(f"Deblurred {count} image(s).")


if __name__ == "__main__":
    cli.run(main)
