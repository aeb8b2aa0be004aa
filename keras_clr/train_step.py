"""Per-step schedules inside a model's compiled train step.

Keras compiles `fit`'s train step once and keeps it. A callback that sets the
learning rate from Python pays a host round trip per step, and momentum-like
hyper-parameters (`SGD.momentum`, `Adam.beta_1`) are Python floats baked into
the traced step, so assigning them from a callback changes nothing.

`StepControl` instead wraps the model's `train_step` for the duration of one
`fit`: each step reads the optimizer's own step counter, looks the schedules'
values up in the graph, assigns the learning rate and lets the optimizer read
a scheduled stand-in for its momentum attribute. A MultiOptimizer's groups
(`keras_clr.optimizers.Group`) each get the learning rate times their ratio,
a float32 product the logs repeat on the host, and the stand-in in their
own momentum attribute. Nothing crosses to the host per step.

The schedules' tables (one gather per step from the float32 values the `fit`
will use, computed once on the host in float64), and the control shared by
every schedule `fit` on a model, are in `keras_clr.tables`. Each extra scalar
op in the step costs a few microseconds of TensorFlow's per-op overhead, and
so does each extra output of the train function: evaluating the schedule's
arithmetic in the graph and returning the values in the step's logs cost 4-5%
of a 1.3 ms step, the gather about 0.5%. The values for the logs come from
the same table on the host (see `keras_clr.callbacks`).

On JAX the train step is pure (state in, state out): the wrapper runs in a
StatelessScope over the training state. On PyTorch the step runs eagerly and
the momentum stand-in is this step's value as a device tensor. Those
differences are in `keras_clr._backend` and `keras_clr._keras_internals`.
"""

import numbers
import operator
import threading

from keras import ops

from keras_clr import _backend
from keras_clr import _keras_internals
from keras_clr import optimizers


class ScheduledValue:
    """Stands in for a float hyper-parameter while the train step is traced.

    Arithmetic and tensor conversion evaluate `value_fn()` in the graph, so the
    optimizer's update uses the scheduled value at every step. Comparisons
    (`momentum != 0`, `momentum > 0`) use the float it replaces, so the
    optimizer keeps the code path it was built for.

    A stand-in lives for one trace. On TensorFlow, where each evaluation would
    read the step counter again (a stateful read no optimisation merges), the
    value is computed once per graph (a `tf.cond` branch is a graph of its
    own) and reused by every variable's update; XLA merges JAX's copies.
    """

    dtype = "float32"
    shape = ()
    ndim = 0

    def __init__(self, value_fn, original):
        self._value_fn = value_fn
        self._original = original
        self._per_graph = {}

    def value(self):
        graph = _backend.traced_graph()
        if graph is None:
            return self._value_fn()
        if graph not in self._per_graph:
            self._per_graph[graph] = self._value_fn()
        return self._per_graph[graph]

    def __tf_tensor__(self, dtype=None, name=None):
        return _backend.to_tf_tensor(self.value(), dtype)

    def __jax_array__(self):
        return self.value()

    def __bool__(self):
        return bool(self._original)

    def __float__(self):
        raise TypeError("A scheduled hyper-parameter has no fixed float value during training.")

    __hash__ = object.__hash__


def _arithmetic(op, reflected=False):
    if reflected:
        return lambda self, other: op(other, self.value())
    return lambda self, other: op(self.value(), other)


for _name, _op in _backend.COMPARISONS:
    setattr(ScheduledValue, f"__{_name}__", _backend.compare_as_original(_op))
for _name, _op in [
    ("add", operator.add),
    ("sub", operator.sub),
    ("mul", operator.mul),
    ("truediv", operator.truediv),
    ("pow", operator.pow),
]:
    setattr(ScheduledValue, f"__{_name}__", _arithmetic(_op))
    setattr(ScheduledValue, f"__r{_name}__", _arithmetic(_op, reflected=True))
ScheduledValue.__neg__ = lambda self: -self.value()


def _step_count(optimizer, count_offset):
    """The optimizer's update count minus `count_offset`: an int64 tensor, or on
    JAX one of the counter's own dtype (int32 unless in 64-bit mode; the
    schedules widen it themselves)."""
    count = _backend.step_count(optimizers.update_counter(optimizer))
    if isinstance(count_offset, numbers.Integral):
        return count - count_offset if count_offset else count  # one op less per step
    return count - ops.cast(count_offset.value, count.dtype)


class StepControl:
    """Wraps a model's train step with in-graph schedules for one `fit`.

    Args:
        model: a compiled Keras model.
        learning_rate: step -> learning rate (int64 tensor -> float tensor),
            or None to leave the learning rate alone.
        momentum: step -> momentum, or None.
        groups: the `keras_clr.optimizers.Group`s to drive: each gets the
            learning rate times its ratio (float32 arithmetic, as
            `optimizers.log_rates` logs it) and the momentum in its own
            attribute. None: the optimizer's groups, learning rate only.
        log_values: return the step's `learning_rate` and `momentum` in its
            logs (the values the step applied, where the host cannot tell),
            and for a MultiOptimizer each group's, `learning_rate_{name}`
            and `momentum_{name}`.
        before_step: optional `fn(step)` run in the graph before each step.
        after_step: optional `fn(step, logs, values) -> logs` run after each
            step; `values` holds the step's `learning_rate` when scheduled.

    The step passed to the schedules is the optimizer's update count minus
    `count_offset`, an int or an int64 variable. A schedule is a function of
    the schedule step itself (`count_offset` is the update count at step
    0), or, under `keras_clr.tables.SharedControl`, a table read at an index
    (`count_offset` is then the update count at the table's first row).
    The schedules (and an int `count_offset`) are read when the train step
    is traced, so set them before the first training step of the `fit`; a
    variable's value is read at every step.
    """

    def __init__(
        self,
        model,
        learning_rate=None,
        momentum=None,
        groups=None,
        before_step=None,
        after_step=None,
        log_values=False,
    ):
        self.model = model
        self.log_values = log_values
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.groups = groups
        self.before_step = before_step
        self.after_step = after_step
        self.count_offset = 0
        self._saved_function = None
        self._installed = False
        self._train_step = None  # the wrapped step and its compiled function,
        self._function = None  # kept for the next install on the same model
        self._plain_function = None  # the model's own, when first traced
        self._optimizer = None
        self._swap_lock = threading.Lock()
        self._swapped = 0  # replica traces now inside the train step

    def shift(self, steps):
        """Moves step 0 of the schedules `steps` updates later, mid-fit.

        Returns False where `count_offset` is baked into the trace (an int)."""
        if isinstance(self.count_offset, numbers.Integral):
            return False
        self.count_offset.assign(self.count_offset + steps)
        return True

    def install(self):
        """Puts the schedules into the train step; retraces it once.

        Installed again after `remove`, it puts back the same compiled
        function, traced the first time, so the schedules, `count_offset` and
        the step hooks must be unchanged by then.
        """
        if self._installed:
            return
        model = self.model
        if self._function is not None:
            self._saved_function = model.train_function
            _keras_internals.set_train_step(model, self._train_step, self._make_train_function)
            model.train_function = self._function
            self._installed = True
            return
        optimizer = optimizers.base_optimizer(model)
        groups = self.groups
        if groups is None:
            groups = optimizers.schedule_groups(optimizer, "keras_clr")
        original_step = _keras_internals.plain_train_step(model)

        def train_step(data):
            # The values are not added to the step's outputs: each output
            # costs the train function a few microseconds per call.
            step = _step_count(optimizer, self.count_offset)
            if self.before_step is not None:
                self.before_step(step)
            values = {}
            if self.learning_rate is not None:
                rate = self.learning_rate(step)
                values["learning_rate"] = rate
                if len(groups) > 1 or groups[0].ratio != 1.0:
                    rate = ops.cast(rate, "float32")  # as the logs compute it
                for group in groups:
                    value = rate if group.ratio == 1.0 else rate * group.ratio
                    variable = group.optimizer.learning_rate
                    variable.assign(ops.cast(value, variable.dtype))
                    if group.name is not None:
                        values[f"learning_rate_{group.name}"] = value
            cycled = [group for group in groups if group.momentum is not None]
            if self.momentum is None or not cycled:
                logs = original_step(data)
            else:
                momentum = self.momentum(step)
                values["momentum"] = momentum
                for group in cycled:
                    if group.name is not None:
                        values[f"momentum_{group.name}"] = momentum
                logs = self._step_with_momentum(cycled, original_step, data, lambda: momentum)
            if self.log_values:
                logs = dict(logs)
                logs.update(values)
            if self.after_step is not None:
                logs = self.after_step(step, logs, values)
            return logs

        train_step = _keras_internals.as_train_step(model, train_step)
        self._saved_function = self._plain_function = model.train_function
        self._optimizer = model.optimizer
        self._settings = optimizers.baked_settings(model.optimizer)
        # Keras makes the train function from the step it finds on the model.
        _keras_internals.set_train_step(model, train_step)
        self._train_step = train_step
        model.make_train_function(force=True)
        self._function = model.train_function
        _keras_internals.set_train_step(model, train_step, self._make_train_function)
        self._installed = True

    def serves(self, model):
        """Whether the step traced for `model` is still its step: the same
        optimizer with the same Python hyper-parameters (a trace bakes them
        in), and the model's own train function unchanged (compiling again
        makes a new one), or this step installed (a fit tabulating again)."""
        return self.model is model and (
            self._function is None
            or (
                self._optimizer is model.optimizer
                and model.train_function in (self._plain_function, self._function)
                and self._settings == optimizers.baked_settings(model.optimizer)
            )
        )

    def _make_train_function(self, force=False):
        # Keras calls this as each `fit` (or `train_on_batch`) begins, and no
        # callback hears of a `fit` that ends in an exception: a control still
        # installed then is stale, so the model gets its own step back.
        self.remove()
        return self.model.make_train_function(force=force)

    def _step_with_momentum(self, groups, original_step, data, value):
        # A tf.distribute strategy traces the step once per replica, in
        # threads that interleave: the first to enter swaps the stand-ins in,
        # the last to leave puts the floats back. Each group's optimizer
        # reads the same scheduled value in its own attribute.
        with self._swap_lock:
            if not self._swapped:
                self._swap_originals = [
                    (group.optimizer, group.momentum, getattr(group.optimizer, group.momentum))
                    for group in groups
                ]
                compiled = _keras_internals.torch_compiled(self.model)
                for optimizer, name, original in self._swap_originals:
                    _keras_internals.set_untracked(
                        optimizer,
                        name,
                        _backend.stand_in(value, original, ScheduledValue, compiled),
                    )
            self._swapped += 1
        try:
            return original_step(data)
        finally:
            with self._swap_lock:
                self._swapped -= 1
                if not self._swapped:
                    for optimizer, name, original in self._swap_originals:
                        _keras_internals.set_untracked(optimizer, name, original)

    def remove(self):
        """Restores the model's own train step and compiled function."""
        if not self._installed:
            return
        _keras_internals.unset_train_step(self.model)
        self.model.train_function = self._saved_function
        self._saved_function = None
        self._installed = False
