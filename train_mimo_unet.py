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
import sys

from absl import app, flags

from training import flags as train_flags

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

# The paper recipe (the shared flags' own defaults already match it; restated so that another
# paper's script imported in the same process cannot change what this script runs).
PAPER_DEFAULTS = {
    "batch_size": 4,
    "crop_size": 256,
    "hflip": True,
    "vflip": False,
    "rot90": False,
    "epochs": 3000,
    "learning_rate": 1e-4,
    "adam_epsilon": 1e-8,
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
    enum_values=["mimo_unet", "mimo_unet_plus"],
)
train_flags.define_once(
    flags.DEFINE_integer,
    "num_res",
    None,
    "Residual blocks per EB/DB (default: 8, or 20 for mimo_unet_plus).",
    lower_bound=1,
)
train_flags.define_once(
    flags.DEFINE_integer,
    "base_channels",
    None,
    "Level-1 width (default 32; smaller only for tests).",
    lower_bound=4,
)
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


def apply_flag_defaults():
    """Paper defaults, then the preset; flags given on the command line always win."""
    train_flags.apply_defaults(PAPER_DEFAULTS)
    if FLAGS.preset == "quick":
        train_flags.apply_defaults(QUICK_PRESET)


def model_kwargs():
    kwargs = {"init": FLAGS.init} if FLAGS.init != "torch" else {}
    for name in ("num_res", "base_channels"):
        if FLAGS[name].value is not None:
            kwargs[name] = FLAGS[name].value
    return kwargs


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    if FLAGS.crop_size % 4:
        raise app.UsageError(
            f"--crop_size must be a multiple of 4 (MIMO-UNet), got {FLAGS.crop_size}."
        )
    if FLAGS.base_channels is not None and FLAGS.base_channels % 2:
        raise app.UsageError(f"--base_channels must be even, got {FLAGS.base_channels}.")
    if (
        FLAGS.data_dir
        and not FLAGS.data_dir.startswith("tfds:")
        and not os.path.isdir(FLAGS.data_dir)
    ):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir} does not exist or is not a folder.")


def build_trainer(out=None):
    """Flags -> (strategy, step object, data, validation, loop config) -> Trainer."""
    from training import inputs, loop, strategy
    from training.mimo_unet_step import MimoUnetStep

    run_dir = FLAGS.run_dir or os.path.join("runs", FLAGS.variant)
    try:
        dist = strategy.make_strategy(FLAGS.strategy)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if FLAGS.batch_size % dist.num_replicas_in_sync:
        raise app.UsageError(
            f"--batch_size {FLAGS.batch_size} is not divisible by the "
            f"{dist.num_replicas_in_sync} replicas."
        )
    source = inputs.open_train_source(FLAGS.data_dir, FLAGS.blur_variant)
    steps_per_epoch = len(source) // FLAGS.batch_size
    if steps_per_epoch < 1:
        raise app.UsageError(
            f"The training set has {len(source)} pairs, fewer than one batch of {FLAGS.batch_size}."
        )
    step = MimoUnetStep(
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
    validation = inputs.load_validation(
        FLAGS.val_data_dir or FLAGS.data_dir,
        split=FLAGS.val_split,
        num_images=FLAGS.val_images,
        crop=FLAGS.val_crop,
        blur_variant=FLAGS.blur_variant,
        explicit_dir=bool(FLAGS.val_data_dir),
    )
    config = loop.LoopConfig(
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
    make_epoch = inputs.epoch_dataset_fn(
        source,
        batch_size=FLAGS.batch_size,
        crop_size=FLAGS.crop_size,
        hflip=FLAGS.hflip,
        vflip=FLAGS.vflip,
        rot90=FLAGS.rot90,
        cache=FLAGS.cache,
        pad_small=FLAGS.pad_small,
        seed=FLAGS.seed,
    )
    extra = {
        "flags": train_flags.snapshot(PAPER_FLAGS),
        "data": {"train": inputs.describe_data_dir(FLAGS.data_dir), "train_pairs": len(source)},
    }
    return loop.Trainer(
        step, make_epoch, config, strategy=dist, validation=validation, run_config=extra, out=out
    )


def main(argv):
    fail = "train_mimo_unet.py: error: {}".format
    if len(argv) > 1:
        sys.exit(fail(f"unexpected arguments: {' '.join(argv[1:])}"))
    try:  # flag checks first: they need no TensorFlow import
        apply_flag_defaults()
        check_flags()
    except app.UsageError as error:
        sys.exit(fail(error))
    import data
    from training.loop import ConfigError, NonFiniteLossError

    try:
        build_trainer().run()
    except (data.DataError, ConfigError, app.UsageError) as error:
        sys.exit(fail(error))
    except NonFiniteLossError as error:
        sys.exit(f"train_mimo_unet.py: {error}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
