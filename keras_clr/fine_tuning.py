"""`fine_tune`: fastai's habit for a pretrained model in one call.

Stage 1 freezes the body (`layer.trainable = False` on every top-level
layer but the head) and trains the head with a one-cycle schedule for
`freeze_epochs`; stage 2 unfreezes and trains every layer with a one-cycle
schedule for `epochs`, at discriminative rates (a Keras MultiOptimizer from
`discriminative_optimizer`: the body's first layers at `max_lr / lr_mult`,
log-spaced up to the head at `max_lr`, or a layer-wise `decay`). Each stage
is a `fit_one_cycle`, its `max_lr` tuned for it unless given.
"""

import numbers
import warnings
from typing import NamedTuple

import keras

from keras_clr import _checks
from keras_clr import _keras_internals
from keras_clr import optimizers
from keras_clr import race
from keras_clr.discriminative import all_layers
from keras_clr.discriminative import discriminative_optimizer
from keras_clr.schedule_arguments import check_no_one_cycle_kwargs
from keras_clr.schedule_arguments import one_cycle_options
from keras_clr.tuning import fit_one_cycle

LR_MULT = 100.0  # fastai's: the first group's rate is the head's / LR_MULT


class FineTuneHistory(NamedTuple):
    """The `keras.callbacks.History` of each stage of `fine_tune`.

    A named tuple: `frozen, unfrozen = keras_clr.fine_tune(...)` works too.

    Attributes:
        frozen: stage 1's (the head alone), None when `freeze_epochs=0`.
        unfrozen: stage 2's (every layer, discriminative rates).

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
        ...                           keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> stages = keras_clr.fine_tune(model, x, y, epochs=2, freeze_epochs=0,
        ...                              max_lr=0.05, batch_size=16, verbose=0)
        >>> stages.frozen is None, len(stages.unfrozen.epoch)
        (True, 2)
    """

    frozen: object
    unfrozen: object


def _check_max_lr(max_lr):
    """(stage 1's, stage 2's) `max_lr`: each "auto", "race" or a positive float."""
    pair = tuple(max_lr) if isinstance(max_lr, (tuple, list)) else (max_lr, max_lr)
    if len(pair) != 2:
        raise ValueError(
            "Argument `max_lr` must be 'auto', 'race', a positive float, or a "
            f"pair of them (stage 1's, stage 2's). Received: max_lr={max_lr!r}"
        )
    checked = []
    for value in pair:
        if isinstance(value, str) and value in ("auto", "race"):
            checked.append(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            checked.append(_checks.positive_finite("max_lr", value))
        else:
            raise ValueError(
                "Argument `max_lr` must be 'auto', 'race', a positive float, or "
                f"a pair of them (stage 1's, stage 2's). Received: max_lr={max_lr!r}"
            )
    return tuple(checked)


def _head_layers(model, head):
    """The top-level layers stage 1 trains: `head` (names), by default the
    last layer with trainable weights."""
    trainable = [layer for layer in model.layers if layer.trainable_weights]
    if head is None:
        return trainable[-1:]
    names = [head] if isinstance(head, str) else head
    if (
        not isinstance(names, (list, tuple))
        or not names
        or not all(isinstance(name, str) for name in names)
    ):
        raise ValueError(
            "Argument `head` must be a top-level layer's name or a list of "
            f"them. Received: head={head!r}"
        )
    by_name = {layer.name: layer for layer in model.layers}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"Argument `head` names {unknown[0]!r}, not a top-level layer of "
            f"the model ({', '.join(by_name)}). Received: head={head!r}"
        )
    layers = [by_name[name] for name in names]
    if not any(layer.trainable_weights for layer in layers):
        raise ValueError(
            f"Argument `head` must hold a layer with trainable weights. Received: head={head!r}"
        )
    if all(layer in layers for layer in trainable):
        raise ValueError(
            "Argument `head` holds every layer with trainable weights: "
            "there is no body to freeze. Pass `freeze_epochs=0` to skip stage "
            f"1. Received: head={head!r}"
        )
    return layers


def _copy(optimizer, rate):
    """A fresh optimizer of `optimizer`'s config, at `rate` when it is a float."""
    config = optimizer.get_config()
    if isinstance(rate, float):
        config["learning_rate"] = rate
    return type(optimizer).from_config(config)


def fine_tune(
    model,
    x=None,
    y=None,
    *,
    epochs,
    freeze_epochs=1,
    head=None,
    max_lr="auto",
    lr_mult=None,
    decay=None,
    blocks=None,
    one_cycle=None,
    **fit_kwargs,
):
    """Trains a pretrained model's head, then all of it at discriminative rates.

    Stage 1 (`freeze_epochs` epochs): every top-level layer but `head` is
    set `trainable = False`, the model compiled again (Keras needs it for a
    change of `trainable` to take effect) and trained by `fit_one_cycle`.
    Stage 2 (`epochs` epochs): the layers get back the `trainable` they had
    when `fine_tune` was called, the model is compiled with
    `discriminative_optimizer(model, optimizer, lo=max_lr / lr_mult,
    hi=max_lr)` (one group per top-level layer with trainable weights, or
    `blocks`), or with `decay=` instead, and trained by `fit_one_cycle`:
    the OneCycle gives the head `max_lr` and each group its share.

    What is kept across the stages: the weights, and the compile arguments
    (loss, metrics, `steps_per_execution`, ...), which each stage reuses
    with a new optimizer. No optimizer state is kept: the optimizer the
    model was compiled with is the template (its class and config:
    momentum, weight decay, ...) and is not itself trained; stage 1 gets a
    fresh copy of it, and stage 2 a new MultiOptimizer of fresh copies, so
    its update count starts at 0 and the head's moments (SGD's velocity,
    Adam's m and v) from stage 1 are not carried: a one-cycle starts at a
    low rate, which gives them time to build up again. A layer that was
    frozen before the call stays frozen and in no group (with a warning:
    set `trainable = True` first to fine-tune it). After the call the
    model stays compiled with stage 2's MultiOptimizer (it saves and loads
    with it). If stage 1 fails, the layers' `trainable` and the model's
    compile are put back as they were. In stage 1 a BatchNormalization in
    the frozen body runs in inference mode (Keras's rule for a layer with
    `trainable = False`, as in its transfer-learning guide; fastai keeps
    them training); in stage 2 it trains again. `callbacks` run in both
    stages (two fits): a `CSVLogger` needs `append=True` to keep stage 1's
    rows, and a stateful callback (`EarlyStopping`) starts again in stage 2.

    fastai's `fine_tune` runs stage 1 at `base_lr` and stage 2 at
    `base_lr / 2` with `pct_start=0.99`, then 0.3; here the rates are tuned
    per stage unless given, and `one_cycle` applies to both stages.

    Args:
        model: a compiled, built Keras model; its optimizer is the template.
        x: the training data, as for `model.fit` (NumPy arrays where a
            stage races).
        y: the targets, with array `x`.
        epochs: stage 2's epochs (at least 1).
        freeze_epochs: stage 1's epochs; 0 skips stage 1.
        head: the top-level layers stage 1 trains (a name or a list of
            names); default the last layer with trainable weights.
        max_lr: "auto" (tune each stage's `max_lr` with `tune_max_lr`),
            "race" (race candidates through each stage, as
            `fit_one_cycle(max_lr="race")`: NumPy arrays, no callbacks;
            about three trainings of compute for a stage of 4 epochs or
            more, every candidate through a stage of 1 epoch), a positive float for both
            stages, or a pair (stage 1's, stage 2's), each "auto", "race" or
            a float.
        lr_mult: stage 2's head rate over its first group's (default
            `LR_MULT`, 100, as fastai's), above 1.
        decay: instead of `lr_mult`, layer-wise decay in (0, 1]: each group
            `decay` times the next one's.
        blocks: stage 2's groups (see `discriminative_optimizer`).
        one_cycle: the further `OneCycle` arguments of both stages, as for
            `fit_one_cycle`.
        **fit_kwargs: passed to both stages' `fit_one_cycle` (`batch_size`,
            `callbacks`, `validation_data`, `budget_steps`, ...).

    Returns:
        A `FineTuneHistory`: `(frozen, unfrozen)`, each stage's History.

    Raises:
        ValueError: before any step, for a model that is not compiled or
            built, or is compiled with a MultiOptimizer; `epochs` below 1,
            `freeze_epochs` below 0, Keras below 3.15, an unknown or weightless `head` (or one
            with every layer), an invalid `max_lr`, `lr_mult` not above 1,
            both `lr_mult` and `decay`, an invalid `one_cycle`, a OneCycle
            argument passed as a keyword of its own, and for what
            `discriminative_optimizer` refuses; as `fit_one_cycle` does.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> body = keras.layers.Dense(8, activation="relu", name="body")
        >>> head = keras.layers.Dense(1, name="head")
        >>> model = keras.Sequential([keras.Input((4,)), body, head])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> stages = keras_clr.fine_tune(model, x, y, epochs=2, batch_size=16,
        ...                              max_lr=(1e-2, 5e-3), verbose=0)
        >>> len(stages.frozen.epoch), len(stages.unfrozen.epoch)
        (1, 2)
        >>> [sub.name for sub in model.optimizer.optimizers]  # stage 2's groups
        ['group_0', 'group_1']
        >>> logs = stages.unfrozen.history  # the body at 1/100 of the head's rate
        >>> round(logs["learning_rate_group_1"][0] / logs["learning_rate_group_0"][0])
        100
    """
    if not hasattr(keras.optimizers, "MultiOptimizer"):
        raise ValueError(
            "fine_tune's second stage compiles the model with a "
            "keras.optimizers.MultiOptimizer, which needs Keras 3.15 or later. "
            f"Upgrade Keras. Received: keras.__version__={keras.__version__!r}"
        )
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with an optimizer (the template "
            f"of each stage's). Received: model={model.name!r}, not compiled"
        )
    template = optimizers.base_optimizer(model)
    if optimizers.is_multi_optimizer(template):
        raise ValueError(
            "Argument `model` must be compiled with a plain optimizer, the "
            "template fine_tune copies for each stage and group; this one is a "
            f"MultiOptimizer. Received: optimizer={template.name!r}"
        )
    epochs = _checks.positive_int("epochs", epochs)
    if (
        isinstance(freeze_epochs, bool)
        or not isinstance(freeze_epochs, numbers.Integral)
        or freeze_epochs < 0
    ):
        raise ValueError(
            "Argument `freeze_epochs` must be a non-negative integer. "
            f"Received: freeze_epochs={freeze_epochs!r}"
        )
    rates = _check_max_lr(max_lr)
    if decay is not None and lr_mult is not None:
        raise ValueError(
            f"Pass `lr_mult` or `decay`, not both. Received: lr_mult={lr_mult!r}, decay={decay!r}"
        )
    if decay is None:
        given = lr_mult
        lr_mult = LR_MULT if lr_mult is None else _checks.positive_finite("lr_mult", lr_mult)
        if lr_mult <= 1:
            raise ValueError(
                "Argument `lr_mult` must be above 1 (the head's rate over the "
                f"first group's). Received: lr_mult={given!r}"
            )
    check_no_one_cycle_kwargs(fit_kwargs, "fine_tune")
    for key in ("lo", "hi", "groups", "frozen"):
        if key in fit_kwargs:
            raise ValueError(
                f"Argument `{key}` is discriminative_optimizer's, not fine_tune's: "
                "fine_tune spreads stage 2's rates by `lr_mult` (or `decay`) over "
                "`blocks`; to choose `lo`, `hi`, `groups` or `frozen`, compile with "
                "discriminative_optimizer and fit with OneCycle. Received: "
                f"{key}={fit_kwargs[key]!r}"
            )
    if "race" in rates:
        # checked now: a stage 2 race would otherwise refuse them after stage 1
        race.check_inputs(
            x,
            y,
            {
                key: value
                for key, value in fit_kwargs.items()
                if key not in ("budget_steps", "candidates", "race_seed")
            },
        )
    options = one_cycle_options(one_cycle, "fine_tune")
    head_layers = _head_layers(model, head) if freeze_epochs else []
    kept = [layer.name for layer in model.layers if layer.weights and not layer.trainable]
    if kept:
        warnings.warn(
            f"fine_tune keeps the layers that are frozen now frozen in both stages: "
            f"{', '.join(kept)}. To fine-tune them in stage 2 (as after Keras's "
            "`base_model.trainable = False`), set `trainable = True` on them first; "
            "stage 1 freezes the body itself.",
            stacklevel=2,
        )
    # Stage 2's optimizer, built now so that its arguments are checked before
    # any step, from the layers as they are trainable now.
    if decay is not None:
        unfrozen = discriminative_optimizer(model, template, decay=decay, blocks=blocks)
    else:
        top = rates[1] if isinstance(rates[1], float) else None
        unfrozen = discriminative_optimizer(
            model,
            _copy(template, top),
            lo=(top or float(template.learning_rate)) / lr_mult,
            blocks=blocks,
        )
    arguments = _keras_internals.compile_arguments(model)
    if "callbacks" in fit_kwargs:
        fit_kwargs["callbacks"] = list(fit_kwargs["callbacks"] or [])
    frozen_history = None
    if freeze_epochs:
        flags = [(layer, layer.trainable) for layer in all_layers(model)]
        try:
            for layer in model.layers:
                if layer not in head_layers:
                    layer.trainable = False
            model.compile(**{**arguments, "optimizer": _copy(template, rates[0])})
            frozen_history = fit_one_cycle(
                model, x, y, epochs=freeze_epochs, max_lr=rates[0], one_cycle=options, **fit_kwargs
            )
        except BaseException:
            for layer, flag in flags:
                layer.trainable = flag
            model.compile(**arguments)
            raise
        for layer, flag in flags:  # outer layers first, then the ones inside
            layer.trainable = flag
    model.compile(**{**arguments, "optimizer": unfrozen})
    unfrozen_history = fit_one_cycle(
        model, x, y, epochs=epochs, max_lr=rates[1], one_cycle=options, **fit_kwargs
    )
    return FineTuneHistory(frozen_history, unfrozen_history)
