"""RP-GAN losses (losses.py) and D_p's Lipschitz constraint (training/adversarial.py).

sen_rpgan.md sections 8 and 13, register 15-19: D_cGAN binary cross-entropy from logits (eq. 5);
D_p's Wasserstein loss (eq. 6; I* pushed up, O down) with weight clipping to [-0.01, 0.01] or the
WGAN-GP alternative; the generator's L_c + 0.01 L_cGAN + 0.1 L_p with the saturating /
non-saturating cGAN term and eq. 7's per-sample hinge. Random VGG16 weights, tiny images, a stand-in
critic made of Keras layers (conv + BN) for the clipping test.
"""

from __future__ import annotations

import inspect
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from models import vgg as vgg_module
from tests.process_checks import result_json, run_python
from training import adversarial

RNG = np.random.default_rng(0)


def _images(n=2, h=32, w=32):
    return RNG.uniform(0.0, 1.0, size=(n, h, w, 3)).astype("float32")


def _maps(values, h=2, w=2):
    """Patch maps (N, h, w, 1) whose per-sample mean is ``values[i]`` (zero-mean ripple added)."""
    ripple = np.array([1.0, -1.0] * (h * w // 2), "float32").reshape(1, h, w, 1)
    return np.asarray(values, "float32").reshape(-1, 1, 1, 1) + 0.5 * ripple


def _stand_in_critic(size=16, batch_norm=True):
    """A tiny D_p: 2 x (conv 4x4 stride 2 -> BN -> ReLU) -> conv 4x4 -> 1 channel."""
    layers = [keras.Input((size, size, 3))]
    for width in (4, 8):
        layers.append(keras.layers.Conv2D(width, 4, strides=2, padding="same"))
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        layers.append(keras.layers.ReLU())
    layers.append(keras.layers.Conv2D(1, 4, padding="same"))
    return keras.Sequential(layers)


class _FakeVGG:
    """Stands in for the VGG16 extractor in the weighting tests: a fixed linear map, 4 channels."""

    def __init__(self):
        self.kernel = tf.constant(RNG.normal(size=(3, 4)).astype("float32"))

    def __call__(self, x, training=None):
        return tf.einsum("nhwc,cd->nhwd", x, self.kernel)


@pytest.fixture(scope="module")
def vgg16():
    return vgg_module.build_vgg16_features(None)


# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------


def test_defaults_are_the_specs():
    """Register 15, 18, 19: gamma = 0.01, lambda = 0.1, s = 1/57.5, clipping bound 0.01."""
    assert losses.RPGAN_CGAN_WEIGHT == 0.01 and losses.RPGAN_PENALTY_WEIGHT == 0.1
    assert pytest.approx(1 / 57.5) == losses.RPGAN_CONTENT_FEATURE_SCALE
    defaults = inspect.signature(losses.rpgan_generator_loss).parameters
    assert defaults["cgan_weight"].default == 0.01
    assert defaults["penalty_weight"].default == 0.1
    assert defaults["g_adv_form"].default == "saturating"
    assert adversarial.DP_CLIP_LIMIT == 0.01
    assert inspect.signature(adversarial.clip_weights).parameters["limit"].default == 0.01
    assert inspect.signature(adversarial.artifact_critic_loss).parameters["lipschitz"].default == (
        "clip"
    )


# --------------------------------------------------------------------------------------------------
# D_cGAN (eq. 5) and the generator's cGAN term
# --------------------------------------------------------------------------------------------------


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def test_cgan_discriminator_bce_matches_numpy():
    real = RNG.normal(scale=3.0, size=(3, 4, 4, 1)).astype("float32")
    fake = RNG.normal(scale=3.0, size=(3, 4, 4, 1)).astype("float32")
    real[0, 0, 0, 0], fake[0, 0, 0, 0] = -60.0, 60.0  # extreme logits stay finite
    terms = losses.cgan_discriminator_loss(real, fake)
    z_r, z_f = real.astype("float64"), fake.astype("float64")
    bce_real = -np.mean(_log_sigmoid(z_r))  # -log D(I_s|O), target 1
    bce_fake = -np.mean(_log_sigmoid(-z_f))  # -log(1 - D(G|O)), target 0
    np.testing.assert_allclose(float(terms["bce_real"]), bce_real, rtol=1e-5)
    np.testing.assert_allclose(float(terms["bce_fake"]), bce_fake, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss"]), bce_real + bce_fake, rtol=1e-5)
    np.testing.assert_allclose(float(terms["d_real"]), np.mean(1 / (1 + np.exp(-z_r))), rtol=1e-5)
    # Keras' own binary cross-entropy from logits agrees.
    keras_bce = keras.losses.BinaryCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        float(terms["loss"]),
        float(keras_bce(np.ones_like(real), real)) + float(keras_bce(np.zeros_like(fake), fake)),
        rtol=1e-4,
    )


def test_losses_are_float32_for_float16_inputs():
    logits = RNG.normal(size=(2, 2, 2, 1)).astype("float16")
    for value in (
        losses.cgan_discriminator_loss(logits, logits)["loss"],
        losses.cgan_generator_term(logits),
        losses.cgan_generator_term(logits, form="non_saturating"),
        losses.artifact_penalty(logits, logits)[0],
        losses.artifact_critic_loss(logits, logits)["loss"],
    ):
        assert value.dtype == "float32"
    terms = losses.rpgan_generator_loss(
        _images(h=4, w=4).astype("float16"),
        _images(h=4, w=4).astype("float16"),
        logits,
        logits,
        logits,
        vgg=_FakeVGG(),
    )
    assert all(v.dtype == "float32" for v in terms.values())


def test_saturating_and_non_saturating_values_and_slopes():
    """Saturating: mean log(1 - D) = -mean softplus(z); non-saturating: -mean log D."""
    z = np.array([-80.0, -3.0, -0.5, 0.0, 0.7, 4.0, 80.0], "float32").reshape(1, 7, 1, 1)
    z64 = z.astype("float64")
    saturating = losses.cgan_generator_term(z)
    np.testing.assert_allclose(float(saturating), np.mean(_log_sigmoid(-z64)), rtol=1e-5)
    non_saturating = losses.cgan_generator_term(z, form="non_saturating")
    np.testing.assert_allclose(float(non_saturating), -np.mean(_log_sigmoid(z64)), rtol=1e-5)
    # Slopes: d/dz log(1 - sigmoid z) = -sigmoid z (vanishes where D rejects G, z << 0);
    # d/dz -log sigmoid z = -(1 - sigmoid z) (about -1 there).
    logits = tf.Variable(z)
    for form, expected in (
        ("saturating", -1 / (1 + np.exp(-z64))),
        ("non_saturating", -1 / (1 + np.exp(z64))),
    ):
        with tf.GradientTape() as tape:
            value = losses.cgan_generator_term(logits, form=form)
        gradient = tape.gradient(value, logits).numpy()
        assert np.all(np.isfinite(gradient))
        np.testing.assert_allclose(gradient, expected / z.size, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="g_adv_form"):
        losses.cgan_generator_term(z, form="hinge")


# --------------------------------------------------------------------------------------------------
# L_p (eq. 7): per-sample hinge
# --------------------------------------------------------------------------------------------------


def _generator_terms(critic_restored, critic_sharp, **kwargs):
    images = _images(n=np.shape(critic_sharp)[0], h=4, w=4)
    logits = np.zeros_like(np.asarray(critic_sharp))
    return losses.rpgan_generator_loss(
        images, images, logits, critic_restored, critic_sharp, vgg=_FakeVGG(), **kwargs
    )


@pytest.mark.parametrize("offset", [-1.0, -0.2, 0.0, 0.05, 0.3, 2.0])
def test_penalty_is_zero_below_and_has_slope_lambda_above(offset):
    """One sample: L_p = (D_p(G) - D_p(I_s))_+, d(lambda L_p)/d D_p(G) = lambda above, 0 below."""
    sharp_value = 0.4
    shift = tf.Variable(offset)
    with tf.GradientTape() as tape:
        restored = tf.constant(_maps([sharp_value])) + shift
        terms = _generator_terms(restored, _maps([sharp_value]))
    slope = float(tape.gradient(terms["penalty_weighted"], shift))
    np.testing.assert_allclose(float(terms["artifact_penalty"]), max(offset, 0.0), atol=1e-6)
    np.testing.assert_allclose(
        float(terms["penalty_weighted"]), 0.1 * max(offset, 0.0), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(slope, 0.1 if offset > 0 else 0.0, rtol=1e-5, atol=1e-7)
    assert float(terms["penalty_active"]) == (1.0 if offset > 0 else 0.0)


def test_penalty_is_per_sample_not_per_batch_or_patch():
    """Sample 0 scores 0.3 above its sharp image, sample 1 0.5 below: L_p = (0.3 + 0) / 2."""
    sharp = _maps([0.2, 0.6])
    restored = tf.Variable(_maps([0.5, 0.1]))
    with tf.GradientTape() as tape:
        terms = _generator_terms(restored, sharp)
    np.testing.assert_allclose(float(terms["artifact_penalty"]), 0.15, rtol=1e-5)
    assert float(terms["penalty_active"]) == 0.5
    # A batch-level hinge would give (mean 0.3 - 0.4)_+ = 0; a per-patch hinge would count the
    # ripple (+-0.5) of sample 1. Gradient: lambda / (N * patches) on sample 0's patches only.
    gradient = tape.gradient(terms["penalty_weighted"], restored).numpy()
    np.testing.assert_allclose(gradient[0], np.full((2, 2, 1), 0.1 / (2 * 4)), rtol=1e-5)
    np.testing.assert_array_equal(gradient[1], 0.0)


def test_generator_total_and_use_dp_off():
    sharp, restored = _maps([0.0, 0.0]), _maps([1.0, -1.0])
    logits = RNG.normal(size=(2, 2, 2, 1)).astype("float32")
    images, label = _images(h=4, w=4), _images(h=4, w=4)
    vgg = _FakeVGG()
    terms = losses.rpgan_generator_loss(images, label, logits, restored, sharp, vgg=vgg)
    expected = float(terms["content"]) + 0.01 * float(terms["cgan"]) + 0.1 * 0.5
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(terms["cgan"]), float(losses.cgan_generator_term(logits)))
    assert float(terms["content"]) > 0
    # use_dp=False (Appendix B ablation): no D_p maps, lambda = 0.
    off = losses.rpgan_generator_loss(images, label, logits, vgg=vgg, penalty_weight=0.0)
    assert float(off["artifact_penalty"]) == 0.0 and float(off["penalty_weighted"]) == 0.0
    # The quick preset's L1 anchor (not the paper's): absent by default, added when asked.
    assert "pixel" not in terms
    pixel = losses.rpgan_generator_loss(
        images, label, logits, restored, sharp, vgg=vgg, pixel_weight=1000.0
    )
    l1 = float(np.mean(np.abs(images - label)))
    np.testing.assert_allclose(float(pixel["pixel"]), l1, rtol=1e-5)
    np.testing.assert_allclose(float(pixel["loss"]), expected + 1000.0 * l1, rtol=1e-5)
    with pytest.raises(ValueError, match="VGG16"):
        losses.rpgan_generator_loss(images, label, logits, restored, sharp)
    with pytest.raises(ValueError, match="critic_sharp"):
        losses.rpgan_generator_loss(images, label, logits, restored, None, vgg=vgg)


# --------------------------------------------------------------------------------------------------
# L_c: VGG16 block2_conv2 (random weights)
# --------------------------------------------------------------------------------------------------


def test_content_loss_is_scaled_mse_of_vgg16_relu2_2(vgg16):
    restored, sharp = _images(h=32, w=32), _images(h=32, w=32)
    value = losses.rpgan_content_loss(vgg16, restored, sharp)
    f_r = np.asarray(vgg16(restored, training=False))
    f_s = np.asarray(vgg16(sharp, training=False))
    assert f_r.shape == (2, 16, 16, 128)
    expected = np.mean(np.square((f_r - f_s) / 57.5))
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)
    assert float(losses.rpgan_content_loss(vgg16, sharp, sharp)) == 0.0


def test_generator_gradient_reaches_the_image_not_the_vgg(vgg16):
    restored = tf.Variable(_images(n=1, h=32, w=32))
    sharp = _images(n=1, h=32, w=32)
    logits = np.zeros((1, 2, 2, 1), "float32")
    with tf.GradientTape() as tape:
        terms = losses.rpgan_generator_loss(restored, sharp, logits, vgg=vgg16, penalty_weight=0)
    assert vgg16.trainable_variables == []
    gradient = tape.gradient(terms["loss"], restored)
    assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0


# --------------------------------------------------------------------------------------------------
# D_p (eq. 6): sign, weight clipping, gradient-penalty alternative
# --------------------------------------------------------------------------------------------------


def test_dp_loss_value_and_sign():
    """loss = mean D_p(O) - mean D_p(I*): minimising it raises I*'s score and lowers O's."""
    terms = losses.artifact_critic_loss(_maps([1.0, 2.0]), _maps([0.5, -0.5]))
    np.testing.assert_allclose(float(terms["critic_deconvolved"]), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(terms["critic_blurred"]), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(terms["wasserstein"]), 1.5, rtol=1e-6)
    np.testing.assert_allclose(float(terms["loss"]), -1.5, rtol=1e-6)
    deconvolved, blurred = tf.Variable(_maps([0.0])), tf.Variable(_maps([0.0]))
    with tf.GradientTape() as tape:
        loss = losses.artifact_critic_loss(deconvolved, blurred)["loss"]
    g_deconvolved, g_blurred = tape.gradient(loss, [deconvolved, blurred])
    assert np.all(g_deconvolved.numpy() < 0) and np.all(g_blurred.numpy() > 0)


def test_dp_step_pushes_artifact_images_up_and_blurred_down():
    critic = _stand_in_critic(batch_norm=False)
    deconvolved, blurred = _images(n=4, h=16, w=16), _images(n=4, h=16, w=16) * 0.5
    optimizer = keras.optimizers.SGD(1e-2)

    def scores():
        return (
            float(tf.reduce_mean(losses.critic_value(critic(deconvolved)))),
            float(tf.reduce_mean(losses.critic_value(critic(blurred)))),
        )

    before = scores()
    with tf.GradientTape() as tape:
        loss = adversarial.artifact_critic_loss(critic, deconvolved, blurred)["loss"]
    grads = tape.gradient(loss, critic.trainable_variables)
    optimizer.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
    after = scores()
    assert after[0] - after[1] > before[0] - before[1]


def _clip_step(critic, optimizer, deconvolved, blurred, limit=0.01):
    with tf.GradientTape() as tape:
        terms = adversarial.artifact_critic_loss(critic, deconvolved, blurred)
    grads = tape.gradient(terms["loss"], critic.trainable_variables)
    optimizer.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
    # Read before clipping (automatic control dependencies keep the order inside tf.function).
    unclipped = [tf.identity(v.value) for v in critic.trainable_variables]
    adversarial.clip_weights(critic.trainable_variables, limit)
    return unclipped


def test_weight_clipping_bounds_every_trainable_dp_variable_after_a_step():
    """Register 15: kernels, biases, BN gamma / beta all within [-0.01, 0.01] after the update."""
    critic = _stand_in_critic()
    names = {v.path.split("/")[-1] for v in critic.trainable_variables}
    assert {"kernel", "bias", "gamma", "beta"} <= names
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(critic.trainable_variables)
    deconvolved, blurred = _images(n=4, h=16, w=16), _images(n=4, h=16, w=16)
    step = tf.function(lambda: _clip_step(critic, optimizer, deconvolved, blurred))
    unclipped = [u.numpy() for u in step()]
    # The step moved weights outside the bound (BN gamma starts at 1), so clipping did something.
    assert max(float(np.max(np.abs(u))) for u in unclipped) > 0.01
    for variable, before in zip(critic.trainable_variables, unclipped, strict=True):
        value = variable.numpy()
        assert np.all(np.abs(value) <= 0.01 + 1e-9), variable.path
        np.testing.assert_allclose(value, np.clip(before, -0.01, 0.01))
    # BN moving statistics are not parameters: left as they are.
    moving = [v for v in critic.non_trainable_variables if "moving_variance" in v.path]
    assert moving and any(np.any(np.abs(v.numpy()) > 0.01) for v in moving)
    with pytest.raises(ValueError, match="positive"):
        adversarial.clip_weights(critic.trainable_variables, 0.0)


def test_weight_clipping_on_the_rpgan_critic_if_present():
    """The same on models.rpgan's D_p (skipped until that module lands)."""
    rpgan = pytest.importorskip("models.rpgan")
    critic = rpgan.rpgan_discriminator(conditional=False, width_divisor=16)
    images = _images(n=2, h=32, w=32)
    critic(images)
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(critic.trainable_variables)
    _clip_step(critic, optimizer, images, images * 0.5)
    assert critic.trainable_variables
    for variable in critic.trainable_variables:
        assert np.all(np.abs(variable.numpy()) <= 0.01 + 1e-9), variable.path


def test_gradient_penalty_alternative_for_a_critic_without_bn():
    critic = _stand_in_critic(batch_norm=False)
    deconvolved, blurred = _images(n=2, h=16, w=16), _images(n=2, h=16, w=16)
    eps = tf.constant([[[[0.25]]], [[[0.75]]]])
    terms = adversarial.artifact_critic_loss(
        critic, deconvolved, blurred, lipschitz="gp", epsilon=eps
    )
    penalty = adversarial.gradient_penalty(critic, deconvolved, blurred, epsilon=eps)
    np.testing.assert_allclose(float(terms["gradient_penalty"]), float(penalty), rtol=1e-5)
    expected = (
        float(terms["critic_blurred"]) - float(terms["critic_deconvolved"]) + 10 * float(penalty)
    )
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert float(terms["gradient_norm"]) > 0
    clip = adversarial.artifact_critic_loss(critic, deconvolved, blurred)
    assert "gradient_penalty" not in clip
    with pytest.raises(ValueError, match="dp_lipschitz"):
        adversarial.artifact_critic_loss(critic, deconvolved, blurred, lipschitz="spectral")


MIRRORED_CLIP_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training import adversarial

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        critic = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                                   keras.layers.BatchNormalization(), keras.layers.Conv2D(1, 3)])
        optimizer = keras.optimizers.Adam(0.1)
        optimizer.build(critic.trainable_variables)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, 0.5 * x)).batch(4)

    def replica_step(deconvolved, blurred):
        with tf.GradientTape() as tape:
            loss = adversarial.artifact_critic_loss(critic, deconvolved, blurred)["loss"]
        grads = tape.gradient(loss, critic.trainable_variables)
        optimizer.apply_gradients(zip(grads, critic.trainable_variables))
        adversarial.clip_weights(critic.trainable_variables)

    step = tf.function(lambda a, b: strategy.run(replica_step, args=(a, b)))
    for a, b in strategy.experimental_distribute_dataset(data):
        step(a, b)
    largest = max(float(np.max(np.abs(v.numpy()))) for v in critic.trainable_variables)
    same = all(
        all(np.array_equal(c.numpy(), v.value.values[0].numpy()) for c in v.value.values)
        for v in critic.trainable_variables
    )
    print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync,
                                  "largest": largest, "same": same}))
    """
)


def test_weight_clipping_in_replica_context_of_a_mirrored_strategy():
    """clip_weights inside strategy.run (as the training steps call it): 2 CPU replicas agree."""
    result = result_json(run_python(["-c", MIRRORED_CLIP_SCRIPT]))
    assert result["replicas"] == 2 and result["same"]
    assert result["largest"] <= 0.01 + 1e-9
