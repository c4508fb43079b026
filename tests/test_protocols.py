"""The benchmark authors' protocols (protocols/): RealBlur's ECC-aligned PSNR / SSIM and Köhler's
best-over-frames registered luminance PSNR / MS-SSIM / SSIM, on small generated images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from protocols import kohler, realblur


@pytest.fixture(scope="module")
def photo():
    """A 192 x 224 crop of scikit-image's astronaut (RGB uint8): textured enough for ECC."""
    return np.ascontiguousarray(skimage.data.astronaut()[40:232, 140:364])


# ---- RealBlur ---------------------------------------------------------------------------------


def test_realblur_recovers_a_known_homography(photo):
    warp = np.array([[1.0, 0.008, 1.5], [-0.004, 1.0, -1.0], [0.0, 0.0, 1.0]], np.float32)
    size = (photo.shape[1], photo.shape[0])
    moved = cv2.warpPerspective(
        photo, warp, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    aligned = realblur.aligned_scores(moved, photo)
    unaligned = realblur.unaligned_scores(moved, photo)
    # ECC maps the sharp image's grid into the output's: the warp that made the output, to a
    # fraction of a pixel at the corners and the centre.
    h, w = photo.shape[:2]
    points = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], np.float32)[None]
    found = cv2.perspectiveTransform(points, np.array(aligned["homography"], np.float32))
    assert np.abs(found - cv2.perspectiveTransform(points, warp)).max() < 0.25
    assert aligned["psnr"] > unaligned["psnr"] + 10 and aligned["ssim"] > unaligned["ssim"] + 0.1


def test_realblur_identical_and_scaled_images(photo):
    same = realblur.aligned_scores(photo, photo)
    # The float32 least-squares gain is 1 to rounding: PSNR is finite, and huge.
    assert same["psnr"] > 100 and same["ssim"] == pytest.approx(1.0)
    np.testing.assert_allclose(np.array(same["homography"]), np.eye(3), atol=1e-6)
    darker = (photo.astype(np.float32) * 0.8).round().astype(np.uint8)
    gained = realblur.aligned_scores(darker, photo)  # the least-squares gain undoes the scale
    assert gained["psnr"] > realblur.unaligned_scores(darker, photo)["psnr"] + 10


def test_realblur_unaligned_scores_are_the_plain_definitions(photo):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 8, photo.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    scores = realblur.unaligned_scores(noisy, photo)
    x, z = photo / np.float32(255), noisy / np.float32(255)
    assert scores["psnr"] == pytest.approx(peak_signal_noise_ratio(x, z, data_range=1), abs=1e-4)
    # Cropped by the window radius (RealBlur's SSIM), unlike scikit-image's own mean.
    _, full = structural_similarity(
        x, z, channel_axis=-1, gaussian_weights=True, use_sample_covariance=False,
        data_range=1.0, full=True, sigma=1.5,
    )  # fmt: skip
    assert scores["ssim"] == pytest.approx(full[5:-5, 5:-5].mean(), abs=1e-6)


def test_realblur_refuses_different_sizes(photo):
    with pytest.raises(ValueError, match="one size"):
        realblur.aligned_scores(photo[:-1], photo)


# ---- Köhler -----------------------------------------------------------------------------------


def test_kohler_registration_recovers_a_known_integer_shift(photo):
    moved = kohler.shifted(photo.astype(np.float64), (4, -7)).astype(np.uint8)
    scorer = kohler.ShotScorer(moved)
    scores = scorer.frame_scores(photo)
    assert scores["shift"] == [-4, 7]  # moves the output back onto the frame
    plain_mse = np.mean((kohler.luminance(moved) - kohler.luminance(photo)) ** 2)
    assert scores["psnr"] > 10 * np.log10(255**2 / plain_mse) + 10


def test_kohler_identical_frame_and_best_over_frames(photo):
    scorer = kohler.ShotScorer(photo)
    same = scorer.frame_scores(photo)
    assert same["psnr"] == float("inf") and same["shift"] == [0, 0]
    assert same["msssim"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)
    noisy = np.clip(photo + np.random.default_rng(1).normal(0, 20, photo.shape), 0, 255)
    frames = [("noisy", noisy.astype(np.uint8)), ("exact", photo), ("dark", photo // 2)]
    best = scorer.best(frames)
    assert best["frames"] == 3 and best["best_frame"]["frame"] == "exact"
    assert best["psnr"] == float("inf") and best["msssim"] == pytest.approx(1.0)


def test_kohler_psnr_is_on_the_luminance_with_the_zero_border(photo):
    """A gain of one and a shift of zero: PSNR is 10 log10(255² / MSE) of the luminance."""
    rng = np.random.default_rng(2)
    output = np.clip(photo + rng.normal(0, 6, photo.shape), 0, 255).astype(np.uint8)
    scores = kohler.ShotScorer(output).frame_scores(photo)
    if scores["shift"] == [0, 0]:
        gain = kohler.intensity_gain(output.astype(float), photo.astype(float))
        y = kohler.luminance(photo)
        mse = np.mean((y - gain * kohler.luminance(output)) ** 2)
        assert scores["psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert scores["shift"] == [0, 0]


def test_kohler_structural_metrics_equal_tensorflow(photo):
    """Single- and multi-scale SSIM at even sizes (Köhler's 800 x 800 halves evenly four times)
    equal ``tf.image.ssim`` / ``tf.image.ssim_multiscale`` (Wang et al.'s weights, L = 255)."""
    x = kohler.luminance(photo[:176, :192])
    noise = np.random.default_rng(3).normal(0, 10, x.shape)
    y = np.clip(x + noise, 0, 255)
    multi, single = kohler.structural_scores(x, y)
    tx, ty = tf.constant(x[None, ..., None]), tf.constant(y[None, ..., None])
    # TensorFlow computes in float32; this code in float64.
    assert single == pytest.approx(float(tf.image.ssim(tx, ty, 255.0)[0]), abs=1e-5)
    assert multi == pytest.approx(float(tf.image.ssim_multiscale(tx, ty, 255.0)[0]), abs=1e-5)


def test_kohler_shift_wraps_past_half_the_size():
    """The output moved by (+2, +3) needs (-2, -3): the correlation peaks at (6, 7) of an 8 x 10
    grid, past half the size, which wraps to negative (dftregistration)."""
    shape = (8, 10)
    frame = np.zeros((8, 10, 3))
    frame[1, 1] = 255.0
    output = np.zeros((8, 10, 3))
    output[3, 4] = 255.0
    shift = kohler.registration_shift(kohler.mean_fft(frame), kohler.mean_fft(output), shape)
    assert shift == (-2, -3)


# ---- Köhler: the fast path against the procedure step by step --------------------------------


reference_frame_scores = kohler.procedure_frame_scores


def reference_best(output, frames) -> dict:
    best = {"psnr": -np.inf, "msssim": -np.inf, "ssim": -np.inf}
    best_frame = None
    for name, frame in frames:
        scores = reference_frame_scores(output, frame)
        if scores["psnr"] > best["psnr"]:
            best_frame = {"frame": name, "shift": scores["shift"]}
        for key in best:
            best[key] = max(best[key], scores[key])
    return {**best, "frames": len(frames), "best_frame": best_frame}


@pytest.fixture(scope="module")
def shot(photo):
    """A 176 x 200 shot (MS-SSIM's fifth scale is 11 x 13, with odd sizes on the way): two
    images and frames shifted (up to past the window and far), rescaled, noisy, and one exact."""
    rng = np.random.default_rng(4)
    sharp = photo[:176, :200]
    restored = cv2.GaussianBlur(sharp, (0, 0), 1.0)
    blurred = cv2.blur(sharp, (9, 3))
    frames = []
    for index, shift in enumerate([(0, 0), (2, -3), (-6, 11), (13, 4), (-31, -47), (70, -90)]):
        moved = kohler.shifted(sharp.astype(np.float64), shift) * (1.0 - 0.04 * index)
        noisy = np.clip(moved + rng.normal(0, 4, moved.shape), 0, 255).astype(np.uint8)
        frames.append((f"GroundTruth1_1_{index + 1}.png", noisy))
    frames.append(("exact.png", restored))
    return {"restored": restored, "blurred": blurred}, frames


def assert_scores_equal(found, expected):
    assert found["shift"] == expected["shift"]
    for key in ("psnr", "msssim", "ssim"):
        assert found[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key


def test_kohler_frame_scores_equal_the_procedure(shot):
    images, frames = shot
    for output in images.values():
        scorer = kohler.ShotScorer(output)
        for _, frame in frames:
            assert_scores_equal(scorer.frame_scores(frame), reference_frame_scores(output, frame))
    # Shifts from the registration (large ones included), not only the ones the frames were made
    # with: the zero-filled borders of both sides are exercised.
    shifts = {tuple(reference_frame_scores(images["blurred"], f)["shift"]) for _, f in frames}
    assert max(abs(v) for s in shifts for v in s) > 40


@pytest.mark.parametrize("workers", [1, 2])
def test_kohler_score_shot_equals_the_procedure_for_every_label(shot, workers):
    images, frames = shot
    found = kohler.score_shot(images, iter(frames), workers=workers)
    assert list(found) == ["restored", "blurred"]
    for label, output in images.items():
        expected = reference_best(output, frames)
        assert found[label]["frames"] == expected["frames"] == len(frames)
        assert found[label]["best_frame"] == expected["best_frame"]
        for key in ("psnr", "msssim", "ssim"):
            assert found[label][key] == pytest.approx(expected[key], rel=1e-9, abs=1e-9)
    assert found["restored"]["psnr"] == float("inf")  # the exact frame
    assert found["restored"]["best_frame"]["frame"] == "exact.png"
    assert kohler.ShotScorer(images["blurred"]).best(frames) == found["blurred"]


def test_kohler_score_shot_refuses_other_sizes_and_no_frames(shot):
    images, frames = shot
    with pytest.raises(ValueError, match="differs"):
        kohler.score_shot(images, [("small", frames[0][1][:-1])])
    with pytest.raises(ValueError, match="no sharp frame"):
        kohler.score_shot(images, [])


@pytest.mark.parametrize("box", [(0, 40, 0, 36), (3, 40, 0, 33), (12, 29, 7, 36), (0, 5, 2, 9),
                                 (25, 40, 30, 36), (0, 0, 0, 0)])  # fmt: skip
def test_kohler_masked_filtering_redoes_only_the_edges(box):
    """The masked frame's filtered statistics from the unmasked ones: equal to filtering it."""
    image = np.random.default_rng(5).uniform(0, 255, (40, 36))
    mask = np.zeros_like(image)
    mask[box[0] : box[1], box[2] : box[3]] = 1.0
    found = kohler._masked_valid(image, kohler._filter_valid(image), box)
    np.testing.assert_allclose(found, kohler._filter_valid(image * mask), rtol=0, atol=1e-10)


def test_kohler_read_frames_decodes_in_order_and_names_a_bad_file(tmp_path, shot):
    _, frames = shot
    paths = []
    for name, frame in frames[:3]:
        paths.append(str(tmp_path / name))
        cv2.imwrite(paths[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    read = list(kohler.read_frames(paths))
    assert [name for name, _ in read] == [name for name, _ in frames[:3]]
    for (_, found), (_, frame) in zip(read, frames[:3], strict=True):
        np.testing.assert_array_equal(found, frame)  # RGB, as written
    bad = tmp_path / "GroundTruth1_1_9.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="GroundTruth1_1_9.png: cannot decode"):
        list(kohler.read_frames([*paths, str(bad)], workers=1))
