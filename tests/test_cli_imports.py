"""Every command-line script can be imported with every other in one process, in any order
(absl refuses a flag defined twice; shared names are defined once)."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = [
    "train_mimo_unet",
    "train_idc",
    "train_two_way",
    "train_gradientnet",
    "train_sen",
    "train_rpgan",
    "evaluate",
    "evaluate_flow",
    "show_flow",
    "export",
    "deblur",
    "convert_mimo_unet",
    "experiments_rpgan",
]


@pytest.mark.parametrize("order", [SCRIPTS, SCRIPTS[::-1]], ids=["forward", "reverse"])
def test_scripts_import_together(order):
    code = "; ".join(f"import {name}" for name in order)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-1500:]
