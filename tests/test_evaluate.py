"""evaluate.py and the model loader: metrics, outputs, model sources, tracing, bad inputs,
outputs checked before the model, damaged images, quiet console with results on stdout."""

import csv
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import evaluate
import metrics
import models
from inference import model_io, sources
from models import inference
from tests.bad_files import write_damaged_png
from tests.process_checks import run_python
from tests.train_checks import REPO, run_main
from training.tracking import track_layer_lists

FLAGS = flags.FLAGS
TINY = {"num_res": 1, "base_channels": 8}
SIZES = [(24, 36), (23, 31), (17, 40)]  # odd sides exercise the padding; >= 11 for SSIM


def write_png(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """``test/{blur,sharp}/<name>.png``; image 'c' has blur == sharp (PSNR +inf)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, (h, w) in zip("abc", SIZES, strict=True):
        sharp = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        blur = sharp if name == "c" else cv2.GaussianBlur(sharp, (5, 5), 1.0)
        write_png(root / "test" / "blur" / f"{name}.png", blur)
        write_png(root / "test" / "sharp" / f"{name}.png", sharp)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, weights path) of a tiny MIMO-UNet."""
    model = models.build_model("mimo_unet", **TINY)
    model.build((None, None, None, 3))
    path = str(tmp_path_factory.mktemp("weights") / "tiny.weights.h5")
    model.save_weights(path)
    return model, path


def identity_restorer():
    return sources.Restorer(lambda x: x, {"kind": "identity"}, None)


def test_metrics_outputs_and_identical_images(dataset, tmp_path):
    data_info, pairs = evaluate.open_pairs(str(dataset), "test", "blur")
    rows = evaluate.evaluate(identity_restorer(), pairs)
    assert [r["name"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert math.isinf(rows[2]["psnr"]) and rows[2]["ssim"] == pytest.approx(1.0)
    blur = cv2.imread(str(dataset / "test" / "blur" / "a.png"))[..., ::-1]
    sharp = cv2.imread(str(dataset / "test" / "sharp" / "a.png"))[..., ::-1]
    assert rows[0]["psnr"] == pytest.approx(metrics.psnr(blur, sharp), abs=1e-9)
    assert rows[0]["ssim"] == pytest.approx(metrics.ssim(blur, sharp), abs=1e-9)
    summary = evaluate.summarize(rows, identity_restorer(), data_info, "uint8")
    assert summary["num_identical"] == 1 and "left out" in summary["note"]
    assert summary["psnr_mean"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)
    assert summary["ssim_mean"] == pytest.approx(np.mean([r["ssim"] for r in rows]))
    # The identity restorer's output is the blurred input, so the baseline equals the result.
    assert summary["input_psnr_mean"] == pytest.approx(summary["psnr_mean"])
    assert summary["psnr_gain_mean"] == pytest.approx(0.0)  # over a.png and b.png only
    assert all(r["input_ssim"] == pytest.approx(r["ssim"]) for r in rows)
    evaluate.write_results(str(tmp_path), rows, summary)
    assert json.loads((tmp_path / "summary.json").read_text())["num_images"] == 3
    with open(tmp_path / "per_image.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [t["name"] for t in table] == ["a.png", "b.png", "c.png"] and table[2]["psnr"] == "inf"
    assert sorted(os.listdir(tmp_path)) == ["per_image.csv", "summary.json"]


def test_main_with_weights_saves_images_and_traces_once(dataset, tiny, tmp_path):
    model, weights = tiny
    out, images = tmp_path / "out", tmp_path / "images"
    args = [
        "--weights",
        weights,
        "--model",
        "mimo_unet",
        "--model_kwargs",
        json.dumps(TINY),
        "--data_dir",
        str(dataset),
        "--out_dir",
        str(out),
        "--save_images",
        str(images),
        "--metric_input",
        "float",
        "--warmup",
        "1",
    ]
    assert run_main(evaluate, *args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["metric_input"] == "float"
    assert summary["model_source"]["model"] == "mimo_unet"
    assert summary["model_source"]["model_kwargs"] == TINY
    assert summary["runtime_median_seconds"] > 0 and "CPU" in summary["device"]
    assert set(summary["definitions"]) == {"input", "psnr", "ssim"}
    blur = cv2.imread(str(dataset / "test" / "blur" / "b.png"))[..., ::-1][None] / np.float32(255)
    expected = metrics.to_uint8(inference.restore(model, blur.astype(np.float32)).numpy()[0])
    # Named by the blurred input's path relative to the data root, as --predictions reads them.
    saved = cv2.imread(str(images / "test" / "blur" / "b.png"))[..., ::-1]
    assert saved.shape == (23, 31, 3) and np.abs(saved.astype(int) - expected).max() <= 1


def test_one_trace_for_all_sizes(tiny):
    restorer = sources.keras_restorer(tiny[0])
    for h, w in SIZES + [(40, 12)]:
        assert restorer(np.zeros((1, h, w, 3), np.float32)).shape == (1, h, w, 3)
    assert restorer.fn.experimental_get_tracing_count() == 1


def test_xla_compiled_restorer_matches_and_compiles_per_size(tiny):
    model = tiny[0]
    restorer = model_io.load_restorer(weights=tiny[1], model="mimo_unet", model_kwargs=TINY)
    compiled = model_io.load_restorer(
        weights=tiny[1], model="mimo_unet", model_kwargs=TINY, jit_compile=True
    )
    assert compiled.source["jit_compile"] and not restorer.source["jit_compile"]
    for h, w in SIZES[:2]:
        image = np.random.default_rng(h).random((1, h, w, 3), dtype=np.float32)
        expected = inference.restore(model, image).numpy()
        np.testing.assert_allclose(compiled(image).numpy(), expected, atol=1e-5)
    assert compiled.fn.experimental_get_tracing_count() == 1  # XLA compiles per size below it


def test_keras_file_source(tiny, tmp_path):
    model = tiny[0]
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    restorer = model_io.load_restorer(weights=path)
    image = np.random.default_rng(5).random((1, 15, 22, 3), dtype=np.float32)
    expected = inference.restore(model, image).numpy()
    np.testing.assert_allclose(restorer(image).numpy(), expected, atol=1e-6)
    assert restorer.source["kind"] == "keras"


def _write_run(tmp_path, model, kwargs):
    run = tmp_path / "run"
    track_layer_lists(model)  # as the training loop does before building its checkpoint
    checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, str(run / "checkpoints"), max_to_keep=2).save()
    (run / "run_config.json").write_text(json.dumps({"model": "mimo_unet", "model_kwargs": kwargs}))
    return run


def test_checkpoint_run_dir_restores_the_model(tiny, tmp_path):
    model = tiny[0]
    run = _write_run(tmp_path, model, TINY)
    prefix = tf.train.latest_checkpoint(run / "checkpoints")
    assert len(sources.checkpoint_model_variables(prefix)) == len(model.weights)
    image = np.random.default_rng(3).random((1, 19, 26, 3), dtype=np.float32)
    for path in (run, run / "checkpoints", prefix):
        restorer = model_io.load_restorer(checkpoint=str(path))
        np.testing.assert_allclose(
            restorer(image).numpy(), inference.restore(model, image).numpy(), atol=1e-6
        )
    assert restorer.source["model_kwargs"] == TINY


def test_checkpoint_that_does_not_fit_is_refused(tiny, tmp_path):
    run = _write_run(tmp_path, tiny[0], {"num_res": 2, "base_channels": 8})
    with pytest.raises(sources.ModelSourceError, match="missing from the checkpoint"):
        model_io.load_restorer(checkpoint=str(run))


def test_bad_inputs_exit_nonzero_with_a_clear_message(dataset, tiny, tmp_path):
    weights = tiny[1]
    (tmp_path / "empty").mkdir()
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "noconfig" / "final.weights.h5").write_bytes(b"not hdf5")
    data = ["--data_dir", str(dataset)]
    cases = {
        "no such file": ["--weights", str(tmp_path / "nope.weights.h5"), "--model", "mimo_unet"],
        "not registered": ["--weights", weights, "--model", "resnet"],
        "also pass --model": ["--weights", weights],
        "not a SavedModel directory": ["--saved_model", str(tmp_path / "empty")],
        "no such directory": ["--saved_model", str(tmp_path / "missing")],
        "no checkpoint found": ["--checkpoint", str(tmp_path / "empty")],
        "no run_config.json": ["--checkpoint", str(tmp_path / "noconfig")],
        "exactly one model source": ["--weights", weights, "--saved_model", str(tmp_path)],
        "Give exactly one": [],
    }
    for message, args in cases.items():
        code = run_main(evaluate, *args, *data)
        assert isinstance(code, str) and message in code, (message, code)
    source = ["--weights", weights, "--model", "mimo_unet", "--model_kwargs", json.dumps(TINY)]
    code = run_main(evaluate, *source, "--data_dir", str(tmp_path / "nodata"))
    assert isinstance(code, str) and "nodata" in code and "not found" in code, code


@pytest.mark.slow
def test_memory_stays_flat_over_many_images_of_varying_sizes(tiny):
    """300 images of 60 different sizes: one trace, and no growth of the process's memory."""
    import psutil

    restorer = sources.keras_restorer(tiny[0])
    rng = np.random.default_rng(4)

    def pairs(count):
        for i in range(count):
            h, w = 16 + (i * 7) % 33, 16 + (i * 11) % 37
            sharp = rng.random((h, w, 3), dtype=np.float32)
            yield f"{i:04d}", sharp[None], sharp

    process = psutil.Process()
    evaluate.evaluate(restorer, pairs(60), warmup=1)
    before = process.memory_info().rss
    rows = evaluate.evaluate(restorer, pairs(300), warmup=0)
    growth_mb = (process.memory_info().rss - before) / 2**20
    assert len(rows) == 300 and restorer.fn.experimental_get_tracing_count() == 1
    assert growth_mb < 30, f"memory grew by {growth_mb:.1f} MB over 300 images"


def _source(weights):
    return ["--weights", weights, "--model", "mimo_unet", "--model_kwargs", json.dumps(TINY)]


def test_outputs_are_checked_before_the_model_is_loaded(dataset, tmp_path):
    """Output mistakes are named in words before the (here missing) weights are opened."""
    (tmp_path / "file").write_text("x")
    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text("{}")
    saved = tmp_path / "saved"
    (saved / "test" / "blur").mkdir(parents=True)
    (saved / "test" / "blur" / "b.png").write_bytes(b"an earlier image")
    source = ["--weights", str(tmp_path / "missing.weights.h5"), "--model", "mimo_unet"]
    cases = {
        "--out_dir " + str(tmp_path / "file") + ": is a file, not a folder": [
            "--out_dir",
            str(tmp_path / "file"),
        ],
        "is under the file": ["--save_images", str(tmp_path / "file" / "images")],
        "summary.json exists; pass --overwrite": ["--out_dir", str(done)],
        "b.png exists; pass --overwrite": ["--save_images", str(saved)],
        "missing.weights.h5: no such file": ["--save_images", str(saved), "--overwrite"],
    }
    for message, args in cases.items():
        code = run_main(evaluate, *source, "--data_dir", str(dataset), *args)
        assert isinstance(code, str) and message in code, (message, code)
    code = run_main(evaluate, *source, "--data_dir", str(dataset), "--save_images", str(saved),
                    "--limit", "1")  # fmt: skip
    assert "missing.weights.h5" in code  # only a.png would be written: no conflict
    assert (saved / "test" / "blur" / "b.png").read_bytes() == b"an earlier image"


def test_weights_beside_a_run_config_load_with_its_model(tiny, tmp_path):
    """A run's final.weights.h5 loads with the run's model and kwargs (no --model_kwargs)."""
    model, weights = tiny
    run = tmp_path / "run"
    run.mkdir()
    final = run / "final.weights.h5"
    final.write_bytes(Path(weights).read_bytes())
    (run / "run_config.json").write_text(json.dumps({"model": "mimo_unet", "model_kwargs": TINY}))
    image = np.random.default_rng(7).random((1, 20, 28, 3), dtype=np.float32)
    for name in (None, "mimo_unet"):
        restorer = model_io.load_restorer(weights=str(final), model=name)
        np.testing.assert_allclose(
            restorer(image).numpy(), inference.restore(model, image).numpy(), atol=1e-6
        )
        assert restorer.source["model_kwargs"] == TINY and restorer.source["run_config"]
    with pytest.raises(sources.ModelSourceError, match="disagrees with .*run_config.json"):
        model_io.load_restorer(weights=str(final), model="idc")
    # --model_kwargs given: the file is ignored; a mismatch is one short line, no Keras objects.
    with pytest.raises(sources.ModelSourceError) as caught:
        model_io.load_restorer(weights=str(final), model="mimo_unet", model_kwargs="{}")
    message = str(caught.value)
    assert "do not fit" in message and "\n" not in message and len(message) < 600
    assert "List of objects" not in message


def test_without_data_dir_the_console_names_the_synthetic_set(monkeypatch, capsys, tmp_path):
    class Source:
        pairs = []

        def __repr__(self):
            return "FolderSource(<cache>/synthetic_gopro/test)"

    seen = {}

    def fake_open(data_dir, split, blur_variant):
        seen["data_dir"] = data_dir
        return Source(), {"data_dir": "embedded synthetic set"}

    monkeypatch.setattr(evaluate, "open_source", fake_open)
    code = run_main(evaluate, "--weights", str(tmp_path / "missing.weights.h5"), "--model", "idc")
    assert seen["data_dir"] is None and "missing.weights.h5" in code
    out = capsys.readouterr().out
    assert "No --data_dir: scoring the embedded synthetic set, split 'test'" in out


def _run_evaluate(*args):
    # evaluate.py itself must quiet TensorFlow: no TF_CPP_MIN_LOG_LEVEL from the test process.
    return run_python(
        [os.path.join(REPO, "evaluate.py"), *args],
        env={"TF_CPP_MIN_LOG_LEVEL": None, "CUDA_VISIBLE_DEVICES": ""},
        quiet_tf=False,
    )


def test_cli_results_on_stdout_and_no_tensorflow_noise(dataset, tiny, tmp_path):
    done = _run_evaluate(*_source(tiny[1]), "--data_dir", str(dataset), "--warmup", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 images: PSNR" in done.stdout and "blurred input" in done.stdout
    for noise in ("cuInit", "oneDNN", "cuda", "cpu_feature_guard", "Traceback"):
        assert noise not in done.stderr, done.stderr[-2000:]


def test_cli_refuses_a_damaged_image_in_one_line(tiny, tmp_path):
    """A PNG with damaged image data (header and IEND intact): exit 1, one line naming it."""
    root = tmp_path / "data"
    rng = np.random.default_rng(8)
    for name in ("a", "b"):
        for kind in ("blur", "sharp"):
            image = rng.integers(0, 256, (32, 40, 3), np.uint8)
            write_png(root / "test" / kind / f"{name}.png", image)
    damaged = write_damaged_png(root / "test" / "blur" / "b.png", (32, 40, 3))
    done = _run_evaluate(*_source(tiny[1]), "--data_dir", str(root), "--warmup", "0")
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors[-1].startswith(f"evaluate.py: error: {damaged}: "), done.stderr[-2000:]
    assert done.stderr.rstrip().splitlines()[-1] == errors[-1]
    for crash in ("Traceback", "Fatal Python error", "Aborted"):
        assert crash not in done.stderr, done.stderr[-2000:]
