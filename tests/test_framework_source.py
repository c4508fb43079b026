"""The blind deblurring framework (SEN + K + CG + RP-GAN's G) as one model source of evaluate.py,
deblur.py and export.py (inference/framework_io.py): an RP-GAN run directory (tests/framework_checks
writes a tiny fake one per the contract), the framework flags, true flows from a data set's labels,
tiling, the whole-framework SavedModel, and the one-line refusals."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import deblur
import evaluate
import export
import rundir
from deconvolution.framework import BlindDeblurFramework
from inference import framework_io, model_io, signatures, sources
from tests.framework_checks import TINY_SEN, write_flow_set, write_rpgan_run
from tests.train_checks import run_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run dir, G, SEN) of a tiny fake RP-GAN run (checkpoint, final weights, sen.weights.h5)."""
    return write_rpgan_run(tmp_path_factory.mktemp("rpgan") / "run")


@pytest.fixture(scope="module")
def flow_set(tmp_path_factory):
    """Two pairs of odd sizes with flow labels (GoPro layout)."""
    return write_flow_set(tmp_path_factory.mktemp("flowset"))


def _image(height, width, seed=0):
    return np.random.default_rng(seed).random((1, height, width, 3), dtype=np.float32)


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _evaluate(run_dir, data, out, *args):
    code = run_main(
        evaluate, "--checkpoint", str(run_dir), "--data_dir", str(data), "--out_dir", str(out),
        "--warmup", "0", *args,
    )  # fmt: skip
    assert code == 0, code
    return _summary(out)


@pytest.fixture(scope="module")
def restorer(run):
    """The run's framework restorer with its own settings (levels 2), traced once."""
    return model_io.load_restorer(checkpoint=str(run[0]))


def _reference(run, **kwargs):
    """The eager framework of the run's networks with the run's settings."""
    _, generator, sen = run
    settings = {"levels": 2, "betas": (0.02, 0.1), "cg_max_iter": 20, **kwargs}
    return BlindDeblurFramework(sen, generator, **settings)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def test_restorer_equals_the_framework_for_any_size_in_one_trace(run, restorer):
    for seed, size in enumerate(((37, 53), (40, 52))):
        image = _image(*size, seed=seed)
        expected = _reference(run)(image).numpy()
        np.testing.assert_allclose(restorer(image).numpy(), expected, atol=1e-4)
    assert restorer.fn.experimental_get_tracing_count() == 1
    assert restorer.source["kind"] == "framework" and not restorer.needs_true_flow
    assert restorer.source["framework"] == {
        "levels": 2,
        "global_iterations": 1,
        "betas": [0.02, 0.1],
        "flow_source": "sen",
        "cg_tol": 1e-5,
        "cg_max_iter": 20,
    }
    assert restorer.source["sen"]["model_kwargs"] == TINY_SEN
    assert restorer.source["sen"]["from"] == "run"


def test_every_checkpoint_form_restores_g(run, tmp_path):
    """The run, a prefix, and a run with only final.weights.h5 restore G exactly (the true
    flow and one global iteration: no SEN is loaded)."""
    run_dir, generator, sen = run
    final_only, _, _ = write_rpgan_run(tmp_path / "final", generator, sen, checkpoint=False)
    prefix = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    for path in (run_dir, prefix, final_only):
        fw, source = framework_io.load_framework(str(path), flow_source="true")
        assert fw.sen is None and source["sen"] is None
        for got, want in zip(fw.generator.weights, generator.weights, strict=True):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert source["path"] == str(final_only / "final.weights.h5")


def test_flags_override_the_run_and_sen_checkpoint_replaces_its_sen(run, tmp_path):
    run_dir, _, sen = run
    fw, source = framework_io.load_framework(
        str(run_dir), levels=3, betas="0.05,0.2,1", flow_source="true"
    )
    assert source["framework"]["betas"] == [0.05, 0.2, 1.0] and fw.betas == (0.05, 0.2, 1.0)
    assert fw.levels == 3 and fw.flow_source == "true"
    # A SEN weights file without run_config beside it: the run's SEN entry gives the kwargs.
    other = tmp_path / "other_sen.weights.h5"
    sen.save_weights(str(other))
    fw, source = framework_io.load_framework(
        str(run_dir), sen_checkpoint=str(other), global_iterations=2
    )
    assert source["sen"]["from"] == "flag" and source["sen"]["path"] == str(other)
    assert fw.global_iterations == 2 and source["framework"]["global_iterations"] == 2
    for got, want in zip(fw.sen.weights, sen.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_true_flow_needs_no_sen_for_one_global_iteration(run, tmp_path):
    _, generator, sen = run
    no_sen, _, _ = write_rpgan_run(tmp_path / "nosen", generator, sen, sen_weights=False)
    restorer = model_io.load_restorer(checkpoint=str(no_sen), flow_source="true")
    assert restorer.needs_true_flow and restorer.source["sen"] is None
    image, flow = _image(24, 30), np.full((24, 30, 2), 3.0, np.float32)
    expected = BlindDeblurFramework(None, generator, 2, 1, (0.02, 0.1), "true", cg_max_iter=20)
    got = restorer(image, true_flow=flow).numpy()
    np.testing.assert_allclose(got, expected(image, flow[None]).numpy(), atol=1e-4)
    with pytest.raises(sources.ModelSourceError, match="needs each image's true flow"):
        restorer(image)
    with pytest.raises(sources.ModelSourceError, match="no sen.weights.h5.*--global_iterations"):
        model_io.load_restorer(checkpoint=str(no_sen), flow_source="true", global_iterations=2)
    with pytest.raises(sources.ModelSourceError, match="no sen.weights.h5.*--sen_checkpoint"):
        model_io.load_restorer(checkpoint=str(no_sen))


def test_bad_sources_and_flags_are_one_line(run, tmp_path):
    run_dir, generator, _ = run
    weights = tmp_path / "g.weights.h5"
    generator.save_weights(str(weights))
    mimo = tmp_path / "mimo"
    mimo.mkdir()
    (mimo / "run_config.json").write_text(json.dumps({"model": "mimo_unet", "model_kwargs": {}}))
    (mimo / "final.weights.h5").write_bytes(b"refused before it is read")
    cases = {
        r"--betas 0.1: 1 value\(s\) for --levels 2": {"betas": "0.1"},
        "expected a comma-separated list": {"betas": "a,b"},
        "every beta must be positive": {"betas": "0.1,-1"},
        "--self_ensemble rot4: not available for the blind": {"self_ensemble": "rot4"},
        "--jit_compile: not available for the blind": {"jit_compile": True},
        f"--sen_checkpoint {weights}: these weights do not fit": {"sen_checkpoint": str(weights)},
        f"--sen_checkpoint {tmp_path / 'none'}: neither": {
            "sen_checkpoint": str(tmp_path / "none")
        },
        "holds a deblurring model": {"sen_checkpoint": str(mimo)},
    }
    for message, kwargs in cases.items():
        with pytest.raises(sources.ModelSourceError, match=message) as caught:
            model_io.load_restorer(checkpoint=str(run_dir), **kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(sources.ModelSourceError, match="--levels: only for the blind"):
        model_io.load_restorer(weights=str(weights), model="mimo_unet", levels=2)
    with pytest.raises(sources.ModelSourceError, match="the prior of the blind deblurring"):
        model_io.load_restorer(weights=str(weights), model="rpgan_generator")
    with pytest.raises(sources.ModelSourceError, match="--flow_source: the settings of a Saved"):
        model_io.load_restorer(saved_model=str(tmp_path), flow_source="sen")


# --------------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------------


def test_evaluate_levels_and_true_flow(run, restorer, flow_set, tmp_path):
    """evaluate.py with --levels 1 (SEN's flow) and with the set's true flows records the
    settings; the true-flow result is the framework's on each label; levels 2 (the run's)
    through the same loop differs from levels 1."""
    import metrics

    run_dir, generator, _ = run
    one = _evaluate(run_dir, flow_set, tmp_path / "l1", "--levels", "1")
    assert one["model_source"]["framework"]["levels"] == 1 and one["num_images"] == 2
    assert one["model_source"]["framework"]["betas"] == [0.02]
    _, pairs = evaluate.open_pairs(str(flow_set), "test", "blur")
    two = evaluate.evaluate(restorer, pairs, warmup=0)
    assert np.mean([r["psnr"] for r in two]) != pytest.approx(one["psnr_mean"], abs=1e-6)
    true = _evaluate(run_dir, flow_set, tmp_path / "t", "--flow_source", "true", "--levels", "1")
    assert true["model_source"]["framework"]["flow_source"] == "true"
    assert "flow labels" in true["data"]["flow"]
    seq = flow_set / "test" / "SEQ0"
    blur = cv2.imread(str(seq / "blur" / "000001.png"))[..., ::-1]
    label = np.load(seq / "flow" / "000001.npy")
    fw = BlindDeblurFramework(None, generator, 1, 1, None, "true", cg_max_iter=20)
    restored = fw(blur[None].astype(np.float32) / 255, label[None]).numpy()[0]
    sharp = cv2.imread(str(seq / "sharp" / "000001.png"))[..., ::-1]
    with open(tmp_path / "t" / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    expected = metrics.psnr(metrics.to_uint8(restored), sharp)
    assert float(rows[1]["psnr"]) == pytest.approx(expected, abs=1e-3)


def test_evaluate_true_flow_without_labels_names_the_missing_file(run, tmp_path):
    data = write_flow_set(tmp_path / "data", sizes=((32, 40),), labels=False)
    code = run_main(
        evaluate, "--checkpoint", str(run[0]), "--data_dir", str(data), "--flow_source", "true"
    )
    missing = data / "test" / "SEQ0" / "flow" / "000000.npy"
    assert isinstance(code, str) and code.startswith("evaluate.py: error: --flow_source true: ")
    assert f"{missing}: no flow label" in code and "\n" not in code


def test_deblur_tiles_odd_sizes(restorer, tmp_path):
    """37x53 in tiles of 24 (overlap 4, starts aligned to G's 4): the output has the input's
    size and stays close to the whole-image result."""
    image = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "odd.png"), cv2.GaussianBlur(image, (5, 5), 2))
    assert deblur.restorer_multiple(restorer) == 4
    for name, tile in (("tiled", 24), ("whole", 0)):
        deblur.deblur_file(
            restorer, str(tmp_path / "odd.png"), str(tmp_path / f"{name}.png"), tile, 4
        )
    tiled = cv2.imread(str(tmp_path / "tiled.png"))
    whole = cv2.imread(str(tmp_path / "whole.png"))
    assert tiled.shape == whole.shape == (37, 53, 3)
    assert np.abs(tiled.astype(int) - whole).mean() < 8


def test_commands_refuse_in_one_line(run, flow_set, tmp_path):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    source = ["--checkpoint", str(run[0])]
    code = run_main(deblur, *source, "--input", str(image), "--flow_source", "true")
    assert "deblur.py: error: --flow_source true: your images have no true motion flow" in code
    code = run_main(export, *source, "--out", str(tmp_path / "e"), "--flow_source", "true")
    assert "export.py: error: --flow_source true: cannot be exported" in code
    code = run_main(export, *source, "--out", str(tmp_path / "e"), "--self_ensemble", "x8")
    assert "export.py: error: --self_ensemble x8: not available for the blind" in code
    code = run_main(evaluate, *source, "--data_dir", str(flow_set), "--jit_compile")
    assert "evaluate.py: error: --jit_compile: not available for the blind" in code
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_export_then_evaluate_saved_model_gives_the_same_psnr(
    run, restorer, flow_set, tmp_path, capsys
):
    """export.py on the run (levels 2, verified against the eager framework), then evaluate.py
    --saved_model scores within 1e-3 dB of --checkpoint; the export takes any size and batch."""
    run_dir = run[0]
    out = tmp_path / "export"
    code = run_main(export, "--checkpoint", str(run_dir), "--out", str(out), "--levels", "2")
    assert code == 0, code
    assert "Exported the blind deblurring framework (SEN + K + CG + rpgan_generator, levels 2" in (
        capsys.readouterr().out
    )
    info = json.loads((out / "assets.extra" / signatures.EXPORT_INFO).read_text())
    assert info["task"] == "restorer" and info["kind"] == "framework"
    assert info["framework"]["levels"] == 2 and info["framework"]["flow_source"] == "sen"
    assert info["size_multiple"] == 1 and info["tile_multiple"] == 4
    _, pairs = evaluate.open_pairs(str(flow_set), "test", "blur")
    by_checkpoint = evaluate.evaluate(restorer, pairs, warmup=0)
    code = run_main(evaluate, "--saved_model", str(out), "--data_dir", str(flow_set),
                    "--out_dir", str(tmp_path / "s"), "--warmup", "0")  # fmt: skip
    assert code == 0, code
    by_export = _summary(tmp_path / "s")
    expected = np.mean([row["psnr"] for row in by_checkpoint])
    assert by_export["psnr_mean"] == pytest.approx(expected, abs=1e-3)
    assert by_export["model_source"]["framework"]["levels"] == 2
    loaded = tf.saved_model.load(str(out))
    for shape in ((1, 37, 53, 3), (2, 20, 9, 3)):
        images = np.random.default_rng(shape[1]).random(shape, dtype=np.float32)
        got = loaded.signatures["serving_default"](images=tf.constant(images))["restored"]
        assert got.shape == shape
        expected = np.concatenate([restorer(x[None]).numpy() for x in images])
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-3)
    as_uint8 = np.zeros((1, 21, 19, 3), np.uint8)
    assert loaded.signatures["serving_uint8"](images=tf.constant(as_uint8))["restored"].shape == (
        1, 21, 19, 3,
    )  # fmt: skip
    # Framework flags with an export, and XLA on a framework export: one line each.
    code = run_main(evaluate, "--saved_model", str(out), "--data_dir", str(flow_set), "--levels",
                    "3")  # fmt: skip
    assert "evaluate.py: error: --levels: the settings of a SavedModel are fixed" in code
    with pytest.raises(sources.ModelSourceError, match="--jit_compile: not available"):
        model_io.load_restorer(saved_model=str(out), jit_compile=True)
    # deblur.py --saved_model with tiling.
    image = tmp_path / "odd.png"
    cv2.imwrite(str(image), np.random.default_rng(1).integers(0, 256, (37, 53, 3), np.uint8))
    code = run_main(deblur, "--saved_model", str(out), "--input", str(image), "--tile", "24",
                    "--tile_overlap", "4")  # fmt: skip
    assert code == 0 and cv2.imread(str(tmp_path / "odd_deblurred.png")).shape == (37, 53, 3)


def test_framework_io_settings_defaults():
    """No framework entry in the run config: levels 3, the 0.02*5^(n-1) ladder, CG 1e-5 / 100;
    a run ladder of the wrong length is replaced by the default one for --levels."""
    chosen = framework_io.settings({})
    assert chosen["levels"] == 3 and chosen["betas"] == pytest.approx([0.02, 0.1, 0.5])
    assert (chosen["cg_tol"], chosen["cg_max_iter"], chosen["flow_source"]) == (1e-5, 100, "sen")
    run_config = {"framework": {"levels": 3, "betas": [0.01, 0.1, 1.0]}}
    assert framework_io.settings(run_config)["betas"] == [0.01, 0.1, 1.0]
    assert framework_io.settings(run_config, levels=2)["betas"] == pytest.approx([0.02, 0.1])
    assert os.path.basename(rundir.SEN_WEIGHTS) == "sen.weights.h5"
