"""Train MIMO-UNet or MIMO-UNet+ (Cho et al., ICCV 2021) with the paper recipe.

Defaults are the official recipe (mimo_unet.md section 7): Adam lr 1e-4 (epsilon 1e-8), x0.5 every
500 epochs, 3000 epochs, batch 4, random 256x256 crops with horizontal flips, L1 + 0.1 x FFT loss
over the three outputs, PyTorch initialisation. Examples:

    python train_mimo_unet.py --preset quick --run_dir runs/quick          # minutes on a CPU
    python train_mimo_unet.py --data_dir /data/GOPRO --run_dir runs/mimo   # the paper recipe
    python train_mimo_unet.py --variant mimo_unet_plus --data_dir tfds:gopro --run_dir runs/plus

Rerunning a command with the same --run_dir resumes from its latest checkpoint. Outputs: see
``training/__init__.py`` (run_config.json, checkpoints/, best/, tensorboard/, final.weights.h5).
"""

from __future__ import annotations

import os

from absl import app, flags

import cli
from training import flags as train_flags
from training import script

FLAGS = flags.FLAGS
PAPER_FLAGS = [
    "variant",
    "num_res",
    "base_channels",
    "init",
    "lr_decay_epochs",
    "lr_decay_rate",
    "fft_weight",
]
# Constructor arguments of MIMOUNet that have a flag here (--model_kwargs sets them through it).
MODEL_FLAG_KEYS = ("num_res", "base_channels", "init")

# The paper recipe (the shared flags' own defaults already match it; restated so that another
# paper's script imported in the same process cannot change what this script runs).
VARIANTS = ("mimo_unet", "mimo_unet_plus")
PAPER_DEFAULTS = {
    # convert_mimo_unet.py shares the flag name --variant (default None) when both are imported.
    "variant": "mimo_unet",
    "batch_size": 4,
    "crop_size": 256,
    "hflip": True,
    "vflip": False,
    "rot90": False,
    "epochs": 3000,
    "learning_rate": 1e-4,
    "adam_epsilon": 1e-8,
    "noise": "off",
    "val_every_epochs": 100,
}
# --preset quick: full-width (32-channel) MIMO-UNet with 2 residual blocks per EB/DB instead of 8,
# 64 px crops, 300 steps on the embedded synthetic set, validation on 4 full-size test images.
QUICK_PRESET = {
    "num_res": 2,
    "crop_size": 64,
    "max_steps": 300,
    "learning_rate": 2e-4,
    "val_images": 4,
    "val_every_steps": 100,
    "checkpoint_every": 100,
    "log_every": 25,
    "summary_images": 2,
}

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
# The flags are defined in training/flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)


def apply_flag_defaults():
    """Paper defaults, then the preset; flags given on the command line always win."""
    script.apply_defaults(PAPER_DEFAULTS, QUICK_PRESET)


def apply_model_kwargs():
    """``--model_kwargs`` checked against MIMOUNet; its num_res / base_channels / init set the
    flags."""
    if FLAGS.variant not in VARIANTS:  # the enum is convert_mimo_unet.py's string flag there
        raise app.UsageError(f"--variant {FLAGS.variant}: expected one of {', '.join(VARIANTS)}.")
    script.apply_model_kwargs(FLAGS.variant, MODEL_FLAG_KEYS)


def model_kwargs():
    """``models.build_model(variant, ...)`` overrides: the initialisation when not PyTorch's, the
    widths when given, and the other ``--model_kwargs`` entries (e.g. ``dropout_rate``)."""
    kwargs = {"init": FLAGS.init} if FLAGS.init != "torch" else {}
    return {**kwargs, **script.width_kwargs(), **script.extra_model_kwargs(MODEL_FLAG_KEYS)}


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    script.check_crop_size(4, "MIMO-UNet")
    if FLAGS.base_channels is not None and FLAGS.base_channels % 2:
        raise app.UsageError(f"--base_channels must be even, got {FLAGS.base_channels}.")


def make_step(steps_per_epoch, total_steps):
    """The MIMO-UNet step object from the flags (mimo_unet.md section 7)."""
    from training.mimo_unet_step import MimoUnetTrainStep

    del total_steps  # the MultiStep schedule counts epochs
    return MimoUnetTrainStep(
        FLAGS.variant,
        steps_per_epoch=steps_per_epoch,
        model_kwargs=model_kwargs(),
        learning_rate=FLAGS.learning_rate,
        decay_every_epochs=FLAGS.lr_decay_epochs,
        total_epochs=FLAGS.epochs,
        decay_rate=FLAGS.lr_decay_rate,
        epsilon=FLAGS.adam_epsilon,
        fft_weight=FLAGS.fft_weight,
    )


def build_trainer(out=None):
    """Flags -> Trainer (the shared flow of :func:`training.script.build_trainer`)."""
    run_dir = os.path.join("runs", FLAGS.variant)
    return script.build_trainer(
        make_step, paper_flags=PAPER_FLAGS, default_run_dir=run_dir, out=out
    )


def main(argv):
    # Before TensorFlow loads: bad flags fail fast.
    prepare = (apply_flag_defaults, apply_model_kwargs, check_flags)
    script.run_main("train_mimo_unet.py", argv, prepare=prepare, build=build_trainer)


if __name__ == "__main__":
    train_flags.apply_defaults(PAPER_DEFAULTS)  # so that --help shows this paper's defaults
    cli.run(main)
