"""Tests of train_mimo_unet.py as a user runs it: the paper defaults, bad inputs (flags,
--model_kwargs, damaged training and validation files, unusable or foreign run folders), a tiny
run on the real data layer, kill -9 and resume, two workers under MultiWorkerMirroredStrategy, a
missing validation split.

The data sets are a few small PNG pairs in the GoPro layout written here (the reader and pipeline
of data/ are the real ones); the model is MIMO-UNet with 1 residual block and 8 channels.
"""

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import train_mimo_unet
from tests.train_checks import (
    REPO,
    damage_png,
    env,
    parsed_flags,
    run_command,
    run_script,
    write_split,
)

SCRIPT = os.path.join(REPO, "train_mimo_unet.py")
TINY_ARGS = [
    "--num_res=1",
    "--base_channels=8",
    "--crop_size=32",
    "--batch_size=2",
    "--log_every=1",
    "--val_images=2",
    "--val_crop=32",
]


def _run(args, timeout=300):
    return run_script("train_mimo_unet.py", args, timeout)


@pytest.fixture(scope="module")
def gopro_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("gopro_like")
    write_split(root, "train", 8, size=(40, 40))
    write_split(root, "test", 3, size=(40, 40), seed=1)
    return root


# ---- the paper recipe ---------------------------------------------------------------------------


def test_paper_defaults():
    """mimo_unet.md section 7 / the official train.py: batch 4, 256 crops, horizontal flips only,
    3000 epochs, Adam lr 1e-4 with epsilon 1e-8, x0.5 every 500 epochs, FFT weight 0.1, PyTorch
    initialisation; the quick preset's learning rate is 2e-4."""
    config = train_mimo_unet.paper_config()
    train_mimo_unet.check_config(config)
    data, schedule, recipe = config.data, config.schedule, config.paper
    assert recipe.variant == "mimo_unet" and data.batch_size == 4 and data.crop_size == 256
    assert (data.hflip, data.vflip, data.rot90) == (True, False, False)
    assert data.noise == "off" and schedule.epochs == 3000 and schedule.max_steps == 0
    assert schedule.learning_rate == 1e-4 and schedule.adam_epsilon == 1e-8
    assert recipe.lr_decay_epochs == 500 and recipe.lr_decay_rate == 0.5
    assert recipe.fft_weight == 0.1 and recipe.init == "torch"
    assert train_mimo_unet.model_kwargs(config) == {}  # the registry's MIMO-UNet: 8 blocks, 32 ch
    # GoPro: 2103 training pairs // 4 = 525 steps per epoch.
    step = train_mimo_unet.make_step(config, steps_per_epoch=525, total_steps=3000 * 525)
    assert step.model_name == "mimo_unet" and step.fft_weight == 0.1
    assert (step.beta_1, step.beta_2, step.epsilon) == (0.9, 0.999, 1e-8)
    schedule = step.schedule.get_config()
    assert schedule["milestones"] == [500, 1000, 1500, 2000, 2500, 3000]
    for epoch, rate in ((0, 1e-4), (499, 1e-4), (500, 5e-5), (1000, 2.5e-5), (2999, 3.125e-6)):
        assert float(step.schedule(epoch * 525)) == pytest.approx(rate)
    quick = train_mimo_unet.quick(config)
    assert quick.schedule.learning_rate == 2e-4 and quick.paper.num_res == 2
    assert quick.data.crop_size == 64 and quick.schedule.max_steps == 300
    assert quick.data.val_images == 4 and quick.data.batch_size == 4
    assert train_mimo_unet.paper_config() == config  # a preset returns a new config


def test_flags_become_the_config_once():
    """The command line over the preset over the recipe; a preset parsed before the paper defaults
    in one process leaves nothing behind."""
    with parsed_flags("train_mimo_unet.py", "--preset=quick", "--crop_size=32"):
        config = train_mimo_unet.config_from_flags()
    assert config.preset == "quick" and config.data.crop_size == 32
    assert config.schedule.max_steps == 300 and config.paper.num_res == 2
    with parsed_flags("train_mimo_unet.py"):
        assert train_mimo_unet.config_from_flags() == train_mimo_unet.paper_config()


def test_model_kwargs_merge_with_the_flags():
    args = ["--model_kwargs", '{"num_res": 3, "dropout_rate": 0.1}', "--base_channels=8"]
    with parsed_flags("train_mimo_unet.py", *args):
        config = train_mimo_unet.config_from_flags()
    assert config.paper.num_res == 3  # the key with a flag sets the field (checks and logs agree)
    assert train_mimo_unet.model_kwargs(config) == {
        "num_res": 3,
        "base_channels": 8,
        "dropout_rate": 0.1,
    }
    args = ["--preset=quick", "--model_kwargs", '{"num_res": 1, "init": "glorot"}']
    with parsed_flags("train_mimo_unet.py", *args):
        config = train_mimo_unet.config_from_flags()  # wins over the preset's num_res 2
    assert train_mimo_unet.model_kwargs(config) == {"num_res": 1, "init": "glorot"}


# ---- bad inputs: one clear line, non-zero exit, no traceback ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data_dir=/no/such/folder"], "/no/such/folder does not exist"),
        (["--variant=mimo_unet_pp"], "mimo_unet_plus"),
        (["--crop_size=30"], "multiple of 4"),
        (["--preset=fast"], "quick"),
        (["extra_argument"], "unexpected arguments"),
        (['--model_kwargs={"num_blocks": 2}'], "mimo_unet has no argument 'num_blocks'"),
        (["--model_kwargs=[1]"], "--model_kwargs must be a JSON object"),
        (["--model_kwargs={num_res: 2}"], "--model_kwargs is not valid JSON"),
        (['--model_kwargs={"num_res": 0}'], "num_res=0 is not valid"),
        (
            ["--num_res=1", '--model_kwargs={"num_res": 2}'],
            "--model_kwargs sets num_res=2 but --num_res is 1",
        ),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    # In this process (the command line's exit code and one stderr line: the subprocess tests
    # below and tests/test_cli.py).
    error = run_command(train_mimo_unet, *args, f"--run_dir={tmp_path / 'run'}")
    assert isinstance(error, str) and "\n" not in error, error
    assert error.startswith("train_mimo_unet.py: error: ") and message in error, error
    assert not (tmp_path / "run").exists()


def _one_error_line(proc, script="train_mimo_unet.py"):
    """The single stderr line of a refused command (exit 1, no traceback, nothing aborted)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{script}: error: ")
    return lines[0]


@pytest.mark.parametrize("where", ["train", "test"])
def test_damaged_image_refuses_with_one_line_naming_it(tmp_path, where):
    """A PNG with 200 bytes damaged inside its image data (header and IEND intact) passes the
    start-up check; training (train split) or the validation loading at start-up (test split)
    then stops with one line naming the file, exit 1, no "Fatal Python error"; the steps done
    before are checkpointed, and a run that never started leaves no run folder."""
    data = tmp_path / "data"
    write_split(data, "train", 8, size=(96, 96))
    write_split(data, "test", 2, size=(96, 96), seed=1)
    bad = damage_png(data / where / "SEQ1" / "blur" / "000001.png")
    run = tmp_path / "run"
    proc = _run([f"--data_dir={data}", f"--run_dir={run}", "--max_steps=4", *TINY_ARGS])
    line = _one_error_line(proc)
    assert line == (
        f"train_mimo_unet.py: error: {bad}: damaged PNG data (checksum mismatch in the IDAT "
        "chunk at byte 33)."
    )
    assert "Fatal Python error" not in proc.stderr
    trained = [int(x.split()[1].split("/")[0]) for x in proc.stdout.splitlines() if "ETA" in x]
    if where == "test":  # validation images are decoded at start-up: no step, no run folder
        assert not trained and not run.exists()
    else:  # the steps before the damaged batch are saved (here: the seeded order reaches it late)
        assert trained and _latest_step(run) == trained[-1] < 4


def test_a_bad_validation_file_is_an_error_a_missing_split_a_warning(tmp_path):
    """Only a split folder that does not exist turns validation off (with a warning); a bad file
    in an existing validation split stops the command, naming the file."""
    import data
    from training import inputs

    write_split(tmp_path, "test", 3, size=(40, 40))
    messages = []
    assert inputs.load_validation(str(tmp_path), split="val", log=messages.append) is None
    assert "WARNING: no validation" in messages[0] and "split folder not found" in messages[0]
    bad = tmp_path / "test" / "SEQ0" / "sharp" / "000002.png"
    bad.write_bytes(bad.read_bytes()[:-20])  # truncated: the header check at opening finds it
    with pytest.raises(data.DataError, match=rf"^{bad}: truncated PNG"):
        inputs.load_validation(str(tmp_path), log=messages.append)
    assert len(messages) == 1


def _fake_run(run_dir, **config):
    """A run folder as another command left it: its run_config.json and a (never restored)
    checkpoint; the refusal must come before any restore."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-5.index").write_bytes(b"")
    (run_dir / "checkpoints" / "ckpt-5.data-00000-of-00001").write_bytes(b"")
    (run_dir / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-5"\nall_model_checkpoint_paths: "ckpt-5"\n'
    )
    recorded = {"paper": "mimo_unet", "model": "mimo_unet", "model_kwargs": {}, **config}
    (run_dir / "run_config.json").write_text(json.dumps(recorded))
    return sorted(p.name for p in run_dir.rglob("*"))


@pytest.mark.parametrize(
    ("script", "recorded", "args", "difference"),
    [
        (
            "train_mimo_unet.py",
            {"paper": "idc", "model": "idc", "model_kwargs": {"n_scales": 3}},
            [],
            "model is 'idc' there, 'mimo_unet' in this command",
        ),
        (
            "train_two_way.py",
            {"model_kwargs": {"num_res": 1, "base_channels": 8}},
            [],
            "model is 'mimo_unet' there, 'two_way' in this command",
        ),
        (
            "train_mimo_unet.py",
            {"model_kwargs": {"num_res": 1, "base_channels": 8}},
            ["--num_res=2"],
            "model_kwargs.num_res is 1 there, 2 in this command",
        ),
    ],
)
def test_resume_into_another_run_is_refused_by_name(
    tmp_path, gopro_like, script, recorded, args, difference
):
    run = tmp_path / "run"
    before = _fake_run(run, **recorded)
    tiny = [a for a in TINY_ARGS if not (args and a.startswith("--num_res"))]
    module = importlib.import_module(script[: -len(".py")])
    line = run_command(module, f"--data_dir={gopro_like}", f"--run_dir={run}", *tiny, *args)
    assert isinstance(line, str) and line.startswith(f"{script}: error: "), line
    assert difference in line and f"{run} holds another run" in line, line
    assert "Shapes" not in line and sorted(p.name for p in run.rglob("*")) == before


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_unusable_run_dir_refuses_with_one_line(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    run = blocker
    if kind == "unwritable":
        run = "/proc/deblur_zoo_run"
        if os.geteuid() != 0:
            (tmp_path / "locked").mkdir(mode=0o500)
            run = tmp_path / "locked" / "run"
    proc = _run([f"--run_dir={run}", *TINY_ARGS])
    line = _one_error_line(proc)
    assert f"--run_dir {run}" in line and ("is a file" in line or "not writable" in line)


def test_data_error_exits_nonzero(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    error = run_command(
        train_mimo_unet, f"--data_dir={tmp_path / 'empty'}", f"--run_dir={tmp_path / 'run'}"
    )
    assert isinstance(error, str) and error.startswith("train_mimo_unet.py: error:"), error


def test_multi_worker_needs_tf_config(tmp_path, gopro_like):
    env_args = [
        f"--data_dir={gopro_like}",
        f"--run_dir={tmp_path / 'run'}",
        "--strategy=multi_worker",
    ]
    proc = _run(env_args + TINY_ARGS)
    assert proc.returncode != 0 and "TF_CONFIG" in proc.stderr, proc.stderr[-2000:]


# ---- real runs ----------------------------------------------------------------------------------


def _latest_step(run_dir):
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


@pytest.mark.slow
def test_train_kill_and_resume(tmp_path, gopro_like):
    run = tmp_path / "run"
    args = [
        f"--data_dir={gopro_like}",
        f"--run_dir={run}",
        "--checkpoint_every=1",
        "--val_every_steps=3",
        *TINY_ARGS,
    ]
    # First run: killed with SIGKILL (no chance to save) once a checkpoint exists.
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *args, "--max_steps=1000"],
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while (_latest_step(run) or 0) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run ended early"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = _latest_step(run)
    assert killed_at is not None and killed_at >= 2
    # What a kill in the middle of a save leaves (TensorFlow's sharded-save temporary folder).
    temp = run / "checkpoints" / f"ckpt-{killed_at + 1}_temp"
    temp.mkdir(exist_ok=True)
    (temp / "part-00000-of-00001.index").write_bytes(b"partial")

    # Second run, same command: resumes from the last checkpoint and finishes.
    proc = _run([*args, f"--max_steps={killed_at + 3}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Resumed from {run / 'checkpoints' / f'ckpt-{killed_at}'}" in proc.stdout
    assert f"Removed a leftover of an interrupted run: {temp}" in proc.stdout
    changed = f"Resuming with changed settings: schedule.max_steps 1000 -> {killed_at + 3}."
    assert changed in proc.stdout
    assert _latest_step(run) == killed_at + 3 and not list(run.rglob("*_temp"))
    config = json.loads((run / "run_config.json").read_text())
    assert config["model"] == "mimo_unet" and config["paper"] == "mimo_unet"
    assert config["model_kwargs"] == {"num_res": 1, "base_channels": 8}
    assert config["config"]["data"]["crop_size"] == 32 and config["steps_per_epoch"] == 4
    assert config["resumed_from_step"] == killed_at
    assert "test split" in config["validation"]
    best = json.loads((run / "best" / "best.json").read_text())
    assert np.isfinite(best["psnr"]) and best["step"] > 0
    assert (run / "final.weights.h5").is_file()
    assert "validation @ step" in proc.stdout and "ETA" in proc.stdout


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_workers(args, count=2, timeout=300):
    """Runs ``count`` copies of the script as one TF_CONFIG cluster on loopback; returns
    [(returncode, stdout, stderr)] by worker index (0 = chief)."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(count)]}
    procs = []
    for index in range(count):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                [sys.executable, SCRIPT, *args],
                env=dict(env(), TF_CONFIG=tf_config),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    return [(proc.returncode, *out) for proc, out in zip(procs, outputs, strict=True)]


@pytest.mark.slow
def test_two_workers_train_and_resume(tmp_path, gopro_like):
    run = tmp_path / "run"
    args = [
        f"--data_dir={gopro_like}",
        f"--run_dir={run}",
        "--strategy=multi_worker",
        "--checkpoint_every=1",
        *TINY_ARGS,
    ]
    for max_steps in (2, 3):  # the second command resumes the first run on both workers
        results = _run_workers([*args, f"--max_steps={max_steps}"])
        for code, _, stderr in results:
            assert code == 0, stderr[-3000:]
    assert _latest_step(run) == 3
    assert f"Resumed from {run / 'checkpoints' / 'ckpt-2'}" in results[0][1]
    config = json.loads((run / "run_config.json").read_text())
    # MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy.
    assert "(2 replica(s), task worker:0;" in config["strategy"]
    assert config["resumed_from_step"] == 2
    assert (run / "final.weights.h5").is_file()
    assert not (run / ".workers").exists()  # the non-chief's scratch checkpoints are gone


@pytest.mark.slow
def test_missing_validation_split_warns_and_trains(tmp_path):
    write_split(tmp_path / "data", "train", 4, size=(40, 40))
    run = tmp_path / "run"
    proc = _run(
        [f"--data_dir={tmp_path / 'data'}", f"--run_dir={run}", "--max_steps=2", *TINY_ARGS]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: no validation" in proc.stdout
    assert _latest_step(run) == 2 and not (run / "best" / "best.json").exists()
    assert json.loads((run / "run_config.json").read_text())["validation"] == "none"
