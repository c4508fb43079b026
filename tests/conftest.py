"""Shared pytest configuration: quiet TensorFlow, deterministic seeds, the shared/ folder."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def shared_dir():
    """``shared/`` beside the repository (specs, papers, fixtures); skips the test if absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not found (CI clones the repository with shared/ beside it)")
    return SHARED
