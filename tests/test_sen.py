"""SEN, the motion-flow estimator (models/sen.py; spec sen_rpgan.md §4, §12 #1-#8, #26, #28, §13).

Parameter and MAC counts at full width (one default model built once, never run on pixels; the
MACs are traced symbolically); everything else on tiny models (``width_divisor=16``: 64 -> 4
channels) and 64-192 px images.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import models
from models import flops, sen
from models.sen import CBR, SEN, Res2, Res2Out
from tests import model_checks

TINY = {"width_divisor": 16}
STACK1_TRAINABLE, STACK1_TOTAL = 38_463_395, 38_483_879
STACK2_TRAINABLE, STACK2_TOTAL = 38_469_667, 38_490_151


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def trainable(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def tiny(**overrides):
    model = models.build_flow_estimator("sen", **{**TINY, **overrides})
    model.build((None, None, None, 3))
    return model


@pytest.fixture(scope="module")
def full_sen():
    """The default two-stack SEN at full width, built (weights created, nothing run)."""
    model = models.build_flow_estimator("sen")
    model.build((None, None, None, 3))
    return model


def gmac_per_stack(model, height, width):
    """GMAC of each stack (rounded to 0.01) and the per-call costs, on the padded size."""
    costs = flops.conv_costs(model, height, width)
    per_stack = [
        sum(c.macs for c in costs if c.path.startswith(f"{model.name}/{stack.name}/"))
        for stack in model.stacks
    ]
    return [round(macs / 1e9, 2) for macs in per_stack], costs


# ---- sizes of spec §4 -------------------------------------------------------------------------


def test_parameter_counts_of_both_stacks(full_sen):
    stack1, stack2 = full_sen.stacks
    assert (trainable(stack1), stack1.count_params()) == (STACK1_TRAINABLE, STACK1_TOTAL)
    assert (trainable(stack2), stack2.count_params()) == (STACK2_TRAINABLE, STACK2_TOTAL)
    assert trainable(full_sen) == 76_933_062
    # Stack 2 differs only by the two flow channels of its first 7x7 layer: 7 * 7 * 2 * 64.
    assert STACK2_TRAINABLE - STACK1_TRAINABLE == 7 * 7 * 2 * 64
    assert tuple(stack2.front[0].conv.kernel.shape) == (7, 7, 5, 64)


def test_no_skip_parameter_count():
    plain = sen.sen(num_stacks=1, sen_skips="none")
    plain.build((None, None, None, 3))
    assert (trainable(plain), plain.count_params()) == (30_058_403, 30_078_887)


def test_multiply_adds_per_stack(full_sen):
    per_gopro, costs = gmac_per_stack(full_sen, 720, 1280)
    assert per_gopro == [310.04, 316.21]
    # Padded to 64 as the call does; front1 runs on the four pixel phases (same pixel count).
    assert costs[0].input_shape == (4, 384, 640, 3)
    # Every layer works at H/k x W/k with k | 64, so MACs scale exactly with the pixel count:
    # 768 x 1280 = 15 x 256^2 (one trace instead of two: tracing 77M parameters is slow).
    per_stack = [sum(c.macs for c in costs if f"/{s.name}/" in c.path) for s in full_sen.stacks]
    assert all(macs % 15 == 0 for macs in per_stack)
    assert [round(macs / 15 / 1e9, 2) for macs in per_stack] == [20.67, 21.08]
    # The decimated stride-2 layers cost what a strided conv costs: output pixels only.
    front2 = [c for c in costs if c.path.endswith("stack1/front2/conv")][0]
    assert front2.input_shape[1:3] == front2.output_shape[1:3] == (384, 640)


# ---- registry and interface -------------------------------------------------------------------


def test_registry_keeps_sen_apart_from_the_restorers():
    assert models.FLOW_ESTIMATOR_BUILDERS["sen"] is sen.sen
    assert models.flow_estimator_names() == ["sen"]
    assert "sen" not in models.model_names()
    with pytest.raises(ValueError, match=r"registered flow estimators: \['sen'\]"):
        models.build_flow_estimator("pwc")
    assert SEN.size_multiple == 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sen_skips": "add"}, "sen_skips"),
        ({"sen_output": "half"}, "sen_output"),
        ({"upsampling": "bicubic"}, "upsampling"),
        ({"res2_skip": "none"}, "res2_skip"),
        ({"dilation_rates": (2, 2)}, "dilation_rates"),
        ({"num_stacks": 0}, "num_stacks"),
    ],
)
def test_bad_switches_raise_naming_the_argument(overrides, message):
    with pytest.raises(ValueError, match=message):
        sen.sen(**overrides)


@pytest.fixture(scope="module")
def tiny_sen():
    """A tiny default SEN shared by the read-only tests."""
    return tiny()


def test_output_shapes_and_stack_outputs(tiny_sen):
    model = tiny_sen
    x = model_checks.random_images(128, 192, batch=2)
    flow = model(x)
    assert tuple(flow.shape) == (2, 128, 192, 2)
    outputs = model.stack_outputs(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 128, 192, 2)] * 2
    np.testing.assert_array_equal(numpy(outputs[-1]), numpy(flow))
    assert np.all(np.isfinite(numpy(flow)))


def test_stack2_reads_the_image_and_the_stack1_flow(tiny_sen):
    model = tiny_sen
    assert [s.name for s in model.stacks] == ["stack1", "stack2"]
    assert model.stacks[0].front[0].conv.kernel.shape[2] == 3
    assert model.stacks[1].front[0].conv.kernel.shape[2] == 5
    x = model_checks.random_images(64, 128, seed=1)
    u1 = model.stacks[0](x)
    u2 = model.stacks[1](np.concatenate([x, numpy(u1)], axis=-1))
    np.testing.assert_allclose(numpy(model(x)), numpy(u2), atol=1e-6)


def test_odd_sizes_are_edge_padded_to_64_and_cropped_back(tiny_sen):
    model = tiny_sen
    x = model_checks.random_images(70, 90, seed=2)
    flow = model(x)
    assert tuple(flow.shape) == (1, 70, 90, 2)
    assert [tuple(o.shape) for o in model.stack_outputs(x)] == [(1, 70, 90, 2)] * 2
    padded = np.pad(x, [(0, 0), (0, 128 - 70), (0, 128 - 90), (0, 0)], mode="edge")
    np.testing.assert_allclose(numpy(flow), numpy(model(padded))[:, :70, :90], atol=1e-6)
    # Unknown H and W in a traced function (SavedModel export): same padding and cropping.
    dynamic = tf.function(model, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(numpy(dynamic(x)), numpy(flow), atol=1e-5)


def test_quarter_output_shapes():
    model = models.build_flow_estimator("sen", sen_output="quarter", **TINY)  # not built yet
    x = model_checks.random_images(70, 90, seed=3)
    assert [tuple(o.shape) for o in model.stack_outputs(x)] == [(1, 18, 23, 2)] * 2
    # The call up-samples the last quarter map bilinearly x4 (then crops to H x W).
    x = model_checks.random_images(64, 64, seed=4)
    quarter = model.stack_outputs(x)[-1]
    assert tuple(quarter.shape) == (1, 16, 16, 2)
    np.testing.assert_allclose(numpy(model(x)), numpy(sen.upsample4(quarter)), atol=1e-6)


def test_upsample4_keeps_values_and_uses_half_pixel_centres():
    np.testing.assert_allclose(numpy(sen.upsample4(np.full((1, 3, 5, 2), 7.0, np.float32))), 7.0)
    # On a linear field the x4 map samples the plane at (i + 0.5) / 4 - 0.5 (away from borders).
    rows, cols = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
    plane = np.stack([2 * rows - cols, rows + 3 * cols], axis=-1)[None].astype(np.float32)
    up = numpy(sen.upsample4(plane))
    assert up.shape == (1, 24, 28, 2)
    fine_r, fine_c = np.meshgrid((np.arange(24) + 0.5) / 4 - 0.5, (np.arange(28) + 0.5) / 4 - 0.5,
                                 indexing="ij")  # fmt: skip
    fine = np.stack([2 * fine_r - fine_c, fine_r + 3 * fine_c], axis=-1)
    np.testing.assert_allclose(up[0, 2:-2, 2:-2], fine[2:-2, 2:-2], atol=1e-5)


# ---- building blocks --------------------------------------------------------------------------


@pytest.mark.parametrize("dilation", [2, 4, 1, 3])
@pytest.mark.parametrize(("height", "width"), [(16, 16), (13, 18)])
def test_strided_dilated_cbr_equals_a_dilated_conv_decimated(dilation, height, width):
    """Register #2: decimate + conv == PyTorch's stride-2 dilated conv (padding d (k - 1) / 2),
    i.e. Keras' stride-1 dilated "same" conv sampled at even rows and columns."""
    layer = CBR(6, 5, strides=2, dilation_rate=dilation, name="cbr")
    layer.build((None, None, None, 4))
    reference = layers.Conv2D(6, 5, dilation_rate=dilation, padding="same", use_bias=False)
    reference.build((None, None, None, 4))
    reference.kernel.assign(layer.conv.kernel)
    x = np.random.default_rng(dilation).normal(size=(2, height, width, 4)).astype(np.float32)
    expected = numpy(reference(x))[:, ::2, ::2]
    got = numpy(layer._convolve(x))
    assert got.shape == (2, -(-height // 2), -(-width // 2), 6)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # BN at its initial statistics (inference mode): x / sqrt(1 + eps), then ReLU.
    bn_relu = np.maximum(expected, 0) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(numpy(layer(x)), bn_relu, atol=1e-5)
    if dilation == 2:
        assert layer.mode == "decimate_conv" and layer.conv.dilation_rate == (1, 1)


@pytest.mark.parametrize("training", [False, True])
def test_phased_front_equals_the_dilated_conv_then_decimation(training):
    """The stack's fast path (front1 on the four pixel phases, phase 0 handed to front2 without
    slicing) computes what front1 (dilated conv) then front2 (decimate, conv) compute, BN batch
    statistics included."""
    stack = sen.SENStack(width_divisor=16)
    stack.build((None, None, None, 3))
    first, second, third = stack.front
    assert first.phased and second.mode == "decimate_conv"
    x = np.random.default_rng(3).random((2, 64, 128, 3)).astype(np.float32)
    full = first(x, training=training)
    np.testing.assert_allclose(
        numpy(first.phases(x, training=training))[:2], numpy(full)[:, ::2, ::2], atol=1e-5
    )
    expected = third(second(full, training=training), training=training)
    got = stack._front_layers(x, training)
    np.testing.assert_allclose(numpy(got), numpy(expected), rtol=1e-4, atol=1e-4)


def test_front_layers_are_dilated_and_have_no_bias(tiny_sen):
    front = tiny_sen.stacks[0].front
    layout = [(f.kernel_size, f.strides, f.dilation_rate) for f in front]
    assert layout == [(7, 1, 2), (5, 2, 2), (5, 2, 2)]
    assert front[0].conv.dilation_rate == (2, 2) and front[0].mode == "conv"
    assert all(not f.conv.use_bias for f in front)
    bn = front[0].bn
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    other = sen.SENStack(dilation_rates=(1, 4, 3), width_divisor=16).front
    assert [f.mode for f in other] == ["conv", "decimate_conv", "conv_decimate"]


def test_res2_always_projects_unless_identity_is_asked():
    x = np.random.default_rng(6).normal(size=(1, 8, 8, 6)).astype(np.float32)
    block = Res2(6, name="res2")
    block.build((None, None, None, 6))
    assert block.projection is not None  # register #6: CBR skip even at equal widths
    assert [block.cbr1.filters, block.cbr2.filters, block.cbr3.filters] == [3, 3, 6]
    main = block.cbr3(block.cbr2(block.cbr1(x)))
    np.testing.assert_allclose(numpy(block(x)), numpy(main + block.projection(x)), atol=1e-6)
    identity = Res2(6, skip="identity")
    identity.build((None, None, None, 6))
    assert identity.projection is None
    main = identity.cbr3(identity.cbr2(identity.cbr1(x)))
    np.testing.assert_allclose(numpy(identity(x)), numpy(main + x), atol=1e-6)
    widening = Res2(5, skip="identity")  # odd c: ceil(5 / 2) = 3 (register #7)
    widening.build((None, None, None, 6))
    assert widening.projection is not None and widening.cbr1.filters == 3


def test_res2out_is_linear_and_can_output_negative_flow():
    block = Res2Out(2)
    block.build((None, None, None, 4))
    assert block.cbr1.filters == block.cbr2.filters == 1
    assert block.conv.use_bias and block.projection.use_bias
    x = np.random.default_rng(7).normal(size=(1, 8, 8, 4)).astype(np.float32)
    main = block.conv(block.cbr2(block.cbr1(x)))
    out = numpy(block(x))
    np.testing.assert_allclose(out, numpy(main + block.projection(x)), atol=1e-6)
    assert out.min() < 0 < out.max()


def test_skips_none_and_bilinear_upsampling_switches(tiny_sen):
    x = model_checks.random_images(64, 64, seed=8)
    plain = tiny(sen_skips="none", num_stacks=1)
    widths = [block.cbr1.conv.kernel.shape[2] for block in plain.stacks[0].up]
    assert widths == [32, 32, 32, 16]  # 512, 512, 512, 256 over 16: no concatenation
    widths = [block.cbr1.conv.kernel.shape[2] for block in tiny_sen.stacks[0].up]
    assert widths == [64, 64, 48, 32]  # + a3 (512), a2 (512), a1 (256), a0 (256), over 16
    assert tuple(plain(x).shape) == (1, 64, 64, 2)
    bilinear = tiny(upsampling="bilinear", num_stacks=1)
    assert bilinear.stacks[0].upsampling == "bilinear"
    assert tuple(bilinear(x).shape) == (1, 64, 64, 2)


# ---- training behaviour, serialisation --------------------------------------------------------


def test_freezing_stack1_trains_only_stack2_and_keeps_its_statistics():
    model = tiny()
    model.stacks[0].trainable = False
    stack2 = {id(w) for w in model.stacks[1].trainable_weights}
    assert {id(w) for w in model.trainable_weights} == stack2
    x = model_checks.random_images(64, 64, batch=2, seed=9)
    frozen_mean = numpy(model.stacks[0].front[0].bn.moving_mean).copy()
    live_mean = numpy(model.stacks[1].front[0].bn.moving_mean).copy()
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    np.testing.assert_array_equal(numpy(model.stacks[0].front[0].bn.moving_mean), frozen_mean)
    assert not np.array_equal(numpy(model.stacks[1].front[0].bn.moving_mean), live_mean)


def test_config_round_trip_and_keras_save_load(tmp_path):
    model = tiny(sen_output="quarter", dilation_rates=(2, 4, 2), upsampling="bilinear")
    model(model_checks.random_images(64, 64, batch=2, seed=10), training=True)  # move BN stats
    config = model.get_config()
    assert config["dilation_rates"] == [2, 4, 2] and config["sen_output"] == "quarter"
    model.save(tmp_path / "sen.keras")
    reloaded = keras.saving.load_model(tmp_path / "sen.keras")  # from_config + build + weights
    assert isinstance(reloaded, SEN) and reloaded.get_config() == config
    layout = [(w.path, w.shape) for w in model.weights]
    assert [(w.path, w.shape) for w in reloaded.weights] == layout
    x = model_checks.random_images(70, 90, seed=11)  # padded and cropped
    for a, b in zip(model.stack_outputs(x), reloaded.stack_outputs(x), strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def test_mixed_precision_policy_is_respected():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny(num_stacks=1)
        flow = model(model_checks.random_images(64, 64, seed=12))
    finally:
        keras.config.set_dtype_policy("float32")
    # Computes in bfloat16, variables and the flow it returns in float32 (precision.py).
    assert model.stacks[0].compute_dtype == "bfloat16" and flow.dtype == "float32"
    assert model.stacks[0].front[0].conv.kernel.dtype == "float32"
