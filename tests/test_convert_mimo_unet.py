"""convert_mimo_unet.py: the acceptance path (fixture .npz -> .weights.h5 -> outputs match)."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import convert_mimo_unet
import models
from tests.conftest import REPO_ROOT
from tests.process_checks import run_python


@pytest.fixture(scope="module")
def fixture_path(shared_dir):
    return shared_dir / "fixtures" / "mimo_unet" / "mimo_unet_seed0.npz"


def test_converted_fixture_matches_official_outputs(fixture_path, tmp_path):
    out = tmp_path / "mimo.weights.h5"
    stale = tmp_path / f".mimo.weights.h5.tmp-{_dead_pid()}-x"
    stale.mkdir()  # a killed run's temporary folder: removed by the next run
    previous = os.umask(0o022)
    try:
        assert convert_mimo_unet.convert(str(fixture_path), str(out)) == "mimo_unet"
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644
    model = models.build_model("mimo_unet")
    model.build((None, None, None, 3))
    model.load_weights(str(out))
    arrays = np.load(fixture_path)
    outputs = model(arrays["input_nhwc"])
    for k in range(3):
        expected = arrays[f"output_{k}"].transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(outputs[k]), expected, atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mimo.weights.h5"]


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


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
    assert missing.stderr.rstrip().splitlines()[-1].startswith("convert_mimo_unet.py: error: ")
    assert "Traceback" not in missing.stderr and missing.stdout == ""
    assert not any(tmp_path.iterdir())
    (tmp_path / "file").write_text("x")
    under = run_cli("--src", str(fixture_path), "--out", str(tmp_path / "file" / "x.weights.h5"))
    assert under.returncode == 1 and "is under the file" in under.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    # An existing output is refused before the checkpoint is read, as in every command.
    (tmp_path / "old.weights.h5").write_text("previous result")
    exists = run_cli("--src", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "old.weights.h5"))
    assert exists.returncode == 1 and "exists; pass --overwrite" in exists.stderr
    assert (tmp_path / "old.weights.h5").read_text() == "previous result"


def test_pkl_without_torch_gives_install_hint(tmp_path, monkeypatch):
    from models.mimo_unet_weights import CheckpointError, read_checkpoint

    path = tmp_path / "MIMO-UNet.pkl"
    path.write_bytes(b"not a pickle")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match="requirements-torch.txt"):
        read_checkpoint(str(path))


@pytest.mark.parametrize("legacy_format", [False, True])
def test_official_pickle_format_is_read_with_torch(fixture_path, tmp_path, legacy_format):
    """``{'model': state_dict}`` as ``torch.save`` writes it; the released files were saved by
    PyTorch 1.4, whose default was the legacy (non-zip) format."""
    torch = pytest.importorskip("torch")
    arrays = np.load(fixture_path)
    state = {k: torch.from_numpy(arrays[k]) for k in arrays.files if "." in k}
    src = tmp_path / "MIMO-UNet.pkl"
    torch.save({"model": state, "epoch": 3}, src, _use_new_zipfile_serialization=not legacy_format)
    from models.mimo_unet_weights import read_checkpoint

    loaded = read_checkpoint(str(src))
    assert list(loaded) == list(state)
    np.testing.assert_array_equal(
        loaded["SCM1.conv.main.0.weight"], arrays["SCM1.conv.main.0.weight"]
    )


def test_model_runs_under_the_torch_backend(fixture_path):
    """models/ uses keras.ops only: the same weights give the same outputs under PyTorch."""
    pytest.importorskip("torch")
    code = (
        "import numpy as np, models;"
        "from models.mimo_unet_weights import load_state_dict, read_checkpoint;"
        f"p = {str(fixture_path)!r}; a = np.load(p);"
        "m = models.build_model('mimo_unet'); load_state_dict(m, read_checkpoint(p));"
        "o = m(a['input_nhwc']);"
        "print(max(float(np.abs(o[k].detach().numpy() - a[f'output_{k}'].transpose(0, 2, 3, 1))"
        ".max()) for k in range(3)))"
    )
    result = run_python(["-c", code], env={"KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-5
