"""The learning-rate range test: the `LRFinder` callback and `find_lr()`.

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

import math
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
from keras_clr.stopping import diverged  # noqa: F401  (the stop rule)

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
                 verbose=1):
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
        self._check_monitor()
        self.restore()  # a previous, unfinished run of this callback
        _build_optimizer(self.model)
        self._snapshot = snapshot(self.model)
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
            rates = hooks.Tabulated(self.lr_at, 0, self.num_steps + 1)
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
        if self._calls % self._check_every == 0:
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
        return (self.params or {}).get("batch_size") or 32

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
            restore(self._snapshot)
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
        rates = hooks.VariableTable(model, finder.num_steps + 1, "lr_finder_rates")
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


def _is_tf_dataset(data):
    """Whether `data` is a tf.data.Dataset (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def _build_optimizer(model):
    """Creates the optimizer's slots now, as its first update would, so that
    the snapshot holds them (their initial values) and restores them."""
    optimizer = model.optimizer
    if not optimizer.built and model.built:
        with hooks.strategy_scope(model), keras.name_scope(optimizer.name,
                                                            caller=optimizer):
            optimizer.build(model.trainable_variables)
        optimizer.built = True


def _state_variables(model):
    """Every variable a training step can change, each once."""
    groups = [model.variables, model.optimizer.variables, model.metrics_variables]
    seen, variables = set(), []
    for variable in (v for group in groups for v in group):
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def _replicas(variable):
    """The variable, or its per-replica copies under a tf.distribute strategy
    (whose metric variables may differ from replica to replica)."""
    copies = getattr(getattr(variable, "value", None), "values", None)
    return copies if isinstance(copies, tuple) else (variable,)


def snapshot(model):
    """Host copies of every model, optimizer and metric variable, one each."""
    return [(part, _host_copy(part))
            for v in _state_variables(model) for part in _replicas(v)]


def _host_copy(part):
    """A NumPy copy of a variable's value, in memory of its own.

    On TensorFlow's CPU the value is read through DLPack, straight from the
    variable's buffer (`np.array` would make a second, transient copy).
    Elsewhere (other backends, GPU buffers, dtypes NumPy lacks) NumPy
    converts it. The copy is 64-byte aligned, so TensorFlow takes it back
    without copying it again when `restore` assigns it.
    """
    source = None
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        value = tf.convert_to_tensor(part)
        if "CPU" in value.device:
            try:
                source = np.from_dlpack(_DLPackTensor(value))
            except (TypeError, ValueError, BufferError, RuntimeError):
                source = None
    if source is None:
        source = np.asarray(part)
    copy = _aligned_empty(source.shape, source.dtype)
    np.copyto(copy, source)
    return copy


class _DLPackTensor:
    """A TensorFlow CPU tensor as NumPy's `from_dlpack` wants it."""

    def __init__(self, tensor):
        self._tensor = tensor

    def __dlpack__(self, stream=None, **kwargs):
        import tensorflow as tf

        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


# Arrays from this size on get pages of their own (see `_aligned_empty`).
_OWN_PAGES = 2 ** 20


def _aligned_empty(shape, dtype, alignment=64):
    """An uninitialised array whose data starts on an `alignment` boundary.

    Large ones are mapped pages of their own rather than heap memory: they
    do not take the heap's free memory that the training steps go on to
    use, and go back to the system as soon as they are released.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes >= _OWN_PAGES:
        import mmap

        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        pages = mmap.mmap(-1, nbytes, flags=flags) if flags else mmap.mmap(-1, nbytes)
        return np.frombuffer(pages, dtype=dtype).reshape(shape)
    buffer = np.empty(nbytes + alignment, dtype=np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset:offset + nbytes].view(dtype).reshape(shape)


def restore(saved):
    """Assigns the values of a `snapshot` back, bit for bit."""
    for variable, value in saved:
        variable.assign(value)


def _take_batches(data, steps, batch_size):
    """The first `steps` batches of validation data, kept for reuse."""
    if _is_tf_dataset(data):
        return (data.take(steps).cache(),)
    if isinstance(data, (tuple, list)):
        count = steps * batch_size
        return tuple(part[:count] for part in data[:2])
    if isinstance(data, keras.utils.PyDataset):
        batches = [data[i] for i in range(min(steps, len(data)))]
        xs = np.concatenate([b[0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        return (xs, ys)
    raise ValueError(
        "Argument `validation_data` must be a tuple (x, y), a tf.data.Dataset "
        f"or a keras.utils.PyDataset. Received: validation_data={type(data).__name__}")


def _repeating(generator):
    """Replays a generator's batches once it runs out."""
    seen = []
    for batch in generator:
        seen.append(batch)
        yield batch
    if not seen:
        return
    while True:
        yield from seen


def _is_torch_loader(data):
    """Whether `data` is a torch.utils.data.DataLoader (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.utils.data.DataLoader)


def _is_arrays(data):
    """Arrays as `fit` takes them: an array, or a dict, list or tuple of them."""
    if isinstance(data, dict):
        return bool(data) and all(_is_arrays(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return bool(data) and all(_is_arrays(v) for v in data)
    return hasattr(data, "shape") and hasattr(data, "__len__") and len(data.shape) > 0


def check_data(x):
    """ValueError unless `x` is data the range test can plan steps on."""
    if (_is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset)
            or hasattr(x, "__next__") or _is_torch_loader(x) or _is_arrays(x)):
        return
    raise ValueError(
        "Argument `x` must be training data as `fit` takes it: NumPy arrays (or "
        "a dict or list of them), a tf.data.Dataset, a keras.utils.PyDataset, a "
        "Python generator or, on the PyTorch backend, a torch DataLoader. "
        f"Received: x={type(x).__name__}")


def _fit_plan(model, x, batch_size, num_steps, validation_split=0.0):
    """(x, epochs, steps_per_epoch) that give at least `num_steps` steps of
    the data trained on (what `validation_split` leaves for training)."""
    if _is_tf_dataset(x):
        return x.repeat(), 1, num_steps
    if isinstance(x, keras.utils.PyDataset) or _is_torch_loader(x):
        per_epoch = len(x)  # batches
    elif hasattr(x, "__next__"):
        return _repeating(x), 1, num_steps
    else:
        first = x[0] if isinstance(x, (list, tuple)) else x
        if isinstance(first, dict):
            first = next(iter(first.values()))
        # As Keras splits: the first ceil(n x (1 - split)) samples train.
        trained = math.ceil(len(first) * (1.0 - (validation_split or 0.0)))
        per_epoch = math.ceil(trained / (batch_size or 32))
    return x, math.ceil(num_steps / max(per_epoch, 1)), None


def find_lr(model, x=None, y=None, *, batch_size=None, start_lr=1e-7, end_lr=10.0,
            num_steps=100, step_mode="exp", smoothing=0.98, stop_factor=4.0,
            monitor="loss", validation_data=None, callbacks=None, verbose=1,
            repeats=1, weight_decays=None, val_every=10, val_steps=4,
            mode="auto", **fit_kwargs):
    """Runs the learning-rate range test on a compiled model and restores it.

    Accepts the data `fit` accepts: NumPy arrays, a `tf.data.Dataset`
    (finite or repeated), a Python generator or a `keras.utils.PyDataset`,
    cycling through it when `num_steps` exceeds one pass. Whatever happens,
    completion, divergence, NaN, an exception or KeyboardInterrupt from a
    callback (re-raised), the model's weights and optimizer state are
    bit-identical afterwards to what they were before.

    Args:
        model: a compiled Keras model.
        x, y, batch_size: the training data, as for `model.fit`.
        start_lr, end_lr, num_steps, step_mode, smoothing, stop_factor,
            monitor, validation_data, val_every, val_steps, mode: see
            `LRFinder`.
        callbacks: more callbacks to run alongside the test.
        verbose: 0 silent, 1 progress bar and summary.
        repeats: run the test this many times from the same start with
            different data orders; the result holds the mean curve and its
            band, and suggestions come from the mean.
        weight_decays: a list of weight decays to sweep (Smith 2018): one
            test per value; the result is the one with the lowest smoothed
            loss and `result.sweep` maps each weight decay to its result.
        **fit_kwargs: passed to `model.fit` (e.g. `class_weight`).

    Returns:
        `keras_clr.LRFinderResult`.

    Raises:
        ValueError: for invalid arguments or an uncompiled model, before any
            training step.

    Example:
        >>> result = keras_clr.find_lr(model, x_train, y_train, batch_size=128)
        >>> result.plot()
        >>> model.fit(x_train, y_train, epochs=10,
        ...           callbacks=[keras_clr.OneCycle(result.suggest())])
    """
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError("Argument `model` must be compiled with an optimizer "
                         f"before the range test. Received: model={model.name!r}, "
                         "not compiled")
    for key in ("epochs", "steps_per_epoch", "initial_epoch"):
        if key in fit_kwargs:
            raise ValueError(f"Argument `{key}` is set by the range test from "
                             f"`num_steps`. Received: {key}={fit_kwargs[key]!r}")
    repeats = _checks.positive_int("repeats", repeats)
    settings = dict(start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                    step_mode=step_mode, smoothing=smoothing, stop_factor=stop_factor,
                    monitor=monitor, validation_data=validation_data,
                    val_every=val_every, val_steps=val_steps, mode=mode)
    LRFinder(**settings, verbose=0)  # checks every argument before training
    if x is None:
        raise ValueError("Argument `x` must be the training data, as for "
                         "`model.fit`. Received: x=None")
    check_data(x)
    if weight_decays is not None:
        weight_decays = _checked_weight_decays(weight_decays)
    x = _ensure_built(model, x, batch_size)
    if hasattr(x, "__next__"):
        x = _repeating(x)  # later repeats (and sweeps) go on with later batches
    if weight_decays is not None:
        return _weight_decay_sweep(model, x, y, weight_decays, batch_size,
                                   settings, callbacks, verbose, repeats, fit_kwargs)
    return _repeated(model, x, y, batch_size, settings, callbacks, verbose, fit_kwargs,
                     repeats)


def _checked_weight_decays(weight_decays):
    """A non-empty list of weight decays >= 0, checked before any test."""
    if (isinstance(weight_decays, (str, bytes, dict))
            or not hasattr(weight_decays, "__iter__")):
        raise ValueError(
            "Argument `weight_decays` must be a list of weight decays to sweep, "
            f"such as [0.0, 1e-4, 1e-3]. Received: weight_decays={weight_decays!r}")
    values = list(weight_decays)
    if not values:
        raise ValueError(
            "Argument `weight_decays` must list at least one weight decay. "
            f"Received: weight_decays={weight_decays!r}")
    return [_checks.in_interval("weight_decays", value, 0.0, math.inf, high_open=True)
            for value in values]


def _ensure_built(model, x, batch_size):
    """Builds a model that has no weights yet on one batch of `x`, so that
    its initial weights are in the snapshot; returns `x` (a generator is
    rewound by putting the batch it gave back in front)."""
    import itertools

    if model.built or x is None:
        return x
    if _is_tf_dataset(x):
        batch = next(iter(x.take(1)))
    elif isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif _is_torch_loader(x):
        batch = tuple(next(iter(x)))
    elif hasattr(x, "__next__"):
        batch = next(x)
        x = itertools.chain([batch], x)
    else:
        batch = (_slice(x, 0, batch_size or 32),)
    with hooks.strategy_scope(model):
        model(batch[0] if isinstance(batch, tuple) else batch, training=False)
    return x


def _slice(data, start, stop):
    if isinstance(data, dict):
        return {k: v[start:stop] for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(v[start:stop] for v in data)
    return data[start:stop]


def _reordered(x, y, seed, sample_weight=None):
    """The same arrays, and their sample weights, in another order (each
    repeat of a test sees its own): (x, y, sample_weight)."""
    first = x[0] if isinstance(x, (list, tuple)) else x
    if isinstance(first, dict):
        first = next(iter(first.values()))
    order = np.random.default_rng(seed).permutation(len(first))

    def take(data):
        if data is None:
            return None
        if isinstance(data, dict):
            return {k: np.asarray(v)[order] for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return type(data)(np.asarray(v)[order] for v in data)
        return np.asarray(data)[order]

    return take(x), take(y), take(sample_weight)


def _average(runs):
    """One result from repeated tests: the mean curve, with the band between
    the lowest and highest smoothed curve, over the steps all runs reached."""
    length = min(len(r.lrs) for r in runs)
    stack = lambda name: np.stack([getattr(r, name)[:length] for r in runs])  # noqa: E731
    smoothed = stack("smoothed_losses")
    shortest = min(runs, key=lambda r: len(r.lrs))
    first = runs[0]
    metrics = None
    if first.metrics:
        metrics = {k: np.mean([r.metrics[k][:length] for r in runs], axis=0)
                   for k in first.metrics}
    return results.LRFinderResult(
        first.lrs[:length], stack("losses").mean(axis=0), smoothed.mean(axis=0),
        num_steps=first.num_steps, smoothing=first.smoothing,
        stop_reason=shortest.stop_reason, monitor=first.monitor, mode=first.mode,
        metrics=metrics, loss_band=(smoothed.min(axis=0), smoothed.max(axis=0)),
        start_lr=first.start_lr, end_lr=first.end_lr, momentum=first.momentum,
        batch_norm=first.batch_norm)


def _repeated(model, x, y, batch_size, settings, callbacks, verbose, fit_kwargs, repeats):
    """One test, or the average of `repeats` tests that share one compiled step."""
    finder = LRFinder(**settings, verbose=verbose)
    finder._keep_step = repeats > 1
    try:
        runs = [_run_once(model, x, y, batch_size, finder, callbacks, fit_kwargs, repeat)
                for repeat in range(repeats)]
    finally:
        finder._keep_step, finder._kept = False, None
    return runs[0] if repeats == 1 else _average(runs)


def _run_once(model, x, y, batch_size, finder, callbacks, fit_kwargs, repeat=0):
    data, epochs, steps = _fit_plan(model, x, batch_size, finder.num_steps,
                                    fit_kwargs.get("validation_split"))
    batched = isinstance(x, keras.utils.PyDataset) or _is_torch_loader(x)
    if repeat and data is x and not batched:
        weights = fit_kwargs.get("sample_weight")
        data, y, weights = _reordered(x, y, seed=repeat, sample_weight=weights)
        if weights is not None:
            fit_kwargs = {**fit_kwargs, "sample_weight": weights}
    if data is not x or batched:
        fit_kwargs = {"shuffle": False, **fit_kwargs}  # the data shuffles itself
    history = getattr(model, "history", None)
    try:
        with finder:
            model.fit(data, y, batch_size=batch_size, epochs=epochs,
                      steps_per_epoch=steps, verbose=0,
                      callbacks=[finder, *(callbacks or [])], **fit_kwargs)
    finally:
        model.history = history
    return finder.result


def _weight_decay_sweep(model, x, y, weight_decays, batch_size, settings,
                        callbacks, verbose, repeats, fit_kwargs):
    optimizer = hooks.base_optimizer(model)
    if getattr(optimizer, "weight_decay", False) is False:
        raise ValueError(
            "Argument `weight_decays` needs an optimizer with `weight_decay`. "
            f"Received: optimizer={type(optimizer).__name__}")
    original = optimizer.weight_decay
    sweep = {}
    try:
        for value in weight_decays:
            optimizer.weight_decay = value
            result = _repeated(model, x, y, batch_size, settings, callbacks, verbose,
                               fit_kwargs, repeats)
            result.weight_decay = value
            sweep[value] = result
    finally:
        optimizer.weight_decay = original
    def lowest(result):
        sign = -1.0 if result.mode == "max" else 1.0
        values = sign * result.smoothed_losses
        return np.min(np.where(np.isfinite(values), values, np.inf), initial=np.inf)

    best = min(sweep.values(), key=lowest)
    best.sweep = sweep
    return best
