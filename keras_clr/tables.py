"""The schedules as tables: one gather per step in the compiled train step.

`Tabulated` holds the float32 values of the steps one `fit` runs, computed
once on the host in float64, as a constant of the trace. `VariableTable`
holds them in a variable, and `SharedControl` keeps such tables and the step
offset per model, so one trace of the wrapped train step serves every later
schedule `fit` on the model. `schedule_control` picks between the two.
The same tables give the values the callbacks write to the logs, on the host.
"""

import keras
import numpy as np
from keras import ops

from keras_clr import _backend
from keras_clr import _keras_internals
from keras_clr.train_step import StepControl

# Most table entries (per schedule) `Tabulated` precomputes: 4 MiB of float32.
TABLE_LIMIT = 2**20


class Tabulated:
    """A schedule looked up in a float32 table of its values.

    Holds the values of `schedule` for the steps `[first, first + count)`,
    computed on the host in float64 and rounded to float32 (the dtype they
    are applied in). Called with a step tensor in the graph it gathers the
    value (steps past the table get its last value, so the table must cover
    every step it is asked for, or end where the schedule turns constant);
    `host(step)` gives the same value as a Python float. Without a table
    (`count` None, or over `TABLE_LIMIT`) both evaluate the schedule itself.

    Args:
        schedule: step -> value, on ints, NumPy arrays and tensors.
        first: the first step of the table.
        count: how many steps it covers, or None.
    """

    def __init__(self, schedule, first, count):
        self.schedule = schedule
        self.first = int(first)
        self.values = None
        if count is not None and 0 < count <= TABLE_LIMIT:
            steps = np.arange(self.first, self.first + count, dtype=np.int64)
            self.values = np.asarray(schedule(steps), dtype=np.float32)
        self._device_table = None
        if self.values is not None:
            self._device_table = _backend.device_table(self.values)

    def __call__(self, step):
        if self.values is None:
            return self.schedule(step)
        index = ops.minimum(step - self.first if self.first else step, len(self.values) - 1)
        return _backend.gather(self._device_table, index)

    def covers(self, first, count):
        """Whether the table serves the steps `[first, first + count)` (count
        None: to the end): it holds them, or evaluates the schedule."""
        if self.values is None:  # evaluated in the graph
            return True
        end = self.first + len(self.values)
        return self.first <= first and (count is None or first + count <= end)

    def host(self, step):
        """The value at `step` as a Python float, read on the host."""
        index = step - self.first
        if self.values is not None and 0 <= index < len(self.values):
            return float(self.values[index])
        return float(np.float32(self.schedule(step)))


# Smallest table a shared control holds; tables grow in powers of two.
MIN_CAPACITY = 1024


class VariableTable:
    """A schedule's float32 values in a variable that each `fit` refills.

    Like `Tabulated`, but the values live in a variable of fixed `capacity`,
    so one traced step serves every fit whose steps fit in it. Called with
    the index into the table (the step minus `first`), it gathers the value;
    indices are clipped into the table, whose tail holds its last value.
    """

    def __init__(self, model, capacity, name):
        self.capacity = int(capacity)
        with _backend.strategy_scope(model):
            self.variable = keras.Variable(
                np.zeros(self.capacity, dtype="float32"),
                trainable=False,
                dtype="float32",
                name=name,
                aggregation="only_first_replica",
            )
        self.schedule, self.first, self.values = None, 0, None

    def fill(self, schedule, first, count):
        """Tabulates `schedule` over the steps `[first, first + count)`."""
        self.schedule, self.first = schedule, int(first)
        steps = np.arange(self.first, self.first + count, dtype=np.int64)
        self.values = np.asarray(schedule(steps), dtype=np.float32)
        padded = np.full(self.capacity, self.values[-1], dtype=np.float32)
        padded[:count] = self.values
        self.variable.assign(padded)

    def __call__(self, index):
        return _backend.gather(self.variable, ops.clip(index, 0, self.capacity - 1))

    host = Tabulated.host
    covers = Tabulated.covers


class SharedControl(StepControl):
    """The `StepControl` of every schedule `fit` on one model.

    Its inputs live in variables (the tables, and the update count at the
    tables' first entry), so one trace of the wrapped train step serves each
    later `fit` with any keras_clr schedule, refilled as the fit begins.
    """

    def __init__(self, model, capacity, groups, log_values):
        self.capacity = capacity
        tables = [
            VariableTable(model, capacity, "keras_clr_learning_rate"),
            (
                VariableTable(model, capacity, "keras_clr_momentum")
                if cycles_momentum(groups)
                else None
            ),
        ]
        super().__init__(model, *tables, groups=groups, log_values=log_values)
        with _backend.strategy_scope(model):
            self.count_offset = keras.Variable(
                0,
                trainable=False,
                dtype="int64",
                name="keras_clr_table_start",
                aggregation="only_first_replica",
            )
        self.tables = tables

    def fill(self, schedules, first, count, updates_at_zero):
        """Tabulates one fit: steps `[first, first + count)` of the
        schedules, step 0 at the optimizer's update count `updates_at_zero`."""
        for table, schedule in zip(self.tables, schedules):
            if table is not None:
                table.fill(schedule, first, count)
        self.count_offset.assign(updates_at_zero + first)


def cycles_momentum(groups):
    """Whether any of the `keras_clr.optimizers.Group`s has its momentum cycled."""
    return any(group.momentum is not None for group in groups)


def schedule_control(model, schedules, first, count, updates_at_zero, groups, log_values):
    """The control and tables for one schedule `fit`: (StepControl, tables).

    The fit runs the steps `[first, first + count)` (count None: unknown),
    driving the `groups` (`keras_clr.optimizers.Group`s). On TensorFlow and
    PyTorch a fit whose steps can be tabulated uses the model's
    `SharedControl` (traced once per model and optimizer); otherwise the
    schedules are tabulated, or evaluated, in a trace of the fit's own.
    """
    lr_schedule, momentum_schedule = schedules
    if not cycles_momentum(groups):
        momentum_schedule = None
    shared = _backend.trace_reads_variables()
    if not shared or count is None or count > TABLE_LIMIT:
        tables = [
            None if schedule is None else Tabulated(schedule, first, count)
            for schedule in (lr_schedule, momentum_schedule)
        ]
        control = StepControl(model, *tables, groups=groups, log_values=log_values)
        if not shared:  # read at trace time: one trace per fit
            control.count_offset = updates_at_zero
        else:
            with _backend.strategy_scope(model):
                control.count_offset = keras.Variable(
                    updates_at_zero,
                    trainable=False,
                    dtype="int64",
                    name="keras_clr_start",
                    aggregation="only_first_replica",
                )
        return control, tables
    capacity = max(MIN_CAPACITY, 1 << (int(count) - 1).bit_length())
    controls = _keras_internals.model_cache(model, "_keras_clr_controls")
    # A trace holds the groups' ratios and momentum attributes: those of one
    # optimizer do not change (see `keras_clr.optimizers.ratios`), and `serves`
    # asks for the same optimizer.
    key = (tuple(group.momentum for group in groups), bool(log_values))
    control = controls.get(key)
    if control is None or control.capacity < capacity or not control.serves(model):
        control = SharedControl(model, capacity, groups, log_values)
        controls[key] = control
    control.fill((lr_schedule, momentum_schedule), first, count, updates_at_zero)
    return control, control.tables
