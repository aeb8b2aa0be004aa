"""Multi-process training on JAX's distributed runtime, on one machine.

Two local processes, each with 2 host devices, join one JAX cluster
(`jax.distributed.initialize`, coordinator on 127.0.0.1) and train under
`keras.distribution.DataParallel` over the 4 devices; a third process trains
alone over 4 host devices on the same global batches. The processes are
tests/multiprocess_jax_worker.py; each saves what it saw, and this module
compares:

- `find_lr` leaves every model, optimizer and metric variable bit for bit as
  it found them in each process, and both record the same curve (the one a
  single process records, up to float32 rounding of the loss: a reduction
  across processes adds in another order);
- `OneCycle` and `CyclicLR` apply, and log, the same learning rate and
  momentum in both processes, equal to the single process's;
- the range test's CSV, JSON and TensorBoard files are written once, by
  process 0.

Every process ends by itself (a time limit kills the rest), and the files
live in pytest's temporary directory. Under pytest-xdist, `--dist loadfile`
(as `make test` runs it) keeps the module's tests in one worker, so the
processes run once.
"""

import importlib.util
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = pathlib.Path(__file__).resolve().parent
WORKER = TESTS / "multiprocess_jax_worker.py"
TIME_LIMIT = 300  # seconds, for all three processes together

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install 'keras-clr[backends]')",
)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(devices):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("XLA_FLAGS", "CUDA_VISIBLE_DEVICES")
    }
    env.update(
        KERAS_BACKEND="jax",
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="2",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")]),
    )
    return env


def _launch(out, port):
    """Starts the two cluster processes and the single one, waits for all
    within TIME_LIMIT (killing what is left), returns {tag: return code}."""
    commands = {
        f"p{i}": (
            [sys.executable, str(WORKER), str(out), "--process-id", str(i), "--port", str(port)],
            2,
        )
        for i in range(2)
    }
    commands["single"] = ([sys.executable, str(WORKER), str(out)], 4)
    processes, logs = {}, {}
    deadline = time.monotonic() + TIME_LIMIT
    try:
        for tag, (command, devices) in commands.items():
            logs[tag] = open(out / f"log_{tag}.txt", "w")
            processes[tag] = subprocess.Popen(
                command,
                cwd=TESTS.parent,
                env=_environment(devices),
                stdout=logs[tag],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for process in processes.values():
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs.values():
            log.close()
    return {tag: process.returncode for tag, process in processes.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs the cluster of two and the single process; returns what each saw."""
    out = tmp_path_factory.mktemp("multiprocess_jax")
    for _ in range(2):
        codes = _launch(out, _free_port())
        logs = {tag: (out / f"log_{tag}.txt").read_text() for tag in codes}
        # The free port found may be taken by another program before the
        # coordinator binds it: then once more, on another port.
        if not any("already in use" in log.lower() for log in logs.values()):
            break
    for tag, code in codes.items():
        assert code == 0, f"{tag} exited with {code}:\n{logs[tag][-4000:]}"
    return out, {tag: dict(np.load(out / f"result_{tag}.npz")) for tag in codes}


def test_cluster_spans_both_processes(runs):
    _, saved = runs
    for index in range(2):
        seen = saved[f"p{index}"]
        assert int(seen["process_index"]) == index
        assert int(seen["global_devices"]) == 4
        assert int(seen["local_devices"]) == 2
    assert int(saved["single"]["local_devices"]) == 4


@pytest.mark.parametrize("data", ["find", "dataset"])  # per-process arrays, a sharded tf.data
def test_find_lr_restores_each_process_bit_for_bit(runs, data):
    _, saved = runs
    for tag, seen in saved.items():
        before, after = seen[f"{data}_before"], seen[f"{data}_after"]
        assert before.size > 0
        assert np.array_equal(before, after), tag


@pytest.mark.parametrize("data", ["find", "dataset"])
def test_find_lr_records_the_same_curve_in_both_processes(runs, data):
    _, saved = runs
    p0, p1, single = saved["p0"], saved["p1"], saved["single"]
    assert len(p0[f"{data}_lrs"]) == 20
    np.testing.assert_array_equal(p0[f"{data}_lrs"], p1[f"{data}_lrs"])
    np.testing.assert_array_equal(p0[f"{data}_losses"], p1[f"{data}_losses"])
    np.testing.assert_array_equal(p0[f"{data}_lrs"], single[f"{data}_lrs"])
    np.testing.assert_allclose(p0[f"{data}_losses"], single[f"{data}_losses"], rtol=1e-5)
    # The curve is a real one: the loss moves over the ramp.
    assert np.ptp(p0[f"{data}_losses"]) > 0.1


@pytest.mark.parametrize("schedule", ["one_cycle", "cyclic", "one_cycle_dataset"])
def test_schedules_apply_the_same_rates_in_every_process(runs, schedule):
    _, saved = runs
    rows = {tag: seen[f"{schedule}_rows"] for tag, seen in saved.items()}
    p0 = rows["p0"]
    assert p0.shape == (8, 4)  # 2 epochs x 4 global batches
    # Logged learning rate and momentum: equal across processes and to one process.
    for tag in ("p1", "single"):
        np.testing.assert_array_equal(p0[:, :2], rows[tag][:, :2])
    for seen in rows.values():
        np.testing.assert_array_equal(seen[:, 0], seen[:, 2])  # logged == the optimizer's
    assert len(np.unique(p0[:, 0])) > 4 and len(np.unique(p0[:, 1])) > 4
    # The trained state: identical across the cluster, the single run's up to rounding.
    assert np.array_equal(saved["p0"][f"{schedule}_state"], saved["p1"][f"{schedule}_state"])
    np.testing.assert_allclose(
        saved["p0"][f"{schedule}_values"],
        saved["single"][f"{schedule}_values"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_result_files_are_written_once_by_process_zero(runs):
    out, saved = runs
    shared = out / "shared"
    for suffix in ("csv", "json"):
        assert (shared / f"range.{suffix}").is_file()
        assert (shared / f"range_p0.{suffix}").is_file()
        assert not (shared / f"range_p1.{suffix}").exists()
    assert len(list((shared / "tb").iterdir())) == 1
    assert len(list((shared / "tb_p0").iterdir())) == 1
    assert not (shared / "tb_p1").exists()
    # Process 1 still returns the log directory it was given.
    assert list(saved["p1"]["tensorboard_returns"]) == [str(shared / "tb"), str(shared / "tb_p1")]

    from keras_clr import LRFinderResult

    for suffix, read in (("csv", LRFinderResult.read_csv), ("json", LRFinderResult.read_json)):
        written = read(shared / f"range.{suffix}")
        np.testing.assert_array_equal(written.lrs, saved["p0"]["find_lrs"])
        np.testing.assert_array_equal(written.losses, saved["p0"]["find_losses"])
