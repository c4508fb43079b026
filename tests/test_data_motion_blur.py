"""The non-uniform blur operator K, its adjoint and the flow fields (sen_rpgan.md §2, §3, §5)."""

import math

import numpy as np
import pytest

from data import motion_blur as mb

EPS = 2.2204e-16


def reference_kernel(u, v):
    """Jian Sun's per-pixel kernel written out literally from sen_rpgan.md §3 (scalar loops)."""
    length = math.hypot(u, v)
    a = -v if v != 0 else 1e-16
    theta = math.degrees(math.atan(u / a))
    theta = theta + 180 if theta < 0 else theta
    half, phi = (length - 1) / 2, math.radians(theta)
    c, s = math.cos(phi), math.sin(phi)
    sr = math.floor(abs(half * c + (1 if c >= 0 else -1) - length * EPS))
    sc = math.floor(abs(half * s + 1 - length * EPS))
    taps = {}
    for dr in range(-sr, sr + 1):
        for dc in range(-sc, sc + 1):
            d = dc * c + dr * s
            if abs(d) <= 1 and math.hypot(dr, dc) >= half:
                e = half - abs((dr + d * s) / c)
                d = math.sqrt(d * d + e * e)
            w = max(0.0, 1 + EPS - abs(d))
            if w > 0:
                taps[(dr, dc)] = w
    total = sum(taps.values())
    return {k: w / total for k, w in taps.items()}


def reference_matrix(flow):
    h, w = flow.shape[:2]
    matrix = np.zeros((h * w, h * w))
    for i in range(h):
        for j in range(w):
            for (dr, dc), wt in reference_kernel(*flow[i, j]).items():
                q = min(max(i + dr, 0), h - 1) * w + min(max(j + dc, 0), w - 1)
                matrix[i * w + j, q] += wt
    return matrix


def taps_of(u, v):
    k = mb.kernel_image(u, v)
    r = k.shape[0] // 2
    return {(dr - r, dc - r): k[dr, dc] for dr, dc in zip(*np.nonzero(k), strict=True)}


def test_tap_values_of_the_spec():
    horizontal = taps_of(6, 0)
    assert sorted(horizontal) == [(0, dc) for dc in range(-3, 4)]
    expected = np.array([0.5, 1, 1, 1, 1, 1, 0.5]) / 6
    np.testing.assert_allclose([horizontal[(0, dc)] for dc in range(-3, 4)], expected, atol=1e-12)
    vertical = taps_of(0, 5)
    assert sorted(vertical) == [(dr, 0) for dr in range(-2, 3)]
    np.testing.assert_allclose(list(vertical.values()), 0.2, atol=1e-12)
    assert taps_of(0, 0) == {(0, 0): 1.0}
    assert taps_of(1, 0) == {(0, 0): 1.0}
    assert taps_of(0, 1) == {(0, 0): 1.0}


@pytest.mark.parametrize("u, v", [(6, 0), (0, 5), (6, -6), (3.7, 1.2), (-2.5, 8.1), (0.3, -0.2)])
def test_kernel_matches_the_literal_formula(u, v):
    ours, ref = taps_of(u, v), reference_kernel(u, v)
    assert set(ours) == set(ref)
    for key, weight in ref.items():
        assert ours[key] == pytest.approx(weight, abs=1e-12)


def test_operator_equals_the_literal_dense_operator_with_clamping():
    rng = np.random.default_rng(0)
    for flow in (rng.uniform(-7, 7, (9, 11, 2)), np.round(rng.uniform(-9, 9, (7, 12, 2)))):
        dense = mb.NonUniformBlur(flow).matrix.toarray()
        np.testing.assert_allclose(dense, reference_matrix(flow), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adjoint_identity(dtype):
    rng = np.random.default_rng(1)
    flow = rng.uniform(-12, 12, (23, 31, 2))
    op = mb.NonUniformBlur(flow, dtype=dtype)
    x = rng.random((23, 31, 3)).astype(dtype)
    r = rng.random((23, 31, 3)).astype(dtype)
    lhs = float(np.sum(op.forward(x).astype(np.float64) * r))
    rhs = float(np.sum(x.astype(np.float64) * op.adjoint(r)))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5
    assert op.forward(x).dtype == dtype and op.adjoint(r).shape == r.shape
    np.testing.assert_allclose(mb.blur_nonuniform_adjoint(r, flow), op.adjoint(r), rtol=1e-5)


def test_constant_image_is_unchanged_including_borders():
    rng = np.random.default_rng(2)
    flow = rng.uniform(-20, 20, (17, 19, 2))
    ones = np.full((17, 19, 2), 0.7)
    np.testing.assert_allclose(mb.blur_nonuniform(ones, flow), ones, atol=1e-12)


# Kᵀ of a delta for (flow, offsets on the line, offsets off it); the TensorFlow operator's test
# (tests/test_blur_operator.py) uses the same cases.
DELTA_CASES = [
    ((6, -6), [(-1, 1), (-2, 2), (1, -1)], [(1, 1), (-1, -1)]),  # up-right / down-left
    ((6, 0), [(0, 1), (0, 3), (0, -3)], [(1, 0), (-1, 0)]),
    ((0, 6), [(1, 0), (3, 0), (-3, 0)], [(0, 1), (0, -1)]),
]


@pytest.mark.parametrize("flow, on_line, off_line", DELTA_CASES)
def test_adjoint_of_a_delta_spreads_along_the_motion(flow, on_line, off_line):
    size = 15
    field = np.broadcast_to(np.array(flow, float), (size, size, 2)).copy()
    delta = np.zeros((size, size))
    delta[7, 7] = 1.0
    spread = mb.blur_nonuniform_adjoint(delta, field)
    assert spread.sum() == pytest.approx(1.0)
    for dr, dc in on_line:
        assert spread[7 + dr, 7 + dc] > 0.05, (dr, dc)
    for dr, dc in off_line:
        assert spread[7 + dr, 7 + dc] == 0.0, (dr, dc)


def test_kernel_is_symmetric_in_the_flow_sign():
    rng = np.random.default_rng(3)
    flow = rng.uniform(-9, 9, (6, 7, 2))
    a = mb.NonUniformBlur(flow).matrix.toarray()
    b = mb.NonUniformBlur(-flow).matrix.toarray()
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_float32_weights_agree_with_float64():
    rng = np.random.default_rng(4)
    flow = np.concatenate([rng.uniform(-23, 23, (8, 8, 2)), np.zeros((1, 8, 2))])
    flow[8, :4, 0] = [5, 0, 0, 7]  # axis-aligned vectors: float32 cos(pi/2) < 0 flips sgn(c)
    flow[8, :4, 1] = [0, 5, -3, 0]
    a = mb.NonUniformBlur(flow, np.float32).matrix.toarray()
    b = mb.NonUniformBlur(flow, np.float64).matrix.toarray()
    assert np.abs(a - b).max() <= 1e-6


def test_half_extent_bound():
    for u, v in [(23, 23), (46, -46), (0, 46), (46, 0), (17, 9)]:
        radius = mb.kernel_image(u, v).shape[0] // 2
        assert radius <= math.floor((math.hypot(u, v) - 1) / 2 + 1)
    assert mb.kernel_image(23, 23).shape[0] // 2 <= 16
    assert mb.kernel_image(46, 46).shape[0] // 2 <= 33


def test_uv_half_encoding():
    flow = np.array([[[-3.0, 2.0], [3.0, -2.0], [0.0, -4.0], [-1.0, 0.0]]])
    np.testing.assert_array_equal(
        mb.to_uv_half(flow), [[[3.0, -2.0], [3.0, -2.0], [0.0, -4.0], [1.0, 0.0]]]
    )


def test_random_flow_fields():
    flows = [mb.random_flow(np.random.default_rng(s), 32, 32, 23.0) for s in range(40)]
    for flow in flows:
        assert flow.shape == (32, 32, 2) and flow.dtype == np.float32
        np.testing.assert_array_equal(flow, np.round(flow))
        assert np.abs(flow).max() <= 23
        assert np.all(mb.to_uv_half(flow)[..., 0] >= 0)
    nonzero = [f for f in flows if np.any(f)]
    assert max(np.abs(f).max() for f in nonzero) == 23  # rescaled to u_max when exceeding it
    np.testing.assert_array_equal(flows[5], mb.random_flow(np.random.default_rng(5), 32, 32))
    assert not np.array_equal(flows[5], flows[6])


def test_about_two_percent_zero_fields():
    rng = np.random.default_rng(0)
    zeros = sum(not np.any(mb.random_flow(rng, 2, 2)) for _ in range(3000))
    assert 30 <= zeros <= 95  # expected 60, binomial sd ~7.7


def test_valid_blur_equals_the_full_image_blur_in_the_interior():
    rng = np.random.default_rng(6)
    u_max, size = 6.0, 20
    m = mb.flow_margin(u_max)
    window = rng.random((size + 2 * m, size + 2 * m, 3))
    flow = mb.random_flow(np.random.default_rng(9), size, size, u_max, zero_prob=0.0)
    valid = mb.blur_valid(window, flow)
    big_flow = np.pad(flow, ((m, m), (m, m), (0, 0)), mode="edge")
    full = mb.blur_nonuniform(window, big_flow)[m : m + size, m : m + size]
    np.testing.assert_allclose(valid, full, atol=1e-12)
    # Kernels never reach the window border, so any larger window gives the same result.
    bigger = np.pad(window, ((5, 5), (5, 5), (0, 0)), mode="reflect")
    big_flow = np.pad(flow, ((m + 5, m + 5), (m + 5, m + 5), (0, 0)), mode="edge")
    again = mb.blur_nonuniform(bigger, big_flow)[m + 5 : m + 5 + size, m + 5 : m + 5 + size]
    np.testing.assert_allclose(valid, again, atol=1e-12)
