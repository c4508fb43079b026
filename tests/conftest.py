"""Shared pytest configuration: quiet TensorFlow, deterministic seeds, the shared/ folder."""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# One intra-op thread per process (this one, and the commands tests run, which inherit it): the
# suite runs in two pytest-xdist workers on two cores, and on 32-64 px tensors TensorFlow's
# thread pool costs more in synchronisation than it gains (on a 2-core machine, the tests that
# did not change between two runs took 10-35 % less time with one thread).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts and ends in float32: a training run or command under test sets Keras'
    process-wide mixed-precision policy (``--precision``), which must not leak into the next."""
    yield
    import keras

    if keras.mixed_precision.global_policy().name != "float32":
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _eager_marker(request):
    """``@pytest.mark.eager``: every ``tf.function`` of the test runs its Python body eagerly.

    Tracing a tiny network's training step costs about three times as much as running it a few
    times eagerly on 32-64 px batches, so tests of a step's semantics (what changes, what stays
    frozen, what a checkpoint holds) run eagerly; every paper's step still runs traced, as
    training runs it, in the tests of its training script or loop.
    """
    if request.node.get_closest_marker("eager") is None:
        yield
        return
    with eager_functions():
        yield


@contextlib.contextmanager
def eager_functions():
    """Runs every ``tf.function`` eagerly inside the block (module fixtures use it directly)."""
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session")
def shared_dir():
    """``shared/`` beside the repository (specs, papers, fixtures); skips the test if absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (CI clones the repository with shared/ beside it)")
    return SHARED
