"""The step accounting of one schedule `fit`: which update is schedule step k.

Step k of a `CyclicLR`, `OneCycle` or `WarmupStableDecay` schedule is the k-th update the
optimizer applied: its batch count divided by its gradient accumulation
steps, minus the update count at step 0 (`updates_at_zero`); `StepControl`
computes the same step in the graph from the optimizer's update count
(`keras_clr.train_step`). `FitSteps` is the state of one `fit`, made in
the callback's `on_train_begin` from what Keras tells of the fit and from
the callback's previous `FitSteps`; the callback's hooks call its methods
of the same names (`epoch_begin`, `batch_begin`, `batch_end`, `epoch_end`,
`end`). Its `FitValues` hold the schedules' values over the fit's steps,
for the train step and for the logs.

Where a fit sits on the schedule is decided at its first batch, after every
callback's `on_train_begin` and `on_epoch_begin` (BackupAndRestore restores
the optimizer there, in whichever order it is listed):

- the callback's first `fit`, a `fit` with `initial_epoch=e > 0` and a `fit`
  after one that ended in an exception are placed by their epoch: their first
  batch is step e x updates per epoch (as in an uninterrupted run, also when a
  backup was taken mid-epoch);
- a later `fit` from epoch 0 after a completed one, on the same model and
  optimizer, continues the schedule.

There the fit's steps are tabulated and its `StepControl` installed (see
`keras_clr.tables`); they are tabulated again if the update count leaves the
table between epochs. At each batch end the host tells the step from the
batch index; at each epoch end one read of the update count corrects for the
extra iteration Keras counts as an epoch of unknown length ends.
"""

import warnings

from keras_clr import _backend
from keras_clr import _keras_internals
from keras_clr import optimizers
from keras_clr import tables


class FitSteps:
    """What one `fit` of a schedule callback knows and has counted.

    Args:
        model: the model being fit.
        schedules: (lr_schedule, momentum_schedule or None) of the fit.
        constant_from: the step from which they hold their value, or None.
        owner: the callback's name, for messages.
        steps, epochs: Keras's `params` (steps None: the data has no length).
        accumulation: the batches per optimizer update.
        groups: the `keras_clr.optimizers.Group`s the schedules drive.
        previous: the callback's previous `FitSteps`, or None.

    Attributes:
        steps, epochs, accumulation: as given.
        current: the `EpochCount` of the epoch in progress.
        first_step, planned_steps: where the fit starts on the schedule and
            how many steps it plans (None: the data has no length), once
            placed at its first batch.
        done: the schedule steps run, counted at each epoch end.
        ended: whether the fit reached `on_train_end`.
        values: the fit's `FitValues`.
    """

    def __init__(
        self,
        model,
        schedules,
        constant_from,
        owner,
        *,
        steps,
        epochs,
        accumulation,
        groups,
        previous=None,
    ):
        self._model, self._optimizer = model, model.optimizer
        self._constant_from, self._owner = constant_from, owner
        self.steps, self.epochs, self.accumulation = steps, epochs, accumulation
        self._spe = optimizers.steps_per_execution(model)
        self._reports_first = _keras_internals.batch_end_reports_first_batch()
        self._loss_scaled = optimizers.loss_scaled(model)
        # Where the host cannot tell which step a batch end reports, the train
        # step returns the values it applied instead (an epoch's last call may
        # run fewer than spe steps, or all of them on repeating data: Keras
        # reports the same batch index).
        self._graph_logs = self._loss_scaled or (self._spe > 1 and (not steps or steps % self._spe))
        # The update count at step 0, kept from fit to fit.
        self._updates_at_zero = None if previous is None else previous._updates_at_zero
        self._continues = (
            self._updates_at_zero is not None
            and previous.ended
            and previous._model is model
            and previous._optimizer is self._optimizer
        )
        self.ended = False  # whether the fit reached on_train_end
        self.values = FitValues(model, schedules, groups, self._graph_logs)
        self.epoch_begin(0)
        self.first_step = self._first_updates = 0
        self.planned_steps = None
        self.done = 0  # schedule steps run, read at each epoch end
        self._batches_run = 0

    def epoch_begin(self, epoch):
        """Starts the count of epoch `epoch` (0-based, as Keras counts)."""
        self.current = EpochCount(epoch)

    def batch_begin(self):
        """At an epoch's first batch: places the fit (at its first), or
        tabulates again if the epoch's steps left the table.

        Returns:
            True at the fit's first batch, as the fit has just been placed
            (`first_step`, `planned_steps`).
        """
        if self.current.batches_before is not None:
            return False
        self.current.batches_before = optimizers.batch_count(optimizers.base_optimizer(self._model))
        if self.values.control is None:  # the fit's first batch
            self._place()
            return True
        # Something may have moved the update count between epochs.
        first = self._step_of(self.current.batches_before)
        count = self._count(first)
        if not self.values.covers(first, count):
            self.values.tabulate(first, count, self._updates_at_zero)
        return False

    def _step_of(self, batches):
        """The schedule step of the update of the optimizer's batch number
        `batches` (its batch count before that batch)."""
        return batches // self.accumulation - self._updates_at_zero

    def _count(self, first):
        """How many steps to tabulate from `first` for the rest of the fit,
        this epoch included: None where the data has no length."""
        k, steps, count = self.accumulation, self.steps, None
        if self.epochs and steps:
            # Each call runs spe steps: on repeating data an epoch's last call
            # runs all of them, past `steps` when spe does not divide it.
            calls = -(-steps // self._spe)
            batches = (self.epochs - self.current.epoch) * (calls * self._spe)
            count = (self.current.batches_before % k + batches - 1) // k + 1
        if self._constant_from is not None:  # the table may stop where it holds
            end = max(self._constant_from + 1, first + 1)
            count = end - first if count is None else min(count, end - first)
        return count

    def _place(self):
        """Decides the update count at step 0 (see the module docstring)."""
        epoch, steps, k = self.current.epoch, self.steps, self.accumulation
        updates = self.current.batches_before // k
        if not self._continues or epoch or updates < self._updates_at_zero:
            if epoch and not steps:
                warnings.warn(
                    f"{self._owner} cannot tell how many steps came before "
                    f"initial_epoch={epoch} (the data has no length); the "
                    "schedule starts at step 0.",
                    stacklevel=4,
                )
            self._updates_at_zero = updates - (epoch * steps // k if steps else 0)
        self.first_step = self._step_of(self.current.batches_before)
        self._first_updates = updates
        # The steps the fit will run from its first (None: the data has no
        # length), up to where the schedules hold their value.
        self.planned_steps = self._count(self.first_step)
        self.values.tabulate(self.first_step, self.planned_steps, self._updates_at_zero)

    def next_step(self, batch):
        """At `batch`'s begin: the schedule step of its update, not yet run;
        None where the host cannot tell it mid-epoch (updates a loss scale
        may skip, on JAX, where the update count is read at epoch starts)."""
        if not self._loss_scaled:
            return self._step_of(self.current.batches_before + batch)
        if batch and _backend.name() == "jax":
            return None
        return optimizers.iterations(optimizers.base_optimizer(self._model)) - self._updates_at_zero

    def reschedule(self, schedules, constant_from, first):
        """Replaces the schedules from step `first` on, mid-fit: the steps
        before it must keep their values (some may still be logged)."""
        self.values.schedules = schedules
        self._constant_from = constant_from
        self.values.tabulate(first, self._count(first), self._updates_at_zero)

    def batch_end(self, batch, logs):
        """Counts the end of `batch` and writes its step's values to `logs`.

        With steps_per_execution = k, `batch` is the last of the call's k
        steps as Keras counts them (Keras before its epoch iterator reported
        the call's first: moved to the last here).
        """
        if self._spe > 1 and self._reports_first:
            batch += self._spe - 1
        current = self.current
        current.batch_ends += 1
        current.max_batch = max(current.max_batch, batch)
        step = self._step_of(current.batches_before + batch)
        # On JAX and PyTorch batch ends may run in Keras's worker threads.
        current.last_step = step if current.last_step is None else max(current.last_step, step)
        if not self._graph_logs:
            self.values.log(step, logs)

    def epoch_end(self, logs):
        """Counts the steps run so far (one read of the update count per
        epoch) and writes the epoch's last step's values to `logs`."""
        if self.current.batches_before is None:  # no batch ran
            return
        batches = optimizers.batch_count(optimizers.base_optimizer(self._model))
        if not self.steps and self._spe == 1:
            # On data of unknown length Keras counts one more iteration as the
            # data runs out, without an update: the schedule does not.
            extra = batches - self.current.batches_before - self.current.batch_ends
            if extra > 0:
                if self.values.control.shift(extra):
                    self._updates_at_zero += extra
                else:
                    warnings.warn(
                        f"{self._owner}: Keras counted {extra} more update(s) "
                        "than batches ran this epoch; on this backend the "
                        "schedule cannot skip them, so the values from here on "
                        f"are those {extra} step(s) later.",
                        stacklevel=3,
                    )
        self.done = self._step_of(batches)
        # Keras's batch index: past `steps` in a short last call.
        ran = self.current.max_batch + 1
        self._batches_run += min(ran, self.steps) if self.steps else ran
        if self._graph_logs:
            return
        last = self.done - 1
        if not self.steps:
            last = min(last, self.current.last_step)
        self.values.log(last, logs)

    def end(self):
        """Removes the control; warns of updates the loss scale skipped."""
        ended, self.ended = self.ended, True
        if ended or self.values.control is None:
            return
        self.values.control.remove()
        if not self._loss_scaled:
            return
        applied = (
            optimizers.iterations(optimizers.base_optimizer(self._model)) - self._first_updates
        )
        skipped = self._batches_run // self.accumulation - applied
        if skipped > 0:
            warnings.warn(
                f"The loss scale skipped {skipped} of this fit's updates "
                "(gradients overflowed float16). keras_clr counts the updates "
                f"applied, so {self._owner} ended at step "
                f"{self.first_step + applied} of its schedule, not "
                f"{self.first_step + applied + skipped}.",
                stacklevel=3,
            )


class FitValues:
    """The schedules' values over the steps of one fit.

    Holds the tables (`keras_clr.tables`) that the train step gathers from
    and the logs read on the host, and the `StepControl` that applies them
    while the fit runs.

    Args:
        model: the model being fit.
        schedules: (lr_schedule, momentum_schedule or None).
        groups: the `keras_clr.optimizers.Group`s the schedules drive.
        log_values: whether the train step returns the values it applied.
    """

    def __init__(self, model, schedules, groups, log_values):
        self.model, self.schedules = model, schedules
        self.groups, self.log_values = groups, log_values
        self.control = self.tables = None  # made as the fit is placed

    def covers(self, first, count):
        """Whether the tables serve the steps `[first, first + count)`
        (count None: to the end): they hold them, or evaluate the schedules."""
        return self.tables[0].covers(first, count)

    def tabulate(self, first, count, updates_at_zero):
        """Tabulates the steps `[first, first + count)` (count None: unknown),
        step 0 at the update count `updates_at_zero`, and installs their control."""
        control, self.tables = tables.schedule_control(
            self.model,
            self.schedules,
            first,
            count,
            updates_at_zero=updates_at_zero,
            groups=self.groups,
            log_values=self.log_values,
        )
        if control is not self.control:
            if self.control is not None:
                self.control.remove()
            self.control = control
            control.install()

    def log(self, step, logs):
        """Writes the values of `step` to `logs`, read on the host: for a
        MultiOptimizer each group's too (`learning_rate_{name}`, and
        `momentum_{name}` for each group whose momentum is cycled)."""
        if logs is None:
            return
        rates, momenta = self.tables
        logs.update(optimizers.log_rates(self.groups, rates.host(step)))
        if momenta is not None:
            momentum = logs["momentum"] = momenta.host(step)
            for group in self.groups:
                if group.name is not None and group.momentum is not None:
                    logs[f"momentum_{group.name}"] = momentum


class EpochCount:
    """The counts of the epoch in progress of one `fit`.

    Attributes:
        epoch: the epoch (0-based, as Keras counts).
        batches_before: the optimizer's batch count as the epoch's first
            batch begins (read then); None until it does.
        batch_ends: the batch ends seen.
        max_batch: the largest batch index a batch end reported (-1: none).
        last_step: the largest schedule step a batch end reported, or None.
    """

    def __init__(self, epoch):
        self.epoch = epoch
        self.batches_before = None
        self.batch_ends = 0
        self.max_batch = -1
        self.last_step = None
