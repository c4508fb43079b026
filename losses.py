"""Training losses of the multi-scale deblurring models.

Every loss has the signature ``loss(predictions, sharp, **options) -> dict`` where

* ``predictions`` is the model's list of NHWC float32 images ordered coarse to fine
  (``[1/4, 1/2, full]``; a single-scale model passes a list of one image),
* ``sharp`` is the full-resolution NHWC label, float32 in [0, 1],

and the returned dict holds scalar float32 tensors: ``"loss"`` (the total to minimise) and every
term that enters it, unweighted and per scale (``content_0``, ``fft_2``, ``mse_1``, ...; index 0 is
the coarsest scale), so that the training loop can log the whole dict. The labels of the coarser
scales are built here from ``sharp`` with :func:`models.blocks.image_pyramid` (bilinear, half-pixel
centres, no antialias), in the mode each paper uses: MIMO-UNet's official labels are resized
straight from the full label; IDC's and Two-Way's are "obtained in the same way" as the model's
blurred input pyramid, so their losses take the model's ``pyramid_mode`` (the step objects pass
it).

Everything is written with ``keras.ops`` so that it runs inside a ``tf.function`` training step (and
under the other Keras backends, where the MIMO-UNet reference values must be re-checked first).

Each step object in :mod:`training` names the loss of its paper.
"""

from __future__ import annotations

import math

from keras import ops

from models.blocks import image_pyramid

# MIMO-UNet (paper eq. 9, official train.py): weight lambda of the frequency term.
MIMO_FFT_WEIGHT = 0.1
# IDC (paper eq. 5-6): alpha on (1 - SSIM) and beta on the gradient term.
IDC_SSIM_WEIGHT = 0.1
IDC_GRAD_WEIGHT = 0.1
# Two-Way (paper eq. 2): alpha_i per scale, coarse to fine; 5 on the full-resolution output.
TWO_WAY_SCALE_WEIGHTS = (1.0, 1.0, 5.0)
# GradientNet GAN (paper eq. 10-11; gradientnet.md section 4): L_G = 10 content + 1 gradient
# + 1 adversarial; WGAN-GP penalty weight lambda = 10.
GRADIENTNET_CONTENT_WEIGHT = 10.0
GRADIENTNET_GRADIENT_WEIGHT = 1.0
GRADIENTNET_ADV_WEIGHT = 1.0
GRADIENTNET_GP_WEIGHT = 10.0
# Feature scale s of the content loss: Keras' Caffe VGG19 takes 0-255 mean-subtracted input, about
# 255 * 0.226 = 57.5 times torchvision's normalised input, so its features are ~57.5x larger
# (gradientnet.md section 4; register item 19). s = 1 is plain Keras usage.
GRADIENTNET_CONTENT_FEATURE_SCALE = 1.0 / 57.5
CONTENT_DISTANCES = ("mse", "l2_per_position")
# RP-GAN (sen_rpgan.md section 8, register 17-19): L = L_c + gamma L_cGAN + lambda L_p with
# gamma = 0.01 (pix2pix's 1 : 100 adversarial-to-reconstruction ratio) and lambda = 0.1 (not given
# in the paper); content features VGG16 block2_conv2 scaled by s = 1/57.5 (same reason as
# GradientNet's s).
RPGAN_CGAN_WEIGHT = 0.01
RPGAN_PENALTY_WEIGHT = 0.1
# The weighted terms whose sum is L_RP-GAN (those present: ``pixel_weighted`` only with a pixel
# weight), in the order they are added; training/steps/rpgan_step.py separates lambda L_p's gradient
# from the rest's (its lp_grad_ratio).
RPGAN_LOSS_PARTS = ("content", "cgan_weighted", "penalty_weighted", "pixel_weighted")
RPGAN_CONTENT_FEATURE_SCALE = 1.0 / 57.5
G_ADV_FORMS = ("saturating", "non_saturating")
# WGAN-GP weight of the dp_lipschitz="gp" alternative (Gulrajani et al.'s 10).
RPGAN_DP_GP_WEIGHT = 10.0

# SSIM constants of Wang et al. 2004 / tf.image.ssim.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _as_float32(predictions, sharp):
    # Mixed-precision models may emit float16; losses are always accumulated in float32.
    predictions = [ops.cast(p, "float32") for p in predictions]
    return predictions, ops.cast(sharp, "float32")


def label_pyramid(predictions, sharp, mode):
    """Labels for each prediction, coarse to fine, by bilinear resizing of the NHWC ``sharp``.

    ``mode`` is ``"direct"`` (MIMO-UNet: each level resized straight from the full label) or
    ``"sequential"`` (IDC / Two-Way: repeated halving). Raises ``ValueError`` when a prediction's
    static spatial size differs from its label's (e.g. predictions passed fine to coarse).
    """
    labels = image_pyramid(sharp, num_scales=len(predictions), mode=mode)
    for k, (pred, label) in enumerate(zip(predictions, labels, strict=True)):
        p_shape, l_shape = tuple(pred.shape[1:3]), tuple(label.shape[1:3])
        if None not in p_shape + l_shape and p_shape != l_shape:
            raise ValueError(
                f"Prediction {k} has spatial size {p_shape} but its label has {l_shape}; "
                "predictions must be ordered coarse to fine ([1/4, 1/2, full])."
            )
    return labels


def _check_weights(weights, predictions, name):
    if len(weights) != len(predictions):
        raise ValueError(
            f"{name} has {len(weights)} entries but there are {len(predictions)} predictions."
        )


def l1(x, y):
    """Mean absolute difference over all elements (PyTorch ``L1Loss`` with mean reduction)."""
    return ops.mean(ops.abs(x - y))


def mse(x, y):
    """Mean squared difference over all elements (``MSELoss`` / ``tf.reduce_mean`` of squares)."""
    return ops.mean(ops.square(x - y))


def fft_l1(x, y):
    """MIMO-UNet frequency distance of two NHWC batches (mimo_unet.md section 6, step 3).

    ``F`` is the unnormalised, full two-sided 2-D DFT over (H, W) of each image and channel. The
    result is the L1 mean over the real and imaginary parts of ``F(x) - F(y)`` taken as separate
    real numbers: ``sum(|Re| + |Im|) / (2 * N * C * H * W)``. By linearity
    ``F(x) - F(y) = F(x - y)``, so a single FFT of the difference is taken.

    The tensor is transposed to NCHW first because the FFT transforms the two innermost axes; on
    NHWC it would transform (W, C) instead of (H, W).
    """
    diff = ops.transpose(x - y, (0, 3, 1, 2))
    real, imag = ops.fft2((diff, ops.zeros_like(diff)))
    return (ops.mean(ops.abs(real)) + ops.mean(ops.abs(imag))) / 2.0


def _gaussian_1d(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    coords = [i - (size - 1) / 2.0 for i in range(size)]
    weights = [math.exp(-0.5 * (c / sigma) ** 2) for c in coords]
    return [w / sum(weights) for w in weights]


def _gaussian_filter_valid(x, size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """Normalised Gaussian window applied per channel, "valid" positions only (NHWC).

    The 2-D window is the outer product of two normalised 1-D Gaussians (the same window as
    ``tf.image.ssim``), applied as two depthwise 1-D convolutions: 2k instead of k^2 products.
    """
    channels = x.shape[-1]
    g = ops.convert_to_tensor(_gaussian_1d(size, sigma), dtype=x.dtype)
    column = ops.tile(ops.reshape(g, (size, 1, 1, 1)), (1, 1, channels, 1))
    row = ops.tile(ops.reshape(g, (1, size, 1, 1)), (1, 1, channels, 1))
    x = ops.depthwise_conv(x, column, strides=1, padding="valid", data_format="channels_last")
    return ops.depthwise_conv(x, row, strides=1, padding="valid", data_format="channels_last")


def ssim_per_image(x, y, max_val=1.0):
    """Per-image SSIM of two NHWC batches; returns an (N,) tensor.

    Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, dynamic range
    ``max_val``: the SSIM map over the valid window positions, averaged over H, W and then over the
    channels. This is the ``tf.image.ssim`` definition (idc.md section 5); it is differentiable and
    applied to unclipped outputs in training. H and W must be at least 11.
    """
    c1 = (SSIM_K1 * max_val) ** 2
    c2 = (SSIM_K2 * max_val) ** 2
    channels = x.shape[-1]
    # Shifting both images by the same per-image, per-channel constant leaves (co)variances
    # unchanged but avoids float32 cancellation in E[x^2] - mu^2 on flat regions (tf.image.ssim
    # does not shift and is off by ~3e-5 on constant images).
    shift = 0.5 * (
        ops.mean(x, axis=(1, 2), keepdims=True) + ops.mean(y, axis=(1, 2), keepdims=True)
    )
    x, y = x - shift, y - shift
    # One filtering pass for the five local statistics, stacked along the channel axis.
    stats = _gaussian_filter_valid(ops.concatenate([x, y, x * x, y * y, x * y], axis=-1))
    mu_x, mu_y, e_xx, e_yy, e_xy = (stats[..., i * channels : (i + 1) * channels] for i in range(5))
    cov_xy = e_xy - mu_x * mu_y
    var_sum = e_xx - mu_x**2 + e_yy - mu_y**2
    mu_x, mu_y = mu_x + shift, mu_y + shift
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2.0 * cov_xy + c2) / (var_sum + c2)
    return ops.mean(luminance * contrast_structure, axis=(1, 2, 3))


def gradient_loss(x, y, norm="l1"):
    """IDC gradient term of two NHWC batches (idc.md section 5, A-IDC-5).

    Forward differences on the valid positions, ``dx F(y, x) = F(y, x+1) - F(y, x)`` and
    ``dy F(y, x) = F(y+1, x) - F(y, x)``; returns ``mean|dx x - dx y| + mean|dy x - dy y|`` for
    ``norm="l1"`` or the same with squares for ``norm="l2"``.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"Unknown grad_loss_norm {norm!r}; expected 'l1' or 'l2'.")
    distance = l1 if norm == "l1" else mse
    dx = distance(x[:, :, 1:, :] - x[:, :, :-1, :], y[:, :, 1:, :] - y[:, :, :-1, :])
    dy = distance(x[:, 1:, :, :] - x[:, :-1, :, :], y[:, 1:, :, :] - y[:, :-1, :, :])
    return dx + dy


# --------------------------------------------------------------------------------------------------
# Paper losses
# --------------------------------------------------------------------------------------------------


def mimo_unet_loss(predictions, sharp, fft_weight=MIMO_FFT_WEIGHT):
    """MIMO-UNet loss ``L_cont + lambda * L_MSFR`` (paper eq. 7-9; mimo_unet.md section 6).

    Labels: ``sharp`` bilinearly resized straight to 1/2 and 1/4 (pyramid mode ``"direct"``,
    ``align_corners=False``, no antialias): the 1/2 label is the 2x2 block mean, the 1/4 label the
    mean of the central 2x2 of each 4x4 block. Per scale k:

    * ``content_k = mean|P_k - S_k|`` (L1, mean over N*3*h*w elements);
    * ``fft_k`` = :func:`fft_l1`: L1 mean over the real and imaginary parts (separate elements,
      2*N*3*h*w of them) of the difference of the unnormalised full two-sided 2-D DFTs over (h, w).

    Total ``loss = sum_k content_k + fft_weight * sum_k fft_k``, fft_weight = 0.1.

    FFT equivalence (chosj95/MIMO-UNet issue #39, spec section 13.4): the official
    ``torch.rfft(t, signal_ndim=2, normalized=False, onesided=False)`` (removed in PyTorch 1.8)
    is exactly ``torch.view_as_real(torch.fft.fft2(t))``, which is exactly TensorFlow's
    ``tf.signal.fft2d`` / ``keras.ops.fft2`` applied to the NCHW tensor, Re and Im stacked as
    separate L1 elements. Newer forks that use ``torch.fft.rfft2`` (the one-sided spectrum,
    W//2 + 1 columns; INVOKERer/DeepRFT issue #13) compute a different loss: +1.4 % on the parity
    fixture. The modulus of the complex difference (+35 %) or ``norm="ortho"`` (-59 %) are also not
    this loss.

    Args:
        predictions: list of NHWC float tensors ``[1/4, 1/2, full]``.
        sharp: (N, H, W, 3) full-resolution label in [0, 1].
        fft_weight: lambda of eq. 9.

    Returns:
        dict of scalars: ``content_k``, ``fft_k`` (unweighted), ``content``, ``fft`` (sums) and
        ``loss``.
    """
    predictions, sharp = _as_float32(predictions, sharp)
    labels = label_pyramid(predictions, sharp, mode="direct")
    terms = {}
    for k, (pred, label) in enumerate(zip(predictions, labels, strict=True)):
        terms[f"content_{k}"] = l1(pred, label)
        terms[f"fft_{k}"] = fft_l1(pred, label)
    terms["content"] = ops.sum(ops.stack([terms[f"content_{k}"] for k in range(len(labels))]))
    terms["fft"] = ops.sum(ops.stack([terms[f"fft_{k}"] for k in range(len(labels))]))
    terms["loss"] = terms["content"] + fft_weight * terms["fft"]
    return terms


def idc_loss(
    predictions,
    sharp,
    ssim_weight=IDC_SSIM_WEIGHT,
    grad_weight=IDC_GRAD_WEIGHT,
    grad_loss_norm="l1",
    pyramid_mode="sequential",
):
    """IDC mixed loss (paper section 3.3, eq. 2-6; idc.md section 5).

    Labels by the model's bilinear pyramid, ``pyramid_mode`` (A-IDC-11): ``"sequential"`` (default,
    repeated halving; the 1/4 label is the 4x4 box mean) or ``"direct"`` (each level resized
    straight from ``sharp``; the 1/4 label is the mean of the central 2x2 of each 4x4 block). The
    paper's labels are "obtained in the same way" as the inputs, so pass the model's mode.
    Per scale i, ``L_mix,i = mse_i + ssim_weight * ssim_loss_i + grad_weight * grad_i`` with

    * ``mse_i``: mean squared error over all N*h*w*3 elements (SRN's reduction, A-IDC-12);
    * ``ssim_loss_i = 1 - SSIM``: :func:`ssim_per_image` (11x11 Gaussian, sigma 1.5, data range 1,
      channel mean) on the **unclipped** output, then the batch mean;
    * ``grad_i``: :func:`gradient_loss` with ``grad_loss_norm`` ("l1" default, "l2").

    ``loss = sum_i L_mix,i`` (equal scale weights). Weights default to alpha = beta = 0.1.

    Returns:
        dict of scalars ``mse_i``, ``ssim_loss_i``, ``grad_i`` (unweighted), ``mix_i`` (the
        weighted per-scale sum) and ``loss``.
    """
    predictions, sharp = _as_float32(predictions, sharp)
    labels = label_pyramid(predictions, sharp, mode=pyramid_mode)
    terms = {}
    for i, (pred, label) in enumerate(zip(predictions, labels, strict=True)):
        terms[f"mse_{i}"] = mse(pred, label)
        terms[f"ssim_loss_{i}"] = 1.0 - ops.mean(ssim_per_image(pred, label, max_val=1.0))
        terms[f"grad_{i}"] = gradient_loss(pred, label, norm=grad_loss_norm)
        terms[f"mix_{i}"] = (
            terms[f"mse_{i}"]
            + ssim_weight * terms[f"ssim_loss_{i}"]
            + grad_weight * terms[f"grad_{i}"]
        )
    terms["loss"] = ops.sum(ops.stack([terms[f"mix_{i}"] for i in range(len(labels))]))
    return terms


def two_way_loss(
    predictions, sharp, scale_weights=TWO_WAY_SCALE_WEIGHTS, pyramid_mode="sequential"
):
    """Two-Way loss ``sum_i alpha_i * MSE_i`` (paper eq. 2; two_way.md section 6, A-TW-8).

    Labels by the model's bilinear pyramid, ``pyramid_mode`` (as IDC: ``"sequential"`` by default,
    ``"direct"`` by switch; pass the model's mode). ``MSE_i`` is the mean over the elements of
    scale i (alpha_i / T_i of eq. 2); ``scale_weights`` = (1, 1, 5) coarse to fine, i.e. weight 5
    on the full-resolution output. Applied to the summed output F_i only, not to the branches.

    Returns:
        dict of scalars ``mse_i`` (unweighted) and ``loss``.
    """
    predictions, sharp = _as_float32(predictions, sharp)
    _check_weights(scale_weights, predictions, "scale_weights")
    labels = label_pyramid(predictions, sharp, mode=pyramid_mode)
    terms = {
        f"mse_{i}": mse(p, s) for i, (p, s) in enumerate(zip(predictions, labels, strict=True))
    }
    terms["loss"] = ops.sum(ops.stack([w * terms[f"mse_{i}"] for i, w in enumerate(scale_weights)]))
    return terms


# --------------------------------------------------------------------------------------------------
# GradientNet GAN (Qi 2022, section 3.2; gradientnet.md section 4)
# --------------------------------------------------------------------------------------------------
# These terms work on the generator's [-1, 1] images (not the [0, 1] of the losses above): the
# training step maps blur and sharp with x -> 2x - 1 before calling them.


def _safe_norm(x, axis):
    """Euclidean norm over ``axis`` with a zero (not NaN) gradient where the norm is 0."""
    squared = ops.sum(ops.square(x), axis=axis)
    positive = squared > 0.0
    return ops.where(positive, ops.sqrt(ops.where(positive, squared, 1.0)), 0.0)


def feature_distance(
    features_x, features_y, scale=GRADIENTNET_CONTENT_FEATURE_SCALE, distance="mse"
):
    """Distance of two NHWC feature batches scaled by ``scale`` (paper eq. 8).

    * ``"mse"`` (default): mean over N*C*H*W of ``(s * (fx - fy))**2`` (Johnson et al.'s squared
      Euclidean distance / (C*H*W), batch mean);
    * ``"l2_per_position"`` (the paper's literal formula): mean over N*H*W positions of the
      unsquared norm of the channel vector ``s * (fx - fy)``, divided by C.
    """
    if distance not in CONTENT_DISTANCES:
        raise ValueError(
            f"Unknown content_distance {distance!r}; expected one of {CONTENT_DISTANCES}."
        )
    diff = scale * (ops.cast(features_x, "float32") - ops.cast(features_y, "float32"))
    if distance == "mse":
        return ops.mean(ops.square(diff))
    channels = diff.shape[-1]
    return ops.mean(_safe_norm(diff, axis=-1)) / float(channels)


def gradientnet_content_loss(
    vgg, restored, sharp, scale=GRADIENTNET_CONTENT_FEATURE_SCALE, distance="mse"
):
    """L_content (eq. 8): :func:`feature_distance` of VGG19 ``block4_conv3`` features.

    ``vgg`` is the frozen extractor of :func:`models.vgg.build_vgg19_features` (caffe preprocessing
    inside, input [-1, 1]); it is called with ``training=False``. The label's features are constants
    (no gradient flows into ``sharp``). ``restored`` and ``sharp``: (N, H, W, 3) in [-1, 1].
    """
    restored, sharp = ops.cast(restored, "float32"), ops.cast(sharp, "float32")
    features_restored = vgg(restored, training=False)
    features_sharp = ops.stop_gradient(vgg(sharp, training=False))
    return feature_distance(features_restored, features_sharp, scale=scale, distance=distance)


def critic_value(scores):
    """Per-sample critic value D-bar(x): the mean of each sample's patch map; returns (N,).

    DeblurGAN's Wasserstein terms use this mean too, but its gradient penalty differentiates the
    map's sum (P = 1,225 times larger at 256 x 256); here the penalty differentiates D-bar
    (:mod:`training.adversarial` gives the effect on L_adv)."""
    scores = ops.cast(scores, "float32")
    return ops.mean(ops.reshape(scores, (ops.shape(scores)[0], -1)), axis=1)


def gradientnet_generator_loss(
    restored,
    sharp,
    critic_fake,
    vgg=None,
    content_weight=GRADIENTNET_CONTENT_WEIGHT,
    gradient_weight=GRADIENTNET_GRADIENT_WEIGHT,
    adv_weight=GRADIENTNET_ADV_WEIGHT,
    content_feature_scale=GRADIENTNET_CONTENT_FEATURE_SCALE,
    content_distance="mse",
    pixel_weight=0.0,
):
    """Generator objective L_G = 10 L_content + 1 L_gradient + 1 L_adv (paper eq. 11).

    * ``content``: :func:`gradientnet_content_loss` (VGG19 ``block4_conv3``, scale s = 1/57.5,
      MSE or ``content_distance="l2_per_position"``); skipped (0, ``vgg`` may be ``None``) when
      ``content_weight == 0`` (the paper's "W/o content" ablation);
    * ``gradient``: eq. 9, :func:`gradient_loss` with L1 (``mean|dx G - dx S| + mean|dy G - dy S|``,
      forward differences, means over the valid elements), on the [-1, 1] images. Scale against
      eq. 9: the paper writes ``1/(WH) sum_{x,y} ||grad_h s_{x,y} - grad_h G(b)_{x,y}||_1`` (+ the
      same for grad_v), the l1 norm of each pixel's colour vector, i.e. a **sum** over the 3
      channels averaged over the W*H pixels; this code averages over the channels too (means over
      N*H*(W-1)*3 and N*(H-1)*W*3 elements), so it is exactly **1/3** of eq. 9's literal value on
      the same images (up to eq. 9's 1/(WH) against the (W-1)H or W(H-1) valid differences,
      0.4 % at 256 px; tested). With the [-1, 1] domain (register 20: twice the differences of
      [0, 1] images) the term is 2/3 of eq. 9 on [0, 1] images. ``gradient_weight = 3`` gives the
      literal eq. 9 on [-1, 1] images, ``1.5`` on [0, 1] images; the default 1 keeps the eq. 11
      weight on the channel mean;
    * ``adversarial``: ``-mean_i D-bar(G(b_i))`` from the critic's patch maps ``critic_fake``;
    * ``pixel`` (not in the paper; only with ``pixel_weight > 0``): ``mean|G(b) - S|``, an anchor
      for short CPU runs with random VGG weights (``train_gradientnet.py --preset quick``).

    Args:
        restored: G(b), (N, H, W, 3) in [-1, 1]. sharp: S, same shape and range.
        critic_fake: the critic's output on ``restored`` (N, h, w, 1), critic in training mode.

    Returns:
        dict of scalars: ``content``, ``gradient``, ``adversarial`` (unweighted),
        ``content_weighted``, ``gradient_weighted``, ``adversarial_weighted`` and ``loss``.
    """
    restored, sharp = ops.cast(restored, "float32"), ops.cast(sharp, "float32")
    if content_weight:
        if vgg is None:
            raise ValueError("content_weight > 0 needs the VGG19 feature extractor (vgg=None).")
        content = gradientnet_content_loss(
            vgg, restored, sharp, scale=content_feature_scale, distance=content_distance
        )
    else:
        content = ops.zeros((), dtype="float32")
    terms = {
        "content": content,
        "gradient": gradient_loss(restored, sharp, norm="l1"),
        "adversarial": -ops.mean(critic_value(critic_fake)),
    }
    terms["content_weighted"] = content_weight * terms["content"]
    terms["gradient_weighted"] = gradient_weight * terms["gradient"]
    terms["adversarial_weighted"] = adv_weight * terms["adversarial"]
    terms["loss"] = (
        terms["content_weighted"] + terms["gradient_weighted"] + terms["adversarial_weighted"]
    )
    if pixel_weight:
        terms["pixel"] = l1(restored, sharp)
        terms["pixel_weighted"] = pixel_weight * terms["pixel"]
        terms["loss"] = terms["loss"] + terms["pixel_weighted"]
    return terms


def wgan_critic_loss(critic_real, critic_fake, gradient_penalty, gp_weight=GRADIENTNET_GP_WEIGHT):
    """WGAN-GP critic loss (paper eq. 10, Gulrajani et al.): what the critic minimises.

    ``loss = mean_i D-bar(G(b_i)) - mean_i D-bar(s_i) + gp_weight * gradient_penalty`` with
    ``critic_real`` / ``critic_fake`` the critic's patch maps (N, h, w, 1) on sharp and restored
    images and ``gradient_penalty`` the scalar of :func:`training.adversarial.gradient_penalty`.

    Returns:
        dict of scalars: ``critic_real``, ``critic_fake`` (batch means of D-bar),
        ``wasserstein`` (``critic_real - critic_fake``, the distance estimate),
        ``gradient_penalty`` (unweighted) and ``loss``.
    """
    real = ops.mean(critic_value(critic_real))
    fake = ops.mean(critic_value(critic_fake))
    penalty = ops.cast(gradient_penalty, "float32")
    return {
        "critic_real": real,
        "critic_fake": fake,
        "wasserstein": real - fake,
        "gradient_penalty": penalty,
        "loss": fake - real + gp_weight * penalty,
    }


# --------------------------------------------------------------------------------------------------
# RP-GAN (Wu et al., section 4.2; sen_rpgan.md section 8)
# --------------------------------------------------------------------------------------------------
# Images in [0, 1]. D_cGAN returns logits (its sigmoid is folded into the losses, computed stably
# with softplus: -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)); D_p returns
# critic patch maps whose per-image value D-bar_p(x) is the patch mean (:func:`critic_value`,
# register 16). All terms are float32 whatever the networks' compute dtype. ``ops.softplus`` is the
# overflow-free form (TF: tf.nn.softplus, JAX: logaddexp(x, 0)).


def cgan_discriminator_loss(logits_real, logits_fake):
    """D_cGAN loss (eq. 5): ``-[log D(I_s|O) + log(1 - D(G(I*|O)|O))]``, binary cross-entropy.

    ``real = mean softplus(-z_real)`` (target 1 on (I_s, O)) and ``fake = mean softplus(z_fake)``
    (target 0 on (G(I*, O), O), G's output detached by the caller), each a mean over patches and
    batch; ``loss = real + fake`` (pix2pix halves it; a constant factor Adam ignores).

    Args:
        logits_real: D_cGAN's patch logits on concat(I_s, O), (N, h, w, 1), any float dtype.
        logits_fake: its logits on concat(G(I*, O), O), same shape.

    Returns:
        dict of float32 scalars: ``bce_real``, ``bce_fake``, ``d_real`` / ``d_fake`` (mean
        sigmoid probabilities, for the log) and ``loss``.
    """
    real, fake = ops.cast(logits_real, "float32"), ops.cast(logits_fake, "float32")
    terms = {"bce_real": ops.mean(ops.softplus(-real)), "bce_fake": ops.mean(ops.softplus(fake))}
    terms["d_real"] = ops.mean(ops.sigmoid(real))
    terms["d_fake"] = ops.mean(ops.sigmoid(fake))
    terms["loss"] = terms["bce_real"] + terms["bce_fake"]
    return terms


def artifact_critic_loss(
    critic_deconvolved, critic_blurred, gradient_penalty=None, gp_weight=RPGAN_DP_GP_WEIGHT
):
    """D_p loss (eq. 6): minimise ``mean_i D-bar_p(O_i) - mean_i D-bar_p(I*_i)``.

    The critic estimates W(P_data, P_o) between artifact-corrupted deconvolutions I* (pushed up)
    and observed blurred images O (pushed down). The 1-Lipschitz constraint is weight clipping to
    [-0.01, 0.01] after the update (:func:`training.adversarial.clip_weights`, register 15);
    with ``dp_lipschitz="gp"`` the caller passes the WGAN-GP penalty of
    :func:`training.adversarial.artifact_critic_loss` (only valid for a critic without BN).

    Args:
        critic_deconvolved: D_p's patch maps on I*, (N, h, w, 1). critic_blurred: on O.
        gradient_penalty: optional scalar penalty (unweighted); ``None`` for weight clipping.
        gp_weight: its weight (WGAN-GP's 10).

    Returns:
        dict of float32 scalars: ``critic_deconvolved``, ``critic_blurred`` (batch means of
        D-bar_p), ``wasserstein`` (their difference, the distance estimate), ``gradient_penalty``
        (only with a penalty) and ``loss``.
    """
    deconvolved = ops.mean(critic_value(critic_deconvolved))
    blurred = ops.mean(critic_value(critic_blurred))
    terms = {
        "critic_deconvolved": deconvolved,
        "critic_blurred": blurred,
        "wasserstein": deconvolved - blurred,
        "loss": blurred - deconvolved,
    }
    if gradient_penalty is not None:
        terms["gradient_penalty"] = ops.cast(gradient_penalty, "float32")
        terms["loss"] = terms["loss"] + gp_weight * terms["gradient_penalty"]
    return terms


def rpgan_content_loss(vgg, restored, sharp, scale=RPGAN_CONTENT_FEATURE_SCALE):
    """L_c (section 4.2.3): MSE over C x H x W (and batch) of s phi(G(I*, O)) and s phi(I_s).

    ``vgg`` = :func:`models.vgg.build_vgg16_features` (VGG16 ``block2_conv2`` = relu2_2, caffe
    preprocessing of 255 x inside, input [0, 1]), called with ``training=False``; s = 1/57.5
    (register 18; the paper's formula shows no square, Johnson et al.'s loss is squared). The
    label's features are constants. ``restored``, ``sharp``: (N, H, W, 3) in [0, 1].
    """
    return gradientnet_content_loss(vgg, restored, sharp, scale=scale, distance="mse")


def cgan_generator_term(logits_fake, form="saturating"):
    """L_cGAN of G from D_cGAN's logits z on concat(G(I*, O), O); float32 scalar.

    * ``"saturating"`` (as written, register 17): ``mean log(1 - D) = -mean softplus(z)``;
    * ``"non_saturating"``: ``-mean log D = mean softplus(-z)``.

    Means over patches and batch.
    """
    if form not in G_ADV_FORMS:
        raise ValueError(f"Unknown g_adv_form {form!r}; expected one of {G_ADV_FORMS}.")
    logits = ops.cast(logits_fake, "float32")
    if form == "saturating":
        return -ops.mean(ops.softplus(logits))
    return ops.mean(ops.softplus(-logits))


def artifact_penalty(critic_restored, critic_sharp):
    """L_p (eq. 7): ``mean_i (D-bar_p(G(I*_i|O_i)) - D-bar_p(I_s,i))_+``, a per-sample hinge.

    Zero for a sample whose output scores no more "artifact-like" than its sharp image; slope 1 in
    D-bar_p(G_i) above (register 16: hinge per sample on the patch means, not per patch). The sharp
    image's value is a constant. Returns ``(penalty, active)``: the float32 scalar and the fraction
    of samples where the hinge is positive.
    """
    excess = critic_value(critic_restored) - ops.stop_gradient(critic_value(critic_sharp))
    active = ops.mean(ops.cast(excess > 0.0, "float32"))
    return ops.mean(ops.relu(excess)), active


def rpgan_generator_loss(
    restored,
    sharp,
    cgan_logits_fake,
    critic_restored=None,
    critic_sharp=None,
    vgg=None,
    cgan_weight=RPGAN_CGAN_WEIGHT,
    penalty_weight=RPGAN_PENALTY_WEIGHT,
    content_feature_scale=RPGAN_CONTENT_FEATURE_SCALE,
    g_adv_form="saturating",
    pixel_weight=0.0,
):
    """Generator objective L_RP-GAN = L_c + gamma L_cGAN + lambda L_p (section 4.2.3).

    * ``content``: :func:`rpgan_content_loss` (VGG16 ``block2_conv2``, MSE, s = 1/57.5);
    * ``cgan``: :func:`cgan_generator_term`, saturating ``mean log(1 - D(G|O))`` by default
      (``g_adv_form="non_saturating"``: ``-mean log D(G|O)``);
    * ``artifact_penalty``: :func:`artifact_penalty`, eq. 7, per-sample hinge; 0 when
      ``penalty_weight == 0`` or the critic maps are ``None`` (``use_dp=False``, Appendix B).

    gamma = ``cgan_weight`` = 0.01, lambda = ``penalty_weight`` = 0.1 (register 19).
    ``pixel`` (not in the paper; only with ``pixel_weight > 0``, ``train_rpgan.py --preset quick``):
    ``mean|G(I*, O) - I_s|``, an anchor for short runs with random VGG weights, as GradientNet's.

    Args:
        restored: G(I*, O), (N, H, W, 3) linear output (images in [0, 1]). sharp: I_s, same shape.
        cgan_logits_fake: D_cGAN's logits on concat(G(I*, O), O), (N, h, w, 1).
        critic_restored / critic_sharp: D_p's patch maps on G(I*, O) and on I_s.
        vgg: the frozen VGG16 extractor (:func:`models.vgg.build_vgg16_features`).

    Returns:
        dict of float32 scalars: ``content``, ``cgan``, ``artifact_penalty`` (unweighted),
        ``penalty_active`` (fraction of samples with a positive hinge), ``cgan_weighted``,
        ``penalty_weighted`` and ``loss``.
    """
    if vgg is None:
        raise ValueError("The RP-GAN content loss needs the VGG16 feature extractor (vgg=None).")
    restored, sharp = ops.cast(restored, "float32"), ops.cast(sharp, "float32")
    terms = {
        "content": rpgan_content_loss(vgg, restored, sharp, scale=content_feature_scale),
        "cgan": cgan_generator_term(cgan_logits_fake, form=g_adv_form),
    }
    if penalty_weight and critic_restored is not None:
        if critic_sharp is None:
            raise ValueError("L_p needs D_p's maps on both G(I*, O) and I_s (critic_sharp=None).")
        terms["artifact_penalty"], terms["penalty_active"] = artifact_penalty(
            critic_restored, critic_sharp
        )
    else:
        terms["artifact_penalty"] = ops.zeros((), dtype="float32")
        terms["penalty_active"] = ops.zeros((), dtype="float32")
    terms["cgan_weighted"] = cgan_weight * terms["cgan"]
    terms["penalty_weighted"] = penalty_weight * terms["artifact_penalty"]
    if pixel_weight:
        terms["pixel"] = l1(restored, sharp)
        terms["pixel_weighted"] = pixel_weight * terms["pixel"]
    parts = [terms[name] for name in RPGAN_LOSS_PARTS if name in terms]
    terms["loss"] = parts[0]
    for part in parts[1:]:
        terms["loss"] = terms["loss"] + part
    return terms
