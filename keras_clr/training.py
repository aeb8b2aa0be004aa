"""What keras_clr reads of a compiled model and its optimizer.

The optimizer that updates the weights, its update and batch counts, the
batches it accumulates per update, its momentum-like float and whether it
computes its own learning rate; the steps per call of the train function;
the Python settings a traced step bakes in; and the facts about the model a
range-test result records (the velocity's momentum, batch normalization).
"""

import numbers

import keras
from keras import ops

from keras_clr import _keras_internals


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
    count, or under gradient accumulation its micro-batch count (of which
    `iterations` counts every k-th)."""
    if accumulation_steps(optimizer) > 1:
        return int(ops.convert_to_numpy(_keras_internals.batch_counter(optimizer)))
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
        schedule = _keras_internals.own_schedule_name(optimizer)
        raise ValueError(
            f"{owner} sets the learning rate at every step, but this optimizer "
            f"was compiled with its own schedule ({schedule}). Compile it with "
            "a float `learning_rate`, or use the schedule without the callback. "
            f"Received: learning_rate={schedule}"
        )


def velocity_momentum(optimizer):
    """The momentum of an optimizer that folds the learning rate into its
    velocity (Keras's SGD and RMSprop: `v = momentum * v - lr * grad`), or
    None for one that applies the rate at each step (Adam and the like) or
    has no momentum."""
    if isinstance(optimizer, (keras.optimizers.SGD, keras.optimizers.RMSprop)):
        momentum = float(getattr(optimizer, "momentum", 0.0) or 0.0)
        return momentum if 0 < momentum < 1 else None
    return None


def batch_norm_layers(model):
    """The `keras.layers.BatchNormalization` layers of `model`, nested ones
    included."""
    stack, seen, found = [model], set(), []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        stack.extend(getattr(layer, "layers", None) or [])
    return found


def has_batch_norm(model):
    """Whether `model`, or a layer or model nested in it, is a
    `keras.layers.BatchNormalization`."""
    return bool(batch_norm_layers(model))
