"""HQS data step: conjugate gradients on (KᵀK + β𝕀) x = βZ + KᵀO (deconvolution/hqs.py,
sen_rpgan.md §6, §13)."""

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from data import motion_blur as mb
from deconvolution import hqs
from deconvolution.blur_operator import BlurOperator


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def photo(name, size):
    image = getattr(skimage.data, name)()
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def test_beta_ladder():
    assert pytest.approx(hqs.beta_ladder(3)) == hqs.BETAS
    assert hqs.beta_ladder(5) == pytest.approx((0.02, 0.1, 0.5, 2.5, 12.5))


def test_zero_flow_is_solved_exactly_in_one_iteration():
    rng = np.random.default_rng(0)
    o = rng.random((1, 9, 11, 3)).astype(np.float32)
    z = rng.random((1, 9, 11, 3)).astype(np.float32)
    op = BlurOperator(np.zeros((1, 9, 11, 2), np.float32))
    x, iterations = hqs.solve_data_term(o, z, op, 0.1)
    assert int(iterations) == 1
    np.testing.assert_allclose(x, (0.1 * z + o) / 1.1, atol=1e-6)


def test_converged_columns_are_frozen_and_never_nan():
    """A zero-flow image (exact after one step) and a black channel (b = 0) beside a blurred
    image: TensorFlow's solver divides 0/0 there (see hqs.py); ours keeps them exact, and each
    image's result is the one it gets alone."""
    rng = np.random.default_rng(1)
    flows = np.zeros((2, 20, 24, 2), np.float32)
    flows[1] = rng.uniform(-6, 6, (20, 24, 2))
    o = rng.random((2, 20, 24, 3)).astype(np.float32)
    z = np.clip(o + 0.05 * rng.standard_normal(o.shape), 0, 1).astype(np.float32)
    o[1, ..., 2] = z[1, ..., 2] = 0.0
    x, iterations = hqs.solve_data_term(o, z, BlurOperator(flows), 0.02)
    assert np.all(np.isfinite(x)) and int(iterations) > 5
    np.testing.assert_allclose(x[0], (0.02 * z[0] + o[0]) / 1.02, atol=1e-6)
    assert np.all(x[1, ..., 2] == 0.0)
    alone, _ = hqs.solve_data_term(o[1:], z[1:], BlurOperator(flows[1:]), 0.02)
    np.testing.assert_allclose(x[1:], alone, atol=1e-6)


def test_matches_a_dense_solve():
    rng = np.random.default_rng(2)
    flow = rng.uniform(-6, 6, (12, 14, 2)).astype(np.float32)
    o = rng.random((1, 12, 14, 3)).astype(np.float32)
    z = rng.random((1, 12, 14, 3)).astype(np.float32)
    a = mb.NonUniformBlur(flow).matrix.toarray()
    op = BlurOperator(flow[None])
    for beta in (0.02, 0.5):
        b = beta * z[0].reshape(-1, 3) + a.T @ o[0].reshape(-1, 3)
        dense = np.linalg.solve(a.T @ a + beta * np.eye(len(a)), b).reshape(12, 14, 3)
        apply = lambda v, beta=beta: op.adjoint(op.forward(v)) + beta * v
        rhs = b.reshape(1, 12, 14, 3).astype(np.float32)
        x, _ = hqs.conjugate_gradient(apply, rhs, z)  # tol 1e-5
        residual = apply(x).numpy()[0].reshape(-1, 3) - b
        assert np.all(np.linalg.norm(residual, axis=0) <= 1.5e-5 * np.linalg.norm(b, axis=0))
        np.testing.assert_allclose(x[0], dense, atol=1e-3)  # error ≤ cond · tol, cond ≤ 51
        x, _ = hqs.conjugate_gradient(apply, rhs, z, tol=1e-7, max_iter=300)
        np.testing.assert_allclose(x[0], dense, atol=2e-5)
        clamped, _ = hqs.solve_data_term(o, z, op, beta, tol=1e-7, max_iter=300)
        np.testing.assert_allclose(clamped[0], np.clip(dense, 0, 1), atol=2e-5)


def test_tensorflow_solver_agrees_on_a_well_posed_batch():
    rng = np.random.default_rng(3)
    flows = rng.uniform(-9, 9, (2, 24, 20, 2)).astype(np.float32)
    o = rng.uniform(0.2, 0.8, (2, 24, 20, 3)).astype(np.float32)
    op = BlurOperator(flows)
    ours, n_ours = hqs.solve_data_term(o, o, op, 0.1)
    theirs, n_theirs = hqs.solve_data_term(o, o, op, 0.1, solver="tf")
    assert abs(int(n_ours) - int(n_theirs)) <= 1
    np.testing.assert_allclose(ours, theirs, atol=2e-4)
    with pytest.raises(ValueError, match="solver"):
        hqs.solve_data_term(o, o, op, 0.1, solver="bicg")


def test_iteration_counts_near_the_spec():
    """§6: about 31-37 / 16-19 / 9-10 iterations at β = 0.02 / 0.1 / 0.5 on a 96² smooth image
    with |u|, |v| ≤ 23 (each solve warm-started from Z = O). Measured here: 38 / 19 / 9."""
    image = photo("astronaut", 96)
    flow = mb.random_flow(np.random.default_rng(0), 96, 96, 23.0, zero_prob=0.0)
    assert np.abs(flow).max() == 23
    blurred = mb.blur_nonuniform(image.astype(np.float64), flow).astype(np.float32)[None]
    op = BlurOperator(flow[None])
    counts = [int(hqs.solve_data_term(blurred, blurred, op, b)[1]) for b in hqs.BETAS]
    print("CG iterations at beta 0.02 / 0.1 / 0.5:", counts)
    assert 25 <= counts[0] <= 50 and 12 <= counts[1] <= 28 and 6 <= counts[2] <= 14
    assert counts[0] > counts[1] > counts[2]


def test_non_blind_deconvolution_with_the_true_flows_raises_psnr():
    """Synthetic flow images as data/synthetic.py makes them (random_flow + blur_valid of a photo
    window, uint8 quantisation): level 1 and the three-level identity ladder are clearly sharper
    than the blurred input."""
    size, u_max = 48, 12.0
    margin = mb.flow_margin(u_max)
    sharp, blurred, flows = [], [], []
    for seed, name in enumerate(["astronaut", "coffee", "chelsea"]):
        image = getattr(skimage.data, name)().astype(np.float64) / 255
        window = image[100 + 20 * seed :, 150:][: size + 2 * margin, : size + 2 * margin]
        flow = mb.random_flow(np.random.default_rng(seed), size, size, u_max, zero_prob=0.0)
        blurred.append(np.round(mb.blur_valid(window, flow) * 255) / 255)
        sharp.append(window[margin:-margin, margin:-margin])
        flows.append(flow)
    blurred, flows = np.float32(blurred), np.float32(flows)
    levels, iterations = hqs.hqs_identity_prior(blurred, flows, with_iterations=True)
    assert len(levels) == 3 and all(0 < int(i) <= 100 for i in iterations)
    for n, target in enumerate(sharp):
        before = psnr(blurred[n], target)
        level1, level3 = psnr(levels[0][n], target), psnr(levels[2][n], target)
        assert level1 > before + 1.5, (n, before, level1)
        assert level3 > level1, (n, level1, level3)
    assert float(tf.reduce_min(levels[2])) >= 0.0 and float(tf.reduce_max(levels[2])) <= 1.0


def test_the_ladder_runs_inside_a_tf_function_as_eagerly():
    rng = np.random.default_rng(4)
    flows = rng.uniform(-7, 7, (2, 20, 24, 2)).astype(np.float32)
    o = rng.random((2, 20, 24, 3)).astype(np.float32)
    eager = hqs.hqs_identity_prior(o, flows)  # a CSR operator
    spec = [tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 2])]
    graph = tf.function(hqs.hqs_identity_prior, input_signature=spec)(o, flows)  # SparseTensor
    for a, b in zip(eager, graph, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_given_adjoint_of_the_blurred_image_gives_the_same_solve():
    """KᵀO computed once by the caller (the ladder, the framework) is the solve's own KᵀO."""
    rng = np.random.default_rng(5)
    o = rng.random((1, 20, 24, 3)).astype(np.float32)
    op = BlurOperator(rng.uniform(-5, 5, (1, 20, 24, 2)).astype(np.float32), "sparse")
    own = hqs.solve_data_term(o, o, op, 0.1)
    given = hqs.solve_data_term(o, o, op, 0.1, adjoint_blurred=op.adjoint(o))
    np.testing.assert_array_equal(own[0], given[0])
    assert int(own[1]) == int(given[1]) > 1
