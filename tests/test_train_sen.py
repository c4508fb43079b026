"""train_sen.py, training/sen_step.py and training/flow_inputs.py: the recipe's numbers through the
script's defaults (sen_rpgan.md section 5), one stage-1 and one stage-2 step through the one loop
(stack 1 frozen in stage 2), the quarter-resolution label, the flow baselines, one-line errors for
a bad --init_from, and a tiny stage-1 -> resume -> stage-2 run on a 64-px flow set."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf

import train_sen
from data import flow_pipeline
from tests.train_checks import parsed_flags, run_main, run_script
from training import flow_inputs
from training.loop import LoopConfig, Trainer
from training.sen_step import SENTrainStep, quarter_box_label

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


# ---- the recipe's numbers through the script's defaults -----------------------------------------


def _fake_flow_set(monkeypatch, tmp_path, examples=10_000):
    """A --data_dir with an empty flow-46 folder whose 'training set' has ``examples`` entries."""
    (tmp_path / "flow-46").mkdir(exist_ok=True)
    fake = [(f"b{i}.png", f"f{i}.npy") for i in range(examples)]
    monkeypatch.setattr(flow_inputs, "train_examples", lambda root: fake)
    monkeypatch.setattr(flow_pipeline, "mean_flow", lambda root, split: np.zeros(2))
    monkeypatch.setattr(flow_inputs, "load_validation", lambda *a, **k: None)
    return str(tmp_path)


def _stage1_run_dir(path, model_kwargs=None, stage=1, weights=True):
    kwargs = {"num_stacks": stage, "sen_skips": "concat", "sen_output": "full"}
    kwargs.update({"dilation_rates": [2, 2, 2], "width_divisor": 1, **(model_kwargs or {})})
    path.mkdir(parents=True, exist_ok=True)
    config = {"model": "sen", "model_kwargs": kwargs, "stage": stage, "u_max": 46}
    (path / "run_config.json").write_text(json.dumps(config))
    if weights:
        (path / "final.weights.h5").write_bytes(b"")
    return path


def test_paper_recipe_and_schedule_numbers_through_the_script(monkeypatch, tmp_path):
    data_dir = _fake_flow_set(monkeypatch, tmp_path)
    run = tmp_path / "run"
    with parsed_flags("train_sen.py", f"--data_dir={data_dir}", f"--run_dir={run}") as flags:
        for prepare in (train_sen.apply_flag_defaults, train_sen.check_stage_flags):
            prepare()
        train_sen.apply_model_kwargs()
        train_sen.check_flags()
        assert flags.batch_size == 16 and flags.crop_size == 256 and flags.u_max == 46
        assert (flags.hflip, flags.vflip, flags.rot90, flags.noise) == (False, False, False, "off")
        assert (flags.adam_beta_1, flags.adam_beta_2, flags.adam_epsilon) == (0.9, 0.99, 1e-8)
        trainer = train_sen.build_trainer(out=io.StringIO())
    # One epoch = 10,000 / 16 = 625 steps; stage 1 = 90 epochs.
    assert trainer.config.steps_per_epoch == 625 and trainer.config.total_steps == 90 * 625
    step = trainer.step_obj
    assert step.stage == 1 and step.model_kwargs["num_stacks"] == 1
    assert (step.beta_1, step.beta_2, step.epsilon, step.adam_formula) == (
        0.9,
        0.99,
        1e-8,
        "pytorch",
    )
    rates = {i: float(step.schedule(i)) for i in (0, 50 * 625, 70 * 625, 90 * 625, 95 * 625)}
    expected = {0: 1.25e-3, 50 * 625: 1.25e-3, 70 * 625: (1.25e-3 + 1.25e-5) / 2}
    expected.update({90 * 625: 1.25e-5, 95 * 625: 1.25e-5})  # linear to 1.25e-5, then held
    for i, rate in expected.items():
        assert rates[i] == pytest.approx(rate, rel=1e-5), i
    assert float(step.schedule(50 * 625 + 1)) < 1.25e-3

    stage1 = _stage1_run_dir(tmp_path / "stage1")
    args = (f"--data_dir={data_dir}", f"--run_dir={run}", "--stage=2", f"--init_from={stage1}")
    with parsed_flags("train_sen.py", *args):
        for prepare in (
            train_sen.apply_flag_defaults,
            train_sen.check_stage_flags,
            train_sen.inherit_stage1,
            train_sen.apply_model_kwargs,
            train_sen.check_flags,
        ):
            prepare()
        trainer = train_sen.build_trainer(out=io.StringIO())
    # Stage 2: 15 epochs of 625 steps at a constant 1.25e-5, stack 1 frozen.
    assert trainer.config.total_steps == 15 * 625
    step = trainer.step_obj
    assert step.stage == 2 and step.frozen_stack1 and step.model_kwargs["num_stacks"] == 2
    assert step.init_weights == str(stage1 / "final.weights.h5")
    for i in (0, 9000, 15 * 625):
        assert float(step.schedule(i)) == pytest.approx(1.25e-5, rel=1e-6)


def test_quick_preset_and_joint_finetune_flags():
    with parsed_flags("train_sen.py", "--preset=quick") as flags:
        train_sen.apply_flag_defaults()
        assert flags.u_max == 23 and flags.width_divisor == 8 and flags.val_images == 0
        assert train_sen.model_kwargs()["width_divisor"] == 8


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
    common = [f"--data_dir={flow_root}", "--u_max=23", *TINY_ARGS]
    assert run_main(train_sen, *common, f"--run_dir={run1}", "--max_steps=2") == 0
    config = json.loads((run1 / "run_config.json").read_text())
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
    assert config["model_kwargs"]["num_stacks"] == 2
    assert config["model_kwargs"]["width_divisor"] == 16
    assert (run2 / "final.weights.h5").is_file()
