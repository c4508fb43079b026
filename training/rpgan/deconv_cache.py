"""Cached per-image flows and level-1 deconvolutions for RP-GAN training (``sen_rpgan.md`` §9,
paper §4.2 and §6.2).

The RP-GAN's level-1 input I*_1 = CG(β₁; Z₀ = O) depends only on O, the flow U and β₁ (and the CG
settings), so it is computed **once per training image at full resolution** and cached on disk with
U, the flow of the frozen pre-trained SEN estimated once on the full image ("all deconvolutional
results are solved by the estimated blur kernels from the pre-trained SEN model"). With
``flow_source="true"`` (synthetic flow sets) the true ``uv_half`` label replaces SEN's estimate.

Layout: ``<root>/<key>/`` with ``manifest.json`` (the key's parts, readable) and per image
``<entry>.flow.npy`` (H, W, 2) and ``<entry>.istar1.npy`` (H, W, 3), in ``dtype`` (default
float16: halves the disk of the 3103 training images, ~29 GB instead of 57 GB at 720x1280; the
rounding, ≤ 2.4e-4 on [0, 1] images and ≤ 0.016 px on |flow| < 64, is far below 1/255 and the
flows' accuracy). ``<entry>`` = ``<safe name>-<digest>``, the digest covering the image's name and
pixels (O, and the label with ``flow_source="true"``).

Keying (what invalidates what): the folder name ``<key>`` is a digest of the flow source (the SEN
weights' and config's digest, :func:`model_digest`, or ``"true"``), β₁, every CG setting the solve
uses (tol, max_iter, solver, the operator method), the storage dtype and the code versions of the
numbers: :data:`deconvolution.blur_operator.OPERATOR_VERSION` with the operator's constants (EPS,
MIN_WEIGHT) and :data:`deconvolution.hqs.DATA_STEP_VERSION` (:func:`cache_key`). So a different
SEN, β₁ or CG setting, or a change of K or of the solver that bumped its version, uses another
folder and recomputes instead of reading stale I*_1 files (old folders are left for the user to
delete; nothing is overwritten); a changed image has another entry digest. Entries are written
atomically (:mod:`fileio`), so a killed run leaves complete entries or none. A resumed training
run reuses the cache as it is (same key, same entries); only the replay buffer is regenerated
(:mod:`training.rpgan.replay_buffer`).

A **damaged** cache file (unreadable header, truncated, wrong shape, non-finite values) is
**recomputed** (and reported in one log line naming the file), not an error: the cache is derived
data and recomputing it is always correct. Reads use ``np.load(mmap_mode="r")``, so a 256x256
window of a full-size entry reads only that window's rows.

Sampling (:meth:`DeconvCache.window`): a window (index, top, left, height, width) gives identical
crops of O, I_s, U and I*_1 (register #23 and §9 "identical for O, I_s, U and I*").
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence

import numpy as np

import fileio
from data import readers

FLOW_SOURCES = ("sen", "true")
DTYPES = ("float16", "float32")
KEY_LENGTH = 16  # hex digits of the folder key and of the entry digests


@dataclasses.dataclass(frozen=True)
class TrainingImage:
    """One training image: ``load()`` -> (O, I_s, flow label or None), float32 (H, W, 3) in
    [0, 1], (H, W, 3) in [0, 1], (H, W, 2) ``uv_half`` pixels. Loaded when needed, never kept."""

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


def from_arrays(names, blurred, sharp, flows=None) -> list[TrainingImage]:
    """:class:`TrainingImage` list of in-memory arrays (tests, small sets)."""
    flows = [None] * len(names) if flows is None else flows
    return [
        TrainingImage(n, lambda o=o, s=s, f=f: (o, s, f))
        for n, o, s, f in zip(names, blurred, sharp, flows, strict=True)
    ]


def from_pairs(pairs, with_labels: bool = False) -> list[TrainingImage]:
    """:class:`TrainingImage` list of ``data.readers.Pair`` (blur, sharp image paths, name); with
    ``with_labels`` the ``<sequence>/flow/<frame>.npy`` label of each pair (synthetic flow sets).
    A bad file raises ``data.DataError`` (one line naming it) when the image is first loaded."""
    from data import image_io, readers

    def loader(pair):
        def load():
            blur = image_io.decode_rgb(pair.blur).astype(np.float32) / 255.0
            sharp = image_io.decode_rgb(pair.sharp).astype(np.float32) / 255.0
            label = None
            if with_labels:
                path = readers.flow_label_path(pair)
                label = readers.read_flow_label(path, blur.shape[:2])
            return blur, sharp, label

        return load

    return [TrainingImage(p.name, loader(p)) for p in pairs]


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


# Config entries that do not change what a model computes: its Keras name (which may get a
# suffix, "sen_1") and whether it is being trained (a frozen SEN is the same SEN).
UNCOMPUTED_CONFIG = ("name", "trainable")


def model_digest(model) -> str:
    """SHA-256 of a Keras model's class, config (but its name and trainability) and weights (in
    order): the SEN's identity."""
    try:
        entries = {k: v for k, v in model.get_config().items() if k not in UNCOMPUTED_CONFIG}
        config = json.dumps(entries, sort_keys=True, default=repr)
    except (NotImplementedError, TypeError):
        config = ""
    return _digest(type(model).__name__, config, *[np.asarray(w) for w in model.get_weights()])


def cache_key(
    flow_id: str, beta: float, tol: float, max_iter: int, solver: str, method: str, dtype: str
) -> tuple[str, dict]:
    """(folder key, manifest dict) of everything a cached entry's numbers depend on: the flow
    source, β₁, the CG settings (``tol``, ``max_iter``, ``solver``, operator ``method``), the
    storage ``dtype`` and the versions of the code that computes them (read at call time, so a
    bumped :data:`~deconvolution.blur_operator.OPERATOR_VERSION` or
    :data:`~deconvolution.hqs.DATA_STEP_VERSION` gives another key)."""
    from deconvolution import blur_operator, hqs

    manifest = {
        "operator_version": int(blur_operator.OPERATOR_VERSION),
        "operator_eps": float(blur_operator.EPS),
        "operator_min_weight": float(blur_operator.MIN_WEIGHT),
        "data_step_version": int(hqs.DATA_STEP_VERSION),
        "flow_source": flow_id,
        "beta": float(beta),
        "tol": float(tol),
        "max_iter": int(max_iter),
        "solver": solver,
        "method": method,
        "dtype": dtype,
    }
    return _digest(json.dumps(manifest, sort_keys=True))[:KEY_LENGTH], manifest


def data_solve(blurred, z, flows, beta, settings):
    """I*_n = CG(β; Z) of float32 (N, H, W, C) tensors with K of ``flows``, as ``settings``
    (``tol``, ``max_iter``, ``solver``, ``method``) say: the traced solver
    (:func:`deconvolution.hqs.traced_data_solver`, several times faster on 256² images) for
    ``method="auto"``, else eagerly with that operator method. Returns (I*, iterations)."""
    import tensorflow as tf

    from deconvolution import hqs
    from deconvolution.blur_operator import BlurOperator

    if settings.method == "auto":
        solve = hqs.traced_data_solver(settings.tol, settings.max_iter, settings.solver)
        return solve(blurred, z, flows, tf.constant(beta, tf.float32))
    op = BlurOperator(flows, settings.method)
    return hqs.solve_data_term(
        blurred, z, op, beta, settings.tol, settings.max_iter, settings.solver
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class DeconvCache:
    """Per-image U and I*_1 of a training set, on disk (see the module docstring).

    Args:
        root: cache root folder (``<root>/<key>/`` is this configuration's folder).
        images: the training images (:class:`TrainingImage`).
        sen: the frozen pre-trained SEN (``call(images) -> (N, H, W, 2)`` flow), required with
            ``flow_source="sen"``; run in inference mode (``training=False``).
        flow_source: ``"sen"`` (default, §9) or ``"true"`` (the images' labels).
        beta: β₁ (default ``deconvolution.hqs.BETAS[0]`` = 0.02).
        tol, max_iter, solver: CG settings (§6).
        method: :class:`deconvolution.blur_operator.BlurOperator` method.
        dtype: storage dtype, ``"float16"`` (default) or ``"float32"``; reads return float32.
        log: one-line messages (damaged entries recomputed); default ``print``.
    """

    def __init__(
        self,
        root: str,
        images: Sequence[TrainingImage],
        *,
        sen=None,
        flow_source: str = "sen",
        beta: float | None = None,
        tol: float = 1e-5,
        max_iter: int = 100,
        solver: str = "cg",
        method: str = "auto",
        dtype: str = "float16",
        log: Callable[[str], None] = print,
    ):
        from deconvolution import hqs

        if flow_source not in FLOW_SOURCES:
            raise ValueError(f"flow_source must be one of {FLOW_SOURCES}, got {flow_source!r}.")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
        if flow_source == "sen" and sen is None:
            raise ValueError("flow_source='sen' needs the pre-trained SEN (sen=...).")
        self.images = list(images)
        self.sen = sen
        self.flow_source = flow_source
        self.beta = hqs.BETAS[0] if beta is None else float(beta)
        self.tol, self.max_iter, self.solver, self.method = tol, max_iter, solver, method
        self.dtype = dtype
        self.log = log
        flow_id = "true" if flow_source == "true" else "sen:" + model_digest(sen)
        self.key, self.manifest = cache_key(
            flow_id, self.beta, tol, max_iter, solver, method, dtype
        )
        self.folder = os.path.join(root, self.key)
        self._entries: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.images)

    # --- computing ---------------------------------------------------------------------------

    def compute(self, blurred: np.ndarray, label: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """(U, I*_1) of one full image: float32 (H, W, 2) (rounded to ``dtype``), (H, W, 3);
        no caching."""
        import tensorflow as tf

        o = tf.convert_to_tensor(blurred[None], tf.float32)
        if self.flow_source == "true":
            flow = tf.convert_to_tensor(label[None], tf.float32)
        else:
            flow = tf.cast(self.sen(o, training=False), tf.float32)
        # I*_1 is solved with the flow as stored, so that levels ≥ 2 (solved on windows of the
        # stored flow) and level 1 use the same K.
        flow = tf.cast(tf.cast(flow, self.dtype), tf.float32)
        istar, _ = data_solve(o, o, flow, self.beta, self)
        return flow[0].numpy(), istar[0].numpy()

    def _entry_stem(self, index: int, blurred, label) -> str:
        image = self.images[index]
        parts = [image.name, blurred] + ([label] if self.flow_source == "true" else [])
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image.name)[-60:].strip("._") or "image"
        return os.path.join(self.folder, f"{safe}-{_digest(*parts)[:KEY_LENGTH]}")

    def _write_manifest(self) -> None:
        path = os.path.join(self.folder, "manifest.json")
        if not os.path.isfile(path):
            fileio.atomic_write_json(path, self.manifest)

    def _read(self, stem: str, hw) -> tuple[np.ndarray, np.ndarray] | None:
        """The entry's memory maps, or None if missing; logs and returns None if damaged."""
        paths = [stem + ".flow.npy", stem + ".istar1.npy"]
        if not all(os.path.isfile(p) for p in paths):
            return None
        arrays = []
        for path, channels in zip(paths, (2, 3), strict=True):
            try:
                array = readers.load_npy(path, mmap=True)  # thread-safe header parse
                if array.shape != (*hw, channels) or array.dtype != np.dtype(self.dtype):
                    raise ValueError(f"{array.dtype} {array.shape}, expected {(*hw, channels)}")
                if not np.isfinite(array).all():
                    raise ValueError("non-finite values")
            except (OSError, ValueError, EOFError) as error:
                self.log(f"deconv_cache: {path}: damaged ({error}); recomputing.")
                return None
            arrays.append(array)
        return arrays[0], arrays[1]

    def ensure(self, index: int) -> tuple[str, tuple[int, int]]:
        """(entry stem, (H, W)) of image ``index``, computing and writing the entry if it is
        missing or damaged."""
        if index in self._entries:
            return self._entries[index]
        blurred, _, label = self.images[index].load()
        if self.flow_source == "true" and label is None:
            raise ValueError(f"{self.images[index].name}: flow_source='true' but no flow label.")
        stem, hw = self._entry_stem(index, blurred, label), blurred.shape[:2]
        if self._read(stem, hw) is None:
            self._write_manifest()
            flow, istar = self.compute(blurred, label)
            fileio.atomic_write_bytes(stem + ".flow.npy", _npy_bytes(flow.astype(self.dtype)))
            fileio.atomic_write_bytes(stem + ".istar1.npy", _npy_bytes(istar.astype(self.dtype)))
        self._entries[index] = (stem, hw)
        return stem, hw

    def prepare(self) -> int:
        """Makes every entry (computing the missing ones); returns the number of images."""
        for index in range(len(self.images)):
            self.ensure(index)
        return len(self.images)

    # --- reading -----------------------------------------------------------------------------

    def entry(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(U, I*_1) memory maps (``dtype``) of image ``index`` (computed first if needed)."""
        arrays = self._read(*self.ensure(index))
        if arrays is None:  # damaged since it was made: recompute once
            self._entries.pop(index)
            arrays = self._read(*self.ensure(index))
        return arrays

    def window(self, index: int, top: int, left: int, height: int, width: int) -> dict:
        """Identical crops of image ``index``: float32 ``blurred`` (O), ``sharp`` (I_s), ``flow``
        (U) and ``istar1`` (I*_1), each (height, width, C)."""
        blurred, sharp, _ = self.images[index].load()
        flow, istar = self.entry(index)
        rows, cols = slice(top, top + height), slice(left, left + width)
        if not (top >= 0 and top + height <= blurred.shape[0]):
            raise ValueError(f"window rows {top}..{top + height} outside {blurred.shape[0]}.")
        if not (left >= 0 and left + width <= blurred.shape[1]):
            raise ValueError(f"window columns {left}..{left + width} outside {blurred.shape[1]}.")
        return {
            "blurred": np.asarray(blurred[rows, cols], np.float32),
            "sharp": np.asarray(sharp[rows, cols], np.float32),
            "flow": np.asarray(flow[rows, cols], np.float32),
            "istar1": np.asarray(istar[rows, cols], np.float32),
        }

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image ``index`` (from its cache entry)."""
        return tuple(self.ensure(index)[1])

    def random_window(self, rng: np.random.Generator, size: int) -> tuple[int, int, int]:
        """(index, top, left) of a uniformly random image and ``size``² window inside it."""
        index = int(rng.integers(len(self.images)))
        height, width = self.image_size(index)
        if height < size or width < size:
            raise ValueError(
                f"{self.images[index].name}: {width}x{height} is smaller than the {size}² window."
            )
        return index, int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))

    def sample_batch(self, rng: np.random.Generator, batch_size: int, size: int) -> dict:
        """A level-1 batch (pre-training, §9): ``batch_size`` random ``size``² windows of random
        images, dict of float32 (B, size, size, C) ``blurred``, ``sharp``, ``flow``, ``istar1``."""
        picks = [self.random_window(rng, size) for _ in range(batch_size)]
        windows = [self.window(*pick, size, size) for pick in picks]
        return {key: np.stack([w[key] for w in windows]) for key in windows[0]}
