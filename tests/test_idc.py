"""IDC (models/idc.py, spec idc.md) and the scale-recurrent driver it shares with Two-Way.

Parameter counts at full width; everything else on tiny models (width 4, one ResBlock per stage)
and 16-96 px.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
import models
from models import blocks, idc
from tests import model_checks
from training.steps.idc_step import IdcTrainStep
from training.steps.two_way_step import TwoWayTrainStep

TINY = {"base_channels": 4, "num_res": 1}  # one ResBlock per stage: fewer eager ops
SUB_TEXTURE = 931_840
FUSION_TEXTURE_WEIGHTS = 5 * 5 * 64 * 32  # the fusion conv's kernel slice that reads Sub-Texture


def built(name="idc", **kwargs):
    model = models.build_model(name, **kwargs)
    model.build((None, None, None, 3))
    return model


def params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.weights)


# ---- full-width parameter counts (spec section 4.4 and 6) -----------------------------------


def test_default_parameter_count_and_parts():
    model = built()
    assert model.count_params() == 6_082_819
    step = model.step
    assert [params(b) for b in step.encoder.blocks] == [107_360, 461_120, 1_843_840]
    assert [params(b) for b in step.decoder.blocks] == [1_901_184, 606_528, 151_712]
    assert sum(params(b) for b in step.texture) == SUB_TEXTURE
    assert params(step.fusion) == 79_235


@pytest.mark.parametrize(
    ("overrides", "count"),
    [
        ({"decoder_reading": "srn"}, 5_717_830),
        ({"decoder_reading": "srn", "num_res": 3}, 8_278_982),  # SRN's 3 ResBlocks (reference)
        ({"use_texture": False}, 6_082_819 - SUB_TEXTURE - FUSION_TEXTURE_WEIGHTS),
        ({"texture_input": "blur"}, 6_082_819 - 5 * 5 * 3 * 64),  # first texture conv reads 3 ch
    ],
)
def test_switches_change_the_parameter_count_as_specified(overrides, count):
    assert built(**overrides).count_params() == count


def test_invalid_switches_are_refused():
    for bad in (
        {"decoder_reading": "unet"},
        {"texture_input": "sharp"},
        {"n_scales": 0},
        {"pyramid_mode": "bicubic"},
    ):
        with pytest.raises(ValueError):
            idc.idc(**TINY, **bad)


# ---- shapes, sizes, serialisation (tests/model_checks.py) --------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return built(**TINY)


def test_shapes_any_size_config_and_save_load(tiny, tmp_path):
    assert tiny.size_multiple == 16
    model_checks.assert_multiscale_shapes(tiny, 64, 96)
    model_checks.assert_any_size(tiny)
    model_checks.assert_bad_size_raises(tiny)
    model_checks.assert_config_round_trip(tiny)
    model_checks.assert_keras_save_load(tiny, tmp_path / "idc.keras", 32, 48)


def test_alternative_reading_and_ablations_run():
    model_checks.assert_multiscale_shapes(built(decoder_reading="srn", **TINY), 32, 16)
    model_checks.assert_multiscale_shapes(built(use_texture=False, **TINY), 16, 32)
    single = built(n_scales=1, texture_input="blur", **TINY)
    assert single.size_multiple == 4
    model_checks.assert_any_size(single, sizes=((37, 53),))


def test_registry_builder(tiny):
    assert models.MODEL_BUILDERS["idc"] is idc.idc
    assert tiny.name == "idc"


def test_training_step_with_the_paper_loss_changes_weights():
    model = built(**TINY)
    optimizer = keras.optimizers.Adam(1e-4, epsilon=1e-8)
    # 48 px: the 1/4 scale (12 px) still holds the loss's 11x11 SSIM window.
    blurry = model_checks.random_images(48, 48, batch=2, seed=1)
    sharp = model_checks.random_images(48, 48, batch=2, seed=2)
    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        terms = losses.idc_loss(model(blurry, training=True), sharp)
    grads = tape.gradient(terms["loss"], model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights, strict=True))
    assert np.isfinite(float(terms["loss"]))
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)) == len(after)


# ---- the scale-recurrent driver (models/scale_recurrent.py), on both of its models --------------

DRIVEN = ["idc", "two_way"]


@pytest.mark.parametrize(
    ("name", "mode"), [("idc", "sequential"), ("idc", "direct"), ("two_way", "sequential")]
)
def test_each_scale_is_the_shared_step_on_blur_and_upsampled_previous(name, mode):
    model = built(name, pyramid_mode=mode, **TINY)
    x = model_checks.random_images(32, 48, seed=3)
    outputs = [np.asarray(o) for o in model(x)]
    pyramid = [np.asarray(level) for level in blocks.image_pyramid(x, 3, mode)]
    # Coarsest scale: the "previous estimate" is the blurred level itself.
    previous = pyramid[0]
    for level, output in zip(pyramid, outputs, strict=True):
        expected = model.step(np.concatenate([level, previous], axis=-1))
        np.testing.assert_allclose(output, np.asarray(expected), atol=1e-5)
        next_size = (2 * level.shape[1], 2 * level.shape[2])
        previous = np.asarray(blocks.resize_bilinear(output, *next_size))


@pytest.mark.parametrize("name", DRIVEN)
def test_variable_count_does_not_grow_with_the_number_of_scales(name):
    one, three = built(name, n_scales=1, **TINY), built(name, n_scales=3, **TINY)
    assert [w.shape for w in one.weights] == [w.shape for w in three.weights]
    count = len(three.weights)
    three(model_checks.random_images(32, 32))
    assert len(three.weights) == count


@pytest.mark.parametrize("name", DRIVEN)
@pytest.mark.parametrize("stop", [True, False])
def test_finest_output_backpropagates_into_coarser_outputs_only_without_stop_gradient(name, stop):
    model = built(name, stop_gradient=stop, **TINY)
    x = tf.constant(model_checks.random_images(32, 32, seed=4))
    with tf.GradientTape() as tape:
        outputs = model(x)
        finest = tf.reduce_sum(tf.square(outputs[-1]))
    # d(F_1)/d(F_1/4) and d(F_1)/d(F_1/2): the coarse outputs are intermediate tensors of the tape.
    grads = tape.gradient(finest, outputs[:-1], unconnected_gradients="zero")
    norms = [float(tf.norm(g)) for g in grads]
    assert norms == [0.0, 0.0] if stop else min(norms) > 0.0


# ---- the loss labels follow the model's pyramid_mode (A-IDC-11; "obtained in the same way") ----

STEPS = {"idc": IdcTrainStep, "two_way": TwoWayTrainStep}
OTHER_MODE = {"sequential": "direct", "direct": "sequential"}


def _model_input_pyramid(model, image):
    """The levels B_i the model feeds its step, coarse to fine, recorded from its own forward."""
    levels = []

    def record(x):
        levels.append(np.asarray(x[..., :3]))  # X_i = concat(B_i, P_i)
        return x[..., :3]

    model.coarse_to_fine(image, step=record)
    return levels


@pytest.mark.parametrize("name", DRIVEN)
@pytest.mark.parametrize("mode", ["sequential", "direct"])
def test_step_labels_are_the_models_input_pyramid_of_the_sharp_image(name, mode):
    step = STEPS[name](total_steps=1, model_kwargs={**TINY, "pyramid_mode": mode})
    step.build(tf.distribute.get_strategy())
    assert step.loss_options == {"pyramid_mode": mode}  # read from the built model
    assert f"pyramid_mode={mode!r}" in step.describe()["loss"]
    sharp = model_checks.random_images(48, 48, batch=2, seed=5)
    pyramid = _model_input_pyramid(step.model, sharp)
    other_pyramid = _model_input_pyramid(built(name, pyramid_mode=OTHER_MODE[mode], **TINY), sharp)
    assert not np.allclose(pyramid[0], other_pyramid[0], atol=1e-3)  # the modes differ at 1/4
    # Predictions equal to the model's own pyramid of the sharp image: every term is zero.
    for key, value in step.loss_fn(pyramid, sharp, **step.loss_options).items():
        assert abs(float(value)) < 1e-6, (key, float(value))
    assert float(step.loss_fn(pyramid, sharp, pyramid_mode=OTHER_MODE[mode])["loss"]) > 1e-4
    # The update's logged loss is the loss under the model's mode.
    blur = model_checks.random_images(48, 48, batch=2, seed=6)
    predictions = step.model(blur, training=True)
    expected = float(step.loss_fn(predictions, sharp, pyramid_mode=mode)["loss"])
    wrong = float(step.loss_fn(predictions, sharp, pyramid_mode=OTHER_MODE[mode])["loss"])
    got = float(step.train_step(tf.constant(blur), tf.constant(sharp))["loss"])
    assert got == pytest.approx(expected, rel=1e-6) and got != pytest.approx(wrong, rel=1e-6)
