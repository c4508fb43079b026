"""What every ``train_<paper>.py`` shares below its flags: checks of a :class:`TrainConfig` and the
assembly of a :class:`training.loop.Trainer` from it.

A training script turns its flags into one :class:`training.config.TrainConfig` at its entry point
(:func:`cli.train_flags.run_training`) and hands it to its ``build_trainer(config)``, which calls
:func:`build_trainer` here with the paper's step factory. Nothing here reads flags; every check
raises :class:`config.ConfigError` with one line naming the flag of the setting.

Nothing here imports TensorFlow at module load: a bad setting fails before that import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import config as config_lib
import rundir
from config import ConfigError
from training.config import TrainConfig


def check_crop_size(config: TrainConfig, multiple: int, what: str, minimum: int = 0) -> None:
    """``crop_size`` must be a multiple of ``multiple`` and at least ``minimum`` (``what``: the
    model configuration that needs it)."""
    size = config.data.crop_size
    if size % multiple:
        raise ConfigError(f"--crop_size must be a multiple of {multiple} ({what}), got {size}.")
    if size < minimum:
        raise ConfigError(f"--crop_size must be at least {minimum} ({what}), got {size}.")


def check_data_dir(config: TrainConfig) -> None:
    """A local ``data_dir`` must be an existing folder (``tfds:NAME`` is checked when read)."""
    path = config.data.data_dir
    if path and not path.startswith("tfds:") and not os.path.isdir(path):
        raise ConfigError(f"--data_dir {path} does not exist or is not a folder.")


def check_run_dir(config: TrainConfig) -> None:
    """A given ``run_dir`` must be a folder, or creatable, and writable (nothing is created)."""
    if config.loop.run_dir:
        problem = rundir.run_dir_problem(config.loop.run_dir)
        if problem:
            raise ConfigError(problem + ".")


def check_decay(config: TrainConfig) -> None:
    """A decaying learning rate must go down: ``learning_rate`` >= the paper's ``lr_end``."""
    start, end = config.schedule.learning_rate, config.paper.lr_end
    if start < end:
        raise ConfigError(f"--learning_rate {start:g} is below --lr_end {end:g}.")


def check_adam_betas(config: TrainConfig) -> None:
    """Both Adam betas of the paper's recipe must be below 1."""
    if config.paper.adam_beta_1 >= 1 or config.paper.adam_beta_2 >= 1:
        raise ConfigError("--adam_beta_1 and --adam_beta_2 must be below 1.")


def model_kwargs_dict(config: TrainConfig) -> dict:
    """``config.model_kwargs`` (JSON text) as a dict; {} for none."""
    return json.loads(config.model_kwargs) if config.model_kwargs else {}


def extra_model_kwargs(config: TrainConfig) -> dict:
    """The ``model_kwargs`` entries that are not fields of the paper's recipe (those reached the
    recipe at the entry point): constructor switches without a flag of their own."""
    paper_fields = {field.name for field in dataclasses.fields(config.paper)}
    return {k: v for k, v in model_kwargs_dict(config).items() if k not in paper_fields}


def width_kwargs(config: TrainConfig) -> dict:
    """``base_channels`` / ``num_res`` of the recipe as model overrides, when set (None: the
    model's own)."""
    return {
        name: getattr(config.paper, name)
        for name in ("base_channels", "num_res")
        if getattr(config.paper, name, None) is not None
    }


def polynomial_decay_kwargs(config: TrainConfig, total: int) -> dict:
    """The arguments of :class:`training.step.PolynomialDecayTrainStep` (IDC, Two-Way): the decay
    from ``learning_rate`` to ``lr_end`` with ``lr_power`` over ``total`` steps, Adam epsilon."""
    return {
        "total_steps": total,
        "learning_rate": config.schedule.learning_rate,
        "end_learning_rate": config.paper.lr_end,
        "power": config.paper.lr_power,
        "epsilon": config.schedule.adam_epsilon,
    }


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """``max_steps`` if set, else ``epochs`` x ``steps_per_epoch`` (as LoopConfig counts)."""
    schedule = config.schedule
    return schedule.max_steps if schedule.max_steps > 0 else schedule.epochs * steps_per_epoch


def seed_initialisation(config: TrainConfig) -> None:
    """With ``seed >= 0`` the model initialisation is reproducible too (the data pipeline is
    seeded per epoch by :func:`training.inputs.epoch_dataset_fn`)."""
    if config.data.seed >= 0:
        import keras

        keras.utils.set_random_seed(config.data.seed)


@dataclasses.dataclass
class TrainingData:
    """What :func:`build_trainer` needs of a training set: its size (examples; one epoch is
    ``size // batch`` steps), ``epoch -> dataset``, a lazy validation set and the
    ``run_config.json`` description. The default is the (blur, sharp) pairs of ``config.data``;
    SEN gives its flow sets (:mod:`training.flow_inputs`)."""

    size: int
    epoch_datasets: Callable
    validation: Callable  # () -> ValidationSet | None
    description: dict
    unit: str = "pairs"


def image_pair_data(config: TrainConfig) -> TrainingData:
    """The (blur, sharp) training pairs and validation set of ``config.data``."""
    from training import inputs

    data = config.data
    source = inputs.open_train_source(data.data_dir, data.blur_variant)
    return TrainingData(
        size=len(source),
        epoch_datasets=_epoch_datasets(inputs, source, data),
        validation=lambda: _validation(inputs, data),
        description={"train": inputs.describe_data_dir(data.data_dir), "train_pairs": len(source)},
    )


def build_trainer(
    config: TrainConfig,
    step_factory: Callable,
    *,
    default_run_dir: str,
    out=None,
    data_factory: Callable[[TrainConfig], TrainingData] = image_pair_data,
):
    """``config`` -> (strategy, step object, data, validation, loop config) -> ``Trainer``.

    Args:
        config: the run's configuration.
        step_factory: ``(steps_per_epoch=..., total_steps=...) -> TrainStep`` (not built): the
            per-epoch schedules need the first, the whole-run decays the second.
        default_run_dir: run directory when ``config.loop.run_dir`` is None.
        out: stream for the run summary and progress (stdout).
        data_factory: ``config -> TrainingData`` (default: the image pairs of ``config.data``).
    Sets Keras' global dtype policy for ``config.loop.precision`` (process-wide, as Keras mixed
    precision is) before anything is built. Raises :class:`ConfigError` for a strategy or batch
    that cannot run.
    """
    import precision
    from training import loop, strategy

    precision.set_precision(config.loop.precision)

    try:
        dist = strategy.make_strategy(config.loop.strategy)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    batch = config.data.batch_size
    if batch % dist.num_replicas_in_sync:
        raise ConfigError(
            f"--batch_size {batch} is not divisible by the {dist.num_replicas_in_sync} replicas."
        )
    data = data_factory(config)
    steps_per_epoch = data.size // batch
    if steps_per_epoch < 1:
        raise ConfigError(
            f"The training set has {data.size} {data.unit}, fewer than one batch of {batch}."
        )
    seed_initialisation(config)
    step = step_factory(
        steps_per_epoch=steps_per_epoch, total_steps=total_steps(config, steps_per_epoch)
    )
    extra = {"config": config_lib.to_dict(config), "data": data.description}
    return loop.Trainer(
        step,
        data.epoch_datasets,
        loop_config(config, config.loop.run_dir or default_run_dir, steps_per_epoch),
        strategy=dist,
        validation=data.validation(),
        run_config=extra,
        out=out,
    )


def loop_config(config: TrainConfig, run_dir: str, steps_per_epoch: int):
    """The :class:`training.loop.LoopConfig` of ``config`` in ``run_dir``."""
    from training import loop

    options, schedule = config.loop, config.schedule
    return loop.LoopConfig(
        run_dir=run_dir,
        steps_per_epoch=steps_per_epoch,
        epochs=schedule.epochs,
        max_steps=schedule.max_steps,
        checkpoint_every=options.checkpoint_every,
        checkpoint_every_epoch=options.checkpoint_every_epoch,
        keep_checkpoints=options.keep_checkpoints,
        resume=options.resume,
        log_every=options.log_every,
        val_every=schedule.val_every_steps or schedule.val_every_epochs * steps_per_epoch,
        summary_images=options.summary_images,
        global_batch_size=config.data.batch_size,
        bn_refresh_batches=options.bn_refresh_batches,
    )


def _validation(inputs, data):
    # Validation images never get the training noise: they come from the evaluation pipeline.
    return inputs.load_validation(
        data.val_data_dir or data.data_dir,
        split=data.val_split,
        num_images=data.val_images,
        crop=data.val_crop,
        blur_variant=data.blur_variant,
        explicit_dir=bool(data.val_data_dir),
    )


def _epoch_datasets(inputs, source, data):
    return inputs.epoch_dataset_fn(
        source,
        batch_size=data.batch_size,
        crop_size=data.crop_size,
        hflip=data.hflip,
        vflip=data.vflip,
        rot90=data.rot90,
        noise=data.noise,
        noise_sigma=data.noise_sigma / 255.0,
        cache=data.cache,
        pad_small=data.pad_small,
        seed=data.seed,
    )
