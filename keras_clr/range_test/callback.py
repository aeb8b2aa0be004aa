"""The `LRFinder` callback: the range test inside `model.fit`.

The learning rate rises each step from `start_lr` to `end_lr` inside the
compiled train step (see `keras_clr.hooks`). Each step starts from reset
metrics, so the loss it reports is that batch's own loss, not Keras's running
mean, and the step writes (learning rate, loss, monitored value) into a small
buffer on the device. The host reads that buffer every few steps, never per
step, to stop on divergence. Afterwards every model and optimizer variable is
put back from a host snapshot taken when training began.

References:
    Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
    Networks, section 3.3. arXiv:1506.01186.
"""

import sys

import keras
import numpy as np
from keras import ops

from keras_clr import _checks
from keras_clr import curves
from keras_clr import hooks
from keras_clr import results
from keras_clr import schedules
from keras_clr import stopping
from keras_clr import tables
from keras_clr.range_test import state
from keras_clr.range_test.data import _take_batches

# Steps between two host reads of the record (the divergence check).
CHECK_EVERY = 5
_MAX_NAMES = ("acc", "auc", "precision", "recall", "f1", "iou")


def _default_mode(monitor):
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if any(key in name for key in _MAX_NAMES) else "min"


def _recorded(rows):
    """Rows the train step has written: those before the first empty one."""
    finite = np.isfinite(rows[:, 0])
    return len(rows) if finite.all() else int(np.argmin(finite))


class LRFinder(keras.callbacks.Callback):
    """The learning-rate range test as a callback for `model.fit`.

    Over `num_steps` steps the learning rate rises from `start_lr` to
    `end_lr`; the test stops early when the smoothed loss diverges or a loss
    is NaN/inf, stops training, puts the model and optimizer back exactly as
    they were when training began, and leaves its `result`
    (`keras_clr.LRFinderResult`).

    Restoration happens when training ends. If training is ended by an
    exception instead, use the callback as a context manager (or call
    `restore()`), or run the test through `find_lr()`, which does this for
    you:

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
            `val_steps` batches of `validation_data`. A custom `train_step`
            that returns its loss under another key than `"loss"`: that key
            (the record's losses are then its values).
        validation_data: data for a validation monitor, as in `fit`; only
            with one (a training monitor raises a `ValueError` with it).
        val_every: steps between two validation evaluations.
        val_steps: batches of `validation_data` in the fixed subset.
        val_batch_size: the batch size of `validation_data` given as arrays
            (`find_lr` passes its `batch_size`); None: 32, Keras's default.
        mode: `"min"`, `"max"` or `"auto"` (max for accuracy-like names).
        verbose: 0 silent, 1 a progress bar and a summary line.

    Raises:
        ValueError: at construction for invalid arguments; when training
            begins for an unknown `monitor` or an optimizer with its own
            learning-rate schedule, before any training step.
    """

    def __init__(self, start_lr=1e-7, end_lr=10.0, num_steps=100, step_mode="exp",
                 smoothing=0.98, stop_factor=4.0, monitor="loss",
                 validation_data=None, val_every=10, val_steps=4, mode="auto",
                 verbose=1, val_batch_size=None):
        super().__init__()
        self.start_lr = _checks.positive_finite("start_lr", start_lr)
        self.end_lr = _checks.positive_finite("end_lr", end_lr)
        if self.end_lr <= self.start_lr:
            raise ValueError(
                "Argument `end_lr` must be greater than `start_lr`. Received: "
                f"start_lr={start_lr!r}, end_lr={end_lr!r}")
        self.num_steps = _checks.positive_int("num_steps", num_steps)
        if self.num_steps < 2:
            raise ValueError(
                f"Argument `num_steps` must be at least 2. Received: num_steps={num_steps!r}")
        self.step_mode = _checks.one_of("step_mode", step_mode, ("exp", "linear"))
        self.smoothing = _checks.in_interval("smoothing", smoothing, 0.0, 1.0,
                                             high_open=True)
        if stop_factor is not None:
            stop_factor = _checks.positive_finite("stop_factor", stop_factor)
            if stop_factor <= 1:
                raise ValueError("Argument `stop_factor` must be greater than 1 "
                                 f"or None. Received: stop_factor={stop_factor!r}")
        self.stop_factor = stop_factor
        if not isinstance(monitor, str) or not monitor:
            raise ValueError("Argument `monitor` must be a metric name such as "
                             f"'loss' or 'val_accuracy'. Received: monitor={monitor!r}")
        if monitor.startswith("val_") and validation_data is None:
            raise ValueError(
                f"Argument `validation_data` is needed to monitor {monitor!r}. "
                "Received: validation_data=None")
        if not monitor.startswith("val_") and validation_data is not None:
            raise ValueError(
                "Argument `validation_data` is only used for a validation "
                f"monitor, and monitor={monitor!r} is a training one: pass "
                f"monitor='val_{monitor}' to record the curve on the validation "
                "data, or leave validation_data out. Received: validation_data="
                f"{type(validation_data).__name__}, monitor={monitor!r}")
        self.monitor = monitor
        self.validation_data = validation_data
        self.val_every = _checks.positive_int("val_every", val_every)
        self.val_steps = _checks.positive_int("val_steps", val_steps)
        self.val_batch_size = (None if val_batch_size is None
                               else _checks.positive_int("val_batch_size", val_batch_size))
        self.mode = _checks.one_of("mode", mode, ("auto", "min", "max"))
        self.verbose = verbose
        self.result = None
        self._snapshot = None
        self._control = None
        # find_lr's repeats: the control (with its compiled step), record and
        # record carrier of the last run, put back by the next one
        self._keep_step = False
        self._kept = None

    # -- the learning rate and the in-graph record ---------------------------

    def lr_at(self, step):
        """The learning rate of step `step` (an int, array or tensor)."""
        if schedules._is_host_step(step):
            return curves.range_test(step, self.start_lr, self.end_lr,
                                     self.num_steps, self.step_mode, curves.NumpyOps)
        with schedules.graph_precision():
            value = curves.range_test(ops.cast(step, "int64"), self.start_lr,
                                      self.end_lr, self.num_steps, self.step_mode,
                                      schedules.graph_ops())
            return ops.cast(value, "float32")

    def _reset_metrics(self, step):
        # Not `self.model`: on JAX that property syncs state, here in a trace.
        _reset_metrics(self._control.model)

    def _record(self, step, logs, values):
        return _record_row(self._buffer, self._train_monitor, self.num_steps,
                           self._check_monitor, step, logs, values)

    # -- training hooks ------------------------------------------------------

    def on_train_begin(self, logs=None):
        optimizer = hooks.base_optimizer(self.model)
        hooks.check_learning_rate(optimizer, "LRFinder")
        accumulation = hooks.accumulation_steps(optimizer)
        if accumulation > 1:
            raise ValueError(
                "The range test needs one optimizer update per batch, and this "
                f"optimizer accumulates {accumulation} batches per update. Run "
                "it on the model compiled without `gradient_accumulation_steps` "
                f"(at batch_size x {accumulation} if that fits in memory, the "
                "same batch per update). Received: "
                f"gradient_accumulation_steps={accumulation}")
        if not self.model.built:
            raise ValueError(
                "LRFinder puts the model's weights back as they were when "
                "training began, and this model has none yet (a subclassed "
                "model makes them on its first batch). Build it first, for "
                "example with `model(x[:1])`, or run the test through "
                "`keras_clr.find_lr`, which builds it. Received: "
                f"model={self.model.name!r} with model.built=False")
        self._check_monitor()
        self.restore()  # a previous, unfinished run of this callback
        state.build_optimizer(self.model)
        self._snapshot = state.snapshot(self.model)
        self._momentum = velocity_momentum(optimizer)
        start = hooks.iterations(optimizer)
        empty = np.full((self.num_steps + 1, 3), np.nan, dtype="float32")
        kept, self._kept = self._kept, None
        shared = _shared_range_test(self.model, self, start, empty)
        if shared is not None:
            self._control, self._buffer, self._carrier = shared
        elif kept is not None and kept[0].model is self.model and kept[0].start_step == start:
            self._control, self._buffer, self._carrier = kept
            self._buffer.assign(empty)
            if self._carrier is not None:
                self.model._metrics.append(self._carrier)
        else:
            with hooks.strategy_scope(self.model):
                self._buffer = keras.Variable(
                    empty, trainable=False, dtype="float32", name="lr_finder_record",
                    aggregation="only_first_replica")
            self._carrier = _carry_record(self.model, self._buffer)
            # The LR of every step the test can take, and of the one after.
            rates = tables.Tabulated(self.lr_at, 0, self.num_steps + 1)
            self._control = hooks.StepControl(self.model, rates,
                                              before_step=self._reset_metrics,
                                              after_step=self._record)
            self._control.start_step = start
        self._validation = [] if self.monitor.startswith("val_") else None
        self._calls = 0
        self._steps_seen = 0
        self._stop = None
        self._smoother = stopping.Smoother(self.smoothing)  # the loss, smoothed once
        every = min(CHECK_EVERY, self.val_every) if self._validation is not None else CHECK_EVERY
        self._check_every = max(1, every // self._steps_per_call())
        self._progbar = (keras.utils.Progbar(self.num_steps, verbose=1)
                         if self.verbose else None)
        self._control.install()

    def _check_monitor(self, names=None):
        """ValueError unless the monitor names a metric. The compiled metrics
        are built only when the train step is first traced; until then their
        names are unknown and `_record` checks them at trace time, still
        before any training step runs."""
        wanted = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        self._train_monitor = "loss" if self.monitor.startswith("val_") else wanted
        returned = names is not None
        if names is None:
            if _custom_train_step(self.model):
                return  # its keys are known when the step is traced
            try:
                names = list(self.model.get_metrics_result())
            except ValueError:  # compiled metrics not built yet
                return
        if wanted not in names:
            what = ("of the keys the train step returns" if returned
                    else "of the model's metrics")
            raise ValueError(
                f"Argument `monitor` must name one {what} "
                f"({', '.join(repr(n) for n in names)}, or those with 'val_'). "
                f"Received: monitor={self.monitor!r}")
        if returned and "loss" not in names and self.monitor.startswith("val_"):
            # The training curve of a validation test is the step's loss.
            raise ValueError(
                "A validation monitor needs the train step to return its loss "
                f"under 'loss'; it returns {', '.join(repr(n) for n in names)}. "
                "Monitor the key its loss is under instead. Received: "
                f"monitor={self.monitor!r}")

    def on_train_batch_begin(self, batch, logs=None):
        self._calls += 1
        # Also as the test's last step is done, and for a validation monitor
        # as each val_every-th step is, so that its points are measured on
        # the model those steps left.
        steps = (self._calls - 1) * self._steps_per_call()
        due = steps >= self.num_steps or (
            self._validation is not None and steps // self.val_every > len(self._validation))
        if self._calls % self._check_every == 0 or due:
            self._check()

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def on_train_end(self, logs=None):
        self._check()
        try:
            self.result = self._build_result()
        finally:
            self.restore()
        if self.verbose:
            sys.stdout.write(f"\n{self.result!r}\n")

    def _steps_per_call(self):
        return int(getattr(self.model, "steps_per_execution", 1) or 1)

    def _check(self):
        """Reads the record once; stops training when the test is over."""
        if self._control is None:
            return
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # the record is in JAX's training state
        rows = np.asarray(self._buffer.numpy(), dtype=np.float64)[: self.num_steps]
        count = _recorded(rows)
        if count > self._steps_seen:
            self._smoother.extend(rows[self._steps_seen:count, 1])
            self._steps_seen = count
        if self._validation is not None:
            self._validate(count, rows)
        self._stop = stopping.diverged(self._smoother.values, self.stop_factor)
        if self._progbar is not None and count:
            self._progbar.update(min(count, self.num_steps),
                                 [("lr", rows[count - 1, 0]), ("loss", rows[count - 1, 1])])
        if self._stop is not None or count >= self.num_steps:
            self.model.stop_training = True

    def _validate(self, count, rows):
        # One evaluation each time the record passes a multiple of val_every
        # (checks come at most val_every steps apart): num_steps // val_every
        # in all, at most the `num_steps` the result is given.
        if count // self.val_every > len(self._validation):
            step = count - 1
            values = self.model.evaluate(*self._validation_subset(), verbose=0,
                                         return_dict=True)
            self._validation.append((step, rows[step, 0], rows[step, 1],
                                     float(values[self.monitor[4:]])))

    def _validation_subset(self):
        if not hasattr(self, "_val_subset"):
            self._val_subset = _take_batches(self.validation_data, self.val_steps,
                                             self._batch_size_hint())
        return self._val_subset

    def _batch_size_hint(self):
        return self.val_batch_size or (self.params or {}).get("batch_size") or 32

    def _build_result(self):
        rows = np.asarray(self._buffer.numpy(), dtype=np.float64)[: self.num_steps]
        count = _recorded(rows)
        if count > self._steps_seen:
            self._smoother.extend(rows[self._steps_seen:count, 1])
            self._steps_seen = count
        smoothed = self._smoother.values[:count]
        stop = stopping.diverged(smoothed, self.stop_factor) if count else None
        if stop is not None:
            is_nan = not np.isfinite(rows[stop, 1])
            reason, count = ("nan" if is_nan else "diverged"), stop + 1
        elif count >= self.num_steps:
            reason = "completed"
        else:
            reason = "interrupted"
        mode = _default_mode(self.monitor) if self.mode == "auto" else self.mode
        common = dict(num_steps=self.num_steps, smoothing=self.smoothing,
                      stop_reason=reason, monitor=self.monitor, mode=mode,
                      start_lr=self.start_lr, end_lr=self.end_lr,
                      batch_norm=has_batch_norm(self.model))
        if self._validation is not None:
            # one point per `val_every` steps: the velocity's lag is per step
            points = [p for p in self._validation if p[0] < count]
            planned = max(2, self.num_steps // self.val_every)
            lrs = np.array([p[1] for p in points])
            values = np.array([p[3] for p in points])
            train = np.array([p[2] for p in points])
            return results.LRFinderResult(lrs, values, metrics={"train_loss": train},
                                          **{**common, "num_steps": planned})
        metrics = None
        if self.monitor != "loss":
            metrics = {"train_loss": rows[:count, 1]}
        # The monitored curve is the loss itself: its smoothing is done.
        given = smoothed[:count] if self.monitor == "loss" else None
        return results.LRFinderResult(rows[:count, 0], rows[:count, 2], metrics=metrics,
                                      smoothed_losses=given, momentum=self._momentum,
                                      **common)

    # -- restoration ---------------------------------------------------------

    def restore(self):
        """Puts the model and optimizer back as they were when training began.

        Safe to call more than once; a no-op when there is nothing to restore.
        """
        if self._control is not None:
            self._control.remove()
            if self._keep_step:
                self._kept = (self._control, self._buffer, getattr(self, "_carrier", None))
            self._control = None
        if getattr(self, "_carrier", None) is not None:
            self.model._metrics.remove(self._carrier)
            self._carrier = None
        if self._snapshot is not None:
            state.restore(self._snapshot)
            self._snapshot = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.restore()
        return False


def _custom_train_step(model):
    """Whether the model's class overrides Keras's `train_step`."""
    method = getattr(type(model), "train_step", None)
    return method is not None and not method.__module__.startswith("keras.")


def _reset_metrics(model):
    for metric in model.metrics:
        metric.reset_state()


def _record_row(buffer, train_monitor, num_steps, check_monitor, step, logs, values):
    """In the traced step: writes step's (lr, loss, monitor) row of the record."""
    check_monitor(list(logs))
    # A custom train_step may return its loss under another key: the monitor.
    loss = logs["loss"] if "loss" in logs else logs[train_monitor]
    row = ops.stack([ops.cast(values["learning_rate"], "float32"),
                     ops.cast(loss, "float32"),
                     ops.cast(logs[train_monitor], "float32")])
    row = hooks.replica_mean(row)  # the global batch's, as Keras logs it
    index = ops.minimum(step, num_steps)
    if keras.backend.backend() == "tensorflow" and hooks._tf_strategy() is None:
        # One scatter into the variable: `slice_update` (XLA's
        # dynamic-update-slice, run outside XLA) and a whole-buffer
        # assign cost about 6% of a small model's step. (Mirrored
        # variables have no scatter in a replica's context.)
        import tensorflow as tf

        buffer.value.scatter_nd_update(tf.reshape(index, (1, 1)),
                                       ops.expand_dims(row, 0))
        return logs
    # JAX no longer converts a Variable passed to its primitives itself.
    record = buffer.value if keras.backend.backend() == "jax" else buffer
    buffer.assign(ops.slice_update(record, ops.stack([index, 0]),
                                   ops.expand_dims(row, 0)))
    return logs


def _shared_range_test(model, finder, start, empty):
    """(control, record, None): the model's range-test step for this test's
    length and monitor, refilled for this test; None on JAX.

    Its inputs (the ramp's rates, the step offset, the record) live in
    variables, so one trace serves every range test of that length and
    monitor on the model and optimizer, on TensorFlow and PyTorch. JAX bakes
    them into its trace (its record travels in the training state instead).
    """
    if keras.backend.backend() == "jax":
        return None
    key = (finder.num_steps, finder._train_monitor)
    cache = model.__dict__.setdefault("_keras_clr_range_tests", {})
    entry = cache.get(key)
    if entry is None or not entry[0].serves(model):
        with hooks.strategy_scope(model):
            buffer = keras.Variable(
                empty, trainable=False, dtype="float32", name="lr_finder_record",
                aggregation="only_first_replica")
            start_step = keras.Variable(start, trainable=False, dtype="int64",
                                        name="lr_finder_start",
                                        aggregation="only_first_replica")
        rates = tables.VariableTable(model, finder.num_steps + 1, "lr_finder_rates")
        num_steps, monitor, check = finder.num_steps, finder._train_monitor, finder._check_monitor
        control = hooks.StepControl(
            model, rates,
            before_step=lambda step: _reset_metrics(model),
            after_step=lambda step, logs, values: _record_row(
                buffer, monitor, num_steps, check, step, logs, values))
        control.start_step = start_step
        entry = cache[key] = (control, buffer, rates)
    control, buffer, rates = entry
    buffer.assign(empty)
    rates.fill(finder.lr_at, 0, finder.num_steps + 1)
    control.start_step.assign(start)
    return control, buffer, None


class _RecordCarrier(keras.metrics.Metric):
    """Carries the range test's record in JAX's training state.

    JAX's train step is pure and only the model's, optimizer's and metrics'
    variables travel through it; as a metric variable the record does. It
    adds nothing to the logs, and Keras's metric resets leave it alone.
    """

    def __init__(self, record):
        super().__init__(name="lr_finder_record")
        self.record = record

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def _carry_record(model, record):
    """On JAX, attaches `record` to the model's metrics until `restore`."""
    if keras.backend.backend() != "jax":
        return None
    carrier = _RecordCarrier(record)
    model._metrics.append(carrier)
    return carrier


def velocity_momentum(optimizer):
    """The momentum of an optimizer that folds the learning rate into its
    velocity (Keras's SGD and RMSprop: `v = momentum * v - lr * grad`), or
    None for one that applies the rate at each step (Adam and the like) or
    has no momentum."""
    if isinstance(optimizer, (keras.optimizers.SGD, keras.optimizers.RMSprop)):
        momentum = float(getattr(optimizer, "momentum", 0.0) or 0.0)
        return momentum if 0 < momentum < 1 else None
    return None


def has_batch_norm(model):
    """Whether `model`, or a layer or model nested in it, is a
    `keras.layers.BatchNormalization`."""
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            return True
        stack.extend(getattr(layer, "layers", None) or [])
    return False
