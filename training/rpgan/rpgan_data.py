"""RP-GAN's training data in the one loop (``sen_rpgan.md`` §9, paper §4.2 and §6.2): the training
images, pre-training batches of level 1 and the replay buffer's cycles, as a
:class:`training.loop.SegmentedData`.

Global steps ``0 .. pretrain_steps - 1`` are **pre-training** (level 1 only): batch ``s`` is
``batch_size`` random ``crop_size``² windows of the cached (I*_1, O, I_s)
(:meth:`training.rpgan.deconv_cache.DeconvCache.sample_batch`) drawn with
``np.random.default_rng([seed, s])`` — a function of the step alone, so a resumed run sees the
batches of an uninterrupted one. Later steps belong to **buffer cycles** of
:attr:`ReplayBuffer.steps_per_cycle` steps (187 for 3 passes over 1000 items of batch 16): cycle
``c`` starts at ``pretrain_steps + c·steps_per_cycle``; at that moment (a segment boundary, after
the previous update ran) the frozen snapshot G̃ ← G and the buffer is rebuilt
(:mod:`training.rpgan.replay_buffer`), then its shuffled batches are read. The snapshot and the
cycle it was taken for are checkpoint items of the step object (``replay_snapshot=True``), so a run
resumed inside cycle ``c`` rebuilds cycle ``c``'s buffer from the same G̃ and skips the batches
already used: resume is exact (the buffer itself, 2.4 GB, is regenerated, never saved).

Batches are ``(I*, O, I_s)`` tuples of float32 (B, crop, crop, 3) in [0, 1], the
:class:`training.steps.rpgan_step.RPGANTrainStep` batch. Each segment's batches are made in numpy
when the loop asks for it and served from memory (``from_tensor_slices``), so no Python runs beside
the training step; segments are therefore also cut every :attr:`RPGANData.chunk_steps` steps
(:data:`CHUNK_BYTES` of batches).

At the first segment (after the loop has set up the run folder) the frozen SEN's weights are
written to ``<run_dir>/sen.weights.h5`` (the run-directory contract: an RP-GAN run is a whole
framework for ``evaluate.py`` / ``deblur.py`` / ``export.py``) and every missing cache entry is
computed (the flows of the frozen SEN and I*_1, once per image; logged with a count).
"""

from __future__ import annotations

import itertools
import math
import os
import time

import numpy as np
import tensorflow as tf

import fileio
import rundir
from training.loop import SegmentedData

CHUNK_BYTES = 256 * 2**20  # batches of one segment in memory (quick preset: 227 steps; paper: 7)


class RPGANData(SegmentedData):
    """Pre-training batches, then replay-buffer cycles (module docstring).

    Args:
        cache: the training images' :class:`training.rpgan.deconv_cache.DeconvCache`.
        step: the :class:`training.steps.rpgan_step.RPGANTrainStep` (built by the loop before the
            first segment; its ``model``, ``snapshot`` and ``snapshot_cycle`` are used).
        batch_size, crop_size: global batch and window side.
        pretrain_steps: steps of level-1 pre-training (40 epochs in the paper).
        buffer_kwargs: :class:`training.rpgan.replay_buffer.ReplayBuffer` settings (``size``,
            ``fractions``, ``betas``, ``margin``, ``passes``, CG settings).
        seed: base seed of the windows and shuffles.
        run_dir, sen: where and what the frozen SEN's weights are written (None: not written).
        log: one-line progress messages.
    """

    def __init__(
        self,
        cache,
        step,
        *,
        batch_size,
        crop_size,
        pretrain_steps,
        buffer_kwargs=None,
        seed=0,
        run_dir=None,
        sen=None,
        log=print,
    ):
        self.cache, self.step_obj = cache, step
        self.batch_size, self.crop_size = int(batch_size), int(crop_size)
        self.pretrain_steps, self.seed = int(pretrain_steps), int(seed)
        self.buffer_kwargs = dict(buffer_kwargs or {})
        self.run_dir, self.sen, self.log = run_dir, sen, log
        self.buffer = None
        self._prepared = False

    # --- the segments --------------------------------------------------------------------------

    @property
    def steps_per_cycle(self) -> int:
        """Steps of one buffer cycle: ⌊passes · size / batch⌋."""
        from training.rpgan import replay_buffer

        size = self.buffer_kwargs.get("size", replay_buffer.SIZE)
        passes = self.buffer_kwargs.get("passes", replay_buffer.PASSES)
        return passes * size // self.batch_size

    def cycle_of(self, step: int) -> tuple[int, int]:
        """(cycle, batch within it) of a buffer-phase global ``step``."""
        return divmod(step - self.pretrain_steps, self.steps_per_cycle)

    @property
    def chunk_steps(self) -> int:
        """Steps of one segment's batches held in memory at most (:data:`CHUNK_BYTES`)."""
        batch_bytes = 3 * self.batch_size * self.crop_size**2 * 3 * 4
        return max(1, CHUNK_BYTES // batch_bytes)

    def segment_end(self, step: int) -> int:
        """The end of the pre-training phase or of ``step``'s buffer cycle, or earlier: a
        segment holds at most :attr:`chunk_steps` batches (counted from its phase's start)."""
        if step < self.pretrain_steps:
            start, end = 0, self.pretrain_steps
        else:
            cycle, _ = self.cycle_of(step)
            start = self.pretrain_steps + cycle * self.steps_per_cycle
            end = start + self.steps_per_cycle
        return min(end, start + ((step - start) // self.chunk_steps + 1) * self.chunk_steps)

    def dataset(self, step: int, epoch: int, epoch_step: int):
        """The batches from ``step`` to its segment's end, made now (between updates, on this
        thread) and served from memory: a ``from_generator`` pipeline, whose Python runs beside
        the step, made the quick preset's steps 1.5-3x slower on 2 cores."""
        del epoch, epoch_step  # the batches are a function of the global step
        self._prepare()
        end = self.segment_end(step)
        if step < self.pretrain_steps:
            batches = [self.pretraining_batch(s) for s in range(step, end)]
        else:
            cycle, start = self.cycle_of(step)
            self._ensure_cycle(cycle)
            chosen = itertools.islice(self.buffer.batches(start), end - step)
            batches = [(b["istar"], b["blurred"], b["sharp"]) for b in chosen]
        arrays = tuple(np.stack(parts) for parts in zip(*batches, strict=True))
        return tf.data.Dataset.from_tensor_slices(arrays)

    # --- pre-training --------------------------------------------------------------------------

    def pretraining_batch(self, step: int):
        """(I*_1, O, I_s) of pre-training step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        batch = self.cache.sample_batch(rng, self.batch_size, self.crop_size)
        return batch["istar1"], batch["blurred"], batch["sharp"]

    # --- buffer cycles -------------------------------------------------------------------------

    def _make_buffer(self):
        from training.rpgan.replay_buffer import ReplayBuffer

        return ReplayBuffer(
            self.cache,
            self.step_obj.model,
            batch_size=self.batch_size,
            crop_size=self.crop_size,
            seed=self.seed,
            snapshot=self.step_obj.snapshot,
            **self.buffer_kwargs,
        )

    def _ensure_cycle(self, cycle):
        """Rebuilds the buffer when ``cycle`` is new, from G (G̃ ← G) unless the restored
        snapshot was taken for this very cycle."""
        if self.buffer is None:
            self.buffer = self._make_buffer()
        if self.buffer.cycle != cycle:
            taken_for = int(self.step_obj.snapshot_cycle.numpy())
            started = time.monotonic()
            self.buffer.rebuild(cycle, refresh_snapshot=taken_for != cycle)
            self.step_obj.snapshot_cycle.assign(cycle)
            self.log(
                f"replay buffer: cycle {cycle} built ({self.buffer.size} items, levels "
                f"{'/'.join(map(str, self.buffer.counts))}; {time.monotonic() - started:.1f}s)"
            )

    # --- once per process ----------------------------------------------------------------------

    def _prepare(self):
        """Writes the SEN's weights into the run folder and fills the cache (first segment)."""
        if self._prepared:
            return
        # The chief writes the run's files; other workers of a multi-worker run only read.
        chief = getattr(self.step_obj, "chief", True)
        if self.run_dir and self.sen is not None and chief:
            path = rundir.sen_weights_path(self.run_dir)
            if not os.path.isfile(path):
                fileio.atomic_save_weights(self.sen, path)
        started, total = time.monotonic(), len(self.cache)
        for index in range(total):
            self.cache.ensure(index)
            done = index + 1
            if done % 100 == 0 or done == total:
                self.log(
                    f"deconvolution cache: {done}/{total} images ready "
                    f"({time.monotonic() - started:.0f}s; {self.cache.folder})"
                )
        self._prepared = True


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """⌈samples / batch⌉: RP-GAN draws random windows, so an epoch is ``samples`` windows rounded
    up to whole batches (§9: 3103 samples = 194 steps of 16)."""
    return math.ceil(samples / batch_size)
