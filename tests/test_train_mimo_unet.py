"""Tests of train_mimo_unet.py as a user runs it: bad inputs, a tiny run on the real data layer,
kill -9 and resume, a missing validation split.

The data sets are a few small PNG pairs in the GoPro layout written here (the reader and pipeline
of data/ are the real ones); the model is MIMO-UNet with 1 residual block and 8 channels.
"""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _env():
    return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(args, timeout=300):
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def _write_split(root, split, n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        seq = root / split / f"SEQ{i % 2}"
        sharp = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (3, 3), 1)
        blur = cv2.blur(sharp, (5, 1))
        for kind, image in (("blur", blur), ("sharp", sharp)):
            (seq / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(seq / kind / f"{i:06d}.png"), image)


@pytest.fixture(scope="module")
def gopro_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("gopro_like")
    _write_split(root, "train", 8)
    _write_split(root, "test", 3, seed=1)
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
        env=_env(),
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


@pytest.mark.slow
def test_missing_validation_split_warns_and_trains(tmp_path):
    _write_split(tmp_path / "data", "train", 4)
    run = tmp_path / "run"
    proc = _run(
        [f"--data_dir={tmp_path / 'data'}", f"--run_dir={run}", "--max_steps=2", *TINY_ARGS]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: no validation" in proc.stdout
    assert _latest_step(run) == 2 and not (run / "best" / "best.json").exists()
    assert json.loads((run / "run_config.json").read_text())["validation"] == "none"
