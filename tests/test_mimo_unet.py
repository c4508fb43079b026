"""MIMO-UNet / MIMO-UNet+: paper numbers, official-code parity, conventions (mimo_unet.md)."""

import keras
import numpy as np
import pytest

import models
from models import inference, mimo_unet
from models.mimo_unet_weights import (
    CheckpointError,
    export_state_dict,
    load_state_dict,
    read_checkpoint,
)
from tests import model_checks

TINY = {"num_res": 1, "base_channels": 8}


def built(name, **kwargs):
    model = models.build_model(name, **kwargs)
    model.build((None, None, None, 3))
    return model


@pytest.mark.parametrize(
    ("name", "params"), [("mimo_unet", 6_807_171), ("mimo_unet_plus", 16_107_651)]
)
def test_parameter_counts_match_the_paper(name, params):
    assert built(name).count_params() == params


@pytest.mark.parametrize(("name", "blocks"), [("mimo_unet", 8), ("mimo_unet_plus", 20)])
def test_residual_blocks_per_encoder_and_decoder(name, blocks):
    model = built(name, base_channels=8)
    assert [len(g.blocks) for g in model.encoders + model.decoders] == [blocks] * 6


def test_registry_names_and_unknown_name():
    assert {"mimo_unet", "mimo_unet_plus"} <= set(models.model_names())
    with pytest.raises(ValueError, match="registered models"):
        models.build_model("mimo_unet_pluss")


@pytest.mark.parametrize("name", ["mimo_unet", "mimo_unet_plus"])
def test_shapes_config_and_save_load(name, tmp_path):
    model = built(name, **TINY)
    model_checks.assert_multiscale_shapes(model, 16, 24)
    model_checks.assert_any_size(model)
    model_checks.assert_bad_size_raises(model)
    model_checks.assert_config_round_trip(model)
    model_checks.assert_keras_save_load(model, tmp_path / f"{name}.keras", 20, 12)


def test_dropout_only_in_training_for_plus():
    model = built("mimo_unet_plus", **TINY)
    x = model_checks.random_images(16, 16)
    eval_a, eval_b = model(x)[-1], model(x)[-1]
    np.testing.assert_array_equal(eval_a, eval_b)
    assert model.drop1.rate == model.drop2.rate == 0.1
    assert built("mimo_unet", **TINY).drop1 is None
    train_out = model(x, training=True)[-1]
    assert not np.allclose(train_out, eval_a)


@pytest.fixture(scope="module")
def fixture_arrays(shared_dir):
    return np.load(shared_dir / "fixtures" / "mimo_unet" / "mimo_unet_seed0.npz")


@pytest.fixture(scope="module")
def official_model(fixture_arrays, shared_dir):
    model = built("mimo_unet")
    path = str(shared_dir / "fixtures" / "mimo_unet" / "mimo_unet_seed0.npz")
    load_state_dict(model, read_checkpoint(path))
    return model


def test_outputs_match_the_official_code(official_model, fixture_arrays):
    outputs = official_model(fixture_arrays["input_nhwc"])
    for k in range(3):
        expected = fixture_arrays[f"output_{k}"].transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(outputs[k]), expected, atol=1e-5, rtol=0)


def test_multiples_of_four_are_not_padded(official_model, fixture_arrays):
    x = fixture_arrays["input_nhwc"]
    restored = inference.restore(official_model, x)
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(official_model(x)[-1]))


def test_state_dict_round_trip_and_key_order(official_model, fixture_arrays):
    exported = export_state_dict(official_model)
    state_keys = [k for k in fixture_arrays.files if "." in k]
    assert list(exported) == state_keys
    for key in state_keys:
        np.testing.assert_array_equal(exported[key], fixture_arrays[key])


def test_loader_refuses_missing_extra_misshaped_and_prefixed(fixture_arrays):
    state = {k: fixture_arrays[k] for k in fixture_arrays.files if "." in k}
    model = built("mimo_unet")
    missing = dict(state)
    missing.pop("SCM2.conv.main.0.bias")
    with pytest.raises(CheckpointError, match=r"missing \(1\): SCM2.conv.main.0.bias"):
        load_state_dict(model, missing)
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): extra.weight"):
        load_state_dict(model, {**state, "extra.weight": np.zeros(1)})
    misshaped = {**state, "FAM1.merge.main.0.bias": np.zeros(7, np.float32)}
    with pytest.raises(CheckpointError, match=r"FAM1.merge.main.0.bias: checkpoint \(7,\)"):
        load_state_dict(model, misshaped)
    with pytest.raises(CheckpointError, match="module."):
        load_state_dict(model, {f"module.{k}": v for k, v in state.items()})
    with pytest.raises(CheckpointError, match="wrong variant"):
        load_state_dict(built("mimo_unet_plus"), state)


def test_torch_initialisation_bounds():
    model = built("mimo_unet", **TINY)
    conv = model.feat_extract[0]
    bound = 1 / np.sqrt(3 * 3 * 3)
    for weight in (conv.kernel, conv.bias):
        values = np.asarray(weight)
        assert values.min() >= -bound and values.max() <= bound
        assert values.max() > 0.5 * bound
    glorot = built("mimo_unet", init="glorot", **TINY)
    assert not np.any(np.asarray(glorot.feat_extract[0].bias))


def test_self_ensemble_of_identity_is_exact():
    x = keras.ops.convert_to_tensor(model_checks.random_images(6, 10, batch=2))
    for mode in ("none", "rot4", "x8"):
        out = inference.ensemble(lambda t: t, x, mode)
        np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-7)
    with pytest.raises(ValueError, match="self-ensemble"):
        inference.ensemble(lambda t: t, x, "rot8")


def test_self_ensemble_averages_the_four_rotations():
    model = built("mimo_unet", **TINY)
    x = model_checks.random_images(12, 20)
    expected = np.mean(
        [
            np.rot90(np.asarray(model(np.rot90(x, k, axes=(1, 2)).copy())[-1]), -k, axes=(1, 2))
            for k in range(4)
        ],
        axis=0,
    )
    got = inference.restore(model, x, self_ensemble="rot4")
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_padding_replicates_bottom_right_edges():
    x = keras.ops.convert_to_tensor(model_checks.random_images(5, 6))
    padded = np.asarray(inference.pad_to_multiple(x, 4))
    assert padded.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(padded[:, :5, :6], np.asarray(x))
    np.testing.assert_array_equal(padded[:, 5:, :6], np.repeat(np.asarray(x)[:, 4:5], 3, axis=1))
    np.testing.assert_array_equal(padded[:, :, 6:], np.repeat(padded[:, :, 5:6], 2, axis=2))


def test_builders_are_the_module_functions():
    assert models.MODEL_BUILDERS["mimo_unet"] is mimo_unet.mimo_unet
    assert models.MODEL_BUILDERS["mimo_unet_plus"] is mimo_unet.mimo_unet_plus
