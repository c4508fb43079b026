"""export.py: SavedModel round trip (float32 and uint8 signatures, odd sizes), atomicity, stale
temporaries, umask modes, output checks before the model, errors."""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import export
import models
from inference import model_io, signatures, sources
from models import inference
from tests.train_checks import run_main

FLAGS = flags.FLAGS
TINY = {"num_res": 1, "base_channels": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, weights path, SavedModel path) of a tiny MIMO-UNet, exported once."""
    model = models.build_model("mimo_unet", **TINY)
    model.build((None, None, None, 3))
    folder = tmp_path_factory.mktemp("export")
    weights = str(folder / "tiny.weights.h5")
    model.save_weights(weights)
    out = export.export(model, str(folder / "saved"), metadata={"model": "mimo_unet"})
    return model, weights, out


@pytest.fixture(scope="module")
def loaded(tiny):
    return tf.saved_model.load(tiny[2])


def test_round_trip_odd_size_float_and_uint8(tiny, loaded):
    model = tiny[0]
    images = np.random.default_rng(1).random((2, 37, 53, 3), dtype=np.float32)
    expected = inference.restore(model, images).numpy()
    got = loaded.signatures["serving_default"](images=tf.constant(images))["restored"].numpy()
    assert got.shape == (2, 37, 53, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    as_uint8 = np.rint(images * 255).astype(np.uint8)
    got8 = loaded.signatures["serving_uint8"](images=tf.constant(as_uint8))["restored"].numpy()
    assert got8.dtype == np.uint8 and got8.shape == (2, 37, 53, 3)
    reference = inference.restore(model, as_uint8 / np.float32(255)).numpy()
    reference8 = np.rint(np.clip(reference, 0, 1) * 255)
    assert np.abs(got8.astype(int) - reference8).max() <= 1
    assert np.mean(got8 == reference8) > 0.999


def test_metadata_and_no_temporary_folders_left(tiny, loaded):
    path = tiny[2]
    info = json.loads(loaded.metadata_json.numpy().decode())
    assert info["model"] == "mimo_unet" and info["size_multiple"] == 4
    assert info["self_ensemble"] == "none"
    with open(os.path.join(path, "assets.extra", signatures.EXPORT_INFO)) as handle:
        assert json.load(handle) == info
    assert [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".")] == []


def test_saved_model_restorer_with_self_ensemble_matches_keras(tiny):
    model, _, path = tiny
    image = np.random.default_rng(2).random((1, 21, 30, 3), dtype=np.float32)
    restorer = model_io.load_restorer(saved_model=path, self_ensemble="rot4")
    expected = inference.restore(model, image, "rot4").numpy()
    np.testing.assert_allclose(restorer(image).numpy(), expected, atol=1e-5)
    assert restorer.source["model"] == "mimo_unet" and restorer.source["self_ensemble"] == "rot4"


def test_saved_model_restorer_under_xla(tiny):
    model, _, path = tiny
    image = np.random.default_rng(3).random((1, 17, 26, 3), dtype=np.float32)
    restorer = model_io.load_restorer(saved_model=path, jit_compile=True)
    np.testing.assert_allclose(
        restorer(image).numpy(), inference.restore(model, image).numpy(), atol=1e-5
    )


@pytest.mark.slow
def test_main_exports_over_existing_out_only_with_overwrite(tiny, tmp_path, capsys):
    source = ["--weights", tiny[1], "--model", "mimo_unet", "--model_kwargs", json.dumps(TINY)]
    out = tmp_path / "cli"
    out.mkdir()
    (out / "old.txt").write_text("an earlier export")
    assert "pass --overwrite" in run_main(export, *source, "--out", str(out))
    assert run_main(export, *source, "--out", str(out), "--overwrite", "--noverify") == 0
    assert "Exported mimo_unet (weights " in capsys.readouterr().out
    assert (out / "saved_model.pb").is_file() and not (out / "old.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["cli"]  # no temporary or moved-aside folders left


def test_main_refuses_bad_inputs(tiny, tmp_path):
    out = str(tmp_path / "cli")
    weights, net = ["--weights", tiny[1]], ["--model", "mimo_unet"]
    cases = {
        "--out is required": weights + net,
        "no such file": ["--weights", str(tmp_path / "no.weights.h5"), *net, "--out", out + "2"],
        "not registered": [*weights, "--model", "no_such_net", "--out", out + "3"],
        "do not fit": [
            *weights,
            *net,
            "--model_kwargs",
            '{"num_res": 2, "base_channels": 8}',
            "--out",
            out + "4",
        ],
        "already an export": ["--saved_model", out, "--out", out + "5"],
        "valid JSON": [*weights, *net, "--model_kwargs", "{num", "--out", out + "6"],
        "either --checkpoint or --weights": [
            *weights,
            "--checkpoint",
            out,
            *net,
            "--out",
            out + "7",
        ],
    }
    for message, args in cases.items():
        code = run_main(export, *args)
        assert isinstance(code, str) and message in code, (message, code)
    assert not any(os.path.exists(out + str(i)) for i in range(2, 8))


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_and_modes_follow_the_umask(tiny, tmp_path):
    """A killed export's `.out.tmp-<pid>-x/` goes at the next export; a live process's stays.
    Under umask 022 the export is 0755 with 0644 files (not mkdtemp's 0700)."""
    model = tiny[0]
    dead = tmp_path / f".out.tmp-{_dead_pid()}-abc"
    live = tmp_path / f".out.tmp-{os.getppid()}-def"
    for folder in (dead, live):
        (folder / "variables").mkdir(parents=True)
        (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"x" * 1000)
    previous = os.umask(0o022)
    try:
        out = export.export(model, str(tmp_path / "out"), verify=False)
    finally:
        os.umask(previous)
    assert not dead.exists() and live.exists()
    assert sorted(os.listdir(tmp_path)) == [live.name, "out"]
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    for root, dirs, files in os.walk(out):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o755, name
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o644, name


def test_out_is_checked_before_the_model_is_loaded(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "done").mkdir()
    source = ["--weights", str(tmp_path / "missing.weights.h5"), "--model", "mimo_unet"]
    cases = {
        "is a file, not a folder": tmp_path / "file",
        "is under the file": tmp_path / "file" / "export",
        "done exists; pass --overwrite": tmp_path / "done",
        "missing.weights.h5: no such file": tmp_path / "new",
    }
    for message, out in cases.items():
        code = run_main(export, *source, "--out", str(out))
        assert isinstance(code, str) and code.startswith("export.py: error: ") and message in code
    assert sorted(os.listdir(tmp_path)) == ["done", "file"]


# --------------------------------------------------------------------------------------------------
# Flow estimators (SEN)
# --------------------------------------------------------------------------------------------------

TINY_SEN = {"width_divisor": 16}


@pytest.mark.slow
def test_sen_export_round_trip_through_main(tmp_path, capsys):
    """export.py on tiny SEN weights, then the SavedModel equals the Keras model within 1e-5 on an
    odd size through both signatures, loaded by the flow loader (verification is left to
    test_restorer_and_flow_sources_are_not_mixed, on a fast model: a SEN reload costs seconds)."""
    from inference import flow_io

    model = models.build_flow_estimator("sen", **TINY_SEN)
    model.build((None, None, None, 3))
    weights = str(tmp_path / "sen.weights.h5")
    model.save_weights(weights)
    out = tmp_path / "sen_export"
    args = ["--weights", weights, "--model", "sen", "--model_kwargs", json.dumps(TINY_SEN)]
    assert run_main(export, *args, "--out", str(out), "--noverify") == 0
    assert "Exported sen (flow estimator) (weights " in capsys.readouterr().out

    estimator = flow_io.load_flow_estimator(saved_model=str(out))
    info = json.loads((out / "assets.extra" / signatures.EXPORT_INFO).read_text())
    assert info["task"] == "flow_estimator" and info["size_multiple"] == 64
    assert estimator.source["model"] == "sen" and estimator.source["model_kwargs"] == TINY_SEN
    images = np.random.default_rng(4).random((1, 37, 53, 3), dtype=np.float32)
    expected = flow_io.estimate_flow(model, tf.constant(images)).numpy()
    got = estimator(images).numpy()
    assert got.shape == (1, 37, 53, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    as_uint8 = np.rint(images * 255).astype(np.uint8)
    got8 = estimator.fn.loaded.signatures["serving_uint8"](images=tf.constant(as_uint8))["flow"]
    expected8 = flow_io.estimate_flow(model, tf.constant(as_uint8 / np.float32(255))).numpy()
    np.testing.assert_allclose(got8.numpy(), expected8, atol=1e-5)


def test_restorer_and_flow_sources_are_not_mixed(tiny, tmp_path):
    """A flow export given to the restorer loader and a restorer export given to the flow loader
    are refused in one line naming the path and what it holds."""
    import keras

    from inference import flow_io

    inputs = keras.Input((None, None, 3))
    standin = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))
    flow_path = export.export(standin, str(tmp_path / "flow"))  # task from its 2 channels
    assert export.verify_flow_export(standin, flow_path, atol=1e-6) < 1e-5
    with pytest.raises(sources.ModelSourceError, match="holds a flow estimator, not a deblurring"):
        model_io.load_restorer(saved_model=flow_path)
    with pytest.raises(sources.ModelSourceError, match="holds a deblurring model \\(model 'mimo"):
        flow_io.load_flow_estimator(saved_model=tiny[2])
    with pytest.raises(export.ExportError, match="not available for flow estimators"):
        export.export(standin, str(tmp_path / "f2"), self_ensemble="rot4", verify=False)
    code = run_main(export, "--weights", tiny[1], "--model", "sen", "--out", str(tmp_path / "x"))
    assert isinstance(code, str) and "disagrees" not in code and "these weights do not fit" in code
