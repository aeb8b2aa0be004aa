"""`CyclicLR`, `OneCycle` and `WarmupStableDecay`: drive the learning rate and
momentum during fit.

All apply their schedules inside the compiled train step (see
`keras_clr.train_step`), so the value used by step k is exactly
`lr_schedule(k)` / `momentum_schedule(k)` at no per-step host cost. The step
k is the k-th update the optimizer really applied: under gradient
accumulation every micro-batch of one update sees its step's values, an
update a LossScaleOptimizer skips does not advance it, and neither does the
extra iteration Keras counts as an epoch of unknown length ends.

As each `fit` reaches its first batch (`keras_clr.fit_steps` counts the
steps of each fit and places it on the schedule), the values of all its steps
are tabulated once into variables that one trace of the train step per model
reads (one gather per step in the graph). The same table gives the values
written to the logs, on the host: the batch index tells the step, so the logs
cost the train step nothing and need no device read. Where the host cannot
tell the step of a batch end (updates the loss scale may skip; several steps
per call on data of unknown length) the train step returns its values.

A Keras 3.15 `MultiOptimizer` (a sub-optimizer per group of variables) is
driven group by group: each group's learning rate is the schedule's times
the group's compiled learning rate over the largest of them (read once,
before the first step: `keras_clr.optimizers.ratios`), so the group compiled
highest follows the schedule and the others keep their fraction of it, as
fastai's `slice(lo, hi)` does; each group's own momentum-like parameter is
cycled (the rules per optimizer apply per group). The logs carry
`learning_rate` (the schedule's) and, per group, `learning_rate_{name}` and
`momentum_{name}`, named as Keras's own learning-rate callbacks name them.
"""

import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import _keras_internals
from keras_clr import curves
from keras_clr import fit_steps
from keras_clr import optimizers
from keras_clr import schedules

# CyclicLR warns of a fit that ends before its first peak with the learning
# rate below this fraction of the way from base_lr to that peak.
_REACHED = 0.9

# Keras callbacks that set the learning rate themselves.
_LR_SETTERS = ("ReduceLROnPlateau", "LearningRateScheduler")


def check_conflicts(callback, others):
    """ValueError if another callback of the same `fit` sets the learning
    rate: a keras_clr callback (`sets_learning_rate` True), or one of Keras's."""
    name = type(callback).__name__
    for other in others:
        kind = type(other).__name__
        if getattr(other, "sets_learning_rate", False) is True:
            raise ValueError(
                f"{name} and {kind} were both passed to this fit, and each sets "
                "the learning rate at every step: the values one logs would not "
                "be the values applied. Pass one of them per fit (run "
                "keras_clr.find_lr before the fit that uses its suggestion). "
                f"Received: callbacks=[..., {name}, {kind}, ...]"
            )
        if any(isinstance(other, getattr(keras.callbacks, setter, ())) for setter in _LR_SETTERS):
            raise ValueError(
                f"{kind} cannot change the learning rate while {name} sets it at "
                f"every step: its changes would be overwritten at the next step "
                f"(it would report reductions that never apply). Remove the "
                f"{kind}, or drop {name} and let {kind} drive the rate. "
                f"Received: callbacks=[..., {name}, {kind}, ...]"
            )


class _ScheduleCallback(keras.callbacks.Callback):
    """Installs `lr_schedule` and `momentum_schedule` for each `fit`.

    Each `fit` is counted by a `keras_clr.fit_steps.FitSteps`, made from the
    one before it: the callback's first `fit`, one with `initial_epoch > 0`
    and one after a `fit` that ended in an exception are placed by their
    epoch; a later `fit` from epoch 0 after a completed one continues the
    schedule.

    A copy (`copy.deepcopy`, `pickle`), as Keras Tuner makes before each
    trial, is a new callback with the same arguments: it holds none of the
    fits the original ran, and its first `fit` starts the schedule at step 0.
    """

    # The batch-end hook only reads host-side tables: Keras may keep running
    # batch ends in its worker thread instead of waiting for each step.
    async_safe = True
    # It sets the learning rate at every step: `check_conflicts` refuses a
    # second callback that does (this one, or an LRFinder) in the same fit.
    sets_learning_rate = True

    def __init__(self, cycle_momentum, base_momentum, max_momentum):
        super().__init__()
        self.cycle_momentum = _checks.a_bool("cycle_momentum", cycle_momentum, also=("auto",))
        self.base_momentum, self.max_momentum = schedules.check_momenta(base_momentum, max_momentum)
        self.__dict__.update(self._fresh_state())

    def _fresh_state(self):
        """The attributes that fits set, as a new callback has them: Keras's,
        and the FitSteps of the fit in progress (or of the last one)."""
        return {**_keras_internals.unset_callback_fit(), "_fit": None}

    def __getstate__(self):
        # A copy (copy.deepcopy, pickle) is the callback as constructed: its
        # arguments and schedules, none of the fits it ran (their model,
        # variables and compiled step). Keras Tuner copies the callbacks
        # before each trial; only the original continues its schedule.
        return {**self.__dict__, **self._fresh_state()}

    @property
    def lr_schedule(self):
        """Step -> learning rate, the values applied during `fit`.

        Returns:
            A `keras.optimizers.schedules.LearningRateSchedule` of
            `keras_clr.schedules` (`CyclicalLearningRate`,
            `OneCycleLearningRate` or `WarmupStableDecayLearningRate`):
            called with a step (0 the callback's first update), the rate of
            that step.

        Raises:
            ValueError: for a `OneCycle` built without `total_steps` before
                its first `fit` sized it.

        Example:
            >>> clr = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=4)
            >>> [round(clr.lr_schedule(step), 5) for step in (0, 2, 4, 8)]
            [0.001, 0.0055, 0.01, 0.001]
        """
        return self._schedules()[0]

    @property
    def momentum_schedule(self):
        """Step -> momentum (or Adam `beta_1`); None without cycle_momentum.

        Returns:
            The schedule of `keras_clr.schedules` that sets the optimizer's
            `momentum` (or `beta_1`) at each step, or None when
            `cycle_momentum` is False.

        Raises:
            ValueError: for a `OneCycle` built without `total_steps` before
                its first `fit` sized it.

        Example:
            >>> one_cycle = keras_clr.OneCycle(0.1, total_steps=100)
            >>> [round(one_cycle.momentum_schedule(step), 3) for step in (0, 29, 99)]
            [0.95, 0.85, 0.95]
        """
        return self._schedules()[1]

    def _schedules(self):
        raise NotImplementedError

    def _preview(self, total_steps):
        """(steps to show, lr_schedule, momentum_schedule) for a preview."""
        raise NotImplementedError

    def _prepare(self, epochs, steps, accumulation):
        """Hook for settings known only once `fit` begins: Keras's `epochs`
        and `steps` per epoch, and the batches per update."""

    def _constant_from(self):
        """The step from which the schedules hold their value, or None."""
        return None

    # -- the fit -------------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        optimizers.remember_ratios(model)

    def on_train_begin(self, logs=None):
        name = type(self).__name__
        optimizer = optimizers.base_optimizer(self.model)
        optimizers.know_groups(self.model)
        groups = optimizers.schedule_groups(optimizer, name, self.cycle_momentum)
        callbacks = _keras_internals.callback_list(self)
        if callbacks is not None:
            check_conflicts(self, [c for c in callbacks.callbacks if c is not self])
            # First, so that the logs every other callback reads (History,
            # CSVLogger, TensorBoard) carry the values, in any order.
            optimizers.move_first(callbacks, self)
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        accumulation = optimizers.accumulation_steps(optimizer)
        if accumulation > 1 and not steps:
            raise ValueError(
                f"{name} cannot follow gradient accumulation on data of unknown "
                "length: Keras counts an extra batch as each such epoch ends, "
                "which shifts the accumulation. Pass `steps_per_epoch` to fit "
                "(or give the data a length). Received: "
                f"gradient_accumulation_steps={accumulation}, steps=None"
            )
        self._prepare(epochs, steps, accumulation)
        self._fit = fit_steps.FitSteps(
            self.model,
            self._schedules(),
            self._constant_from(),
            name,
            steps=steps,
            epochs=epochs,
            accumulation=accumulation,
            groups=groups,
            previous=self._fit,
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._fit.epoch_begin(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._fit.batch_begin():
            self._placed()

    def _placed(self):
        """Hook run as each fit is placed on the schedule, before its first
        step (`self._fit.first_step`, `self._fit.planned_steps`)."""

    def on_train_batch_end(self, batch, logs=None):
        self._fit.batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._fit.epoch_end(logs)

    def on_train_end(self, logs=None):
        if self._fit is not None:
            self._fit.end()

    def to_frame(self, total_steps=None):
        """The schedule as a DataFrame: step, learning_rate, momentum.

        The values are those `fit` applies at each step, from step 0.

        Args:
            total_steps: how many steps to show. None: three cycles for
                `CyclicLR`; the cycle for `OneCycle`; the planned run for
                `WarmupStableDecay`. A `OneCycle` built without
                `total_steps` and not yet sized by a `fit` also takes it as
                the cycle's length; an open-ended `WarmupStableDecay` needs it.

        Returns:
            pandas.DataFrame with one row per step; `momentum` is NaN when the
            callback does not cycle it.

        Raises:
            ValueError: for a `total_steps` that is not a positive integer,
                or None where the callback cannot tell how many steps to show.

        Example:
            >>> clr = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=2)
            >>> frame = clr.to_frame(total_steps=5)
            >>> frame.columns.tolist()
            ['step', 'learning_rate', 'momentum']
            >>> frame["learning_rate"].round(4).tolist()
            [0.001, 0.0055, 0.01, 0.0055, 0.001]
            >>> frame["momentum"].round(3).tolist()
            [0.9, 0.85, 0.8, 0.85, 0.9]
        """
        import pandas as pd

        count, lr_schedule, momentum_schedule = self._preview(total_steps)
        steps = np.arange(count)
        momentum = (
            momentum_schedule(steps)
            if momentum_schedule is not None
            else np.full(len(steps), np.nan)
        )
        return pd.DataFrame(
            {"step": steps, "learning_rate": lr_schedule(steps), "momentum": momentum}
        )

    def plot(self, total_steps=None, ax=None):
        """Draws the learning rate and momentum against the step.

        Never calls `plt.show()`.

        Args:
            total_steps: how many steps to show, as for `to_frame`.
            ax: a matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes with the learning rate (the momentum is on its twin
            axis), titled with the callback's class name.

        Raises:
            ValueError: as `to_frame`.

        Example:
            >>> import matplotlib.pyplot as plt
            >>> ax = keras_clr.OneCycle(0.1, total_steps=100).plot()
            >>> ax.get_title(), ax.get_xlabel()
            ('OneCycle', 'step')
            >>> plt.close(ax.figure)
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
        scale_mode: `"cycle"` or `"iterations"`, the argument of `scale_fn`
            (the 1-based cycle or the 0-based step); used with a `scale_fn`
            only: without one, `mode` sets it (`"iterations"` for
            `"exp_range"`, else `"cycle"`).
        cycle_momentum: cycle the momentum inversely to the learning rate:
            `"auto"` (the default) cycles it on every optimizer whose
            `momentum` / `beta_1` is a momentum and leaves ScheduleFreeAdamW's
            `beta_1` (its iterate averaging) alone; True insists (a
            ScheduleFreeAdamW then raises); False never cycles it.
        base_momentum: momentum at the learning rate's peak.
        max_momentum: momentum at the learning rate's bottom.

    Raises:
        ValueError: at construction for any invalid argument; when training
            begins, for an optimizer (or a MultiOptimizer's group) whose
            learning rate cannot be set, such as one with its own schedule;
            with `cycle_momentum`, one with no momentum to cycle (or built
            with a momentum of 0); another callback of the same `fit` that
            sets the learning rate (an `LRFinder`, another
            keras_clr schedule, `ReduceLROnPlateau`,
            `LearningRateScheduler`); or gradient accumulation on data of
            unknown length.

    A `MultiOptimizer`'s groups each get the schedule's rate times their
    compiled rate over the largest (see the module docstring).

    A `fit` of known length that ends before the first peak (step
    `step_size_up`) with the learning rate below 90% of the way there warns,
    once per callback, before its first step.

    The logs (and so `History`, `CSVLogger`, TensorBoard) carry
    `learning_rate` and, when cycled, `momentum`: at each batch end the
    values of that batch's step, at each epoch end those of the epoch's
    last step.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> clr = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=4, mode="triangular2")
        >>> history = model.fit(x, y, batch_size=16, epochs=4, callbacks=[clr],
        ...                     verbose=0)
        >>> # each epoch's last step: steps 3, 7, 11 and 15
        >>> [round(lr, 5) for lr in history.history["learning_rate"]]
        [0.00775, 0.00325, 0.00438, 0.00213]
        >>> [round(m, 4) for m in history.history["momentum"]]
        [0.825, 0.875, 0.8625, 0.8875]

        A later `fit` with the same callback continues the schedule:

        >>> history = model.fit(x, y, batch_size=16, epochs=1, callbacks=[clr],
        ...                     verbose=0)
        >>> lr = history.history["learning_rate"][0]  # step 19's
        >>> round(lr, 5) == round(clr.lr_schedule(19), 5)
        True

    References:
        Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
        Networks. arXiv:1506.01186.
    """

    def __init__(
        self,
        base_lr,
        max_lr,
        step_size_up=2000,
        step_size_down=None,
        mode="triangular",
        gamma=1.0,
        scale_fn=None,
        scale_mode="cycle",
        cycle_momentum="auto",
        base_momentum=curves.CYCLIC_BASE_MOMENTUM,
        max_momentum=curves.CYCLIC_MAX_MOMENTUM,
    ):
        super().__init__(cycle_momentum, base_momentum, max_momentum)
        # Checked here too, so that errors name this callback's arguments.
        base_lr, max_lr, step_size_up, step_size_down = schedules.check_cyclical(
            base_lr,
            max_lr,
            step_size_up,
            step_size_down,
            scale_mode,
            names=("base_lr", "max_lr", "step_size_up"),
        )
        _checks.one_of("mode", mode, ("triangular", "triangular2", "exp_range"))
        self.gamma = _checks.in_interval("gamma", gamma, 0.0, 1.0, low_open=True)
        if scale_fn is None:
            # Registered scale functions: a model compiled with `lr_schedule`
            # (or `momentum_schedule`) saves and loads in safe mode.
            scale_fn = {
                "triangular": schedules.triangular_scale,
                "triangular2": schedules.triangular2_scale,
                "exp_range": schedules.ExponentialScale(self.gamma),
            }[mode]
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.mode = mode
        self.scale_fn = _checks.a_callable("scale_fn", scale_fn)
        self._lr = schedules.CyclicalLearningRate(
            base_lr,
            max_lr,
            step_size_up,
            scale_fn,
            scale_mode,
            name="CyclicLR",
            step_size_down=step_size_down,
        )
        self._momentum = (
            schedules.CyclicalMomentum(
                self.base_momentum,
                self.max_momentum,
                step_size_up,
                scale_fn,
                scale_mode,
                step_size_down,
            )
            if self.cycle_momentum
            else None
        )
        self.base_lr, self.max_lr = self._lr.initial_learning_rate, self._lr.maximal_learning_rate
        self.step_size_up = self._lr.step_size
        self.step_size_down = self._lr.step_size_down or self.step_size_up
        self.scale_mode = scale_mode

    def _fresh_state(self):
        # Whether the warning that a fit cannot reach max_lr was given.
        return {**super()._fresh_state(), "_warned": False}

    def _schedules(self):
        return self._lr, self._momentum

    def _placed(self):
        fit = self._fit
        if self._warned or fit.planned_steps is None:
            return
        end = fit.first_step + fit.planned_steps  # the step after the fit's last
        if end > self.step_size_up:  # the first peak is step step_size_up
            return
        reached = float(np.max(self._lr(np.arange(fit.first_step, end))))
        peak = self._lr(self.step_size_up)
        if reached - self.base_lr >= _REACHED * (peak - self.base_lr):
            return
        self._warned = True
        epoch = max(1, fit.steps // fit.accumulation)
        warnings.warn(
            f"CyclicLR will not reach max_lr={self.max_lr:g} in this fit: the "
            f"learning rate rises for step_size_up={self.step_size_up} steps, "
            f"but the fit plans {fit.planned_steps} steps (schedule steps "
            f"{fit.first_step} to {end - 1}), so it peaks at {reached:.3g}. "
            "Pass a step_size_up the fit reaches: 2 to 10 epochs' steps "
            f"({2 * epoch} to {10 * epoch} here) over several cycles, as "
            "Smith (2017) suggests, or at most half the fit "
            f"({max(1, fit.planned_steps // 2)}) for one cycle; or train for "
            "more epochs. A later fit with this callback continues the "
            "schedule from where this one ends.",
            stacklevel=3,
        )

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
        total_steps: optimizer updates in the cycle; None takes
            epochs x steps per epoch (/ `gradient_accumulation_steps`) from
            the callback's first `fit`, and keeps it for later ones.
        pct_start: fraction of the steps spent warming up, in (0, 1).
        anneal_strategy: `"cos"` or `"linear"`.
        div_factor: initial learning rate = max_lr / div_factor.
        final_div_factor: final learning rate = initial / final_div_factor.
        three_phase: come back down to the initial rate symmetrically before
            annealing to the final one (fastai-style three phases).
        cycle_momentum: cycle the momentum inversely to the learning rate;
            `"auto"`, True or False, as for `CyclicLR`.
        base_momentum: momentum at the learning rate's peak.
        max_momentum: momentum at the start and the end.

    Raises:
        ValueError: at construction for any invalid argument; when training
            begins, when `total_steps` is None and `fit` cannot tell the
            number of steps, for an optimizer (or a MultiOptimizer's group)
            whose learning rate cannot be set, such as one with its own
            schedule; with `cycle_momentum`, one with no momentum to cycle
            (or built with a momentum of 0); another callback of the same
            `fit` that sets the learning rate (an `LRFinder`, another
            keras_clr schedule, `ReduceLROnPlateau`,
            `LearningRateScheduler`); or gradient accumulation on data of
            unknown length.

    A `MultiOptimizer`'s groups each get the schedule's rate times their
    compiled rate over the largest (see the module docstring): compiled at
    1e-4 and 1e-3, `OneCycle(1e-3)` peaks at 1e-4 and 1e-3.

    A later `fit` from epoch 0 with the same callback continues its cycle
    (warning when it plans a different length); past `total_steps` the
    final values hold.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> one_cycle = keras_clr.OneCycle(0.05)
        >>> history = model.fit(x, y, batch_size=16, epochs=3, callbacks=[one_cycle],
        ...                     verbose=0)
        >>> one_cycle.lr_schedule.total_steps  # sized by the fit: 3 epochs x 4 steps
        12
        >>> [f"{lr:.2g}" for lr in history.history["learning_rate"]]  # steps 3, 7, 11
        ['0.05', '0.023', '2e-07']
        >>> history.history["loss"][-1] < history.history["loss"][0]
        True

    References:
        Smith, L. N., & Topin, N. (2019). Super-Convergence. arXiv:1708.07120.
    """

    def __init__(
        self,
        max_lr,
        total_steps=None,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
        cycle_momentum="auto",
        base_momentum=curves.BASE_MOMENTUM,
        max_momentum=curves.MAX_MOMENTUM,
    ):
        super().__init__(cycle_momentum, base_momentum, max_momentum)
        self.max_lr = _checks.positive_finite("max_lr", max_lr)
        if total_steps is not None:
            total_steps = _checks.positive_int("total_steps", total_steps)
        _, self.pct_start, self.div_factor, self.final_div_factor = schedules.check_one_cycle(
            1, pct_start, anneal_strategy, div_factor, final_div_factor
        )
        self.total_steps = total_steps
        self.anneal_strategy = anneal_strategy
        self.three_phase = _checks.a_bool("three_phase", three_phase)

    def _fresh_state(self):
        # The cycle's length sized by the first fit, and its warning given.
        return {**super()._fresh_state(), "_fit_total_steps": None, "_warned": False}

    def _steps(self, total_steps=None):
        steps = total_steps or self.total_steps or self._fit_total_steps
        if steps is None:
            raise ValueError(
                "OneCycle does not know how many steps the cycle lasts: pass "
                "`total_steps`, or give `fit` data of known length or a "
                "`steps_per_epoch`, so that epochs x steps per epoch can be used "
                "(a dataset of unknown cardinality, or one Keras shards between "
                "processes, has none). Received: total_steps=None"
            )
        return _checks.positive_int("total_steps", steps)

    def _schedules(self, total_steps=None):
        steps = self._steps(total_steps)
        lr = schedules.OneCycleLearningRate(
            self.max_lr,
            steps,
            self.pct_start,
            self.anneal_strategy,
            self.div_factor,
            self.final_div_factor,
            self.three_phase,
            name="OneCycle",
        )
        momentum = (
            schedules.OneCycleMomentum(
                steps,
                self.base_momentum,
                self.max_momentum,
                self.pct_start,
                self.anneal_strategy,
                self.three_phase,
            )
            if self.cycle_momentum
            else None
        )
        return lr, momentum

    def _preview(self, total_steps):
        cycle = self.total_steps or self._fit_total_steps or total_steps
        count = self._steps(total_steps or cycle)
        return (count, *self._schedules(cycle))

    def _prepare(self, epochs, steps, accumulation):
        if self.total_steps is not None:
            return
        planned = (
            optimizers.planned_updates(epochs, steps, accumulation) if epochs and steps else None
        )
        if self._fit_total_steps is None:
            if planned is None:
                self._steps()  # raises: the length is unknown
            self._fit_total_steps = planned
        elif planned is not None and planned != self._fit_total_steps:
            warnings.warn(
                f"OneCycle keeps the {self._fit_total_steps}-step cycle its "
                f"first fit sized; this fit plans {planned} steps "
                f"(epochs x steps per epoch"
                f"{' / gradient_accumulation_steps' if accumulation > 1 else ''}) "
                "and continues that cycle. To train a new cycle sized from "
                "this fit, pass a new OneCycle (or set `total_steps`).",
                stacklevel=3,
            )

    def _constant_from(self):
        return self._steps() - 1

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self._warned:
            return
        done = self._fit.done  # counted at the epoch's end
        if done > self._steps():
            self._warned = True
            warnings.warn(
                f"OneCycle ran {done} steps, past total_steps={self._steps()}; "
                "it holds the final learning rate and momentum from there on.",
                stacklevel=2,
            )


class WarmupStableDecay(_ScheduleCallback):
    """Warmup-stable-decay: warm up, hold the peak, cool down when planned or told.

    The learning rate warms up from `min_lr_ratio * max_lr` to `max_lr` over
    `warmup_steps` steps, holds `max_lr`, and cools down over `decay_steps`
    steps to `min_lr_ratio * max_lr`, reached at step `total_steps` and held.
    Step k's rate is `max_lr` times transformers' `get_wsd_schedule`
    multiplier at step k, whose argument names these are (without `num_`),
    so migrating is a rename. With `cycle_momentum`, the momentum (or Adam
    `beta_1`) moves inversely with the same shapes: `max_momentum` down to
    `base_momentum` during the warm-up, `base_momentum` at the peak, back up
    to `max_momentum` during the cooldown.

    With neither `total_steps` nor `stable_steps`, the run is open-ended: the
    rate holds `max_lr` until `start_cooldown` is called. A planned run can
    be lengthened with `extend`, which moves the cooldown later; the values
    of the steps already run never change, so there is no jump.

    Args:
        max_lr: the peak learning rate.
        warmup_steps: optimizer updates of the warm-up, an integer >= 0.
        decay_steps: updates of the cooldown, an integer >= 0, or a float in
            (0, 1): that fraction of the whole run (of `total_steps`; for a
            cooldown started at step t, of the t + cooldown steps). The
            default, 0.2, follows Hägele et al. (2024).
        total_steps: warm-up + stable + cooldown updates; None with
            `stable_steps` None: open-ended.
        stable_steps: updates at the peak (instead of `total_steps`).
        warmup_type: `"linear"`, `"cosine"` or `"1-sqrt"`.
        decay_type: `"1-sqrt"` (the default), `"linear"` or `"cosine"`.
        min_lr_ratio: the floor, and the warm-up's start, as a fraction of
            `max_lr`, in [0, 1].
        cycle_momentum: cycle the momentum inversely to the learning rate;
            `"auto"`, True or False, as for `CyclicLR`.
        base_momentum: momentum at the peak.
        max_momentum: momentum at the start and after the cooldown.

    Raises:
        ValueError: at construction for any invalid argument (and the
            schedule's: see `keras_clr.schedules.WarmupStableDecayLearningRate`);
            when training begins, for an optimizer (or a MultiOptimizer's
            group) whose learning rate cannot be set, such as one with its
            own schedule; with `cycle_momentum`, one with no momentum to
            cycle (or built with a momentum of 0); another callback of the
            same `fit` that sets the learning rate (an `LRFinder`, another
            keras_clr schedule, `ReduceLROnPlateau`,
            `LearningRateScheduler`); or gradient accumulation on data of
            unknown length.

    A `MultiOptimizer`'s groups each get the schedule's rate times their
    compiled rate over the largest (see the module docstring).

    A planned run resumes from `BackupAndRestore` or `initial_epoch` as the
    other schedules do. A cooldown started on demand lives in the callback:
    to resume such a run in a new process, construct the callback with
    `stable_steps=decay_start - warmup_steps` and
    `decay_steps=cooldown_steps` (the attributes of the first one).

    Example:
        An open-ended run, cooled down when another callback decides (here
        after the second epoch; a plateau detector would decide the same way):

        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> wsd = keras_clr.WarmupStableDecay(0.01, warmup_steps=4, decay_steps=4,
        ...                                  decay_type="linear")
        >>> def on_epoch_end(epoch, logs):
        ...     if epoch == 1:
        ...         wsd.start_cooldown()
        >>> cooldown = keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)
        >>> history = model.fit(x, y, batch_size=16, epochs=4,
        ...                     callbacks=[wsd, cooldown], verbose=0)
        >>> wsd.decay_start, wsd.cooldown_steps
        (8, 4)
        >>> [round(lr, 4) for lr in history.history["learning_rate"]]  # steps 3 to 15
        [0.0075, 0.01, 0.0025, 0.0]

    References:
        Hu, S., et al. (2024). MiniCPM. arXiv:2404.06395.
        Hägele, A., et al. (2024). Scaling Laws and Compute-Optimal Training
        Beyond Fixed Training Durations. arXiv:2405.18392.
    """

    def __init__(
        self,
        max_lr,
        warmup_steps=0,
        decay_steps=0.2,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        min_lr_ratio=0.0,
        cycle_momentum="auto",
        base_momentum=curves.BASE_MOMENTUM,
        max_momentum=curves.MAX_MOMENTUM,
    ):
        super().__init__(cycle_momentum, base_momentum, max_momentum)
        self.max_lr = _checks.positive_finite("max_lr", max_lr)
        self.warmup_steps, decay_start, decay = schedules.wsd_plan(
            warmup_steps, decay_steps, total_steps, stable_steps
        )
        self.decay_steps = _checks.steps_or_fraction("decay_steps", decay_steps)
        self.total_steps, self.stable_steps = total_steps, stable_steps
        self.warmup_type = _checks.one_of("warmup_type", warmup_type, schedules.WARMUP_TYPES)
        self.decay_type = _checks.one_of("decay_type", decay_type, schedules.DECAY_TYPES)
        self.min_lr_ratio = _checks.in_interval("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
        self._planned = self._plan = (decay_start, decay)

    def _fresh_state(self):
        # The plan, (cooldown's first step or None, its steps), as constructed,
        # and a change asked for during a fit, applied before its next step.
        return {
            **super()._fresh_state(),
            "_plan": getattr(self, "_planned", None),
            "_request": None,
        }

    @property
    def decay_start(self):
        """The cooldown's first step; None while the run is open-ended."""
        return self._plan[0]

    @property
    def cooldown_steps(self):
        """The cooldown's steps, once planned (None while open-ended)."""
        return None if self._plan[0] is None else self._plan[1]

    def _schedules(self):
        decay_start, decay = self._plan
        phases = dict(
            warmup_steps=self.warmup_steps,
            warmup_type=self.warmup_type,
            decay_type=self.decay_type,
            decay_steps=decay,
            stable_steps=None if decay_start is None else decay_start - self.warmup_steps,
        )
        lr = schedules.WarmupStableDecayLearningRate(
            self.max_lr, **phases, min_lr_ratio=self.min_lr_ratio, name="WarmupStableDecay"
        )
        momentum = (
            schedules.WarmupStableDecayMomentum(
                **phases, base_momentum=self.base_momentum, max_momentum=self.max_momentum
            )
            if self.cycle_momentum
            else None
        )
        return lr, momentum

    def _constant_from(self):
        decay_start, decay = self._plan
        return self.warmup_steps if decay_start is None else decay_start + decay

    def _preview(self, total_steps):
        decay_start, decay = self._plan
        if total_steps is not None:
            count = _checks.positive_int("total_steps", total_steps)
        elif decay_start is None:
            raise ValueError(
                "WarmupStableDecay is open-ended (no cooldown planned yet): pass "
                "`total_steps` to say how many steps to show. Received: "
                "total_steps=None"
            )
        else:
            count = decay_start + decay
        return (count, *self._schedules())

    # -- changes of plan -------------------------------------------------------

    def start_cooldown(self, at="next_step", decay_steps=None):
        """Starts the cooldown: at the next step, or after the epoch in progress.

        Called during a `fit` (from another callback, or another thread),
        the cooldown begins with the first update whose batch starts after
        the call (`"next_step"`), or with the first update after the epoch
        in progress ends (`"epoch_end"`); called between fits, with the step
        the last fit ended at. One asked for during the warm-up begins as
        the warm-up ends; a cooldown already running goes on unchanged.

        A fraction `decay_steps` f, for a cooldown that starts at step t,
        gives `max(1, round(f * t / (1 - f)))` steps: f of the whole run.

        Args:
            at: `"next_step"` or `"epoch_end"`.
            decay_steps: the cooldown's steps (an integer >= 0) or a fraction
                in (0, 1) of the whole run; None: the constructor's.

        Raises:
            ValueError: for an invalid argument.

        Example:
            >>> wsd = keras_clr.WarmupStableDecay(1e-3, warmup_steps=10)
            >>> print(wsd.decay_start)  # open-ended
            None
            >>> wsd.start_cooldown(decay_steps=20)  # no fit yet: as the warm-up ends
            >>> wsd.decay_start, wsd.cooldown_steps
            (10, 20)
        """
        _checks.one_of("at", at, ("next_step", "epoch_end"))
        if decay_steps is not None:
            decay_steps = _checks.steps_or_fraction("decay_steps", decay_steps)
        self._ask(("cooldown", at, decay_steps))

    def extend(self, total_steps, decay_steps=None):
        """Lengthens (or plans) the run: the cooldown moves to its new end.

        The schedule becomes the one a `WarmupStableDecay` constructed with
        this `total_steps` has, from the next step on: the steps already run
        keep their values, so this is allowed only before the cooldown
        begins, and the result is the run planned at the new length from
        the start.

        Called during a `fit`, the new plan applies before the next step;
        if by then the cooldown has begun, it warns and keeps the plan.

        Args:
            total_steps: the run's new length in updates.
            decay_steps: the cooldown's steps or fraction; None: the
                constructor's.

        Raises:
            ValueError: for an invalid argument (as the constructor's
                `total_steps` and `decay_steps`), or once the cooldown has
                begun (moving it would make the rate jump).

        Example:
            >>> wsd = keras_clr.WarmupStableDecay(1e-3, warmup_steps=10,
            ...                                  total_steps=100)
            >>> wsd.decay_start, wsd.cooldown_steps  # decay_steps=0.2 of 100
            (80, 20)
            >>> wsd.extend(200)
            >>> wsd.decay_start, wsd.cooldown_steps
            (160, 40)
        """
        decay_steps = self.decay_steps if decay_steps is None else decay_steps
        _, decay_start, decay = schedules.wsd_plan(self.warmup_steps, decay_steps, total_steps)
        self._check_no_jump((decay_start, decay), self._steps_run())
        self._ask(("plan", (decay_start, decay)))

    def _steps_run(self):
        """The steps the host knows have run (a lower bound during a fit)."""
        fit = self._fit
        if fit is None:
            return 0
        if fit.current.last_step is not None:
            return max(fit.done, fit.current.last_step + 1)
        return max(fit.done, fit.first_step)

    def _check_no_jump(self, plan, step):
        starts = [s for s in (self._plan[0], plan[0]) if s is not None]
        if plan != self._plan and starts and min(starts) < step:
            raise ValueError(
                "WarmupStableDecay cannot move a cooldown that has begun: the rate "
                f"would jump. The cooldown starts at step {self._plan[0]}, the new "
                f"plan at step {plan[0]}, and {step} steps have run. Extend the run "
                "before its cooldown starts, or start a new WarmupStableDecay. "
                f"Received: total_steps={plan[0] + plan[1]}"
            )

    def _running(self):
        fit = self._fit
        return fit is not None and not fit.ended and fit.values.control is not None

    def _ask(self, request):
        if self._running():
            self._request = request  # applied by the fit, before its next step
        else:
            self._apply(request, self._fit.done if self._fit is not None else 0)

    def _apply(self, request, step, retabulate=True):
        """Applies a change of plan from `step` on, the next step to run (and
        tabulates the fit in progress again, unless it is ending)."""
        if request[0] == "plan":
            plan = request[1]
            try:
                self._check_no_jump(plan, step)
            except ValueError as error:
                warnings.warn(f"{error} The plan is unchanged.", stacklevel=3)
                return
        else:
            decay_steps = request[2]
            start = max(step, self.warmup_steps)
            if self._plan[0] is not None and self._plan[0] <= start:
                return  # the planned cooldown comes first: it goes on
            decay = self.decay_steps if decay_steps is None else decay_steps
            if isinstance(decay, float):
                decay = max(1, round(decay * start / (1.0 - decay)))
            plan = (start, decay)
        self._plan = plan
        if retabulate and self._running():
            self._fit.reschedule(self._schedules(), self._constant_from(), step)

    def on_train_batch_begin(self, batch, logs=None):
        epoch_start = self._fit.current.batches_before is None
        super().on_train_batch_begin(batch, logs)
        request = self._request
        if request is None or (
            request[0] == "cooldown" and request[1] == "epoch_end" and not epoch_start
        ):
            return
        step = self._fit.next_step(batch)
        if step is not None:
            self._request = None
            self._apply(request, step)
        elif request[-1] != "deferred":
            self._request = (*request, "deferred")
            warnings.warn(
                "WarmupStableDecay cannot tell mid-epoch which update comes next "
                "(on JAX, under a LossScaleOptimizer, which may skip updates): the "
                "change of plan applies from the next epoch's first step.",
                stacklevel=2,
            )

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        request = self._request
        if request is not None and request[:2] == ("cooldown", "epoch_end"):
            self._request = None
            epochs = self._fit.epochs
            self._apply(request, self._fit.done, retabulate=not epochs or epoch + 1 < epochs)
