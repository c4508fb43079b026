"""The configuration of a training run, as a tree of frozen dataclasses (no TensorFlow, no flags).

``train_<paper>.py`` builds one :class:`TrainConfig` from its flags at its entry point
(:func:`cli.train_flags.train_config`): the paper's recipe (``paper_config()`` of the script), then
a preset (a function from config to config, e.g. ``quick``), then the flags given on the command
line. Everything below the script reads this object. Field names are the flag names (unique in
the tree, :func:`config.check_unique`); defaults are the shared flags' defaults, which the papers'
recipes override.

``run_config.json`` records :func:`config.to_dict` of it under ``"config"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import config as config_lib
from config import ConfigError

PRESETS = ("none", "quick")
STRATEGIES = ("default", "mirrored", "multi_worker")
NOISE_MODES = ("random_sigma", "fixed_sigma", "off")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training pairs, augmentation and validation (``data/pipeline.py``, ``training/inputs.py``).

    ``noise_sigma`` is in 8-bit levels (IDC: 2, i.e. 2/255); ``data_dir`` None is the embedded
    synthetic set; ``val_images`` 0 = all; ``val_crop`` 0 = full size; ``seed`` -1 = unseeded.
    """

    data_dir: str | None = None
    blur_variant: str = "blur"
    batch_size: int = 4
    crop_size: int = 256
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    noise: str = "off"
    noise_sigma: float = 2.0
    cache: bool = False
    pad_small: bool = False
    seed: int = 0
    val_data_dir: str | None = None
    val_split: str = "test"
    val_images: int = 20
    val_crop: int = 0


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Length of the run, the base learning rate and Adam's epsilon, validation cadence.
    ``max_steps`` > 0 overrides ``epochs``; ``val_every_steps`` > 0 overrides
    ``val_every_epochs``."""

    epochs: int = 3000
    max_steps: int = 0
    learning_rate: float = 1e-4
    adam_epsilon: float = 1e-8
    val_every_epochs: int = 100
    val_every_steps: int = 0


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """Where and how the one loop runs (:class:`training.loop.LoopConfig`): run folder, resume,
    checkpoints, logging, distribution strategy, and the networks' compute ``precision``
    (:mod:`precision`; a resume may change it: checkpoints hold float32 variables)."""

    run_dir: str | None = None
    resume: bool = True
    checkpoint_every: int = 1000
    checkpoint_every_epoch: bool = True
    keep_checkpoints: int = 3
    log_every: int = 50
    summary_images: int = 2
    strategy: str = "default"
    precision: str = "float32"
    bn_refresh_batches: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: shared sections plus ``paper``, the script's own recipe dataclass.

    ``model_kwargs`` is the ``--model_kwargs`` JSON text as given (None: none); its keys that are
    fields of ``paper`` are given to those fields by the command (:mod:`cli.train_flags`), the
    others reach the model's constructor. ``preset`` names the preset applied (recorded only).
    """

    paper: Any
    data: DataConfig = DataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loop: LoopOptions = LoopOptions()
    model_kwargs: str | None = None
    preset: str = "none"

    def __post_init__(self):
        config_lib.check_unique(self)


def replace(config: TrainConfig, **values) -> TrainConfig:
    """``config`` with the named leaves replaced (any section): ``replace(c, crop_size=64)``."""
    return config_lib.override(config, values)


__all__ = [
    "ConfigError",
    "DataConfig",
    "LoopOptions",
    "ScheduleConfig",
    "TrainConfig",
    "replace",
]
