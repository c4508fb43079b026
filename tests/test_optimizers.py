"""training/optimizers.py: Adam with PyTorch's formula (PyTorchAdam) and Keras's, against numpy
transcriptions of both formulas, torch.optim.Adam (when importable), learning-rate schedules,
checkpoints, MirroredStrategy, serialisation, and the formula each paper's step uses."""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.process_checks import result_json, run_python
from training import optimizers, schedules
from training.optimizers import PyTorchAdam, adam_formula, make_adam
from training.steps.idc_step import IdcTrainStep
from training.steps.mimo_unet_step import MimoUnetTrainStep
from training.steps.two_way_step import TwoWayTrainStep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
STEPS = 6
SHAPES = ((40,), (3, 5))  # two variables: slots are looked up per variable
TOL = {"rtol": 1e-5, "atol": 1e-7}


# ---- numpy transcriptions of the two formulas (float64) --------------------------------------


def numpy_adam(formula, params, grads, lrs, b1=B1, b2=B2, eps=EPS):
    """Adam by the formula, literally; ``grads[t][i]`` is the gradient of ``params[i]`` at update
    t + 1 and ``lrs[t]`` its learning rate. Returns the parameters after every update."""
    params = [np.asarray(p, np.float64).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history = []
    for t, (step_grads, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        for i, g in enumerate(step_grads):
            g = np.asarray(g, np.float64)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if formula == "pytorch":  # torch.optim.Adam: eps after the bias correction
                m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
                params[i] -= lr * m_hat / (np.sqrt(v_hat) + eps)
            else:  # Keras / TF1: the correction folded into the rate, eps on the raw sqrt(v)
                alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
                params[i] -= alpha * m[i] / (np.sqrt(v[i]) + eps)
        history.append([p.copy() for p in params])
    return history


def _problem(seed=0, steps=STEPS):
    """Initial parameters and gradients whose magnitudes span 1e-9 .. 1 (epsilon matters)."""
    rng = np.random.default_rng(seed)
    params = [rng.uniform(-1.0, 1.0, s).astype(np.float32) for s in SHAPES]
    grads = [
        [
            (rng.normal(0.0, 1.0, s) * 10.0 ** rng.uniform(-9, 0, s)).astype(np.float32)
            for s in SHAPES
        ]
        for _ in range(steps)
    ]
    return params, grads


def _run_keras(optimizer, params, grads):
    variables = [keras.Variable(p) for p in params]
    optimizer.build(variables)
    history = []
    for step_grads in grads:
        optimizer.apply_gradients(zip(step_grads, variables, strict=True))
        history.append([np.array(v.numpy()) for v in variables])
    return history


def _assert_history_close(got, want, **tolerance):
    for t, (got_step, want_step) in enumerate(zip(got, want, strict=True)):
        for got_p, want_p in zip(got_step, want_step, strict=True):
            np.testing.assert_allclose(got_p, want_p, err_msg=f"update {t + 1}", **tolerance)


# ---- the formulas ---------------------------------------------------------------------------


@pytest.mark.parametrize("formula", optimizers.FORMULAS)
def test_each_formula_matches_its_numpy_transcription_and_not_the_other(formula):
    params, grads = _problem()
    got = _run_keras(make_adam(formula, LR, B1, B2, EPS), params, grads)
    _assert_history_close(got, numpy_adam(formula, params, grads, [LR] * STEPS), **TOL)
    other = "keras" if formula == "pytorch" else "pytorch"
    with pytest.raises(AssertionError):
        _assert_history_close(got, numpy_adam(other, params, grads, [LR] * STEPS), **TOL)


def test_keras_formula_is_pytorch_formula_with_epsilon_over_sqrt_of_bias_correction():
    # One update: Keras's eps 1e-8 acts as PyTorch's eps / sqrt(1 - beta2) = 3.16e-7.
    params, grads = _problem(seed=1, steps=1)
    keras_step = _run_keras(make_adam("keras", LR, B1, B2, EPS), params, grads)
    effective = EPS / np.sqrt(1 - B2)
    assert effective == pytest.approx(3.162e-7, rel=1e-3)
    torch_step = _run_keras(PyTorchAdam(LR, B1, B2, epsilon=effective), params, grads)
    _assert_history_close(keras_step, torch_step, **TOL)


def test_learning_rate_schedule_is_evaluated_before_each_update():
    # Keras optimizers read the schedule at the iteration count before the update (0 first).
    schedule = schedules.polynomial_decay(1e-3, decay_steps=4, end_learning_rate=1e-5, power=0.3)
    lrs = [float(schedule(t)) for t in range(STEPS)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    params, grads = _problem(seed=2)
    for formula in optimizers.FORMULAS:
        got = _run_keras(make_adam(formula, schedule, B1, B2, EPS), params, grads)
        _assert_history_close(got, numpy_adam(formula, params, grads, lrs), **TOL)


def test_pytorch_formula_matches_torch_optim_adam():
    torch = pytest.importorskip("torch")
    params, grads = _problem(seed=3)
    got = _run_keras(PyTorchAdam(LR, B1, B2, EPS), params, grads)
    tensors = [torch.tensor(p, requires_grad=True) for p in params]
    reference = torch.optim.Adam(tensors, lr=LR, betas=(B1, B2), eps=EPS)
    want = []
    for step_grads in grads:
        for tensor, g in zip(tensors, step_grads, strict=True):
            tensor.grad = torch.tensor(g)
        reference.step()
        want.append([t.detach().numpy().copy() for t in tensors])
    # Same float32 operations in the same order: equal to a few ulp.
    _assert_history_close(got, want, rtol=0, atol=3e-7)


# ---- Keras plumbing: checkpoints, serialisation, distribution -------------------------------


def test_checkpoint_keeps_moments_and_uses_keras_adams_layout(tmp_path):
    params, grads = _problem(seed=4)
    variables = [keras.Variable(p) for p in params]
    optimizer = PyTorchAdam(LR)
    optimizer.build(variables)
    for step_grads in grads[:3]:
        optimizer.apply_gradients(zip(step_grads, variables, strict=True))
    path = tf.train.Checkpoint(v=variables, optimizer=optimizer).save(str(tmp_path / "ckpt"))

    restored_vars = [keras.Variable(np.zeros_like(p)) for p in params]
    restored = PyTorchAdam(LR)
    restored.build(restored_vars)  # slots must exist before the restore
    checkpoint = tf.train.Checkpoint(v=restored_vars, optimizer=restored)
    checkpoint.restore(path).assert_existing_objects_matched()
    assert int(restored.iterations.numpy()) == 3
    for a, b in zip(optimizer.variables, restored.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.abs(v.numpy()).max() > 0 for v in restored._velocities)
    # The next update continues identically (bias correction at t = 4, the same moments).
    for opt, var in ((optimizer, variables), (restored, restored_vars)):
        opt.apply_gradients(zip(grads[3], var, strict=True))
    for a, b in zip(variables, restored_vars, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    keras_adam = keras.optimizers.Adam(LR, epsilon=EPS)
    keras_adam.build([keras.Variable(p) for p in params])
    keras_path = tf.train.Checkpoint(optimizer=keras_adam).save(str(tmp_path / "keras"))
    torch_path = tf.train.Checkpoint(optimizer=restored).save(str(tmp_path / "torch"))

    def layout(prefix):
        return sorted(tf.train.list_variables(prefix))

    assert layout(keras_path) == layout(torch_path)


def test_config_round_trip_and_factory():
    schedule = schedules.polynomial_decay(1e-4, decay_steps=100, end_learning_rate=1e-6)
    optimizer = PyTorchAdam(schedule, beta_1=0.8, beta_2=0.99, epsilon=1e-6, name="adam_pt")
    config = optimizer.get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.8, 0.99, 1e-6)
    clone = PyTorchAdam.from_config(json.loads(json.dumps(config)))  # from_config mutates
    assert clone.get_config() == config
    revived = keras.optimizers.deserialize(
        json.loads(json.dumps(keras.optimizers.serialize(optimizer)))
    )
    assert type(revived) is PyTorchAdam and revived.get_config() == config
    assert float(revived.learning_rate) == pytest.approx(1e-4)

    assert adam_formula(make_adam("pytorch", 1e-3)) == "pytorch"
    keras_adam = make_adam("keras", 1e-3, epsilon=1e-8)
    assert type(keras_adam) is keras.optimizers.Adam and adam_formula(keras_adam) == "keras"
    assert float(keras_adam.epsilon) == 1e-8
    assert adam_formula(keras.optimizers.SGD()) is None
    with pytest.raises(ValueError, match="Adam formula"):
        make_adam("tf1", 1e-3)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training.optimizers import PyTorchAdam
    from training.step import minimize

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 8)).astype("float32")
    y = rng.normal(0, 1, (4, 3)).astype("float32")
    w0 = rng.normal(0, 0.1, (8, 3)).astype("float32")

    def run(strategy):
        with strategy.scope():
            w = tf.Variable(w0)
            opt = PyTorchAdam(1e-2)
            opt.build([w])

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(xb @ w - yb))
            minimize(tape, loss, [w], opt)

        ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)))
        batch = next(iter(ds))
        fn = tf.function(lambda b: strategy.run(step, args=b))
        for _ in range(3):
            fn(batch)
        return [w.numpy()] + [v.numpy() for v in opt.variables]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single, multi = run(tf.distribute.get_strategy()), run(mirrored)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, multi))
    moved = float(np.max(np.abs(single[0] - w0)))
    print("RESULT " + json.dumps({"replicas": mirrored.num_replicas_in_sync, "diff": diff,
                                  "moved": moved}))
    """
)


def test_mirrored_two_replicas_equal_one_device():
    result = result_json(run_python(["-c", MIRRORED_SCRIPT]))
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3  # three updates at lr 1e-2 did move the weights
    assert result["diff"] < 1e-6  # weights, iteration count and both moments


# ---- the formula each paper trains with -------------------------------------------------------


def test_paper_defaults_pytorch_formula_for_mimo_unet_keras_formula_for_idc_and_two_way():
    tiny = {"base_channels": 4, "num_res": 1}
    steps = {
        "pytorch": MimoUnetTrainStep(steps_per_epoch=1, model_kwargs=tiny),
        "keras": [
            IdcTrainStep(total_steps=1, model_kwargs=tiny),
            TwoWayTrainStep(total_steps=1, model_kwargs=tiny),
        ],
    }
    expected = [("pytorch", steps["pytorch"])] + [("keras", s) for s in steps["keras"]]
    for formula, step in expected:
        step.build(tf.distribute.get_strategy())
        assert step.adam_formula == formula and adam_formula(step.optimizer) == formula
        optimizer = step.optimizer
        assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-8)
        # The identity the loop compares on resume, not overwritten by describe().
        assert step.run_config()["optimizer"] == optimizers.FORMULA_NAMES[formula]
        assert "optimizer" not in step.describe()
    assert type(steps["keras"][0].optimizer) is keras.optimizers.Adam
    assert isinstance(steps["pytorch"].optimizer, PyTorchAdam)
    assert optimizers.FORMULA_NAMES == {
        "pytorch": "Adam (PyTorch formula)",
        "keras": "Adam (Keras formula)",
    }
    with pytest.raises(ValueError, match="adam_formula"):
        IdcTrainStep(total_steps=1, adam_formula="tf1")
