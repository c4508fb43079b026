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
``rundir.py`` (run_config.json with "model": "sen", "model_kwargs", "u_max", "stage", "config";
checkpoints/, best/, tensorboard/, final.weights.h5).
"""

from __future__ import annotations

import dataclasses

from absl import flags

import cli
from cli import train_flags
from training import runner, sen_run
from training.config import DataConfig, ScheduleConfig, TrainConfig, replace

QUARTER_MULTIPLE = 4  # sen_output="quarter": the label is averaged over 4x4 blocks


@dataclasses.dataclass(frozen=True)
class SenRecipe:
    """SEN's own settings (sen_rpgan.md section 5), stage 1's values. ``dilation_rates`` holds the
    flag's values (strings; integers when ``model_kwargs`` or the stage-1 run gives them), read by
    :func:`training.sen_run.dilation_rates`. ``init_from``: stage 2's stage-1 run folder."""

    stage: int = 1
    u_max: int = 46  # the model the deblurring pipeline uses (register #10)
    init_from: str | None = None
    sen_joint_finetune: bool = False  # stack 1 frozen in stage 2 (register #9)
    sen_skips: str = "concat"  # register #4
    sen_output: str = "full"  # x4 up-sampled output, loss at full resolution (register #3)
    dilation_rates: list = dataclasses.field(default_factory=lambda: ["2", "2", "2"])
    width_divisor: int = 1
    lr_end: float = 1.25e-5  # stage 1: 1.25e-3 for 50 epochs, then linear to 1.25e-5 over 40
    lr_hold_epochs: int = 50
    lr_decay_epochs: int = 40
    adam_beta_1: float = 0.9  # Adam with PyTorch's formula, betas 0.9 / 0.99
    adam_beta_2: float = 0.99


def paper_config(stage: int = 1) -> TrainConfig:
    """The recipe (sen_rpgan.md section 5) of ``stage``: batch 16, 256x256 crops (the samples are
    exactly 256x256: the crop is the whole sample), no flips, rotations or noise (register #27: a
    flipped image has another flow), Adam epsilon 1e-8; stage 1 is 90 epochs at 1.25e-3 for 50,
    then linear to 1.25e-5 (:func:`stage2` for stage 2). Validation every 5 epochs (paper silent)
    on 20 images."""
    config = TrainConfig(
        paper=SenRecipe(),
        data=DataConfig(
            batch_size=16, crop_size=256, hflip=False, vflip=False, rot90=False, noise="off"
        ),
        schedule=ScheduleConfig(
            epochs=90, max_steps=0, learning_rate=1.25e-3, adam_epsilon=1e-8, val_every_epochs=5
        ),
    )
    return stage2(config) if stage == 2 else config


def stage2(config: TrainConfig) -> TrainConfig:
    """Stage 2: stack 2 (or both, ``sen_joint_finetune``) for 15 epochs at a constant 1.25e-5."""
    return replace(
        config,
        stage=2,
        epochs=15,
        learning_rate=1.25e-5,
        lr_end=1.25e-5,
        lr_hold_epochs=15,
        lr_decay_epochs=0,
    )


def quick(config: TrainConfig) -> TrainConfig:
    """--preset quick: stage 1 of a one-stack SEN at 1/8 width (604,483 parameters) on 128-px
    crops of the small flow-23 set of :func:`data.default_data.default_flow_dir` (1,200 + 200
    examples), batch 8, 12 epochs of 150 steps, 5e-4 for 6 epochs then linear to 1e-5, validation
    on all 200 test images with the batch-norm statistics re-estimated over 100 training batches
    before each validation and the final weights (``bn_refresh_batches``; the run ends with the
    test flow MSE).

    Issue 22 (docs/sen_rpgan.md, "quick preset: seeds"): at a 2e-3 peak the run sat at the
    training-mean flow (91.78) for its first third and ended at 54.22, 65.24 or 84.72 depending
    on the machine; at 1e-3 seeds 0-3 ended at 54.08 / 58.93 / 55.52 / 66.21 (42.98 / 53.02 /
    53.90 / 64.51 with the statistics re-estimated); at 5e-4 with them, today's preset, at
    **52.90 / 59.33 / 55.63 / 46.89** (the same 1,800 steps; 4 min 19 s alone with the set
    cached before the three refreshes were added, plus 4 min generating the set once).

    Stage 2 (``--stage 2 --init_from <that run> --preset quick``): 4 epochs, 1e-3 for 2 then
    linear to 1e-5 (the paper's 1.25e-5 barely moves a fresh stack in 600 steps); 3 min 32 s,
    test MSE 49.68 (after the 2e-3 stage-1 run)."""
    config = replace(
        config,
        preset="quick",
        u_max=23,
        width_divisor=8,
        batch_size=8,
        crop_size=128,
        epochs=12,
        learning_rate=5e-4,
        lr_end=1e-5,
        lr_hold_epochs=6,
        lr_decay_epochs=6,
        val_images=0,
        val_every_epochs=4,
        checkpoint_every=300,
        log_every=25,
        summary_images=2,
        bn_refresh_batches=100,
    )
    if config.paper.stage != 2:
        return config
    return replace(
        config, epochs=4, learning_rate=1e-3, lr_end=1e-5, lr_hold_epochs=2, lr_decay_epochs=2
    )


PRESETS = {"quick": quick}


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


def config_from_flags() -> TrainConfig:
    """The run's configuration: the recipe of ``--stage``, ``--preset``, the given flags,
    ``--model_kwargs``, then in stage 2 the model switches and ``--u_max`` of the stage-1 run
    (:func:`training.sen_run.inherit_stage1`; a given value that differs is an error)."""
    given = train_flags.given_values(("stage", "u_max", *sen_run.MODEL_FLAG_KEYS))
    recipe = paper_config(given.get("stage", 1))
    config = train_flags.train_config(recipe, PRESETS, model_name=_model_name)
    return sen_run.inherit_stage1(config, given)


def _model_name(config: TrainConfig) -> str:
    sen_run.check_stage(config)  # before --model_kwargs is read: these messages come first
    return "sen"


def check_config(config: TrainConfig) -> None:
    """Checks across settings that the flag parser cannot do; raises ConfigError."""
    sen_run.check_stage(config)
    for name in ("hflip", "vflip", "rot90"):
        if getattr(config.data, name):
            raise runner.ConfigError(
                f"--{name}: SEN trains without augmentation (a flipped or rotated image has "
                "another flow; register #27)."
            )
    if config.data.noise != "off":
        raise runner.ConfigError("--noise: SEN trains without noise (sen_rpgan.md section 5).")
    sen_run.dilation_rates(config)
    if config.paper.sen_output == "quarter":
        runner.check_crop_size(config, QUARTER_MULTIPLE, "sen_output=quarter, 4x4 label blocks")
    runner.check_decay(config)
    runner.check_adam_betas(config)
    sen_run.check_flow_set(config)


def model_kwargs(config: TrainConfig) -> dict:
    """``models.build_flow_estimator("sen", ...)`` overrides without ``num_stacks`` (the stage's):
    the switches always (run_config.json states them) and the other ``model_kwargs``."""
    recipe = config.paper
    return {
        "sen_skips": recipe.sen_skips,
        "sen_output": recipe.sen_output,
        "dilation_rates": sen_run.dilation_rates(config),
        "width_divisor": recipe.width_divisor,
        **runner.extra_model_kwargs(config),
    }


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """The stage's learning rate: hold, then linear decay, per update (``HoldThenLinearDecay``);
    returns (schedule, one line for the run summary)."""
    from training import schedules

    recipe, rate = config.paper, config.schedule.learning_rate
    hold, decay = recipe.lr_hold_epochs * steps_per_epoch, recipe.lr_decay_epochs * steps_per_epoch
    schedule = schedules.HoldThenLinearDecay(rate, recipe.lr_end, hold, decay)
    text = f"{rate:g} for {recipe.lr_hold_epochs} epochs ({hold} steps)"
    if decay:
        text += f", then linear to {recipe.lr_end:g} over {recipe.lr_decay_epochs} ({decay} steps)"
    return schedule, f"{text}; {steps_per_epoch} steps/epoch"


def make_step(config: TrainConfig, steps_per_epoch, total_steps):
    """The SEN step object of ``config``'s stage (sen_rpgan.md section 5)."""
    from training.steps.sen_step import SENTrainStep

    del total_steps  # the schedule is in epochs
    recipe = config.paper
    schedule, text = make_schedule(config, steps_per_epoch)
    return SENTrainStep(
        stage=recipe.stage,
        schedule=schedule,
        model_kwargs=model_kwargs(config),
        init_weights=sen_run.stage1_weights(config),
        joint_finetune=recipe.sen_joint_finetune,
        beta_1=recipe.adam_beta_1,
        beta_2=recipe.adam_beta_2,
        epsilon=config.schedule.adam_epsilon,
        u_max=recipe.u_max,
        schedule_text=text,
    )


def build_trainer(config: TrainConfig, out=None):
    """``config`` -> Trainer (:func:`training.runner.build_trainer` on the flow set)."""
    from training import flow_inputs

    return runner.build_trainer(
        config,
        lambda **sizes: make_step(config, **sizes),
        default_run_dir=f"runs/sen{config.paper.u_max}_stage{config.paper.stage}",
        out=out,
        data_factory=flow_inputs.flow_data,
    )


def main(argv):
    train_flags.run_training(
        "train_sen.py",
        argv,
        make_config=config_from_flags,
        checks=(check_config,),
        build=build_trainer,
    )


if __name__ == "__main__":
    train_flags.set_flag_defaults(paper_config())  # so that --help shows this paper's defaults
    cli.run(main)
