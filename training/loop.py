"""The one generic training loop: strategy, checkpoints, resume, summaries, progress, validation and
the NaN/Inf guard. A paper plugs in a :class:`training.step.TrainStep`; nothing here is paper
specific.

The run directory's layout (``run_config.json``, ``checkpoints/``, ``best/``, ``tensorboard/``,
``final.weights.h5``) belongs to :mod:`rundir`, which every reader goes through.

Every file the loop writes itself goes through :mod:`fileio` (atomic, the umask's modes).

Epoch numbers: human text (progress line, resume, validation and end messages) says ``epoch
E/N``, the 1-based epoch in progress, or just completed, out of the run's N epochs; JSON says
``epochs_completed``. Internally ``epoch`` counts completed epochs and ``epoch_step`` the updates
done in the current one.

Epochs and resume: each epoch's data comes from ``make_epoch_dataset(epoch)`` (one pass, drop
remainder); a run resumed mid-epoch rebuilds that epoch's dataset and skips the ``epoch_step``
batches already used, so with a seeded, deterministic input pipeline the resumed run sees exactly
the batches of an uninterrupted one (and the same losses); otherwise it sees a fresh shuffle for
the rest of that epoch. Step, epoch, optimizer state and learning-rate schedule position (keyed on
the optimizer's iteration counter) are always restored exactly. A killed run loses at most the
updates since its last checkpoint (``checkpoint_every`` steps); Ctrl-C / SIGTERM save a
checkpoint before exiting.

Refusals (:class:`ConfigError`, one line): a ``run_dir`` that is a file, not writable, or in use
by another trainer; a ``run_dir`` whose ``run_config.json`` records another paper, model, model
arguments or checkpoint structure (compared before any restore, naming the first difference); a
checkpoint that cannot be restored. A damaged training file stops the run with the
``data.DataError`` naming it, after saving the last completed step. A run that fails before its
first step leaves no run folder behind (nor anything it added to an existing one). At start the
chief removes the leftovers of killed runs (:mod:`rundir`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time

import keras
import tensorflow as tf
from absl import logging as absl_logging

import fileio
import metrics
import progress as progress_lib
import rundir
from config import ConfigError  # noqa: F401  (a run that cannot start as configured)
from data.errors import DataError, iterate
from rundir import BEST, BEST_JSON, CHECKPOINTS, FINAL_WEIGHTS, RUN_CONFIG, TENSORBOARD
from training import batch_norm, summaries
from training import strategy as strategy_lib
from training.tracking import track_layer_lists, untrack_model_variables


class _DropCheckpointTimings(logging.Filter):
    """TensorFlow logs "Sharding callback duration" at INFO on every checkpoint save."""

    def filter(self, record):
        return "Sharding callback duration" not in record.getMessage()


absl_logging.get_absl_logger().addFilter(_DropCheckpointTimings())


class NonFiniteLossError(RuntimeError):
    """Raised when a training step returns a NaN or Inf value (nothing is saved after it)."""


@dataclasses.dataclass
class LoopConfig:
    """Bookkeeping of one run (all step counts are optimizer updates of the global batch).

    ``max_steps > 0`` overrides ``epochs``; ``checkpoint_every``/``val_every`` of 0 disable the
    periodic checkpoint/validation (epoch-end checkpoints follow ``checkpoint_every_epoch``).
    ``bn_refresh_batches > 0``: before each validation and the final weights, the inference
    model's BatchNormalization statistics are re-estimated over that many training batches
    (:mod:`training.batch_norm`).
    """

    run_dir: str
    steps_per_epoch: int
    epochs: int = 1
    max_steps: int = 0
    checkpoint_every: int = 1000
    checkpoint_every_epoch: bool = True
    keep_checkpoints: int = 3
    resume: bool = True
    log_every: int = 50
    val_every: int = 0
    summary_images: int = 2
    global_batch_size: int = 1
    bn_refresh_batches: int = 0

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps > 0 else self.epochs * self.steps_per_epoch


@dataclasses.dataclass
class ValidationSet:
    """Held-out pairs for periodic validation, kept in memory as uint8 H x W x 3 RGB arrays.

    ``label`` says what they are (e.g. "first 8 images of the test split, centre 256 px") and is
    printed and logged, because on GoPro they are a subset of the test split, not a held-out set.
    """

    pairs: list  # of (name, blur uint8 HxWx3, sharp uint8 HxWx3)
    label: str

    def tensors(self, index):
        """``(input, target)`` of pair ``index`` as (1, H, W, C) float32 tensors: the blurred and
        sharp images in [0, 1]. Subclasses with other targets (flow labels) override it."""
        _, blur, sharp = self.pairs[index]
        return (
            tf.constant(blur[None], tf.float32) / 255.0,
            tf.constant(sharp[None], tf.float32) / 255.0,
        )

    def blurred_metrics(self) -> dict:
        """Mean PSNR/SSIM of the blurred inputs themselves (the baseline a model must beat)."""
        mean = metrics.MeanMetrics()
        for _, blur, sharp in self.pairs:
            mean.update(**metrics.image_metrics(blur / 255.0, sharp))
        return mean.result()

    def baselines(self) -> dict:
        """The scores a model must beat, logged once as ``val/<name>``: here the blurred inputs'
        own PSNR/SSIM."""
        base = self.blurred_metrics()
        return {"blurred_input_psnr": base["psnr"], "blurred_input_ssim": base["ssim"]}

    def baseline_text(self, baselines) -> str:
        """The baselines as the validation message states them."""
        psnr, ssim = baselines["blurred_input_psnr"], baselines["blurred_input_ssim"]
        return f"blurred inputs: {psnr:.3f} dB, {ssim:.4f}"


@dataclasses.dataclass
class TrainResult:
    step: int
    epoch: int  # completed epochs
    run_dir: str
    final_weights: str | None
    last_validation: dict | None
    best: dict | None
    seconds: float


def _flat(tree: dict) -> dict:
    """``{leaf name: value}`` of a nested dict (a config's JSON form)."""
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value) if isinstance(value, dict) else {key: value})
    return flat


class Progress:
    """Progress line with step rate and ETA: in place on a terminal, one line per log interval
    otherwise (log files, CI)."""

    def __init__(self, total_steps, out=None, total_epochs=0):
        self.total, self.total_epochs = total_steps, total_epochs
        self.out = out or sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.last_draw = 0.0

    def line(self, step, epoch, rate, values) -> str:
        pct = 100.0 * step / max(self.total, 1)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        epochs = f"/{self.total_epochs}" if self.total_epochs else ""
        parts = [f"step {step}/{self.total} ({pct:5.1f}%)", f"epoch {epoch}{epochs}"]
        parts += [f"{k} {_fmt(v)}" for k, v in values.items()]
        parts += [f"{rate:.2f} step/s", f"ETA {progress_lib.duration(eta)}"]
        return " | ".join(parts)

    def update(self, step, epoch, rate, values, final=False):
        now = time.monotonic()
        if not final and (not self.tty or now - self.last_draw < 0.5):
            return
        self.last_draw = now
        text = self.line(step, epoch, rate, values)
        if self.tty:
            self.out.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, text):
        self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.out.flush()


def _fmt(value) -> str:
    value = float(value)
    return (
        f"{value:.3e}"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4)
        else f"{value:.4f}"
    )


class SegmentedData:
    """Training data made in segments, each from the training state at its start: the loop asks
    for a new dataset at every segment boundary as it does at every epoch start (after the last
    update of the previous segment has run, so nothing prefetched depends on a stale state).

    RP-GAN's replay buffer is the use (:mod:`training.rpgan.rpgan_data`): a buffer cycle is
    rebuilt by the generator's frozen snapshot taken when the cycle starts, and cycles do not align
    with epochs. Subclasses implement both methods; a resumed run asks for the dataset from its
    restored position, so the data must be a function of (``step``, restored state).
    """

    def segment_end(self, step: int) -> int:
        """The global step at which the segment holding ``step`` ends (exclusive)."""
        raise NotImplementedError

    def dataset(self, step: int, epoch: int, epoch_step: int):
        """A ``tf.data.Dataset`` of the global batches from global step ``step`` (epoch
        ``epoch``, its ``epoch_step``-th update) to at least the segment's end."""
        raise NotImplementedError


class Trainer:
    """Runs a :class:`training.step.TrainStep` to ``config.total_steps`` updates.

    Args:
        step: the paper's step object (not yet built; :meth:`run` builds it in the strategy scope).
        make_epoch_dataset: ``epoch -> tf.data.Dataset`` of ``(blur, sharp)`` global batches, one
            epoch, (B, H, W, 3) float32 in [0, 1], at least ``steps_per_epoch`` batches (any
            tuple the step object's ``train_step`` takes); or a :class:`SegmentedData`.
        config: :class:`LoopConfig`.
        strategy: a ``tf.distribute.Strategy`` (default: the default strategy).
        validation: a :class:`ValidationSet` or None (no validation).
        run_config: extra entries for ``run_config.json`` (``flags`` etc.).
        out: stream for the summary and progress (stdout).
    """

    def __init__(
        self,
        step,
        make_epoch_dataset,
        config,
        *,
        strategy=None,
        validation=None,
        run_config=None,
        out=None,
    ):
        self.step_obj, self.make_epoch_dataset, self.config = step, make_epoch_dataset, config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.validation, self.extra_config = validation, dict(run_config or {})
        self.chief = strategy_lib.is_chief(self.strategy)
        self.total_epochs = math.ceil(config.total_steps / max(config.steps_per_epoch, 1))
        self.progress = Progress(config.total_steps, out, self.total_epochs)
        self.step = self.epoch = self.epoch_step = 0
        self.saved_step, self.last_val_step = -1, -1
        self.last_validation, self.best = None, None
        self.last_values = {}  # the scalars of the latest step (Python floats)
        self._baseline = None  # the validation set's baselines (e.g. the blurred inputs' PSNR)
        self._score_names = []  # the step object's validation scores, set by validate()
        self._counters = None
        self._refreshed_step = -1  # the step whose BatchNormalization statistics were refreshed
        self._stop = StopRequest()
        self._lock, self._created, self._restored = None, None, False

    # ---------------------------------------------------------------------------------------------
    # Setup: run folder, build, checkpoints, resume, run summary
    # ---------------------------------------------------------------------------------------------

    def path(self, *parts):
        return os.path.join(self.config.run_dir, *parts)

    def epoch_label(self) -> str:
        """``epoch E/N``: the 1-based epoch in progress, or the one just completed (the human
        text's one convention, see the module docstring)."""
        return f"epoch {self._epoch_number()}/{self.total_epochs}"

    def _epoch_number(self) -> int:
        return self.epoch + 1 if self.epoch_step or not self.epoch else self.epoch

    @property
    def epochs_completed(self) -> int:
        return self.epoch + self.epoch_step // self.config.steps_per_epoch

    def setup(self):
        """Prepares the run folder, builds the step object and the checkpoint (managers), and
        restores the latest checkpoint; raises :class:`ConfigError` for a run that cannot start.
        On any failure it removes what it added to the run folder (nothing had trained yet)."""
        if self.config.steps_per_epoch < 1:
            raise ConfigError(
                "steps_per_epoch must be >= 1 (is the training set smaller than one batch?)."
            )
        if self.config.bn_refresh_batches and isinstance(self.make_epoch_dataset, SegmentedData):
            raise ConfigError(
                "--bn_refresh_batches needs per-epoch training data; this run's comes in "
                "segments (RP-GAN's replay buffer)."
            )
        try:
            self._prepare_run_dir()
            latest = self._resumable_checkpoint()
            self._build()
            self._restore(latest)
            self._write_run_config()
            self.writer = (
                tf.summary.create_file_writer(self.path(TENSORBOARD))
                if self.chief
                else tf.summary.create_noop_writer()
            )
        except BaseException:
            self._discard_if_unstarted()
            raise
        self._train_fn = self._make_train_fn()
        traced = getattr(self.step_obj, "predict_traced", True)
        self._predict_fn = (
            tf.function(self._predict, reduce_retracing=True) if traced else self._predict
        )

    def _prepare_run_dir(self):
        """Chief: checks, creates and locks the run folder, then removes leftovers of killed runs
        (under the lock they cannot belong to a live process)."""
        if not self.chief:
            return
        run_dir = self.config.run_dir
        problem = rundir.run_dir_problem(run_dir)
        if problem:
            raise ConfigError(problem + ".")
        self._created = rundir.Created(run_dir)
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"--run_dir {run_dir}: cannot create it ({error}).") from None
        self._lock = rundir.RunDirLock(run_dir)
        if not self._lock.acquire():
            self._lock, self._created = None, None  # the other trainer's folder: leave it alone
            raise ConfigError(
                f"{os.path.abspath(run_dir)} is in use by another training process; wait for "
                "it to finish or choose another --run_dir."
            )
        for path in rundir.remove_leftovers(run_dir):
            self.progress.message(f"Removed a leftover of an interrupted run: {path}")

    def _resumable_checkpoint(self):
        """The latest checkpoint to resume from (None: a new run), after checking that the run
        folder holds a run of the same structure (before anything is built or restored)."""
        latest = rundir.latest_checkpoint(self.path(CHECKPOINTS))
        if latest is None:
            return None
        if not self.config.resume:
            raise ConfigError(
                f"{self.path(CHECKPOINTS)} already holds checkpoints; pass --resume to "
                "continue that run or choose another --run_dir."
            )
        old = rundir.read_json(self.path(RUN_CONFIG))
        if old is not None:
            new = self._structure_config()
            found = rundir.first_difference({k: old.get(k, rundir.MISSING) for k in new}, new)
            if found:
                key, was, now = found
                raise ConfigError(
                    f"{self.config.run_dir} holds another run: {key} is "
                    f"{rundir.describe_value(was)} there, {rundir.describe_value(now)} in this "
                    "command; use another --run_dir, or the run's own settings to resume it."
                )
            self._say_changed_settings(old.get("config"))
        return latest

    def _say_changed_settings(self, recorded):
        """A resume may change settings that do not change the run's structure (length, learning
        rate, data, cadence): it says which, comparing the recorded configuration with this one."""
        current = json.loads(json.dumps(self.extra_config.get("config"), default=str))
        if not isinstance(recorded, dict) or not isinstance(current, dict):
            return
        changes = rundir.differences(recorded, current)
        if changes:
            listed = ", ".join(
                f"{key} {rundir.describe_value(was)} -> {rundir.describe_value(now)}"
                for key, was, now in changes
            )
            self.progress.message(f"Resuming with changed settings: {listed}.")

    def _structure_config(self) -> dict:
        """The ``run_config.json`` entries a resume must not change: every entry of the step
        object's ``run_config()`` (paper, model, model arguments, and e.g. the optimizer), plus its
        ``structure`` (attribute or method returning a dict) if it reports one."""
        config = json.loads(json.dumps(self.step_obj.run_config(), default=str))
        structure = self._step_structure()
        if structure is not None:
            config["structure"] = structure
        return config

    def _step_structure(self):
        structure = getattr(self.step_obj, "structure", None)
        structure = structure() if callable(structure) else structure
        return json.loads(json.dumps(structure, default=str)) if structure is not None else None

    def _build(self):
        try:
            self.step_obj.build(self.strategy)
        except ConfigError:  # the step's own one-line reason (e.g. an unusable weight file)
            raise
        except (TypeError, ValueError) as error:  # e.g. a bad --model_kwargs value
            model = self.step_obj.run_config()
            raise ConfigError(
                f"cannot build model {model.get('model')!r} with model_kwargs "
                f"{model.get('model_kwargs')}: {str(error).splitlines()[0]}"
            ) from None
        # Counters live outside the strategy scope: plain variables, assigned before each save.
        self._counters = {
            k: tf.Variable(0, dtype=tf.int64, trainable=False, name=k)
            for k in ("step", "epoch", "epoch_step")
        }
        items = self.step_obj.checkpoint_items()
        for item in items.values():
            if isinstance(item, keras.layers.Layer):
                track_layer_lists(item)  # Keras 3 hides list-held layers from tf.train.Checkpoint
            elif isinstance(item, keras.optimizers.Optimizer):
                untrack_model_variables(item)  # so model variables are stored under model/
        self.checkpoint = tf.train.Checkpoint(**items, **self._counters)
        self.manager = self._manager(CHECKPOINTS, self.config.keep_checkpoints)
        self.best_manager = self._manager(BEST, 1)

    def _manager(self, name, keep):
        # Non-chief workers of a multi-worker run must take part in every save (collectives) but
        # write to a scratch folder that is deleted after each save.
        if self.chief:
            folder = self.path(name)
        else:
            _, task_id = strategy_lib.task_info(self.strategy)
            folder = self.path(".workers", f"worker_{task_id}", name)
        return tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep)

    def _restore(self, latest):
        if latest is None:
            return
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, ValueError, AssertionError) as error:
            raise ConfigError(
                f"{latest}: cannot restore this checkpoint into the model of this command "
                f"({str(error).splitlines()[0][:300]}); use another --run_dir."
            ) from None
        self._restored = True
        self.step, self.epoch, self.epoch_step = (
            int(self._counters[k].numpy()) for k in ("step", "epoch", "epoch_step")
        )
        self.saved_step = self.step
        self.best = rundir.read_json(self.path(BEST, BEST_JSON))
        done = f"{self.epoch} of {self.total_epochs} epochs completed"
        if self.epoch_step:
            done += f", {self.epoch_step} of its {self.config.steps_per_epoch} steps done"
        self.progress.message(
            f"Resumed from {latest}: step {self.step}, {self.epoch_label()} ({done})."
        )

    def _write_run_config(self):
        payload = {**self.step_obj.run_config(), **self.extra_config}
        structure = self._step_structure()
        if structure is not None:
            payload["structure"] = structure
        old = rundir.read_json(self.path(RUN_CONFIG))
        payload.update(self._loop_summary(old))
        if self.chief:
            rundir.write_run_config(self.config.run_dir, payload)
        self._print_summary(payload)

    def _discard_if_unstarted(self):
        """Removes what this process added to the run folder if no step was trained and nothing
        was restored or saved (a run that never started leaves no half-made folder)."""
        unstarted = not self._restored and self.saved_step < 0 and self.step == 0
        if self._created is not None and unstarted:
            writer = getattr(self, "writer", None)
            if writer is not None:
                writer.close()
            self._created.remove()
        self._release()

    def _release(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _loop_summary(self, old):
        cfg = self.config
        now = datetime.datetime.now().isoformat(timespec="seconds")
        summary = {
            "strategy": strategy_lib.describe(self.strategy),
            "num_replicas": self.strategy.num_replicas_in_sync,
            "global_batch_size": cfg.global_batch_size,
            "steps_per_epoch": cfg.steps_per_epoch,
            "total_steps": cfg.total_steps,
            "epochs": math.ceil(cfg.total_steps / cfg.steps_per_epoch),
            "checkpoint_every": cfg.checkpoint_every,
            "validation": self.validation.label if self.validation else "none",
            "versions": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": sys.version.split()[0],
            },
            "created": (old or {}).get("created", now),
            "updated": now,
        }
        summary.update(self.step_obj.describe())
        if self.step:
            summary["resumed_from_step"] = self.step
        return summary

    def _print_summary(self, payload):
        lines = [f"Run directory: {os.path.abspath(self.config.run_dir)}"]
        settings = {}
        for key in sorted(payload):
            if key in ("flags", "config"):
                settings.update(_flat(payload[key]))
            else:
                lines.append(f"  {key}: {payload[key]}")
        if settings:
            flat = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
            lines.append(f"  settings: {flat}")
        self.progress.message("\n".join(lines))

    # ---------------------------------------------------------------------------------------------
    # Steps
    # ---------------------------------------------------------------------------------------------

    def _make_train_fn(self):
        strategy, step_obj = self.strategy, self.step_obj

        @tf.function(autograph=False)
        def train_fn(batch):
            args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            per_replica = strategy.run(step_obj.train_step, args=args)
            return {
                k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()
            }

        return train_fn

    def _predict(self, blur):
        return self.step_obj.predict(blur)

    def _epoch_batches(self):
        """The distributed batches still to run in the current epoch (skipping used ones)."""
        cfg = self.config
        remaining = min(cfg.steps_per_epoch - self.epoch_step, cfg.total_steps - self.step)
        if isinstance(self.make_epoch_dataset, SegmentedData):
            segments = self.make_epoch_dataset
            remaining = min(remaining, segments.segment_end(self.step) - self.step)
            dataset = segments.dataset(self.step, self.epoch, self.epoch_step)
        else:
            dataset = self.make_epoch_dataset(self.epoch)
            if self.epoch_step:
                dataset = dataset.skip(self.epoch_step)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = dataset.take(remaining).with_options(options)
        return remaining, self.strategy.experimental_distribute_dataset(dataset)

    def run(self) -> TrainResult:
        """Trains to ``total_steps`` (resuming if possible), validates, saves; returns a summary.

        Raises :class:`NonFiniteLossError` on NaN/Inf (the last good checkpoint is kept),
        ``KeyboardInterrupt`` after Ctrl-C / SIGTERM, once the current step is saved, and
        ``data.DataError`` naming a damaged training file, once the last completed step is saved.
        """
        start = time.monotonic()
        if self._counters is None:
            self.setup()
        try:
            with StopRequest(self._has_unsaved_updates) as self._stop:
                try:
                    self._train_epochs()
                except DataError:
                    # The failing batch was never applied: the state is the last completed step.
                    if self.step > 0:
                        self._save(reason="data error")
                    raise
                finally:
                    self.writer.flush()
            return self._finish(time.monotonic() - start)
        except BaseException:
            self._discard_if_unstarted()
            raise
        finally:
            self._release()

    def _has_unsaved_updates(self) -> bool:
        """Updates since the last checkpoint (or since the start of a fresh run)."""
        return self.step > max(self.saved_step, 0)

    def _train_epochs(self):
        cfg = self.config
        self._rate_start = (time.monotonic(), self.step)
        self._interval = {"values": {}, "count": 0, "time": time.monotonic(), "step": self.step}
        while self.step < cfg.total_steps:
            expected, batches = self._epoch_batches()
            done = 0
            # iterate(): a damaged file surfaces as the DataError naming it, and the iterator (with
            # the input threads) is destroyed however the loop ends.
            with contextlib.closing(iterate(batches)) as stream:
                for batch in stream:
                    self._after_step(self._train_fn(batch))
                    done += 1
            if done < expected:
                if done == 0:
                    raise RuntimeError(
                        f"The training dataset of {self.epoch_label()} yielded no "
                        "batch; is the training set smaller than one batch?"
                    )
                self.progress.message(
                    f"Warning: {self.epoch_label()} had {done} of {expected} "
                    "expected batches; treating it as complete."
                )
            if self.epoch_step >= cfg.steps_per_epoch or done < expected:
                self.epoch, self.epoch_step = self.epoch + 1, 0
                if cfg.checkpoint_every_epoch:
                    self._save(reason="epoch end")

    def _after_step(self, outputs):
        values = self.last_values = {k: float(v) for k, v in outputs.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            self._non_finite(bad)
        self._report_skipped(values)
        self.step += 1
        self.epoch_step += 1
        interval = self._interval
        for k, v in values.items():
            interval["values"][k] = interval["values"].get(k, 0.0) + v
        interval["count"] += 1
        cfg = self.config
        self.progress.update(self.step, self._epoch_number(), self._rate(), self._shown(values))
        if self.step % max(cfg.log_every, 1) == 0 or self.step == cfg.total_steps:
            self._log_interval()
        if cfg.val_every and (self.step % cfg.val_every == 0):
            self.validate()
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            self._save(reason="interval")
        if self._stop.signum is not None:
            self._save(reason="interrupted")
            self.progress.message(
                f"Stopped by signal {self._stop.signum} at step {self.step} "
                f"({self.epoch_label()}); checkpoint saved. Run the same command again to resume."
            )
            raise KeyboardInterrupt(f"signal {self._stop.signum}")

    def _report_skipped(self, values):
        """float16: says when an optimizer skipped its update (non-finite scaled gradients; the
        loss scale was halved, :mod:`training.optimizers`)."""
        skipped = values.get("skipped_updates", 0.0) + values.get("critic_skipped_updates", 0.0)
        if skipped > 0:
            scale = values.get("loss_scale")
            scale_text = f"; loss scale now {scale:g}" if scale is not None else ""
            self.progress.message(
                f"Step {self.step + 1}: non-finite float16 gradients, {skipped:g} update(s) "
                f"skipped{scale_text}."
            )

    def _shown(self, values):
        """The terms of the progress line: the step object's ``progress_terms`` (default the
        total ``loss``) that it returned."""
        names = getattr(self.step_obj, "progress_terms", ("loss",))
        return {k: values[k] for k in names if k in values} or {"loss": float("nan")}

    def _rate(self):
        t0, s0 = self._rate_start
        elapsed = time.monotonic() - t0
        return (self.step - s0) / elapsed if elapsed > 0 else 0.0

    def _non_finite(self, bad):
        self.writer.flush()
        last = self.manager.latest_checkpoint if self.chief else None
        where = (
            f"the last good checkpoint is {last} (step {self.saved_step})"
            if last
            else "no checkpoint was written yet"
        )
        names = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise NonFiniteLossError(
            f"Non-finite training value at step {self.step + 1} ({names}); stopped without "
            f"saving: {where}. Lower --learning_rate or check the data, then rerun to resume."
        )

    def _log_interval(self):
        interval = self._interval
        now = time.monotonic()
        count = max(interval["count"], 1)
        means = {k: v / count for k, v in interval["values"].items()}
        rate = (self.step - interval["step"]) / max(now - interval["time"], 1e-9)
        rates = self.step_obj.learning_rates()
        with self.writer.as_default(step=self.step):
            for k, v in means.items():
                summaries.scalar(f"train/{k}", v)
            for k, v in rates.items():
                summaries.scalar(f"train/{k}", v)
            summaries.scalar("train/steps_per_second", rate)
            summaries.scalar(
                "train/epoch", self.epoch + self.epoch_step / self.config.steps_per_epoch
            )
        shown = self._shown(means)
        shown.update({k.replace("learning_rate", "lr"): v for k, v in rates.items()})
        self.progress.update(self.step, self._epoch_number(), self._rate(), shown, final=True)
        self._interval = {"values": {}, "count": 0, "time": time.monotonic(), "step": self.step}

    # ---------------------------------------------------------------------------------------------
    # Validation, checkpoints, end of run
    # ---------------------------------------------------------------------------------------------

    def validate(self) -> dict | None:
        """The step object's validation scores (default PSNR/SSIM, uint8 convention; see
        :meth:`training.step.TrainStep.validation_scores`) of the inference model on the
        validation set; logs them, updates ``best/``. Returns the means or None."""
        if not self.validation or not self.validation.pairs:
            return None
        started = time.monotonic()
        self._refresh_batch_norm()
        step_obj, mean, images = self.step_obj, metrics.MeanMetrics(), []
        for i in range(len(self.validation.pairs)):
            inputs, target = self.validation.tensors(i)
            output = self._predict_fn(inputs)
            scores = step_obj.validation_scores(output, target)
            mean.update(**{k: v.numpy() for k, v in scores.items()})
            if i < self.config.summary_images:
                images.append(step_obj.validation_images(inputs, output, target))
        self._score_names = list(scores)
        result = mean.result()
        if hasattr(self, "_interval"):  # keep validation time out of the logged steps/s
            self._interval["time"] += time.monotonic() - started
        first = self._baseline is None
        if first:
            self._baseline = self.validation.baselines()
        self._log_validation(result, images, first)
        self.last_validation, self.last_val_step = result, self.step
        self.progress.message(
            f"validation @ step {self.step} ({self.epoch_label()}): "
            f"{step_obj.validation_text(result)} on {result['num_images']} image(s) "
            f"({self.validation.baseline_text(self._baseline)}; "
            f"{time.monotonic() - started:.1f}s)"
            + (f"\n  validation set: {self.validation.label}" if first else "")
        )
        self._update_best(result)
        return result

    def _log_validation(self, result, images, first):
        with self.writer.as_default(step=self.step):
            for name in self._score_names:
                summaries.scalar(f"val/{name}", result[name])
            if first:  # the baseline, inputs and labels do not change: log them once per process
                for name, value in self._baseline.items():
                    summaries.scalar(f"val/{name}", value)
            for i, (fixed, varying) in enumerate(images):
                for name, image in varying.items():
                    summaries.image(f"val_images/{i}/{name}", image)
                if first:
                    for name, image in fixed.items():
                        summaries.image(f"val_images/{i}/{name}", image)

    def _update_best(self, result):
        """Saves ``best/`` when the step object's ``validation_metric`` improves (higher or lower
        is better as its ``validation_higher_is_better`` says)."""
        name = self.step_obj.validation_metric
        value = result[name]
        if not math.isfinite(value):
            return
        if self.best and name in self.best:
            higher = self.step_obj.validation_higher_is_better
            if (value <= self.best[name]) if higher else (value >= self.best[name]):
                return
        self._assign_counters()
        self._save_with(self.best_manager)
        scores = {k: result[k] for k in self._score_names}
        self.best = {
            "step": self.step,
            "epochs_completed": self.epochs_completed,
            **scores,
            "num_images": result["num_images"],
            "validation": self.validation.label,
        }
        if self.chief:
            rundir.write_json(self.path(BEST, BEST_JSON), self.best)

    def _assign_counters(self):
        self._counters["step"].assign(self.step)
        self._counters["epoch"].assign(self.epoch)
        self._counters["epoch_step"].assign(self.epoch_step)

    def _save_with(self, manager):
        path = manager.save(checkpoint_number=self.step)
        if not self.chief:
            shutil.rmtree(manager.directory, ignore_errors=True)
        return path

    def _save(self, reason=""):
        """Saves ``checkpoints/ckpt-<step>`` unless this step is already saved."""
        if self.step == self.saved_step or self._counters is None:
            return None
        self._assign_counters()
        path = self._save_with(self.manager)
        self.saved_step = self.step
        return path

    def _refresh_batch_norm(self):
        """Once per step, before the model is validated or saved as final weights: the inference
        model's BatchNormalization statistics become the average over ``bn_refresh_batches``
        training batches of an epoch the run never trains on (deterministic, so a resumed run
        refreshes with the same batches). Training itself is unchanged: a training step
        normalises with its own batch's statistics."""
        count = self.config.bn_refresh_batches
        if count <= 0 or self._refreshed_step == self.step:
            return
        self._refreshed_step = self.step
        model = self.step_obj.inference_model
        if not batch_norm.batch_norm_layers(model) or not callable(self.make_epoch_dataset):
            return
        batches = self.make_epoch_dataset(BN_REFRESH_EPOCH).take(count)
        if getattr(self, "_bn_forward", None) is None:
            self._bn_forward = batch_norm.training_forward(model)  # traced once per run
        with self.strategy.scope():
            batch_norm.reestimate_batch_norm(model, batches, self._bn_forward)

    def _finish(self, seconds) -> TrainResult:
        if self.validation and self.last_val_step != self.step:
            self.validate()
        self._refresh_batch_norm()
        self._save(reason="end")
        final = None
        if not self.chief:  # this worker's scratch checkpoints
            _, task_id = strategy_lib.task_info(self.strategy)
            shutil.rmtree(self.path(".workers", f"worker_{task_id}"), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(self.path(".workers"))
        if self.chief:
            final = self.path(FINAL_WEIGHTS)
            self._write_final_weights(final)
        self.writer.flush()
        where = os.path.abspath(self.config.run_dir)
        progress = (
            f", {self.epoch_step} of its {self.config.steps_per_epoch} steps"
            if self.epoch_step
            else " completed"
        )
        took = progress_lib.duration(seconds)
        self.progress.message(
            f"Done: step {self.step}, {self.epoch_label()}{progress}, in {took}. "
            f"Outputs in {where}: checkpoints/, best/, tensorboard/ (tensorboard --logdir "
            f"{where}/tensorboard), final.weights.h5."
        )
        return TrainResult(
            self.step,
            self.epoch,
            self.config.run_dir,
            final,
            self.last_validation,
            self.best,
            seconds,
        )

    def _write_final_weights(self, final):
        """Keras weights through a :mod:`fileio`-named temporary, renamed into place."""
        fileio.atomic_save_weights(self.step_obj.inference_model, final)


# The epoch whose batches re-estimate BatchNormalization statistics: far past any run's last
# epoch, so they are not the batches the run trains on, and fixed, so a resumed run uses the same.
BN_REFRESH_EPOCH = 1_000_000


class StopRequest:
    """Turns the first SIGINT (Ctrl-C) / SIGTERM into a request that the loop honours after the
    current step (so the saved checkpoint is consistent); a second signal interrupts at once, and
    so does the first while ``unsaved()`` says nothing would be lost (e.g. while the first
    segment's data is prepared: RP-GAN's cache takes minutes before step 1). Handlers are only
    installed in the main thread."""

    def __init__(self, unsaved=None):
        self.signum = None
        self.unsaved = unsaved
        self._previous = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum} (second)")
        if self.unsaved is not None and not self.unsaved():
            raise KeyboardInterrupt(f"signal {signum} (nothing unsaved)")
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
