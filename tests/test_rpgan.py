"""RP-GAN networks (models/rpgan.py; spec sen_rpgan.md §7, §12 #11-#15, #26, #28, §13).

Parameter and MAC counts at full width (built, never run on pixels; MACs traced symbolically);
everything else on tiny models (``width_divisor=32``: 64 -> 2 channels) and small images.
"""

import keras
import numpy as np
import pytest
from keras import layers

import losses
from models import flops, rpgan
from models.rpgan import CBRTranspose, RPGANDiscriminator, RPGANGenerator

TINY = {"width_divisor": 32}


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def random_inputs(height, width, channels=6, batch=1, seed=0):
    """(batch, height, width, channels) float32 in [0, 1): concat(I*, O) for G by default."""
    return np.random.default_rng(seed).random((batch, height, width, channels), dtype=np.float32)


def built_generator(**overrides):
    model = rpgan.rpgan_generator(**overrides)
    model.build((None, None, None, 6))
    return model


def built_discriminator(**overrides):
    model = rpgan.rpgan_discriminator(**overrides)
    model.build((None, None, None, model.in_channels))
    return model


def gmac(model, height, width):
    return round(flops.count_macs(model, height, width, channels=model.in_channels) / 1e9, 2)


# ---- sizes of spec §7 -------------------------------------------------------------------------


def test_generator_parameter_counts_and_macs():
    model = built_generator()
    assert (trainable(model), model.count_params()) == (8_762_678, 8_770_622)
    assert gmac(model, 256, 256) == 66.41
    assert gmac(model, 720, 1280) == 933.85
    # Transposed convs are counted by input pixels: the first reads H/4 x W/4.
    up1 = [c for c in flops.conv_costs(model, 256, 256, channels=6) if "up1" in c.path][0]
    assert (up1.transposed, up1.input_shape[1:3], up1.output_shape[1:3]) == (
        True,
        (64, 64),
        (129, 129),  # the "valid" transposed conv; the call drops row and column 0
    )


def test_pix2pix_generator_widths():
    model = built_generator(g_up_widths=(128, 64))
    assert (trainable(model), model.count_params()) == (8_045_494, 8_053_054)
    assert gmac(model, 256, 256) == 48.42
    assert [layer.filters for layer in model.up] == [128, 64]


@pytest.mark.parametrize(
    ("conditional", "counts", "macs"),
    [(True, (6_964_097, 6_967_041), 2.79), (False, (6_961_025, 6_963_969), 2.74)],
)
def test_discriminator_parameter_counts_and_macs(conditional, counts, macs):
    model = built_discriminator(conditional=conditional)
    assert model.in_channels == (6 if conditional else 3)
    assert (trainable(model), model.count_params()) == counts
    assert gmac(model, 256, 256) == macs


def test_multiply_adds_helper():
    assert round(rpgan.multiply_adds(256, 256, width_divisor=32) / 1e6) > 0
    full = rpgan.multiply_adds(256, 256, network="discriminator", conditional=False)
    assert round(full / 1e9, 2) == 2.74
    with pytest.raises(ValueError, match="network"):
        rpgan.multiply_adds(256, 256, network="critic")


# ---- shapes, contracts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_generator():
    return built_generator(**TINY)


@pytest.mark.parametrize(("height", "width"), [(70, 90), (1, 1), (5, 18), (32, 48)])
def test_generator_keeps_any_size(tiny_generator, height, width):
    out = tiny_generator(random_inputs(height, width, batch=2))
    assert tuple(out.shape) == (2, height, width, 3)
    assert np.all(np.isfinite(numpy(out)))


def test_generator_pads_by_edge_replication_and_crops_back(tiny_generator):
    x = random_inputs(70, 90, seed=1)
    padded = np.concatenate([x, np.repeat(x[:, -1:], 2, axis=1)], axis=1)
    padded = np.concatenate([padded, np.repeat(padded[:, :, -1:], 2, axis=2)], axis=2)
    assert padded.shape == (1, 72, 92, 6)
    np.testing.assert_allclose(
        numpy(tiny_generator(x)), numpy(tiny_generator(padded))[:, :70, :90], atol=1e-6
    )


def test_generator_output_is_linear_and_not_clipped():
    model = built_generator(**TINY)
    x = random_inputs(16, 16)
    bias = model.out.projection.bias
    for value in (3.0, -3.0):
        bias.assign(np.full(bias.shape, value, np.float32))
        out = numpy(model(x))
        assert (out.min() > 1.0) if value > 0 else (out.max() < 0.0)


@pytest.mark.parametrize("conditional", [True, False])
def test_discriminator_patch_map_is_16x16_on_256(conditional):
    model = built_discriminator(conditional=conditional, **TINY)
    x = random_inputs(256, 256, channels=model.in_channels, batch=2)
    out = model(x)
    assert tuple(out.shape) == (2, 16, 16, 1)
    assert tuple(losses.critic_value(out).shape) == (2,)
    assert tuple(model(x[:, :40, :72]).shape) == (2, 3, 5, 1)  # ceil(H/16) x ceil(W/16)


@pytest.mark.parametrize(
    ("build", "channels", "message"),
    [
        (lambda: rpgan.rpgan_generator(**TINY), 3, "concat\\(I\\*, O\\) with 6 channels"),
        (lambda: rpgan.rpgan_generator(**TINY), 5, "got 5 channels"),
        (lambda: rpgan.rpgan_discriminator(**TINY), 3, "6 channels"),
        (lambda: rpgan.rpgan_discriminator(conditional=False, **TINY), 6, "3 channels"),
    ],
)
def test_wrong_channel_count_raises(build, channels, message):
    with pytest.raises(ValueError, match=message):
        build()(random_inputs(16, 16, channels=channels))


# ---- switches and register choices ------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "overrides", "message"),
    [
        (rpgan.rpgan_generator, {"g_up_widths": (64, 32)}, "g_up_widths"),
        (rpgan.rpgan_generator, {"width_divisor": 0}, "width_divisor"),
        (rpgan.rpgan_generator, {"init": "normal"}, "init"),
        (rpgan.rpgan_discriminator, {"d_style": "wgan"}, "d_style"),
        (rpgan.rpgan_discriminator, {"width_divisor": 0}, "width_divisor"),
    ],
)
def test_bad_switches_raise_naming_the_argument(builder, overrides, message):
    with pytest.raises(ValueError, match=message):
        builder(**overrides)


def test_discriminator_styles():
    paper = built_discriminator(**TINY)
    assert all(b.batch_norm and b.activation == "relu" for b in paper.body)
    assert all(not b.conv.use_bias for b in paper.body)  # register #26
    assert paper.head.use_bias and paper.head.activation is keras.activations.linear
    pix2pix = built_discriminator(d_style="pix2pix", **TINY)
    assert [b.batch_norm for b in pix2pix.body] == [False, True, True, True, True]
    assert pix2pix.body[0].conv.use_bias and pix2pix.body[0].activation == "leaky_relu"
    no_bn = built_discriminator(conditional=False, d_style="no_bn", **TINY)
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in _all_layers(no_bn))
    assert all(b.conv.use_bias for b in no_bn.body)
    assert no_bn.non_trainable_weights == []
    assert (paper.has_batch_norm, pix2pix.has_batch_norm, no_bn.has_batch_norm) == (
        True,
        True,
        False,
    )


def _all_layers(model):
    return list(model._flatten_layers(include_self=False))


def test_generator_layer_list():
    model = built_generator()
    assert model.in_channels == 6 and model.size_multiple == 4
    kernels = [tuple(layer.conv.kernel.shape) for layer in model.down]
    assert kernels == [(7, 7, 6, 64), (3, 3, 64, 128), (3, 3, 128, 256)]
    assert [layer.channels for layer in model.res] == [256] * 6
    # Keras stores a transposed kernel as (k, k, out, in).
    assert [tuple(layer.conv.kernel.shape) for layer in model.up] == [
        (3, 3, 256, 256),
        (3, 3, 128, 256),
    ]
    assert tuple(model.last.conv.kernel.shape) == (7, 7, 128, 64)
    assert tuple(model.out.projection.kernel.shape) == (3, 3, 70, 3)  # register #12
    assert tuple(model.out.conv.kernel.shape) == (3, 3, 2, 3)


def test_transposed_conv_is_pytorchs_grid():
    """Output pixel 2i + t - 1 gets input pixel i times tap t, the output has exactly 2h x 2w
    pixels: PyTorch's ConvTranspose2d(3, stride=2, padding=1, output_padding=1)."""
    rng = np.random.default_rng(3)
    layer = CBRTranspose(2)
    layer.build((None, None, None, 3))
    kernel = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)  # (kh, kw, out, in)
    layer.conv.kernel.assign(kernel)
    x = rng.standard_normal((1, 4, 5, 3)).astype(np.float32)
    expected = np.zeros((1, 8, 10, 2), np.float32)
    for i in range(4):
        for j in range(5):
            for ti in range(3):
                for tj in range(3):
                    row, col = 2 * i + ti - 1, 2 * j + tj - 1
                    if 0 <= row < 8 and 0 <= col < 10:
                        expected[0, row, col] += kernel[ti, tj] @ x[0, i, j]
    np.testing.assert_allclose(numpy(layer.conv(x)[:, 1:, 1:, :]), expected, atol=1e-5)
    assert tuple(layer(x).shape) == (1, 8, 10, 2)


# ---- serialisation ----------------------------------------------------------------------------


def _round_trip(model, channels):
    config = model.get_config()
    clone = type(model).from_config(config)
    clone.build((None, None, None, channels))
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


def _save_load(model, path, x):
    before = numpy(model(x))
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(model)
    np.testing.assert_array_equal(numpy(reloaded(x)), before)


def test_generator_config_round_trip_and_keras_save_load(tmp_path):
    model = built_generator(g_up_widths=(128, 64), **TINY)
    _round_trip(model, 6)
    assert model.get_config()["g_up_widths"] == [128, 64]
    _save_load(model, tmp_path / "g.keras", random_inputs(20, 28))


def test_quick_preset_generator_starts_as_the_blurred_input(tmp_path):
    """``global_residual`` + ``output_init="zeros"`` (not the paper's; the quick preset): G(I*, O)
    is exactly O before training, and the switches survive config and ``.keras`` round trips."""
    model = built_generator(global_residual=True, output_init="zeros", **TINY)
    x = random_inputs(21, 30)
    np.testing.assert_array_equal(numpy(model(x, training=False)), numpy(x)[..., 3:])
    _round_trip(model, 6)
    assert model.get_config()["global_residual"] and model.get_config()["output_init"] == "zeros"
    _save_load(model, tmp_path / "g_residual.keras", x)
    with pytest.raises(ValueError, match="output_init"):
        RPGANGenerator(output_init="ones")


@pytest.mark.parametrize(("conditional", "d_style"), [(True, "paper"), (False, "no_bn")])
def test_discriminator_config_round_trip_and_keras_save_load(tmp_path, conditional, d_style):
    model = built_discriminator(conditional=conditional, d_style=d_style, **TINY)
    _round_trip(model, model.in_channels)
    x = random_inputs(32, 48, channels=model.in_channels)
    _save_load(model, tmp_path / "d.keras", x)


def test_classes_are_registered():
    for cls in (RPGANGenerator, RPGANDiscriminator, CBRTranspose, rpgan.Res1):
        name = keras.saving.get_registered_name(cls)
        assert keras.saving.get_registered_object(name) is cls
