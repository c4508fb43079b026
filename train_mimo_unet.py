"""Train MIMO-UNet or MIMO-UNet+ (Cho et al., ICCV 2021) with the paper recipe.

Defaults are the official recipe (mimo_unet.md section 7): Adam lr 1e-4 (epsilon 1e-8), x0.5 every
500 epochs, 3000 epochs, batch 4, random 256x256 crops with horizontal flips, L1 + 0.1 x FFT loss
over the three outputs, PyTorch initialisation. Examples:

    python train_mimo_unet.py --preset quick --run_dir runs/quick          # minutes on a CPU
    python train_mimo_unet.py --data_dir /data/GOPRO --run_dir runs/mimo   # the paper recipe
    python train_mimo_unet.py --variant mimo_unet_plus --data_dir tfds:gopro --run_dir runs/plus

Rerunning a command with the same --run_dir resumes from its latest checkpoint. Outputs: see
``rundir.py`` (run_config.json, checkpoints/, best/, tensorboard/, final.weights.h5).
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

import cli
from cli import train_flags
from training import runner
from training.config import DataConfig, ScheduleConfig, TrainConfig, replace

FLAGS = flags.FLAGS
VARIANTS = ("mimo_unet", "mimo_unet_plus")


@dataclasses.dataclass(frozen=True)
class MimoUnetRecipe:
    """MIMO-UNet's own settings (mimo_unet.md section 7). ``num_res`` / ``base_channels`` None:
    the variant's (8 or 20 ResBlocks, 32 channels); ``init`` torch is PyTorch's default
    initialisation (the official code), glorot Keras'."""

    variant: str = "mimo_unet"
    num_res: int | None = None
    base_channels: int | None = None
    init: str = "torch"
    lr_decay_epochs: int = 500  # x lr_decay_rate every 500 epochs (official MultiStepLR)
    lr_decay_rate: float = 0.5
    fft_weight: float = 0.1  # L = L_cont + 0.1 L_MSFR (paper eq. 4)


def paper_config() -> TrainConfig:
    """The official recipe: batch 4, 256x256 crops with horizontal flips, 3000 epochs, Adam lr
    1e-4 (epsilon 1e-8), validation every 100 epochs (mimo_unet.md section 7)."""
    return TrainConfig(
        paper=MimoUnetRecipe(),
        data=DataConfig(batch_size=4, crop_size=256, hflip=True, vflip=False, rot90=False),
        schedule=ScheduleConfig(
            epochs=3000, learning_rate=1e-4, adam_epsilon=1e-8, val_every_epochs=100
        ),
    )


def quick(config: TrainConfig) -> TrainConfig:
    """--preset quick: full-width (32-channel) MIMO-UNet with 2 residual blocks per EB/DB instead
    of 8, 64 px crops, 300 steps on the embedded synthetic set, validation on 4 full-size test
    images. Measured on the 50 embedded test images: 22.98 dB vs 22.82 dB blurred (+0.16 dB).
    Neither 128 px crops with 16 channels and lr 1e-3 (300 steps: +0.17 dB, ~40 % more CPU time)
    nor, with those settings, a set blurred along 3-12 px paths instead of 3-30 px (+0.36 dB on
    its own test split) reaches +1 dB in a few CPU minutes."""
    return replace(
        config,
        preset="quick",
        num_res=2,
        crop_size=64,
        max_steps=300,
        learning_rate=2e-4,
        val_images=4,
        val_every_steps=100,
        checkpoint_every=100,
        log_every=25,
        summary_images=2,
    )


PRESETS = {"quick": quick}

train_flags.define_common_flags()
train_flags.define_once(
    flags.DEFINE_enum,
    "variant",
    "mimo_unet",
    "MIMO-UNet variant (registry name).",
    enum_values=list(VARIANTS),
)
train_flags.define_width_flags()
train_flags.define_once(
    flags.DEFINE_enum,
    "init",
    "torch",
    "Initialisation: torch (PyTorch default, the official distribution) or glorot (Keras default).",
    enum_values=["torch", "glorot"],
)
train_flags.define_once(
    flags.DEFINE_integer,
    "lr_decay_epochs",
    500,
    "Halve the learning rate every N epochs (per-epoch MultiStep).",
    lower_bound=0,
)
train_flags.define_once(flags.DEFINE_float, "lr_decay_rate", 0.5, "Learning-rate decay factor.")
train_flags.define_once(
    flags.DEFINE_float, "fft_weight", 0.1, "Weight of the frequency (MSFR) loss.", lower_bound=0.0
)
# The flags are defined in cli/train_flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)


def config_from_flags() -> TrainConfig:
    """The run's configuration: the recipe, ``--preset``, the given flags, ``--model_kwargs``."""
    return train_flags.train_config(paper_config(), PRESETS, model_name=_model_name)


def _model_name(config: TrainConfig) -> str:
    if config.paper.variant not in VARIANTS:  # the enum is convert_mimo_unet.py's string flag there
        raise runner.ConfigError(
            f"--variant {config.paper.variant}: expected one of {', '.join(VARIANTS)}."
        )
    return config.paper.variant


def model_kwargs(config: TrainConfig) -> dict:
    """``models.build_model(variant, ...)`` overrides: the initialisation when not PyTorch's, the
    widths when given, and the other ``model_kwargs`` entries (e.g. ``dropout_rate``)."""
    init = config.paper.init
    kwargs = {"init": init} if init != "torch" else {}
    return {**kwargs, **runner.width_kwargs(config), **runner.extra_model_kwargs(config)}


def check_config(config: TrainConfig) -> None:
    """Checks across settings that the flag parser cannot do; raises ConfigError."""
    runner.check_crop_size(config, 4, "MIMO-UNet")
    channels = config.paper.base_channels
    if channels is not None and channels % 2:
        raise runner.ConfigError(f"--base_channels must be even, got {channels}.")


def make_step(config: TrainConfig, steps_per_epoch, total_steps):
    """The MIMO-UNet step object of ``config`` (mimo_unet.md section 7)."""
    from training.steps.mimo_unet_step import MimoUnetTrainStep

    del total_steps  # the MultiStep schedule counts epochs
    recipe, schedule = config.paper, config.schedule
    return MimoUnetTrainStep(
        recipe.variant,
        steps_per_epoch=steps_per_epoch,
        model_kwargs=model_kwargs(config),
        learning_rate=schedule.learning_rate,
        decay_every_epochs=recipe.lr_decay_epochs,
        total_epochs=schedule.epochs,
        decay_rate=recipe.lr_decay_rate,
        epsilon=schedule.adam_epsilon,
        fft_weight=recipe.fft_weight,
    )


def build_trainer(config: TrainConfig, out=None):
    """``config`` -> Trainer (the shared assembly of :func:`training.runner.build_trainer`)."""
    return runner.build_trainer(
        config,
        lambda **sizes: make_step(config, **sizes),
        default_run_dir=os.path.join("runs", config.paper.variant),
        out=out,
    )


def main(argv):
    train_flags.run_training(
        "train_mimo_unet.py",
        argv,
        make_config=config_from_flags,
        checks=(check_config,),
        build=build_trainer,
    )


if __name__ == "__main__":
    train_flags.set_flag_defaults(paper_config())  # so that --help shows this paper's defaults
    cli.run(main)
