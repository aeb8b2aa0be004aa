"""Test settings shared by every test module."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pathlib  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

_HERE = pathlib.Path(__file__).parent


def pytest_ignore_collect(collection_path, config):
    """The helper modules here (`backend_cases.py`, `distribute_cases.py`,
    `data/record_wsd_reference.py`, ...) are imported or run by the tests,
    never collected: not as doctest modules either (`--doctest-modules`
    would import them, and some configure devices as they are imported)."""
    name = collection_path.name
    if (
        collection_path.suffix == ".py"
        and _HERE in collection_path.parents
        and not name.startswith("test_")
        and name != "conftest.py"
    ):
        return True
    return None


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts from a fresh Keras session and float32 policy."""
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
