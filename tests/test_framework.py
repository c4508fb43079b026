"""The blind deblurring framework (``deconvolution/framework.py``, ``sen_rpgan.md`` §10): shapes and
range on odd sizes, call counts of SEN / CG / G, the identity prior against the HQS reference,
eager against ``tf.function``. Tiny models (width_divisor 16). The SavedModel of the whole
framework: tests/test_framework_source.py (export.py, any batch and size)."""

import numpy as np
import pytest
import tensorflow as tf

from deconvolution import framework, hqs
from models.rpgan import rpgan_generator
from models.sen import sen as build_sen


@pytest.fixture(scope="module")
def tiny_sen():
    """Tiny SEN whose flows are scaled x20: an untrained tiny SEN gives ~0.3 px, for which K = 𝕀
    (one tap) and CG would not be exercised; x20 gives several pixels."""
    model = build_sen(width_divisor=16)
    model(tf.zeros([1, 8, 8, 3]))  # builds the weights before any trace

    def scaled(images, training=None):
        return 20.0 * model(images, training=training)

    scaled.variables = model.variables
    assert scaled.variables
    return scaled


@pytest.fixture(scope="module")
def tiny_g():
    model = rpgan_generator(width_divisor=16)
    model(tf.zeros([1, 8, 8, 6]))
    return model


def _images(height, width, n=1, seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, height, width, 3), np.float32))


def _flows(height, width, n=1, seed=1):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(-4.0, 4.0, (n, height, width, 2)).astype(np.float32))


class CountingSEN:
    """Stand-in SEN: a constant small flow, counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, images, training=None):
        self.calls += 1
        shape = tf.shape(images)
        return tf.fill(tf.concat([shape[:3], [2]], 0), 1.5)


class CountingG:
    """Stand-in G: returns I* (the first three channels) scaled, counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, inputs, training=None):
        assert inputs.shape[-1] == 6
        self.calls += 1
        return 1.2 * inputs[..., :3] - 0.1


@pytest.mark.parametrize("size", [(37, 53), (40, 52)])
def test_output_shape_and_range(tiny_sen, tiny_g, size):
    blurred = _images(*size)
    restored = framework.BlindDeblurFramework(tiny_sen, tiny_g, levels=2)(blurred)
    assert restored.shape == (1, *size, 3) and restored.dtype == tf.float32
    assert float(tf.reduce_min(restored)) >= 0.0 and float(tf.reduce_max(restored)) <= 1.0


@pytest.mark.parametrize("levels,global_iterations", [(1, 1), (3, 1), (2, 3)])
def test_call_counts(monkeypatch, levels, global_iterations):
    sen, g, cg_calls = CountingSEN(), CountingG(), []
    solve = framework.solve_data_term

    def counting_solve(*args, **kw):
        cg_calls.append(args[3])  # β
        return solve(*args, **kw)

    monkeypatch.setattr(framework, "solve_data_term", counting_solve)
    fw = framework.BlindDeblurFramework(sen, g, levels, global_iterations)
    results = fw.intermediates(_images(20, 24))
    assert sen.calls == global_iterations
    assert g.calls == levels * global_iterations
    assert cg_calls == list(hqs.beta_ladder(levels)) * global_iterations
    assert len(results) == global_iterations
    for result in results:
        assert len(result["istar"]) == len(result["z"]) == levels
        assert result["flow"].shape == (1, 20, 24, 2)
        assert set(result["seconds"]) == {"sen", "operator", "cg", "g"}
    # Register #24: the next global iteration's O is the last Z.
    for before, after in zip(results, results[1:], strict=False):
        np.testing.assert_array_equal(after["input"].numpy(), before["z"][-1].numpy())


def test_true_flow_only_in_first_global_iteration():
    sen, flows = CountingSEN(), _flows(16, 20)
    fw = framework.BlindDeblurFramework(sen, None, 1, 2, flow_source="true")
    results = fw.intermediates(_images(16, 20), true_flow=flows)
    np.testing.assert_array_equal(results[0]["flow"].numpy(), flows.numpy())
    assert sen.calls == 1
    np.testing.assert_array_equal(results[1]["flow"].numpy(), 1.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="flow_source"):
        framework.BlindDeblurFramework(None, None, flow_source="both")
    with pytest.raises(ValueError, match="one value per level"):
        framework.BlindDeblurFramework(CountingSEN(), None, levels=2, betas=(0.1,))
    with pytest.raises(ValueError, match="SEN is needed"):
        framework.BlindDeblurFramework(None, None, global_iterations=2, flow_source="true")
    with pytest.raises(ValueError, match="true_flow"):
        framework.BlindDeblurFramework(None, None, flow_source="true")(_images(8, 8))


def test_identity_prior_with_true_flow_equals_hqs():
    blurred, flows = _images(21, 27, n=2), _flows(21, 27, n=2)
    fw = framework.BlindDeblurFramework(None, None, levels=3, flow_source="true")
    results = fw.intermediates(blurred, true_flow=flows)[0]
    reference = hqs.hqs_identity_prior(blurred, flows)
    for ours, theirs in zip(results["istar"], reference, strict=True):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
    np.testing.assert_allclose(fw(blurred, flows).numpy(), reference[-1].numpy(), atol=1e-6)


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "graph"])
def test_with_identity_prior_shares_the_solves_and_equals_both_separately(tiny_g, traced):
    blurred, flows = _images(21, 27, n=2), _flows(21, 27, n=2)
    fw = framework.BlindDeblurFramework(None, tiny_g, levels=3, flow_source="true")
    joint = tf.function(fw.with_identity_prior) if traced else fw.with_identity_prior
    restored, identity = joint(blurred, flows)
    np.testing.assert_allclose(restored, fw(blurred, flows), atol=1e-5)
    reference = hqs.hqs_identity_prior(blurred, flows)[-1]
    np.testing.assert_allclose(identity, reference, atol=1e-5)


def test_eager_equals_tf_function(tiny_sen, tiny_g):
    fw = framework.BlindDeblurFramework(tiny_sen, tiny_g, levels=1, global_iterations=2)
    blurred = _images(37, 53)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    traced = tf.function(fw.__call__, input_signature=[spec], autograph=False)
    np.testing.assert_allclose(traced(blurred).numpy(), fw(blurred).numpy(), atol=1e-4)


def test_eager_equals_tf_function_true_flow(tiny_g):
    fw = framework.BlindDeblurFramework(None, tiny_g, levels=3, flow_source="true")
    blurred, flows = _images(37, 53), _flows(37, 53)
    specs = [tf.TensorSpec([None, None, None, c], tf.float32) for c in (3, 2)]
    traced = tf.function(fw.__call__, input_signature=specs, autograph=False)
    eager = fw.intermediates(blurred, flows)[0]
    assert all(int(count) > 1 for count in eager["cg_iterations"])
    np.testing.assert_allclose(traced(blurred, flows).numpy(), eager["z"][-1].numpy(), atol=1e-4)


class HalfPrecision:
    """Wraps a stand-in so that its output is bfloat16 (a network under a mixed policy whose
    output is not cast back)."""

    def __init__(self, part):
        self.part = part

    def __call__(self, inputs, training=None):
        return tf.cast(self.part(inputs, training=training), tf.bfloat16)


def test_networks_in_bfloat16_leave_the_data_step_in_float32():
    """SEN's and G's bfloat16 outputs are cast to float32 before K and CG (and before the clip):
    every intermediate is float32, and equals the float32 stand-ins' run to bfloat16 rounding."""
    blurred = _images(20, 24)
    half = framework.BlindDeblurFramework(HalfPrecision(CountingSEN()), HalfPrecision(CountingG()))
    full = framework.BlindDeblurFramework(CountingSEN(), CountingG())
    ours, theirs = half.intermediates(blurred)[0], full.intermediates(blurred)[0]
    assert ours["flow"].dtype == tf.float32
    for key in ("istar", "z"):
        assert all(image.dtype == tf.float32 for image in ours[key])
    np.testing.assert_allclose(ours["z"][-1], theirs["z"][-1], atol=0.02)


def test_a_mixed_bfloat16_generator_inside_the_traced_framework():
    """G built under the mixed_bfloat16 policy takes the framework's float32 concat(I*, O) and
    the traced framework returns float32 in [0, 1]."""
    import precision

    with precision.precision_scope("bfloat16"):
        generator = rpgan_generator(width_divisor=16)
        generator(tf.zeros([1, 8, 8, 6]))
        fw = framework.BlindDeblurFramework(None, generator, levels=2, flow_source="true")
        specs = [tf.TensorSpec([None, None, None, c], tf.float32) for c in (3, 2)]
        traced = tf.function(fw.__call__, input_signature=specs, autograph=False)
        restored = traced(_images(20, 24), _flows(20, 24))
    assert restored.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(restored)) <= float(tf.reduce_max(restored)) <= 1.0
