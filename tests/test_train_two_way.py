"""train_two_way.py and training/steps/two_way_step.py: every paper hyper-parameter is a default
(two_way.md 6), one step through the generic loop, bad flags, and a tiny trained run directory
read back by evaluate.py / export.py / deblur.py."""

import json

import numpy as np
import pytest
import tensorflow as tf

import losses
import train_two_way
from tests.train_checks import (
    adam_settings,
    assert_glorot_init,
    assert_weights_changed_and_finite,
    one_loop_step,
    parsed_flags,
    round_trip,
    run_command,
    run_main,
    write_split,
)
from training.steps.two_way_step import TwoWayTrainStep

TINY = {"base_channels": 4, "num_res": 1}
TINY_ARGS = ["--base_channels=4", "--num_res=1", "--crop_size=32", "--batch_size=2"]


def test_paper_defaults():
    """two_way.md section 6: batch 16, 256 crops, no flips, no noise, 4000 epochs, Adam lr 1e-4
    -> 0 (power 0.3) with epsilon 1e-8, both branches, 4x4 deconvolutions."""
    config = train_two_way.paper_config()
    train_two_way.check_config(config)
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert data.batch_size == 16 and data.crop_size == 256
    assert (data.hflip, data.vflip, data.rot90) == (False, False, False)
    assert data.noise == "off" and config.preset == "none"
    assert schedule.epochs == 4000 and schedule.max_steps == 0
    assert schedule.learning_rate == 1e-4 and recipe.lr_end == 0.0 and recipe.lr_power == 0.3
    assert schedule.adam_epsilon == 1e-8 and (recipe.base_channels, recipe.num_res) == (None, None)
    assert train_two_way.model_kwargs(config) == {"two_way": True, "deconv_kernel": 4}
    # 4000 epochs of the GoPro training split (131 steps each): 524,000 steps.
    step = train_two_way.make_step(config, steps_per_epoch=131, total_steps=4000 * 131)
    assert step.loss_kwargs == {"scale_weights": losses.TWO_WAY_SCALE_WEIGHTS}
    schedule = step.schedule.get_config()
    assert schedule["initial_learning_rate"] == 1e-4 and schedule["end_learning_rate"] == 0.0
    assert schedule["power"] == 0.3 and schedule["decay_steps"] == 524_000
    assert not schedule["cycle"]
    quick = train_two_way.quick(config)
    assert quick.preset == "quick" and quick.paper.num_res == 1 and quick.data.crop_size == 32
    assert quick.schedule.max_steps == 4000 and quick.schedule.learning_rate == 2e-3
    assert quick.data.batch_size == 4 and quick.data.val_images == 16
    train_two_way.check_config(quick)
    assert train_two_way.paper_config() == config  # a preset returns a new config


def test_ablation_flags_reach_the_model_and_preset_keeps_the_recipe():
    args = ("--notwo_way", "--deconv_kernel=3", "--preset=quick", "--max_steps=7")
    with parsed_flags("train_two_way.py", *args):
        config = train_two_way.config_from_flags()
    data, schedule = config.data, config.schedule
    assert schedule.max_steps == 7 and data.crop_size == 32 and config.paper.lr_end == 0.0
    assert schedule.learning_rate == 2e-3 and data.val_images == 16
    kwargs = train_two_way.model_kwargs(config)
    assert kwargs == {"two_way": False, "deconv_kernel": 3, "num_res": 1}
    with parsed_flags("train_two_way.py"):
        assert train_two_way.config_from_flags() == train_two_way.paper_config()


def test_model_kwargs_reach_share_bottleneck_blocks():
    args = ('--model_kwargs={"share_bottleneck_blocks": true, "num_res": 2}', "--notwo_way")
    with parsed_flags("train_two_way.py", *args):
        config = train_two_way.config_from_flags()
    train_two_way.check_config(config)
    assert config.paper.num_res == 2
    assert train_two_way.model_kwargs(config) == {
        "two_way": False,
        "deconv_kernel": 4,
        "num_res": 2,
        "share_bottleneck_blocks": True,
    }
    error = run_main(train_two_way, '--model_kwargs={"shared": true}')
    assert "two_way has no argument 'shared'" in error and "share_bottleneck_blocks" in error


def test_step_builds_the_paper_model_and_optimizer():
    step = TwoWayTrainStep(total_steps=100)
    step.build(tf.distribute.get_strategy())
    assert adam_settings(step.optimizer) == (0.9, 0.999, 1e-8)
    assert_glorot_init(step.model)
    assert step.describe()["parameters"] == 3_911_398
    # Keyed on the optimizer's iteration counter: power 0.3 down to 0 over the run, then held.
    for iteration, expected in ((0, 1e-4), (50, 1e-4 * 0.5**0.3), (100, 0.0), (150, 0.0)):
        step.optimizer.iterations.assign(iteration)
        assert float(step.optimizer.learning_rate) == pytest.approx(expected, rel=1e-5)


def test_one_step_through_the_loop_changes_weights(tmp_path):
    step = TwoWayTrainStep(total_steps=2, model_kwargs=TINY)
    before, trainer = one_loop_step(step, tmp_path, size=32)
    assert_weights_changed_and_finite(before, step.model)
    assert np.isfinite(trainer.last_values["loss"]) and "mse_2" in trainer.last_values
    assert int(step.optimizer.iterations.numpy()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop_size=40"], "multiple of 16"),
        (["--deconv_kernel=5"], "--deconv_kernel must be 4 or 3"),
        (["--noise=gaussian"], "random_sigma"),
        (["--learning_rate=-1"], "learning_rate"),
        (["--data_dir=/no/such/folder"], "/no/such/folder does not exist"),
        (["extra_argument"], "unexpected arguments"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    error = run_command(train_two_way, *args, f"--run_dir={tmp_path / 'run'}")  # in this process
    assert isinstance(error, str) and "\n" not in error, error
    assert error.startswith("train_two_way.py: error: ") and message in error, error
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tiny_run_dir_evaluates_exports_and_deblurs(tmp_path):
    data = write_split(tmp_path / "data", "train", 4, size=(40, 48))
    write_split(data, "test", 2, size=(50, 70), seed=1)  # sides not multiples of 16
    run = tmp_path / "run"
    args = [f"--data_dir={data}", f"--run_dir={run}", "--max_steps=2", "--val_images=2"]
    assert run_main(train_two_way, *args, *TINY_ARGS) == 0
    kwargs = {"two_way": True, "deconv_kernel": 4, **TINY}
    round_trip(run, data, tmp_path, "two_way", kwargs)
    recorded = json.loads((run / "run_config.json").read_text())["config"]
    assert recorded["paper"] == {
        "two_way": True,
        "deconv_kernel": 4,
        "base_channels": 4,
        "num_res": 1,
        "lr_end": 0.0,
        "lr_power": 0.3,
    }
