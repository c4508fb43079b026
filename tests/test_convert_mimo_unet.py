"""convert_mimo_unet.py: the acceptance path (fixture .npz -> .weights.h5 -> outputs match)."""

import subprocess
import sys

import numpy as np
import pytest

import convert_mimo_unet
import models
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def fixture_path(shared_dir):
    return shared_dir / "fixtures" / "mimo_unet" / "mimo_unet_seed0.npz"


def test_converted_fixture_matches_official_outputs(fixture_path, tmp_path):
    out = tmp_path / "mimo.weights.h5"
    assert convert_mimo_unet.convert(str(fixture_path), str(out)) == "mimo_unet"
    model = models.build_model("mimo_unet")
    model.build((None, None, None, 3))
    model.load_weights(str(out))
    arrays = np.load(fixture_path)
    outputs = model(arrays["input_nhwc"])
    for k in range(3):
        expected = arrays[f"output_{k}"].transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(outputs[k]), expected, atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimo.weights.h5"]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "convert_mimo_unet.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_refuses_bad_input_without_writing(fixture_path, tmp_path):
    out = tmp_path / "x.weights.h5"
    wrong = run_cli("--src", str(fixture_path), "--variant", "mimo_unet_plus", "--out", str(out))
    assert wrong.returncode != 0
    assert "missing (288)" in wrong.stderr and "wrong variant" in wrong.stderr
    missing = run_cli("--src", str(tmp_path / "nope.pkl"), "--out", str(out))
    assert missing.returncode != 0 and "no such file" in missing.stderr
    assert not any(tmp_path.iterdir())


def test_pkl_without_torch_gives_install_hint(tmp_path, monkeypatch):
    from models.mimo_unet_weights import CheckpointError, read_checkpoint

    path = tmp_path / "MIMO-UNet.pkl"
    path.write_bytes(b"not a pickle")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match="requirements-torch.txt"):
        read_checkpoint(str(path))
