"""The `LRFinder` callback: the range test inside `model.fit`.

The learning rate rises each step from `start_lr` to `end_lr` inside the
compiled train step, which records each step's own loss on the device (see
`keras_clr.range_test.record`). The host reads that record every few steps,
never per step, to stop on divergence. Afterwards every model and optimizer
variable is put back from a host snapshot taken when training began (see
`keras_clr.range_test.state`). The state of one run is a `_Run`, made as
training begins.

References:
    Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
    Networks, section 3.3. arXiv:1506.01186.
"""

import sys
import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import _keras_internals
from keras_clr import optimizers
from keras_clr import results
from keras_clr import stopping
from keras_clr.range_test import record
from keras_clr.range_test import state
from keras_clr.range_test.data import take_batches

# Steps between two host reads of the record (the divergence check).
CHECK_EVERY = 5
_MAX_NAMES = ("acc", "auc", "precision", "recall", "f1", "iou")


def _default_mode(monitor):
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if any(key in name for key in _MAX_NAMES) else "min"


class LRFinder(keras.callbacks.Callback):
    """The learning-rate range test as a callback for `model.fit`.

    Over `num_steps` steps the learning rate rises from `start_lr` to
    `end_lr`; the test stops early when the smoothed loss diverges, or a
    loss, a weight or an optimizer variable is NaN/inf (checked in the
    compiled step: a NaN in the data can leave the loss finite and the
    weights NaN), stops training, puts the model and optimizer back exactly
    as they were when training began, and leaves its `result`
    (`keras_clr.LRFinderResult`).

    A Keras 3.15 `MultiOptimizer`'s groups ramp together, each at its
    compiled learning rate over the largest of them (as `OneCycle` drives
    them), and the curve records the rates of the group compiled highest:
    a suggestion from it is a `max_lr` for `OneCycle` on the same optimizer.

    Restoration happens when training ends. If training is ended by an
    exception instead, use the callback as a context manager (or call
    `restore()`), or run the test through `find_lr()`, which does this for
    you; `result` then holds the curve up to the interruption (stop reason
    "interrupted"):

        with keras_clr.LRFinder() as finder:
            model.fit(x, y, epochs=100, callbacks=[finder])

    Args:
        start_lr: the first learning rate.
        end_lr: the last learning rate, above `start_lr`.
        num_steps: steps of the test, at least 2.
        step_mode: `"exp"` (evenly spaced in log space) or `"linear"`.
        smoothing: beta of the bias-corrected moving average of the loss, in
            [0, 1); 0 disables smoothing.
        stop_factor: stop once the smoothed loss is this many times the best
            one (see `diverged`); above 1, or None to never stop early.
        monitor: the curve to analyse: `"loss"`, a training metric such as
            `"accuracy"`, or a validation one (`"val_loss"`,
            `"val_accuracy"`) computed every `val_every` steps on the first
            `val_steps` batches of `validation_data`: the result has a
            point after every `val_every`-th step (`result.steps`),
            recorded as measured (`smoothing=0`: each point is already a
            mean over the same batches), and its suggestions need 5 points
            after the trim, so `num_steps` of 6 x `val_every` or more (60
            with the defaults). A custom `train_step`
            that returns its loss under another key than `"loss"`: that key
            (the record's losses are then its values).
        validation_data: data for a validation monitor, as in `fit`; only
            with one (a training monitor raises a `ValueError` with it).
        val_every: steps between two validation evaluations (None: 10).
        val_steps: batches of `validation_data` in the fixed subset (None: 4).
            The three `val_` arguments apply to a validation monitor only;
            elsewhere (and `val_batch_size` for batched `validation_data`)
            they warn that they have no effect.
        val_batch_size: the batch size of `validation_data` given as arrays
            (`find_lr` passes its `batch_size`); None: 32, Keras's default.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracy-like names).
        verbose: 0 silent, 1 a progress bar and a summary line.

    Raises:
        ValueError: at construction for invalid arguments (and a
            `validation_data` given with a training monitor, or missing
            with a validation one); when training begins, before any
            training step, for an unknown `monitor`, an optimizer (or a
            MultiOptimizer's group) whose learning rate cannot be set, such
            as one with its own schedule, an optimizer with
            `gradient_accumulation_steps`, or a model not built yet.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> before = model.get_weights()
        >>> finder = keras_clr.LRFinder(start_lr=1e-4, end_lr=0.1, num_steps=40,
        ...                             verbose=0)
        >>> with finder:  # restores the model even if fit raises
        ...     history = model.fit(x, y, batch_size=16, epochs=10,
        ...                         callbacks=[finder], verbose=0)
        >>> finder.result.stop_reason, len(finder.result.lrs)
        ('completed', 40)
        >>> f"{finder.lr_at(0):.0e} {finder.lr_at(39):.0e}"
        '1e-04 1e-01'
        >>> all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        True
    """

    # It sets the learning rate at every step: a schedule callback in the same
    # fit refuses to run with it (`keras_clr.callbacks.check_conflicts`).
    sets_learning_rate = True

    def __init__(
        self,
        start_lr=1e-7,
        end_lr=10.0,
        num_steps=100,
        step_mode="exp",
        smoothing=0.98,
        stop_factor=4.0,
        monitor="loss",
        validation_data=None,
        val_every=None,
        val_steps=None,
        mode="auto",
        verbose=1,
        val_batch_size=None,
    ):
        super().__init__()
        self.start_lr = _checks.positive_finite("start_lr", start_lr)
        self.end_lr = _checks.positive_finite("end_lr", end_lr)
        if self.end_lr <= self.start_lr:
            raise ValueError(
                "Argument `end_lr` must be greater than `start_lr`. Received: "
                f"start_lr={start_lr!r}, end_lr={end_lr!r}"
            )
        self.num_steps = _checks.positive_int("num_steps", num_steps)
        if self.num_steps < 2:
            raise ValueError(
                f"Argument `num_steps` must be at least 2. Received: num_steps={num_steps!r}"
            )
        self.step_mode = _checks.one_of("step_mode", step_mode, ("exp", "linear"))
        self.smoothing = _checks.in_interval("smoothing", smoothing, 0.0, 1.0, high_open=True)
        if stop_factor is not None:
            stop_factor = _checks.positive_finite("stop_factor", stop_factor)
            if stop_factor <= 1:
                raise ValueError(
                    "Argument `stop_factor` must be greater than 1 "
                    f"or None. Received: stop_factor={stop_factor!r}"
                )
        self.stop_factor = stop_factor
        _check_monitor_arguments(monitor, validation_data)
        self.monitor = monitor
        self.validation_data = validation_data
        given = {
            name: value
            for name, value in (
                ("val_every", val_every),
                ("val_steps", val_steps),
                ("val_batch_size", val_batch_size),
            )
            if value is not None
        }
        for name, value in given.items():
            _checks.positive_int(name, value)
        _warn_unused(monitor, validation_data, given)
        self.val_every = int(given.get("val_every", 10))
        self.val_steps = int(given.get("val_steps", 4))
        self.val_batch_size = given.get("val_batch_size")
        self.mode = _checks.one_of("mode", mode, ("auto", "min", "max"))
        self.verbose = verbose
        self.result = None
        self._run = None  # the run in progress

    def lr_at(self, step):
        """The learning rate of step `step` (an int, array or tensor).

        Args:
            step: the test's step, from 0: a Python or NumPy integer, an
                integer array or tensor. Steps past `num_steps - 1` take
                `end_lr`.

        Returns:
            The learning rate: a NumPy float64 (array) for host steps, a
            float32 tensor for a tensor.
        """
        return record.ramp(step, self.start_lr, self.end_lr, self.num_steps, self.step_mode)

    # -- training hooks ------------------------------------------------------

    def on_train_begin(self, logs=None):
        _check_trainable(self.model)
        monitor = check_monitor(self.model, self.monitor)
        self.restore()  # a previous, unfinished run of this callback
        self.result = None  # until this run's
        self._run = _Run(self, self.model, monitor)

    def on_train_batch_begin(self, batch, logs=None):
        run = self._run
        run.calls += 1
        # Also as the test's last step is done, and for a validation monitor
        # as each val_every-th step is, so that its points are measured on
        # the model those steps left.
        steps = (run.calls - 1) * optimizers.steps_per_execution(self.model)
        due = steps >= self.num_steps or (
            run.validation is not None and steps // self.val_every > len(run.validation)
        )
        if run.calls % run.check_every == 0 or due:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def on_train_end(self, logs=None):
        self._check()
        self._end(strict=True)

    def _end(self, strict):
        """Builds the result of the run in progress from its record, then
        restores the model. `strict=False` (training ended by an exception):
        a result that cannot be read warns instead of raising, and the
        restore happens whatever."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            self.result = run.result(self)  # before the restore: it reads variables
        except Exception as error:
            if strict:
                raise
            warnings.warn(
                f"The interrupted range test left no result: its "
                f"record could not be read ({type(error).__name__}: {error}). "
                "The model is restored all the same.",
                stacklevel=3,
            )
        finally:
            run.close()
        if self.verbose:  # ends the progress bar's line too
            sys.stdout.write("\n" if self.result is None else f"\n{self.result!r}\n")
            sys.stdout.flush()

    def _check(self):
        """Reads the record once; stops training when the test is over."""
        if self._run is not None and self._run.check(self):
            self.model.stop_training = True

    # -- restoration ---------------------------------------------------------

    def restore(self):
        """Puts the model and optimizer back as they were when training began.

        A run that training did not end (an exception, a KeyboardInterrupt)
        leaves its partial curve first, as `result` (stop reason
        "interrupted", or "diverged"/"nan" when it had already stopped).
        Safe to call more than once; a no-op when there is nothing to restore.
        """
        self._end(strict=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.restore()
        return False


def _check_monitor_arguments(monitor, validation_data):
    """ValueError unless `monitor` and `validation_data` go together."""
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(
            "Argument `monitor` must be a metric name such as "
            f"'loss' or 'val_accuracy'. Received: monitor={monitor!r}"
        )
    if monitor.startswith("val_") and validation_data is None:
        raise ValueError(
            f"Argument `validation_data` is needed to monitor {monitor!r}. "
            "Received: validation_data=None"
        )
    if not monitor.startswith("val_") and validation_data is not None:
        raise ValueError(
            "Argument `validation_data` is only used for a validation "
            f"monitor, and monitor={monitor!r} is a training one: pass "
            f"monitor='val_{monitor}' to record the curve on the validation "
            "data, or leave validation_data out. Received: validation_data="
            f"{type(validation_data).__name__}, monitor={monitor!r}"
        )


def _warn_unused(monitor, validation_data, given):
    """Warns of `val_` arguments (`given`) that have no effect."""
    unused = list(given)
    if monitor.startswith("val_"):
        batched = not isinstance(validation_data, (tuple, list))
        unused = ["val_batch_size"] if batched and "val_batch_size" in given else []
    if unused:
        why = (
            "a training monitor"
            if not monitor.startswith("val_")
            else f"validation_data={type(validation_data).__name__}, which is batched already"
        )
        warnings.warn(
            f"{', '.join(f'`{n}`' for n in unused)} ha{'s' if len(unused) == 1 else 've'} "
            f"no effect with {why}. Received: "
            f"{', '.join(f'{n}={given[n]!r}' for n in unused)}, monitor={monitor!r}",
            stacklevel=3,
        )


def _check_trainable(model):
    """ValueError unless the test can run on `model` and restore it."""
    optimizer = optimizers.base_optimizer(model)
    optimizers.know_groups(model)
    optimizers.check_learning_rate(optimizer, "LRFinder")
    accumulation = optimizers.accumulation_steps(optimizer)
    if accumulation > 1:
        raise ValueError(
            "The range test needs one optimizer update per batch, and this "
            f"optimizer accumulates {accumulation} batches per update. Run "
            "it on the model compiled without `gradient_accumulation_steps` "
            f"(at batch_size x {accumulation} if that fits in memory, the "
            "same batch per update). Received: "
            f"gradient_accumulation_steps={accumulation}"
        )
    if not model.built:
        raise ValueError(
            "LRFinder puts the model's weights back as they were when "
            "training began, and this model has none yet (a subclassed "
            "model makes them on its first batch). Build it first, for "
            "example with `model(x[:1])`, or run the test through "
            "`keras_clr.find_lr`, which builds it. Received: "
            f"model={model.name!r} with model.built=False"
        )


def check_monitor(model, monitor, names=None):
    """The key of the step's logs to record for `monitor` ("loss" for a
    validation monitor), or ValueError unless the monitor names a metric.

    The compiled metrics are built only when the train step is first traced;
    until then their names are unknown and the traced step checks the keys
    it returns (`names`), still before any training step runs.
    """
    wanted = monitor[4:] if monitor.startswith("val_") else monitor
    train_monitor = "loss" if monitor.startswith("val_") else wanted
    returned = names is not None
    if names is None:
        if _keras_internals.custom_train_step(model):
            return train_monitor  # its keys are known when the step is traced
        try:
            names = list(model.get_metrics_result())
        except ValueError:  # compiled metrics not built yet
            return train_monitor
    if wanted not in names:
        what = "of the keys the train step returns" if returned else "of the model's metrics"
        raise ValueError(
            f"Argument `monitor` must name one {what} "
            f"({', '.join(repr(n) for n in names)}, or those with 'val_'). "
            f"Received: monitor={monitor!r}"
        )
    if returned and "loss" not in names and monitor.startswith("val_"):
        # The training curve of a validation test is the step's loss.
        raise ValueError(
            "A validation monitor needs the train step to return its loss "
            f"under 'loss'; it returns {', '.join(repr(n) for n in names)}. "
            "Monitor the key its loss is under instead. Received: "
            f"monitor={monitor!r}"
        )
    return train_monitor


class _Run:
    """One run of an `LRFinder`: the snapshot, the traced step and its
    record, and what the host has read of it so far."""

    def __init__(self, finder, model, train_monitor):
        optimizer = optimizers.base_optimizer(model)
        state.build_optimizer(model)
        self.snapshot = state.snapshot(model)
        self.momentum = optimizers.velocity_momentum(optimizer)
        self.batch_norm = optimizers.has_batch_norm(model)
        self.step = record.range_test_step(
            model,
            finder.num_steps,
            train_monitor,
            lambda names: check_monitor(model, finder.monitor, names),
            finder.lr_at,
            optimizers.iterations(optimizer),
            baked=(finder.start_lr, finder.end_lr, finder.step_mode),
        )
        self.model = model
        self.validation = [] if finder.monitor.startswith("val_") else None
        self.val_subset = None
        self.calls = 0
        self.steps_seen = 0
        self.smoother = stopping.Smoother(finder.smoothing)  # the loss, smoothed once
        every = min(CHECK_EVERY, finder.val_every) if self.validation is not None else CHECK_EVERY
        self.check_every = max(1, every // optimizers.steps_per_execution(model))
        self.progbar = keras.utils.Progbar(finder.num_steps, verbose=1) if finder.verbose else None

    def read(self):
        """The record's rows and how many are written; smooths the new losses."""
        rows = self.step.rows()
        count = record.recorded(rows)
        if count > self.steps_seen:
            self.smoother.extend(rows[self.steps_seen : count, record.LOSS])
            self.steps_seen = count
        return rows, count

    def check(self, finder):
        """Reads the record once: whether the test is over."""
        rows, count = self.read()
        if self.validation is not None:
            self._validate(finder, count, rows)
        stop = stopping.diverged(self.smoother.values, finder.stop_factor)
        if self.progbar is not None and count:
            self.progbar.update(
                min(count, finder.num_steps),
                [("lr", rows[count - 1, record.LR]), ("loss", rows[count - 1, record.LOSS])],
            )
        return stop is not None or count >= finder.num_steps

    def _validate(self, finder, count, rows):
        # One evaluation each time the record passes a multiple of val_every
        # (checks come at most val_every steps apart): num_steps // val_every
        # in all, at most the `num_steps` the result is given.
        if count // finder.val_every > len(self.validation):
            step = count - 1
            values = self.model.evaluate(
                *self._validation_subset(finder), verbose=0, return_dict=True
            )
            self.validation.append(
                (step, rows[step, 0], rows[step, 1], float(values[finder.monitor[4:]]))
            )

    def _validation_subset(self, finder):
        if self.val_subset is None:
            size = finder.val_batch_size or (finder.params or {}).get("batch_size") or 32
            self.val_subset = take_batches(finder.validation_data, finder.val_steps, size)
        return self.val_subset

    def result(self, finder):
        """The run's `LRFinderResult`, from the record as it stands (and, when
        a step left a variable non-finite, the variables as they stand: call
        it before `close` restores them)."""
        rows, count = self.read()
        smoothed = self.smoother.values[:count]
        stop = stopping.diverged(smoothed, finder.stop_factor) if count else None
        nonfinite = {}
        if stop is not None:
            is_nan = not np.isfinite(rows[stop, record.LOSS])
            reason, count = ("nan" if is_nan else "diverged"), stop + 1
            if is_nan and np.isfinite(rows[stop, record.COMPUTED_LOSS]):
                # a finite loss made NaN by the step's check of the variables
                variable = self.step.first_nonfinite()
                if variable is None:  # all finite: their sum overflowed
                    reason = "diverged"
                else:
                    nonfinite = dict(
                        nonfinite_variable=variable,
                        nonfinite_step=stop,
                        nonfinite_lr=float(rows[stop, record.LR]),
                    )
        elif count >= finder.num_steps:
            reason = "completed"
        else:
            reason = "interrupted"
        mode = _default_mode(finder.monitor) if finder.mode == "auto" else finder.mode
        common = dict(
            num_steps=finder.num_steps,
            smoothing=finder.smoothing,
            stop_reason=reason,
            monitor=finder.monitor,
            mode=mode,
            start_lr=finder.start_lr,
            end_lr=finder.end_lr,
            batch_norm=self.batch_norm,
            **nonfinite,
        )
        if self.validation is not None:
            # One point per `val_every` steps, each at the step it follows;
            # a point is the mean over the same validation batches, so it
            # is recorded as measured (smoothing 0), not averaged with the
            # points before it, which were measured at other rates.
            points = [p for p in self.validation if p[0] < count]
            lrs = np.array([p[1] for p in points])
            values = np.array([p[3] for p in points])
            if reason == "nan":  # measured on the weights the stop step left
                values[[p[0] >= stop for p in points]] = np.nan
            train = np.array([p[2] for p in points])
            return results.LRFinderResult(
                lrs,
                values,
                values,
                metrics={"train_loss": train},
                steps=[p[0] for p in points],
                momentum=self.momentum,
                **{**common, "smoothing": 0.0},
            )
        metrics = None
        if finder.monitor != "loss":
            metrics = {"train_loss": rows[:count, record.LOSS]}
        # The monitored curve is the loss itself: its smoothing is done.
        given = smoothed[:count] if finder.monitor == "loss" else None
        return results.LRFinderResult(
            rows[:count, record.LR],
            rows[:count, record.MONITOR],
            metrics=metrics,
            smoothed_losses=given,
            momentum=self.momentum,
            **common,
        )

    def close(self):
        """Gives the model its own step back and puts every variable back."""
        if self.step is not None:
            self.step.end()
        state.restore(self.snapshot)
