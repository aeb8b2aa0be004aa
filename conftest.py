"""pytest settings for the whole checkout: the doctests of keras_clr.

`python -m pytest` collects tests/ and, with `--doctest-modules`
(pyproject.toml), the `Example:` of every docstring in keras_clr/: each
runs on the TensorFlow backend (unless KERAS_BACKEND says otherwise) with
`keras`, `np` and `keras_clr` already imported, as its first line shows.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_clr  # noqa: E402

# Names whose examples need keras.optimizers.MultiOptimizer (Keras 3.15 on):
# on older Keras the doctests that call them are skipped.
NEEDS_MULTI_OPTIMIZER = ("keras_clr.discriminative_optimizer(", "keras_clr.fine_tune(")


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(keras=keras, np=np, keras_clr=keras_clr)


def pytest_collection_modifyitems(config, items):
    if hasattr(keras.optimizers, "MultiOptimizer"):
        return
    skip = pytest.mark.skip(
        reason="the example needs keras.optimizers.MultiOptimizer "
        f"(Keras 3.15 or later); this is Keras {keras.__version__}"
    )
    for item in items:
        examples = getattr(getattr(item, "dtest", None), "examples", ())
        if any(name in example.source for example in examples for name in NEEDS_MULTI_OPTIMIZER):
            item.add_marker(skip)
