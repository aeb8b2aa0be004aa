"""Every use of Keras's private API, in one place.

keras_clr wraps a model's train step, reads the optimizer's batch counter,
sets the optimizer's momentum-like float and keeps its caches on the model
past Keras's attribute tracking, finds the callbacks of the running `fit` and
carries the range test's record through JAX's training state. None of that
has a public API, so each such use is here, with the Keras versions it was
checked on: a new Keras release is a review of this one file. What differs between backends is in
`keras_clr._backend`. "Checked on" names the releases whose whole
TensorFlow test suite passes (`make test` runs 3.10.0 and 3.15.1).
"""

import inspect

import keras

from keras_clr import _backend

# -- the optimizer ---------------------------------------------------------------


def batch_counter(optimizer):
    """The variable counting the batches an optimizer has seen: under
    gradient accumulation its micro-batches, of which `iterations` counts
    every k-th. `optimizer._iterations` (checked on Keras 3.10 and 3.15)."""
    return optimizer._iterations


def own_schedule_name(optimizer):
    """The class name of the schedule an optimizer computes its learning
    rate with, or None where its learning rate is no schedule
    (`optimizer._learning_rate`, checked on Keras 3.10 and 3.15)."""
    rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(rate, keras.Variable) or not callable(rate):
        return None
    return type(rate).__name__


def build_optimizer(model):
    """Creates the optimizer's slots now, as its first update would, under
    the name scope Keras gives them (`name_scope(..., caller=)` and setting
    `built`, checked on Keras 3.10 and 3.15)."""
    optimizer = model.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is not None and isinstance(inner, multi):
        # Keras 3.15 builds it outside any name scope, so that each
        # sub-optimizer names its slots under its own name alone.
        with _backend.strategy_scope(model):
            optimizer.build(model.trainable_variables)
    else:
        with _backend.strategy_scope(model), keras.name_scope(optimizer.name, caller=optimizer):
            optimizer.build(model.trainable_variables)
    optimizer.built = True


def set_untracked(optimizer, name, value):
    """Sets the attribute `name` of `optimizer` past its `__setattr__`,
    whose tracker would take a tensor-like value for state of its own (the
    stand-in for `momentum` / `beta_1` during a trace, and the float put
    back after; `BaseOptimizer.__setattr__` and TensorFlow's trackable,
    checked on Keras 3.10 and 3.15)."""
    object.__setattr__(optimizer, name, value)


# -- state kept on the model ---------------------------------------------------------


def model_cache(model, name):
    """The dict kept on `model` under the attribute `name`, made empty on
    first use: in the instance's `__dict__`, past `Layer.__setattr__`, whose
    tracker would wrap a dict set as an attribute and track the variables
    its values hold as the model's own (checked on Keras 3.10 and 3.15)."""
    return model.__dict__.setdefault(name, {})


# -- the running fit ---------------------------------------------------------------


def unset_callback_fit():
    """The attributes `fit` sets on a callback, as `keras.callbacks.Callback`
    leaves them before any fit: `params` and `_model` (checked on Keras 3.10
    and 3.15)."""
    return {"params": None, "_model": None}


def callback_list(callback):
    """The `keras.callbacks.CallbackList` of the `fit` now calling
    `callback`, or None.

    Keras gives a callback no list of the others: this finds the list
    dispatching the current hook in the calling frames (checked on Keras
    3.10 and 3.15, whose `CallbackList` calls each callback from its own
    methods).
    Where it is not found, the other callbacks go unchecked.
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList) and any(
                c is callback for c in owner.callbacks
            ):
                return owner
            frame = frame.f_back
    finally:
        del frame
    return None


# -- the train step ------------------------------------------------------------------


def custom_train_step(model):
    """Whether the model's class overrides Keras's `train_step` (Keras's own
    are defined in modules under `keras.`, checked on Keras 3.10 and 3.15)."""
    method = getattr(type(model), "train_step", None)
    return method is not None and not method.__module__.startswith("keras.")


def torch_compiled(model):
    """Whether Keras runs the model's train step through torch.compile
    (`model._should_torch_compile`, checked on Keras 3.15: the other
    backends' tests run on the newest pins only)."""
    compiled = getattr(model, "_should_torch_compile", None)
    return _backend.name() == "torch" and bool(compiled and compiled())


def set_train_step(model, train_step, make_train_function=None):
    """Makes `fit` run `train_step` (and, when given, `make_train_function`
    build the train function): instance attributes shadowing the methods
    Keras's trainers call (checked on Keras 3.10 and 3.15)."""
    object.__setattr__(model, "train_step", train_step)
    if make_train_function is not None:
        object.__setattr__(model, "make_train_function", make_train_function)


def unset_train_step(model):
    """Gives the model its own `train_step` and `make_train_function` back."""
    model.__dict__.pop("train_step", None)
    model.__dict__.pop("make_train_function", None)


def _jax_state_variables(model):
    """The variables of Keras's JAX training state, in its order
    (trainable, non-trainable, optimizer, metrics; checked on Keras 3.15,
    JAX's tests run on the newest pins only)."""
    return (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )


def plain_train_step(model):
    """The model's train step as `step(data) -> logs`, reading and assigning
    variables, on every backend.

    Keras's JAX `train_step(state, data)` is pure: this version reads the
    state from the enclosing `StatelessScope` (see `as_train_step`) and
    assigns the updated state back there.
    """
    if _backend.name() != "jax":
        return model.train_step
    nnx = getattr(keras.config, "is_nnx_enabled", lambda: False)
    if nnx():  # its trainer calls the class's train_step, not the model's
        raise ValueError(
            "keras_clr does not support Keras's Flax NNX mode: its train step "
            "cannot be wrapped. Unset KERAS_NNX_ENABLED. "
            "Received: KERAS_NNX_ENABLED=true"
        )
    jax_step = model.train_step

    def step(data):
        groups = _jax_state_variables(model)
        state = tuple([v.value for v in variables] for variables in groups)
        logs, state = jax_step(state, data)
        for variables, values in zip(groups, state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return logs

    return step


def as_train_step(model, body):
    """The train step Keras's trainer calls, from a `body(data) -> logs`
    that reads and assigns variables.

    On JAX the trainer calls `train_step(state, data)` and wants the state
    back: `body` runs in a StatelessScope over that whole state, so its reads
    and assignments (the learning rate, metric resets, the range test's
    record) act on the state, and the updated state is returned.
    """
    if _backend.name() != "jax":
        return body

    def train_step(state, data):
        groups = _jax_state_variables(model)
        mapping = [
            (variable, value)
            for variables, values in zip(groups, state)
            for variable, value in zip(variables, values)
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = body(data)
        state = tuple([scope.get_current_value(v) for v in variables] for variables in groups)
        return logs, state

    return train_step


# -- a variable in the training state ------------------------------------------------


class _StateCarrier(keras.metrics.Metric):
    """Carries a variable in JAX's training state.

    JAX's train step is pure and only the model's, optimizer's and metrics'
    variables travel through it; as a metric variable this one does. It
    adds nothing to the logs, and Keras's metric resets leave it alone.
    """

    def __init__(self, variable):
        super().__init__(name=variable.name)
        self.carried = variable

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def carry_in_state(model, variable):
    """Makes the train step's writes to `variable` last, until `release`:
    on JAX by appending it to the model's metrics (`model._metrics`, checked
    on Keras 3.15); elsewhere a variable keeps its writes. Returns a handle
    for `release`, or None."""
    if _backend.name() != "jax":
        return None
    carrier = _StateCarrier(variable)
    model._metrics.append(carrier)
    return carrier


def release(model, carrier):
    """Undoes `carry_in_state`."""
    if carrier is not None and any(m is carrier for m in model._metrics):
        model._metrics.remove(carrier)


def sync_state(model):
    """Writes JAX's training state back into the variables, so that the host
    reads the values of the last step (`model.jax_state_sync()`, checked on
    Keras 3.15); nothing to do elsewhere."""
    if _backend.name() == "jax":
        model.jax_state_sync()


# -- compiling again -----------------------------------------------------------------


def compile_arguments(model):
    """The arguments the model was compiled with, as objects (the loss and
    metrics themselves, not their configs): Keras keeps them in
    `model._compile_config.config` (checked on Keras 3.10 and 3.15); where
    it does not, they are rebuilt from the public `get_compile_config()`."""
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if isinstance(config, dict):
        return dict(config)
    return dict(keras.saving.deserialize_keras_object(model.get_compile_config()))


_REPORTS_FIRST = []


def batch_end_reports_first_batch():
    """Whether `fit` passes a call's first batch index to
    `on_train_batch_end` (Keras whose epoch iterator yields (step,
    iterator): 3.10 and others before it yielded (begin, end, iterator))
    rather than its last; with `steps_per_execution` > 1 they differ.
    Reads `keras.src.trainers.epoch_iterator.EpochIterator` and its private
    `_enumerate_iterator`; checked on Keras 3.10 (first) and 3.15 (last)."""
    if not _REPORTS_FIRST:
        import numpy as np
        from keras.src.trainers import epoch_iterator

        iterator = epoch_iterator.EpochIterator(x=np.zeros((2, 1), "float32"), batch_size=1)
        try:
            first = next(iterator._enumerate_iterator())
        except Exception:  # an iterator of another shape: the current one's rule
            first = (0, 0, None)
        _REPORTS_FIRST.append(len(first) == 2)
    return _REPORTS_FIRST[0]
