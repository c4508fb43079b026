"""train_idc.py and training/steps/idc_step.py: every paper hyper-parameter is a default (idc.md
7-8), one step through the generic loop, the noise in the pipeline, bad flags, and a tiny trained
run directory read back by evaluate.py / export.py / deblur.py."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf

import losses
import train_idc
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
from training import inputs
from training.config import replace
from training.steps.idc_step import IdcTrainStep

TINY = {"base_channels": 4, "num_res": 1}
TINY_ARGS = ["--base_channels=4", "--num_res=1", "--crop_size=48", "--batch_size=2"]


def test_paper_defaults():
    """idc.md sections 7-8: batch 16, 256 crops without flips, noise |N(0, (2/255)^2)|, 1000
    epochs, Adam lr 1e-4 -> 1e-6 (power 0.3) with epsilon 1e-8, the paper's model switches."""
    config = train_idc.paper_config()
    train_idc.check_config(config)
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert data.batch_size == 16 and data.crop_size == 256
    assert (data.hflip, data.vflip, data.rot90) == (False, False, False)
    assert data.noise == "random_sigma" and data.noise_sigma == 2.0
    assert schedule.epochs == 1000 and schedule.max_steps == 0
    assert schedule.learning_rate == 1e-4 and recipe.lr_end == 1e-6 and recipe.lr_power == 0.3
    assert schedule.adam_epsilon == 1e-8 and config.preset == "none"
    assert (recipe.decoder_reading, recipe.use_texture, recipe.n_scales) == ("literal", True, 3)
    assert recipe.grad_loss_norm == "l1" and (recipe.base_channels, recipe.num_res) == (None, None)
    assert train_idc.model_kwargs(config) == {
        "decoder_reading": "literal",
        "use_texture": True,
        "n_scales": 3,
    }
    # 1000 epochs of the GoPro training split (2103 pairs // 16 = 131 steps): 131,000 steps.
    step = train_idc.make_step(config, steps_per_epoch=131, total_steps=1000 * 131)
    assert step.loss_kwargs == {
        "ssim_weight": losses.IDC_SSIM_WEIGHT,
        "grad_weight": losses.IDC_GRAD_WEIGHT,
        "grad_loss_norm": "l1",
    }
    schedule = step.schedule.get_config()
    assert schedule["initial_learning_rate"] == 1e-4 and schedule["end_learning_rate"] == 1e-6
    assert schedule["power"] == 0.3 and schedule["decay_steps"] == 131_000
    assert not schedule["cycle"]


def test_quick_preset_changes_only_its_settings():
    config = train_idc.paper_config()
    quick = train_idc.quick(config)
    assert quick.preset == "quick"
    assert quick.paper == replace(config, base_channels=8, num_res=1).paper
    assert quick.data.crop_size == 48 and quick.data.batch_size == 4 and quick.data.val_images == 16
    assert quick.schedule.max_steps == 3000 and quick.schedule.learning_rate == 1e-3
    assert quick.data.noise == "random_sigma" and quick.data.hflip is False  # the recipe otherwise
    train_idc.check_config(quick)
    assert train_idc.paper_config() == config  # a preset returns a new config


def test_command_line_and_quick_preset_win_over_paper_defaults():
    """The command line over the preset over the recipe; no flag given is the recipe itself."""
    with parsed_flags("train_idc.py", "--batch_size=8", "--noise=off", "--preset=quick"):
        config = train_idc.config_from_flags()
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert data.batch_size == 8 and data.noise == "off"  # given: kept
    assert data.crop_size == 48 and schedule.max_steps == 3000 and recipe.base_channels == 8
    assert schedule.learning_rate == 1e-3 and recipe.num_res == 1 and data.val_images == 16
    assert recipe.lr_end == 1e-6 and data.hflip is False  # the recipe otherwise
    with parsed_flags("train_idc.py"):
        assert train_idc.config_from_flags() == train_idc.paper_config()


def test_step_builds_the_paper_model_and_optimizer():
    step = IdcTrainStep(total_steps=100)
    step.build(tf.distribute.get_strategy())
    assert adam_settings(step.optimizer) == (0.9, 0.999, 1e-8)
    assert_glorot_init(step.model)
    assert step.describe()["parameters"] == 6_082_819
    # The rate follows the optimizer's iteration counter (saved in every checkpoint): decays
    # over the run with power 0.3, then is held at 1e-6.
    for iteration, expected in ((0, 1e-4), (50, (1e-4 - 1e-6) * 0.5**0.3 + 1e-6), (100, 1e-6)):
        step.optimizer.iterations.assign(iteration)
        assert float(step.optimizer.learning_rate) == pytest.approx(expected, rel=1e-5)
    step.optimizer.iterations.assign(1000)
    assert float(step.optimizer.learning_rate) == pytest.approx(1e-6)


def test_resume_restores_the_schedule_position(tmp_path):
    # The schedule has no state of its own: restoring the optimizer's counter restores the rate.
    step = IdcTrainStep(total_steps=100, model_kwargs=TINY)
    step.build(tf.distribute.get_strategy())
    step.optimizer.iterations.assign(37)
    path = tf.train.Checkpoint(optimizer=step.optimizer).save(str(tmp_path / "ckpt"))
    resumed = IdcTrainStep(total_steps=100, model_kwargs=TINY)
    resumed.build(tf.distribute.get_strategy())
    tf.train.Checkpoint(optimizer=resumed.optimizer).restore(path).expect_partial()
    assert int(resumed.optimizer.iterations.numpy()) == 37
    expected = (1e-4 - 1e-6) * (1 - 37 / 100) ** 0.3 + 1e-6
    assert float(resumed.optimizer.learning_rate) == pytest.approx(expected, rel=1e-5)


def test_one_step_through_the_loop_changes_weights(tmp_path):
    step = IdcTrainStep(total_steps=2, model_kwargs=TINY, grad_loss_norm="l2")
    before, trainer = one_loop_step(step, tmp_path)
    assert_weights_changed_and_finite(before, step.model)
    values = trainer.last_values
    assert np.isfinite(values["loss"]) and {"mse_2", "ssim_loss_2", "grad_2"} <= set(values)
    assert int(step.optimizer.iterations.numpy()) == 2


def test_noise_reaches_the_blurred_training_input_only(tmp_path):
    source = inputs.open_train_source(str(write_split(tmp_path, "train", 4)))

    def first_batch(noise):
        make = inputs.epoch_dataset_fn(
            source, batch_size=4, crop_size=32, hflip=False, noise=noise, seed=1
        )
        return next(iter(make(0)))

    clean_blur, clean_sharp = first_batch("off")
    noisy_blur, noisy_sharp = first_batch("random_sigma")
    np.testing.assert_array_equal(noisy_sharp, clean_sharp)
    noise = (noisy_blur - clean_blur).numpy()
    sigmas = noise.reshape(4, -1).std(axis=1)
    assert (sigmas > 0).all() and sigmas.max() < 8 / 255  # |N(0, (2/255)^2)|, per image
    assert len(set(np.round(sigmas, 6))) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--crop_size=40"], "multiple of 16"),
        (["--crop_size=32"], "at least 44"),
        (["--n_scales=2"], "--n_scales must be 3"),
        (["--n_scales=1", "--crop_size=10"], "multiple of 4"),
        (["--noise=gaussian"], "random_sigma"),
        (["--decoder_reading=table"], "literal"),
        (["--grad_loss_norm=l3"], "l1"),
        (["--learning_rate=1e-7"], "below --lr_end"),
        (["--data_dir=/no/such/folder"], "/no/such/folder does not exist"),
        (["extra_argument"], "unexpected arguments"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    error = run_command(train_idc, *args, f"--run_dir={tmp_path / 'run'}")  # in this process
    assert isinstance(error, str) and "\n" not in error, error
    assert error.startswith("train_idc.py: error: ") and message in error, error
    assert not (tmp_path / "run").exists()


def test_model_kwargs_reach_the_switches_without_a_flag():
    """--model_kwargs reaches texture_input, stop_gradient, pyramid_mode; a key with a flag
    (n_scales) sets the recipe's field, so the crop check uses it too."""
    extra = {"texture_input": "blur", "stop_gradient": False, "pyramid_mode": "direct"}
    text = json.dumps({**extra, "n_scales": 1})
    with parsed_flags("train_idc.py", f"--model_kwargs={text}", "--crop_size=44"):
        config = train_idc.config_from_flags()
    train_idc.check_config(config)  # 44 is a multiple of 4 (one scale), not of 16 (three)
    assert config.paper.n_scales == 1
    assert config.model_kwargs == text  # recorded in run_config.json
    kwargs = train_idc.model_kwargs(config)
    assert kwargs == {"decoder_reading": "literal", "use_texture": True, "n_scales": 1, **extra}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (['--model_kwargs={"texture": "blur"}'], "idc has no argument 'texture' (its arguments: "),
        (['--model_kwargs={"use_texture": "maybe"}'], "use_texture='maybe' is not valid"),
        (
            ["--n_scales=3", '--model_kwargs={"n_scales": 1}'],
            "--model_kwargs sets n_scales=1 but --n_scales is 3",
        ),
    ],
)
def test_bad_model_kwargs_are_one_line_errors(args, message):
    error = run_main(train_idc, *args)
    assert error.startswith("train_idc.py: error: --model_kwargs") and message in error, error


def test_model_kwargs_value_the_model_refuses_is_a_config_error(tmp_path):
    from training.loop import ConfigError, LoopConfig, Trainer

    step = IdcTrainStep(total_steps=2, model_kwargs={**TINY, "texture_input": "sideways"})
    config = LoopConfig(str(tmp_path / "run"), steps_per_epoch=1, max_steps=1)
    trainer = Trainer(step, lambda epoch: None, config, out=io.StringIO())
    with pytest.raises(ConfigError, match="cannot build model 'idc' .*texture_input"):
        trainer.setup()
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tiny_run_dir_evaluates_exports_and_deblurs(tmp_path):
    data = write_split(tmp_path / "data", "train", 4, size=(48, 64))
    write_split(data, "test", 2, size=(50, 70), seed=1)  # sides not multiples of 16
    run = tmp_path / "run"
    args = [f"--data_dir={data}", f"--run_dir={run}", "--max_steps=2", "--val_images=2"]
    assert run_main(train_idc, *args, *TINY_ARGS) == 0
    kwargs = {"decoder_reading": "literal", "use_texture": True, "n_scales": 3, **TINY}
    round_trip(run, data, tmp_path, "idc", kwargs)
    recorded = json.loads((run / "run_config.json").read_text())["config"]
    assert recorded["paper"]["n_scales"] == 3 and recorded["data"]["noise"] == "random_sigma"
    assert recorded["schedule"]["max_steps"] == 2 and recorded["paper"]["lr_end"] == 1e-6
