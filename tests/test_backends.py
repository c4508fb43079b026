"""Backend parity: every registered model, the self-ensemble and the losses under JAX and PyTorch.

The README claims that ``models/`` and ``losses.py`` run under the TensorFlow, JAX and PyTorch
backends of Keras 3. Keras picks its backend once, from ``KERAS_BACKEND``, at import, so each
backend runs in one subprocess (:func:`child`) that loads the weights the TensorFlow backend saved
(``.weights.h5``, tiny widths) and computes, on the same odd-size (2, 37, 53, 3) batch in [0, 1]:

* every output of a direct call on the padded batch (the coarse-to-fine list),
* ``inference.restore`` (pad, run, crop back) with no ensemble, and for one model (the ensemble
  code does not depend on the model) ``rot4`` and ``x8``,
* the paper loss of the model's family on the TensorFlow backend's predictions (so that the loss is
  compared on identical inputs), every term of its dict.

The networks outside ``MODEL_BUILDERS`` (:data:`NETWORKS`) get one direct inference call each:
RP-GAN's generator G (``models.PRIOR_BUILDERS``) on concat(blur, sharp) of the odd-size batch (G
pads to 4 and crops back inside), the critics D_cGAN and D_p (:mod:`models.rpgan`) on a (2, 64,
64, ·) batch (the 256² training crops' parity: even sizes, so "same" padding of their stride-2 4x4
convolutions is symmetric), and SEN (``models.FLOW_ESTIMATOR_BUILDERS``) on the odd-size batch (it
pads to 64 inside).

The parent compares each array with the TensorFlow backend's at ``ATOL`` and reports the largest
absolute difference. The child also reports whether anything imported TensorFlow: under JAX and
PyTorch, ``models`` and ``losses`` must run without it.

The backends are optional for users (``requirements-backends.txt``); locally a missing backend
skips, in CI (``CI`` set) it fails, so that a broken install cannot hide behind a skip.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.process_checks import run_python

BACKENDS = ("jax", "torch")
# Tiny widths: base_channels and num_res, except where a model has other size arguments.
TINY = {"base_channels": 8, "num_res": 1}
TINY_OF = {"gradientnet": {"base_channels": 8, "gradient_channels": 8, "num_mbrb": 1}}
SHAPE = (2, 37, 53, 3)
ENSEMBLES = ("none", "rot4", "x8")
# The self-ensemble wraps any model the same way: checked on one model (each ensemble is 4 or 8
# more passes, and JAX compiles every new shape), the plain restore on all.
ENSEMBLE_MODELS = ("mimo_unet",)
LOSS_OF = {
    "mimo_unet": "mimo_unet_loss",
    "mimo_unet_plus": "mimo_unet_loss",
    "idc": "idc_loss",
    "two_way": "two_way_loss",
    "gradientnet": None,  # GAN losses need a critic and VGG: compared in their own tests
}
MODELS = ("mimo_unet", "mimo_unet_plus", "idc", "two_way", "gradientnet")
# Networks that are not restorers: name -> (builder kwargs at tiny width, input of the call).
NETWORKS = {
    "rpgan_generator": ({"width_divisor": 16}, "blur_sharp"),
    "rpgan_d_cgan": ({"width_divisor": 16, "conditional": True}, "critic6"),
    "rpgan_d_p": ({"width_divisor": 16, "conditional": False}, "critic3"),
    # Both stacks: JAX compiles per shape, so stack 2 adds ~3 s to stack 1's ~16 s (load 4).
    "sen": ({"width_divisor": 16}, "blur"),
}
CRITIC_SHAPE = (2, 64, 64, 6)
ATOL = 1e-4  # outputs are images in about [0, 1]
LOSS_RTOL = 1e-4  # loss terms span 1e-3 (gradients) to 10 (FFT sums)
JAX_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def model_names():
    import models

    return models.model_names()


def tiny(name):
    """Constructor overrides that build a small ``name``."""
    return TINY_OF.get(name, TINY)


def ensembles(name):
    """The self-ensemble modes compared for ``name``."""
    return ENSEMBLES if name in ENSEMBLE_MODELS else ("none",)


def compute(names, weights_dir, reference=None):
    """All compared arrays of the current backend, as ``{key: np.ndarray}``.

    Args:
        names: registry names.
        weights_dir: folder with ``<name>.weights.h5`` (written by the TensorFlow backend) and
            ``inputs.npz`` (``blur``, ``sharp``: float32 NHWC in [0, 1]).
        reference: the TensorFlow backend's arrays; its ``<name>/out_<k>`` are the predictions fed
            to the losses. ``None`` on the TensorFlow backend itself (its own outputs are used).
    Returns:
        ``<name>/out_<k>`` (direct call, k = 0 coarsest), ``<name>/restore_<mode>`` and
        ``<name>/loss/<term>``.
    """
    import keras

    import losses
    import models
    from models import inference

    inputs = np.load(os.path.join(weights_dir, "inputs.npz"))
    blur, sharp = inputs["blur"], inputs["sharp"]
    results = {}
    for name in names:
        model = models.build_model(name, **tiny(name))
        model.build((None, None, None, 3))
        model.load_weights(os.path.join(weights_dir, f"{name}.weights.h5"))
        padded = inference.pad_to_multiple(blur, inference.size_multiple(model))
        outputs = compiled(lambda x, model=model: model(x, training=False))(padded)
        for k, out in enumerate(outputs):
            results[f"{name}/out_{k}"] = keras.ops.convert_to_numpy(out)
        for mode in ensembles(name):
            restored = compiled(
                lambda x, model=model, mode=mode: inference.restore(model, x, self_ensemble=mode)
            )(blur)
            results[f"{name}/restore_{mode}"] = keras.ops.convert_to_numpy(restored)
        if LOSS_OF[name] is None:
            continue
        source = reference if reference is not None else results
        predictions = [source[f"{name}/out_{k}"] for k in range(len(outputs))]
        label = inference.pad_to_multiple(sharp, inference.size_multiple(model))
        terms = getattr(losses, LOSS_OF[name])(predictions, label)
        for term, value in terms.items():
            results[f"{name}/loss/{term}"] = np.asarray(keras.ops.convert_to_numpy(value))
    return results


def compiled(fn):
    """``fn`` under ``jax.jit`` on the JAX backend, ``fn`` itself elsewhere.

    Eager JAX compiles every op for every new shape; one compiled graph per call is ~4.5x less
    CPU (mimo_unet: 122 s -> 27 s) and is how JAX users run a model. The same layers and ops
    compute either way, so parity with TensorFlow is still what is checked.
    """
    import keras

    if keras.backend.backend() != "jax":
        return fn
    import jax

    return jax.jit(fn)


def build_network(name):
    """A built tiny network of :data:`NETWORKS` (random weights)."""
    import models
    from models import rpgan

    kwargs, _ = NETWORKS[name]
    if name in models.PRIOR_BUILDERS:
        model = models.build_prior(name, **kwargs)
    elif name in models.FLOW_ESTIMATOR_BUILDERS:
        model = models.build_flow_estimator(name, **kwargs)
    else:
        model = rpgan.rpgan_discriminator(**kwargs)
    model.build((None, None, None, getattr(model, "in_channels", 3)))
    return model


def network_input(name, inputs):
    """The call input of a :data:`NETWORKS` entry from ``inputs.npz``."""
    kind = NETWORKS[name][1]
    if kind == "blur_sharp":
        return np.concatenate([inputs["blur"], inputs["sharp"]], axis=-1)
    if kind == "critic6":
        return inputs["critic"]
    return inputs["critic"][..., :3] if kind == "critic3" else inputs["blur"]


def compute_networks(weights_dir):
    """``<name>/out`` of one inference call of every :data:`NETWORKS` entry."""
    import keras

    inputs = np.load(os.path.join(weights_dir, "inputs.npz"))
    results = {}
    for name in NETWORKS:
        model = build_network(name)
        model.load_weights(os.path.join(weights_dir, f"{name}.weights.h5"))
        output = compiled(lambda x, model=model: model(x, training=False))(
            network_input(name, inputs)
        )
        results[f"{name}/out"] = keras.ops.convert_to_numpy(output)
    return results


def child(weights_dir, names):
    """Subprocess entry point: computes this backend's arrays into ``<backend>.npz``."""
    import keras

    backend = keras.backend.backend()
    reference = dict(np.load(os.path.join(weights_dir, "tensorflow.npz")))
    results = compute(names, weights_dir, reference)
    results.update(compute_networks(weights_dir))
    np.savez(os.path.join(weights_dir, f"{backend}.npz"), **results)
    report = {"backend": backend, "tensorflow_imported": "tensorflow" in sys.modules}
    print("BACKEND " + json.dumps(report))


def _installed(module):
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    """Tiny models built on the TensorFlow backend: weights, inputs and reference arrays."""
    import keras

    import models

    assert keras.backend.backend() == "tensorflow"
    folder = tmp_path_factory.mktemp("backends")
    rng = np.random.default_rng(0)
    blur = rng.random(SHAPE, dtype=np.float32)
    sharp = np.clip(blur + rng.normal(0.0, 0.1, SHAPE), 0.0, 1.0).astype(np.float32)
    critic = rng.random(CRITIC_SHAPE, dtype=np.float32)
    np.savez(folder / "inputs.npz", blur=blur, sharp=sharp, critic=critic)
    for name in model_names():
        model = models.build_model(name, **tiny(name))
        model.build((None, None, None, 3))
        model.save_weights(str(folder / f"{name}.weights.h5"))
    for name in NETWORKS:
        build_network(name).save_weights(str(folder / f"{name}.weights.h5"))
    arrays = compute(model_names(), str(folder))
    arrays.update(compute_networks(str(folder)))
    np.savez(folder / "tensorflow.npz", **arrays)
    return folder


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, reference_dir):
    """Runs :func:`child` under one backend; returns (backend, its arrays, its report)."""
    backend = request.param
    if not _installed(backend):
        message = f"{backend} is not installed (pip install -r requirements-backends.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    code = (
        f"from tests.test_backends import child; child({str(reference_dir)!r}, {model_names()!r})"
    )
    env = {"KERAS_BACKEND": backend}
    if backend == "jax":
        # JAX compiles every eager op (and every initializer) for each new shape: with XLA's
        # backend optimisations off the child takes ~35 s instead of ~100 s on 2 cores.
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {JAX_FAST_COMPILE}".strip()
    result = run_python(["-c", code], env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("BACKEND ")][-1]
    report = json.loads(line[len("BACKEND ") :])
    assert report["backend"] == backend
    arrays = dict(np.load(reference_dir / f"{backend}.npz"))
    return backend, arrays, report


def _max_differences(arrays, reference, name):
    """Largest absolute difference per compared key of one model (outputs and restores)."""
    keys = [k for k in reference if k.startswith(f"{name}/") and "/loss/" not in k]
    assert keys and all(k in arrays for k in keys), sorted(set(keys) - set(arrays))
    for k in keys:
        assert arrays[k].shape == reference[k].shape, k
    return {k: float(np.max(np.abs(arrays[k] - reference[k]))) for k in keys}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_model_matches_tensorflow_backend(backend_run, reference_dir, name):
    """All outputs and restore (with the rot4 / x8 self-ensembles for ``ENSEMBLE_MODELS``) agree
    with TensorFlow's at 1e-4."""
    backend, arrays, _ = backend_run
    reference = dict(np.load(reference_dir / "tensorflow.npz"))
    differences = _max_differences(arrays, reference, name)
    outputs = max(v for k, v in differences.items() if "/out_" in k)
    summary = ", ".join(
        f"{k.split('_')[-1]} {differences[f'{name}/{k}']:.1e}"
        for k in (f"restore_{mode}" for mode in ensembles(name))
    )
    print(f"\n{backend} {name}: max |difference| outputs {outputs:.1e}, restore {summary}")
    bad = {k: v for k, v in differences.items() if not v <= ATOL}
    assert not bad, f"{backend}: {bad}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_matches_tensorflow_backend(backend_run, reference_dir, name):
    """RP-GAN's G, D_cGAN, D_p and SEN: one inference call agrees with TensorFlow's at 1e-4 (G's
    images and SEN's flows, in pixels of a few tenths with random weights; the critics' logits)."""
    backend, arrays, _ = backend_run
    reference = dict(np.load(reference_dir / "tensorflow.npz"))
    difference = _max_differences(arrays, reference, name)[f"{name}/out"]
    print(f"\n{backend} {name}: max |difference| {difference:.1e}")
    assert difference <= ATOL, f"{backend} {name}: {difference}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in MODELS if LOSS_OF[name]])
def test_loss_matches_tensorflow_backend(backend_run, reference_dir, name):
    """Every term of the paper loss, on the same predictions, agrees to rtol 1e-4."""
    backend, arrays, _ = backend_run
    reference = dict(np.load(reference_dir / "tensorflow.npz"))
    prefix = f"{name}/loss/"
    keys = [k for k in reference if k.startswith(prefix)]
    assert "loss" in {k[len(prefix) :] for k in keys}
    relative = max(abs(float(arrays[k]) / float(reference[k]) - 1.0) for k in keys)
    print(f"\n{backend} {name} loss: {len(keys)} terms, max relative difference {relative:.1e}")
    for k in keys:
        np.testing.assert_allclose(arrays[k], reference[k], rtol=LOSS_RTOL, atol=1e-7, err_msg=k)


@pytest.mark.slow
def test_backend_runs_without_tensorflow(backend_run):
    """Under JAX and PyTorch nothing in models/ or losses.py pulls TensorFlow in."""
    backend, _, report = backend_run
    assert not report["tensorflow_imported"], backend


def test_registry_is_what_the_parity_tests_cover():
    import models

    assert sorted(LOSS_OF) == sorted(MODELS) == model_names()
    others = set(models.PRIOR_BUILDERS) | set(models.FLOW_ESTIMATOR_BUILDERS)
    assert others <= set(NETWORKS), sorted(others - set(NETWORKS))


def test_models_and_losses_never_import_tensorflow():
    """models/ and losses.py import keras only: no ``tensorflow`` / ``tf_keras`` import anywhere."""
    files = sorted((REPO_ROOT / "models").glob("*.py")) + [REPO_ROOT / "losses.py"]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in ("tensorflow", "tf_keras"):
                    offenders.append(f"{path.name}:{node.lineno} {module}")
    assert not offenders, offenders
