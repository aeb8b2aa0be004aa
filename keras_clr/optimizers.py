"""What keras_clr reads of a compiled model and its optimizer.

The optimizer that updates the weights, its update and batch counts, the
batches it accumulates per update, its momentum-like float and whether its
learning rate can be set; the groups a schedule drives (one, or a Keras 3.15
MultiOptimizer's sub-optimizers, each at its ratio to the largest rate);
the steps per call of the train function; the Python settings a traced step
bakes in; and the facts about the model a range-test result records (the
velocity's momentum, batch normalization).
"""

import numbers
import weakref
from typing import NamedTuple

import keras
import numpy as np
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


def is_multi_optimizer(optimizer):
    """Whether `optimizer` is a `keras.optimizers.MultiOptimizer` (Keras 3.15
    on), which updates each group of variables with a sub-optimizer of its
    own (`optimizer.optimizers`) and has no learning rate of its own."""
    kind = getattr(keras.optimizers, "MultiOptimizer", None)
    return kind is not None and isinstance(optimizer, kind)


def update_counter(optimizer):
    """The optimizer's update count as a tensor, in the graph: its
    `iterations`, which a MultiOptimizer counts per batch (its sub-optimizers
    accumulate the gradients), so there divided by the batches per update."""
    count = optimizer.iterations
    accumulation = accumulation_steps(optimizer)
    if is_multi_optimizer(optimizer) and accumulation > 1:
        return ops.floor_divide(count, accumulation)
    return count


def iterations(optimizer):
    """The optimizer's update count as a Python int, read on the host.

    `int(optimizer.iterations)` fails on a variable mirrored by a
    `tf.distribute` strategy; its NumPy value does not.
    """
    count = int(ops.convert_to_numpy(optimizer.iterations))
    if is_multi_optimizer(optimizer):  # it counts batches (see update_counter)
        return count // accumulation_steps(optimizer)
    return count


def planned_updates(epochs, batches_per_epoch, accumulation):
    """The optimizer updates of `epochs` epochs of `batches_per_epoch`
    batches, `accumulation` batches an update (the batches left over at
    the end make no update)."""
    return epochs * batches_per_epoch // accumulation


def batch_count(optimizer):
    """The batches the optimizer has counted, as a Python int: its update
    count, or under gradient accumulation its micro-batch count (of which
    `iterations` counts every k-th)."""
    if is_multi_optimizer(optimizer):
        return int(ops.convert_to_numpy(optimizer.iterations))
    if accumulation_steps(optimizer) > 1:
        return int(ops.convert_to_numpy(_keras_internals.batch_counter(optimizer)))
    return iterations(optimizer)


def accumulation_steps(optimizer):
    """The optimizer's `gradient_accumulation_steps`, 1 when it has none.

    A MultiOptimizer's are its sub-optimizers' (it takes none itself): they
    must all accumulate the same number of batches, or the groups would
    update at different steps and no one schedule step would be theirs.
    """
    if not is_multi_optimizer(optimizer):
        return int(getattr(optimizer, "gradient_accumulation_steps", None) or 1)
    counts = {sub.name: accumulation_steps(sub) for sub in optimizer.optimizers}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name}: {k}" for name, k in counts.items())
        raise ValueError(
            "keras_clr schedules a MultiOptimizer's groups on one step count, "
            "and its sub-optimizers accumulate different numbers of batches "
            "per update, so they update at different steps. Give every "
            "sub-optimizer the same `gradient_accumulation_steps` (or none). "
            f"Received: gradient_accumulation_steps={{{shown}}}"
        )
    return next(iter(counts.values()), 1)


def steps_per_execution(model):
    """The train steps each call of the train function runs."""
    return max(1, int(getattr(model, "steps_per_execution", 1) or 1))


def loss_scaled(model):
    """Whether a LossScaleOptimizer may skip updates (overflowing gradients)."""
    return isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer)


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
    inner = getattr(optimizer, "inner_optimizer", None)
    owners = [optimizer, inner]
    for owner in (optimizer, inner):
        if is_multi_optimizer(owner):  # and of each of its sub-optimizers
            owners.extend(owner.optimizers)
    for owner in owners:
        if owner is None:
            continue
        for name, value in sorted(vars(owner).items()):
            if (
                not name.startswith("_")
                and name != "built"
                and isinstance(value, (bool, numbers.Number, str, type(None)))
            ):
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
    it, except where `beta_1` is not a momentum). A MultiOptimizer's groups
    are each checked by these rules (see `schedule_groups`)."""
    if is_multi_optimizer(optimizer):
        return tuple(group.momentum for group in schedule_groups(optimizer, owner, cycle))
    return _check_momentum(optimizer, owner, cycle)


def _check_momentum(optimizer, owner, cycle, group=""):
    if cycle is False:
        return None
    kind = type(optimizer).__name__ + group
    asked = (
        "cycles the momentum by default (cycle_momentum='auto') and"
        if cycle == "auto"
        else "(cycle_momentum=True)"
    )
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
    """ValueError unless the learning rate of the optimizer (of each of a
    MultiOptimizer's sub-optimizers) is a variable keras_clr can assign."""
    if is_multi_optimizer(optimizer):
        for sub in optimizer.optimizers:
            _check_learning_rate(sub, owner, f" (the MultiOptimizer's group {sub.name!r})")
        return
    _check_learning_rate(optimizer, owner)


def _check_learning_rate(optimizer, owner, group=""):
    kind = type(optimizer).__name__ + group
    try:
        rate = optimizer.learning_rate
    except Exception as error:  # a property that refuses to be read
        raise ValueError(
            f"{owner} sets the learning rate at every step, but {kind}'s "
            f"`learning_rate` cannot be read ({type(error).__name__}: {error}). "
            "Compile the model with an optimizer whose `learning_rate` is a "
            f"float. Received: optimizer={kind}"
        ) from None
    if hasattr(rate, "assign"):
        return
    schedule = _keras_internals.own_schedule_name(optimizer)
    if schedule is not None:
        raise ValueError(
            f"{owner} sets the learning rate at every step, but {kind} "
            f"was compiled with its own schedule ({schedule}). Compile it with "
            "a float `learning_rate`, or use the schedule without the callback. "
            f"Received: learning_rate={schedule}"
        )
    raise ValueError(
        f"{owner} sets the learning rate at every step, but {kind}'s "
        f"`learning_rate` is a {type(rate).__name__}, not a variable it can "
        "assign. Compile the model with an optimizer built with a float "
        f"`learning_rate`. Received: learning_rate={rate!r}"
    )


class Group(NamedTuple):
    """An optimizer whose learning rate a schedule drives.

    A MultiOptimizer has one per sub-optimizer; any other optimizer is one.

    Attributes:
        optimizer: the optimizer whose `learning_rate` variable is set.
        name: the suffix of its keys in the logs (`learning_rate_{name}`, as
            Keras's own callbacks name them), or None for a lone optimizer.
        ratio: its rate over the schedule's, a float32 value (see `ratios`).
        momentum: the attribute its momentum schedule drives, or None.
    """

    optimizer: object
    name: object
    ratio: float
    momentum: object


# The ratios of each MultiOptimizer's groups, as first read (see `ratios`).
_RATIOS = weakref.WeakKeyDictionary()


def ratios(optimizer):
    """Each of a MultiOptimizer's groups' learning rate over the schedule's:
    its sub-optimizer's learning rate over the largest of them, read the
    first time a keras_clr schedule drives the optimizer (before its first
    step; kept for every later schedule on it, since the schedules leave the
    rates scaled) and rounded to float32. The group with the largest rate
    gets the schedule's own values, the others the same fraction of them as
    they were compiled with, as fastai's `slice(lo, hi)` gives the head `hi`.
    """
    known = _RATIOS.get(optimizer)
    if known is not None:
        return known
    if not optimizer.optimizers:
        raise ValueError(
            "keras_clr drives each of a MultiOptimizer's sub-optimizers, and "
            "this one has none yet (one given a function finds them as it is "
            "built). Build the model first, for example with `model(x[:1])`. "
            "Received: optimizer.optimizers=[]"
        )
    rates = [
        float(np.float32(ops.convert_to_numpy(sub.learning_rate))) for sub in optimizer.optimizers
    ]
    top = max(rates, default=0.0)
    if not np.isfinite(rates).all() or min(rates, default=0.0) < 0 or top <= 0:
        shown = ", ".join(f"{sub.name}: {rate:g}" for sub, rate in zip(optimizer.optimizers, rates))
        raise ValueError(
            "keras_clr gives each of a MultiOptimizer's groups the schedule's "
            "learning rate times the group's compiled learning rate over the "
            "largest of them, so those must be finite, at least 0, and one of "
            "them above 0. Compile the sub-optimizers with such rates. "
            f"Received: learning_rate={{{shown}}}"
        )
    known = _RATIOS[optimizer] = tuple(
        1.0 if rate == top else float(np.float32(rate / top)) for rate in rates
    )
    return known


def know_groups(model):
    """Builds the model's MultiOptimizer now if it is not built: one given a
    function instead of an `OptimizerMap` finds its sub-optimizers as it is
    built, which Keras otherwise does at the first step (as its first update
    would, see `keras_clr._keras_internals.build_optimizer`)."""
    optimizer = base_optimizer(model)
    if is_multi_optimizer(optimizer) and not optimizer.built and model.built:
        _keras_internals.build_optimizer(model)


def remember_ratios(model):
    """Reads the ratios of the model's MultiOptimizer now (see `ratios`),
    unless they are known or cannot be read (the checks as training begins
    say why). Keras gives every callback of a `fit` its model before any of
    them begins: a schedule's callback reads them then, before a
    BackupAndRestore listed ahead of it restores the scaled rates of a
    backup into a new model's optimizer."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if (
        not is_multi_optimizer(optimizer) or optimizer in _RATIOS or not optimizer.optimizers
    ):  # a function's, found as it is built
        return
    try:
        check_learning_rate(optimizer, "keras_clr")
        ratios(optimizer)
    except ValueError:
        pass


def schedule_groups(optimizer, owner, cycle=False):
    """The groups a schedule drives (`Group`s), checked: ValueError for a
    learning rate keras_clr cannot set, or a momentum it cannot cycle, in
    any of them. `cycle` is the callback's `cycle_momentum`; each group's
    momentum is its own kind's (`momentum`, `beta_1`) by the rules of
    `check_momentum`."""
    check_learning_rate(optimizer, owner)
    if not is_multi_optimizer(optimizer):
        return (Group(optimizer, None, 1.0, _check_momentum(optimizer, owner, cycle)),)
    return tuple(
        Group(
            sub,
            sub.name,
            ratio,
            _check_momentum(sub, owner, cycle, f" (the MultiOptimizer's group {sub.name!r})"),
        )
        for sub, ratio in zip(optimizer.optimizers, ratios(optimizer))
    )


def log_rates(groups, rate):
    """The learning rates a step applies, as the logs carry them, from the
    schedule's float32 `rate` read on the host: `learning_rate`, and for a
    MultiOptimizer `learning_rate_{name}` per group, each the float32
    product the step computes (see `keras_clr.train_step`)."""
    logs = {"learning_rate": rate}
    for group in groups:
        if group.name is not None:
            logs[f"learning_rate_{group.name}"] = (
                rate if group.ratio == 1.0 else float(np.float32(rate) * np.float32(group.ratio))
            )
    return logs


def velocity_momentum(optimizer):
    """The momentum of an optimizer that folds the learning rate into its
    velocity (Keras's SGD and RMSprop: `v = momentum * v - lr * grad`), or
    None for one that applies the rate at each step (Adam and the like) or
    has no momentum. A MultiOptimizer's is that of its group with the
    largest learning rate (the one a range test records)."""
    if is_multi_optimizer(optimizer):
        reference = [
            sub for sub, ratio in zip(optimizer.optimizers, ratios(optimizer)) if ratio == 1.0
        ]
        return velocity_momentum(reference[0]) if reference else None
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
