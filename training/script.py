"""The flow every ``train_<paper>.py`` shares, so that a script only states its paper.

A training script defines its paper flags, its paper defaults and quick preset, a step factory and
its own flag checks, then calls:

* :func:`apply_defaults` (paper defaults, then ``--preset quick``; the command line always wins);
* :func:`build_trainer` (flags -> strategy, training source, steps per epoch, seeded step object,
  validation set, :class:`~training.loop.LoopConfig`, per-epoch datasets -> ``Trainer``);
* :func:`run_main` (argument and flag checks without importing TensorFlow, then the run, with
  every expected failure turned into one ``<script>: error: ...`` line and a non-zero exit).

Nothing here imports TensorFlow at module load: a bad flag exits before that import.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

import cli
import rundir
from cli import train_flags

FLAGS = flags.FLAGS


def apply_defaults(paper_defaults: dict, quick_preset: dict) -> None:
    """Paper defaults, then the ``--preset quick`` overrides; flags given on the command line keep
    their value. Restating every default in the script means that another paper's script imported
    in the same process cannot change what this one runs."""
    train_flags.apply_defaults(paper_defaults)
    if FLAGS.preset == "quick":
        train_flags.apply_defaults(quick_preset)


def check_crop_size(multiple: int, what: str, minimum: int = 0) -> None:
    """``--crop_size`` must be a multiple of ``multiple`` and at least ``minimum``; raises
    ``app.UsageError`` naming ``what`` (the model configuration that needs it)."""
    size = FLAGS.crop_size
    if size % multiple:
        raise app.UsageError(f"--crop_size must be a multiple of {multiple} ({what}), got {size}.")
    if size < minimum:
        raise app.UsageError(f"--crop_size must be at least {minimum} ({what}), got {size}.")


def check_data_dir() -> None:
    """A local ``--data_dir`` must be an existing folder (``tfds:NAME`` is checked when read)."""
    path = FLAGS.data_dir
    if path and not path.startswith("tfds:") and not os.path.isdir(path):
        raise app.UsageError(f"--data_dir {path} does not exist or is not a folder.")


def check_run_dir() -> None:
    """A given ``--run_dir`` must be a folder, or creatable, and writable (nothing is created)."""
    if FLAGS.run_dir:
        problem = rundir.run_dir_problem(FLAGS.run_dir)
        if problem:
            raise app.UsageError(problem + ".")


def apply_model_kwargs(model_name: str, flag_keys) -> None:
    """Checks ``--model_kwargs`` against ``model_name`` and gives the keys in ``flag_keys`` to
    their flags (:func:`training.flags.merge_model_kwargs`); a prepare step of the scripts, run
    before their flag checks so that these see the merged values."""
    train_flags.merge_model_kwargs(model_name, flag_keys)


def extra_model_kwargs(flag_keys) -> dict:
    """The ``--model_kwargs`` entries without a flag of their own (checked by
    :func:`apply_model_kwargs`), to add to a script's flag-derived ``model_kwargs``."""
    kwargs = train_flags.parse_model_kwargs(FLAGS.model_kwargs)
    return {k: v for k, v in kwargs.items() if k not in flag_keys}


def check_decay_flags() -> None:
    """The polynomial decay must go down: ``--learning_rate`` >= ``--lr_end``."""
    if FLAGS.learning_rate < FLAGS.lr_end:
        raise app.UsageError(
            f"--learning_rate {FLAGS.learning_rate:g} is below --lr_end {FLAGS.lr_end:g}."
        )


def width_kwargs() -> dict:
    """``--base_channels`` / ``--num_res`` as model overrides, when given (None: the model's)."""
    return {
        name: FLAGS[name].value
        for name in ("base_channels", "num_res")
        if FLAGS[name].value is not None
    }


def polynomial_decay_kwargs(total: int) -> dict:
    """The flags of :class:`training.step.PolynomialDecayTrainStep` (IDC, Two-Way): the decay from
    ``--learning_rate`` to ``--lr_end`` with ``--lr_power`` over ``total`` steps, Adam epsilon."""
    return {
        "total_steps": total,
        "learning_rate": FLAGS.learning_rate,
        "end_learning_rate": FLAGS.lr_end,
        "power": FLAGS.lr_power,
        "epsilon": FLAGS.adam_epsilon,
    }


def total_steps(steps_per_epoch: int) -> int:
    """``--max_steps`` if set, else ``--epochs`` x ``steps_per_epoch`` (as LoopConfig counts)."""
    return FLAGS.max_steps if FLAGS.max_steps > 0 else FLAGS.epochs * steps_per_epoch


def seed_initialisation() -> None:
    """With ``--seed >= 0`` the model initialisation is reproducible too (the data pipeline is
    seeded per epoch by :func:`training.inputs.epoch_dataset_fn`)."""
    if FLAGS.seed >= 0:
        import keras

        keras.utils.set_random_seed(FLAGS.seed)


@dataclasses.dataclass
class TrainingData:
    """What :func:`build_trainer` needs of a training set: its size (examples; one epoch is
    ``size // batch`` steps), ``epoch -> dataset``, a lazy validation set and the
    ``run_config.json`` description. The default is the (blur, sharp) pairs of the shared data
    flags; SEN gives its flow sets (:mod:`training.flow_inputs`)."""

    size: int
    epoch_datasets: Callable
    validation: Callable  # () -> ValidationSet | None
    description: dict
    unit: str = "pairs"


def image_pair_data() -> TrainingData:
    """The (blur, sharp) training pairs and validation set of the shared data flags."""
    from training import inputs

    source = inputs.open_train_source(FLAGS.data_dir, FLAGS.blur_variant)
    return TrainingData(
        size=len(source),
        epoch_datasets=_epoch_datasets(inputs, source),
        validation=lambda: _validation(inputs),
        description={"train": inputs.describe_data_dir(FLAGS.data_dir), "train_pairs": len(source)},
    )


def build_trainer(
    step_factory: Callable,
    *,
    paper_flags,
    default_run_dir: str,
    out=None,
    data_factory: Callable[[], TrainingData] = image_pair_data,
):
    """Flags -> (strategy, step object, data, validation, loop config) -> ``Trainer``.

    Args:
        step_factory: ``(steps_per_epoch=..., total_steps=...) -> TrainStep`` (not built): the
            per-epoch schedules need the first, the whole-run decays the second.
        paper_flags: names of the script's own flags, recorded in ``run_config.json``.
        default_run_dir: run directory when ``--run_dir`` is not given.
        out: stream for the run summary and progress (stdout).
        data_factory: ``() -> TrainingData`` (default: the image pairs of the data flags).
    """
    from training import loop, strategy

    try:
        dist = strategy.make_strategy(FLAGS.strategy)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if FLAGS.batch_size % dist.num_replicas_in_sync:
        raise app.UsageError(
            f"--batch_size {FLAGS.batch_size} is not divisible by the "
            f"{dist.num_replicas_in_sync} replicas."
        )
    data = data_factory()
    steps_per_epoch = data.size // FLAGS.batch_size
    if steps_per_epoch < 1:
        raise app.UsageError(
            f"The training set has {data.size} {data.unit}, fewer than one batch of "
            f"{FLAGS.batch_size}."
        )
    seed_initialisation()
    step = step_factory(steps_per_epoch=steps_per_epoch, total_steps=total_steps(steps_per_epoch))
    extra = {"flags": train_flags.snapshot(paper_flags), "data": data.description}
    return loop.Trainer(
        step,
        data.epoch_datasets,
        _loop_config(loop, FLAGS.run_dir or default_run_dir, steps_per_epoch),
        strategy=dist,
        validation=data.validation(),
        run_config=extra,
        out=out,
    )


def _loop_config(loop, run_dir, steps_per_epoch):
    return loop.LoopConfig(
        run_dir=run_dir,
        steps_per_epoch=steps_per_epoch,
        epochs=FLAGS.epochs,
        max_steps=FLAGS.max_steps,
        checkpoint_every=FLAGS.checkpoint_every,
        checkpoint_every_epoch=FLAGS.checkpoint_every_epoch,
        keep_checkpoints=FLAGS.keep_checkpoints,
        resume=FLAGS.resume,
        log_every=FLAGS.log_every,
        val_every=FLAGS.val_every_steps or FLAGS.val_every_epochs * steps_per_epoch,
        summary_images=FLAGS.summary_images,
        global_batch_size=FLAGS.batch_size,
    )


def _validation(inputs):
    # Validation images never get the training noise: they come from the evaluation pipeline.
    return inputs.load_validation(
        FLAGS.val_data_dir or FLAGS.data_dir,
        split=FLAGS.val_split,
        num_images=FLAGS.val_images,
        crop=FLAGS.val_crop,
        blur_variant=FLAGS.blur_variant,
        explicit_dir=bool(FLAGS.val_data_dir),
    )


def _epoch_datasets(inputs, source):
    return inputs.epoch_dataset_fn(
        source,
        batch_size=FLAGS.batch_size,
        crop_size=FLAGS.crop_size,
        hflip=FLAGS.hflip,
        vflip=FLAGS.vflip,
        rot90=FLAGS.rot90,
        noise=FLAGS.noise,
        noise_sigma=FLAGS.noise_sigma / 255.0,
        cache=FLAGS.cache,
        pad_small=FLAGS.pad_small,
        seed=FLAGS.seed,
    )


def run_main(script: str, argv, *, prepare: Sequence[Callable[[], None]], build: Callable):
    """The body of every training script's ``main``.

    Args:
        script: the script's file name, the prefix of every message (``train_idc.py``).
        argv: ``main``'s argument list (anything after the program name is an error).
        prepare: functions run in order that apply the paper defaults and check the flags; they
            raise ``app.UsageError``. They run before TensorFlow is imported, so a bad flag fails
            in about a second.
        build: ``() -> Trainer`` (the script's ``build_trainer``).

    Exits non-zero with one ``<script>: error: ...`` line (no traceback) on bad arguments or flags
    (``--model_kwargs`` included), data errors (a damaged file named, in the training or
    validation data), an unusable ``--run_dir`` or one holding another run, and a non-finite
    loss; 130 on Ctrl-C.
    """
    fail = f"{script}: error: {{}}".format
    if len(argv) > 1:
        sys.exit(fail(f"unexpected arguments: {' '.join(argv[1:])}"))
    try:
        for function in (*prepare, check_data_dir, check_run_dir):
            function()
    except app.UsageError as error:
        sys.exit(fail(error))
    cli.import_tensorflow()  # after the flag checks: TensorFlow's start-up lines hidden
    import data
    from training.loop import ConfigError, NonFiniteLossError

    try:
        return build().run()
    except (data.DataError, ConfigError, app.UsageError) as error:
        sys.exit(fail(error))
    except NonFiniteLossError as error:
        sys.exit(f"{script}: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
