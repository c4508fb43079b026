"""Train the multi-scale Two-Way deblurring network (Cheng et al.) with the paper recipe.

Defaults are the paper's section 4.1 recipe as resolved by two_way.md section 6: Adam (0.9, 0.999,
epsilon 1e-8), learning rate 1e-4 decayed to 0 by polynomial decay with power 0.3 over the whole
run, 4000 epochs, batch 16, random 256x256 crops, no flips, no noise, loss 1 MSE_1/4 + 1 MSE_1/2 +
5 MSE_1, Glorot-uniform ("Xavier") initialisation. Examples:

    python train_two_way.py --preset quick --run_dir runs/two_way_quick     # minutes on a CPU
    python train_two_way.py --data_dir /data/GOPRO --run_dir runs/two_way   # the paper recipe
    python train_two_way.py --data_dir /data/GOPRO --notwo_way --run_dir runs/two_way_ablation

Rerunning a command with the same --run_dir resumes from its latest checkpoint. Outputs: see
``training/__init__.py`` (run_config.json, checkpoints/, best/, tensorboard/, final.weights.h5).
"""

from __future__ import annotations

from absl import app, flags

import cli
from cli import train_flags
from training import script

FLAGS = flags.FLAGS
PAPER_FLAGS = ["two_way", "deconv_kernel", "base_channels", "num_res", "lr_end", "lr_power"]
# Constructor arguments of TwoWay that have a flag here (--model_kwargs sets them through it); the
# others (share_bottleneck_blocks, kernel_size, n_scales, ...) come from --model_kwargs only.
MODEL_FLAG_KEYS = ("two_way", "deconv_kernel", "base_channels", "num_res")
SIZE_MULTIPLE = 16  # three scales: the 1/4 level passes two stride-2 convolutions

# The paper recipe (two_way.md section 6), restated in full so that another paper's script
# imported in the same process cannot change what this script runs.
PAPER_DEFAULTS = {
    "batch_size": 16,  # not stated; SRN's (A-TW-10)
    "crop_size": 256,  # "randomly crop 256x256 images"
    "hflip": False,  # no flips, no noise (the paper mentions none; SRN uses none)
    "vflip": False,
    "rot90": False,
    "noise": "off",
    "epochs": 4000,  # "converge after 4000 epochs"
    "learning_rate": 1e-4,  # "initially set to 0.0001, exponentially decayed to 0 using power 0.3"
    "lr_end": 0.0,
    "lr_power": 0.3,
    "adam_epsilon": 1e-8,  # "epsilon = 10^-8" (Keras 3's default is 1e-7)
    "val_every_epochs": 100,
    "two_way": True,
    "deconv_kernel": 4,  # SRN's 4x4 stride-2 deconvolutions (A-TW-5)
    "base_channels": None,  # the model's own: 32
    "num_res": None,  # 3 ResBlocks per stage
}
# --preset quick: the full-width (32-channel) Two-Way with 1 ResBlock per stage instead of 3, 32 px
# crops, batch 4, learning rate 2e-3 decayed to 0 over 4000 steps, validation on 16 full-size test
# images. The network predicts the image directly (no global residual), so it must first learn to
# reproduce its input; measured on the embedded set, the validation PSNR reaches the blurred
# input's after ~2000 steps and is above it at the end (README, Two-Way). 1500 steps at 1e-3 ended
# at parity.
QUICK_PRESET = {
    "num_res": 1,
    "batch_size": 4,
    "crop_size": 32,
    "max_steps": 4000,
    "learning_rate": 2e-3,
    "val_images": 16,
    "val_every_steps": 500,
    "checkpoint_every": 500,
    "log_every": 50,
    "summary_images": 2,
}

train_flags.define_common_flags()
train_flags.define_once(
    flags.DEFINE_bool,
    "two_way",
    True,
    "Build the down branch (False: the paper's 'w/o TWNNet' ablation, up branch only).",
)
train_flags.define_once(
    flags.DEFINE_integer,
    "deconv_kernel",
    4,
    "Transposed-convolution kernel: 4 (SRN, default) or 3 (A-TW-5).",
)
train_flags.define_width_flags()
train_flags.define_polynomial_decay_flags()
# The shared flags are defined in cli/train_flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)


def apply_flag_defaults():
    """Paper defaults, then the preset; flags given on the command line always win."""
    script.apply_defaults(PAPER_DEFAULTS, QUICK_PRESET)


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    if FLAGS.deconv_kernel not in (3, 4):
        raise app.UsageError(f"--deconv_kernel must be 4 or 3, got {FLAGS.deconv_kernel}.")
    script.check_crop_size(SIZE_MULTIPLE, "Two-Way, three scales", minimum=SIZE_MULTIPLE)
    script.check_decay_flags()


def apply_model_kwargs():
    """``--model_kwargs`` checked against TwoWay; keys with a flag set that flag."""
    script.apply_model_kwargs("two_way", MODEL_FLAG_KEYS)


def model_kwargs():
    """``models.build_model("two_way", ...)`` overrides: the paper switches always (run_config.json
    states them), the widths when given, and the other ``--model_kwargs`` entries."""
    return {
        "two_way": FLAGS.two_way,
        "deconv_kernel": FLAGS.deconv_kernel,
        **script.width_kwargs(),
        **script.extra_model_kwargs(MODEL_FLAG_KEYS),
    }


def make_step(steps_per_epoch, total_steps):
    """The Two-Way step object from the flags (two_way.md section 6)."""
    from training.two_way_step import TwoWayTrainStep

    del steps_per_epoch  # the decay runs over the whole run, in steps
    return TwoWayTrainStep(
        model_kwargs=model_kwargs(), **script.polynomial_decay_kwargs(total_steps)
    )


def build_trainer(out=None):
    """Flags -> Trainer (the shared flow of :func:`training.script.build_trainer`)."""
    return script.build_trainer(
        make_step, paper_flags=PAPER_FLAGS, default_run_dir="runs/two_way", out=out
    )


def main(argv):
    # Before TensorFlow loads: bad flags fail fast.
    prepare = (apply_flag_defaults, apply_model_kwargs, check_flags)
    script.run_main("train_two_way.py", argv, prepare=prepare, build=build_trainer)


if __name__ == "__main__":
    train_flags.apply_defaults(PAPER_DEFAULTS)  # so that --help shows this paper's defaults
    cli.run(main)
