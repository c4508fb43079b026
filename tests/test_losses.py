"""Tests of losses.py: MIMO-UNet (numpy reference and parity fixture), IDC and Two-Way losses."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import structural_similarity

import losses

FIXTURE = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "fixtures"
    / "mimo_unet"
    / "mimo_unet_seed0.npz"
)
# Reference values of the fixture README ("Loss check"), scales 1/4, 1/2, full.
REF_CONTENT = (0.3176441, 0.2112550, 0.0896764)
REF_FFT = (3.727948, 5.572141, 0.272764)
REF_TOTAL = 1.575861


def _floats(terms):
    return {k: float(v) for k, v in terms.items()}


def _random_batch(rng, n=2, h=16, w=24):
    sharp = rng.uniform(0.0, 1.0, (n, h, w, 3)).astype(np.float32)
    preds = [rng.uniform(0.0, 1.0, (n, h // s, w // s, 3)).astype(np.float32) for s in (4, 2, 1)]
    return preds, sharp


# ---- independent numpy references -----------------------------------------------------------


def _block_mean(x, size):
    n, h, w, c = x.shape
    return x.reshape(n, h // size, size, w // size, size, c).mean(axis=(2, 4))


def _central_2x2_of_4x4(x):
    # Bilinear 0.25 with half-pixel centres samples at 4i + 1.5: rows/cols 4i+1, 4i+2.
    return (x[:, 1::4, 1::4] + x[:, 2::4, 1::4] + x[:, 1::4, 2::4] + x[:, 2::4, 2::4]) / 4.0


def _np_mimo_loss(preds, sharp, fft_weight=0.1):
    labels = [_central_2x2_of_4x4(sharp), _block_mean(sharp, 2), sharp]
    content, fft = [], []
    for p, s in zip(preds, labels, strict=True):
        p, s = p.astype(np.float64), s.astype(np.float64)
        content.append(np.mean(np.abs(p - s)))
        d = np.fft.fft2(p, axes=(1, 2)) - np.fft.fft2(s, axes=(1, 2))
        fft.append(np.sum(np.abs(d.real) + np.abs(d.imag)) / (2 * d.size))
    return content, fft, sum(content) + fft_weight * sum(fft)


# ---- MIMO-UNet ------------------------------------------------------------------------------


def test_mimo_weight_constant():
    assert losses.MIMO_FFT_WEIGHT == 0.1


def test_mimo_loss_matches_numpy_reference():
    preds, sharp = _random_batch(np.random.default_rng(0))
    got = _floats(losses.mimo_unet_loss(preds, sharp))
    content, fft, total = _np_mimo_loss(preds, sharp)
    for k in range(3):
        np.testing.assert_allclose(got[f"content_{k}"], content[k], rtol=1e-5)
        np.testing.assert_allclose(got[f"fft_{k}"], fft[k], rtol=1e-5)
    np.testing.assert_allclose(got["content"], sum(content), rtol=1e-5)
    np.testing.assert_allclose(got["fft"], sum(fft), rtol=1e-5)
    np.testing.assert_allclose(got["loss"], total, rtol=1e-5)


def test_mimo_fft_weight_is_applied():
    preds, sharp = _random_batch(np.random.default_rng(1))
    default = _floats(losses.mimo_unet_loss(preds, sharp))
    np.testing.assert_allclose(
        default["loss"], default["content"] + 0.1 * default["fft"], rtol=1e-6
    )
    heavy = _floats(losses.mimo_unet_loss(preds, sharp, fft_weight=1.0))
    np.testing.assert_allclose(heavy["loss"] - default["loss"], 0.9 * default["fft"], rtol=1e-5)


def test_mimo_fft_is_two_sided_not_rfft2():
    # The one-sided spectrum (torch.fft.rfft2) gives a different value: guard against that variant.
    preds, sharp = _random_batch(np.random.default_rng(2))
    full = float(losses.fft_l1(preds[2], sharp))
    d = np.fft.rfft2(preds[2].astype(np.float64) - sharp, axes=(1, 2))
    one_sided = np.sum(np.abs(d.real) + np.abs(d.imag)) / (2 * d.size)
    assert abs(full - one_sided) / full > 1e-3


def test_mimo_loss_on_parity_fixture():
    if not FIXTURE.exists():
        pytest.skip(f"parity fixture not found at {FIXTURE}")
    data = np.load(FIXTURE)
    preds = [np.transpose(data[f"output_{k}"], (0, 2, 3, 1)) for k in range(3)]
    sharp = np.transpose(data["input"], (0, 2, 3, 1))
    got = _floats(tf.function(losses.mimo_unet_loss)(preds, sharp))
    for k in range(3):
        np.testing.assert_allclose(got[f"content_{k}"], REF_CONTENT[k], rtol=1e-5)
        np.testing.assert_allclose(got[f"fft_{k}"], REF_FFT[k], rtol=1e-5)
    np.testing.assert_allclose(got["loss"], REF_TOTAL, rtol=1e-5)


def test_predictions_in_wrong_order_raise():
    preds, sharp = _random_batch(np.random.default_rng(3))
    with pytest.raises(ValueError, match="coarse to fine"):
        losses.mimo_unet_loss(preds[::-1], sharp)


def test_losses_have_gradients_in_tf_function():
    preds, sharp = _random_batch(np.random.default_rng(4), n=1, h=48, w=48)
    variables = [tf.Variable(p) for p in preds]
    for loss_fn in (losses.mimo_unet_loss, losses.idc_loss, losses.two_way_loss):

        @tf.function
        def step(loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(variables, sharp)["loss"]
            return loss, tape.gradient(loss, variables)

        loss, grads = step()
        assert np.isfinite(float(loss))
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


# ---- SSIM and gradient helpers --------------------------------------------------------------


def test_ssim_matches_tf_and_skimage():
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 1.0, (2, 24, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0.0, 0.1, x.shape), 0.0, 1.0).astype(np.float32)
    y[1] = 0.5 * y[1] + 0.2  # a second, different pair
    got = np.asarray(losses.ssim_per_image(x, y, max_val=1.0))
    np.testing.assert_allclose(got, tf.image.ssim(x, y, max_val=1.0).numpy(), atol=1e-5)
    ref = [
        structural_similarity(
            x[i],
            y[i],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for i in range(2)
    ]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_ssim_of_constant_offset_is_analytic():
    # Constant images: variances and covariance are 0, so SSIM is the luminance term alone.
    mu, d = 0.4, 0.1
    x = np.full((1, 12, 12, 3), mu + d, np.float32)
    y = np.full((1, 12, 12, 3), mu, np.float32)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * mu * (mu + d) + c1) / (mu**2 + (mu + d) ** 2 + c1)
    np.testing.assert_allclose(float(losses.ssim_per_image(x, y)[0]), expected, rtol=1e-5)


def test_gradient_loss_l1_l2_on_ramp():
    c = 0.02
    ramp = np.arange(16, dtype=np.float32)[None, None, :, None] * c
    x = np.broadcast_to(ramp, (1, 8, 16, 3)).astype(np.float32)
    y = np.zeros_like(x)
    # dx difference is c everywhere, dy difference 0.
    np.testing.assert_allclose(float(losses.gradient_loss(x, y, "l1")), c, rtol=1e-5)
    np.testing.assert_allclose(float(losses.gradient_loss(x, y, "l2")), c * c, rtol=1e-5)
    xt = np.transpose(x, (0, 2, 1, 3))  # the same along y
    np.testing.assert_allclose(
        float(losses.gradient_loss(xt, y.transpose(0, 2, 1, 3))), c, rtol=1e-5
    )
    with pytest.raises(ValueError, match="grad_loss_norm"):
        losses.gradient_loss(x, y, "l3")


# ---- IDC ------------------------------------------------------------------------------------


def _sequential_labels(sharp):
    return [_block_mean(sharp, 4), _block_mean(sharp, 2), sharp]


def test_idc_weight_constants():
    assert losses.IDC_SSIM_WEIGHT == 0.1
    assert losses.IDC_GRAD_WEIGHT == 0.1


def test_idc_zero_for_identical_and_terms_logged():
    sharp = np.random.default_rng(6).uniform(0.0, 1.0, (1, 48, 64, 3)).astype(np.float32)
    # Labels of the sequential pyramid are the 2x2 and 4x4 box means.
    got = _floats(losses.idc_loss(_sequential_labels(sharp), sharp))
    expected_keys = {f"{t}_{i}" for t in ("mse", "ssim_loss", "grad", "mix") for i in range(3)}
    assert set(got) == expected_keys | {"loss"}
    for key, value in got.items():
        assert abs(value) < 1e-6, (key, value)


def test_idc_weights_on_constant_offset():
    # Prediction = label + d everywhere: gradient term 0, MSE d^2, SSIM = luminance term only.
    mu, d, c1 = 0.4, 0.1, 1e-4
    sharp = np.full((1, 48, 48, 3), mu, np.float32)
    preds = [np.full((1, s, s, 3), mu + d, np.float32) for s in (12, 24, 48)]
    got = _floats(losses.idc_loss(preds, sharp))
    ssim_loss = 1.0 - (2 * mu * (mu + d) + c1) / (mu**2 + (mu + d) ** 2 + c1)
    for i in range(3):
        np.testing.assert_allclose(got[f"grad_{i}"], 0.0, atol=1e-6)
        np.testing.assert_allclose(got[f"ssim_loss_{i}"], ssim_loss, rtol=1e-4)
    np.testing.assert_allclose(got["loss"], 3 * (d * d + 0.1 * ssim_loss), rtol=1e-4)


def test_idc_weights_on_ramp_against_independent_terms():
    # Prediction = constant label + ramp along x: grad term exactly c (L1) or c^2 (L2).
    c, mu = 0.01, 0.5
    sharp = np.full((1, 48, 64, 3), mu, np.float32)
    preds = []
    for s in (4, 2, 1):
        h, w = 48 // s, 64 // s
        ramp = mu + c * (np.arange(w, dtype=np.float32) - w / 2)
        preds.append(np.broadcast_to(ramp[None, None, :, None], (1, h, w, 3)).astype(np.float32))
    labels = _sequential_labels(sharp)
    for norm, grad in (("l1", c), ("l2", c * c)):
        got = _floats(losses.idc_loss(preds, sharp, grad_loss_norm=norm))
        expected = 0.0
        for i, (p, s) in enumerate(zip(preds, labels, strict=True)):
            mse = np.mean((p.astype(np.float64) - s) ** 2)
            ssim_loss = 1.0 - structural_similarity(
                p[0].astype(np.float64),
                s[0].astype(np.float64),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=-1,
            )
            np.testing.assert_allclose(got[f"grad_{i}"], grad, rtol=1e-4)
            np.testing.assert_allclose(got[f"mse_{i}"], mse, rtol=1e-5)
            np.testing.assert_allclose(got[f"ssim_loss_{i}"], ssim_loss, atol=1e-5)
            expected += mse + 0.1 * ssim_loss + 0.1 * grad
        np.testing.assert_allclose(got["loss"], expected, rtol=1e-4)


def test_idc_weight_arguments():
    preds, sharp = _random_batch(np.random.default_rng(7), n=1, h=48, w=48)
    base = _floats(losses.idc_loss(preds, sharp))
    no_ssim = _floats(losses.idc_loss(preds, sharp, ssim_weight=0.0))
    no_grad = _floats(losses.idc_loss(preds, sharp, grad_weight=0.0))
    ssim_sum = sum(base[f"ssim_loss_{i}"] for i in range(3))
    grad_sum = sum(base[f"grad_{i}"] for i in range(3))
    np.testing.assert_allclose(base["loss"] - no_ssim["loss"], 0.1 * ssim_sum, rtol=1e-4)
    np.testing.assert_allclose(base["loss"] - no_grad["loss"], 0.1 * grad_sum, rtol=1e-4)


def test_idc_single_scale():
    sharp = np.random.default_rng(8).uniform(0.0, 1.0, (1, 16, 16, 3)).astype(np.float32)
    got = _floats(losses.idc_loss([sharp], sharp))
    assert set(got) == {"mse_0", "ssim_loss_0", "grad_0", "mix_0", "loss"}


# ---- Two-Way --------------------------------------------------------------------------------


def test_two_way_weight_constants():
    assert tuple(losses.TWO_WAY_SCALE_WEIGHTS) == (1.0, 1.0, 5.0)


@pytest.mark.parametrize("scale", [0, 1, 2])
def test_two_way_loss_changes_by_alpha_times_mse(scale):
    rng = np.random.default_rng(9)
    sharp = rng.uniform(0.0, 1.0, (2, 16, 24, 3)).astype(np.float32)
    preds = _sequential_labels(sharp)
    assert float(losses.two_way_loss(preds, sharp)["loss"]) < 1e-10
    preds[scale] = preds[scale] + rng.normal(0.0, 0.1, preds[scale].shape).astype(np.float32)
    mse = np.mean((preds[scale].astype(np.float64) - _sequential_labels(sharp)[scale]) ** 2)
    got = _floats(losses.two_way_loss(preds, sharp))
    alpha = (1.0, 1.0, 5.0)[scale]
    np.testing.assert_allclose(got[f"mse_{scale}"], mse, rtol=1e-5)
    np.testing.assert_allclose(got["loss"], alpha * mse, rtol=1e-5)
    custom = _floats(losses.two_way_loss(preds, sharp, scale_weights=(2.0, 3.0, 4.0)))
    np.testing.assert_allclose(custom["loss"], (2.0, 3.0, 4.0)[scale] * mse, rtol=1e-5)


def test_two_way_weight_length_checked():
    preds, sharp = _random_batch(np.random.default_rng(10))
    with pytest.raises(ValueError, match="scale_weights"):
        losses.two_way_loss(preds[1:], sharp)


# ---- label pyramids follow the model's pyramid_mode (IDC A-IDC-11, Two-Way) -------------------

LOSSES_WITH_PYRAMID = {"idc": losses.idc_loss, "two_way": losses.two_way_loss}
NUMPY_LABELS = {
    "sequential": _sequential_labels,
    "direct": lambda s: [_central_2x2_of_4x4(s), _block_mean(s, 2), s],
}


@pytest.mark.parametrize("paper", sorted(LOSSES_WITH_PYRAMID))
@pytest.mark.parametrize("mode", ["sequential", "direct"])
def test_labels_follow_the_pyramid_mode(paper, mode):
    loss_fn = LOSSES_WITH_PYRAMID[paper]
    sharp = np.random.default_rng(11).uniform(0.0, 1.0, (2, 48, 64, 3)).astype(np.float32)
    preds = NUMPY_LABELS[mode](sharp)  # independent numpy construction of the mode's labels
    got = _floats(loss_fn(preds, sharp, pyramid_mode=mode))
    for key, value in got.items():
        assert abs(value) < 1e-6, (paper, mode, key, value)
    # The other mode's labels differ at the 1/4 scale only (both take the 2x2 mean at 1/2).
    other = "direct" if mode == "sequential" else "sequential"
    wrong = _floats(loss_fn(preds, sharp, pyramid_mode=other))
    assert wrong["mse_0"] > 1e-3 and abs(wrong["mse_1"]) < 1e-10 and abs(wrong["mse_2"]) < 1e-10


def test_labels_default_to_the_papers_sequential_pyramid_and_refuse_other_modes():
    preds, sharp = _random_batch(np.random.default_rng(12), n=1, h=48, w=48)
    for loss_fn in LOSSES_WITH_PYRAMID.values():
        np.testing.assert_allclose(
            float(loss_fn(preds, sharp)["loss"]),
            float(loss_fn(preds, sharp, pyramid_mode="sequential")["loss"]),
        )
        with pytest.raises(ValueError, match="pyramid mode"):
            loss_fn(preds, sharp, pyramid_mode="bicubic")
