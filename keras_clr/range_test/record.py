"""The range test's traced step and the record it writes.

The test's train step starts each step from reset metrics, so the loss it
reports is that batch's own loss, not Keras's running mean, and writes the
step's (learning rate, loss, monitored value, loss as computed) into a small
float32 variable, the record, one row per step. The host reads the record
every few steps, never per step.

A step that leaves a weight or an optimizer variable NaN or infinite writes
NaN as its loss and monitored value (the fourth column keeps the loss the
step computed), so the host's stop rule ends the test as it does on a NaN
loss. The loss alone does not always show it: with TensorFlow's oneDNN a
fused ReLU turns a NaN input into 0, and a NaN in the data then gives a
finite loss and NaN weights.

One traced step serves every range test of the same length and monitor on a
model and optimizer: its inputs (the ramp's rates, the step offset, the
record) live in variables that each test refills. JAX bakes everything but
its training state into a trace, so there the record travels in the
training state and a step serves the tests with the same ramp and start.
"""

import keras
import numpy as np
from keras import ops

from keras_clr import _backend
from keras_clr import _keras_internals
from keras_clr import curves
from keras_clr import tables
from keras_clr import train_step
from keras_clr.range_test import state


def ramp(step, start_lr, end_lr, num_steps, step_mode):
    """The test's learning rate at `step` (an int, array or tensor)."""
    if isinstance(step, (int, np.integer, np.ndarray, list, tuple)):
        return curves.range_test(step, start_lr, end_lr, num_steps, step_mode, curves.NumpyOps)
    with _backend.graph_precision():
        value = curves.range_test(
            ops.cast(step, "int64"), start_lr, end_lr, num_steps, step_mode, _backend.graph_ops()
        )
        return ops.cast(value, "float32")


# The record's columns.
LR, LOSS, MONITOR, COMPUTED_LOSS = range(4)


def recorded(rows):
    """Rows the train step has written: those before the first empty one."""
    finite = np.isfinite(rows[:, 0])
    return len(rows) if finite.all() else int(np.argmin(finite))


class RangeTestStep:
    """A model's traced range-test step and its record, for one length and
    training monitor.

    Args:
        model: the compiled model.
        num_steps: the test's length; the record has one row more.
        monitor: the key of the step's logs to record (the loss is recorded
            too, under "loss", or under `monitor` for a custom train step
            that returns its loss under another key).
        check_keys: called at trace time with the keys the step returns
            (raises a ValueError when the monitor is not among them).
        baked: on JAX, the ramp and start the trace holds; None elsewhere.
    """

    def __init__(self, model, num_steps, monitor, check_keys, rates, start, baked):
        self.model, self.num_steps, self.monitor = model, num_steps, monitor
        self.baked = baked
        with _backend.strategy_scope(model):
            self.record = keras.Variable(
                np.zeros((num_steps + 1, 4), dtype="float32"),
                trainable=False,
                dtype="float32",
                name="lr_finder_record",
                aggregation="only_first_replica",
            )
            _backend.fill(self.record, np.nan)  # no row written yet
        self.rates = rates
        self.control = train_step.StepControl(
            model,
            rates,
            before_step=lambda step: _reset_metrics(model),
            after_step=lambda step, logs, values: self._write(check_keys, step, logs, values),
        )
        self.control.count_offset = start
        self._carrier = None
        # What the step checks: a variable that holds NaN, inf or values near
        # float32's largest before the test (a sentinel) is left out.
        self.checked = [v for v in state.float_variables(model) if _checkable(v)]

    def begin(self, ramp_fn, start):
        """Readies the step for a test from update count `start`."""
        _backend.fill(self.record, np.nan)
        if isinstance(self.rates, tables.VariableTable):
            self.rates.fill(ramp_fn, 0, self.num_steps + 1)
            self.control.count_offset.assign(start)
        self._carrier = _keras_internals.carry_in_state(self.model, self.record)
        self.control.install()

    def rows(self):
        """The record as float64 rows, one per step of the test."""
        _keras_internals.sync_state(self.model)  # JAX keeps it in its state
        return np.asarray(self.record.numpy(), dtype=np.float64)[: self.num_steps]

    def first_nonfinite(self):
        """The path of the first variable the step checks that holds NaN or
        inf now, read on the host, or None."""
        _keras_internals.sync_state(self.model)  # JAX keeps them in its state
        return state.first_nonfinite(self.checked)

    def end(self):
        """Gives the model its own train step back."""
        self.control.remove()
        _keras_internals.release(self.model, self._carrier)
        self._carrier = None

    def _write(self, check_keys, step, logs, values):
        # In the traced step: the step's (lr, loss, monitor, loss) row.
        check_keys(list(logs))
        loss = ops.cast(logs["loss"] if "loss" in logs else logs[self.monitor], "float32")
        nan_unless_finite = _nan_unless_finite(self.checked)
        row = ops.stack(
            [
                ops.cast(values["learning_rate"], "float32"),
                loss + nan_unless_finite,
                ops.cast(logs[self.monitor], "float32") + nan_unless_finite,
                loss,
            ]
        )
        row = _backend.replica_mean(row)  # the global batch's, as Keras logs it
        _backend.write_row(self.record, ops.minimum(step, self.num_steps), row)
        return logs


def _nan_unless_finite(variables):
    """In the traced step: a float32 scalar, 0 when the variables hold only
    finite values and NaN otherwise, with no host sync.

    Each float32 or float64 variable is summed, one reduction each: a sum is
    NaN or inf when one of its values is, and takes about two thirds of an
    `all(isfinite)`'s time on TensorFlow's CPU. A sum also overflows for values
    near float32's largest, which only a diverged run reaches (a variable
    that starts there is not checked): `first_nonfinite` finds no variable
    then, and the range test calls the stop a divergence. Half-precision
    variables, whose sums overflow early, are checked with `all(isfinite)`.
    Added to a finite value, the 0 leaves its bits as they were.
    """
    flags, sums = [], []
    for variable in variables:
        if keras.backend.standardize_dtype(variable.dtype) in ("float32", "float64"):
            sums.append(ops.cast(ops.sum(variable.value), "float32"))
        else:
            flags.append(ops.all(ops.isfinite(variable.value)))
    if sums:
        flags.append(ops.all(ops.isfinite(ops.stack(sums))))
    if not flags:
        return ops.zeros((), "float32")
    return ops.where(
        ops.all(ops.stack(flags)), ops.zeros((), "float32"), ops.full((), np.nan, "float32")
    )


def _checkable(variable):
    """Whether `variable` holds finite values whose sum stays well within
    float32's range, as the step's check needs (read once, on the host)."""
    values = keras.ops.convert_to_numpy(variable.value)
    return bool(
        np.isfinite(values).all()
        and np.sum(np.abs(values), dtype=np.float64) < np.finfo(np.float32).max / 2
    )


def _reset_metrics(model):
    for metric in model.metrics:
        metric.reset_state()


def range_test_step(model, num_steps, monitor, check_keys, ramp_fn, start, baked):
    """The model's `RangeTestStep` for this length and monitor, ready for a
    test from update count `start`: the one kept on the model while it still
    serves (the same optimizer and compiled step; on JAX the same `baked`
    ramp and start too), else a new one, kept for later tests."""
    steps = _keras_internals.model_cache(model, "_keras_clr_range_tests")
    key = (num_steps, monitor)
    shared = _backend.trace_reads_variables()
    entry = steps.get(key)
    if (
        entry is None
        or not entry.control.serves(model)
        or (not shared and entry.baked != (baked, start))
    ):
        if shared:
            rates = tables.VariableTable(model, num_steps + 1, "lr_finder_rates")
            with _backend.strategy_scope(model):
                offset = keras.Variable(
                    start,
                    trainable=False,
                    dtype="int64",
                    name="lr_finder_start",
                    aggregation="only_first_replica",
                )
        else:  # the rates of every step the test can take, and of the one after
            rates, offset = tables.Tabulated(ramp_fn, 0, num_steps + 1), start
        entry = steps[key] = RangeTestStep(
            model, num_steps, monitor, check_keys, rates, offset, None if shared else (baked, start)
        )
    entry.begin(ramp_fn, start)
    return entry
