"""The training scripts' command layer: the shared flags (defined once per process) and the one
place where flags become a :class:`training.config.TrainConfig`.

Each ``train_<paper>.py`` calls :func:`define_common_flags` at import time; the call is idempotent,
so several training scripts (and evaluate.py, which guards ``--data_dir``/``--blur_variant`` the
same way) can be imported in one process. Paper-specific flags are defined the same way with
:func:`define_once`; flags that several papers share with their own defaults or help texts have
definers taking those (:func:`define_width_flags`, :func:`define_adam_beta_flags`, the GAN papers'
:func:`define_content_loss_flags`). A flag's declared default is only what ``--help`` shows
(:func:`set_flag_defaults` shows the script's recipe): a run's values come from
:func:`train_config`, which reads the flags once — the paper's recipe, the preset, the flags given
on the command line — so that importing one script never changes what another runs.

``--model_kwargs`` (JSON) reaches every constructor argument of the paper's model, including the
switches without a flag of their own (IDC ``texture_input``, ``stop_gradient``, ``pyramid_mode``;
Two-Way ``share_bottleneck_blocks``). :func:`train_config` checks its keys against the model
class's constructor (:mod:`training.model_arguments`, read from the source with ``ast``, so
before TensorFlow is imported), gives keys that are recipe fields (``num_res``,
``base_channels``, the paper switches) to those fields, so that the checks and
``run_config.json`` see one value, and refuses a flag given on the command line that disagrees
with the same key.
"""

from __future__ import annotations

import sys

from absl import app, flags

from cli import define_once, define_precision_flag
from config import ConfigError
from training import model_arguments
from training.config import PRESETS, STRATEGIES

FLAGS = flags.FLAGS


def define_common_flags(defaults: dict | None = None):
    """Defines the shared training flags (once); ``defaults`` (flag name -> value) is what
    ``--help`` shows."""
    _define_data_flags()
    _define_schedule_flags()
    _define_run_flags()
    if defaults:
        for name, value in defaults.items():
            FLAGS.set_default(name, value)


def define_width_flags():
    """``--base_channels`` and ``--num_res``: width overrides of the paper model (None = the
    paper's). Each script's ``model_kwargs`` passes them on only when given."""
    define_once(
        flags.DEFINE_integer,
        "base_channels",
        None,
        "Level-1 width (default 32, the papers'; smaller for tests and --preset quick).",
        lower_bound=4,
    )
    define_once(
        flags.DEFINE_integer,
        "num_res",
        None,
        "ResBlocks per block (default: the paper's; MIMO-UNet 8, MIMO-UNet+ 20, IDC 2, Two-Way 3).",
        lower_bound=1,
    )


def define_polynomial_decay_flags():
    """``--lr_end`` and ``--lr_power`` of SRN's polynomial decay (IDC, Two-Way); the scripts set
    their paper's values in their recipe."""
    define_once(
        flags.DEFINE_float,
        "lr_end",
        0.0,
        "Final learning rate of the polynomial decay (IDC 1e-6, Two-Way 0).",
        lower_bound=0.0,
    )
    define_once(
        flags.DEFINE_float,
        "lr_power",
        0.3,
        "Power of the polynomial learning-rate decay (SRN: 0.3).",
        lower_bound=0.0,
    )


def define_adam_beta_flags(beta_1: float, beta_2: float, help_1: str, help_2: str):
    """``--adam_beta_1`` / ``--adam_beta_2`` (non-negative) with the paper's defaults and help
    texts; :func:`check_adam_betas` refuses values of 1 and above."""
    define_once(flags.DEFINE_float, "adam_beta_1", beta_1, help_1, lower_bound=0.0)
    define_once(flags.DEFINE_float, "adam_beta_2", beta_2, help_2, lower_bound=0.0)


def define_content_loss_flags(vgg: str, generator_loss: str, scale_help: str):
    """The adversarial papers' (GradientNet, RP-GAN) VGG content-loss flags: ``--vgg_weights`` of
    the ``vgg`` ("VGG16" / "VGG19") features, ``--content_feature_scale`` (1/57.5, help
    ``scale_help``) and ``--pixel_weight`` of an L1 term added to ``generator_loss`` (G's loss's
    name in the script's help)."""
    define_once(
        flags.DEFINE_float, "content_feature_scale", 1.0 / 57.5, scale_help, lower_bound=0.0
    )
    define_once(
        flags.DEFINE_float,
        "pixel_weight",
        0.0,
        f"Weight of an L1 pixel term added to {generator_loss} (0: the paper; --preset quick uses "
        "one).",
        lower_bound=0.0,
    )
    define_once(
        flags.DEFINE_string,
        "vgg_weights",
        "imagenet",
        f"{vgg} weights of the content loss: imagenet (Keras' cached notop file, never "
        "downloaded), a PATH to that file, or random (smoke runs and --preset quick only).",
    )


def _define_data_flags():
    s, i, b = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool
    define_once(
        s,
        "data_dir",
        None,
        "Data folder (any reader layout), 'tfds:gopro', or none for the embedded "
        "synthetic set (generated on first use).",
    )
    define_once(
        flags.DEFINE_enum,
        "blur_variant",
        "blur",
        "GoPro input variant.",
        enum_values=["blur", "blur_gamma"],
    )
    define_once(i, "batch_size", 4, "Global batch size (split over replicas).", lower_bound=1)
    define_once(i, "crop_size", 256, "Random square training crop in pixels.", lower_bound=8)
    define_once(b, "hflip", True, "Random horizontal flip of each pair.")
    define_once(b, "vflip", False, "Random vertical flip of each pair.")
    define_once(b, "rot90", False, "Random 90-degree rotation of each pair.")
    define_once(
        flags.DEFINE_enum,
        "noise",
        "off",
        "Gaussian noise on the blurred training input only (never on validation): random_sigma "
        "(IDC: per image sigma = |s|, s ~ N(0, (noise_sigma/255)^2)), fixed_sigma "
        "(sigma = noise_sigma/255) or off.",
        enum_values=["random_sigma", "fixed_sigma", "off"],
    )
    define_once(
        flags.DEFINE_float,
        "noise_sigma",
        2.0,
        "Noise scale of --noise in 8-bit levels (IDC: 2, i.e. 2/255).",
        lower_bound=0.0,
    )
    define_once(
        b,
        "cache",
        False,
        "Cache decoded training images in memory (about 5.5 MB per 1280x720 pair); every epoch "
        "keeps its own seeded shuffle, so a resumed run still sees the same batches.",
    )
    define_once(b, "pad_small", False, "Pad images smaller than the crop instead of failing.")
    define_once(
        i,
        "seed",
        0,
        "Random seed of the model initialisation and the data pipeline (epoch e uses "
        "seed + e, which makes resume batch-exact); -1: unseeded, and a resumed run then sees "
        "another shuffle and other crops from the resumed epoch on.",
    )
    define_once(s, "val_data_dir", None, "Validation data folder (default: --data_dir).")
    define_once(
        s,
        "val_split",
        "test",
        "Validation split. GoPro has no validation split: the default is a fixed subset "
        "of the test split (labelled as such); a missing split skips validation.",
    )
    define_once(
        i, "val_images", 20, "Validate on the first N images of the split (0 = all).", lower_bound=0
    )
    define_once(
        i, "val_crop", 0, "Centre crop for validation in pixels (0 = full size).", lower_bound=0
    )


def _define_schedule_flags():
    i, f = flags.DEFINE_integer, flags.DEFINE_float
    define_once(
        i, "epochs", 3000, "Training epochs (epoch = len(train set) // batch steps).", lower_bound=1
    )
    define_once(
        i,
        "max_steps",
        0,
        "Stop after this many steps; overrides --epochs (0 = off).",
        lower_bound=0,
    )
    define_once(f, "learning_rate", 1e-4, "Initial learning rate.", lower_bound=0.0)
    define_once(
        f, "adam_epsilon", 1e-8, "Adam epsilon (PyTorch default 1e-8; Keras 1e-7).", lower_bound=0.0
    )
    define_once(
        i, "val_every_epochs", 100, "Validate every N epochs (0 = only at the end).", lower_bound=0
    )
    define_once(
        i,
        "val_every_steps",
        0,
        "Validate every N steps; overrides --val_every_epochs.",
        lower_bound=0,
    )


def _define_run_flags():
    s, i, b = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool
    define_once(
        s,
        "model_kwargs",
        None,
        'Model constructor arguments as JSON, e.g. \'{"texture_input": "blur"}\' (IDC) or '
        "'{\"share_bottleneck_blocks\": true}' (Two-Way); keys are checked against the model. Keys "
        "with a flag of their own (num_res, base_channels, the paper switches) set that flag; a "
        "flag given on the command line must agree. Recorded in run_config.json.",
    )
    define_once(
        s, "run_dir", None, "Run directory (default runs/<model>); resumed if it holds checkpoints."
    )
    define_once(b, "resume", True, "Resume from the latest checkpoint in --run_dir.")
    define_once(
        i,
        "checkpoint_every",
        1000,
        "Checkpoint every N steps (0 = epoch ends only).",
        lower_bound=0,
    )
    define_once(b, "checkpoint_every_epoch", True, "Also checkpoint at every epoch end.")
    define_once(
        i,
        "keep_checkpoints",
        3,
        "Checkpoints kept in checkpoints/ (best/ is separate).",
        lower_bound=1,
    )
    define_once(
        i, "log_every", 50, "Progress line and TensorBoard scalars every N steps.", lower_bound=1
    )
    define_once(i, "summary_images", 2, "Validation images written to TensorBoard.", lower_bound=0)
    define_once(
        i,
        "bn_refresh_batches",
        0,
        "Before each validation and the final weights, re-estimate BatchNormalization statistics "
        "as the average over N training batches (0 = off: the moving averages of training).",
        lower_bound=0,
    )
    define_once(
        flags.DEFINE_enum,
        "strategy",
        "default",
        "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
        "multi_worker (cluster from TF_CONFIG).",
        enum_values=list(STRATEGIES),
    )
    define_precision_flag()
    define_once(
        flags.DEFINE_enum,
        "preset",
        "none",
        "quick: a small run that finishes in minutes on a laptop CPU.",
        enum_values=list(PRESETS),
    )


# --------------------------------------------------------------------------------------------------
# Flags -> TrainConfig, read once at a script's entry point
# --------------------------------------------------------------------------------------------------


def given_values(names) -> dict:
    """``{name: value}`` of the flags among ``names`` given on the command line."""
    return {name: FLAGS[name].value for name in names if name in FLAGS and FLAGS[name].present}


def train_config(paper_config, presets: dict, model_name) -> object:
    """The run's :class:`training.config.TrainConfig`: ``paper_config`` (the paper's recipe), the
    preset named by ``--preset`` (``presets[name]``: config -> config), the flags given on the
    command line, then ``--model_kwargs`` (checked against ``model_name(config)``'s constructor;
    keys that are recipe fields set them, and must agree with the same flag if it was given).
    Raises ``app.UsageError`` (one line)."""
    import config as config_lib

    given = given_values(config_lib.leaf_names(paper_config))
    preset = given.get("preset", paper_config.preset)
    config = presets[preset](paper_config) if preset in presets else paper_config
    config = config_lib.override(config, given)
    return _merge_model_kwargs(config, model_name(config), given)


def _merge_model_kwargs(config, model_name: str, given: dict):
    """``config`` with the recipe fields named in ``--model_kwargs`` set (module docstring)."""
    import dataclasses

    import config as config_lib

    try:
        kwargs = model_arguments.parse_json_kwargs(config.model_kwargs, "model_kwargs")
    except ConfigError as error:
        raise app.UsageError(str(error)) from None
    accepted = model_arguments.constructor_arguments(model_name)
    recipe = {field.name for field in dataclasses.fields(config.paper)}
    values = {}
    for key, value in kwargs.items():
        if key not in accepted:
            raise app.UsageError(
                f"--model_kwargs: {model_name} has no argument {key!r} "
                f"(its arguments: {', '.join(accepted)})."
            )
        if key in recipe:
            values[key] = _parsed_for_flag(key, value, given)
    return config_lib.override(config, values) if values else config


def _parsed_for_flag(name: str, value, given: dict):
    try:
        parsed = FLAGS[name].parser.parse(value)
    except (TypeError, ValueError) as error:
        raise app.UsageError(f"--model_kwargs: {name}={value!r} is not valid ({error}).") from None
    if name in given and given[name] != parsed:
        raise app.UsageError(
            f"--model_kwargs sets {name}={parsed!r} but --{name} is {given[name]!r}; give it once."
        )
    return parsed


def set_flag_defaults(config) -> None:
    """Shows ``config``'s values as the flags' defaults in ``--help`` (a script's ``__main__``
    only: defaults are never read, a run's values come from its config)."""
    import config as config_lib

    for name, value in config_lib.leaves(config):
        if name in FLAGS:
            FLAGS.set_default(name, value)


def run_training(script: str, argv, *, make_config, checks=(), build):
    """The body of every training script's ``main``.

    Args:
        script: the script's file name, the prefix of every message (``train_idc.py``).
        argv: ``main``'s argument list (anything after the program name is an error).
        make_config: ``() -> TrainConfig`` from the parsed flags (:func:`train_config`).
        checks: ``config -> None`` functions raising ``config.ConfigError`` or
            ``app.UsageError``; they run before TensorFlow is imported, so a bad setting fails in
            about a second (the data and run folders are checked after them).
        build: ``config -> Trainer``.

    Exits non-zero with one ``<script>: error: ...`` line (no traceback) on bad arguments or flags
    (``--model_kwargs`` included), data errors (a damaged file named, in the training or
    validation data), an unusable ``--run_dir`` or one holding another run, and a non-finite
    loss; 130 on Ctrl-C.
    """
    import cli
    import rundir
    from config import ConfigError
    from training import runner

    fail = f"{script}: error: {{}}".format
    if len(argv) > 1:
        sys.exit(fail(f"unexpected arguments: {' '.join(argv[1:])}"))
    try:
        config = make_config()
        for check in (*checks, runner.check_data_dir, runner.check_run_dir):
            check(config)
    except (app.UsageError, ConfigError) as error:
        sys.exit(fail(error))
    cli.import_tensorflow()  # after the checks: TensorFlow's start-up lines hidden
    import data
    from training.loop import NonFiniteLossError

    try:
        return build(config).run()
    except (data.DataError, ConfigError, rundir.RunDirError, app.UsageError) as error:
        sys.exit(fail(error))
    except NonFiniteLossError as error:
        sys.exit(f"{script}: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
