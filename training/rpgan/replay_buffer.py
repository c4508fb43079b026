"""The RP-GAN replay buffer (``sen_rpgan.md`` §9, register #23; paper §4.2 "experience replay …
fixed Q-targets" and §6.2).

RP-GAN is not optimised on each deconvolution as soon as it is made: a buffer of ``size`` items
(1000) holds deconvolution results of the recurrence levels — **50 % level 1, 30 % level 2, 20 %
level 3** (500/300/200; :func:`level_counts`, largest remainders for other sizes) — produced by a
**frozen snapshot** G̃ of the generator; the live G trains ``passes`` (3) shuffled passes over it,
then G̃ ← G and the buffer is rebuilt. The snapshot is the "fixed Q-target": the inputs G learns
from do not move while G does.

Items (all of ``crop_size``², default 256):

* level 1: a random window of the cached I*_1 (:class:`training.rpgan.deconv_cache.DeconvCache`; no
  generator pass, no CG solve);
* level n ≥ 2: a random image and window, **extended by a ``margin`` (32 px) on every side** (at
  the image's border, where the full-image problem has its boundary too, the extended window is
  shifted inside the image: every window of an image has the size ``crop + 2·margin``, one traced
  CG solve without recompilation), so that the CG
  solves on the window do not see the window's artificial replicate boundary near the stored
  part: Z₁ = clip(G̃(concat(I*_1, O)), 0, 1), I*_2 = CG(β₂; Z₁) with the window's O and U, and for
  level 3 Z₂ = clip(G̃(concat(I*_2, O)), 0, 1), I*_3 = CG(β₃; Z₂); the central ``crop_size``² of
  I*_n is stored with its O and I_s. A level-n item costs n − 1 generator passes and n − 1 CG
  solves (``passes`` and ``levels`` of :class:`BufferItems` record it).

Snapshot: a second instance of the generator's class (:func:`make_snapshot`), its weights copied
from G at every rebuild (``snapshot.set_weights(G.get_weights())``), never trained (``trainable =
False``) and always called with ``training=False`` (BN in inference mode, §9 "except in the frozen
snapshot"). Nothing updates it between rebuilds.

Determinism: cycle ``c`` draws its windows with ``np.random.default_rng([seed, c])`` and its pass
``p`` shuffle with ``[seed, c, p]``; the items are a function of (seed, cycle, snapshot weights,
cache). The batches of a cycle are the ``passes`` shuffled permutations concatenated and cut into
``batch_size`` batches, the incomplete last one dropped (3 × 1000 / 16 → 187 steps).

Resume: the buffer itself (1000 × 256² × 9 float32 values, 2.4 GB) is **not** checkpointed: a
resumed run **regenerates the buffer** — it is derived data, a deterministic function of the
snapshot's weights, the seed and the cycle number, and regenerating costs the cycle's CG solves
(minutes) while saving it would cost gigabytes per checkpoint. For an exact resume the trainer
checkpoints the snapshot (:attr:`ReplayBuffer.snapshot`, a Keras model usable as a checkpoint item)
and the cycle number, calls :meth:`ReplayBuffer.rebuild` with ``refresh_snapshot=False`` and skips
the batches already consumed (:meth:`ReplayBuffer.batches` ``start``). Without the snapshot, a
resume rebuilds from the current G (a fresher target; the only difference).
"""

from __future__ import annotations

import dataclasses

import numpy as np

FRACTIONS = (0.5, 0.3, 0.2)
SIZE = 1000
CROP_SIZE = 256
MARGIN = 32
PASSES = 3


def level_counts(size: int = SIZE, fractions=FRACTIONS) -> tuple[int, ...]:
    """Items per level: ``fractions`` (level 1, 2, ...; normalised) of ``size``, rounded by
    largest remainders (ties to the lower level), summing to ``size``. 1000 -> (500, 300, 200)."""
    fractions = np.asarray(fractions, np.float64)
    if size < 0 or fractions.ndim != 1 or len(fractions) == 0 or (fractions < 0).any():
        raise ValueError(f"bad buffer size {size} or fractions {fractions.tolist()}.")
    if fractions.sum() <= 0:
        raise ValueError(f"fractions {fractions.tolist()} sum to 0.")
    exact = size * fractions / fractions.sum()
    counts = np.floor(exact + 1e-9).astype(int)
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: size - int(counts.sum())]:
        counts[i] += 1
    return tuple(int(c) for c in counts)


def make_snapshot(generator, channels: int = 6):
    """A frozen copy G̃ of ``generator`` (same class and config, its current weights).

    Subclassed models are re-made from ``get_config``, functional ones with
    ``keras.models.clone_model``; the copy is built on a (1, 8, 8, ``channels``) input.
    """
    import keras

    try:
        snapshot = type(generator).from_config(generator.get_config())
    except (NotImplementedError, TypeError, ValueError):
        snapshot = keras.models.clone_model(generator)
    snapshot(np.zeros((1, 8, 8, channels), np.float32), training=False)
    snapshot.set_weights(generator.get_weights())
    snapshot.trainable = False
    return snapshot


@dataclasses.dataclass
class BufferItems:
    """The items of one cycle: ``istar``, ``blurred``, ``sharp`` float32 (size, c, c, 3) in [0, 1]
    (I*_n, O, I_s), ``levels`` int32 (size,) n, ``passes`` int32 (size,) generator passes that
    made the item, ``windows`` int32 (size, 3) (image index, top, left) of the stored window."""

    istar: np.ndarray
    blurred: np.ndarray
    sharp: np.ndarray
    levels: np.ndarray
    passes: np.ndarray
    windows: np.ndarray


class ReplayBuffer:
    """The §9 replay buffer over a :class:`training.rpgan.deconv_cache.DeconvCache` (module
    docstring).

    Args:
        cache: the training images' cached U and I*_1.
        generator: the live G, ``call(concat(I*, O)) -> (N, H, W, 3)`` linear.
        size: items per cycle (1000).
        fractions: share of each level (level 1 first), default (0.5, 0.3, 0.2).
        betas: β of each level (β₁ is the cache's; default ``deconvolution.hqs.BETAS``).
        crop_size: stored window size (256); margin: extension of level ≥ 2 windows (32).
        passes: shuffled passes per cycle (3); batch_size: items per batch (16).
        seed: base seed of the windows and shuffles.
        tol, max_iter, method, solver: CG and operator settings (§6; ``method="auto"``: the
            traced solver, :func:`training.rpgan.deconv_cache.data_solve`).
        snapshot: an existing frozen copy to use (e.g. restored from a checkpoint); default
            :func:`make_snapshot` of ``generator``.
        deep_batch: level ≥ 2 items of one level and window shape solved together (16; memory
            grows with it: 16 margin windows of 320² are ~60 MB of images and K's taps).
    """

    def __init__(
        self,
        cache,
        generator,
        *,
        size: int = SIZE,
        fractions=FRACTIONS,
        betas=None,
        crop_size: int = CROP_SIZE,
        margin: int = MARGIN,
        passes: int = PASSES,
        batch_size: int = 16,
        seed: int = 0,
        tol: float = 1e-5,
        max_iter: int = 100,
        method: str = "auto",
        solver: str = "cg",
        snapshot=None,
        deep_batch: int = 16,
    ):
        from deconvolution import hqs

        self.counts = level_counts(size, fractions)
        self.betas = tuple(hqs.beta_ladder(len(self.counts)) if betas is None else betas)
        if len(self.betas) < len(self.counts):
            raise ValueError(f"{len(self.counts)} levels need as many betas, got {self.betas}.")
        if batch_size > size * passes:
            raise ValueError(f"batch_size {batch_size} exceeds the {size * passes} items a cycle.")
        self.cache, self.generator = cache, generator
        self.size, self.crop_size, self.margin = size, crop_size, margin
        self.passes, self.batch_size, self.seed = passes, batch_size, seed
        self.tol, self.max_iter, self.method, self.solver = tol, max_iter, method, solver
        self.deep_batch = max(1, int(deep_batch))
        self.snapshot = make_snapshot(generator) if snapshot is None else snapshot
        self.cycle = None
        self.items: BufferItems | None = None

    @property
    def steps_per_cycle(self) -> int:
        """Batches of one cycle: ⌊passes·size / batch_size⌋."""
        return self.passes * self.size // self.batch_size

    # --- building ----------------------------------------------------------------------------

    def refresh_snapshot(self) -> None:
        """G̃ ← G (weights copied; the snapshot stays frozen)."""
        self.snapshot.set_weights(self.generator.get_weights())

    def _snapshot_pass(self, istar, blurred):
        """Z = clip(G̃(concat(I*, O)), 0, 1) in inference mode, float32 (n, h, w, 3)."""
        inputs = np.concatenate([istar, blurred], axis=-1).astype(np.float32)
        output = np.asarray(self.snapshot(inputs, training=False), np.float32)
        return np.clip(output, 0.0, 1.0)

    def _extended(self, start: int, extent: int) -> tuple[int, int]:
        """[begin, end) of the margin window along one axis: ``crop + 2·margin`` (or the whole
        axis if shorter) around the stored part, shifted inside the image at its borders, so that
        every window of an image has one size (one traced solve, no recompilation)."""
        size = min(self.crop_size + 2 * self.margin, extent)
        begin = min(max(0, start - self.margin), extent - size)
        return begin, begin + size

    def _margin_window(self, index: int, top: int, left: int):
        """(cache window dict, stored rows, stored columns) of a level ≥ 2 item."""
        height, width = self.cache.image_size(index)
        (top0, bottom), (left0, right) = self._extended(top, height), self._extended(left, width)
        win = self.cache.window(index, top0, left0, bottom - top0, right - left0)
        c = self.crop_size
        return win, slice(top - top0, top - top0 + c), slice(left - left0, left - left0 + c)

    def _deep_items(self, level: int, items):
        """(I*_level, O, I_s) central crops and generator passes of level-``level`` items
        ``[(index, top, left), ...]`` whose margin windows have one shape, solved as one batch
        (G̃ in inference mode and CG freeze each image's columns on their own, so the batch
        changes nothing but the cost: the small 256² solves amortise their per-iteration work)."""
        import tensorflow as tf

        from training.rpgan.deconv_cache import data_solve

        found = [self._margin_window(*item) for item in items]
        wins = [w for w, _, _ in found]
        blurred = np.stack([w["blurred"] for w in wins])
        flow = tf.constant(np.stack([w["flow"] for w in wins]))
        istar, passes = np.stack([w["istar1"] for w in wins]), 0
        for n in range(2, level + 1):
            z = self._snapshot_pass(istar, blurred)
            passes += 1
            x, _ = data_solve(tf.constant(blurred), tf.constant(z), flow, self.betas[n - 1], self)
            istar = x.numpy()
        return [
            (istar[k, rows, cols], win["blurred"][rows, cols], win["sharp"][rows, cols], passes)
            for k, (win, rows, cols) in enumerate(found)
        ]

    def _deep_item(self, level: int, index: int, top: int, left: int):
        """:meth:`_deep_items` of one item."""
        return self._deep_items(level, [(index, top, left)])[0]

    def plan(self, cycle: int) -> list[tuple[int, int, int, int]]:
        """(level, image index, top, left) of every item of ``cycle``, level 1 first."""
        rng = np.random.default_rng([self.seed, cycle])
        plan = []
        for level, count in enumerate(self.counts, start=1):
            for _ in range(count):
                plan.append((level, *self.cache.random_window(rng, self.crop_size)))
        return plan

    def _deep_batches(self, plan):
        """(level, [item positions]) of the level ≥ 2 items of ``plan``, grouped by level and
        margin-window shape, at most ``deep_batch`` a group."""
        groups = {}
        for i, (level, index, _, _) in enumerate(plan):
            if level >= 2:
                height, width = self.cache.image_size(index)
                shape = tuple(min(self.crop_size + 2 * self.margin, e) for e in (height, width))
                groups.setdefault((level, shape), []).append(i)
        for (level, _), members in groups.items():
            for start in range(0, len(members), self.deep_batch):
                yield level, members[start : start + self.deep_batch]

    def rebuild(self, cycle: int, refresh_snapshot: bool = True) -> BufferItems:
        """Makes the items of ``cycle`` (G̃ ← G first unless ``refresh_snapshot`` is False)."""
        if refresh_snapshot:
            self.refresh_snapshot()
        c = self.crop_size
        istar, blurred, sharp = (np.empty((self.size, c, c, 3), np.float32) for _ in range(3))
        plan = self.plan(cycle)
        levels = np.array([p[0] for p in plan], np.int32)
        windows = np.array([p[1:] for p in plan], np.int32).reshape(-1, 3)
        passes = np.zeros(self.size, np.int32)
        for i, (level, index, top, left) in enumerate(plan):
            if level == 1:
                win = self.cache.window(index, top, left, c, c)
                istar[i], blurred[i], sharp[i] = win["istar1"], win["blurred"], win["sharp"]
        for level, members in self._deep_batches(plan):
            results = self._deep_items(level, [plan[i][1:] for i in members])
            for i, result in zip(members, results, strict=True):
                istar[i], blurred[i], sharp[i], passes[i] = result
        self.cycle = cycle
        self.items = BufferItems(istar, blurred, sharp, levels, passes, windows)
        return self.items

    # --- consuming ---------------------------------------------------------------------------

    def order(self) -> np.ndarray:
        """Item indices of the cycle's ``passes`` shuffled passes, concatenated."""
        return np.concatenate(
            [
                np.random.default_rng([self.seed, self.cycle, p]).permutation(self.size)
                for p in range(self.passes)
            ]
        )

    def batches(self, start: int = 0):
        """Yields the cycle's batches from batch ``start``: dicts of ``istar``, ``blurred``,
        ``sharp`` (B, c, c, 3) float32 and ``levels`` (B,) int32."""
        if self.items is None:
            raise RuntimeError("rebuild() the buffer before reading batches.")
        order = self.order()
        for b in range(start, self.steps_per_cycle):
            pick = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {
                "istar": self.items.istar[pick],
                "blurred": self.items.blurred[pick],
                "sharp": self.items.sharp[pick],
                "levels": self.items.levels[pick],
            }
