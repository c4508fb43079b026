"""GradientNet GAN losses (losses.py) and the WGAN-GP penalty (training/adversarial.py).

gradientnet.md sections 4 and 8: weights 10 / 1 / 1 and lambda 10; eq. 9 gradient loss; content
distance with the 1/57.5 feature scale (MSE and the literal per-position norm); the critic loss; the
penalty with per-sample epsilon and per-sample norm through a nested tape, checked against analytic
values for linear and quadratic critics. Tiny shapes, no VGG weights (a fake extractor stands in).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses
from training import adversarial

RNG = np.random.default_rng(0)


def _images(n=2, h=8, w=10, low=-1.0, high=1.0):
    return RNG.uniform(low, high, size=(n, h, w, 3)).astype("float32")


class _FakeVGG:
    """Stands in for the VGG extractor: a fixed linear map to 4 channels; records ``training``."""

    def __init__(self):
        self.kernel = tf.constant(RNG.normal(size=(3, 4)).astype("float32"))
        self.training_flags = []

    def __call__(self, x, training=None):
        self.training_flags.append(training)
        return tf.einsum("nhwc,cd->nhwd", x, self.kernel)


def _linear_critic(h, w, unit_norm=True, scale=1.0):
    """D(x) = w . vec(x) + b: the input gradient is w for every sample."""
    layers = [keras.Input((h, w, 3)), keras.layers.Flatten(), keras.layers.Dense(1)]
    critic = keras.Sequential(layers)
    kernel, bias = critic.layers[-1].get_weights()
    kernel = RNG.normal(size=kernel.shape).astype("float32")
    if unit_norm:
        kernel /= np.linalg.norm(kernel)
    critic.layers[-1].set_weights([scale * kernel, bias + 0.3])
    return critic


def _quadratic_critic(x, training=None):
    """D(x) = 0.5 ||x||^2 per sample: the input gradient is x itself."""
    return 0.5 * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])[:, None]


# --------------------------------------------------------------------------------------------------
# Constants and generator terms
# --------------------------------------------------------------------------------------------------


def test_loss_weights_are_the_papers():
    """Eq. 11: L_G = 10 content + 1 gradient + 1 adversarial; eq. 10: lambda = 10; s = 1/57.5."""
    assert losses.GRADIENTNET_CONTENT_WEIGHT == 10.0
    assert losses.GRADIENTNET_GRADIENT_WEIGHT == 1.0
    assert losses.GRADIENTNET_ADV_WEIGHT == 1.0
    assert losses.GRADIENTNET_GP_WEIGHT == 10.0
    assert pytest.approx(1 / 57.5) == losses.GRADIENTNET_CONTENT_FEATURE_SCALE


def test_gradient_loss_zero_for_identical_and_forward_differences_against_constant():
    """Spec 8: zero for identical images; against a constant image, mean |forward difference|."""
    x = _images()
    assert float(losses.gradient_loss(x, x)) == 0.0
    constant = np.full_like(x, 0.25)
    expected = np.mean(np.abs(np.diff(x, axis=2))) + np.mean(np.abs(np.diff(x, axis=1)))
    np.testing.assert_allclose(float(losses.gradient_loss(x, constant)), expected, rtol=1e-6)


def test_gradient_loss_is_one_third_of_eq9_channel_sum():
    """Eq. 9 takes the l1 norm of each pixel's colour vector (a sum over 3 channels) averaged over
    the pixels; the code's means run over the channels too: a factor 1/3, nothing else."""
    x, y = _images(), _images()

    def literal(axis):
        per_pixel = np.abs(np.diff(x, axis=axis) - np.diff(y, axis=axis)).sum(axis=-1)
        return per_pixel.mean()

    eq9 = literal(2) + literal(1)
    np.testing.assert_allclose(float(losses.gradient_loss(x, y)), eq9 / 3, rtol=1e-6)
    terms = losses.gradientnet_generator_loss(
        x, y, np.zeros((2, 3, 3, 1), "float32"), vgg=None, content_weight=0.0, gradient_weight=3.0
    )
    np.testing.assert_allclose(float(terms["gradient_weighted"]), eq9, rtol=1e-6)


def test_feature_distance_mse_and_literal_per_position():
    fx = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    fy = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    s = 1 / 57.5
    diff = s * (fx - fy)
    np.testing.assert_allclose(float(losses.feature_distance(fx, fy)), np.mean(diff**2), rtol=1e-5)
    per_position = np.mean(np.linalg.norm(diff, axis=-1)) / 5
    got = float(losses.feature_distance(fx, fy, scale=s, distance="l2_per_position"))
    np.testing.assert_allclose(got, per_position, rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.feature_distance(fx, fy, scale=1.0)), np.mean((fx - fy) ** 2), rtol=1e-5
    )
    with pytest.raises(ValueError, match="content_distance"):
        losses.feature_distance(fx, fy, distance="l1")


def test_per_position_distance_has_finite_gradient_at_zero():
    f = tf.constant(RNG.normal(size=(1, 2, 2, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(f)
        value = losses.feature_distance(f, tf.identity(f), distance="l2_per_position")
    grad = tape.gradient(value, f).numpy()
    assert float(value) == 0.0 and np.all(np.isfinite(grad))


def test_generator_loss_terms_and_weights():
    restored, sharp = _images(), _images()
    critic_fake = RNG.normal(size=(2, 3, 3, 1)).astype("float32")
    vgg = _FakeVGG()
    terms = losses.gradientnet_generator_loss(restored, sharp, critic_fake, vgg=vgg)
    s = losses.GRADIENTNET_CONTENT_FEATURE_SCALE
    features = (vgg(restored) - vgg(sharp)).numpy()
    np.testing.assert_allclose(float(terms["content"]), np.mean((s * features) ** 2), rtol=1e-5)
    np.testing.assert_allclose(
        float(terms["gradient"]), float(losses.gradient_loss(restored, sharp)), rtol=1e-6
    )
    np.testing.assert_allclose(float(terms["adversarial"]), -critic_fake.mean(), rtol=1e-5)
    total = 10 * float(terms["content"]) + float(terms["gradient"]) + float(terms["adversarial"])
    np.testing.assert_allclose(float(terms["loss"]), total, rtol=1e-5)
    np.testing.assert_allclose(float(terms["content_weighted"]), 10 * float(terms["content"]))
    assert vgg.training_flags[:2] == [False, False]  # VGG always in inference mode


def test_generator_loss_without_content_needs_no_vgg():
    """The "W/o content" ablation (content_weight=0) runs without a VGG; otherwise one is needed."""
    restored, sharp = _images(), _images()
    critic_fake = np.zeros((2, 3, 3, 1), "float32")
    terms = losses.gradientnet_generator_loss(restored, sharp, critic_fake, content_weight=0.0)
    assert float(terms["content"]) == 0.0
    np.testing.assert_allclose(float(terms["loss"]), float(terms["gradient"]), rtol=1e-6)
    with pytest.raises(ValueError, match="VGG19"):
        losses.gradientnet_generator_loss(restored, sharp, critic_fake)


def test_pixel_term_is_off_by_default_and_l1_when_weighted():
    restored, sharp = _images(), _images()
    critic_fake = np.zeros((2, 3, 3, 1), "float32")
    paper = losses.gradientnet_generator_loss(restored, sharp, critic_fake, content_weight=0.0)
    assert "pixel" not in paper  # the paper's L_G has no pixel term
    terms = losses.gradientnet_generator_loss(
        restored, sharp, critic_fake, content_weight=0.0, pixel_weight=3.0
    )
    np.testing.assert_allclose(float(terms["pixel"]), np.abs(restored - sharp).mean(), rtol=1e-6)
    np.testing.assert_allclose(
        float(terms["loss"]), float(paper["loss"]) + 3 * float(terms["pixel"]), rtol=1e-6
    )


def test_content_loss_gradient_reaches_the_restored_image_only():
    vgg = _FakeVGG()
    restored, sharp = tf.constant(_images()), tf.constant(_images())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([restored, sharp])
        value = losses.gradientnet_content_loss(vgg, restored, sharp)
    assert np.abs(tape.gradient(value, restored).numpy()).sum() > 0
    assert tape.gradient(value, sharp) is None


def test_wgan_critic_loss_values():
    real = RNG.normal(size=(3, 4, 4, 1)).astype("float32")
    fake = RNG.normal(size=(3, 4, 4, 1)).astype("float32")
    terms = losses.wgan_critic_loss(real, fake, 0.5)
    np.testing.assert_allclose(float(terms["wasserstein"]), real.mean() - fake.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        float(terms["loss"]), fake.mean() - real.mean() + 10 * 0.5, rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.critic_value(real).numpy(), real.reshape(3, -1).mean(axis=1), rtol=1e-6
    )


# --------------------------------------------------------------------------------------------------
# Gradient penalty
# --------------------------------------------------------------------------------------------------


def test_penalty_is_zero_for_a_linear_critic_with_unit_norm_weights():
    """Spec 8: a critic linear in its input with unit-norm weights: gradient norm 1 everywhere."""
    real, fake = _images(n=3), _images(n=3)
    penalty, norms = adversarial.penalty_and_norms(_linear_critic(8, 10), real, fake)
    np.testing.assert_allclose(norms.numpy(), 1.0, atol=1e-5)
    assert float(penalty) < 1e-9
    scaled = _linear_critic(8, 10, scale=3.0)
    penalty = adversarial.gradient_penalty(scaled, real, fake)
    np.testing.assert_allclose(float(penalty), (3.0 - 1.0) ** 2, rtol=1e-5)


def test_penalty_of_a_linear_patch_critic_matches_numpy():
    """A 3x3 'valid' conv critic: D = mean of its patch map; the input gradient is analytic."""
    h, w = 6, 7
    conv = keras.layers.Conv2D(1, 3, padding="valid")
    critic = keras.Sequential([keras.Input((h, w, 3)), conv])
    kernel = conv.get_weights()[0][..., 0]  # (3, 3, 3)
    ho, wo = h - 2, w - 2
    grad = np.zeros((h, w, 3))
    for i in range(ho):
        for j in range(wo):
            grad[i : i + 3, j : j + 3] += kernel / (ho * wo)
    expected = (np.linalg.norm(grad) - 1.0) ** 2
    penalty = adversarial.gradient_penalty(critic, _images(h=h, w=w), _images(h=h, w=w))
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)


def test_epsilon_is_drawn_per_sample():
    """Quadratic critic: grad D(x) = x; with real = 1 and fake = 0 the norm is eps_i sqrt(HWC)."""
    n, h, w = 6, 4, 5
    real, fake = np.ones((n, h, w, 3), "float32"), np.zeros((n, h, w, 3), "float32")
    seed = tf.constant([3, 7], dtype=tf.int64)
    _, norms = adversarial.penalty_and_norms(_quadratic_critic, real, fake, seed=seed)
    eps = norms.numpy() / np.sqrt(h * w * 3)
    expected = adversarial.draw_epsilon(n, seed=seed).numpy().reshape(-1)
    np.testing.assert_allclose(eps, expected, rtol=1e-5)
    assert np.all((eps > 0) & (eps < 1)) and len(np.unique(np.round(eps, 6))) == n
    # Given epsilon: the penalty is the mean of the per-sample squared deviations.
    given = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.1], "float32").reshape(n, 1, 1, 1)
    penalty, _ = adversarial.penalty_and_norms(_quadratic_critic, real, fake, epsilon=given)
    expected_penalty = np.mean((given.reshape(-1) * np.sqrt(h * w * 3) - 1.0) ** 2)
    np.testing.assert_allclose(float(penalty), expected_penalty, rtol=1e-5)


def test_blurred_endpoint_interpolates_towards_the_blurred_image():
    n, h, w = 2, 4, 4
    real = np.ones((n, h, w, 3), "float32")
    fake, blurred = np.zeros_like(real), np.full_like(real, 2.0)
    eps = np.full((n, 1, 1, 1), 0.25, "float32")
    kwargs = {"epsilon": eps}
    _, generated = adversarial.penalty_and_norms(_quadratic_critic, real, fake, **kwargs)
    _, literal = adversarial.penalty_and_norms(
        _quadratic_critic, real, fake, blurred=blurred, endpoint="blurred", **kwargs
    )
    size = np.sqrt(h * w * 3)
    np.testing.assert_allclose(generated.numpy(), 0.25 * size, rtol=1e-5)
    np.testing.assert_allclose(literal.numpy(), (0.25 + 0.75 * 2.0) * size, rtol=1e-5)
    with pytest.raises(ValueError, match="blurred"):
        adversarial.gradient_penalty(_quadratic_critic, real, fake, endpoint="blurred")
    with pytest.raises(ValueError, match="gp_endpoint"):
        adversarial.gradient_penalty(_quadratic_critic, real, fake, endpoint="sharp")


def test_penalty_gradient_reaches_critic_weights_inside_tf_function():
    """Nested tape in a tf.function: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| (D = w.x + b)."""
    critic = _linear_critic(4, 4, scale=2.0)
    real, fake = tf.constant(_images(h=4, w=4)), tf.constant(_images(h=4, w=4))

    @tf.function
    def penalty_gradients():
        with tf.GradientTape() as tape:
            penalty = adversarial.gradient_penalty(critic, real, fake)
        return tape.gradient(penalty, critic.trainable_variables)

    kernel_grad, bias_grad = penalty_gradients()
    w = critic.layers[-1].kernel.numpy()
    norm = np.linalg.norm(w)
    np.testing.assert_allclose(kernel_grad.numpy(), 2 * (norm - 1) * w / norm, rtol=1e-4, atol=1e-7)
    assert bias_grad is None or not np.any(bias_grad.numpy())


def test_critic_loss_step_updates_a_nonlinear_critic_inside_tf_function():
    critic = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, strides=2, padding="same"),
            keras.layers.LeakyReLU(negative_slope=0.2),
            keras.layers.Conv2D(1, 3, padding="same"),
        ]
    )
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(critic.trainable_variables)
    sharp, restored = tf.constant(_images(h=8, w=8)), tf.constant(_images(h=8, w=8))
    before = [v.numpy().copy() for v in critic.trainable_variables]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            terms = adversarial.critic_loss(critic, sharp, restored)
        grads = tape.gradient(terms["loss"], critic.trainable_variables)
        optimizer.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
        return terms, grads

    terms, grads = step()
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    after = [v.numpy() for v in critic.trainable_variables]
    # Both kernels and the first bias move; the last bias shifts D(real) and D(fake) alike and
    # leaves the input gradient unchanged, so its gradient is exactly 0 (WGAN-GP is bias-free).
    assert all(not np.allclose(b, a) for b, a in zip(before[:3], after[:3], strict=True))
    assert not np.any(grads[3].numpy())
    expected = (
        float(terms["critic_fake"])
        - float(terms["critic_real"])
        + 10 * float(terms["gradient_penalty"])
    )
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert float(terms["gradient_norm"]) > 0


def test_penalty_gradient_with_respect_to_weights_matches_finite_differences():
    """The nested tape's second-order gradient equals a central finite difference on one weight."""
    conv = keras.layers.Conv2D(1, 3, padding="valid", activation="tanh")
    critic = keras.Sequential([keras.Input((5, 5, 3)), conv])
    real, fake = tf.constant(_images(h=5, w=5)), tf.constant(_images(h=5, w=5))
    eps = tf.constant([[[[0.3]]], [[[0.8]]]])
    with tf.GradientTape() as tape:
        penalty = adversarial.gradient_penalty(critic, real, fake, epsilon=eps)
    analytic = tape.gradient(penalty, conv.kernel).numpy()[1, 1, 0, 0]
    kernel = conv.kernel.numpy()
    values = []
    for delta in (1e-2, -1e-2):
        shifted = kernel.copy()
        shifted[1, 1, 0, 0] += delta
        conv.kernel.assign(shifted)
        values.append(float(adversarial.gradient_penalty(critic, real, fake, epsilon=eps)))
    conv.kernel.assign(kernel)
    np.testing.assert_allclose(analytic, (values[0] - values[1]) / 2e-2, rtol=2e-2, atol=1e-5)
