"""Train RP-GAN, the learned prior of the blind deblurring framework (Wu et al., paper §4.2 and
§6.2), on the deconvolutions of a frozen, trained SEN.

Defaults are the paper's recipe as resolved by sen_rpgan.md sections 7-9:

* data: ``--synthetic_images`` (1000) training images of a synthetic flow set, evenly spaced
  (``--flow_dir``; default the small flow-``--u_max`` set of ``data.default_data``, generated on
  first use), plus the GoPro training pairs when ``--data_dir`` is given (2103: 3103 images);
* flows of the frozen SEN (``--sen_checkpoint``: a train_sen.py run, checkpoint or weights file)
  estimated once per image on the full image and cached with I*_1 = CG(beta_1; Z_0 = O) in
  ``--cache_dir`` (keyed by the SEN's digest, beta_1 and the CG settings: another SEN or beta uses
  another folder); ``--train_flow_source true`` uses the flow sets' true flows instead;
* random 256x256 windows, batch 16; an epoch is ceil(images / batch) steps (194 for 3103);
* pre-training on level 1 for the first ``--pretrain_epochs`` (40) epochs, then the replay buffer:
  1000 items (50 % level 1, 30 % level 2, 20 % level 3) made by a frozen snapshot of G with a
  32-px margin, 3 shuffled passes (187 steps), then snapshot and rebuild;
* per step D_cGAN, then D_p with weight clipping to +-0.01, then G with L_c + 0.01 L_cGAN + 0.1 L_p
  (VGG16 block2_conv2 content loss, scale 1/57.5);
* Adam (PyTorch's formula, 0.9 / 0.99 / 1e-8) for all three; lr 1e-4 for 110 epochs, then linear
  to 1e-6 over 80 (190 epochs, the 40 pre-training epochs included: register #22).

Validation runs the whole framework (frozen SEN, K, CG, the live G; levels 3) on the flow set's
test split and logs the blurred inputs' PSNR and, computed beside the framework with the same SEN,
K and CG solves (``RPGANTrainStep.predict``), the identity-prior HQS's as the baselines.
Examples:

    python train_sen.py --preset quick --run_dir runs/sen_quick
    python train_rpgan.py --preset quick --sen_checkpoint runs/sen_quick --run_dir runs/rpgan_quick
    python train_rpgan.py --sen_checkpoint runs/sen46 --data_dir /data/GOPRO --flow_dir \\
        /data/flow/flow-46 --run_dir runs/rpgan                        # the paper
    python train_rpgan.py ... --nouse_dp                               # Appendix B

Rerunning a command with the same --run_dir resumes it exactly: the checkpoint holds G, both
critics, the three optimizers and the buffer's frozen snapshot with its cycle; the cache is reused
and only the buffer (derived data) is regenerated. Outputs: ``training/__init__.py`` plus
``sen.weights.h5`` and the "sen" / "framework" entries of run_config.json, so the run is a whole
framework for evaluate.py, deblur.py and export.py (``--checkpoint <run>``).
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags

import cli
import config as config_lib
from cli import train_flags
from training import runner
from training.config import DataConfig, ScheduleConfig, TrainConfig, replace
from training.rpgan import rpgan_run

GENERATOR = "rpgan_generator"  # the registry name of G (a prior: models.PRIOR_BUILDERS)
SIZE_MULTIPLE = 4  # G's two stride-2 convolutions
DEFAULT_RUN_DIR = "runs/rpgan"  # --run_dir's default
MIN_CROP = 32  # Keras' VGG16 minimum input


@dataclasses.dataclass(frozen=True)
class RPGANSources:
    """Where the training images and their flows come from (sen_rpgan.md section 9): the frozen
    SEN, ``synthetic_images`` of the flow set (default: the small flow-``u_max`` set), the cache
    of flows and I*_1 (default: <data cache>/rpgan_deconv); ``train_flow_source`` true uses the
    flow sets' labels instead of the SEN's flows."""

    sen_checkpoint: str | None = None  # required: a train_sen.py run, checkpoint or weights file
    flow_dir: str | None = None
    u_max: int = 46  # the SEN of the pipeline and its flow set (register #10)
    synthetic_images: int = 1000  # + GoPro's 2103 training pairs with --data_dir: 3103 images
    cache_dir: str | None = None
    train_flow_source: str = "sen"  # section 9: the frozen SEN's flows


@dataclasses.dataclass(frozen=True)
class RPGANBuffer:
    """The replay buffer and the HQS data step (sen_rpgan.md sections 7 and 9): 1000 items a
    cycle, 50/30/20 % of levels 1/2/3 with a 32-px margin, 3 shuffled passes; beta_n =
    0.02 * 5^(n-1) (``betas`` None, register #20); CG to 1e-5 in at most 100 iterations;
    validation with the framework's 3 levels."""

    buffer_size: int = 1000
    buffer_fractions: tuple[float, ...] = (0.5, 0.3, 0.2)
    buffer_passes: int = 3
    buffer_margin: int = 32
    betas: tuple[float, ...] | None = None  # 0.02 * 5^(n-1) (register #20)
    cg_tol: float = 1e-5
    cg_max_iter: int = 100
    val_levels: int = 3


@dataclasses.dataclass(frozen=True)
class RPGANNetworks:
    """G, the critics and G's loss (paper section 4.2, sen_rpgan.md section 8): L_c + 0.01 L_cGAN
    + 0.1 L_p with the VGG16 block2_conv2 content loss (scale 1/57.5), D_p clipped to +-0.01."""

    use_dp: bool = True  # False: Appendix B
    g_up_widths: tuple[int, ...] = (256, 128)  # register #11
    width_divisor: int = 1
    d_style: str = "paper"  # register #14
    dp_lipschitz: str = "clip"  # register #15
    # Diagnostic, not the paper's: L_p's share of G's update (Appendix B), one more backward pass.
    log_lp_grad_ratio: bool = True
    g_adv_form: str = "saturating"  # L_cGAN as written
    cgan_weight: float = 0.01  # gamma
    penalty_weight: float = 0.1  # lambda
    content_feature_scale: float = 1.0 / 57.5
    pixel_weight: float = 0.0  # the paper has no pixel term
    vgg_weights: str = "imagenet"


@dataclasses.dataclass(frozen=True)
class RPGANRecipe:
    """RP-GAN's own settings (sen_rpgan.md sections 7-9): 40 epochs of level-1 pre-training
    inside the 190; lr held for 110 epochs, then linear to 1e-6 over 80 (register #22); Adam
    (PyTorch's formula) 0.9 / 0.99 for G, D_cGAN and D_p ("the same solver as SEN")."""

    pretrain_epochs: int = 40
    lr_end: float = 1e-6
    lr_hold_epochs: int = 110
    lr_decay_epochs: int = 80
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.99
    sources: RPGANSources = RPGANSources()
    buffer: RPGANBuffer = RPGANBuffer()
    networks: RPGANNetworks = RPGANNetworks()


def paper_config() -> TrainConfig:
    """The recipe (sen_rpgan.md sections 7-9): batch 16 of random 256x256 windows without
    augmentation (register #27) or noise, 190 epochs, lr 1e-4 with Adam epsilon 1e-8; validation
    every 10 epochs (the paper is silent) on 20 test images; G as the paper's (no
    ``model_kwargs``; ``global_residual`` / ``output_init`` are --preset quick's)."""
    return TrainConfig(
        paper=RPGANRecipe(),
        data=DataConfig(
            batch_size=16, crop_size=256, hflip=False, vflip=False, rot90=False, noise="off"
        ),
        schedule=ScheduleConfig(
            epochs=190, max_steps=0, learning_rate=1e-4, adam_epsilon=1e-8, val_every_epochs=10
        ),
    )


def quick(config: TrainConfig) -> TrainConfig:
    """--preset quick (with train_sen.py --preset quick's SEN): G and both critics at 1/4 width,
    64-px windows of 200 images of the small flow-23 set, batch 8 (an epoch of 25 steps), 28
    epochs (the first 8 of pre-training), a 100-item buffer (37 steps a cycle), 5e-4 for 20
    epochs then linear to 5e-5, random VGG16 weights and, as GradientNet's preset, G started as
    Z = O (a global residual on O with zero-initialised output convolutions) and an L1 pixel term
    of weight 1000 that dominates G's loss: a G trained from scratch for 225 steps still had a
    worse L1 error (0.09) than the blurred windows (0.065) and the SEN-flow I*_1 (0.094) it reads.
    The framework is validated once, at the end, on all 200 test images. Measured figures:
    docs/sen_rpgan.md."""
    return replace(
        config,
        preset="quick",
        u_max=23,
        synthetic_images=200,
        width_divisor=4,
        batch_size=8,
        crop_size=64,
        epochs=28,
        pretrain_epochs=8,
        learning_rate=5e-4,
        lr_end=5e-5,
        lr_hold_epochs=20,
        lr_decay_epochs=8,
        buffer_size=100,
        vgg_weights="random",
        pixel_weight=1000.0,
        model_kwargs='{"global_residual": true, "output_init": "zeros"}',
        val_images=0,  # the whole test split: the run ends with the framework's test PSNR
        val_every_epochs=0,
        checkpoint_every=100,
        log_every=25,
        summary_images=2,
    )


PRESETS = {"quick": quick}


def _define_flags():
    d = train_flags.define_once
    s, i, f = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float
    d(s, "sen_checkpoint", None, "The frozen SEN: a train_sen.py run, checkpoint or weights file.")
    d(s, "flow_dir", None, "Synthetic flow set (default: the small flow-<u_max> set).")
    d(i, "u_max", 46, "Flow bound of the default flow set: 23 or 46.")
    d(
        i,
        "synthetic_images",
        1000,
        "Synthetic training images (the first N of the flow set's training split).",
        lower_bound=1,
    )
    d(s, "cache_dir", None, "Cache of flows and I*_1 (default: <data cache>/rpgan_deconv).")
    d(
        flags.DEFINE_enum,
        "train_flow_source",
        "sen",
        "Flows of the training images: sen (section 9) or true (the flow sets' labels).",
        enum_values=["sen", "true"],
    )
    d(i, "pretrain_epochs", 40, "Level-1 pre-training epochs (inside --epochs).", lower_bound=0)
    d(f, "lr_end", 1e-6, "Final learning rate of the decay.", lower_bound=0.0)
    d(i, "lr_hold_epochs", 110, "Epochs at --learning_rate.", lower_bound=0)
    d(i, "lr_decay_epochs", 80, "Epochs of linear decay.", lower_bound=0)
    train_flags.define_adam_beta_flags(0.9, 0.99, "Adam beta1 (G, D_cGAN, D_p).", "Adam beta2.")
    _define_buffer_flags()
    _define_network_flags()


def _define_buffer_flags():
    d = train_flags.define_once
    i, f = flags.DEFINE_integer, flags.DEFINE_float
    d(i, "buffer_size", 1000, "Replay-buffer items per cycle.", lower_bound=1)
    d(flags.DEFINE_list, "buffer_fractions", ["0.5", "0.3", "0.2"], "Share of levels 1, 2, 3...")
    d(i, "buffer_passes", 3, "Shuffled passes over the buffer per cycle.", lower_bound=1)
    d(i, "buffer_margin", 32, "Margin of level >= 2 windows in pixels.", lower_bound=0)
    d(flags.DEFINE_list, "betas", None, "HQS beta per level (default 0.02 * 5^(n-1)).")
    d(f, "cg_tol", 1e-5, "CG relative tolerance.", lower_bound=0.0)
    d(i, "cg_max_iter", 100, "CG iterations at most.", lower_bound=1)
    d(i, "val_levels", 3, "HQS levels of the validation framework.", lower_bound=1)


def _define_network_flags():
    d = train_flags.define_once
    f = flags.DEFINE_float
    d(flags.DEFINE_bool, "use_dp", True, "Train D_p and L_p (--nouse_dp: Appendix B).")
    d(
        flags.DEFINE_bool,
        "log_lp_grad_ratio",
        True,
        "Log lp_grad_ratio, ||grad_G 0.1 L_p|| / ||grad_G of the rest of G's loss|| (Appendix B "
        "reads it); one more backward pass through G, about 1.5x a step's time on a CPU.",
    )
    d(flags.DEFINE_list, "g_up_widths", ["256", "128"], "G's up-path widths (register #11).")
    d(flags.DEFINE_integer, "width_divisor", 1, "Divide every G and D width.", lower_bound=1)
    d(
        flags.DEFINE_enum,
        "d_style",
        "paper",
        "Discriminator layers (register #14): paper, pix2pix or no_bn.",
        enum_values=["paper", "pix2pix", "no_bn"],
    )
    d(
        flags.DEFINE_enum,
        "dp_lipschitz",
        "clip",
        "D_p's Lipschitz constraint: clip (weights to +-0.01) or gp (needs --d_style no_bn).",
        enum_values=["clip", "gp"],
    )
    d(
        flags.DEFINE_enum,
        "g_adv_form",
        "saturating",
        "G's cGAN term: saturating (as written) or non_saturating.",
        enum_values=["saturating", "non_saturating"],
    )
    d(f, "cgan_weight", 0.01, "gamma, the weight of L_cGAN.", lower_bound=0.0)
    d(f, "penalty_weight", 0.1, "lambda, the weight of L_p.", lower_bound=0.0)
    train_flags.define_content_loss_flags("VGG16", "G's loss", "Scale s of the VGG16 features.")


train_flags.define_common_flags()
_define_flags()
# The flags are defined in cli/train_flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)

# The comma-list flags and the number type of their items in the config.
COMMA_LISTS = {"buffer_fractions": float, "betas": float, "g_up_widths": int}


def config_from_flags() -> TrainConfig:
    """The run's configuration: the recipe, ``--preset``, the given flags, ``--model_kwargs``;
    the comma lists as tuples of numbers."""
    config = train_flags.train_config(paper_config(), PRESETS, model_name=lambda _: GENERATOR)
    return replace(config, **{name: _numbers(config, name) for name in COMMA_LISTS})


def _numbers(config: TrainConfig, name: str):
    # --betas is a comma list here and a string in cli/inference_flags.py (evaluate.py, export.py):
    # in a process that imports both, the first definition wins, so take either form.
    raw = config_lib.get(config, name)
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    try:
        return tuple(COMMA_LISTS[name](v) for v in items)
    except ValueError:
        raise runner.ConfigError(f"--{name} must be numbers, got {items}.") from None


def flag_values(config: TrainConfig) -> TrainConfig:
    """``config`` with its tuples as the comma-list flags hold them (lists of strings), for
    ``--help``'s defaults."""
    return replace(
        config,
        **{
            name: [str(v) for v in value]
            for name, value in config_lib.leaves(config)
            if isinstance(value, tuple)
        },
    )


# ---- checks (before TensorFlow is imported) -----------------------------------------------------


def check_config(config: TrainConfig) -> None:
    """Checks across settings that the flag parser cannot do; raises ConfigError (one line)."""
    for check in (
        _check_sen,
        _check_augmentation,
        _check_flow_set,
        _check_schedule,
        _check_critics,
        _check_buffer,
        check_betas_per_level,
        _check_networks,
        _check_model_kwargs,
    ):
        check(config)


def _check_sen(config: TrainConfig) -> None:
    path = config.paper.sources.sen_checkpoint
    if not path:
        raise runner.ConfigError("--sen_checkpoint is required (a trained SEN: train_sen.py).")
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise runner.ConfigError(f"--sen_checkpoint {path}: no such file or folder.")


def _check_augmentation(config: TrainConfig) -> None:
    for name in ("hflip", "vflip", "rot90"):
        if getattr(config.data, name):
            raise runner.ConfigError(
                f"--{name}: RP-GAN trains without augmentation (register #27)."
            )
    if config.data.noise != "off":
        raise runner.ConfigError("--noise: RP-GAN trains without noise (sen_rpgan.md section 9).")


def _check_flow_set(config: TrainConfig) -> None:
    sources = config.paper.sources
    if sources.u_max not in (23, 46):
        raise runner.ConfigError(f"--u_max must be 23 or 46, got {sources.u_max}.")
    if sources.flow_dir and not os.path.isdir(sources.flow_dir):
        raise runner.ConfigError(
            f"--flow_dir {sources.flow_dir} does not exist or is not a folder."
        )
    if sources.train_flow_source == "true" and config.data.data_dir:
        raise runner.ConfigError("--train_flow_source true: GoPro (--data_dir) has no true flows.")


def _check_schedule(config: TrainConfig) -> None:
    runner.check_crop_size(config, SIZE_MULTIPLE, "RP-GAN's generator", MIN_CROP)
    runner.check_decay(config)
    pretrain, epochs = config.paper.pretrain_epochs, config.schedule.epochs
    if pretrain > epochs:
        raise runner.ConfigError(f"--pretrain_epochs {pretrain} exceeds --epochs {epochs}.")
    runner.check_adam_betas(config)


def _check_critics(config: TrainConfig) -> None:
    networks = config.paper.networks
    if networks.dp_lipschitz == "gp" and networks.d_style != "no_bn":
        raise runner.ConfigError("--dp_lipschitz gp needs --d_style no_bn (register #15).")


def _check_buffer(config: TrainConfig) -> None:
    buffer = config.paper.buffer
    fractions, betas = list(buffer.buffer_fractions), buffer.betas
    if not fractions or min(fractions) < 0 or sum(fractions) <= 0:
        raise runner.ConfigError(f"--buffer_fractions must be >= 0 and not all 0, got {fractions}.")
    if betas is not None and len(betas) < len(fractions):
        raise runner.ConfigError(
            f"--betas has {len(betas)} values; the buffer's {len(fractions)} levels need as many."
        )
    if betas is not None and min(betas) <= 0:
        raise runner.ConfigError(f"--betas must be positive, got {list(betas)}.")


def check_betas_per_level(config: TrainConfig) -> None:
    """Given ``betas`` need one value per validation level (the framework's ``val_levels``), or
    the first validation fails, hours into the run."""
    buffer = config.paper.buffer
    if buffer.betas is not None and len(buffer.betas) < buffer.val_levels:
        raise runner.ConfigError(
            f"--betas has {len(buffer.betas)} values; --val_levels {buffer.val_levels} needs one "
            "per level."
        )


def _check_networks(config: TrainConfig) -> None:
    widths = config.paper.networks.g_up_widths
    if tuple(widths) not in ((256, 128), (128, 64)):
        shown = [str(w) for w in widths]  # as the flag holds them
        raise runner.ConfigError(f"--g_up_widths must be 256,128 or 128,64, got {shown}.")
    buffer = config.paper.buffer
    if config.data.batch_size > buffer.buffer_size * buffer.buffer_passes:
        raise runner.ConfigError("--batch_size exceeds the items of one buffer cycle.")


def _check_model_kwargs(config: TrainConfig) -> None:
    # Its keys were checked against G's constructor when the config was made (train_config).
    for key in ("g_up_widths", "width_divisor"):
        if key in runner.model_kwargs_dict(config):
            raise runner.ConfigError(f"--model_kwargs: set {key} with --{key}.")


# ---- the step and the run -----------------------------------------------------------------------


def model_kwargs(config: TrainConfig) -> dict:
    """G's constructor arguments (``models.rpgan.rpgan_generator``): the widths of the recipe and
    the other ``model_kwargs`` (``global_residual``, ``output_init``: --preset quick)."""
    networks = config.paper.networks
    return {
        "g_up_widths": [int(w) for w in networks.g_up_widths],
        "width_divisor": networks.width_divisor,
        **runner.extra_model_kwargs(config),
    }


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """1e-4 held, then linear to 1e-6 (section 9), per generator update."""
    from training import schedules

    recipe = config.paper
    hold = recipe.lr_hold_epochs * steps_per_epoch
    decay = recipe.lr_decay_epochs * steps_per_epoch
    return schedules.HoldThenLinearDecay(config.schedule.learning_rate, recipe.lr_end, hold, decay)


def make_step(config: TrainConfig, steps_per_epoch: int, sen, sen_record):
    """The RP-GAN step object of ``config`` (sections 7-9), validating the framework of the
    frozen ``sen`` (``sen_record``: its run_config.json entry)."""
    from training import vgg_config
    from training.steps.rpgan_step import RPGANTrainStep

    recipe, networks = config.paper, config.paper.networks
    path, identity = vgg_config.vgg_weights(networks.vgg_weights, "vgg16")
    return RPGANTrainStep(
        model_kwargs=model_kwargs(config),
        critic_kwargs={"d_style": networks.d_style, "width_divisor": networks.width_divisor},
        use_dp=networks.use_dp,
        learning_rate=make_schedule(config, steps_per_epoch),
        beta_1=recipe.adam_beta_1,
        beta_2=recipe.adam_beta_2,
        epsilon=config.schedule.adam_epsilon,
        cgan_weight=networks.cgan_weight,
        penalty_weight=networks.penalty_weight,
        content_feature_scale=networks.content_feature_scale,
        g_adv_form=networks.g_adv_form,
        pixel_weight=networks.pixel_weight,
        dp_lipschitz=networks.dp_lipschitz,
        log_lp_grad_ratio=networks.log_lp_grad_ratio,
        vgg_weights_path=path,
        vgg_weights_id=identity,
        seed=max(config.data.seed, 0),
        replay_snapshot=True,
        sen=sen,
        sen_record=sen_record,
        framework_kwargs=rpgan_run.framework_kwargs(config),
    )


def build_trainer(config: TrainConfig, out=None):
    """``config`` -> Trainer: the frozen SEN, the cached training images, the step object and the
    data that feeds it (:func:`training.rpgan.rpgan_run.build_trainer`)."""
    return rpgan_run.build_trainer(config, make_step, default_run_dir=DEFAULT_RUN_DIR, out=out)


def main(argv):
    train_flags.run_training(
        "train_rpgan.py",
        argv,
        make_config=config_from_flags,
        checks=(check_config,),
        build=build_trainer,
    )


if __name__ == "__main__":
    # So that --help shows this paper's defaults (the comma lists as the flags hold them).
    train_flags.set_flag_defaults(flag_values(paper_config()))
    cli.run(main)
