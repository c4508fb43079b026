"""Structures-Guided GradientNet GAN networks (models/gradientnet.py, spec gradientnet.md §2-3, §8).

Parameter counts at full width (built, never run at full size); everything else on tiny models
(width 8, one MBRB) and 16-64 px. MAC counts are in tests/test_flops.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import losses
import models
from models import gradientnet
from models.gradientnet import MBRB, RGCL, ChannelAttention, GradientNet
from tests import model_checks

TINY = {"base_channels": 8, "gradient_channels": 8, "num_mbrb": 1}
RGCL_PARAMS = 2 * 12_352 + 36_928 + 580  # conv1x3 + conv3x1 + conv3x3 + CA(64), spec §2.1
MBRB_PARAMS = 3 * RGCL_PARAMS + 4_812 + 12_352 + 36_928  # + CA(192) + 1x1 fuse + 3x3


def built(**kwargs):
    model = models.build_model("gradientnet", **kwargs)
    model.build((None, None, None, 3))
    return model


def params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.weights)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


# ---- full-width parameter counts (spec §2.2, §3) ----------------------------------------------


def test_configuration_a_parameter_count_and_parts():
    model = built()
    assert model.count_params() == 3_496_759
    net = model.gradientnet
    assert params(net.mbrbs[0].rgcls[0]) == RGCL_PARAMS == 62_212
    assert params(net.mbrbs[0]) == MBRB_PARAMS == 240_728
    assert len(net.mbrbs) == 10 and all(len(b.rgcls) == 3 for b in net.mbrbs)
    assert params(net) == 3_496_759 - 756_739


@pytest.mark.parametrize(
    ("overrides", "count"),
    [
        ({"rgcl_mode": "plain"}, 2_738_239),  # paper Table 5 "w/o RGCL"
        ({"mbrb_branches": 1}, 2_128_279),  # "w/o MBRBs"
        ({"use_gradientnet": False}, 756_739),  # "w/o GradientNet"
        ({"fuse_kernel": 3}, 4_479_799),  # register 9's alternative (spec: 4.48 M)
    ],
)
def test_ablations_change_the_parameter_count_as_specified(overrides, count):
    assert built(**overrides).count_params() == count


def test_critic_parameter_count_and_35x35_patch_map():
    critic = gradientnet.critic()
    critic.build((None, None, None, 3))
    assert critic.count_params() == 2_764_737
    spec = critic.compute_output_spec(keras.KerasTensor((1, 256, 256, 3)))
    assert tuple(spec.shape) == (1, 35, 35, 1)
    for side in (32, 64, 128):  # (H/8 + 3) x (W/8 + 3) patches for multiples of 8
        spec = critic.compute_output_spec(keras.KerasTensor((1, side, 2 * side, 3)))
        assert tuple(spec.shape) == (1, side // 8 + 3, side // 4 + 3, 1)


def test_critic_receptive_field_is_70_px():
    """Four-pixel kernels at strides 2, 2, 2, 1, 1: 1 + 3 (1 + 2 + 4 + 8 + 8) = 70 px (pix2pix's
    70x70 PatchGAN), patches 8 px apart. Without IN, whose statistics span the whole image."""
    critic = gradientnet.critic(base_channels=2, norm=False)
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype("float32"))
    extents = []
    for row in (9, 10):  # two interior patches of the 19 x 19 map
        with tf.GradientTape() as tape:
            tape.watch(x)
            patch = critic(x)[0, row, 9, 0]
        touched = np.abs(tape.gradient(patch, x).numpy()[0]).sum(axis=-1) > 0
        rows, cols = np.nonzero(touched.any(axis=1))[0], np.nonzero(touched.any(axis=0))[0]
        assert rows[-1] - rows[0] + 1 == 70 and cols[-1] - cols[0] + 1 == 70
        extents.append(rows[0])
    assert extents[1] - extents[0] == 8


# ---- the building blocks ----------------------------------------------------------------------


@pytest.mark.parametrize("recurrence", ["residual", "iterate"])
def test_rgcl_shares_its_weights_across_recurrent_steps(recurrence):
    u = model_checks.random_images(12, 10, batch=2, seed=1)
    u = np.concatenate([u, u[..., ::-1], u[..., :2]], axis=-1)  # 8 channels
    counts, outputs = [], []
    for steps in (1, 3, 5):
        layer = RGCL(8, steps=steps, recurrence=recurrence, ca_reduction=4, name="rgcl")
        layer.build((None, None, None, 8))
        counts.append((len(layer.weights), params(layer)))
        outputs.append(layer)
    # conv1x3, conv3x1, conv3x3 and the CA's two 1x1 convs, kernels and biases: 10 variables.
    assert counts[0] == counts[1] == counts[2] == (10, 2 * (3 * 64 + 8) + 9 * 64 + 8 + 18 + 24)
    layer = outputs[1]  # three steps, written out with the one shared step
    f = layer.step
    x1 = f(u)
    x2 = f(u + x1) if recurrence == "residual" else f(x1)
    x3 = f(u + x2) if recurrence == "residual" else f(x2)
    np.testing.assert_allclose(numpy(layer(u)), numpy(u + x3), atol=1e-6)


def test_rgcl_step_follows_eq7_and_its_sigma_switches():
    u = model_checks.random_images(9, 11, seed=2)[..., :3]
    u = np.concatenate([u, u], axis=-1)  # 6 channels
    for sigma in ("literal", "gate", "none"):
        layer = RGCL(6, sigma=sigma, ca_reduction=2)
        layer.build((None, None, None, 6))
        h = keras.ops.leaky_relu(layer.conv_h(u) + layer.conv_v(u), negative_slope=0.01)
        h = layer.conv(h)
        h = {"literal": keras.ops.sigmoid(h), "gate": u * keras.ops.sigmoid(h), "none": h}[sigma]
        np.testing.assert_allclose(numpy(layer.step(u)), numpy(layer.ca(h)), atol=1e-6)
    assert tuple(layer.conv_h.kernel.shape) == (1, 3, 6, 6)  # horizontal: 1 row, 3 columns
    assert tuple(layer.conv_v.kernel.shape) == (3, 1, 6, 6)


def test_plain_rgcl_is_one_conv_with_leaky_relu():
    u = model_checks.random_images(8, 8, seed=3) - 0.5
    layer = RGCL(3, mode="plain", ca_reduction=16)
    layer.build((None, None, None, 3))
    assert layer.ca is None and len(layer.weights) == 2
    expected = keras.ops.leaky_relu(layer.conv(u), negative_slope=0.01)
    np.testing.assert_allclose(numpy(layer(u)), numpy(expected), atol=1e-7)


def test_mbrb_applies_each_rgcl_to_its_input_and_adds_it_back():
    x = model_checks.random_images(8, 12, batch=2, seed=4)
    x = np.concatenate([x, x[..., :1]], axis=-1)  # 4 channels
    block = MBRB(4, ca_reduction=4)
    block.build((None, None, None, 4))
    paths = keras.ops.concatenate([r(x) for r in block.rgcls], axis=-1)
    expected = x + block.conv(keras.ops.relu(block.fuse(block.ca(paths))))
    np.testing.assert_allclose(numpy(block(x)), numpy(expected), atol=1e-6)
    single = MBRB(4, branches=1, ca_reduction=4)
    single.build((None, None, None, 4))
    assert single.ca.channels == 4 and tuple(single.fuse.kernel.shape) == (1, 1, 4, 4)


def test_narrow_padded_conv_is_the_valid_conv_of_the_padded_input():
    """The 3-channel head runs as a transposed conv (AdjointConv2D): same kernel, same sums."""
    head = gradientnet.PaddedConv(3, 7, "reflect", name="head")
    head.build((None, None, None, 8))
    assert isinstance(head.conv, gradientnet.AdjointConv2D)
    assert [v.path for v in head.weights] == ["head/conv/kernel", "head/conv/bias"]
    head.conv.bias.assign(np.arange(3, dtype=np.float32))
    x = np.random.default_rng(5).normal(size=(2, 12, 20, 8)).astype(np.float32)
    padded = np.pad(x, [(0, 0), (3, 3), (3, 3), (0, 0)], mode="reflect")
    reference = keras.layers.Conv2D(3, 7, padding="valid")
    reference.build((None, None, None, 8))
    reference.set_weights(head.get_weights())
    np.testing.assert_allclose(numpy(head(x)), numpy(reference(padded)), atol=1e-5)
    wide = gradientnet.PaddedConv(8, 7, name="wide")
    wide.build((None, None, None, 8))
    assert not isinstance(wide.conv, gradientnet.AdjointConv2D)


def test_channel_attention_is_rcan_ca():
    x = model_checks.random_images(5, 7, batch=2, seed=5)
    x = np.concatenate([x] * 11, axis=-1)[..., :32]
    ca = ChannelAttention(32)
    ca.build((None, None, None, 32))
    assert tuple(ca.squeeze.kernel.shape) == (1, 1, 32, 2)  # reduction 16
    squeeze = np.maximum(x.mean(axis=(1, 2), keepdims=True) @ numpy(ca.squeeze.kernel)[0, 0]
                         + numpy(ca.squeeze.bias), 0)  # fmt: skip
    weights = 1 / (1 + np.exp(-(squeeze @ numpy(ca.excite.kernel)[0, 0] + numpy(ca.excite.bias))))
    np.testing.assert_allclose(numpy(ca(x)), x * weights, atol=1e-6)


def test_gradientnet_width_and_prftm():
    net = GradientNet(16, 8, num_mbrb=2, out_channels=16, ca_reduction=4)
    net.build((None, None, None, 16))
    assert tuple(net.prftm[0].kernel.shape) == (3, 3, 16, 8)
    assert tuple(net.proj.kernel.shape) == (3, 3, 8, 16)
    x = np.random.default_rng(6).random((1, 6, 10, 16), dtype=np.float32)
    assert tuple(net(x).shape) == (1, 6, 10, 16)


# ---- the generator on tiny models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return built(**TINY)


def test_shapes_any_size_config_and_save_load(tiny, tmp_path):
    assert tiny.size_multiple == 4
    model_checks.assert_multiscale_shapes(tiny, 64, 96, scales=(1,))
    model_checks.assert_any_size(tiny, sizes=((37, 53), (1, 1), (5, 18), (64, 96)))
    model_checks.assert_bad_size_raises(tiny)
    model_checks.assert_config_round_trip(tiny)
    model_checks.assert_keras_save_load(tiny, tmp_path / "gradientnet.keras", 16, 20)


def test_zero_one_contract_and_tanh_range(tiny):
    x = model_checks.random_images(32, 40, batch=2, seed=7)
    (restored,) = tiny(x)
    signed = tiny.generate(2 * x - 1)
    np.testing.assert_allclose(numpy(restored), (numpy(signed) + 1) / 2, atol=1e-6)
    assert np.all(np.abs(numpy(signed)) <= 1.0)
    assert float(np.min(numpy(restored))) >= 0.0 and float(np.max(numpy(restored))) <= 1.0
    extreme = built(init="torch", **TINY)(100.0 * x - 50.0)[0]  # saturates the Tanh
    assert float(np.min(numpy(extreme))) >= 0.0 and float(np.max(numpy(extreme))) <= 1.0


def test_instance_norm_uses_each_images_own_statistics(tiny):
    x = model_checks.random_images(16, 24, batch=3, seed=8)
    together = numpy(tiny(x)[0])
    for i in range(3):
        np.testing.assert_allclose(numpy(tiny(x[i : i + 1])[0])[0], together[i], atol=1e-5)
    norm = tiny.norms[0]
    # groups=-1 becomes one group per channel when built: instance normalisation.
    assert (norm.groups, norm.center, norm.scale, norm.epsilon) == (8, False, False, 1e-5)


def test_normal_initialisation():
    model = built(base_channels=32, gradient_channels=32, num_mbrb=1)
    kernel = numpy(model.e2.kernel)
    assert abs(float(kernel.std()) - 0.02) < 0.001 and abs(float(kernel.mean())) < 0.001
    assert not np.any(numpy(model.e2.bias))


def test_every_generator_weight_gets_a_gradient(tiny):
    x = model_checks.random_images(16, 16, batch=2, seed=9)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tiny(x)[0] - 0.5))
    grads = tape.gradient(loss, tiny.trainable_weights)
    missing = [w.path for w, g in zip(tiny.trainable_weights, grads, strict=True) if g is None]
    assert not missing


@pytest.mark.parametrize(
    "overrides",
    [
        {"rgcl_mode": "plain"},
        {"mbrb_branches": 1},
        {"use_gradientnet": False},
        {"skip": "concat", "upsampling": "resize", "padding": "zero"},
        {"attachment": "concat", "global_residual": True, "init": "torch"},
        {"attachment": "replace", "prftm_activation": False, "fuse_kernel": 3},
        {"rgcl_sigma": "gate", "rgcl_recurrence": "iterate", "rgcl_steps": 4},
        {"rgcl_sigma": "none", "mbrb_activation": "leaky_relu", "ca_bias": False, "slope": 0.2},
    ],
)
def test_ablations_and_alternatives_run_and_round_trip(overrides):
    model = built(**TINY, **overrides)
    model_checks.assert_multiscale_shapes(model, 16, 20, scales=(1,))
    model_checks.assert_config_round_trip(model)
    assert (model.gradientnet is None) == (overrides.get("use_gradientnet") is False)


def test_global_residual_is_deblurgans_clamped_sum():
    model = built(global_residual=True, **TINY)
    plain = built(**TINY)
    plain.set_weights(model.get_weights())
    x = 2 * model_checks.random_images(8, 12, seed=10) - 1
    np.testing.assert_allclose(
        numpy(model.generate(x)), np.clip(x + numpy(plain.generate(x)), -1, 1), atol=1e-6
    )


def test_zero_output_init_with_global_residual_starts_at_the_identity():
    model = built(global_residual=True, output_init="zeros", **TINY)
    x = model_checks.random_images(8, 12, seed=11)
    np.testing.assert_allclose(numpy(model(x)[-1]), x, atol=1e-6)
    model_checks.assert_config_round_trip(model)


def test_invalid_switches_are_refused():
    for bad in (
        {"rgcl_mode": "square"},
        {"rgcl_sigma": "tanh"},
        {"rgcl_recurrence": "lstm"},
        {"attachment": "add"},
        {"skip": "sum"},
        {"upsampling": "pixelshuffle"},
        {"padding": "edge"},
        {"init": "glorot"},
        {"mbrb_activation": "gelu"},
        {"mbrb_branches": 0},
        {"rgcl_steps": 0},
    ):
        with pytest.raises(ValueError):
            gradientnet.gradientnet(**TINY, **bad)


def test_registry_builder(tiny):
    assert models.MODEL_BUILDERS["gradientnet"] is gradientnet.gradientnet
    assert tiny.name == "gradientnet"


def test_saved_model_export_takes_any_size(tiny, tmp_path):
    out = export.export(tiny, str(tmp_path / "saved"), metadata={"model": "gradientnet"})
    serve = tf.saved_model.load(out).signatures["serving_default"]
    for height, width in ((37, 53), (20, 12)):
        images = model_checks.random_images(height, width, seed=height)
        got = serve(images=tf.constant(images))["restored"].numpy()
        expected = numpy(models.inference.restore(tiny, images))
        assert got.shape == (1, height, width, 3)
        np.testing.assert_allclose(got, expected, atol=1e-5)


# ---- the critic -------------------------------------------------------------------------------


def test_critic_layout_round_trip_and_switches(tmp_path):
    critic = gradientnet.critic(base_channels=4)
    critic.build((None, None, None, 3))
    x = 2 * model_checks.random_images(32, 24, batch=2, seed=11) - 1
    patches = critic(x)
    assert tuple(patches.shape) == (2, 7, 6, 1)  # 32 -> 17 -> 9 -> 5 -> 6 -> 7
    assert tuple(losses.critic_value(patches).shape) == (2,)
    np.testing.assert_allclose(
        numpy(losses.critic_value(patches)), numpy(patches).mean(axis=(1, 2, 3)), atol=1e-7
    )
    assert [n is not None for n in critic.norms] == [False, True, True, True, False]
    config = critic.get_config()
    clone = gradientnet.PatchGANCritic.from_config(config)
    clone.build((None, None, None, 3))
    assert clone.get_config() == config and clone.count_params() == critic.count_params()
    critic.save(tmp_path / "critic.keras")
    reloaded = keras.saving.load_model(tmp_path / "critic.keras")
    np.testing.assert_array_equal(numpy(reloaded(x)), numpy(patches))
    bounded = gradientnet.critic(base_channels=4, sigmoid=True, norm=False)
    bounded.build((None, None, None, 3))
    assert all(n is None for n in bounded.norms)
    values = numpy(bounded(x))
    assert np.all((values >= 0) & (values <= 1))
    conditional = gradientnet.critic(base_channels=4, in_channels=6)
    conditional.build((None, None, None, 6))
    assert tuple(conditional.convs[0].kernel.shape) == (4, 4, 6, 4)
