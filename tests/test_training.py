"""Tests of the generic training loop (training/) on a tiny MIMO-UNet and in-memory data.

No file I/O for data here: the datasets are small ``tf.data`` pipelines built in memory, seeded per
epoch like the real input pipeline. The script and the data layer are tested in
test_train_mimo_unet.py.
"""

import io
import json
import os
import shutil
import signal
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import rundir
from models import build_model
from tests.conftest import eager_functions
from tests.process_checks import result_json, run_python
from training import schedules, summaries
from training.loop import (
    ConfigError,
    LoopConfig,
    NonFiniteLossError,
    Trainer,
    ValidationSet,
)
from training.steps.mimo_unet_step import MimoUnetTrainStep
from training.tracking import checkpointed_variable_count, track_layer_lists

TINY = {"num_res": 1, "base_channels": 8}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pairs(n=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    sharp = rng.uniform(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    blur = np.clip(0.5 * sharp + 0.5 * np.roll(sharp, 2, axis=2), 0, 1).astype(np.float32)
    return blur, sharp


def _epoch_fn(blur, sharp, batch=2):
    def make(epoch):
        ds = tf.data.Dataset.from_tensor_slices((blur, sharp))
        return ds.shuffle(len(blur), seed=100 + epoch).batch(batch, drop_remainder=True)

    return make


def _validation(blur, sharp, n=2):
    def u8(x):
        return np.rint(x * 255).astype(np.uint8)

    return ValidationSet([(f"v{i}", u8(blur[i]), u8(sharp[i])) for i in range(n)], "in-memory")


def _trainer(run_dir, max_steps, data=None, validation=None, **config):
    keras.utils.set_random_seed(0)
    blur, sharp = data if data is not None else _pairs()
    spe = len(blur) // 2
    cfg = {"checkpoint_every": 1, "log_every": 2, "global_batch_size": 2, **config}
    config = LoopConfig(str(run_dir), steps_per_epoch=spe, epochs=3, max_steps=max_steps, **cfg)
    step = MimoUnetTrainStep(steps_per_epoch=spe, model_kwargs=TINY)
    return Trainer(step, _epoch_fn(blur, sharp), config, validation=validation, out=io.StringIO())


def _optimizer_state(trainer):
    opt = trainer.step_obj.optimizer
    return int(opt.iterations.numpy()), [np.array(v) for v in opt.variables]


# ---- schedules ----------------------------------------------------------------------------------


def test_mimo_schedule_halves_per_epoch_milestone():
    schedule = schedules.mimo_unet_schedule(1e-4, steps_per_epoch=526)
    assert schedule.get_config()["milestones"] == [500, 1000, 1500, 2000, 2500, 3000]

    def lr(epoch, offset=0):
        return float(schedule(epoch * 526 + offset))

    assert lr(0) == pytest.approx(1e-4) and lr(499, 525) == pytest.approx(1e-4)
    assert lr(500) == pytest.approx(5e-5)
    assert lr(2499, 525) == pytest.approx(6.25e-6) and lr(2500) == pytest.approx(3.125e-6)
    assert lr(2999, 525) == pytest.approx(3.125e-6)
    restored = schedules.EpochMultiStepDecay.from_config(schedule.get_config())
    assert float(restored(500 * 526)) == pytest.approx(5e-5)


def test_schedule_follows_optimizer_iterations():
    optimizer = keras.optimizers.Adam(schedules.mimo_unet_schedule(1e-4, 10, 2, 6))
    optimizer.build([keras.Variable(np.zeros(3, np.float32))])
    optimizer.iterations.assign(19)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)
    optimizer.iterations.assign(20)
    assert float(optimizer.learning_rate) == pytest.approx(5e-5)


def test_polynomial_decay_helper():
    schedule = schedules.polynomial_decay(1e-4, decay_steps=100, end_learning_rate=1e-6, power=0.3)
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(50)) == pytest.approx((1e-4 - 1e-6) * 0.5**0.3 + 1e-6, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(1e-6) and float(schedule(500)) == pytest.approx(
        1e-6
    )


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / "a" / "x.json"
    rundir.write_json(path, {"a": 1})
    rundir.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["x.json"]


# ---- the loop -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 4-step run (steps_per_epoch 4, a checkpoint per step, validation every 2 steps), shared
    by the tests below so the tiny model is traced once (tracing dominates their time)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    data = _pairs()
    trainer = _trainer(
        run_dir, 4, data=data, validation=_validation(*data), val_every=2, keep_checkpoints=10
    )
    trainer.setup()
    initial = [np.array(w) for w in trainer.step_obj.model.weights]
    with eager_functions():  # every training script's tests trace the loop's step
        result = trainer.run()
    return {
        "trainer": trainer,
        "run_dir": run_dir,
        "initial": initial,
        "result": result,
        "data": data,
    }


def test_steps_change_weights_and_write_run_dir(trained):
    trainer, run_dir = trained["trainer"], trained["run_dir"]
    after = trainer.step_obj.model.weights
    assert trained["result"].step == 4 and np.isfinite(trainer.last_values["loss"])
    assert any(
        not np.array_equal(b, np.array(a)) for b, a in zip(trained["initial"], after, strict=True)
    )
    assert all(np.isfinite(np.array(a)).all() for a in after)
    assert int(trainer.step_obj.optimizer.iterations.numpy()) == 4

    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["model"] == "mimo_unet" and config["model_kwargs"] == TINY
    assert config["paper"] == "mimo_unet" and config["steps_per_epoch"] == 4
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["step"] in (2, 4) and np.isfinite(best["psnr"])
    assert tf.train.latest_checkpoint(str(run_dir / "best")).endswith(f"ckpt-{best['step']}")
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert latest.endswith("ckpt-4")

    # The contract readers use: a fresh model restored from checkpoint attribute "model", and the
    # final Keras weights, both reproduce the trained model.
    x = tf.constant(trained["data"][0][:1])
    expected = trainer.step_obj.model(x)[-1].numpy()
    fresh = build_model("mimo_unet", **TINY)
    fresh.build((None, None, None, 3))
    assert checkpointed_variable_count(latest) == len(fresh.weights)  # every layer, not just some
    track_layer_lists(fresh)
    status = tf.train.Checkpoint(model=fresh).restore(latest).expect_partial()
    status.assert_existing_objects_matched()
    np.testing.assert_allclose(fresh(x)[-1].numpy(), expected, atol=1e-6)
    other = build_model("mimo_unet", **TINY)
    other.build((None, None, None, 3))
    other.load_weights(str(run_dir / "final.weights.h5"))
    np.testing.assert_allclose(other(x)[-1].numpy(), expected, atol=1e-6)

    scalars = summaries.read_scalars(str(run_dir / "tensorboard"))
    for tag in (
        "train/loss",
        "train/learning_rate",
        "train/steps_per_second",
        "val/psnr",
        "val/ssim",
        "val/blurred_input_psnr",
    ):
        assert tag in scalars, tag
    images = summaries.read_image_tags(str(run_dir / "tensorboard"))
    assert {"val_images/0/blur", "val_images/0/output", "val_images/0/sharp"} <= images


def _copy_run_until(src, dst, step):
    """A run directory as a run killed right after writing ckpt-<step> would have left it."""
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy(src / "run_config.json", dst / "run_config.json")
    for path in (src / "checkpoints").glob(f"ckpt-{step}.*"):
        shutil.copy(path, dst / "checkpoints" / path.name)
    tf.compat.v1.train.update_checkpoint_state(str(dst / "checkpoints"), f"ckpt-{step}")


def test_resume_mid_epoch_matches_uninterrupted_run(trained, tmp_path):
    # The uninterrupted run did 4 steps (one epoch); the "killed" one stopped after its
    # checkpoint at step 3, mid-epoch, and a fresh process state resumes it to step 4.
    full = trained["trainer"]
    _copy_run_until(trained["run_dir"], tmp_path, 3)
    resumed = _trainer(tmp_path, 4)
    resumed.setup()
    assert (resumed.step, resumed.epoch, resumed.epoch_step) == (3, 0, 3)
    assert int(resumed.step_obj.optimizer.iterations.numpy()) == 3
    resumed.run()

    assert resumed.step == full.step == 4 and resumed.epoch == full.epoch == 1
    np.testing.assert_allclose(resumed.last_values["loss"], full.last_values["loss"], rtol=1e-5)
    it_a, state_a = _optimizer_state(full)
    it_b, state_b = _optimizer_state(resumed)
    assert it_a == it_b == 4
    for a, b in zip(state_a, state_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(full.step_obj.model.weights, resumed.step_obj.model.weights, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)
    assert "Resumed from" in resumed.progress.out.getvalue()


def test_resume_refuses_other_model_and_noresume(trained, tmp_path):
    _copy_run_until(trained["run_dir"], tmp_path, 4)
    with pytest.raises(ConfigError, match="--resume"):
        _trainer(tmp_path, 5, resume=False).setup()
    blur, sharp = trained["data"]
    step = MimoUnetTrainStep(
        "mimo_unet", steps_per_epoch=4, model_kwargs={**TINY, "init": "glorot"}
    )
    config = LoopConfig(str(tmp_path), steps_per_epoch=4, max_steps=5, global_batch_size=2)
    other = Trainer(step, _epoch_fn(blur, sharp), config, out=io.StringIO())
    with pytest.raises(ConfigError, match="model_kwargs"):
        other.setup()


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    blur, sharp = _pairs()
    blur = blur.copy()
    blur[6] = np.nan  # one of the last two elements of the (seeded) epoch-0 shuffle order
    order = list(_epoch_fn(blur, sharp, batch=1)(0).as_numpy_iterator())
    bad_step = 1 + [np.isnan(b).any() for b, _ in order].index(True) // 2
    trainer = _trainer(tmp_path, 4, data=(blur, sharp), checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="Non-finite") as info:
        trainer.run()
    assert f"step {bad_step}" in str(info.value)
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    if bad_step > 1:
        assert latest.endswith(f"ckpt-{bad_step - 1}") and latest in str(info.value)
    else:
        assert latest is None


def test_sigterm_saves_current_step_and_stops(tmp_path):
    blur, sharp = _pairs()

    def generator():
        for i in range(0, len(blur), 2):
            if i == 4:  # while the third batch is prepared
                os.kill(os.getpid(), signal.SIGTERM)
            yield blur[i : i + 2], sharp[i : i + 2]

    spec = (tf.TensorSpec((2, 32, 32, 3), tf.float32),) * 2
    trainer = _trainer(tmp_path, 8, checkpoint_every=100)
    trainer.make_epoch_dataset = lambda epoch: tf.data.Dataset.from_generator(
        generator, output_signature=spec
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None and latest.endswith(f"ckpt-{trainer.step}") and trainer.step >= 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_signal_before_the_first_step_stops_at_once(tmp_path):
    """Nothing would be lost: the first signal interrupts at once (a long first data preparation
    need not run to its end) and the unstarted run leaves no folder behind."""
    blur, sharp = _pairs()

    def generator():
        os.kill(os.getpid(), signal.SIGTERM)  # while the first batch is prepared
        for i in range(0, len(blur), 2):
            yield blur[i : i + 2], sharp[i : i + 2]

    spec = (tf.TensorSpec((2, 32, 32, 3), tf.float32),) * 2
    trainer = _trainer(tmp_path / "run", 8, checkpoint_every=100)
    trainer.make_epoch_dataset = lambda epoch: tf.data.Dataset.from_generator(
        generator, output_signature=spec
    )
    with pytest.raises(KeyboardInterrupt, match="nothing unsaved"):
        trainer.run()
    assert trainer.step == 0 and not os.path.exists(tmp_path / "run")


def test_config_differences_list_every_changed_leaf():
    old = {"data": {"crop_size": 64, "seed": 0}, "schedule": {"max_steps": 10}}
    new = {"data": {"crop_size": 32, "seed": 0}, "schedule": {"max_steps": 10, "epochs": 3}}
    assert rundir.differences(old, new) == [
        ("data.crop_size", 64, 32),
        ("schedule.epochs", rundir.MISSING, 3),
    ]
    assert rundir.differences(old, old) == []


def test_flags_defined_once_and_paper_defaults():
    from absl import flags

    from cli import train_flags

    train_flags.define_common_flags()
    train_flags.define_common_flags({"crop_size": 128})
    import train_mimo_unet  # noqa: F401  (defines its flags again: must not raise)

    assert flags.FLAGS["crop_size"].default == 128
    train_flags.define_common_flags({"crop_size": 256})


# ---- distribution ------------------------------------------------------------------------------

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training.loop import LoopConfig, Trainer, ValidationSet
    from training.steps.mimo_unet_step import MimoUnetTrainStep
    from training.strategy import make_strategy
    tiny = {"num_res": 1, "base_channels": 8}
    rng = np.random.default_rng(0)
    sharp = rng.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    blur = np.clip(sharp + rng.normal(0, 0.1, sharp.shape), 0, 1).astype("float32")

    def make(epoch):  # one global batch of 4 an epoch: 2 images a replica
        return tf.data.Dataset.from_tensors((blur, sharp))

    keras.utils.set_random_seed(0)
    mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    u8 = lambda x: np.rint(x * 255).astype(np.uint8)
    val = ValidationSet([("v", u8(blur[0]), u8(sharp[0]))], "in-memory")
    runs = []
    for max_steps in (1, 3):  # the second run resumes under the strategy
        step = MimoUnetTrainStep(steps_per_epoch=1, model_kwargs=tiny)
        cfg = LoopConfig(sys.argv[1], steps_per_epoch=1, max_steps=max_steps, checkpoint_every=1,
                         global_batch_size=4, log_every=1)
        trainer = Trainer(step, make, cfg, strategy=mirrored, validation=val, out=io.StringIO())
        trainer.setup()
        if max_steps == 1:
            init = step.model.get_weights()
        trainer.run()
        if max_steps == 1:
            multi = step.model.get_weights()
        runs.append([trainer.step, int(step.optimizer.iterations.numpy()),
                     trainer.last_values["loss"], trainer.last_validation["psnr"]])

    # The mirrored run's first step against one device's step on the global batch (eager: the
    # reference needs no trace), from the same initial weights.
    single = MimoUnetTrainStep(steps_per_epoch=1, model_kwargs=tiny)
    single.build(tf.distribute.get_strategy())
    single.model.set_weights(init)
    loss1 = float(single.train_step(blur, sharp)["loss"])
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(single.model.get_weights(), multi))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(init, multi))
    print("RESULT " + json.dumps({"replicas": mirrored.num_replicas_in_sync, "diff": diff,
                                  "moved": moved, "loss1": loss1, "loss2": runs[0][2],
                                  "runs": runs}))
    """
)


@pytest.mark.slow
def test_mirrored_two_replicas_match_one_device(tmp_path):
    """The one loop's step under MirroredStrategy (two CPU replicas, traced as training runs it)
    computes one device's step on the global batch: the same weights and loss; a run resumes
    under the strategy and validates."""
    proc = run_python(["-c", MIRRORED_SCRIPT, str(tmp_path / "run")], timeout=600)
    result = result_json(proc, which=0)
    assert result["replicas"] == 2
    assert result["moved"] > 1e-6  # the step changed the weights...
    assert result["diff"] < 1e-5  # ...exactly as one device on the global batch
    assert result["loss1"] == pytest.approx(result["loss2"], rel=1e-5)
    assert result["runs"][0][:2] == [1, 1] and result["runs"][1][:2] == [3, 3]
    assert np.isfinite(result["runs"][1][2]) and np.isfinite(result["runs"][1][3])


# ---- run folder: refusals, leftovers, epoch numbers, modes, damaged data ------------------------


def test_resume_refuses_another_structure_before_restoring(trained, tmp_path):
    """Another num_res, another model, another recorded identity entry or structure: one
    ConfigError naming the first difference, raised before any restore (no TF shape error), and
    the run folder is left as it was."""
    _copy_run_until(trained["run_dir"], tmp_path, 4)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    blur, sharp = trained["data"]
    config = LoopConfig(str(tmp_path), steps_per_epoch=4, max_steps=5, global_batch_size=2)

    def refusal(step):
        trainer = Trainer(step, _epoch_fn(blur, sharp), config, out=io.StringIO())
        with pytest.raises(ConfigError) as info:
            trainer.setup()
        assert trainer.step_obj.model is None  # refused before building or restoring
        return str(info.value)

    wider = MimoUnetTrainStep(steps_per_epoch=4, model_kwargs={**TINY, "num_res": 2})
    message = refusal(wider)
    assert "model_kwargs.num_res is 1 there, 2 in this command" in message
    assert "Shapes" not in message and "\n" not in message
    plus = MimoUnetTrainStep("mimo_unet_plus", steps_per_epoch=4, model_kwargs=TINY)
    assert "model is 'mimo_unet' there, 'mimo_unet_plus'" in refusal(plus)

    config_path = tmp_path / "run_config.json"
    recorded = json.loads(config_path.read_text())
    rundir.write_json(config_path, {**recorded, "structure": {"optimizer_class": "Adam"}})
    step = MimoUnetTrainStep(steps_per_epoch=4, model_kwargs=TINY)
    step.structure = lambda: {"optimizer_class": "PyTorchAdam"}
    assert "structure.optimizer_class is 'Adam' there, 'PyTorchAdam'" in refusal(step)
    rundir.write_json(config_path, {**recorded, "paper": "two_way"})
    step = MimoUnetTrainStep(steps_per_epoch=4, model_kwargs=TINY)
    assert "paper is 'two_way' there, 'mimo_unet' in this command" in refusal(step)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("kind", ["file", "below_a_file", "unwritable"])
def test_unusable_run_dir_is_refused(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    run_dir = {"file": blocker, "below_a_file": blocker / "run"}.get(kind)
    if kind == "unwritable":
        if os.geteuid() == 0:  # root writes through permissions: use a file system that refuses
            run_dir = "/proc/deblur_zoo_run"
        else:
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o500)
            run_dir = locked / "run"
    trainer = _trainer(run_dir, 2)
    with pytest.raises(ConfigError, match="--run_dir .*(is a file|not writable)") as info:
        trainer.setup()
    assert "\n" not in str(info.value)
    assert not os.path.exists(os.path.join(str(run_dir), "run_config.json"))


def test_a_second_trainer_on_the_same_run_dir_is_refused(tmp_path):
    from rundir import RunDirLock

    tmp_path.joinpath("run").mkdir()
    lock = RunDirLock(str(tmp_path / "run"))
    assert lock.acquire()
    try:
        with pytest.raises(ConfigError, match="in use by another training process"):
            _trainer(tmp_path / "run", 2).setup()
    finally:
        lock.release()
    assert os.listdir(tmp_path / "run") == []


def test_leftovers_of_killed_runs_are_removed_at_start(trained, tmp_path):
    """What kill -9 leaves: TensorFlow's ckpt-<N>_temp/ folders (killed mid-save, in checkpoints/
    and best/), merged files the state file never listed, checkpoint.tmp<hex>, and fileio
    temporaries of dead processes. The next run removes them and resumes from the last listed
    checkpoint; listed checkpoints are kept."""
    _copy_run_until(trained["run_dir"], tmp_path, 3)
    ckpts, best = tmp_path / "checkpoints", tmp_path / "best"
    leftovers = [
        ckpts / "ckpt-4_temp" / "part-00000-of-00001.data-00000-of-00001",
        ckpts / "ckpt-4_temp" / "part-00000-of-00001.index",
        ckpts / "ckpt-5.index",  # merged, never listed
        ckpts / "checkpoint.tmp0123456789abcdef0123456789abcdef",
        best / "ckpt-2_temp" / "part-00000-of-00001.index",
        best / ".best.json.tmp-999999999",
        tmp_path / ".run_config.json.tmp-999999999",
        tmp_path / ".final.weights.h5.tmp-999999999-partial.weights.h5",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    kept = sorted(p.name for p in ckpts.glob("ckpt-3.*"))
    trainer = _trainer(tmp_path, 4)
    trainer.setup()
    assert trainer.step == 3
    for path in leftovers:
        assert not path.exists(), path
    assert not (ckpts / "ckpt-4_temp").exists() and not (best / "ckpt-2_temp").exists()
    assert sorted(p.name for p in ckpts.glob("ckpt-3.*")) == kept
    assert "Removed a leftover of an interrupted run" in trainer.progress.out.getvalue()
    trainer.run()
    assert tf.train.latest_checkpoint(str(ckpts)).endswith("ckpt-4")


@pytest.mark.eager
def test_epoch_numbers_agree_and_outputs_get_umask_modes(tmp_path):
    """One convention in all human text, "epoch E/N" (1-based, in progress or just completed);
    best.json says epochs_completed. Run under umask 022: every output is 0644 / 0755."""
    old = os.umask(0o022)
    try:
        data = _pairs(n=4)
        trainer = _trainer(
            tmp_path / "run", 3, data=data, validation=_validation(*data), val_every=2, log_every=1
        )
        trainer.run()
        resumed = _trainer(tmp_path / "run", 4, data=data, log_every=1)
        resumed.run()
    finally:
        os.umask(old)
    text = trainer.progress.out.getvalue()
    assert "step 2/3 ( 66.7%) | epoch 1/2 |" in text and "step 3/3 (100.0%) | epoch 2/2 |" in text
    assert "validation @ step 2 (epoch 1/2)" in text
    assert "Done: step 3, epoch 2/2, 1 of its 2 steps," in text
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] in (2, 3) and "epoch" not in best
    assert best["epochs_completed"] == {2: 1, 3: 1}[best["step"]]
    text = resumed.progress.out.getvalue()
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-3"
    resumed_line = f"Resumed from {ckpt}: step 3, epoch 2/2 (1 of 2 epochs completed, 1 of its 2"
    assert resumed_line + " steps done)." in text
    assert "Done: step 4, epoch 2/2 completed," in text

    for folder, dirs, files in os.walk(tmp_path / "run"):
        for name in dirs:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o755, name
        for name in files:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o644, name
    names = {name for _, _, files in os.walk(tmp_path / "run") for name in files}
    assert {"run_config.json", "best.json", "final.weights.h5", "checkpoint"} <= names
    assert not [n for n in names if ".tmp" in n or "partial" in n]


def _failing_epoch_fn(blur, sharp, bad_index, message):
    """Batches of 2 whose element ``bad_index`` fails to "decode" with a data.DataError (raised
    inside tf.py_function, as the real pipeline does)."""
    from data import DataError

    def load(i):
        if int(i) == bad_index:
            raise DataError(message)
        return blur[int(i)], sharp[int(i)]

    def make(epoch):
        def element(i):
            b, s = tf.py_function(load, [i], [tf.float32, tf.float32])
            return tf.ensure_shape(b, blur.shape[1:]), tf.ensure_shape(s, sharp.shape[1:])

        ds = tf.data.Dataset.range(len(blur)).map(element, num_parallel_calls=2)
        return ds.batch(2, drop_remainder=True).prefetch(2)

    return make


@pytest.mark.eager
def test_damaged_file_mid_run_saves_the_last_step_and_names_the_file(tmp_path):
    from data import DataError

    blur, sharp = _pairs()
    trainer = _trainer(tmp_path / "run", 4, checkpoint_every=100)
    trainer.make_epoch_dataset = _failing_epoch_fn(blur, sharp, 5, "/d/x.png: damaged PNG data.")
    with pytest.raises(DataError, match=r"^/d/x\.png: damaged PNG data\.$"):
        trainer.run()
    assert trainer.step == 2  # batches 0 and 1 trained; batch 2 holds element 5
    latest = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest is not None and latest.endswith("ckpt-2")


def test_damaged_file_before_the_first_step_leaves_no_run_folder(tmp_path):
    from data import DataError

    blur, sharp = _pairs()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    for run_dir in (tmp_path / "new", existing):
        trainer = _trainer(run_dir, 4)
        trainer.make_epoch_dataset = _failing_epoch_fn(blur, sharp, 0, "/d/y.png: damaged.")
        with pytest.raises(DataError, match="y.png"):
            trainer.run()
    assert not (tmp_path / "new").exists()
    assert os.listdir(existing) == ["notes.txt"]  # only what the failed run added is gone
