"""Train SEN, the motion-flow estimator of the blind deblurring framework (Wu et al.), in 2 stages.

Defaults are the paper's recipe as resolved by sen_rpgan.md section 5: loss eq. 1 (flow MSE at full
resolution against the ``uv_half`` label), Adam (PyTorch's formula, betas 0.9 / 0.99, epsilon 1e-8),
batch 16, 256x256 crops (the synthetic samples are exactly 256x256), no flips or noise. One epoch
is ``len(training set) // batch`` steps: 625 on the paper-size flow sets (10,000 / 16).

* ``--stage 1`` trains a one-stack SEN: lr 1.25e-3 for 50 epochs, then linear to 1.25e-5 over 40
  (90 epochs).
* ``--stage 2 --init_from STAGE1_RUN`` builds the two-stack SEN, copies stack 1 from the stage-1
  run's ``final.weights.h5`` and trains stack 2 for 15 epochs at 1.25e-5 with stack 1 frozen
  (register #9); ``--sen_joint_finetune`` trains both stacks. The model switches and ``--u_max``
  are taken from the stage-1 run (giving another value is an error).

``--u_max 23|46`` picks the data set: ``<--data_dir>/flow-23`` or ``flow-46`` (make them with
``python -m data.make_synthetic --kind flow``), or without ``--data_dir`` the small flow set of
:func:`data.default_data.default_flow_dir` (generated on first use). Examples:

    python train_sen.py --preset quick --run_dir runs/sen_quick            # CPU, < 25 min
    python train_sen.py --data_dir /data/flow --u_max 46 --run_dir runs/sen46_s1
    python train_sen.py --data_dir /data/flow --stage 2 --init_from runs/sen46_s1 \\
        --run_dir runs/sen46

Validation measures the flow MSE (lower is better; ``best/`` keeps the lowest) against the zero-flow
and training-mean-flow baselines. Rerunning a command with the same --run_dir resumes it. Outputs:
``training/__init__.py`` (run_config.json with "model": "sen", "model_kwargs", "u_max", "stage";
checkpoints/, best/, tensorboard/, final.weights.h5).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

import cli
import rundir
from cli import train_flags
from training import script

FLAGS = flags.FLAGS
# Constructor arguments of SEN with a flag here (--model_kwargs sets them through it); upsampling,
# res2_skip and init come from --model_kwargs only; num_stacks is the stage's.
MODEL_FLAG_KEYS = ("sen_skips", "sen_output", "dilation_rates", "width_divisor")
PAPER_FLAGS = [
    "stage",
    "u_max",
    "init_from",
    "sen_joint_finetune",
    *MODEL_FLAG_KEYS,
    "lr_end",
    "lr_hold_epochs",
    "lr_decay_epochs",
    "adam_beta_1",
    "adam_beta_2",
]
U_MAX_CHOICES = (23, 46)
QUARTER_MULTIPLE = 4  # sen_output="quarter": the label is averaged over 4x4 blocks

# The recipe (sen_rpgan.md section 5), restated in full so that another paper's script imported in
# the same process cannot change what this script runs. Stage-specific values follow.
PAPER_DEFAULTS = {
    "u_max": 46,  # the model the deblurring pipeline uses (register #10)
    "batch_size": 16,
    "crop_size": 256,  # the samples are exactly 256x256: the crop is the whole sample
    "hflip": False,  # no augmentation (register #27: a flipped image has another flow)
    "vflip": False,
    "rot90": False,
    "noise": "off",
    "max_steps": 0,
    "adam_epsilon": 1e-8,
    "adam_beta_1": 0.9,
    "adam_beta_2": 0.99,
    "val_every_epochs": 5,  # paper silent
    "val_images": 20,
    "sen_skips": "concat",
    "sen_output": "full",
    "dilation_rates": ["2", "2", "2"],
    "width_divisor": 1,
}
STAGE_DEFAULTS = {
    1: {
        "epochs": 90,
        "learning_rate": 1.25e-3,
        "lr_end": 1.25e-5,
        "lr_hold_epochs": 50,
        "lr_decay_epochs": 40,
    },
    2: {  # stack 2 (or both, --sen_joint_finetune) at a constant 1.25e-5
        "epochs": 15,
        "learning_rate": 1.25e-5,
        "lr_end": 1.25e-5,
        "lr_hold_epochs": 15,
        "lr_decay_epochs": 0,
    },
}
# --preset quick: stage 1 of a one-stack SEN at 1/8 width (604,483 parameters) on 128-px crops of
# the small flow-23 set of data.default_data.default_flow_dir (1,200 + 200 examples), batch 8, 12
# epochs of 150 steps, 2e-3 for 6 epochs then linear to 2e-5, validation on all 200 test images.
# Measured on the shared 2-core machine from an empty data cache: 12 min 07 s in all (3 min 52 s of
# data generation); test flow MSE 54.22 against 139.55 (zero flow) and 91.78 (training-mean flow).
# Stage 2 (--stage 2 --init_from <that run> --preset quick): 4 epochs, 1e-3 for 2 then linear to
# 1e-5 (the paper's 1.25e-5 barely moves a fresh stack in 600 steps); 3 min 32 s, test MSE 49.68.
QUICK_PRESET = {
    "u_max": 23,
    "width_divisor": 8,
    "batch_size": 8,
    "crop_size": 128,
    "epochs": 12,
    "learning_rate": 2e-3,
    "lr_end": 2e-5,
    "lr_hold_epochs": 6,
    "lr_decay_epochs": 6,
    "val_images": 0,  # all 200 test images: the run ends with the test flow MSE
    "val_every_epochs": 4,
    "checkpoint_every": 300,
    "log_every": 25,
    "summary_images": 2,
}
QUICK_STAGE2 = {
    "epochs": 4,
    "learning_rate": 1e-3,
    "lr_end": 1e-5,
    "lr_hold_epochs": 2,
    "lr_decay_epochs": 2,
}


def _define_flags():
    d = train_flags.define_once
    d(flags.DEFINE_integer, "stage", 1, "1: train stack 1 (a one-stack SEN); 2: stack 2.")
    d(
        flags.DEFINE_integer,
        "u_max",
        46,
        "Flow bound of the data set: 23 or 46 (flow-23 / flow-46 under --data_dir; 46 is the "
        "model the deblurring pipeline uses, register #10).",
    )
    d(
        flags.DEFINE_string,
        "init_from",
        None,
        "Stage 2: the stage-1 run folder whose final.weights.h5 gives stack 1.",
    )
    d(
        flags.DEFINE_bool,
        "sen_joint_finetune",
        False,
        "Stage 2: train both stacks (register #9's alternative) instead of freezing stack 1.",
    )
    d(
        flags.DEFINE_enum,
        "sen_skips",
        "concat",
        "Decoder skips: concat (register #4) or none.",
        enum_values=["concat", "none"],
    )
    d(
        flags.DEFINE_enum,
        "sen_output",
        "full",
        "Loss resolution: full (x4 up-sampled output, register #3) or quarter (H/4 output "
        "against the 4x4-box-averaged label).",
        enum_values=["full", "quarter"],
    )
    d(flags.DEFINE_list, "dilation_rates", ["2", "2", "2"], "Rates of the 3 dilated front layers.")
    d(flags.DEFINE_integer, "width_divisor", 1, "Divide every width (tests).", lower_bound=1)
    d(flags.DEFINE_float, "lr_end", 0.0, "Final learning rate of the decay.", lower_bound=0.0)
    d(flags.DEFINE_integer, "lr_hold_epochs", 50, "Epochs at --learning_rate.", lower_bound=0)
    d(flags.DEFINE_integer, "lr_decay_epochs", 40, "Epochs of linear decay.", lower_bound=0)
    train_flags.define_adam_beta_flags(0.9, 0.99, "Adam beta1.", "Adam beta2.")


train_flags.define_common_flags()
_define_flags()
# The shared flags are defined in cli/train_flags.py: make them this script's key flags for --help.
flags.adopt_module_key_flags(train_flags)


def apply_flag_defaults():
    """Paper defaults, the stage's, then the preset; flags given on the command line win."""
    train_flags.apply_defaults(PAPER_DEFAULTS)
    stage = FLAGS.stage if FLAGS.stage in STAGE_DEFAULTS else 1
    train_flags.apply_defaults(STAGE_DEFAULTS[stage])
    if FLAGS.preset == "quick":
        train_flags.apply_defaults(QUICK_PRESET)
        if stage == 2:
            train_flags.apply_defaults(QUICK_STAGE2)


def check_stage_flags():
    """--stage / --init_from / --sen_joint_finetune / --u_max / --num_stacks consistency."""
    if FLAGS.stage not in (1, 2):
        raise app.UsageError(f"--stage must be 1 or 2, got {FLAGS.stage}.")
    if FLAGS.stage == 1 and FLAGS.init_from:
        raise app.UsageError("--init_from is for --stage 2 (stage 1 starts from scratch).")
    if FLAGS.stage == 1 and FLAGS.sen_joint_finetune:
        raise app.UsageError("--sen_joint_finetune is for --stage 2.")
    if FLAGS.stage == 2 and not FLAGS.init_from:
        raise app.UsageError("--stage 2 needs --init_from STAGE1_RUN_DIR (stack 1's weights).")
    if FLAGS.u_max not in U_MAX_CHOICES:
        raise app.UsageError(f"--u_max must be 23 or 46, got {FLAGS.u_max}.")
    if "num_stacks" in train_flags.parse_model_kwargs(FLAGS.model_kwargs):
        raise app.UsageError("--model_kwargs: num_stacks is set by --stage (1 or 2).")


def read_stage1_run(run):
    """``(run_config, final weights path)`` of a finished stage-1 SEN run; ``app.UsageError``
    (one line naming the folder) otherwise."""
    what = f"--init_from {run}"
    if not os.path.isdir(run):
        raise app.UsageError(f"{what}: no such run folder.")
    if not os.path.isfile(rundir.run_config_path(run)):
        raise app.UsageError(f"{what}: no {rundir.RUN_CONFIG} (not a train_sen.py run).")
    try:
        config = rundir.read_json(rundir.run_config_path(run))
    except rundir.RunDirError as error:
        raise app.UsageError(f"{what}: cannot read {rundir.RUN_CONFIG} ({error}).") from None
    config = config if isinstance(config, dict) else {}
    kwargs = config.get("model_kwargs")
    if config.get("model") != "sen" or not isinstance(kwargs, dict):
        raise app.UsageError(f"{what}: not a SEN run (model {config.get('model')!r}).")
    if config.get("stage") != 1 or kwargs.get("num_stacks") != 1:
        raise app.UsageError(f"{what}: not a stage-1 SEN run (stage {config.get('stage')!r}).")
    weights = rundir.final_weights_path(run)
    if not os.path.isfile(weights):
        raise app.UsageError(f"{what}: no {rundir.FINAL_WEIGHTS} (has the stage-1 run finished?).")
    return config, weights


def inherit_stage1():
    """Stage 2: the model switches and --u_max of the stage-1 run; a value given on the command
    line (or in --model_kwargs) that differs is an error naming it."""
    if FLAGS.stage != 2:
        return
    run = FLAGS.init_from
    config, _ = read_stage1_run(run)
    recorded = {k: v for k, v in config["model_kwargs"].items() if k != "num_stacks"}
    given = train_flags.parse_model_kwargs(FLAGS.model_kwargs)
    for key, value in recorded.items():
        if key in MODEL_FLAG_KEYS:
            if key in given:
                mine = given[key]
            elif FLAGS[key].present:
                mine = FLAGS[key].value
            else:
                FLAGS[key].value = value
                continue
        else:
            mine = given.setdefault(key, value)
        _same_as_stage1(key, mine, value, run)
    unknown = sorted(set(given) - set(recorded))
    if unknown:
        key = unknown[0]
        raise app.UsageError(
            f"--model_kwargs: {key}={given[key]!r}, but the stage-1 run {run} used the model's "
            "default; stage 2 takes the stage-1 model's switches."
        )
    FLAGS.model_kwargs = json.dumps(given) if given else None
    u_max = config.get("u_max")
    if FLAGS["u_max"].present and u_max is not None and FLAGS.u_max != u_max:
        raise app.UsageError(f"--u_max {FLAGS.u_max}, but the stage-1 run {run} used {u_max}.")
    if u_max is not None:
        FLAGS.u_max = int(u_max)


def _same_as_stage1(key, mine, recorded, run):
    if _normal(key, mine) != _normal(key, recorded):
        raise app.UsageError(
            f"{key}={mine!r} differs from the stage-1 run {run} ({key}={recorded!r}); stage 2 "
            "takes the stage-1 model's switches (leave it out)."
        )


def _normal(key, value):
    return [int(v) for v in value] if key == "dilation_rates" else value


def apply_model_kwargs():
    """``--model_kwargs`` checked against SEN; keys with a flag set that flag."""
    script.apply_model_kwargs("sen", MODEL_FLAG_KEYS)


def check_flags():
    """Cross-flag checks the flag parser cannot do; raises app.UsageError."""
    for name in ("hflip", "vflip", "rot90"):
        if FLAGS[name].value:
            raise app.UsageError(
                f"--{name}: SEN trains without augmentation (a flipped or rotated image has "
                "another flow; register #27)."
            )
    if FLAGS.noise != "off":
        raise app.UsageError("--noise: SEN trains without noise (sen_rpgan.md section 5).")
    try:
        rates = dilation_rates()
    except ValueError:
        raise app.UsageError(
            f"--dilation_rates must be 3 integers >= 1, got {FLAGS.dilation_rates}."
        ) from None
    if len(rates) != 3 or min(rates) < 1:
        raise app.UsageError(f"--dilation_rates must be 3 integers >= 1, got {rates}.")
    if FLAGS.sen_output == "quarter":
        script.check_crop_size(QUARTER_MULTIPLE, "sen_output=quarter, 4x4 label blocks")
    script.check_decay_flags()
    train_flags.check_adam_betas()
    if FLAGS.data_dir and os.path.isdir(FLAGS.data_dir) and not os.path.isdir(flow_root()):
        raise app.UsageError(
            f"--data_dir {FLAGS.data_dir} has no flow-{FLAGS.u_max} folder (the --u_max "
            f"{FLAGS.u_max} set; make it with `python -m data.make_synthetic --kind flow`)."
        )


def dilation_rates():
    return [int(v) for v in FLAGS.dilation_rates]


def model_kwargs():
    """``models.build_flow_estimator("sen", ...)`` overrides without ``num_stacks`` (the stage's):
    the switches always (run_config.json states them) and the other ``--model_kwargs``."""
    return {
        "sen_skips": FLAGS.sen_skips,
        "sen_output": FLAGS.sen_output,
        "dilation_rates": dilation_rates(),
        "width_divisor": FLAGS.width_divisor,
        **script.extra_model_kwargs(MODEL_FLAG_KEYS),
    }


def flow_root():
    """The flow set: ``<--data_dir>/flow-<u_max>``, or the small default set (generated on first
    use) without ``--data_dir``."""
    if FLAGS.data_dir:
        return os.path.join(FLAGS.data_dir, f"flow-{FLAGS.u_max}")
    from data import default_data

    return default_data.default_flow_dir(FLAGS.u_max)  # logs where it generates on first use


def flow_data():
    """The flow training set, its per-epoch datasets and the lazy validation set."""
    from data import flow_pipeline
    from training import flow_inputs

    root = flow_root()
    examples = flow_inputs.train_examples(root)
    mean = flow_pipeline.mean_flow(root, "train")
    return script.TrainingData(
        size=len(examples),
        epoch_datasets=flow_inputs.epoch_dataset_fn(
            root, batch_size=FLAGS.batch_size, crop_size=FLAGS.crop_size, seed=FLAGS.seed
        ),
        validation=lambda: flow_inputs.load_validation(
            FLAGS.val_data_dir or root,
            split=FLAGS.val_split,
            num_images=FLAGS.val_images,
            crop=FLAGS.val_crop,
            mean_flow=mean,
            explicit_dir=bool(FLAGS.val_data_dir),
        ),
        description={
            "train": root,
            "train_examples": len(examples),
            "training_mean_flow": [round(float(x), 6) for x in mean],
        },
        unit="examples",
    )


def make_schedule(steps_per_epoch):
    """The stage's learning rate: hold, then linear decay, per update (``HoldThenLinearDecay``)."""
    from training import schedules

    hold, decay = FLAGS.lr_hold_epochs * steps_per_epoch, FLAGS.lr_decay_epochs * steps_per_epoch
    schedule = schedules.HoldThenLinearDecay(FLAGS.learning_rate, FLAGS.lr_end, hold, decay)
    text = f"{FLAGS.learning_rate:g} for {FLAGS.lr_hold_epochs} epochs ({hold} steps)"
    if decay:
        text += f", then linear to {FLAGS.lr_end:g} over {FLAGS.lr_decay_epochs} ({decay} steps)"
    return schedule, f"{text}; {steps_per_epoch} steps/epoch"


def make_step(steps_per_epoch, total_steps):
    """The SEN step object of ``--stage`` from the flags (sen_rpgan.md section 5)."""
    from training.sen_step import SENTrainStep

    del total_steps  # the schedule is in epochs
    schedule, text = make_schedule(steps_per_epoch)
    init = rundir.final_weights_path(FLAGS.init_from) if FLAGS.stage == 2 else None
    return SENTrainStep(
        stage=FLAGS.stage,
        schedule=schedule,
        model_kwargs=model_kwargs(),
        init_weights=init,
        joint_finetune=FLAGS.sen_joint_finetune,
        beta_1=FLAGS.adam_beta_1,
        beta_2=FLAGS.adam_beta_2,
        epsilon=FLAGS.adam_epsilon,
        u_max=FLAGS.u_max,
        schedule_text=text,
    )


def build_trainer(out=None):
    """Flags -> Trainer (the shared flow of :func:`training.script.build_trainer`)."""
    return script.build_trainer(
        make_step,
        paper_flags=PAPER_FLAGS,
        default_run_dir=f"runs/sen{FLAGS.u_max}_stage{FLAGS.stage}",
        out=out,
        data_factory=flow_data,
    )


def main(argv):
    # Before TensorFlow loads: bad flags fail fast.
    prepare = (
        apply_flag_defaults,
        check_stage_flags,
        inherit_stage1,
        apply_model_kwargs,
        check_flags,
    )
    script.run_main("train_sen.py", argv, prepare=prepare, build=build_trainer)


if __name__ == "__main__":
    train_flags.apply_defaults(PAPER_DEFAULTS)  # so that --help shows this paper's defaults
    train_flags.apply_defaults(STAGE_DEFAULTS[1])
    cli.run(main)
