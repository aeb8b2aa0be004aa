"""The JAX and PyTorch Keras backends: tests/backend_cases.py, once per backend.

Keras fixes its backend when it is first imported, and this process runs
TensorFlow, so each other backend gets its own pytest process with
KERAS_BACKEND set (and, for JAX, two host devices for the DataParallel
cases). A backend that is not installed is skipped: `pip install
"keras-clr[backends]"` brings both.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ENVIRONMENTS = {
    "jax": {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    "torch": {},
}


@pytest.mark.parametrize("backend", sorted(ENVIRONMENTS))
def test_backend_cases(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install 'keras-clr[backends]')")
    env = {**os.environ, **ENVIRONMENTS[backend], "KERAS_BACKEND": backend}
    if backend == "jax" and os.environ.get("XLA_FLAGS"):
        env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {env['XLA_FLAGS']}"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(TESTS / "backend_cases.py"),
    ]
    run = subprocess.run(
        command, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600
    )
    report = f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert run.returncode == 0, report
    assert " passed" in run.stdout, report  # not skipped as a whole
