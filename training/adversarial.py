"""WGAN-GP gradient penalty and critic losses, WGAN weight clipping (TensorFlow: nested tapes).

GradientNet GAN (paper eq. 10; gradientnet.md section 4, register item 18), standard WGAN-GP
(Gulrajani et al. 2017):

    L_D = mean_i D(G(b_i)) - mean_i D(s_i) + lambda * mean_i (||grad_x D(x_i)||_2 - 1)^2,
    x_i = eps_i * s_i + (1 - eps_i) * G(b_i),   eps_i ~ U(0, 1) per sample,

where D(x) is the critic value of an image (the mean of its patch map,
:func:`losses.critic_value`) and the norm runs over the whole H x W x C gradient of sample i.
G(b_i) is a constant here (``tf.stop_gradient``). ``endpoint="blurred"`` interpolates between the
sharp and the **blurred** image instead (the paper's literal wording, "on the line between s_k and
b_k"); the default ``"generated"`` is the cited method's definition. DeblurGAN's variant (one eps
per batch, per-pixel channel norm) is not implemented.

Scale of the penalty against DeblurGAN's code (numbers unchanged here; this says what they mean).
The critic's map has P patches, P = 35 x 35 = 1,225 on a 256 x 256 crop ((H/8 + 3)(W/8 + 3) for
H, W multiples of 8), and D(x) = (1/P) sum_p D_p(x) is their **mean**: that is what this penalty
differentiates, and ||grad_x D(x_i)||_2 over the whole H x W x C is driven to 1. DeblurGAN's
``calc_gradient_penalty`` differentiates the **sum** (``autograd.grad(..., grad_outputs=ones)``),
sum_p D_p = P * D, whose gradient is P = 1,225 times larger, while its Wasserstein terms and its
generator loss use the mean (``.mean()``), as here. Hence:

* mean vs sum alone (same whole-sample norm): our target ||grad D|| = 1 is
  ||grad sum_p D_p|| = 1,225; the sum's target 1 would be ||grad D|| = 1/1,225;
* DeblurGAN's penalty as written also takes the norm **per pixel** over the channels
  (``gradients.norm(2, dim=1)``) and drives each of the H*W pixel norms of grad sum_p D_p to 1,
  i.e. ||grad D|| = sqrt(H*W) / P = 256 / 1,225 = 0.209 over the whole 256 x 256 sample (each
  pixel's colour gradient of D at 1/1,225); ours allows 1 (per pixel 1/256 in RMS). Our critic
  may therefore be 1,225 / 256 = 4.79 times steeper (in D, per unit L2 distance between [-1, 1]
  images) than DeblurGAN's.

Effect on L_adv = -mean_i D(G(b_i)) (losses.gradientnet_generator_loss) and on the logged
Wasserstein estimate, both in units of D: where the penalty holds (it is enforced on the
interpolates, whose eps -> 0 end is G(b_i)), the adversarial gradient that reaches G(b_i) has
norm 1 / N here against 0.209 / N with DeblurGAN's penalty, so at the paper's weight 1 the
adversarial term pushes G about 4.8 times harder, relative to the content and gradient terms,
than DeblurGAN's code would (DeblurGAN's scale is ``adv_weight`` ~ 0.21 here, crop-dependent:
sqrt(HW) / P), and the Wasserstein estimate is about 4.8 times larger for the same
distributions. The paper cites Gulrajani et al., whose critic outputs one scalar per image; the
mean keeps that scalar's meaning for a patch critic.

Call these inside the critic's outer ``tf.GradientTape`` (and inside the step's ``tf.function`` /
``strategy.run``): the inner tape's gradient is recorded by the outer one, so the penalty is
differentiable with respect to the critic's weights. The per-sample split relies on the critic
treating samples independently (instance normalisation, no batch statistics): then the gradient of
the batch sum with respect to x_i is the gradient of D(x_i).

Tensors: NHWC float32, images in [-1, 1] (the generator's range) for GradientNet.

RP-GAN's artifacts-penalised critic D_p (sen_rpgan.md section 8, register 15; paper eq. 6):
:func:`artifact_critic_loss` (images in [0, 1]; I* pushed up, O pushed down). Its 1-Lipschitz
constraint is the cited WGAN's (Arjovsky et al.) **weight clipping**: :func:`clip_weights` to
[-0.01, 0.01] of every trainable D_p variable (kernels, biases, BN gamma and beta) after every D_p
update; BN moving statistics are not trainable and not clipped (they are PyTorch buffers, which
WGAN's ``p.data.clamp_`` over ``parameters()`` does not touch either). ``dp_lipschitz="gp"``
reuses the WGAN-GP penalty above with x_i between I*_i and O_i; it must be paired with a critic
without batch normalisation (the Appendix's D_p has BN in layers 1-5): batch statistics mix the
samples, so the per-sample input gradient the penalty constrains is no longer that of D(x_i)
alone (Gulrajani et al., section 4, recommend no BN in the critic for this reason).
"""

from __future__ import annotations

import tensorflow as tf

import losses

GP_ENDPOINTS = ("generated", "blurred")
# Added under the square root of the gradient norm so its derivative stays finite at 0; shifts the
# norm by at most 1e-6.
GP_NORM_EPSILON = 1e-12
# RP-GAN D_p: Lipschitz constraint choices and the clipping bound of WGAN (Arjovsky et al.).
DP_LIPSCHITZ = ("clip", "gp")
DP_CLIP_LIMIT = 0.01


def draw_epsilon(batch_size, seed=None):
    """Per-sample interpolation weights eps_i ~ U(0, 1), shape (N, 1, 1, 1) float32.

    ``seed``: optional stateless seed (shape (2,) int32/int64 tensor, e.g. derived from the step
    counter so a resumed run draws the same values); ``None`` uses TensorFlow's global generator.
    """
    shape = tf.stack([batch_size, 1, 1, 1])
    if seed is None:
        return tf.random.uniform(shape, dtype=tf.float32)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


def interpolate(real, other, epsilon):
    """``epsilon * real + (1 - epsilon) * other`` with ``epsilon`` (N, 1, 1, 1) per sample."""
    return epsilon * real + (1.0 - epsilon) * other


def critic_input_gradient_norms(critic, x_hat, training=True, loss_scale=None):
    """||grad_x D(x_i)||_2 over H x W x C for every sample of ``x_hat``; returns (N,) float32.

    D is the **mean** of the patch map (:func:`losses.critic_value`), not DeblurGAN's sum: the
    norm is 1/P of the sum's (P patches, 1,225 at 256 x 256; the module docstring gives the effect).

    Nested ``tf.GradientTape``: when called under an outer tape, the norms (and anything computed
    from them) are differentiable with respect to the critic's variables.

    ``loss_scale`` (float16 training: the critic optimizer's scale) seeds the nested backward pass,
    which runs in the critic's float16, so that its values do not underflow; the input gradient
    is unscaled in float32 before the norm (the outer, scaled backward pass then sees the penalty
    as in float32).
    """
    x_hat = tf.convert_to_tensor(x_hat, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        # Samples are independent in the critic, so d(sum_j D(x_j)) / d x_i = d D(x_i) / d x_i.
        total = tf.reduce_sum(losses.critic_value(critic(x_hat, training=training)))
    if loss_scale is None:
        gradients = tape.gradient(total, x_hat)
    else:
        scale = tf.cast(loss_scale, tf.float32)
        gradients = tape.gradient(total, x_hat, output_gradients=scale) / scale
    return tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + GP_NORM_EPSILON)


def _endpoint_images(fake, blurred, endpoint):
    if endpoint not in GP_ENDPOINTS:
        raise ValueError(f"Unknown gp_endpoint {endpoint!r}; expected one of {GP_ENDPOINTS}.")
    if endpoint == "generated":
        return tf.stop_gradient(fake)
    if blurred is None:
        raise ValueError("gp_endpoint='blurred' needs the blurred images (blurred=None).")
    return tf.stop_gradient(blurred)


def penalty_and_norms(
    critic,
    real,
    fake,
    blurred=None,
    endpoint="generated",
    epsilon=None,
    seed=None,
    training=True,
    loss_scale=None,
):
    """The gradient penalty ``mean_i (||grad D(x_i)||_2 - 1)^2`` and the (N,) norms.

    Args:
        critic: callable ``critic(x, training=...)`` -> (N, h, w, 1) patch map (or any per-sample
            scores; :func:`losses.critic_value` averages them).
        real: sharp images s_i (N, H, W, 3). fake: restored G(b_i), same shape (constant here).
        blurred: blurred inputs b_i, only for ``endpoint="blurred"``.
        endpoint: ``"generated"`` (default, x_i between s_i and G(b_i)) or ``"blurred"``.
        epsilon: optional (N, 1, 1, 1) weights (e.g. this replica's slice of a global draw);
            otherwise drawn per sample by :func:`draw_epsilon` with ``seed``.
        training: the critic's mode (training mode in the critic update, gradientnet.md 5).
        loss_scale: float16's loss scale, see :func:`critic_input_gradient_norms`.
    """
    real = tf.convert_to_tensor(real, dtype=tf.float32)
    other = tf.cast(_endpoint_images(fake, blurred, endpoint), tf.float32)
    if epsilon is None:
        epsilon = draw_epsilon(tf.shape(real)[0], seed=seed)
    x_hat = interpolate(real, other, tf.cast(epsilon, tf.float32))
    norms = critic_input_gradient_norms(critic, x_hat, training=training, loss_scale=loss_scale)
    return tf.reduce_mean(tf.square(norms - 1.0)), norms


def gradient_penalty(critic, real, fake, **kwargs):
    """Scalar WGAN-GP penalty (unweighted); keyword arguments as :func:`penalty_and_norms`."""
    return penalty_and_norms(critic, real, fake, **kwargs)[0]


def critic_loss(
    critic,
    sharp,
    restored,
    blurred=None,
    endpoint="generated",
    gp_weight=losses.GRADIENTNET_GP_WEIGHT,
    epsilon=None,
    seed=None,
    training=True,
    loss_scale=None,
):
    """WGAN-GP critic objective on one batch: :func:`losses.wgan_critic_loss` plus the penalty.

    ``restored`` (G(b)) is treated as a constant. Call under the critic's tape. ``loss_scale``:
    float16's, for the penalty's nested gradient (:func:`critic_input_gradient_norms`).

    Returns:
        dict of scalars: ``critic_real``, ``critic_fake``, ``wasserstein``, ``gradient_penalty``
        (unweighted), ``gradient_norm`` (batch mean of the per-sample norms) and ``loss``.
    """
    restored = tf.stop_gradient(restored)
    critic_real = critic(sharp, training=training)
    critic_fake = critic(restored, training=training)
    penalty, norms = penalty_and_norms(
        critic,
        sharp,
        restored,
        blurred=blurred,
        endpoint=endpoint,
        epsilon=epsilon,
        seed=seed,
        training=training,
        loss_scale=loss_scale,
    )
    terms = losses.wgan_critic_loss(critic_real, critic_fake, penalty, gp_weight=gp_weight)
    terms["gradient_norm"] = tf.reduce_mean(norms)
    return terms


# --------------------------------------------------------------------------------------------------
# RP-GAN artifacts-penalised critic D_p (paper eq. 6; sen_rpgan.md section 8)
# --------------------------------------------------------------------------------------------------


def clip_weights(variables, limit=DP_CLIP_LIMIT):
    """Clip every variable in place to [-limit, limit] (WGAN weight clipping, register 15).

    Pass ALL trainable variables of D_p (``critic.trainable_variables``: kernels, biases, BN
    gamma / beta) and call this after every D_p optimizer update, inside the same ``tf.function``
    (under a distribution strategy: in replica context after ``apply_gradients``, or in cross-
    replica context; the variables are mirrored, each replica assigns the same clipped value).
    """
    if limit <= 0:
        raise ValueError(f"clip limit must be positive, got {limit}")
    for variable in variables:
        variable.assign(tf.clip_by_value(variable, -limit, limit))


def artifact_critic_loss(
    critic,
    deconvolved,
    blurred,
    lipschitz="clip",
    gp_weight=losses.RPGAN_DP_GP_WEIGHT,
    epsilon=None,
    seed=None,
    training=True,
    loss_scale=None,
):
    """D_p objective on one batch: :func:`losses.artifact_critic_loss` (+ WGAN-GP for ``"gp"``).

    ``loss = mean_i D-bar_p(O_i) - mean_i D-bar_p(I*_i)`` (eq. 6, minimised: artifact-corrupted
    deconvolutions I* score high, blurred observations O low). With ``lipschitz="clip"`` (default)
    the caller clips the weights after the update (:func:`clip_weights`); with ``"gp"`` the
    penalty ``gp_weight * mean_i (||grad D_p(x_i)||_2 - 1)^2``, x_i = eps_i I*_i + (1 - eps_i) O_i,
    is added (critic without BN only). Both inputs are data (no gradient to any generator). Call
    under D_p's tape.

    Args:
        critic: D_p, ``critic(x, training=...)`` -> (N, h, w, 1) patch map.
        deconvolved: I*, (N, H, W, 3) in [0, 1]. blurred: O, same shape.
        loss_scale: float16's, for the ``"gp"`` penalty (:func:`critic_input_gradient_norms`).

    Returns:
        dict of float32 scalars: ``critic_deconvolved``, ``critic_blurred``, ``wasserstein`` and
        ``loss``; with ``"gp"`` also ``gradient_penalty`` (unweighted) and ``gradient_norm``.
    """
    if lipschitz not in DP_LIPSCHITZ:
        raise ValueError(f"Unknown dp_lipschitz {lipschitz!r}; expected one of {DP_LIPSCHITZ}.")
    deconvolved = tf.stop_gradient(tf.cast(deconvolved, tf.float32))
    blurred = tf.stop_gradient(tf.cast(blurred, tf.float32))
    critic_deconvolved = critic(deconvolved, training=training)
    critic_blurred = critic(blurred, training=training)
    if lipschitz == "clip":
        return losses.artifact_critic_loss(critic_deconvolved, critic_blurred)
    penalty, norms = penalty_and_norms(
        critic,
        deconvolved,
        blurred,
        epsilon=epsilon,
        seed=seed,
        training=training,
        loss_scale=loss_scale,
    )
    terms = losses.artifact_critic_loss(
        critic_deconvolved, critic_blurred, gradient_penalty=penalty, gp_weight=gp_weight
    )
    terms["gradient_norm"] = tf.reduce_mean(norms)
    return terms
