"""The examples run: each script with small arguments, and the notebook with
tiny parameters, each writing the figures it promises.

Marked `examples` (about two minutes in all on two CPU cores); deselect with
`pytest -m "not examples"`.
"""

import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.examples

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "cifar10_cutout_lr_finder.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# script -> (small arguments, figures it must write)
SCRIPTS = {
    "quickstart.py": (["--epochs", "2"], ["range_test.png", "training.png"]),
    "cyclic_triangular2.py": (
        ["--epochs", "2", "--epochs-per-half-cycle", "1"],
        ["cyclic_triangular2.png"],
    ),
    "schedule_as_optimizer_lr.py": (["--epochs", "2"], ["schedules_preview.png"]),
    "tensorboard_logging.py": (["--epochs", "2"], ["tensorboard_scalars.png"]),
    "fine_tuning.py": (
        ["--epochs", "2", "--pretrain-epochs", "3", "--budget-steps", "160"],
        ["fine_tuning.png"],
    ),
}
NOTEBOOK_FIGURES = [
    "range_test.png",
    "schedule.png",
    "accuracy_curves.png",
    "gradcam_misclassified.png",
]


def assert_png(path):
    assert path.is_file(), f"{path.name} was not written"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{path.name} is not a PNG image"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_writes_its_figures(script, tmp_path):
    if script == "fine_tuning.py":
        keras = pytest.importorskip("keras")
        if not hasattr(keras.optimizers, "MultiOptimizer"):
            pytest.skip("fine_tuning.py needs Keras 3.15's MultiOptimizer")
    args, figures = SCRIPTS[script]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    # The time limit only stops a hung script: under pytest-xdist the script
    # shares the cores with the workers (fine_tuning.py needs over a minute
    # of CPU time).
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--output", str(tmp_path / "out"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    for name in figures:
        assert_png(tmp_path / "out" / name)
    if script == "tensorboard_logging.py":
        for tag in ("lr_finder/loss", "batch_learning_rate", "batch_momentum", "epoch_accuracy"):
            assert tag in completed.stdout
    if script == "schedule_as_optimizer_lr.py":
        assert sorted(p.name for p in (tmp_path / "out").glob("*.keras")) == [
            "one_cycle.keras",
            "triangular2.keras",
        ]


def test_notebook_is_committed_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_runs_small_and_writes_its_figures(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    out = tmp_path / "out"
    parameters = {
        "EPOCHS": "2",
        "SUBSET": "512",
        "WIDTH": "4",
        "BATCH_SIZE": "64",
        "LR_FINDER_STEPS": "30",
        "DATASET": "offline",
        "OUTPUT_DIR": str(out),
    }
    for name, value in parameters.items():
        monkeypatch.setenv(f"KERAS_CLR_NB_{name}", value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, as in Jupyter
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The "python3" kernel is ipykernel in the Python running the tests.
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "DATASET USED: OFFLINE FALLBACK" in text
    assert "model restored exactly after the range test: True" in text
    assert "best test accuracy" in text
    for name in NOTEBOOK_FIGURES:
        assert_png(out / name)
    assert (out / "logs" / "lr_finder").is_dir() and (out / "logs" / "train").is_dir()
