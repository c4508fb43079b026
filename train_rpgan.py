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

import os

from absl import app, flags

import cli
from cli import train_flags
from training import script

FLAGS = flags.FLAGS
PAPER_FLAGS = [
    "sen_checkpoint",
    "flow_dir",
    "u_max",
    "synthetic_images",
    "cache_dir",
    "train_flow_source",
    "pretrain_epochs",
    "lr_end",
    "lr_hold_epochs",
    "lr_decay_epochs",
    "buffer_size",
    "buffer_fractions",
    "buffer_passes",
    "buffer_margin",
    "betas",
    "cg_tol",
    "cg_max_iter",
    "val_levels",
    "use_dp",
    "g_up_widths",
    "width_divisor",
    "d_style",
    "dp_lipschitz",
    "g_adv_form",
    "cgan_weight",
    "penalty_weight",
    "content_feature_scale",
    "pixel_weight",
    "vgg_weights",
    "adam_beta_1",
    "adam_beta_2",
]
SIZE_MULTIPLE = 4  # G's two stride-2 convolutions
DEFAULT_RUN_DIR = "runs/rpgan"  # --run_dir's default
MIN_CROP = 32  # Keras' VGG16 minimum input

# The recipe (sen_rpgan.md sections 7-9), restated in full so that another paper's script imported
# in the same process cannot change what this script runs.
PAPER_DEFAULTS = {
    "u_max": 46,  # the SEN of the pipeline and its flow set (register #10)
    "synthetic_images": 1000,
    "batch_size": 16,
    "crop_size": 256,
    "hflip": False,  # no augmentation (register #27)
    "vflip": False,
    "rot90": False,
    "noise": "off",
    "epochs": 190,
    "pretrain_epochs": 40,
    "max_steps": 0,
    "learning_rate": 1e-4,
    "lr_end": 1e-6,
    "lr_hold_epochs": 110,
    "lr_decay_epochs": 80,
    "adam_epsilon": 1e-8,
    "adam_beta_1": 0.9,
    "adam_beta_2": 0.99,
    "buffer_size": 1000,
    "buffer_fractions": ["0.5", "0.3", "0.2"],
    "buffer_passes": 3,
    "buffer_margin": 32,
    "betas": None,  # 0.02 * 5^(n-1) (register #20)
    "cg_tol": 1e-5,
    "cg_max_iter": 100,
    "val_levels": 3,
    "val_every_epochs": 10,  # paper silent
    "val_images": 20,
    "model_kwargs": None,  # G as the paper's (global_residual, output_init: --preset quick)
    "use_dp": True,
    "g_up_widths": ["256", "128"],
    "width_divisor": 1,
    "d_style": "paper",
    "dp_lipschitz": "clip",
    "g_adv_form": "saturating",
    "cgan_weight": 0.01,
    "penalty_weight": 0.1,
    "content_feature_scale": 1.0 / 57.5,
    "pixel_weight": 0.0,  # the paper has no pixel term
    "vgg_weights": "imagenet",
}
# --preset quick (with train_sen.py --preset quick's SEN): G and both critics at 1/4 width, 64-px
# windows of 200 images of the small flow-23 set, batch 8 (an epoch of 25 steps), 28 epochs (the
# first 8 of pre-training), a 100-item buffer (37 steps a cycle), 5e-4 for 20 epochs then linear to
# 5e-5, random VGG16 weights and, as GradientNet's preset, G started as Z = O (a global residual
# on O with zero-initialised output convolutions) and an L1 pixel term of weight 1000 that
# dominates G's loss: a G trained from scratch for 700 steps had a worse L1 error (0.09) than the
# blurred input (0.043) and the SEN-flow I*_1 (0.058) it reads. The framework is validated once,
# at the end, on all 200 test images. Measured figures: README.
QUICK_PRESET = {
    "u_max": 23,
    "synthetic_images": 200,
    "width_divisor": 4,
    "batch_size": 8,
    "crop_size": 64,
    "epochs": 28,
    "pretrain_epochs": 8,
    "learning_rate": 5e-4,
    "lr_end": 5e-5,
    "lr_hold_epochs": 20,
    "lr_decay_epochs": 8,
    "buffer_size": 100,
    "vgg_weights": "random",
    "pixel_weight": 1000.0,
    "model_kwargs": '{"global_residual": true, "output_init": "zeros"}',
    "val_images": 0,  # the whole test split: the run ends with the framework's test PSNR
    "val_every_epochs": 0,
    "checkpoint_every": 100,
    "log_every": 25,
    "summary_images": 2,
}


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
flags.adopt_module_key_flags(train_flags)


def apply_flag_defaults():
    script.apply_defaults(PAPER_DEFAULTS, QUICK_PRESET)


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    if not FLAGS.sen_checkpoint:
        raise app.UsageError("--sen_checkpoint is required (a trained SEN: train_sen.py).")
    if not os.path.exists(FLAGS.sen_checkpoint) and not os.path.exists(
        FLAGS.sen_checkpoint + ".index"
    ):
        raise app.UsageError(f"--sen_checkpoint {FLAGS.sen_checkpoint}: no such file or folder.")
    for name in ("hflip", "vflip", "rot90"):
        if FLAGS[name].value:
            raise app.UsageError(f"--{name}: RP-GAN trains without augmentation (register #27).")
    if FLAGS.noise != "off":
        raise app.UsageError("--noise: RP-GAN trains without noise (sen_rpgan.md section 9).")
    if FLAGS.u_max not in (23, 46):
        raise app.UsageError(f"--u_max must be 23 or 46, got {FLAGS.u_max}.")
    if FLAGS.flow_dir and not os.path.isdir(FLAGS.flow_dir):
        raise app.UsageError(f"--flow_dir {FLAGS.flow_dir} does not exist or is not a folder.")
    if FLAGS.train_flow_source == "true" and FLAGS.data_dir:
        raise app.UsageError("--train_flow_source true: GoPro (--data_dir) has no true flows.")
    script.check_crop_size(SIZE_MULTIPLE, "RP-GAN's generator", MIN_CROP)
    script.check_decay_flags()
    if FLAGS.pretrain_epochs > FLAGS.epochs:
        raise app.UsageError(
            f"--pretrain_epochs {FLAGS.pretrain_epochs} exceeds --epochs {FLAGS.epochs}."
        )
    train_flags.check_adam_betas()
    if FLAGS.dp_lipschitz == "gp" and FLAGS.d_style != "no_bn":
        raise app.UsageError("--dp_lipschitz gp needs --d_style no_bn (register #15).")
    _check_numbers()
    model_kwargs()  # a bad --model_kwargs key fails here, before TensorFlow loads


def _floats(name):
    # --betas is a comma list here and a string in cli/inference_flags.py (evaluate.py, export.py):
    # in a process that imports both, the first definition wins, so take either form.
    raw = FLAGS[name].value
    items = raw.split(",") if isinstance(raw, str) else raw
    try:
        return [float(v) for v in items]
    except ValueError:
        raise app.UsageError(f"--{name} must be numbers, got {FLAGS[name].value}.") from None


def _check_numbers():
    fractions = _floats("buffer_fractions")
    if not fractions or min(fractions) < 0 or sum(fractions) <= 0:
        raise app.UsageError(f"--buffer_fractions must be >= 0 and not all 0, got {fractions}.")
    if FLAGS.betas is not None and len(betas()) < len(fractions):
        raise app.UsageError(
            f"--betas has {len(betas())} values; the buffer's {len(fractions)} levels need as many."
        )
    if FLAGS.betas is not None and min(betas()) <= 0:
        raise app.UsageError(f"--betas must be positive, got {betas()}.")
    if [int(w) for w in FLAGS.g_up_widths] not in ([256, 128], [128, 64]):
        raise app.UsageError(f"--g_up_widths must be 256,128 or 128,64, got {FLAGS.g_up_widths}.")
    if FLAGS.batch_size > FLAGS.buffer_size * FLAGS.buffer_passes:
        raise app.UsageError("--batch_size exceeds the items of one buffer cycle.")


def betas():
    """The beta ladder of training and validation (at least as long as the levels used)."""
    from deconvolution.hqs import beta_ladder

    if FLAGS.betas is None:
        levels = max(len(FLAGS.buffer_fractions), FLAGS.val_levels)
        return list(beta_ladder(levels))
    return _floats("betas")


def model_kwargs():
    """G's constructor arguments (``models.rpgan.rpgan_generator``): the width flags and the
    other ``--model_kwargs`` (checked against ``RPGANGenerator``)."""
    extra = train_flags.checked_kwargs("model_kwargs", "rpgan_generator")
    for key in ("g_up_widths", "width_divisor"):
        if key in extra:
            raise app.UsageError(f"--model_kwargs: set {key} with --{key}.")
    return {
        "g_up_widths": [int(w) for w in FLAGS.g_up_widths],
        "width_divisor": FLAGS.width_divisor,
        **extra,
    }


def framework_kwargs():
    """The validation framework's settings (run_config.json ``"framework"``)."""
    return {
        "levels": FLAGS.val_levels,
        "betas": betas()[: FLAGS.val_levels],
        "cg_tol": FLAGS.cg_tol,
        "cg_max_iter": FLAGS.cg_max_iter,
    }


def vgg_weights():
    """``(path or None, identity for run_config.json)`` of ``--vgg_weights`` (VGG16)."""
    return train_flags.vgg_weights_flag("vgg16")


def load_sen():
    """(frozen SEN, its run_config.json "sen" record) from ``--sen_checkpoint``."""
    from inference import signatures, sources
    from training import deconv_cache

    path = FLAGS.sen_checkpoint
    as_file = os.path.isfile(path)
    try:
        sen, info = sources.load_keras_model(
            checkpoint=None if as_file else path,
            weights=path if as_file else None,
            task=signatures.TASK_FLOW,
        )
    except sources.ModelSourceError as error:
        raise app.UsageError(str(error)) from None
    sen.trainable = False
    record = {
        "model": info.get("model", "sen"),
        "model_kwargs": info.get("model_kwargs", {}),
        "weights": "sen.weights.h5",
        "digest": deconv_cache.model_digest(sen),
        "u_max": info.get("u_max"),
    }
    return sen, record


def training_images():
    """(:class:`training.deconv_cache.TrainingImage` list, description): the first
    ``--synthetic_images`` of the flow set's training split, then GoPro's training pairs."""
    from data import readers
    from training import deconv_cache

    root = flow_dir()
    pairs = spread(readers.list_pairs(root, "train"), FLAGS.synthetic_images)
    images = deconv_cache.from_pairs(pairs, with_labels=FLAGS.train_flow_source == "true")
    description = {"flow_set": root, "synthetic_images": len(images)}
    if FLAGS.data_dir:
        gopro = readers.list_pairs(FLAGS.data_dir, "train", FLAGS.blur_variant)
        images += deconv_cache.from_pairs(gopro)
        description.update(data_dir=FLAGS.data_dir, gopro_images=len(gopro))
    description["train_images"] = len(images)
    return images, description


def spread(items, count):
    """``count`` items evenly spaced over ``items`` (all if fewer): the flow sets hold 20 flows per
    sharp source in order, so the first N would see N / 20 sources only."""
    if count >= len(items):
        return list(items)
    return [items[i * len(items) // count] for i in range(count)]


def flow_dir():
    """``--flow_dir`` or the small default flow set of ``--u_max`` (generated on first use)."""
    if FLAGS.flow_dir:
        return FLAGS.flow_dir
    from data import default_data

    return default_data.default_flow_dir(FLAGS.u_max)


def cache_dir():
    if FLAGS.cache_dir:
        return FLAGS.cache_dir
    from data import default_data

    return os.path.join(default_data.cache_root(), "rpgan_deconv")


def validation():
    """The framework's validation pairs: the flow set's test split (or ``--val_data_dir``); the
    step validates the framework and the identity-prior HQS baseline on them together."""
    from training import inputs

    return inputs.load_validation(
        FLAGS.val_data_dir or flow_dir(),
        split=FLAGS.val_split,
        num_images=FLAGS.val_images,
        crop=FLAGS.val_crop,
        explicit_dir=bool(FLAGS.val_data_dir),
    )


def make_schedule(steps_per_epoch):
    """1e-4 held, then linear to 1e-6 (section 9), per generator update."""
    from training import schedules

    hold, decay = FLAGS.lr_hold_epochs * steps_per_epoch, FLAGS.lr_decay_epochs * steps_per_epoch
    return schedules.HoldThenLinearDecay(FLAGS.learning_rate, FLAGS.lr_end, hold, decay)


def make_step(steps_per_epoch, sen, sen_record):
    """The RP-GAN step object from the flags (sections 7-9)."""
    from training.rpgan_step import RPGANTrainStep

    path, identity = vgg_weights()
    critic = {"d_style": FLAGS.d_style, "width_divisor": FLAGS.width_divisor}
    step = RPGANTrainStep(
        model_kwargs=model_kwargs(),
        critic_kwargs=critic,
        use_dp=FLAGS.use_dp,
        learning_rate=make_schedule(steps_per_epoch),
        beta_1=FLAGS.adam_beta_1,
        beta_2=FLAGS.adam_beta_2,
        epsilon=FLAGS.adam_epsilon,
        cgan_weight=FLAGS.cgan_weight,
        penalty_weight=FLAGS.penalty_weight,
        content_feature_scale=FLAGS.content_feature_scale,
        g_adv_form=FLAGS.g_adv_form,
        pixel_weight=FLAGS.pixel_weight,
        dp_lipschitz=FLAGS.dp_lipschitz,
        vgg_weights_path=path,
        vgg_weights_id=identity,
        seed=max(FLAGS.seed, 0),
        replay_snapshot=True,
        sen=sen,
        sen_record=sen_record,
        framework_kwargs=framework_kwargs(),
    )
    return step


def build_trainer(out=None):
    """Flags -> Trainer: the frozen SEN, the cached training images, the step and the segments."""
    from training import deconv_cache, rpgan_data

    sen, sen_record = load_sen()
    images, description = training_images()
    cache = deconv_cache.DeconvCache(
        cache_dir(),
        images,
        sen=sen,
        flow_source=FLAGS.train_flow_source,
        beta=betas()[0],
        tol=FLAGS.cg_tol,
        max_iter=FLAGS.cg_max_iter,
    )
    batches = rpgan_data.steps_per_epoch(len(images), FLAGS.batch_size)
    segments = rpgan_data.RPGANData(
        cache,
        None,  # the step object, made below
        batch_size=FLAGS.batch_size,
        crop_size=FLAGS.crop_size,
        pretrain_steps=FLAGS.pretrain_epochs * batches,
        buffer_kwargs=buffer_kwargs(),
        seed=max(FLAGS.seed, 0),
        run_dir=FLAGS.run_dir or DEFAULT_RUN_DIR,
        sen=sen,
    )

    def step_factory(steps_per_epoch, total_steps):
        del total_steps  # the schedule is in epochs
        segments.step_obj = make_step(steps_per_epoch, sen, sen_record)
        return segments.step_obj

    def data_factory():
        return script.TrainingData(
            size=batches * FLAGS.batch_size,
            epoch_datasets=segments,
            validation=validation,
            description={**description, "cache": cache.folder},
            unit="images",
        )

    return script.build_trainer(
        step_factory,
        paper_flags=PAPER_FLAGS,
        default_run_dir=DEFAULT_RUN_DIR,
        out=out,
        data_factory=data_factory,
    )


def buffer_kwargs():
    return {
        "size": FLAGS.buffer_size,
        "fractions": _floats("buffer_fractions"),
        "betas": betas(),
        "margin": FLAGS.buffer_margin,
        "passes": FLAGS.buffer_passes,
        "tol": FLAGS.cg_tol,
        "max_iter": FLAGS.cg_max_iter,
    }


def main(argv):
    # Before TensorFlow loads: bad flags fail fast.
    script.run_main(
        "train_rpgan.py", argv, prepare=(apply_flag_defaults, check_flags), build=build_trainer
    )


if __name__ == "__main__":
    train_flags.apply_defaults(PAPER_DEFAULTS)  # so that --help shows this paper's defaults
    cli.run(main)
