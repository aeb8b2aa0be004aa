"""Per-step schedules inside a model's compiled train step.

Keras compiles `fit`'s train step once and keeps it. A callback that sets the
learning rate from Python pays a host round trip per step, and momentum-like
hyper-parameters (`SGD.momentum`, `Adam.beta_1`) are Python floats baked into
the traced step, so assigning them from a callback changes nothing.

`StepControl` instead wraps the model's `train_step` for the duration of one
`fit`: each step reads the optimizer's own step counter, looks the schedules'
values up in the graph, assigns the learning rate and lets the optimizer read
a scheduled stand-in for its momentum attribute. Nothing crosses to the host
per step.

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
the momentum stand-in is this step's value as a device tensor.
"""

import numbers
import operator
import threading

import keras
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


def iterations(optimizer):
    """The optimizer's update count as a Python int, read on the host.

    `int(optimizer.iterations)` fails on a variable mirrored by a
    `tf.distribute` strategy; its NumPy value does not.
    """
    return int(ops.convert_to_numpy(optimizer.iterations))


def batch_count(optimizer):
    """The batches the optimizer has counted, as a Python int: its update
    count, or under gradient accumulation its micro-batch count (Keras's
    `_iterations`, checked on Keras 3.15; `iterations` is that // k)."""
    if accumulation_steps(optimizer) > 1:
        return int(ops.convert_to_numpy(optimizer._iterations))
    return iterations(optimizer)


def accumulation_steps(optimizer):
    """The optimizer's `gradient_accumulation_steps`, 1 when it has none."""
    return int(getattr(optimizer, "gradient_accumulation_steps", None) or 1)


def steps_per_execution(model):
    """The train steps each call of the train function runs."""
    return max(1, int(getattr(model, "steps_per_execution", 1) or 1))


def loss_scaled(model):
    """Whether a LossScaleOptimizer may skip updates (overflowing gradients)."""
    return isinstance(getattr(model, "optimizer", None),
                      keras.optimizers.LossScaleOptimizer)


def callback_list(callback):
    """The `keras.callbacks.CallbackList` of the `fit` now calling
    `callback`, or None.

    Keras gives a callback no list of the others: this finds the list
    dispatching the current hook in the calling frames (checked on Keras
    3.15, whose `CallbackList` calls each callback from its own methods).
    Where it is not found, the other callbacks go unchecked.
    """
    import inspect

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if (isinstance(owner, keras.callbacks.CallbackList)
                    and any(c is callback for c in owner.callbacks)):
                return owner
            frame = frame.f_back
    finally:
        del frame
    return None


def move_first(callbacks, callback):
    """Moves `callback` to the front of the `CallbackList` `callbacks`.

    Safe while the list dispatches a hook to `callback`: the callbacks after
    it keep their positions, so the loop goes on to the same next one."""
    order = callbacks.callbacks
    index = next(i for i, c in enumerate(order) if c is callback)
    order.insert(0, order.pop(index))


def baked_settings(optimizer):
    """The optimizer's public Python scalars (weight_decay, momentum,
    clipnorm, ...), of itself and of the one it wraps: a traced step holds
    their values, so a change to any of them needs a new trace."""
    settings = []
    for owner in (optimizer, getattr(optimizer, "inner_optimizer", None)):
        if owner is None:
            continue
        for name, value in sorted(vars(owner).items()):
            if (not name.startswith("_") and name != "built"
                    and isinstance(value, (bool, numbers.Number, str, type(None)))):
                settings.append((name, value))
    return tuple(settings)


def _tf_strategy():
    """The tf.distribute strategy in force, or None (other backends too)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def strategy_scope(model):
    """Where to create variables the train step uses: the scope of the
    model's tf.distribute strategy, so they are mirrored like its own."""
    import contextlib

    import keras

    if keras.backend.backend() != "tensorflow" or _tf_strategy() is not None:
        return contextlib.nullcontext()  # no strategy, or already in one
    return model.distribute_strategy.scope()


def replica_mean(value):
    """Inside a train step run per replica, the mean of `value` over the
    replicas (as Keras reduces the step's logs); elsewhere `value` itself."""
    strategy = _tf_strategy()
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


MOMENTUM_ATTRIBUTES = ("beta_1", "momentum")


def momentum_attribute(optimizer):
    """Name of the optimizer's momentum-like float (`beta_1` or `momentum`)."""
    for name in MOMENTUM_ATTRIBUTES:
        value = getattr(optimizer, name, None)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return name
    return None


def _beta_1_is_not_a_momentum(optimizer):
    """Whether the optimizer's `beta_1` sets something other than a momentum:
    ScheduleFreeAdamW's sets its iterate averaging (Keras 3.14 on)."""
    kind = getattr(keras.optimizers, "ScheduleFreeAdamW", None)
    return kind is not None and isinstance(optimizer, kind)


def check_momentum(optimizer, owner, cycle=True):
    """The attribute to cycle, None when not cycling, or ValueError.

    `cycle` is the callback's `cycle_momentum`: True, False or "auto" (cycle
    it, except where `beta_1` is not a momentum)."""
    if cycle is False:
        return None
    kind = type(optimizer).__name__
    asked = ("cycles the momentum by default (cycle_momentum='auto') and"
             if cycle == "auto" else "(cycle_momentum=True)")
    if _beta_1_is_not_a_momentum(optimizer):
        if cycle == "auto":
            return None
        raise ValueError(
            f"{owner}(cycle_momentum=True) would cycle {kind}'s `beta_1`, which "
            "sets its iterate averaging, not a momentum. Pass "
            "`cycle_momentum=False` (or leave the default, 'auto', which leaves "
            f"it alone). Received: optimizer={kind}, cycle_momentum=True"
        )
    name = momentum_attribute(optimizer)
    if name is None:
        raise ValueError(
            f"{owner} {asked} needs an optimizer with `momentum` "
            f"or `beta_1`; {kind} has neither. Pass `cycle_momentum=False`. "
            f"Received: optimizer={kind}"
        )
    if getattr(optimizer, name) == 0:
        raise ValueError(
            f"{owner} {asked} cannot cycle the momentum of a {kind} "
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
        graph = _tf_graph()
        if graph is None:
            return self._value_fn()
        if graph not in self._per_graph:
            self._per_graph[graph] = self._value_fn()
        return self._per_graph[graph]

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


def _tf_graph():
    """The TensorFlow graph being traced, or None (eager, other backends)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.compat.v1.get_default_graph() if tf.inside_function() else None


def _comparison(op):
    return lambda self, other: op(self._original, other)


def _arithmetic(op, reflected=False):
    if reflected:
        return lambda self, other: op(other, self.value())
    return lambda self, other: op(self.value(), other)


_COMPARISONS = [("eq", operator.eq), ("ne", operator.ne), ("lt", operator.lt),
                ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge)]
for _name, _op in _COMPARISONS:
    setattr(ScheduledValue, f"__{_name}__", _comparison(_op))
for _name, _op in [("add", operator.add), ("sub", operator.sub),
                   ("mul", operator.mul), ("truediv", operator.truediv),
                   ("pow", operator.pow)]:
    setattr(ScheduledValue, f"__{_name}__", _arithmetic(_op))
    setattr(ScheduledValue, f"__r{_name}__", _arithmetic(_op, reflected=True))
ScheduledValue.__neg__ = lambda self: -self.value()


def _stand_in(value_fn, original, torch_compiled=False):
    """What the optimizer reads for its momentum during a step.

    Traced backends (TensorFlow, JAX) get a `ScheduledValue`, evaluated in
    the graph. PyTorch runs the step eagerly and passes the attribute to
    `torch._foreach_*` kernels, which take only numbers and tensors: it gets
    this step's value as a 0-d tensor on the device (no host round trip)
    whose comparisons still use the float it replaces.
    """
    if keras.backend.backend() != "torch":
        return ScheduledValue(value_fn, original)
    value = ops.cast(value_fn(), "float32")
    if torch_compiled:
        # TorchDynamo cannot trace the subclass; a plain tensor's comparisons
        # give tensors, which torch.compile handles with a graph break.
        return value
    return _torch_scheduled_type()._make_subclass(
        _torch_scheduled_type(), value).attach(original)


_TORCH_TYPE = []


def _torch_scheduled_type():
    """A torch.Tensor subclass for `_stand_in` (made once, on first use)."""
    if _TORCH_TYPE:
        return _TORCH_TYPE[0]
    import torch

    class ScheduledTensor(torch.Tensor):
        # Arithmetic gives plain tensors; comparisons and truth use the float.
        __torch_function__ = torch._C._disabled_torch_function_impl

        def attach(self, original):
            self._original = original
            return self

        def __bool__(self):
            return bool(self._original)

        __hash__ = torch.Tensor.__hash__

    for name, op in _COMPARISONS:
        setattr(ScheduledTensor, f"__{name}__", _comparison(op))
    _TORCH_TYPE.append(ScheduledTensor)
    return ScheduledTensor


def _torch_compiled(model):
    """Whether Keras runs the model's train step through torch.compile."""
    compiled = getattr(model, "_should_torch_compile", None)
    return keras.backend.backend() == "torch" and bool(compiled and compiled())


def _step_count(optimizer, start_step):
    """The optimizer's update count minus `start_step`: an int64 tensor, or on
    JAX one of the counter's own dtype (int32 unless in 64-bit mode; the
    schedules widen it themselves)."""
    if keras.backend.backend() == "jax":
        count = ops.convert_to_tensor(optimizer.iterations)
    else:
        count = ops.cast(optimizer.iterations, "int64")
    if isinstance(start_step, numbers.Integral):
        return count - start_step if start_step else count  # one op less per step
    return count - ops.cast(start_step.value, count.dtype)


def _jax_state_variables(model):
    """The variables of JAX's training state, in its order."""
    return (model.trainable_variables, model.non_trainable_variables,
            model.optimizer.variables, model.metrics_variables)


def _jax_stateless(model, body):
    """JAX's `train_step(state, data)` from a `body(data)` that reads and
    assigns variables as on the other backends.

    JAX's train step is pure: the training state comes in and goes out as
    arrays. `body` runs in a StatelessScope over that whole state, so its
    reads and assignments (the learning rate, metric resets, the range
    test's record) act on the state, and the updated state is returned.
    """
    def train_step(state, data):
        groups = _jax_state_variables(model)
        mapping = [(variable, value) for variables, values in zip(groups, state)
                   for variable, value in zip(variables, values)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = body(data)
        state = tuple([scope.get_current_value(v) for v in variables]
                      for variables in groups)
        return logs, state

    return train_step


def _jax_stateful(model, jax_step):
    """Keras's JAX `train_step(state, data)` as a `step(data)` for the body
    of `_jax_stateless`: it reads the state from the enclosing scope and
    assigns the updated state back there."""
    nnx = getattr(keras.config, "is_nnx_enabled", lambda: False)
    if nnx():  # its trainer calls the class's train_step, not the model's
        raise ValueError(
            "keras_clr does not support Keras's Flax NNX mode: its train step "
            "cannot be wrapped. Unset KERAS_NNX_ENABLED. "
            "Received: KERAS_NNX_ENABLED=true")

    def step(data):
        groups = _jax_state_variables(model)
        state = tuple([v.value for v in variables] for variables in groups)
        logs, state = jax_step(state, data)
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return logs

    return step


class StepControl:
    """Wraps a model's train step with in-graph schedules for one `fit`.

    Args:
        model: a compiled Keras model.
        learning_rate: step -> learning rate (int64 tensor -> float tensor),
            or None to leave the learning rate alone.
        momentum: step -> momentum, or None.
        momentum_attribute: the optimizer attribute `momentum` drives.
        log_values: return the step's `learning_rate` and `momentum` in its
            logs (the values the step applied, where the host cannot tell).
        before_step: optional `fn(step)` run in the graph before each step.
        after_step: optional `fn(step, logs, values) -> logs` run after each
            step; `values` holds the step's `learning_rate` when scheduled.

    The step passed to the schedules is the optimizer's update count minus
    `start_step`, an int or an int64 variable. The schedules (and an int
    `start_step`) are read when the train step is traced, so set them before
    the first training step of the `fit`; a variable's value is read at
    every step.
    """

    def __init__(self, model, learning_rate=None, momentum=None,
                 momentum_attribute=None, before_step=None, after_step=None,
                 log_values=False):
        self.model = model
        self.log_values = log_values
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.momentum_attribute = momentum_attribute
        self.before_step = before_step
        self.after_step = after_step
        self.start_step = 0
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

        Returns False where `start_step` is baked into the trace (an int)."""
        if isinstance(self.start_step, numbers.Integral):
            return False
        self.start_step.assign(self.start_step + steps)
        return True

    def install(self):
        """Puts the schedules into the train step; retraces it once.

        Installed again after `remove`, it puts back the same compiled
        function, traced the first time, so the schedules, `start_step` and
        the step hooks must be unchanged by then.
        """
        if self._installed:
            return
        model = self.model
        if self._function is not None:
            self._saved_function = model.train_function
            object.__setattr__(model, "train_step", self._train_step)
            model.train_function = self._function
            object.__setattr__(model, "make_train_function", self._make_train_function)
            self._installed = True
            return
        optimizer = base_optimizer(model)
        original_step = model.train_step
        if keras.backend.backend() == "jax":
            original_step = _jax_stateful(model, original_step)

        def train_step(data):
            # The values are not added to the step's outputs: each output
            # costs the train function a few microseconds per call.
            step = _step_count(optimizer, self.start_step)
            if self.before_step is not None:
                self.before_step(step)
            values = {}
            if self.learning_rate is not None:
                rate = self.learning_rate(step)
                optimizer.learning_rate.assign(
                    ops.cast(rate, optimizer.learning_rate.dtype))
                values["learning_rate"] = rate
            if self.momentum is None:
                logs = original_step(data)
            else:
                momentum = self.momentum(step)
                values["momentum"] = momentum
                logs = self._step_with_momentum(optimizer, original_step, data,
                                                lambda: momentum)
            if self.log_values:
                logs = dict(logs)
                logs.update(values)
            if self.after_step is not None:
                logs = self.after_step(step, logs, values)
            return logs

        if keras.backend.backend() == "jax":
            train_step = _jax_stateless(model, train_step)
        self._saved_function = self._plain_function = model.train_function
        self._optimizer = model.optimizer
        self._settings = baked_settings(model.optimizer)
        object.__setattr__(model, "train_step", train_step)
        self._train_step = train_step
        model.make_train_function(force=True)
        self._function = model.train_function
        object.__setattr__(model, "make_train_function", self._make_train_function)
        self._installed = True

    def serves(self, model):
        """Whether the step traced for `model` is still its step: the same
        optimizer with the same Python hyper-parameters (a trace bakes them
        in), and the model's own train function unchanged (compiling again
        makes a new one)."""
        return (self.model is model and (self._function is None or (
            self._optimizer is model.optimizer
            and model.train_function is self._plain_function
            and self._settings == baked_settings(model.optimizer))))

    def _make_train_function(self, force=False):
        # Keras calls this as each `fit` (or `train_on_batch`) begins, and no
        # callback hears of a `fit` that ends in an exception: a control still
        # installed then is stale, so the model gets its own step back.
        self.remove()
        return self.model.make_train_function(force=force)

    def _step_with_momentum(self, optimizer, original_step, data, value):
        # A tf.distribute strategy traces the step once per replica, in
        # threads that interleave: the first to enter swaps the stand-in in,
        # the last to leave puts the float back.
        name = self.momentum_attribute
        with self._swap_lock:
            if not self._swapped:
                self._swap_original = getattr(optimizer, name)
                object.__setattr__(optimizer, name,
                                   _stand_in(value, self._swap_original,
                                             _torch_compiled(self.model)))
            self._swapped += 1
        try:
            return original_step(data)
        finally:
            with self._swap_lock:
                self._swapped -= 1
                if not self._swapped:
                    object.__setattr__(optimizer, name, self._swap_original)

    def remove(self):
        """Restores the model's own train step and compiled function."""
        if not self._installed:
            return
        self.model.__dict__.pop("train_step", None)
        self.model.__dict__.pop("make_train_function", None)
        self.model.train_function = self._saved_function
        self._saved_function = None
        self._installed = False
