"""`discriminative_optimizer`: per-group learning rates for a model, as
Keras's own `keras.optimizers.MultiOptimizer` (Keras 3.15 on).

The model's layers are split into groups, first (the body) to last (the
head), and each group gets a copy of one base optimizer at its own rate:
layer-wise decay (`rate * decay ** depth`, the depth counted from the head)
or a log-spaced spread from `lo` to `hi` (fastai's `slice(lo, hi)`).
Frozen layers get a group whose rate is 0. The result is an `OptimizerMap`
of anchored regexes over the variables' paths, so it saves and loads with
the model; keras_clr's schedules drive each group at its compiled rate
over the largest (`keras_clr.optimizers.ratios`).
"""

import math
import re

import keras
import numpy as np
from keras import ops

from keras_clr import _checks
from keras_clr import _keras_internals

FROZEN = "frozen"  # the name of the group of frozen layers
# Optimizers whose update is not a no-op at learning rate 0: Ftrl divides by
# it, ScheduleFreeAdamW moves the weights towards its averaged iterate.
NOT_FROZEN_AT_ZERO = ("Ftrl", "ScheduleFreeAdamW")


def group_name(index):
    """The name of the group at `index` (0 the first, the head the last):
    its sub-optimizer's name, and the suffix of its keys in the logs."""
    return f"group_{index}"


def all_layers(model):
    """Every layer of `model`, those of nested models included, outer first."""
    found, stack = [], list(reversed(getattr(model, "layers", [])))
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(reversed(getattr(layer, "layers", None) or []))
    return found


def _resolve(argument, entries, layers, shown):
    """The layers each entry names: a layer name, else a regex that
    fully matches layer names; ValueError for one that names none."""
    resolved = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(
                f"Argument `{argument}` must hold layer names or regexes "
                f"(strings). Received: {argument}={shown!r}"
            )
        named = [layer for layer in layers if layer.name == entry]
        if not named:
            try:
                pattern = re.compile(entry)
            except re.error as error:
                raise ValueError(
                    f"Argument `{argument}` holds {entry!r}, neither a layer "
                    f"name of the model nor a valid regex ({error}). "
                    f"Received: {argument}={shown!r}"
                ) from None
            named = [layer for layer in layers if pattern.fullmatch(layer.name)]
        if not named:
            raise ValueError(
                f"Argument `{argument}` names a layer the model does not have: "
                f"{entry!r} is no layer's name and matches none as a regex. "
                f"Received: {argument}={shown!r}"
            )
        resolved.append(named)
    return resolved


def _variable_pattern(layer, variable):
    """An anchored regex for `variable.path`, from the name of the innermost
    layer that holds it on: the scopes before it may differ once the model
    is saved and loaded (a Sequential names its variables
    `sequential/dense/kernel`, and a nested Sequential `body/dense/kernel`,
    where the same models loaded from a file name them `dense/kernel`), and
    a nested functional model's name is in none of its variables' paths."""
    parts = variable.path.split("/")
    while True:
        inner = [
            sub
            for sub in getattr(layer, "layers", None) or []
            if any(weight is variable for weight in sub.trainable_weights)
        ]
        if not inner:
            break
        layer = inner[0]
    if layer.name not in parts[:-1]:
        return re.escape(variable.path)
    start = len(parts) - 2 - parts[-2::-1].index(layer.name)
    return "(?:.*/)?" + re.escape("/".join(parts[start:]))


def _base_rate(optimizer):
    """The base optimizer's learning rate as a float, or ValueError."""
    schedule = _keras_internals.own_schedule_name(optimizer)
    if schedule is not None:
        raise ValueError(
            "Argument `optimizer` must have a float learning rate: each group "
            "gets a copy of it at its own rate. Received: optimizer="
            f"{type(optimizer).__name__}(learning_rate={schedule})"
        )
    rate = float(np.float32(ops.convert_to_numpy(optimizer.learning_rate)))
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(
            "Argument `optimizer` must have a positive finite learning rate. "
            f"Received: optimizer={type(optimizer).__name__}"
            f"(learning_rate={rate!r})"
        )
    return rate


def _check_arguments(model, optimizer, decay, lo, hi, groups, blocks, frozen):
    multi = getattr(keras.optimizers, "MultiOptimizer", None)
    if multi is None:
        raise ValueError(
            "discriminative_optimizer builds a keras.optimizers.MultiOptimizer, "
            "which needs Keras 3.15 or later. Upgrade Keras. Received: "
            f"keras.__version__={keras.__version__!r}"
        )
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer, (multi, keras.optimizers.LossScaleOptimizer)
    ):
        raise ValueError(
            "Argument `optimizer` must be a Keras optimizer to copy for each "
            "group (not a MultiOptimizer or LossScaleOptimizer). Received: "
            f"optimizer={optimizer!r}"
        )
    if not isinstance(model, keras.Model) or not model.built or not model.trainable_variables:
        raise ValueError(
            "Argument `model` must be a built Keras model with trainable "
            "weights (build it first, for example with `model(x[:1])`). "
            f"Received: model={getattr(model, 'name', model)!r}"
        )
    if decay is not None:
        decay = _checks.in_interval("decay", decay, 0, 1, low_open=True)
        if lo is not None or hi is not None:
            raise ValueError(
                "Pass `decay` or `lo` (and `hi`), not both. Received: "
                f"decay={decay!r}, lo={lo!r}, hi={hi!r}"
            )
    if hi is not None and lo is None:
        raise ValueError(
            "Argument `hi` needs `lo`: the rates are spread from `lo` (the "
            f"first group) to `hi` (the head). Received: lo=None, hi={hi!r}"
        )
    if lo is not None:
        lo = _checks.positive_finite("lo", lo)
        hi = _checks.positive_finite("hi", hi) if hi is not None else _base_rate(optimizer)
        if np.float32(lo) >= np.float32(hi):  # the rates the groups hold
            raise ValueError(
                "Argument `lo` must be below `hi` (the head's rate, the "
                f"optimizer's when `hi` is None). Received: lo={lo!r}, hi={hi!r}"
            )
    if groups is not None:
        groups = _checks.positive_int("groups", groups)
        if blocks is not None:
            raise ValueError(
                "Pass `groups` or `blocks`, not both: `blocks` are the groups. "
                f"Received: groups={groups!r}, blocks={blocks!r}"
            )
    if blocks is not None and (
        isinstance(blocks, str)
        or not isinstance(blocks, (list, tuple))
        or not blocks
        or any(isinstance(b, str) or not isinstance(b, (list, tuple)) or not b for b in blocks)
    ):
        raise ValueError(
            "Argument `blocks` must be a non-empty list of non-empty lists of "
            f"layer names or regexes. Received: blocks={blocks!r}"
        )
    if frozen is not None:
        if isinstance(frozen, str) or not isinstance(frozen, (list, tuple)):
            raise ValueError(
                "Argument `frozen` must be a list of layer names or regexes. "
                f"Received: frozen={frozen!r}"
            )
        if frozen and type(optimizer).__name__ in NOT_FROZEN_AT_ZERO:
            raise ValueError(
                f"Argument `frozen` gives frozen layers a copy of the optimizer at learning "
                f"rate 0, and {type(optimizer).__name__} still changes weights at rate 0. "
                "Set `layer.trainable = False` on them instead (and compile again). "
                f"Received: frozen={frozen!r}, optimizer={type(optimizer).__name__}"
            )
    return decay, lo, hi, groups


def _units(model, blocks, layers):
    """The groups as lists of layers, first to head, before any is frozen."""
    if blocks is not None:
        return [
            [layer for named in _resolve("blocks", block, layers, blocks) for layer in named]
            for block in blocks
        ]
    return [[layer] for layer in model.layers if layer.trainable_weights]


def _rates(count, base, decay, lo, hi):
    """Each group's learning rate, first to head."""
    if decay is not None:
        return [base * decay ** (count - 1 - i) for i in range(count)]
    if lo is not None:
        if count == 1:
            return [hi]
        return [lo * (hi / lo) ** (i / (count - 1)) for i in range(count)]
    return [base] * count


def discriminative_optimizer(
    model, optimizer, *, decay=None, lo=None, hi=None, groups=None, blocks=None, frozen=None
):
    """A `keras.optimizers.MultiOptimizer` with a learning rate per group of layers.

    The groups run from the first layers (the body) to the last (the
    head): by default one per top-level layer with trainable weights; with
    `groups=N`, N runs of consecutive such layers (as even as can be); or
    the `blocks` given. Each group gets a copy of `optimizer` (its config:
    momentum, weight decay, ...; not its state) at the group's rate:

    - `decay`: layer-wise decay, the head at the optimizer's rate and each
      group before it `decay` times the next: `rate * decay ** depth`;
    - `lo` (and `hi`): log-spaced from `lo` (the first group) to `hi` (the
      head; default the optimizer's rate), as fastai's `slice(lo, hi)`;
    - neither: every group at the optimizer's rate (for `frozen` alone).

    Layers named in `frozen` leave their groups for one named "frozen"
    whose rate is 0 (the first sub-optimizer): the optimizer leaves their
    weights unchanged, and keras_clr's schedules, which give each group the
    schedule's rate times its rate over the largest, keep it at 0. Their
    gradients are still computed, and a BatchNormalization among them still
    updates its moving statistics in training; to skip both, set
    `layer.trainable = False` and compile again instead.

    The groups are named "group_0" (the first) to "group_{N-1}" (the head)
    (their keys in the logs: `learning_rate_group_0`, ...); one that
    `frozen` empties is left out, and the others keep their names. Each
    group but the head is an anchored regex over its variables' paths, from
    the layer's name on (a Sequential's `sequential/dense/kernel` is
    `dense/kernel` once loaded), checked here to claim exactly its
    variables; the head is the map's default optimizer (a weight the model
    creates later trains with it). Layers set `trainable = False` now are
    in no group. The model saves and loads with it (`keras.saving.load_model`).

    Args:
        model: a built Keras model.
        optimizer: the base Keras optimizer with a float learning rate
            (e.g. `keras.optimizers.SGD(1e-3, momentum=0.9)`); not used
            itself.
        decay: the rate's factor per group from the head, in (0, 1].
        lo: the first group's rate, below `hi`.
        hi: the head's rate (needs `lo`); None: the optimizer's.
        groups: the number of groups of consecutive top-level layers.
        blocks: the groups as lists of layer names or regexes (fully
            matching layer names, those inside nested models included),
            first to head; a layer's group holds all its trainable weights.
        frozen: layer names or regexes whose weights are not updated.

    Returns:
        A `keras.optimizers.MultiOptimizer` to compile the model with.

    Raises:
        ValueError: before anything is built, on Keras below 3.15, for a
            model that is not built, an optimizer that is a MultiOptimizer,
            a LossScaleOptimizer or has a schedule, `decay` not in (0, 1],
            `lo >= hi`, `groups < 1` or more groups than layers, `groups`
            with `blocks`, a name in `blocks` or `frozen` that is no layer's,
            blocks that share a weight or leave one out, `frozen` with an
            optimizer that moves weights at rate 0 (Ftrl, ScheduleFreeAdamW),
            every weight frozen, or variables whose paths the groups cannot
            tell apart (give the layers distinct names).

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 3)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8),
        ...                           keras.layers.Dense(8), keras.layers.Dense(1)])
        >>> optimizer = keras_clr.discriminative_optimizer(
        ...     model, keras.optimizers.SGD(1e-2, momentum=0.9), decay=0.5)
        >>> [round(float(sub.learning_rate), 6) for sub in optimizer.optimizers]
        [0.0025, 0.005, 0.01]
        >>> model.compile(optimizer=optimizer, loss="mse")
        >>> history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
        ...                     callbacks=[keras_clr.OneCycle(0.1)])
        >>> sorted(key for key in history.history if key.startswith("learning_rate"))
        ['learning_rate', 'learning_rate_group_0', 'learning_rate_group_1', 'learning_rate_group_2']
        >>> logs = history.history  # each group at its share of the schedule
        >>> round(logs["learning_rate_group_0"][0] / logs["learning_rate"][0], 4)
        0.25
    """
    decay, lo, hi, groups = _check_arguments(
        model, optimizer, decay, lo, hi, groups, blocks, frozen
    )
    layers = all_layers(model)
    units = _units(model, blocks, layers)
    if groups is not None:
        if groups > len(units):
            raise ValueError(
                f"Argument `groups` must be at most the {len(units)} top-level "
                f"layers with trainable weights. Received: groups={groups}"
            )
        units = [
            [layer for i in chunk for layer in units[i]]
            for chunk in np.array_split(np.arange(len(units)), groups)
        ]
    rates = _rates(len(units), _base_rate(optimizer), decay, lo, hi)
    # Each trainable variable's group and pattern, by the layer that claims it.
    owner = {}  # id(variable) -> (group index, pattern)
    for index, unit in enumerate(units):
        for layer in unit:
            for variable in layer.trainable_weights:
                claimed = owner.get(id(variable))
                if claimed is not None and claimed[0] != index:
                    raise ValueError(
                        f"Argument `blocks` puts {variable.path} in two blocks "
                        f"({claimed[0]} and {index}). Received: blocks={blocks!r}"
                    )
                owner[id(variable)] = (index, _variable_pattern(layer, variable))
    frozen_layers = [
        layer for named in _resolve("frozen", frozen or [], layers, frozen) for layer in named
    ]
    for layer in frozen_layers:
        for variable in layer.trainable_weights:
            owner[id(variable)] = (FROZEN, _variable_pattern(layer, variable))
    missing = [v.path for v in model.trainable_variables if id(v) not in owner]
    if missing:
        raise ValueError(
            f"Argument `blocks` must hold every layer with trainable weights; "
            f"{len(missing)} weights are in none (first: {missing[0]}). "
            f"Received: blocks={blocks!r}"
        )
    patterns = {}  # group -> its variables' patterns
    for variable in model.trainable_variables:
        index, pattern = owner[id(variable)]
        patterns.setdefault(index, set()).add(pattern)
    trained = [index for index in range(len(units)) if index in patterns]
    if not trained:
        raise ValueError(
            "Argument `frozen` freezes every trainable weight of the model; "
            f"nothing would train. Received: frozen={frozen!r}"
        )

    def copy(name, rate):
        config = optimizer.get_config()
        config.update(learning_rate=float(rate), name=name)
        return type(optimizer).from_config(config)

    head = trained[-1]
    optimizers = {index: copy(group_name(index), rates[index]) for index in trained}
    mapping = {}
    if FROZEN in patterns:
        optimizers[FROZEN] = copy(FROZEN, 0.0)
        mapping["(?:" + "|".join(sorted(patterns[FROZEN])) + ")"] = optimizers[FROZEN]
    for index in trained[:-1]:
        mapping["(?:" + "|".join(sorted(patterns[index])) + ")"] = optimizers[index]
    groups_map = keras.optimizers.OptimizerMap(optimizers[head], mapping)
    for variable in model.trainable_variables:  # each pattern claims its own alone
        intended = optimizers[owner[id(variable)][0]]
        try:
            found = groups_map[variable.path]
        except ValueError:
            found = None
        if found is not intended:
            raise ValueError(
                f"The groups' patterns cannot tell {variable.path} from a weight of another "
                "group (two layers share a name across nested models); give the layers "
                f"distinct names. Received: model={model.name!r}"
            )
    return keras.optimizers.MultiOptimizer(groups_map)
