"""tf.distribute: runs `tests/distribute_cases.py` in a fresh interpreter.

The cases need two logical CPU devices, which TensorFlow allows configuring
only before it initialises its devices; this process did that long ago.
"""

import os
import subprocess
import sys

import keras
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute needs the TensorFlow backend"
)
def test_mirrored_strategy_cases():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            os.path.join(HERE, "distribute_cases.py"),
        ],
        cwd=os.path.dirname(HERE),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )  # only stops a hang: the cases take about 80 s of CPU time
    report = f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert run.returncode == 0, report
    assert " passed" in run.stdout, report
