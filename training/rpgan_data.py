"""RP-GAN's training data in the one loop (``sen_rpgan.md`` §9, paper §4.2 and §6.2): the training
images, pre-training batches of level 1 and the replay buffer's cycles, as a
:class:`training.loop.SegmentedData`.

Global steps ``0 .. pretrain_steps - 1`` are **pre-training** (level 1 only): batch ``s`` is
``batch_size`` random ``crop_size``² windows of the cached (I*_1, O, I_s)
(:meth:`training.deconv_cache.DeconvCache.sample_batch`) drawn with
``np.random.default_rng([seed, s])`` — a function of the step alone, so a resumed run sees the
batches of an uninterrupted one. Later steps belong to **buffer cycles** of
:attr:`ReplayBuffer.steps_per_cycle` steps (187 for 3 passes over 1000 items of batch 16): cycle
``c`` starts at ``pretrain_steps + c·steps_per_cycle``; at that moment (a segment boundary, after
the previous update ran) the frozen snapshot G̃ ← G and the buffer is rebuilt
(:mod:`training.replay_buffer`), then its shuffled batches are read. The snapshot and the cycle it
was taken for are checkpoint items of the step object (``replay_snapshot=True``), so a run resumed
inside cycle ``c`` rebuilds cycle ``c``'s buffer from the same G̃ and skips the batches already
used: resume is exact (the buffer itself, 2.4 GB, is regenerated, never saved).

Batches are ``(I*, O, I_s)`` tuples of float32 (B, crop, crop, 3) in [0, 1], the
:class:`training.rpgan_step.RPGANTrainStep` batch.

At the first segment (after the loop has set up the run folder) the frozen SEN's weights are
written to ``<run_dir>/sen.weights.h5`` (the run-directory contract: an RP-GAN run is a whole
framework for ``evaluate.py`` / ``deblur.py`` / ``export.py``) and every missing cache entry is
computed (the flows of the frozen SEN and I*_1, once per image; logged with a count).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import tensorflow as tf

import fileio
from training.loop import SegmentedData

SEN_WEIGHTS = "sen.weights.h5"


class RPGANData(SegmentedData):
    """Pre-training batches, then replay-buffer cycles (module docstring).

    Args:
        cache: the training images' :class:`training.deconv_cache.DeconvCache`.
        step: the :class:`training.rpgan_step.RPGANTrainStep` (built by the loop before the first
            segment; its ``model``, ``snapshot`` and ``snapshot_cycle`` are used).
        batch_size, crop_size: global batch and window side.
        pretrain_steps: steps of level-1 pre-training (40 epochs in the paper).
        buffer_kwargs: :class:`training.replay_buffer.ReplayBuffer` settings (``size``,
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
        from training import replay_buffer

        size = self.buffer_kwargs.get("size", replay_buffer.SIZE)
        passes = self.buffer_kwargs.get("passes", replay_buffer.PASSES)
        return passes * size // self.batch_size

    def cycle_of(self, step: int) -> tuple[int, int]:
        """(cycle, batch within it) of a buffer-phase global ``step``."""
        return divmod(step - self.pretrain_steps, self.steps_per_cycle)

    def segment_end(self, step: int) -> int:
        if step < self.pretrain_steps:
            return self.pretrain_steps
        cycle, _ = self.cycle_of(step)
        return self.pretrain_steps + (cycle + 1) * self.steps_per_cycle

    def dataset(self, step: int, epoch: int, epoch_step: int):
        del epoch, epoch_step  # the batches are a function of the global step
        self._prepare()
        if step < self.pretrain_steps:
            return self._pretraining(step)
        return self._cycle(*self.cycle_of(step))

    # --- pre-training --------------------------------------------------------------------------

    def pretraining_batch(self, step: int):
        """(I*_1, O, I_s) of pre-training step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        batch = self.cache.sample_batch(rng, self.batch_size, self.crop_size)
        return batch["istar1"], batch["blurred"], batch["sharp"]

    def _pretraining(self, start):
        def batches():
            for s in range(start, self.pretrain_steps):
                yield self.pretraining_batch(s)

        return _tuple_dataset(batches, self.batch_size, self.crop_size).prefetch(2)

    # --- buffer cycles -------------------------------------------------------------------------

    def _make_buffer(self):
        from training.replay_buffer import ReplayBuffer

        return ReplayBuffer(
            self.cache,
            self.step_obj.model,
            batch_size=self.batch_size,
            crop_size=self.crop_size,
            seed=self.seed,
            snapshot=self.step_obj.snapshot,
            **self.buffer_kwargs,
        )

    def _cycle(self, cycle, start):
        """Cycle ``cycle``'s batches from ``start``; rebuilds the buffer when the cycle is new,
        from G (G̃ ← G) unless the restored snapshot was taken for this very cycle."""
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

        def batches():
            for batch in self.buffer.batches(start):
                yield batch["istar"], batch["blurred"], batch["sharp"]

        return _tuple_dataset(batches, self.batch_size, self.crop_size)

    # --- once per process ----------------------------------------------------------------------

    def _prepare(self):
        """Writes the SEN's weights into the run folder and fills the cache (first segment)."""
        if self._prepared:
            return
        # The chief writes the run's files; other workers of a multi-worker run only read.
        chief = getattr(self.step_obj, "chief", True)
        if self.run_dir and self.sen is not None and chief:
            path = os.path.join(self.run_dir, SEN_WEIGHTS)
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


def _tuple_dataset(generator, batch_size, crop_size):
    image = tf.TensorSpec((batch_size, crop_size, crop_size, 3), tf.float32)
    return tf.data.Dataset.from_generator(generator, output_signature=(image, image, image))


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """⌈samples / batch⌉: RP-GAN draws random windows, so an epoch is ``samples`` windows rounded
    up to whole batches (§9: 3103 samples = 194 steps of 16)."""
    return math.ceil(samples / batch_size)
