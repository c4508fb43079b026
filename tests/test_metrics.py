"""Tests of metrics.py against scikit-image, tf.image and hand-computed values."""

import math

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics


def _skimage_ssim(a, b, data_range):
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=-1,
    )


@pytest.fixture(scope="module")
def pair():
    """A fixed natural-image pair: float 'output' (slightly out of range) and uint8 ground truth."""
    from skimage import data

    sharp = data.astronaut()[100:148, 180:244]  # 48 x 64 x 3 uint8
    rng = np.random.default_rng(0)
    output = sharp / 255.0 + rng.normal(0.0, 0.04, sharp.shape)  # includes values < 0 and > 1
    return output, sharp


def test_to_uint8_clamps_and_rounds():
    x = np.array([-0.3, 0.0, 100.4 / 255, 100.6 / 255, 1.0, 1.7])
    np.testing.assert_array_equal(metrics.to_uint8(x), [0, 0, 100, 101, 255, 255])
    assert metrics.to_uint8(x).dtype == np.uint8
    gt = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(metrics.to_uint8(gt / 255.0), gt)  # exact round trip


def test_psnr_hand_computed_and_no_uint8_wraparound():
    target = np.zeros((4, 4, 3), np.uint8)
    assert metrics.psnr(target + 1, target) == pytest.approx(20 * math.log10(255), abs=1e-12)
    # 0 - 255 must not wrap around in uint8: MSE = 255^2 -> 0 dB.
    assert metrics.psnr(target, target + 255) == pytest.approx(0.0, abs=1e-12)
    f = np.zeros((4, 4, 3))
    assert metrics.psnr(f + 0.1, f) == pytest.approx(20.0, abs=1e-9)


def test_psnr_matches_skimage(pair):
    output, sharp = pair
    out8 = metrics.to_uint8(output)
    ref = peak_signal_noise_ratio(sharp, out8, data_range=255)
    assert metrics.psnr(out8, sharp) == pytest.approx(ref, abs=1e-9)
    out_f, sharp_f = np.clip(output, 0, 1), sharp / 255.0
    ref_f = peak_signal_noise_ratio(sharp_f, out_f, data_range=1)
    assert metrics.psnr(out_f, sharp_f) == pytest.approx(ref_f, abs=1e-9)
    assert metrics.psnr(out_f.astype(np.float32), sharp_f) == pytest.approx(ref_f, abs=1e-4)


def test_identical_images_give_inf():
    img = np.full((16, 16, 3), 7, np.uint8)
    assert metrics.psnr(img, img) == float("inf")
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-12)


def test_mixed_dtypes_and_shapes_raise():
    u = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="Mixed dtypes"):
        metrics.psnr(u, u.astype(np.float32))
    with pytest.raises(ValueError, match="Mixed dtypes"):
        metrics.ssim(u.astype(np.float64), u)
    with pytest.raises(ValueError, match="Shape mismatch"):
        metrics.psnr(u, u[:-1])
    with pytest.raises(ValueError, match="uint8 or floating"):
        metrics.psnr(u.astype(np.int32), u.astype(np.int32))


def test_ssim_matches_skimage_and_tf(pair):
    output, sharp = pair
    out8 = metrics.to_uint8(output)
    got = metrics.ssim(out8, sharp)
    assert got == pytest.approx(_skimage_ssim(out8, sharp, 255), abs=1e-5)
    tf_ref = float(tf.image.ssim(out8.astype(np.float32), sharp.astype(np.float32), max_val=255.0))
    assert got == pytest.approx(tf_ref, abs=1e-5)
    out_f, sharp_f = np.clip(output, 0, 1), sharp / 255.0
    assert metrics.ssim(out_f, sharp_f) == pytest.approx(
        _skimage_ssim(out_f, sharp_f, 1.0), abs=1e-5
    )
    # Not scikit-image's default variant (7x7 uniform window, sample covariance).
    default = structural_similarity(out8, sharp, data_range=255, channel_axis=-1)
    assert abs(got - default) > 1e-3


def test_ssim_is_channel_mean():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    per_channel = [metrics.ssim(a[..., c : c + 1], b[..., c : c + 1]) for c in range(3)]
    assert metrics.ssim(a, b) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_ssim_small_image_raises():
    img = np.zeros((10, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(img, img)
    assert metrics.ssim(np.zeros((11, 11, 3), np.uint8), np.zeros((11, 11, 3), np.uint8)) == 1.0


def test_image_metrics_conventions(pair):
    output, sharp = pair
    u = metrics.image_metrics(output, sharp)  # default uint8
    out8 = metrics.to_uint8(output)
    assert u["psnr"] == pytest.approx(peak_signal_noise_ratio(sharp, out8, data_range=255))
    assert u["ssim"] == pytest.approx(_skimage_ssim(out8, sharp, 255), abs=1e-5)
    # A float ground truth (uint8 / 255) is rounded back exactly.
    assert metrics.image_metrics(output, sharp / 255.0) == u
    f = metrics.image_metrics(output, sharp, convention="float")
    out_f = np.clip(output, 0, 1)
    assert f["psnr"] == pytest.approx(peak_signal_noise_ratio(sharp / 255.0, out_f, data_range=1))
    assert f["ssim"] == pytest.approx(_skimage_ssim(out_f, sharp / 255.0, 1.0), abs=1e-5)
    assert abs(f["psnr"] - u["psnr"]) < 0.05  # quantisation changes PSNR only slightly
    with pytest.raises(ValueError, match="convention"):
        metrics.image_metrics(output, sharp, convention="y")


def test_image_metrics_clamps_output():
    sharp = np.full((16, 16, 3), 255, np.uint8)
    sharp[:, :8] = 0
    output = sharp / 255.0
    output[:, :8] = -0.5  # clamps to 0
    output[:, 8:] = 1.5  # clamps to 1
    for convention in ("uint8", "float"):
        result = metrics.image_metrics(output, sharp, convention=convention)
        assert result["psnr"] == float("inf")
        assert result["ssim"] == pytest.approx(1.0)


def test_average_psnr_counts_infinite():
    result = metrics.average_psnr([30.0, float("inf"), 32.0])
    assert result == {"psnr": 31.0, "num_infinite": 1, "num_images": 3}
    assert metrics.average_psnr([float("inf")])["psnr"] == float("inf")
    assert math.isnan(metrics.average_psnr([])["psnr"])


def test_mean_metrics_per_image_averaging():
    acc = metrics.MeanMetrics()
    acc.update(psnr=np.array([20.0, 40.0]), ssim=np.array([0.5, 0.7]))
    acc.update(psnr=float("inf"), ssim=1.0)
    acc.update(psnr=tf.constant([30.0]), ssim=tf.constant([0.9]))
    result = acc.result()
    # Mean of per-image PSNRs (not the PSNR of the mean MSE), infinite one counted separately.
    assert result["psnr"] == pytest.approx(30.0)
    assert result["psnr_num_infinite"] == 1
    assert result["ssim"] == pytest.approx(0.775)
    assert result["num_images"] == 4
    assert len(acc.values["psnr"]) == 4
    acc.reset()
    assert acc.result() == {}


def test_batch_psnr_ssim_matches_numpy(pair):
    output, sharp = pair
    rng = np.random.default_rng(2)
    second = np.clip(sharp / 255.0 + rng.normal(0.0, 0.1, sharp.shape), 0, 1)
    pred = np.stack([output, second, sharp / 255.0]).astype(np.float32)
    target = np.repeat((sharp / 255.0)[None], 3, axis=0).astype(np.float32)
    psnr_values, ssim_values = metrics.batch_psnr_ssim(pred, target)
    assert psnr_values.shape == (3,) and ssim_values.shape == (3,)
    for i in range(2):
        ref = metrics.image_metrics(pred[i], sharp)
        assert float(psnr_values[i]) == pytest.approx(ref["psnr"], abs=1e-4)
        assert float(ssim_values[i]) == pytest.approx(ref["ssim"], abs=1e-5)
    assert float(psnr_values[2]) == float("inf")
    assert float(ssim_values[2]) == pytest.approx(1.0, abs=1e-6)
