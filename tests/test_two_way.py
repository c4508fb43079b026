"""Two-Way network (models/two_way.py, spec two_way.md).

Parameter counts at full width; everything else on tiny models (width 4, one ResBlock per stage)
and 16-64 px. The scale-recurrent driver checks (per-scale wiring, variable count, stop-gradient)
run on both models in tests/test_idc.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
import models
from models import blocks, two_way
from tests import model_checks

TINY = {"base_channels": 4, "num_res": 1}  # one ResBlock per stage: fewer eager ops
BRANCH = 1_327_363  # one decoder branch at full width (spec section 5)
BOTTLENECK_BLOCKS = 3 * 295_168  # three 3x3 ResBlocks at 128 channels


def built(**kwargs):
    model = models.build_model("two_way", **kwargs)
    model.build((None, None, None, 3))
    return model


def params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.weights)


# ---- full-width parameter counts (spec section 5) -------------------------------------------


def test_default_parameter_count_and_parts():
    model = built()
    assert model.count_params() == 3_911_398
    step = model.step
    assert [params(step.encoder), params(step.up), params(step.down)] == [1_256_672, BRANCH, BRANCH]


@pytest.mark.parametrize(
    ("overrides", "count"),
    [
        ({"two_way": False}, 2_584_035),  # the paper's "w/o TWNNet" row: no down branch
        ({"deconv_kernel": 3}, 3_768_038),
        ({"share_bottleneck_blocks": True}, 3_911_398 - BOTTLENECK_BLOCKS),
    ],
)
def test_switches_change_the_parameter_count_as_specified(overrides, count):
    assert built(**overrides).count_params() == count


# ---- shapes, sizes, serialisation -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return built(**TINY)


def test_shapes_any_size_config_and_save_load(tiny, tmp_path):
    assert tiny.size_multiple == 16
    model_checks.assert_multiscale_shapes(tiny, 64, 48)
    model_checks.assert_any_size(tiny)
    model_checks.assert_bad_size_raises(tiny)
    model_checks.assert_config_round_trip(tiny)
    model_checks.assert_keras_save_load(tiny, tmp_path / "two_way.keras", 32, 16)


def test_ablation_and_alternatives_run():
    without = built(two_way=False, **TINY)
    assert without.step.down is None
    model_checks.assert_multiscale_shapes(without, 16, 32)
    model_checks.assert_config_round_trip(built(deconv_kernel=3, **TINY))
    shared = built(share_bottleneck_blocks=True, n_scales=1, **TINY)
    model_checks.assert_multiscale_shapes(shared, 20, 12, scales=(1,))
    with pytest.raises(ValueError, match="two_way=True"):
        without(model_checks.random_images(16, 16), return_branches=True)


def test_registry_builder(tiny):
    assert models.MODEL_BUILDERS["two_way"] is two_way.two_way
    assert tiny.name == "two_way"


# ---- the two branches (paper eq. 1, Fig. 3) -----------------------------------------------------


def test_output_is_exactly_the_sum_of_the_branches_at_every_scale(tiny):
    x = model_checks.random_images(32, 48, batch=2, seed=5)
    outputs, ups, downs = tiny(x, return_branches=True)
    for plain, image, up, down in zip(tiny(x), outputs, ups, downs, strict=True):
        np.testing.assert_array_equal(np.asarray(image), np.asarray(up + down))
        np.testing.assert_array_equal(np.asarray(image), np.asarray(plain))
        assert float(np.abs(np.asarray(down)).max()) > 0.0


@pytest.mark.parametrize("shared", [False, True])
def test_down_branch_is_a_function_of_the_bottleneck_alone(shared):
    model = built(share_bottleneck_blocks=shared, **TINY)
    x = model_checks.random_images(32, 32, seed=6)
    outputs, ups, downs = model(x, return_branches=True)
    # Rebuild the finest pass's input, then its encoder features [e1, e2, z].
    previous = blocks.resize_bilinear(outputs[-2], 32, 32)
    e1, e2, z = model.step.encoder(np.concatenate([x, np.asarray(previous)], axis=-1))
    np.testing.assert_array_equal(np.asarray(model.step.down_branch(z)), np.asarray(downs[-1]))
    # The up branch, by contrast, needs the skips: without them it is a different image.
    h = z if model.step.bottleneck is None else model.step.bottleneck(z)
    np.testing.assert_allclose(np.asarray(model.step.up(h, skips=[e1, e2])), ups[-1], atol=1e-6)
    assert not np.allclose(np.asarray(model.step.up(h)), np.asarray(ups[-1]), atol=1e-4)


def test_training_step_with_the_paper_loss_changes_weights():
    model = built(**TINY)
    optimizer = keras.optimizers.Adam(1e-4, epsilon=1e-8)
    blurry = model_checks.random_images(32, 32, batch=2, seed=7)
    sharp = model_checks.random_images(32, 32, batch=2, seed=8)
    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        terms = losses.two_way_loss(model(blurry, training=True), sharp)
    grads = tape.gradient(terms["loss"], model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights, strict=True))
    assert np.isfinite(float(terms["loss"]))
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)) == len(after)
