"""Tests of train_mimo_unet.py as a user runs it: bad inputs, a tiny run on the real data layer,
kill -9 and resume, two workers under MultiWorkerMirroredStrategy, a missing validation split.

The data sets are a few small PNG pairs in the GoPro layout written here (the reader and pipeline
of data/ are the real ones); the model is MIMO-UNet with 1 residual block and 8 channels.
"""

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

from tests.train_checks import REPO, env, run_script, write_split

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


# ---- bad inputs: one clear line, non-zero exit, no traceback ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data_dir=/no/such/folder"], "/no/such/folder does not exist"),
        (["--variant=mimo_unet_pp"], "mimo_unet_plus"),
        (["--crop_size=30"], "multiple of 4"),
        (["--preset=fast"], "quick"),
        (["extra_argument"], "unexpected arguments"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(args, message, tmp_path):
    proc = _run([*args, f"--run_dir={tmp_path / 'run'}"])
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_data_error_exits_nonzero(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    proc = _run([f"--data_dir={tmp_path / 'empty'}", f"--run_dir={tmp_path / 'run'}", *TINY_ARGS])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "train_mimo_unet.py: error:" in proc.stderr


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

    # Second run, same command: resumes from the last checkpoint and finishes.
    proc = _run([*args, f"--max_steps={killed_at + 3}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Resumed from {run / 'checkpoints' / f'ckpt-{killed_at}'}" in proc.stdout
    assert _latest_step(run) == killed_at + 3
    config = json.loads((run / "run_config.json").read_text())
    assert config["model"] == "mimo_unet" and config["paper"] == "mimo_unet"
    assert config["model_kwargs"] == {"num_res": 1, "base_channels": 8}
    assert config["flags"]["crop_size"] == 32 and config["steps_per_epoch"] == 4
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
