"""Every command-line script: ``--help`` lists the script's own flags with their defaults, exits 0
and imports no TensorFlow (so it answers in about a second); the TF-free flag modules state the
registry's names."""

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

# script -> flags its --help must list (its own, and shared ones it uses)
SCRIPTS = {
    "train_mimo_unet.py": ["--variant", "--run_dir", "--preset"],
    "train_idc.py": ["--run_dir", "--preset"],
    "train_two_way.py": ["--run_dir", "--preset"],
    "train_gradientnet.py": ["--run_dir", "--preset", "--vgg_weights", "--content_weight"],
    "train_sen.py": ["--stage", "--u_max", "--init_from", "--sen_joint_finetune", "--sen_output"],
    "evaluate.py": ["--out_dir", "--save_images", "--overwrite", "--data_dir", "--checkpoint"],
    "export.py": ["--out", "--overwrite", "--verify", "--weights", "--self_ensemble"],
    "deblur.py": ["--tile", "--memory_budget_gb", "--overwrite", "--input", "--saved_model"],
    "convert_mimo_unet.py": ["--src", "--variant", "--out"],
    "evaluate_flow.py": ["--data_dir", "--u_max", "--max_images", "--out_dir", "--checkpoint"],
    "show_flow.py": ["--input", "--grid", "--max_flow", "--overwrite", "--saved_model"],
    "train_rpgan.py": ["--sen_checkpoint", "--pretrain_epochs", "--buffer_size", "--use_dp"],
    "experiments_rpgan.py": [
        "--table",
        "--checkpoint",
        "--no_dp_checkpoint",
        "--levels_list",
        "--out",
    ],
}

# Runs the script as __main__ with --help and reports its exit status and what got imported.
HELP_PROBE = """
import runpy, sys
script = sys.argv[1]
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
    code = None
except SystemExit as stop:
    code = stop.code
print("PROBE", code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_own_flags_exits_0_without_tensorflow(script):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - start
    print(f"{script} --help: {seconds:.2f} s")  # recorded (pytest -s / -rA), never asserted
    assert done.returncode == 0, done.stderr[-2000:]
    *text, probe = done.stdout.rstrip().splitlines()
    assert probe == "PROBE 0 False False", (probe, done.stderr[-2000:])
    text = "\n".join(text)
    assert "(default:" in text and "--[no]tf_logs" in text
    for flag in SCRIPTS[script]:
        assert f"  {flag}" in text or f"  --[no]{flag[2:]}" in text, (flag, text)
    assert "Try --helpfull" not in text


@pytest.mark.parametrize(
    "argv",
    [
        ["train_sen.py", "--batch_size=-3"],
        ["evaluate.py", "--limit=-1"],
        ["deblur.py", "--no_such_flag"],
        ["-m", "data.make_synthetic", "--size", "8"],
    ],
    ids=["out-of-range", "negative", "unknown", "module"],
)
def test_bad_flag_value_is_one_line_and_exit_1(argv):
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], done.stderr
    assert "FATAL" not in done.stderr and "Traceback" not in done.stderr


def test_help_of_a_real_process_exits_0():
    done = subprocess.run(
        [sys.executable, "deblur.py", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--tile: Tile side in pixels" in done.stdout
    assert "(default: 'auto')" in done.stdout


def test_tensorflow_free_names_match_the_registry():
    import metrics
    import models
    from cli import inference_flags
    from models import inference

    assert list(inference_flags.MODEL_NAMES) == models.model_names()
    assert list(inference_flags.FLOW_MODEL_NAMES) == models.flow_estimator_names()
    assert tuple(inference_flags.ENSEMBLE_MODES) == tuple(inference.ENSEMBLE_MODES)
    assert tuple(inference_flags.METRIC_CONVENTIONS) == tuple(metrics.CONVENTIONS)
