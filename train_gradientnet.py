"""Train the Structures-Guided GradientNet GAN (Qi 2022) with the paper recipe.

Defaults are the paper's section 4.1 recipe as resolved by gradientnet.md section 5: batch 4,
random 256x256 crops without flips or noise, Adam (lr 1e-4, betas 0.5 / 0.999, epsilon 1e-8,
PyTorch's formula) for the generator and the PatchGAN critic, constant rate, 150 epochs (525
generator steps each on GoPro), 5 WGAN-GP critic updates per generator update on the same batch,
L_G = 10 content (VGG19 block4_conv3) + 1 gradient + 1 adversarial, lambda_GP = 10. Examples:

    python train_gradientnet.py --preset quick --run_dir runs/gradientnet_quick   # CPU, < 25 min
    python train_gradientnet.py --data_dir /data/GOPRO --run_dir runs/gradientnet # the paper
    python train_gradientnet.py --data_dir /data/GOPRO --rgcl_mode plain ...      # Table 5 row

The paper's ablations: ``--content_weight 0`` and ``--gradient_weight 0`` (Table 4),
``--rgcl_mode plain``, ``--mbrb_branches 1`` and ``--nouse_gradientnet`` (Table 5). The content
loss needs Keras' VGG19 ImageNet notop file (``--vgg_weights imagenet``, the default: the cached
file, never downloaded; or ``--vgg_weights PATH``); ``--vgg_weights random`` is for smoke runs.

Rerunning a command with the same --run_dir resumes from its latest checkpoint; a resume with
another critic, loss weight, VGG file or ablation is refused. Outputs: ``training/__init__.py``
(run_config.json, checkpoints/ with the generator under ``model`` and the critic and both
optimizers beside it, best/, tensorboard/, final.weights.h5 of the generator).
"""

from __future__ import annotations

import random

from absl import flags

import cli
from cli import train_flags
from training import script

FLAGS = flags.FLAGS
# Constructor arguments of GradientNetGAN that have a flag here (--model_kwargs sets them through
# it); the register's other switches (skip, attachment, rgcl_sigma, ...) come from --model_kwargs.
MODEL_FLAG_KEYS = (
    "rgcl_mode",
    "mbrb_branches",
    "use_gradientnet",
    "base_channels",
    "gradient_channels",
    "num_mbrb",
)
PAPER_FLAGS = [
    *MODEL_FLAG_KEYS,
    "critic_kwargs",
    "critic_steps",
    "content_weight",
    "gradient_weight",
    "adv_weight",
    "gp_weight",
    "gp_endpoint",
    "content_distance",
    "content_feature_scale",
    "vgg_weights",
    "adam_beta_1",
    "adam_beta_2",
    "critic_learning_rate",
    "pixel_weight",
]
SIZE_MULTIPLE = 4  # two stride-2 convolutions
MIN_CROP = 32  # VGG19 (Keras' minimum input) and the critic's 35-px receptive field need >= 32 px

# The paper recipe (gradientnet.md section 5), restated in full so that another paper's script
# imported in the same process cannot change what this script runs.
PAPER_DEFAULTS = {
    "batch_size": 4,  # "the batch size is 4"
    "crop_size": 256,  # "randomly cropped to 256x256"
    "hflip": False,  # the paper names only cropping (register 21)
    "vflip": False,
    "rot90": False,
    "noise": "off",
    "epochs": 150,  # 150 epochs of floor(2103 / 4) = 525 generator steps
    "learning_rate": 1e-4,  # G and D
    "adam_epsilon": 1e-8,
    "val_every_epochs": 10,  # paper silent
    "rgcl_mode": "cross",
    "mbrb_branches": 3,
    "use_gradientnet": True,
    "base_channels": None,  # the model's own: 64 (register 1)
    "gradient_channels": None,  # 64 (register 6)
    "num_mbrb": None,  # 10
    "critic_kwargs": None,
    "critic_steps": 5,
    "content_weight": 10.0,
    "gradient_weight": 1.0,
    "adv_weight": 1.0,
    "gp_weight": 10.0,
    "gp_endpoint": "generated",
    "content_distance": "mse",
    "content_feature_scale": 1.0 / 57.5,
    "vgg_weights": "imagenet",
    "adam_beta_1": 0.5,
    "adam_beta_2": 0.999,
    "critic_learning_rate": None,  # the generator's: 1e-4 for both
    "pixel_weight": 0.0,  # the paper has no pixel term
}
# --preset quick: GradientNet at a quarter of the width (16 channels, GradientNet C = 16, 2 MBRBs
# instead of 10) with a 16-channel critic, 64-px crops, batch 4, the paper's Adam (lr 1e-4, betas
# 0.5 / 0.999) and 5 critic updates per step, 2000 steps, explicitly random (seeded) VGG weights.
# Measured on the embedded set, the paper's objective alone does not improve PSNR in such a run:
# its terms (random-VGG content, L1 gradient, adversarial) reward texture over fidelity, and the
# output's high-frequency error exceeds the blurred input's (validation 21.0 dB after 1250 steps,
# blurred 22.56 dB; README). So the preset starts G at the identity (DeblurGAN's global residual,
# register 4's alternative, with a zero-initialised output convolution) and adds an L1 pixel term
# with weight 1000, which dominates L_G (~130 against ~3 for the paper's terms): the run shows the
# GAN machinery working, not the paper's objective.
QUICK_PRESET = {
    "base_channels": 16,
    "gradient_channels": 16,
    "num_mbrb": 2,
    "model_kwargs": '{"global_residual": true, "output_init": "zeros"}',
    "critic_kwargs": '{"base_channels": 16}',
    "vgg_weights": "random",
    "pixel_weight": 1000.0,
    "batch_size": 4,
    "crop_size": 64,
    "max_steps": 2000,
    "val_images": 16,
    "val_every_steps": 250,
    "checkpoint_every": 250,
    "log_every": 50,
    "summary_images": 2,
}


def _define_flags():
    d = train_flags.define_once
    d(
        flags.DEFINE_enum,
        "rgcl_mode",
        "cross",
        "RGCL: cross (paper) or plain (Table 5 'W/o RGCL': one 3x3 conv + LReLU).",
        enum_values=["cross", "plain"],
    )
    d(
        flags.DEFINE_integer,
        "mbrb_branches",
        3,
        "RGCLs per MBRB: 3 (paper) or 1 (Table 5 'W/o MBRBs').",
        lower_bound=1,
    )
    d(
        flags.DEFINE_bool,
        "use_gradientnet",
        True,
        "Build GradientNet (--nouse_gradientnet: Table 5 'W/o GradientNet').",
    )
    d(
        flags.DEFINE_integer,
        "base_channels",
        None,
        "Level-1 width of the model (default: the paper's; smaller for tests and presets).",
        lower_bound=4,
    )
    d(flags.DEFINE_integer, "gradient_channels", None, "GradientNet width C (64).", lower_bound=4)
    d(flags.DEFINE_integer, "num_mbrb", None, "MBRBs in GradientNet (10).", lower_bound=1)
    d(
        flags.DEFINE_string,
        "critic_kwargs",
        None,
        "PatchGAN critic constructor arguments as JSON, e.g. '{\"base_channels\": 16}' or "
        "'{\"in_channels\": 6}' (conditional critic, register 16).",
    )
    d(
        flags.DEFINE_integer,
        "critic_steps",
        5,
        "Critic updates per generator update.",
        lower_bound=1,
    )
    d(
        flags.DEFINE_float,
        "content_weight",
        10.0,
        "Weight of the VGG19 content loss (0: Table 4 'W/o content').",
        lower_bound=0.0,
    )
    d(
        flags.DEFINE_float,
        "gradient_weight",
        1.0,
        "Weight of the gradient loss (0: Table 4 'W/o gradient').",
        lower_bound=0.0,
    )
    d(flags.DEFINE_float, "adv_weight", 1.0, "Weight of the adversarial loss.", lower_bound=0.0)
    d(flags.DEFINE_float, "gp_weight", 10.0, "WGAN-GP lambda.", lower_bound=0.0)
    _define_loss_variant_flags()


def _define_loss_variant_flags():
    d = train_flags.define_once
    d(
        flags.DEFINE_enum,
        "gp_endpoint",
        "generated",
        "Gradient-penalty interpolation: sharp <-> generated (WGAN-GP, default) or sharp <-> "
        "blurred (the paper's wording, register 18).",
        enum_values=["generated", "blurred"],
    )
    d(
        flags.DEFINE_enum,
        "content_distance",
        "mse",
        "Content distance: mse (default) or l2_per_position (literal eq. 8, register 19).",
        enum_values=["mse", "l2_per_position"],
    )
    train_flags.define_content_loss_flags(
        "VGG19",
        "L_G",
        "Scale of the VGG features in the content loss (1/57.5 = torchvision's feature range).",
    )
    d(
        flags.DEFINE_float,
        "critic_learning_rate",
        None,
        "Critic learning rate (default: --learning_rate, as the paper).",
        lower_bound=0.0,
    )
    train_flags.define_adam_beta_flags(
        0.5, 0.999, "Adam beta1 of both networks.", "Adam beta2 of both networks."
    )


train_flags.define_common_flags()
_define_flags()
# The shared flags are defined in cli/train_flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)


def apply_flag_defaults():
    """Paper defaults, then the preset; flags given on the command line always win."""
    script.apply_defaults(PAPER_DEFAULTS, QUICK_PRESET)


def apply_model_kwargs():
    """``--model_kwargs`` checked against GradientNetGAN; keys with a flag set that flag."""
    script.apply_model_kwargs("gradientnet", MODEL_FLAG_KEYS)


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    script.check_crop_size(SIZE_MULTIPLE, "GradientNet's two down-samplings", minimum=MIN_CROP)
    train_flags.checked_kwargs("critic_kwargs", "gradientnet_critic")
    train_flags.check_adam_betas()


def model_kwargs():
    """``models.build_model("gradientnet", ...)`` overrides: the ablation switches always
    (run_config.json states them), the widths when given, the other ``--model_kwargs``."""
    widths = {
        name: FLAGS[name].value
        for name in ("base_channels", "gradient_channels", "num_mbrb")
        if FLAGS[name].value is not None
    }
    return {
        "rgcl_mode": FLAGS.rgcl_mode,
        "mbrb_branches": FLAGS.mbrb_branches,
        "use_gradientnet": FLAGS.use_gradientnet,
        **widths,
        **script.extra_model_kwargs(MODEL_FLAG_KEYS),
    }


def vgg_weights():
    """``(path or None, identity for run_config.json)`` of ``--vgg_weights``; with a zero content
    weight no VGG is needed. Raises ``app.UsageError`` (one line naming the file, its md5 and
    where to put it) when the file is missing or wrong; never downloads."""
    if not FLAGS.content_weight:
        return None, None
    return train_flags.vgg_weights_flag("vgg19")


def step_seed():
    """Base of the step's stateless seeds: ``--seed``, or a fresh one with ``--seed -1``."""
    return FLAGS.seed if FLAGS.seed >= 0 else random.randrange(2**31)


def make_step(steps_per_epoch, total_steps):
    """The GradientNet GAN step object from the flags (gradientnet.md sections 4-5)."""
    from training.gradientnet_step import GradientNetTrainStep

    del steps_per_epoch, total_steps  # constant learning rate
    path, identity = vgg_weights()
    return GradientNetTrainStep(
        model_kwargs=model_kwargs(),
        critic_kwargs=train_flags.checked_kwargs("critic_kwargs", "gradientnet_critic"),
        critic_steps=FLAGS.critic_steps,
        learning_rate=FLAGS.learning_rate,
        critic_learning_rate=FLAGS.critic_learning_rate,
        beta_1=FLAGS.adam_beta_1,
        beta_2=FLAGS.adam_beta_2,
        epsilon=FLAGS.adam_epsilon,
        content_weight=FLAGS.content_weight,
        gradient_weight=FLAGS.gradient_weight,
        adv_weight=FLAGS.adv_weight,
        gp_weight=FLAGS.gp_weight,
        gp_endpoint=FLAGS.gp_endpoint,
        content_feature_scale=FLAGS.content_feature_scale,
        content_distance=FLAGS.content_distance,
        pixel_weight=FLAGS.pixel_weight,
        vgg_weights_path=path,
        vgg_weights_id=identity,
        seed=step_seed(),
    )


def build_trainer(out=None):
    """Flags -> Trainer (the shared flow of :func:`training.script.build_trainer`)."""
    return script.build_trainer(
        make_step, paper_flags=PAPER_FLAGS, default_run_dir="runs/gradientnet", out=out
    )


def main(argv):
    # Before TensorFlow loads: bad flags fail fast.
    prepare = (apply_flag_defaults, apply_model_kwargs, check_flags)
    script.run_main("train_gradientnet.py", argv, prepare=prepare, build=build_trainer)


if __name__ == "__main__":
    train_flags.apply_defaults(PAPER_DEFAULTS)  # so that --help shows this paper's defaults
    cli.run(main)
