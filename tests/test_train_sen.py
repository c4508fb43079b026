"""train_sen.py, training/sen_run.py, training/steps/sen_step.py and training/flow_inputs.py: the
recipe's numbers as a configuration built without flags (sen_rpgan.md section 5), the flags read
into it once, stage 2's inheritance of the stage-1 run's switches, one stage-1 and one stage-2 step
through the one loop (stack 1 frozen in stage 2), the quarter-resolution label, the flow baselines,
one-line errors for bad flags and a bad --init_from, and a tiny stage-1 -> resume -> stage-2 run on
a 64-px flow set."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import train_sen
from config import ConfigError
from data import flow_pipeline
from tests.train_checks import parsed_flags, run_main, run_script
from training import flow_inputs, sen_run
from training.config import replace
from training.loop import LoopConfig, Trainer
from training.steps.sen_step import SENTrainStep, quarter_box_label

TINY = {"width_divisor": 16}
TINY_ARGS = ["--width_divisor=16", "--crop_size=64", "--batch_size=2", "--val_images=2"]


@pytest.fixture(scope="module")
def flow_root(tmp_path_factory):
    """A 64-px flow-23 set (8 train + 2 test examples) under ``<root>/flow-23``."""
    from data import synthetic

    root = tmp_path_factory.mktemp("flowdata")
    cfg = synthetic.SynthConfig(
        kind="flow", size=64, train_pairs=8, test_pairs=2, u_max=23, flows_per_image=4
    )
    synthetic.build_dataset(str(root / "flow-23"), cfg, workers=1)
    return root


def _flow_batches(n=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    blur = rng.uniform(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    u = rng.integers(0, 6, (n, size, size, 1))
    v = rng.integers(-5, 6, (n, size, size, 1))
    return blur, np.concatenate([u, v], axis=-1).astype(np.float32)


def _two_steps(step, tmp_path, name="run"):
    """Two updates of ``step`` through the one loop on in-memory (blur, flow) batches; returns
    (weights before the first update, trainer)."""
    blur, flow = _flow_batches()

    def make(epoch):
        return tf.data.Dataset.from_tensor_slices((blur, flow)).batch(2, drop_remainder=True)

    config = LoopConfig(
        str(tmp_path / name), steps_per_epoch=2, max_steps=2, log_every=1, global_batch_size=2
    )
    trainer = Trainer(step, make, config, out=io.StringIO())
    trainer.setup()
    before = [np.array(w) for w in step.model.weights]
    trainer.run()
    return before, trainer


def _arrays(variables):
    return [np.array(v) for v in variables]


def _changed(before, after):
    return any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


# ---- the recipe: a configuration built without flags --------------------------------------------


def _fake_flow_set(monkeypatch, tmp_path, examples=10_000):
    """A --data_dir with an empty flow-46 folder whose 'training set' has ``examples`` entries."""
    (tmp_path / "flow-46").mkdir(exist_ok=True)
    fake = [(f"b{i}.png", f"f{i}.npy") for i in range(examples)]
    monkeypatch.setattr(flow_inputs, "train_examples", lambda root: fake)
    monkeypatch.setattr(flow_pipeline, "mean_flow", lambda root, split: np.zeros(2))
    monkeypatch.setattr(flow_inputs, "load_validation", lambda *a, **k: None)
    return str(tmp_path)


def _stage1_run_dir(path, model_kwargs=None, stage=1, weights=True, u_max=46):
    kwargs = {"num_stacks": stage, "sen_skips": "concat", "sen_output": "full"}
    kwargs.update({"dilation_rates": [2, 2, 2], "width_divisor": 1, **(model_kwargs or {})})
    path.mkdir(parents=True, exist_ok=True)
    config = {"model": "sen", "model_kwargs": kwargs, "stage": stage, "u_max": u_max}
    (path / "run_config.json").write_text(json.dumps(config))
    if weights:
        (path / "final.weights.h5").write_bytes(b"")
    return path


def test_paper_defaults():
    """sen_rpgan.md section 5: batch 16, 256 crops, no flips or noise, Adam (PyTorch formula)
    betas 0.9 / 0.99, epsilon 1e-8, u_max 46; stage 1: 1.25e-3 for 50 epochs then linear to
    1.25e-5 over 40 (90 epochs); stage 2: 15 epochs at a constant 1.25e-5, stack 1 frozen."""
    config = train_sen.paper_config()
    train_sen.check_config(config)
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert data.batch_size == 16 and data.crop_size == 256 and recipe.u_max == 46
    assert (data.hflip, data.vflip, data.rot90, data.noise) == (False, False, False, "off")
    assert (recipe.adam_beta_1, recipe.adam_beta_2, schedule.adam_epsilon) == (0.9, 0.99, 1e-8)
    assert recipe.stage == 1 and schedule.epochs == 90 and schedule.max_steps == 0
    assert train_sen.model_kwargs(config) == {
        "sen_skips": "concat",
        "sen_output": "full",
        "dilation_rates": [2, 2, 2],
        "width_divisor": 1,
    }
    # One epoch = 10,000 / 16 = 625 steps on the paper-size flow sets.
    step = train_sen.make_step(config, steps_per_epoch=625, total_steps=90 * 625)
    assert step.stage == 1 and step.model_kwargs["num_stacks"] == 1 and step.init_weights is None
    assert (step.beta_1, step.beta_2, step.epsilon, step.adam_formula) == (
        0.9,
        0.99,
        1e-8,
        "pytorch",
    )
    expected = {0: 1.25e-3, 50 * 625: 1.25e-3, 70 * 625: (1.25e-3 + 1.25e-5) / 2}
    expected.update({90 * 625: 1.25e-5, 95 * 625: 1.25e-5})  # linear to 1.25e-5, then held
    for i, rate in expected.items():
        assert float(step.schedule(i)) == pytest.approx(rate, rel=1e-5), i
    assert float(step.schedule(50 * 625 + 1)) < 1.25e-3

    stage2 = replace(train_sen.paper_config(2), init_from="runs/s1")
    train_sen.check_config(stage2)
    assert stage2 == replace(train_sen.stage2(config), init_from="runs/s1")
    assert stage2.schedule.epochs == 15 and stage2.paper.lr_decay_epochs == 0
    step = train_sen.make_step(stage2, steps_per_epoch=625, total_steps=15 * 625)
    assert step.stage == 2 and step.frozen_stack1 and step.model_kwargs["num_stacks"] == 2
    assert step.init_weights == os.path.join("runs/s1", "final.weights.h5")
    for i in (0, 9000, 15 * 625):
        assert float(step.schedule(i)) == pytest.approx(1.25e-5, rel=1e-6)
    assert train_sen.paper_config() == config  # the stage and presets return new configs


def test_trainer_of_the_recipe_on_a_paper_size_flow_set(monkeypatch, tmp_path):
    """The runner's assembly with the flow data factory: 625 steps per epoch, 90 and 15 epochs."""
    data_dir = _fake_flow_set(monkeypatch, tmp_path)
    config = replace(train_sen.paper_config(), data_dir=data_dir, run_dir=str(tmp_path / "run"))
    trainer = train_sen.build_trainer(config, out=io.StringIO())
    assert trainer.config.steps_per_epoch == 625 and trainer.config.total_steps == 90 * 625
    assert trainer.extra_config["data"]["train_examples"] == 10_000
    assert trainer.extra_config["config"]["paper"]["stage"] == 1
    stage1 = _stage1_run_dir(tmp_path / "stage1")
    config = replace(train_sen.stage2(config), init_from=str(stage1))
    trainer = train_sen.build_trainer(config, out=io.StringIO())
    assert trainer.config.total_steps == 15 * 625 and trainer.step_obj.frozen_stack1
    assert trainer.step_obj.init_weights == str(stage1 / "final.weights.h5")


def test_quick_preset_of_each_stage():
    quick = train_sen.quick(train_sen.paper_config())
    assert quick.preset == "quick" and quick.paper.u_max == 23 and quick.paper.width_divisor == 8
    assert quick.data.val_images == 0 and quick.data.crop_size == 128
    assert (quick.schedule.epochs, quick.schedule.learning_rate, quick.paper.lr_end) == (
        12,
        5e-4,
        1e-5,
    )
    assert (quick.paper.lr_hold_epochs, quick.paper.lr_decay_epochs) == (6, 6)
    assert quick.loop.bn_refresh_batches == 100
    assert train_sen.model_kwargs(quick)["width_divisor"] == 8
    quick2 = train_sen.quick(train_sen.paper_config(2))
    assert quick2.paper.stage == 2 and quick2.schedule.epochs == 4
    assert (quick2.schedule.learning_rate, quick2.paper.lr_end) == (1e-3, 1e-5)
    assert (quick2.paper.lr_hold_epochs, quick2.paper.lr_decay_epochs) == (2, 2)


def test_flags_become_the_config_once(tmp_path):
    """The command line over the preset over the stage's recipe; stage 2 then takes the stage-1
    run's switches and u_max over the preset's (not over the command line)."""
    with parsed_flags("train_sen.py"):
        assert train_sen.config_from_flags() == train_sen.paper_config()
    with parsed_flags("train_sen.py", "--preset=quick", "--crop_size=64"):
        config = train_sen.config_from_flags()
    assert config.preset == "quick" and config.data.crop_size == 64 and config.paper.u_max == 23
    stage1 = _stage1_run_dir(tmp_path / "stage1", {"res2_skip": "identity"})
    args = ("--stage=2", f"--init_from={stage1}", "--preset=quick", "--learning_rate=5e-4")
    with parsed_flags("train_sen.py", *args):
        config = train_sen.config_from_flags()
    assert config.paper.stage == 2 and config.schedule.epochs == 4
    assert config.schedule.learning_rate == 5e-4 and config.paper.lr_end == 1e-5
    assert config.paper.u_max == 46 and config.paper.width_divisor == 1  # the stage-1 run's
    assert json.loads(config.model_kwargs) == {"res2_skip": "identity"}
    assert train_sen.model_kwargs(config)["res2_skip"] == "identity"
    refused = pytest.raises(ConfigError, match=r"--u_max 23, but the stage-1 run .* used 46")
    with parsed_flags("train_sen.py", *args, "--u_max=23"), refused:
        train_sen.config_from_flags()


def test_inherit_stage1_returns_a_new_config(tmp_path):
    stage1 = _stage1_run_dir(tmp_path / "stage1", {"width_divisor": 4, "init": "glorot"})
    config = replace(train_sen.paper_config(2), init_from=str(stage1), u_max=23, sen_skips="none")
    inherited = sen_run.inherit_stage1(config)
    assert (config.paper.u_max, config.paper.sen_skips, config.model_kwargs) == (23, "none", None)
    assert inherited.paper.u_max == 46 and inherited.paper.width_divisor == 4
    assert inherited.paper.sen_skips == "concat" and inherited.paper.dilation_rates == [2, 2, 2]
    assert json.loads(inherited.model_kwargs) == {"init": "glorot"}
    train_sen.check_config(inherited)
    assert sen_run.inherit_stage1(inherited, given={"width_divisor", "u_max"}) == inherited
    with pytest.raises(ConfigError, match="sen_skips='none' differs from the stage-1 run"):
        sen_run.inherit_stage1(config, given={"sen_skips"})
    with pytest.raises(ConfigError, match="--u_max 23, but the stage-1 run"):
        sen_run.inherit_stage1(config, given={"u_max"})
    other = replace(config, model_kwargs='{"upsampling": "bilinear"}')
    with pytest.raises(ConfigError, match="upsampling='bilinear', but the stage-1 run"):
        sen_run.inherit_stage1(other)
    stage_1 = train_sen.paper_config()
    assert sen_run.inherit_stage1(stage_1, given={"u_max"}) is stage_1


# ---- steps through the one loop -----------------------------------------------------------------


@pytest.mark.eager
def test_stage1_step_changes_weights_and_stays_finite(tmp_path):
    step = SENTrainStep(stage=1, model_kwargs=TINY)
    before, trainer = _two_steps(step, tmp_path)
    assert len(step.model.stacks) == 1
    assert _changed(before, _arrays(step.model.weights))
    assert all(np.isfinite(w).all() for w in _arrays(step.model.weights))
    assert np.isfinite(trainer.last_values["loss"]) and "stack1_mse" not in trainer.last_values
    assert int(step.optimizer.iterations.numpy()) == 2

    # The loop's validation is the step's: flow MSE, and best/ keeps the LOWEST.
    blur, flow = _flow_batches(n=1)
    pair = ("v", np.rint(blur[0] * 255).astype(np.uint8), flow[0])
    trainer.validation = flow_inputs.FlowValidationSet([pair], "one pair", mean_flow=np.ones(2))
    result = trainer.validate()
    assert set(trainer.best) >= {"flow_mse", "num_images"} and "psnr" not in trainer.best
    assert trainer.best["flow_mse"] == pytest.approx(result["flow_mse"])
    for value, best in ((result["flow_mse"] + 1, result["flow_mse"]), (0.5, 0.5)):
        trainer._update_best({"flow_mse": value, "num_images": 1})
        assert trainer.best["flow_mse"] == pytest.approx(best)
    saved = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert saved["flow_mse"] == 0.5


@pytest.mark.parametrize(("joint", "sen_output"), [(False, "quarter"), (True, "full")])
@pytest.mark.eager
def test_stage2_starts_from_stage1_and_freezes_it(tmp_path, joint, sen_output):
    kwargs = {**TINY, "sen_output": sen_output}
    stage1 = SENTrainStep(stage=1, model_kwargs=kwargs)
    stage1.build(tf.distribute.get_strategy())
    for variable in stage1.model.stacks[0].weights:  # not the fresh initialisation of stage 2
        variable.assign(variable + 0.01)
    path = str(tmp_path / "stage1.weights.h5")
    stage1.model.save_weights(path)
    trained_stack1 = _arrays(stage1.model.stacks[0].weights)

    step = SENTrainStep(stage=2, model_kwargs=kwargs, init_weights=path, joint_finetune=joint)
    before, trainer = _two_steps(step, tmp_path, "stage2")
    stack1 = _arrays(step.model.stacks[0].weights)  # kernels and BN moving statistics
    stack2 = _arrays(step.model.stacks[1].weights)
    start1 = before[: len(stack1)]
    for loaded, trained in zip(start1, trained_stack1, strict=True):
        np.testing.assert_array_equal(loaded, trained)
    assert _changed(before[len(stack1) :], stack2)
    if joint:
        assert _changed(start1, stack1)
    else:
        assert not _changed(start1, stack1)
        assert not step.model.stacks[0].trainable
    assert all(np.isfinite(w).all() for w in stack1 + stack2)
    assert np.isfinite(trainer.last_values["loss"]) and "stack1_mse" in trainer.last_values


def test_quarter_label_is_the_4x4_box_mean_with_edge_replication():
    flow = np.arange(2 * 8 * 6 * 2, dtype=np.float32).reshape(2, 8, 6, 2)
    label = quarter_box_label(tf.constant(flow)).numpy()
    padded = np.concatenate([flow, flow[:, :, -1:], flow[:, :, -1:]], axis=2)  # 8 x 8
    expected = padded.reshape(2, 2, 4, 2, 4, 2).mean(axis=(2, 4))
    assert label.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(label, expected, rtol=1e-6)


def test_flow_validation_baselines():
    flow = np.zeros((4, 4, 2), np.float32)
    flow[..., 0] = 3.0
    val = flow_inputs.FlowValidationSet(
        [("a", np.zeros((4, 4, 3), np.uint8), flow)], "x", mean_flow=np.array([1.0, 0.0])
    )
    assert val.baselines() == {"zero_flow_mse": 4.5, "mean_flow_mse": 2.0}
    blur, target = val.tensors(0)
    assert blur.shape == (1, 4, 4, 3) and target.shape == (1, 4, 4, 2)
    assert "training-mean flow (1.00, 0.00)" in val.baseline_text(val.baselines())


# ---- one-line errors ----------------------------------------------------------------------------


def test_bad_init_from_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "missing"
    error = run_main(train_sen, "--stage=2", f"--init_from={missing}")
    assert error == f"train_sen.py: error: --init_from {missing}: no such run folder."
    cases = {
        _stage1_run_dir(tmp_path / "s2", stage=2): "not a stage-1 SEN run",
        _stage1_run_dir(tmp_path / "noweights", weights=False): "no final.weights.h5",
        tmp_path / "empty": "no run_config.json",
    }
    (tmp_path / "empty").mkdir()
    for run, message in cases.items():
        error = run_main(train_sen, "--stage=2", f"--init_from={run}")
        assert error.startswith(f"train_sen.py: error: --init_from {run}: {message}"), error
    run = _stage1_run_dir(tmp_path / "ok")
    error = run_main(train_sen, "--stage=2", f"--init_from={run}", "--sen_skips=none")
    assert "sen_skips='none' differs from the stage-1 run" in error
    proc = run_script("train_sen.py", ["--stage=2", f"--init_from={missing}"])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"train_sen.py: error: --init_from {missing}: no such run folder."
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stage=3"], "--stage must be 1 or 2"),
        (["--u_max=30"], "--u_max must be 23 or 46"),
        (["--stage=2"], "--stage 2 needs --init_from"),
        (["--init_from=x"], "--init_from is for --stage 2"),
        (["--sen_joint_finetune"], "--sen_joint_finetune is for --stage 2"),
        (["--hflip"], "without augmentation"),
        (['--model_kwargs={"num_stacks": 2}'], "num_stacks is set by --stage"),
        (['--model_kwargs={"stacks": 2}'], "sen has no argument 'stacks'"),
        (["--sen_output=quarter", "--crop_size=66"], "multiple of 4"),
        (["--dilation_rates=2,2"], "--dilation_rates must be 3 integers"),
        (["--dilation_rates=2,x,2"], "integers >= 1, got ['2', 'x', '2']."),
        (["--adam_beta_2=1"], "--adam_beta_1 and --adam_beta_2 must be below 1"),
        (["--lr_end=0.1"], "--learning_rate 0.00125 is below --lr_end 0.1"),
    ],
)
def test_bad_flags_are_one_line_errors(args, message, tmp_path):
    error = run_main(train_sen, *args, f"--run_dir={tmp_path / 'run'}")
    assert isinstance(error, str) and error.startswith("train_sen.py: error: ") and message in error
    assert not (tmp_path / "run").exists()


def test_data_dir_without_the_u_max_set_is_named(tmp_path):
    error = run_main(train_sen, f"--data_dir={tmp_path}", "--u_max=23")
    assert error.startswith(f"train_sen.py: error: --data_dir {tmp_path} has no flow-23 folder")


# ---- the script end to end ----------------------------------------------------------------------


@pytest.mark.slow
def test_stage1_run_resume_and_stage2_run(flow_root, tmp_path, capsys):
    run1 = tmp_path / "stage1"
    # With BatchNormalization statistics refreshed before validation and the final weights.
    common = [f"--data_dir={flow_root}", "--u_max=23", "--bn_refresh_batches=2", *TINY_ARGS]
    assert run_main(train_sen, *common, f"--run_dir={run1}", "--max_steps=2") == 0
    config = json.loads((run1 / "run_config.json").read_text())
    assert config["config"]["loop"]["bn_refresh_batches"] == 2
    assert config["model"] == "sen" and config["stage"] == 1 and config["u_max"] == 23
    assert config["model_kwargs"] == {
        "num_stacks": 1,
        "sen_skips": "concat",
        "sen_output": "full",
        "dilation_rates": [2, 2, 2],
        "width_divisor": 16,
    }
    assert config["optimizer"] == "Adam (PyTorch formula)" and config["steps_per_epoch"] == 4
    assert config["data"]["train_examples"] == 8
    best = json.loads((run1 / "best" / "best.json").read_text())
    assert np.isfinite(best["flow_mse"]) and "psnr" not in best
    capsys.readouterr()

    assert run_main(train_sen, *common, f"--run_dir={run1}", "--max_steps=3") == 0
    out = capsys.readouterr().out
    assert "Resumed from" in out and "ckpt-2" in out and "flow MSE" in out and "zero flow" in out
    assert tf.train.latest_checkpoint(str(run1 / "checkpoints")).endswith("ckpt-3")
    error = run_main(
        train_sen, *common, f"--run_dir={run1}", "--max_steps=4", "--stage=2", f"--init_from={run1}"
    )
    assert "holds another run" in error

    run2 = tmp_path / "stage2"
    args = [f"--data_dir={flow_root}", "--crop_size=64", "--batch_size=2", "--val_images=2"]
    args += ["--stage=2", f"--init_from={run1}", f"--run_dir={run2}", "--max_steps=1"]
    assert run_main(train_sen, *args) == 0
    config = json.loads((run2 / "run_config.json").read_text())
    assert config["stage"] == 2 and config["u_max"] == 23 and not config["sen_joint_finetune"]
    recipe = config["config"]["paper"]
    assert (recipe["stage"], recipe["u_max"], recipe["width_divisor"]) == (2, 23, 16)
    assert config["model_kwargs"]["num_stacks"] == 2
    assert config["model_kwargs"]["width_divisor"] == 16
    assert (run2 / "final.weights.h5").is_file()
