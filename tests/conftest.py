"""Shared fixtures. TensorFlow's C++ logging is silenced before any test imports it."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import pytest  # noqa: E402

TESTS_DIR = Path(__file__).parent
# `toy` (a tiny task for the shared machinery) is importable from every test and subprocess.
sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from the same seed and a clean global dtype policy."""
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty, private data dir for corpora and caches."""
    path = tmp_path / "data"
    monkeypatch.setenv("RNNSUITE_DATA_DIR", str(path))
    return path
