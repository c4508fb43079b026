"""evaluate_flow.py: flow MSE and both baselines against numpy, outputs written atomically, the
paper's reference picked by u_max, every model source (tiny SEN weights, a flow SavedModel), bad
data / outputs / sources refused in one line before the model is loaded."""

import csv
import json
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import evaluate_flow
import export
import models
from inference import flow_io
from tests.train_checks import run_main

TINY_SEN = {"width_divisor": 16}
SIZES = [(64, 64), (64, 64), (40, 72)]  # 40x72 is padded to 64x128 and cropped back


def write_flow_split(root, split, sizes, seed):
    """``<root>/<split>/SEQ<i % 2>/{blur,flow}/<i>.{png,npy}``: random images, integer uv_half
    labels (u >= 0). Returns the labels in sorted-path order."""
    rng = np.random.default_rng(seed)
    labels = {}
    for i, (h, w) in enumerate(sizes):
        seq = root / split / f"SEQ{i % 2}"
        for kind in ("blur", "flow"):
            (seq / kind).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        label = np.stack([rng.integers(0, 6, (h, w)), rng.integers(-5, 6, (h, w))], axis=-1).astype(
            np.float32
        )
        assert cv2.imwrite(str(seq / "blur" / f"{i:06d}.png"), image)
        np.save(seq / "flow" / f"{i:06d}.npy", label)
        labels[str(seq / "blur" / f"{i:06d}.png")] = label
    return [labels[k] for k in sorted(labels)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(root, test labels, train labels): 3 test images, 2 train images."""
    root = tmp_path_factory.mktemp("flowdata")
    test = write_flow_split(root, "test", SIZES, seed=0)
    train = write_flow_split(root, "train", [(64, 64), (32, 48)], seed=1)
    return root, test, train


@pytest.fixture(scope="module")
def tiny_sen(tmp_path_factory):
    """(model, weights path) of a tiny SEN (width_divisor 16)."""
    model = models.build_flow_estimator("sen", **TINY_SEN)
    model.build((None, None, None, 3))
    path = str(tmp_path_factory.mktemp("sen") / "sen.weights.h5")
    model.save_weights(path)
    return model, path


def standin_flow_model():
    """A one-convolution Keras model with a flow's two output channels (fast to export)."""
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same")(inputs))


def write_standin_flow_export(path, u_max=None):
    """A flow-estimator SavedModel of :func:`standin_flow_model`; returns (model, path)."""
    model = standin_flow_model()
    metadata = {"model": "standin", "task": "flow_estimator"}
    if u_max is not None:
        metadata["u_max"] = u_max
    return model, export.export(model, str(path), metadata=metadata, verify=False)


def constant_estimator(value):
    def fn(images):
        shape = tf.concat([tf.shape(images)[:3], [2]], axis=0)
        return tf.ones(shape) * tf.constant(value, tf.float32)

    return flow_io.FlowEstimator(fn, {"kind": "constant"})


def reference_numbers(predictions, labels, mean):
    """The pooled MSEs and mean EPE by plain numpy."""
    count = sum(label.size for label in labels)

    def pooled(guesses):
        return sum(np.sum((g - lab) ** 2) for g, lab in zip(guesses, labels, strict=True)) / count

    return {
        "flow_mse": pooled(predictions),
        "zero_flow_mse": sum(np.sum(lab.astype(np.float64) ** 2) for lab in labels) / count,
        "mean_flow_mse": pooled([np.broadcast_to(mean, lab.shape) for lab in labels]),
        "epe_mean": np.mean(
            [
                np.mean(np.linalg.norm(p - lab, axis=-1))
                for p, lab in zip(predictions, labels, strict=True)
            ]
        ),
    }


def test_numbers_and_baselines_match_numpy(dataset, tmp_path):
    root, test_labels, train_labels = dataset
    examples = evaluate_flow.open_split(str(root), "test")
    mean, note = evaluate_flow.training_mean_flow(str(root))
    assert note is None
    pixels = np.concatenate([lab.reshape(-1, 2) for lab in train_labels]).astype(np.float64)
    np.testing.assert_allclose(mean, pixels.mean(axis=0))
    rows = evaluate_flow.evaluate(
        constant_estimator([1.5, -0.5]), examples, str(root), "test", mean
    )
    assert [r["image"] for r in rows] == ["SEQ0_000000.png", "SEQ0_000002.png", "SEQ1_000001.png"]
    summary = evaluate_flow.summarize(rows, {"kind": "constant"}, {}, mean, None, 23)
    predictions = [np.broadcast_to([1.5, -0.5], lab.shape) for lab in test_labels]
    for key, value in reference_numbers(predictions, test_labels, mean).items():
        assert summary[key] == pytest.approx(value, rel=1e-9), key
    # Zero-flow baseline = the mean of label^2 over every pixel and component.
    all_test = np.concatenate([lab.ravel() for lab in test_labels]).astype(np.float64)
    assert summary["zero_flow_mse"] == pytest.approx(np.mean(all_test**2), rel=1e-12)
    assert summary["paper_sen_mse"] == 2.71 and summary["num_values"] == all_test.size
    # The sign-symmetric EPE of -label equals its EPE of +label: 0 for a perfect negation.
    negated = evaluate_flow.image_errors(-test_labels[0], test_labels[0])
    assert negated["epe_symmetric"] == 0 and negated["epe"] > 0

    evaluate_flow.write_results(str(tmp_path), rows, summary)
    assert sorted(os.listdir(tmp_path)) == ["per_image.csv", "summary.json"]  # no temporaries
    with open(tmp_path / "per_image.csv") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == list(evaluate_flow.CSV_COLUMNS)
    assert float(table[2]["mse"]) == pytest.approx(rows[2]["mse"], abs=1e-6)
    assert float(table[0]["mean_flow_mse"]) == pytest.approx(rows[0]["mean_flow_mse"], abs=1e-6)


def test_main_with_tiny_sen_weights(dataset, tiny_sen, tmp_path, capsys):
    root, test_labels, train_labels = dataset
    model, weights = tiny_sen
    out = tmp_path / "eval"
    args = ["--weights", weights, "--model", "sen", "--model_kwargs", json.dumps(TINY_SEN)]
    args += ["--data_dir", str(root), "--out_dir", str(out), "--u_max", "46"]
    assert run_main(evaluate_flow, *args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 3 and summary["model_source"]["model"] == "sen"
    assert summary["model_source"]["task"] == "flow_estimator"
    assert summary["u_max"] == 46 and summary["paper_sen_mse"] == 4.24
    examples = evaluate_flow.open_split(str(root), "test")
    predictions = []
    for blur_path, _ in examples:
        blur = cv2.imread(blur_path)[..., ::-1][None].astype(np.float32) / np.float32(255)
        predictions.append(flow_io.estimate_flow(model, tf.constant(blur)).numpy()[0])
    mean = np.asarray(summary["training_mean_flow"])
    expected = reference_numbers(predictions, test_labels, mean)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    line = capsys.readouterr().out
    assert "3 images: flow MSE" in line and "paper SEN on flow-46: 4.24" in line
    assert sorted(os.listdir(out)) == ["per_image.csv", "summary.json"]


def test_main_with_flow_saved_model_and_no_train_split(dataset, tmp_path, capsys):
    """A flow export loads (its u_max picks the paper's number); a folder of flow-NN sets gives
    its only set; no train split: baseline skipped with a note; without --out_dir the summary is
    printed."""
    parent = tmp_path / "flowsets"
    root = parent / "flow-23"
    labels = write_flow_split(root, "test", [(24, 40)], seed=3)
    model, path = write_standin_flow_export(tmp_path / "standin", u_max=23)
    assert run_main(evaluate_flow, "--saved_model", path, "--data_dir", str(parent)) == 0
    text = capsys.readouterr().out
    assert f"Scoring {root} " in text
    assert "has no train split: the mean-flow baseline is skipped" in text
    summary = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert summary["mean_flow_mse"] is None and summary["paper_sen_mse"] == 2.71
    blur = cv2.imread(str(root / "test" / "SEQ0" / "blur" / "000000.png"))[..., ::-1]
    flow = model(blur[None].astype(np.float32) / 255.0).numpy()[0]
    assert summary["flow_mse"] == pytest.approx(np.mean((flow - labels[0]) ** 2), rel=1e-4)


def test_bad_data_outputs_and_sources_are_one_line(dataset, tmp_path):
    root = dataset[0]
    done = tmp_path / "done"
    done.mkdir()
    (done / "summary.json").write_text("{}")
    nolabels = tmp_path / "nolabels"
    write_flow_split(nolabels, "test", [(16, 16)], seed=4)
    for label in (nolabels / "test").rglob("*.npy"):
        label.unlink()
    restorer_run = tmp_path / "mimo_run"
    restorer_run.mkdir()
    (restorer_run / "run_config.json").write_text(json.dumps({"model": "mimo_unet"}))
    (restorer_run / "final.weights.h5").write_bytes(b"")
    missing = ["--weights", str(tmp_path / "missing.weights.h5"), "--model", "sen"]
    data = ["--data_dir", str(root)]
    cases = {
        "--data_dir /no/such/flow: no such folder": [*missing, "--data_dir", "/no/such/flow"],
        "not a flow data set": [*missing, "--data_dir", str(nolabels)],
        "summary.json exists; pass --overwrite": [
            *missing,
            *data,
            "--out_dir",
            str(tmp_path / "done"),
        ],
        "holds a deblurring model (model 'mimo_unet'), not a flow estimator": [
            "--checkpoint",
            str(restorer_run),
            *data,
        ],
        "--model mimo_unet: is a deblurring model": [*missing[:2], "--model", "mimo_unet", *data],
        "missing.weights.h5: no such file": [*missing, *data],
        "not available for flow estimators": [*missing, *data, "--self_ensemble", "rot4"],
    }
    for message, args in cases.items():
        code = run_main(evaluate_flow, *args)
        assert isinstance(code, str) and code.startswith("evaluate_flow.py: error: "), code
        assert message in code and "\n" not in code, (message, code)
    assert os.listdir(tmp_path / "done") == ["summary.json"]
