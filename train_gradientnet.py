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
another critic, loss weight, VGG file or ablation is refused. Outputs: ``rundir.py``
(run_config.json, checkpoints/ with the generator under ``model`` and the critic and both
optimizers beside it, best/, tensorboard/, final.weights.h5 of the generator).
"""

from __future__ import annotations

import dataclasses
import random

from absl import flags

import cli
from cli import train_flags
from training import model_arguments, runner, vgg_config
from training.config import DataConfig, ScheduleConfig, TrainConfig, replace

SIZE_MULTIPLE = 4  # two stride-2 convolutions
# Keras' VGG19 needs >= 32 px; the critic (70-px receptive field, 35x35 map at 256) takes any size.
MIN_CROP = 32
CRITIC_CLASS = "gradientnet_critic"  # training.model_arguments.MODEL_CLASSES key of PatchGANCritic


@dataclasses.dataclass(frozen=True)
class GradientNetRecipe:
    """GradientNet's own settings (gradientnet.md sections 4-5), named as their flags.

    The model: ``rgcl_mode`` / ``mbrb_branches`` / ``use_gradientnet`` are Table 5's ablations;
    widths None are the model's own (64, GradientNet C = 64, 10 MBRBs; registers 1 and 6). The
    critic: ``critic_kwargs`` is the ``--critic_kwargs`` JSON text (None: the PatchGAN as
    registered). The loss L_G = content + gradient + adversarial (Table 4 ablations: a weight
    0), the WGAN-GP penalty, the VGG19 content features; ``critic_learning_rate`` None is the
    generator's.
    """

    rgcl_mode: str = "cross"
    mbrb_branches: int = 3
    use_gradientnet: bool = True
    base_channels: int | None = None
    gradient_channels: int | None = None
    num_mbrb: int | None = None
    critic_kwargs: str | None = None
    critic_steps: int = 5  # 5 WGAN-GP critic updates per generator update
    content_weight: float = 10.0  # L_G = 10 content + 1 gradient + 1 adversarial
    gradient_weight: float = 1.0
    adv_weight: float = 1.0
    gp_weight: float = 10.0  # lambda_GP
    gp_endpoint: str = "generated"  # WGAN-GP's interpolation (register 18)
    content_distance: str = "mse"  # register 19
    content_feature_scale: float = 1.0 / 57.5  # torchvision's feature range
    vgg_weights: str = "imagenet"
    adam_beta_1: float = 0.5
    adam_beta_2: float = 0.999
    critic_learning_rate: float | None = None  # the generator's: 1e-4 for both
    pixel_weight: float = 0.0  # the paper has no pixel term


def paper_config() -> TrainConfig:
    """The paper recipe (section 4.1 as resolved by gradientnet.md section 5): batch 4, random
    256x256 crops without flips (the paper names only cropping, register 21) or noise, 150 epochs
    (of floor(2103 / 4) = 525 generator steps on GoPro), Adam lr 1e-4 for G and D (epsilon 1e-8,
    betas 0.5 / 0.999), validation every 10 epochs (the paper is silent)."""
    return TrainConfig(
        paper=GradientNetRecipe(),
        data=DataConfig(
            batch_size=4, crop_size=256, hflip=False, vflip=False, rot90=False, noise="off"
        ),
        schedule=ScheduleConfig(
            epochs=150, learning_rate=1e-4, adam_epsilon=1e-8, val_every_epochs=10
        ),
    )


# Measured on the embedded set, the paper's objective alone does not improve PSNR in a quick run:
# its terms (random-VGG content, L1 gradient, adversarial) reward texture over fidelity, and the
# output's high-frequency error exceeds the blurred input's (validation 21.0 dB after 1250 steps,
# blurred 22.56 dB; docs/gradientnet.md). So the preset starts G at the identity (DeblurGAN's global
# residual, register 4's alternative, with a zero-initialised output convolution) and adds an L1
# pixel term with weight 1000, which dominates L_G (~130 against ~3 for the paper's terms): the run
# shows the GAN machinery working, not the paper's objective.
def quick(config: TrainConfig) -> TrainConfig:
    """--preset quick: GradientNet at a quarter of the width (16 channels, GradientNet C = 16, 2
    MBRBs instead of 10) with a 16-channel critic, 64-px crops, batch 4, the paper's Adam (lr
    1e-4, betas 0.5 / 0.999) and 5 critic updates per step, 2000 steps, explicitly random
    (seeded) VGG weights, G started at the identity with an L1 pixel term of weight 1000."""
    return replace(
        config,
        preset="quick",
        base_channels=16,
        gradient_channels=16,
        num_mbrb=2,
        model_kwargs='{"global_residual": true, "output_init": "zeros"}',
        critic_kwargs='{"base_channels": 16}',
        vgg_weights="random",
        pixel_weight=1000.0,
        batch_size=4,
        crop_size=64,
        max_steps=2000,
        val_images=16,
        val_every_steps=250,
        checkpoint_every=250,
        log_every=50,
        summary_images=2,
    )


PRESETS = {"quick": quick}


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


def config_from_flags() -> TrainConfig:
    """The run's configuration: the recipe, ``--preset``, the given flags, ``--model_kwargs``
    (checked against GradientNetGAN; its keys that are recipe fields set them)."""
    return train_flags.train_config(paper_config(), PRESETS, model_name=lambda _: "gradientnet")


def check_config(config: TrainConfig) -> None:
    """Checks across settings that the flag parser cannot do; raises ConfigError."""
    runner.check_crop_size(
        config, SIZE_MULTIPLE, "GradientNet's two down-samplings", minimum=MIN_CROP
    )
    critic_kwargs(config)
    runner.check_adam_betas(config)


def critic_kwargs(config: TrainConfig) -> dict:
    """``critic_kwargs`` as PatchGANCritic's constructor arguments; ConfigError for a bad one."""
    return model_arguments.check_json_kwargs(
        config.paper.critic_kwargs, "critic_kwargs", CRITIC_CLASS
    )


def model_kwargs(config: TrainConfig) -> dict:
    """``models.build_model("gradientnet", ...)`` overrides: the ablation switches always
    (run_config.json states them), the widths when given, the other ``model_kwargs``."""
    recipe = config.paper
    widths = {
        name: getattr(recipe, name)
        for name in ("base_channels", "gradient_channels", "num_mbrb")
        if getattr(recipe, name) is not None
    }
    return {
        "rgcl_mode": recipe.rgcl_mode,
        "mbrb_branches": recipe.mbrb_branches,
        "use_gradientnet": recipe.use_gradientnet,
        **widths,
        **runner.extra_model_kwargs(config),
    }


def vgg_weights(config: TrainConfig) -> tuple[str | None, str | None]:
    """``(path or None, identity for run_config.json)`` of ``vgg_weights``; with a zero content
    weight no VGG is needed. Raises ``ConfigError`` (one line naming the file, its md5 and where
    to put it) when the file is missing or wrong; never downloads."""
    if not config.paper.content_weight:
        return None, None
    return vgg_config.vgg_weights(config.paper.vgg_weights, "vgg19")


def step_seed(config: TrainConfig) -> int:
    """Base of the step's stateless seeds: ``seed``, or a fresh one with ``seed`` -1."""
    seed = config.data.seed
    return seed if seed >= 0 else random.randrange(2**31)


def make_step(config: TrainConfig, steps_per_epoch, total_steps):
    """The GradientNet GAN step object of ``config`` (gradientnet.md sections 4-5)."""
    from training.steps.gradientnet_step import GradientNetTrainStep

    del steps_per_epoch, total_steps  # constant learning rate
    recipe, schedule = config.paper, config.schedule
    path, identity = vgg_weights(config)
    return GradientNetTrainStep(
        model_kwargs=model_kwargs(config),
        critic_kwargs=critic_kwargs(config),
        critic_steps=recipe.critic_steps,
        learning_rate=schedule.learning_rate,
        critic_learning_rate=recipe.critic_learning_rate,
        beta_1=recipe.adam_beta_1,
        beta_2=recipe.adam_beta_2,
        epsilon=schedule.adam_epsilon,
        content_weight=recipe.content_weight,
        gradient_weight=recipe.gradient_weight,
        adv_weight=recipe.adv_weight,
        gp_weight=recipe.gp_weight,
        gp_endpoint=recipe.gp_endpoint,
        content_feature_scale=recipe.content_feature_scale,
        content_distance=recipe.content_distance,
        pixel_weight=recipe.pixel_weight,
        vgg_weights_path=path,
        vgg_weights_id=identity,
        seed=step_seed(config),
    )


def build_trainer(config: TrainConfig, out=None):
    """``config`` -> Trainer (the shared assembly of :func:`training.runner.build_trainer`)."""
    return runner.build_trainer(
        config,
        lambda **sizes: make_step(config, **sizes),
        default_run_dir="runs/gradientnet",
        out=out,
    )


def main(argv):
    train_flags.run_training(
        "train_gradientnet.py",
        argv,
        make_config=config_from_flags,
        checks=(check_config,),
        build=build_trainer,
    )


if __name__ == "__main__":
    train_flags.set_flag_defaults(paper_config())  # so that --help shows this paper's defaults
    cli.run(main)
