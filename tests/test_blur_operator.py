"""K and Kᵀ in TensorFlow (deconvolution/blur_operator.py) against the numpy/scipy reference
data/motion_blur.py (sen_rpgan.md §3 tests)."""

import numpy as np
import pytest
import tensorflow as tf

from data import motion_blur as mb
from deconvolution.blur_operator import BlurOperator, build_taps, tap_table
from tests.test_data_motion_blur import DELTA_CASES

SHAPE = (2, 40, 52)  # a batch of two different flows


def random_flows(seed, integer, limit=46.0):
    rng = np.random.default_rng(seed)
    flows = rng.uniform(-limit, limit, (*SHAPE, 2))
    flows[1, :10] *= 0.1  # short kernels beside long ones
    return (np.round(flows) if integer else flows).astype(np.float32)


def taps_of(u, v, size=15):
    """{(dr, dc): weight} of the centre pixel of a constant (u, v) flow."""
    flow = np.broadcast_to(np.array([u, v], np.float32), (1, size, size, 2))
    rows, cols, weights = (t.numpy() for t in build_taps(tf.constant(flow)))
    centre = size // 2 * size + size // 2
    mine = rows == centre
    return {
        (int(c // size) - size // 2, int(c % size) - size // 2): float(w)
        for c, w in zip(cols[mine], weights[mine], strict=True)
    }


@pytest.mark.parametrize("integer", [True, False], ids=["integer", "real"])
@pytest.mark.parametrize("method", ["csr", "sparse", "gather"])
def test_equals_the_reference_forward_and_adjoint(integer, method):
    flows = random_flows(0, integer)
    x = np.random.default_rng(1).random((*SHAPE, 3)).astype(np.float32)
    op = BlurOperator(flows, method)
    forward, adjoint = op.forward(x).numpy(), op.adjoint(x).numpy()
    reference_taps = 0
    for n in range(SHAPE[0]):
        ref = mb.NonUniformBlur(flows[n])
        reference_taps += ref.matrix.nnz
        np.testing.assert_allclose(forward[n], ref.forward(x[n].astype(np.float64)), atol=1e-5)
        # Kᵀ piles up to ~10 at clamped corners: 1e-5 relative to max(1, |value|).
        expected = ref.adjoint(x[n].astype(np.float64))
        assert np.all(np.abs(adjoint[n] - expected) <= 1e-5 * np.maximum(1.0, np.abs(expected)))
    # Only the non-zero taps are stored (float64's ε-sized ones and taps < 1e-8 are dropped).
    assert 0.99 * reference_taps <= int(op.num_taps) <= reference_taps


def test_adjoint_identity():
    rng = np.random.default_rng(2)
    for integer in (True, False):
        op = BlurOperator(random_flows(3, integer))
        x = rng.random((*SHAPE, 3)).astype(np.float32)
        r = rng.random((*SHAPE, 3)).astype(np.float32)
        lhs = np.sum(op.forward(x).numpy().astype(np.float64) * r)
        rhs = np.sum(x.astype(np.float64) * op.adjoint(r).numpy())
        assert abs(lhs - rhs) / abs(lhs) < 1e-5


@pytest.mark.parametrize("method", ["csr", "gather"])
def test_autodiff_gradient_is_the_adjoint(method):
    rng = np.random.default_rng(4)
    op = BlurOperator(random_flows(5, False, 20.0), method)
    x = tf.constant(rng.random((*SHAPE, 3)).astype(np.float32))
    r = tf.constant(rng.random((*SHAPE, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(op.forward(x) * r)
    np.testing.assert_allclose(tape.gradient(value, x), op.adjoint(r), rtol=1e-5, atol=1e-5)


def test_constant_image_is_unchanged_including_borders():
    op = BlurOperator(random_flows(6, False))
    ones = np.full((*SHAPE, 3), 0.7, np.float32)
    np.testing.assert_allclose(op.forward(ones), ones, atol=1e-6)


def test_tap_values_of_the_spec():
    horizontal = taps_of(6, 0)  # no stray rows: float32 cos(pi/2) < 0 would widen S_r
    assert sorted(horizontal) == [(0, dc) for dc in range(-3, 4)]
    expected = np.array([0.5, 1, 1, 1, 1, 1, 0.5]) / 6
    np.testing.assert_allclose([horizontal[(0, dc)] for dc in range(-3, 4)], expected, atol=1e-7)
    assert taps_of(-6, 0) == horizontal
    vertical = taps_of(0, 5)
    assert sorted(vertical) == [(dr, 0) for dr in range(-2, 3)]
    np.testing.assert_allclose(list(vertical.values()), 0.2, atol=1e-7)
    for identity in [(0, 0), (1, 0), (0, 1), (-1, 0)]:
        assert taps_of(*identity) == {(0, 0): 1.0}
    for u, v in [(6, -6), (3.7, 1.2), (-2.5, 8.1), (0.3, -0.2), (46, -46), (0, 46)]:
        ref = mb.kernel_image(u, v)
        radius = ref.shape[0] // 2
        ours = np.zeros_like(ref)
        for (dr, dc), w in taps_of(u, v, 2 * radius + 3).items():
            ours[dr + radius, dc + radius] = w
        np.testing.assert_allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize("flow, on_line, off_line", DELTA_CASES)
def test_adjoint_of_a_delta_spreads_along_the_motion(flow, on_line, off_line):
    size = 15
    field = np.broadcast_to(np.array(flow, np.float32), (1, size, size, 2))
    delta = np.zeros((1, size, size, 1), np.float32)
    delta[0, 7, 7] = 1.0
    spread = BlurOperator(field).adjoint(delta).numpy()[0, ..., 0]
    assert spread.sum() == pytest.approx(1.0, abs=1e-6)
    for dr, dc in on_line:
        assert spread[7 + dr, 7 + dc] > 0.05, (dr, dc)
    for dr, dc in off_line:
        assert spread[7 + dr, 7 + dc] == 0.0, (dr, dc)


def test_kernel_is_symmetric_in_the_flow_sign():
    flows = random_flows(7, False)
    x = np.random.default_rng(8).random((*SHAPE, 3)).astype(np.float32)
    np.testing.assert_array_equal(BlurOperator(flows)(x), BlurOperator(-flows)(x))
    halves = mb.to_uv_half(flows)  # the uv_half labels give the same K
    np.testing.assert_array_equal(BlurOperator(flows)(x), BlurOperator(halves)(x))


def test_inside_a_tf_function_with_dynamic_sizes_and_saved_model(tmp_path):
    spec = [tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([None, None, None, 3])]

    class Blur(tf.Module):
        @tf.function(input_signature=spec)
        def __call__(self, flows, images):
            op = BlurOperator(flows)  # "auto": a SparseTensor inside a graph
            assert op.method == "sparse"
            return op.forward(images), op.adjoint(images)

        @tf.function(input_signature=spec)
        def csr(self, flows, images):
            op = BlurOperator(flows, "csr")
            return op.forward(images), op.adjoint(images)

    module = Blur()
    tf.saved_model.save(module, str(tmp_path / "blur"))
    reloaded = tf.saved_model.load(str(tmp_path / "blur"))
    rng = np.random.default_rng(9)
    for shape in [(1, 17, 23), (2, 30, 12)]:
        flows = rng.uniform(-9, 9, (*shape, 2)).astype(np.float32)
        x = rng.random((*shape, 3)).astype(np.float32)
        eager = BlurOperator(flows, "gather")
        for forward, adjoint in (reloaded(flows, x), module.csr(flows, x)):
            np.testing.assert_allclose(forward, eager.forward(x), atol=1e-6)
            np.testing.assert_allclose(adjoint, eager.adjoint(x), atol=1e-5)


def test_an_eager_csr_operator_inside_a_tf_function_is_a_clear_error():
    op = BlurOperator(random_flows(10, True, 5.0))
    assert op.method == "csr"  # "auto" eagerly
    with pytest.raises(ValueError, match="built eagerly"):
        tf.function(op.forward)(np.zeros((*SHAPE, 3), np.float32))
    with pytest.raises(ValueError, match="method must be"):
        BlurOperator(random_flows(10, True, 5.0), "dense")


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_row_blocks_give_the_same_operator_in_a_graph(shards):
    """The "sparse" operator split into row blocks (run in parallel inside a graph) is the same
    K and Kᵀ, also when there are fewer pixels than blocks (empty blocks)."""
    rng = np.random.default_rng(11)
    for shape in [(2, 17, 23), (1, 1, 2)]:
        flows = rng.uniform(-9, 9, (*shape, 2)).astype(np.float32)
        x = rng.random((*shape, 3)).astype(np.float32)
        reference = BlurOperator(flows, "gather")

        @tf.function
        def apply(flows, x):
            op = BlurOperator(flows, "sparse", shards=shards)  # noqa: B023
            return op.forward(x), op.adjoint(x)

        forward, adjoint = apply(flows, x)
        np.testing.assert_allclose(forward, reference.forward(x), atol=1e-6)
        np.testing.assert_allclose(adjoint, reference.adjoint(x), atol=1e-5)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_normal_is_the_adjoint_of_the_forward(shards):
    """KᵀK x (each row block's Bᵀ(B x) summed, no concatenation in between) equals Kᵀ(K x),
    in a graph and eagerly (CSR)."""
    flows, x = random_flows(12, False, 9.0), np.random.default_rng(12).random((*SHAPE, 3))
    x = x.astype(np.float32)

    @tf.function
    def apply(flows, x):
        op = BlurOperator(flows, "sparse", shards=shards)
        return op.normal(x), op.adjoint(op.forward(x))

    normal, composed = apply(flows, x)
    np.testing.assert_allclose(normal, composed, atol=1e-5)
    eager = BlurOperator(flows)
    np.testing.assert_allclose(eager.normal(x), normal, atol=1e-5)


def test_row_blocks_hold_about_the_same_number_of_taps():
    """The blocks are cut at the chunk end nearest above each tap quantile (a product's cost is
    per tap), so their rows are disjoint and their tap counts differ by at most a chunk's."""
    flows = np.random.default_rng(13).uniform(-20, 20, (2, 60, 150, 2)).astype(np.float32)
    flows[0] *= 0.05  # one image of short kernels, one of long ones: equal rows would be unequal
    op = BlurOperator(flows, "sparse", shards=3)
    ends = tap_table(tf.constant(flows))[2].numpy()
    taps = [len(block[1]) for block in op._blocks]
    assert sum(taps) == int(op.num_taps) == ends[-1]
    assert set(np.cumsum(taps)) <= set(ends)
    assert max(taps) - min(taps) <= 2 * np.diff(ends).max()
    rows = [block[0].numpy()[:, 0] for block in op._blocks]
    assert all(a.max() < b.min() for a, b in zip(rows, rows[1:], strict=False))
