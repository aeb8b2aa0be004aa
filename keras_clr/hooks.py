"""Per-step schedules inside a model's compiled train step.

Keras compiles `fit`'s train step once and keeps it. A callback that sets the
learning rate from Python pays a host round trip per step, and momentum-like
hyper-parameters (`SGD.momentum`, `Adam.beta_1`) are Python floats baked into
the traced step, so assigning them from a callback changes nothing.

`StepControl` instead wraps the model's `train_step` for the duration of one
`fit`: each step reads the optimizer's own step counter, evaluates the
schedules on it in the graph, assigns the learning rate and lets the
optimizer read a scheduled stand-in for its momentum attribute. Nothing
crosses to the host per step; the values in force are added to the step's
logs, so History, CSVLogger and TensorBoard record them.
"""

import numbers
import operator

from keras import ops


def base_optimizer(model):
    """The optimizer that updates the weights (inside a LossScaleOptimizer)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(model, "compiled", True):
        raise ValueError(
            "The model must be compiled with an optimizer before training. "
            f"Received: model={getattr(model, 'name', model)!r} without one"
        )
    return getattr(optimizer, "inner_optimizer", optimizer)


MOMENTUM_ATTRIBUTES = ("beta_1", "momentum")


def momentum_attribute(optimizer):
    """Name of the optimizer's momentum-like float (`beta_1` or `momentum`)."""
    for name in MOMENTUM_ATTRIBUTES:
        value = getattr(optimizer, name, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return name
    return None


def check_momentum(optimizer, owner):
    """The attribute to cycle, or ValueError if the optimizer has none."""
    name = momentum_attribute(optimizer)
    kind = type(optimizer).__name__
    if name is None:
        raise ValueError(
            f"{owner}(cycle_momentum=True) needs an optimizer with `momentum` "
            f"or `beta_1`; {kind} has neither. Pass `cycle_momentum=False`. "
            f"Received: optimizer={kind}"
        )
    if getattr(optimizer, name) == 0:
        raise ValueError(
            f"{owner}(cycle_momentum=True) cannot cycle the momentum of a {kind} "
            f"built with {name}=0: Keras creates no momentum buffers for it. "
            f"Build it with a non-zero {name} (for example 0.9) or pass "
            f"`cycle_momentum=False`. Received: {name}=0"
        )
    return name


def check_learning_rate(optimizer, owner):
    """ValueError if the optimizer computes its own learning rate."""
    if not hasattr(getattr(optimizer, "learning_rate", None), "assign"):
        schedule = type(getattr(optimizer, "_learning_rate", None)).__name__
        raise ValueError(
            f"{owner} sets the learning rate at every step, but this optimizer "
            f"was compiled with its own schedule ({schedule}). Compile it with "
            "a float `learning_rate`, or use the schedule without the callback. "
            f"Received: learning_rate={schedule}"
        )


class ScheduledValue:
    """Stands in for a float hyper-parameter while the train step is traced.

    Arithmetic and tensor conversion evaluate `value_fn()` in the graph, so the
    optimizer's update uses the scheduled value at every step. Comparisons
    (`momentum != 0`, `momentum > 0`) use the float it replaces, so the
    optimizer keeps the code path it was built for.
    """

    dtype = "float32"
    shape = ()
    ndim = 0

    def __init__(self, value_fn, original):
        self._value_fn = value_fn
        self._original = original

    def value(self):
        return self._value_fn()

    def __tf_tensor__(self, dtype=None, name=None):
        import tensorflow as tf

        value = tf.convert_to_tensor(self.value())
        return value if dtype is None else tf.cast(value, dtype)

    def __jax_array__(self):
        return self.value()

    def __bool__(self):
        return bool(self._original)

    def __float__(self):
        raise TypeError(
            "A scheduled hyper-parameter has no fixed float value during training."
        )

    __hash__ = object.__hash__


def _comparison(op):
    return lambda self, other: op(self._original, other)


def _arithmetic(op, reflected=False):
    if reflected:
        return lambda self, other: op(other, self.value())
    return lambda self, other: op(self.value(), other)


for _name, _op in [("eq", operator.eq), ("ne", operator.ne), ("lt", operator.lt),
                   ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge)]:
    setattr(ScheduledValue, f"__{_name}__", _comparison(_op))
for _name, _op in [("add", operator.add), ("sub", operator.sub),
                   ("mul", operator.mul), ("truediv", operator.truediv),
                   ("pow", operator.pow)]:
    setattr(ScheduledValue, f"__{_name}__", _arithmetic(_op))
    setattr(ScheduledValue, f"__r{_name}__", _arithmetic(_op, reflected=True))
ScheduledValue.__neg__ = lambda self: -self.value()


class StepControl:
    """Wraps a model's train step with in-graph schedules for one `fit`.

    Args:
        model: a compiled Keras model.
        learning_rate: step -> learning rate (int64 tensor -> float tensor),
            or None to leave the learning rate alone.
        momentum: step -> momentum, or None.
        momentum_attribute: the optimizer attribute `momentum` drives.
        before_step: optional `fn(step)` run in the graph before each step.
        after_step: optional `fn(step, logs) -> logs` run after each step.

    The step passed to the schedules is the optimizer's update count minus
    `start_step`, read when the train step is traced, so set `start_step`
    before the first training step of the `fit`.
    """

    def __init__(self, model, learning_rate=None, momentum=None,
                 momentum_attribute=None, before_step=None, after_step=None):
        self.model = model
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.momentum_attribute = momentum_attribute
        self.before_step = before_step
        self.after_step = after_step
        self.start_step = 0
        self._saved_function = None
        self._installed = False

    def install(self):
        """Puts the schedules into the train step; retraces it once."""
        if self._installed:
            return
        model = self.model
        optimizer = base_optimizer(model)
        original_step = model.train_step

        def train_step(data):
            step = ops.cast(optimizer.iterations, "int64") - self.start_step
            if self.before_step is not None:
                self.before_step(step)
            extra = {}
            if self.learning_rate is not None:
                rate = self.learning_rate(step)
                optimizer.learning_rate.assign(
                    ops.cast(rate, optimizer.learning_rate.dtype))
                extra["learning_rate"] = rate
            if self.momentum is None:
                logs = original_step(data)
            else:
                logs = self._step_with_momentum(optimizer, original_step, data)
                extra["momentum"] = self.momentum(step)
            logs = {**logs, **extra}
            if self.after_step is not None:
                logs = self.after_step(step, logs)
            return logs

        self._saved_function = model.train_function
        object.__setattr__(model, "train_step", train_step)
        model.make_train_function(force=True)
        self._installed = True

    def _step_with_momentum(self, optimizer, original_step, data):
        name = self.momentum_attribute
        original = getattr(optimizer, name)

        def value():
            step = ops.cast(optimizer.iterations, "int64") - self.start_step
            return self.momentum(step)

        object.__setattr__(optimizer, name, ScheduledValue(value, original))
        try:
            return original_step(data)
        finally:
            object.__setattr__(optimizer, name, original)

    def remove(self):
        """Restores the model's own train step and compiled function."""
        if not self._installed:
            return
        self.model.__dict__.pop("train_step", None)
        self.model.train_function = self._saved_function
        self._saved_function = None
        self._installed = False
