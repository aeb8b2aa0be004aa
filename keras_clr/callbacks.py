"""`CyclicLR` and `OneCycle`: drive the learning rate and momentum during fit.

Both apply their schedules inside the compiled train step (see
`keras_clr.hooks`), so the value used by step k is exactly
`lr_schedule(k)` / `momentum_schedule(k)` with `steps_per_execution > 1`,
under mixed precision and across repeated `fit` calls, at no per-step host
cost. The step k counts the optimizer's updates since this callback's first
`fit` began at epoch 0: resuming with `fit(initial_epoch=e)` on a restored
model continues the schedule where an uninterrupted run would be.

As each `fit` begins, the values of all its steps are tabulated once (one
gather per step in the graph). The same table gives the values written to
the logs, on the host: the batch index tells the step, so the logs cost the
train step nothing and need no device read.
"""

import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import hooks
from keras_clr import schedules


class _ScheduleCallback(keras.callbacks.Callback):
    """Installs `lr_schedule` and `momentum_schedule` for each `fit`."""

    # The batch-end hook only reads host-side tables: Keras may keep running
    # batch ends in its worker thread instead of waiting for each step.
    async_safe = True

    def __init__(self, cycle_momentum, base_momentum, max_momentum):
        super().__init__()
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum, self.max_momentum = schedules._check_momenta(
            base_momentum, max_momentum)
        self._control = None
        self._start_step = None
        self._first_iteration = 0
        self._done = 0  # steps run, read at each epoch end
        self._tables = None
        self._epoch_step = 0
        self._last_step = None

    @property
    def lr_schedule(self):
        """Step -> learning rate, the values applied during `fit`."""
        return self._schedules()[0]

    @property
    def momentum_schedule(self):
        """Step -> momentum (or Adam `beta_1`); None without cycle_momentum."""
        return self._schedules()[1]

    def _schedules(self):
        raise NotImplementedError

    def _preview(self, total_steps):
        """(steps to show, lr_schedule, momentum_schedule) for a preview."""
        raise NotImplementedError

    def _prepare(self):
        """Hook for settings known only once `fit` begins."""

    def _constant_from(self):
        """The step from which the schedules hold their value, or None."""
        return None

    def on_train_begin(self, logs=None):
        name = type(self).__name__
        optimizer = hooks.base_optimizer(self.model)
        hooks.check_learning_rate(optimizer, name)
        attribute = hooks.check_momentum(optimizer, name) if self.cycle_momentum else None
        self._prepare()
        self._schedules()  # raises now if the schedule cannot be made
        self._first_iteration = hooks.iterations(optimizer)
        self._tables = None
        self._control = hooks.StepControl(self.model,
                                          momentum_attribute=attribute)
        self._control.install()

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        if self._start_step is None:
            if epoch and not steps:
                warnings.warn(
                    f"{type(self).__name__} cannot tell how many steps came "
                    f"before initial_epoch={epoch} (the data has no length); "
                    "the schedule starts at step 0.", stacklevel=2)
            self._start_step = self._first_iteration - epoch * (steps or 0)
        if self._tables is None:  # the first epoch of this fit
            self._epoch_step = self._first_iteration - self._start_step
            self._install_tables(epoch, steps)
        else:
            self._epoch_step = (hooks.iterations(hooks.base_optimizer(self.model))
                                - self._start_step)
        self._last_step = None

    def _install_tables(self, epoch, steps):
        """Tabulates the steps this fit will run and hands them to the graph."""
        first = self._epoch_step
        epochs = self.params.get("epochs") if self.params else None
        count = None
        if epochs and steps:
            # Each call runs k = steps_per_execution steps: on repeating data
            # an epoch's last call runs all k, past `steps` when k does not
            # divide it.
            k = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
            count = (epochs - epoch) * (-(-steps // k) * k)
        constant_from = self._constant_from()
        if constant_from is not None:  # the table may stop where it holds
            end = max(constant_from + 1, first + 1)
            count = end - first if count is None else min(count, end - first)
        self._tables = [None if schedule is None
                        else hooks.Tabulated(schedule, first, count)
                        for schedule in self._schedules()]
        control = self._control
        control.start_step = self._start_step
        control.learning_rate, control.momentum = self._tables

    def _log_values(self, step, logs):
        if logs is None:
            return
        rates, momenta = self._tables
        logs["learning_rate"] = rates.host(step)
        if momenta is not None:
            logs["momentum"] = momenta.host(step)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution = k, `batch` is the last of the call's k
        # steps as Keras counts them (an epoch's last call may have run fewer
        # when the data ran out; the epoch's logs read the step counter).
        step = self._epoch_step + batch
        self._log_values(step, logs)
        # On JAX and PyTorch batch ends may run in Keras's worker threads.
        self._last_step = step if self._last_step is None else max(self._last_step, step)

    def on_epoch_end(self, epoch, logs=None):
        # The steps run so far: one read of the step counter per epoch.
        self._done = hooks.iterations(hooks.base_optimizer(self.model)) - self._start_step
        if self._last_step is None:
            return
        last = self._done - 1
        if not (self.params and self.params.get("steps")):
            # Keras counts one more iteration when unknown-length data runs out.
            last = min(last, self._last_step)
        self._log_values(last, logs)

    def on_train_end(self, logs=None):
        if self._control is not None:
            self._control.remove()
            self._control = None

    def to_frame(self, total_steps=None):
        """The schedule as a DataFrame: step, learning_rate, momentum.

        Args:
            total_steps: how many steps to show (see `plot`).

        Returns:
            pandas.DataFrame with one row per step; `momentum` is NaN when the
            callback does not cycle it.
        """
        import pandas as pd

        count, lr_schedule, momentum_schedule = self._preview(total_steps)
        steps = np.arange(count)
        momentum = (momentum_schedule(steps) if momentum_schedule is not None
                    else np.full(len(steps), np.nan))
        return pd.DataFrame({"step": steps, "learning_rate": lr_schedule(steps),
                             "momentum": momentum})

    def plot(self, total_steps=None, ax=None):
        """Draws the learning rate and momentum against the step.

        Args:
            total_steps: how many steps to show.
            ax: a matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes with the learning rate (the momentum is on its twin axis).
        """
        from keras_clr import plotting

        frame = self.to_frame(total_steps)
        return plotting.plot_schedule(frame, title=type(self).__name__, ax=ax)


class CyclicLR(_ScheduleCallback):
    """Cyclical learning rate (and inverse momentum), as PyTorch's `CyclicLR`.

    The learning rate cycles between `base_lr` and `max_lr`: up over
    `step_size_up` steps, down over `step_size_down`. `mode` scales the
    height of each cycle: `"triangular"` keeps it, `"triangular2"` halves it
    every cycle, `"exp_range"` multiplies it by `gamma ** step`; a custom
    `scale_fn` (x -> factor, with `scale_mode`) replaces the mode. With
    `cycle_momentum`, the optimizer's `momentum` (SGD, RMSprop) or `beta_1`
    (Adam, AdamW, Nadam, Adamax, Lion) moves inversely between `max_momentum`
    and `base_momentum`.

    Args:
        base_lr: the lower learning rate, a positive float.
        max_lr: the upper learning rate, at least `base_lr`.
        step_size_up: steps in the rising half of a cycle.
        step_size_down: steps in the falling half; defaults to `step_size_up`.
        mode: `"triangular"`, `"triangular2"` or `"exp_range"`.
        gamma: per-step decay of `"exp_range"`, in (0, 1].
        scale_fn: custom scale function; overrides `mode`.
        scale_mode: `"cycle"` or `"iterations"`, the argument of `scale_fn`.
        cycle_momentum: cycle the momentum inversely to the learning rate.
        base_momentum: momentum at the learning rate's peak.
        max_momentum: momentum at the learning rate's bottom.

    Raises:
        ValueError: at construction for any invalid argument; when training
            begins, for an optimizer with its own learning-rate schedule or,
            with `cycle_momentum`, one with no momentum to cycle.

    Example:
        >>> clr = keras_clr.CyclicLR(1e-4, 1e-2, step_size_up=4 * len(train_ds),
        ...                          mode="triangular2")
        >>> model.fit(train_ds, epochs=24, callbacks=[clr])

    References:
        Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
        Networks. arXiv:1506.01186.
    """

    def __init__(self, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9):
        super().__init__(cycle_momentum, base_momentum, max_momentum)
        # Checked here too, so that errors name this callback's arguments.
        base_lr, max_lr, step_size_up, step_size_down = schedules._check_cyclical(
            base_lr, max_lr, step_size_up, step_size_down, scale_mode,
            names=("base_lr", "max_lr", "step_size_up"))
        _checks.one_of("mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = _checks.in_interval("gamma", gamma, 0.0, 1.0, low_open=True)
        if scale_fn is None:
            scale_fn = {"triangular": schedules.triangular_scale,
                        "triangular2": schedules.triangular2_scale,
                        "exp_range": self._exp_range_scale}[mode]
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.mode = mode
        self.scale_fn = _checks.a_callable("scale_fn", scale_fn)
        self._lr = schedules.CyclicalLearningRate(
            base_lr, max_lr, step_size_up, scale_fn, scale_mode,
            name="CyclicLR", step_size_down=step_size_down)
        self._momentum = (schedules.CyclicalMomentum(
            self.base_momentum, self.max_momentum, step_size_up, scale_fn,
            scale_mode, step_size_down) if self.cycle_momentum else None)
        self.base_lr, self.max_lr = self._lr.initial_learning_rate, self._lr.maximal_learning_rate
        self.step_size_up = self._lr.step_size
        self.step_size_down = self._lr.step_size_down or self.step_size_up
        self.scale_mode = scale_mode

    def _exp_range_scale(self, x):
        return self.gamma ** x

    def _schedules(self):
        return self._lr, self._momentum

    def _preview(self, total_steps):
        if total_steps is None:
            count = 3 * (self.step_size_up + self.step_size_down)
        else:
            count = _checks.positive_int("total_steps", total_steps)
        return (count, *self._schedules())


class OneCycle(_ScheduleCallback):
    """The one-cycle policy (and inverse momentum), as PyTorch's `OneCycleLR`.

    The learning rate warms up from `max_lr / div_factor` to `max_lr` over the
    first `pct_start` of the steps, then anneals to
    `max_lr / div_factor / final_div_factor` at the last step and holds it
    after (with a warning). With `cycle_momentum`, the momentum (or Adam
    `beta_1`) goes from `max_momentum` down to `base_momentum` and back.

    Args:
        max_lr: the peak learning rate.
        total_steps: optimizer steps in the cycle; None takes
            epochs x steps per epoch from `fit`.
        pct_start: fraction of the steps spent warming up, in (0, 1).
        anneal_strategy: `"cos"` or `"linear"`.
        div_factor: initial learning rate = max_lr / div_factor.
        final_div_factor: final learning rate = initial / final_div_factor.
        three_phase: come back down to the initial rate symmetrically before
            annealing to the final one (fastai-style three phases).
        cycle_momentum: cycle the momentum inversely to the learning rate.
        base_momentum: momentum at the learning rate's peak.
        max_momentum: momentum at the start and the end.

    Raises:
        ValueError: at construction for any invalid argument; when training
            begins, when `total_steps` is None and `fit` cannot tell the
            number of steps, for an optimizer with its own learning-rate
            schedule, or with `cycle_momentum` one with no momentum.

    Example:
        >>> model.fit(x, y, epochs=10, callbacks=[keras_clr.OneCycle(3e-3)])

    References:
        Smith, L. N., & Topin, N. (2019). Super-Convergence. arXiv:1708.07120.
    """

    def __init__(self, max_lr, total_steps=None, pct_start=0.3,
                 anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4,
                 three_phase=False, cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95):
        super().__init__(cycle_momentum, base_momentum, max_momentum)
        self.max_lr = _checks.positive_finite("max_lr", max_lr)
        if total_steps is not None:
            total_steps = _checks.positive_int("total_steps", total_steps)
        _, self.pct_start, self.div_factor, self.final_div_factor = (
            schedules._check_one_cycle(1, pct_start, anneal_strategy,
                                       div_factor, final_div_factor))
        self.total_steps = total_steps
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)
        self._fit_total_steps = None
        self._warned = False

    def _steps(self, total_steps=None):
        steps = total_steps or self.total_steps or self._fit_total_steps
        if steps is None:
            raise ValueError(
                "OneCycle does not know how many steps the cycle lasts: pass "
                "`total_steps` (or train with data of known length, so that "
                "epochs x steps per epoch can be used). Received: total_steps=None"
            )
        return _checks.positive_int("total_steps", steps)

    def _schedules(self, total_steps=None):
        steps = self._steps(total_steps)
        lr = schedules.OneCycleLearningRate(
            self.max_lr, steps, self.pct_start, self.anneal_strategy,
            self.div_factor, self.final_div_factor, self.three_phase,
            name="OneCycle")
        momentum = (schedules.OneCycleMomentum(
            steps, self.base_momentum, self.max_momentum, self.pct_start,
            self.anneal_strategy, self.three_phase) if self.cycle_momentum else None)
        return lr, momentum

    def _preview(self, total_steps):
        cycle = self.total_steps or self._fit_total_steps or total_steps
        count = self._steps(total_steps or cycle)
        return (count, *self._schedules(cycle))

    def _prepare(self):
        epochs = (self.params or {}).get("epochs")
        steps = (self.params or {}).get("steps")
        if self.total_steps is None:
            if not (epochs and steps):
                self._steps()  # raises: the length is unknown
            self._fit_total_steps = epochs * steps

    def _constant_from(self):
        return self._steps() - 1

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self._warned:
            return
        done = self._done  # read by the base class
        if done > self._steps():
            self._warned = True
            warnings.warn(
                f"OneCycle ran {done} steps, past total_steps={self._steps()}; "
                "it holds the final learning rate and momentum from there on.",
                stacklevel=2)

