"""The `one_cycle` argument of `tune_max_lr`, `fit_one_cycle`, `fine_tune`
and the race: the `OneCycle` arguments besides `max_lr` and
`total_steps`, which those set themselves, checked before any step.
"""

import inspect

from keras_clr import optimizers
from keras_clr.callbacks import OneCycle

# The OneCycle arguments a probe takes from the training: all but these two.
ONE_CYCLE_OPTIONS = tuple(name for name in inspect.signature(OneCycle).parameters
                          if name not in ("max_lr", "total_steps"))


def one_cycle_options(one_cycle, owner):
    """The `OneCycle` arguments (besides `max_lr` and `total_steps`) of
    `one_cycle`: None, a dict of them, or a `keras_clr.OneCycle` whose
    `max_lr` is replaced (and whose `total_steps` must be None); ValueError
    for anything else, an unknown key or an invalid value."""
    if one_cycle is None:
        return {}
    if isinstance(one_cycle, OneCycle):
        if one_cycle.total_steps is not None:
            raise ValueError(
                f"Argument `one_cycle` is a OneCycle with its own total_steps; "
                f"{owner} sets the probes' lengths and the training's. Build it "
                f"with total_steps=None. Received: one_cycle=OneCycle(..., "
                f"total_steps={one_cycle.total_steps})")
        return {name: getattr(one_cycle, name) for name in ONE_CYCLE_OPTIONS}
    if not isinstance(one_cycle, dict):
        raise ValueError("Argument `one_cycle` must be a dict of OneCycle arguments "
                         f"(or a keras_clr.OneCycle). Received: one_cycle={one_cycle!r}")
    for key in one_cycle:
        if key in ("max_lr", "total_steps"):
            raise ValueError(f"Argument `one_cycle` sets `{key}`, which {owner} sets "
                             f"itself. Received: one_cycle={one_cycle!r}")
        if key not in ONE_CYCLE_OPTIONS:
            raise ValueError(
                f"Argument `one_cycle` must hold OneCycle arguments "
                f"({', '.join(ONE_CYCLE_OPTIONS)}); `{key}` is not one. "
                f"Received: one_cycle={one_cycle!r}")
    try:
        OneCycle(1.0, **one_cycle)
    except ValueError as error:
        raise ValueError(f"Argument `one_cycle` holds an invalid OneCycle argument "
                         f"({error}). Received: one_cycle={one_cycle!r}") from None
    return dict(one_cycle)


def check_no_one_cycle_kwargs(fit_kwargs, owner):
    """ValueError for a OneCycle argument passed where `fit`'s belong."""
    for key in fit_kwargs:
        if key in ONE_CYCLE_OPTIONS:
            raise ValueError(
                f"Argument `{key}` is a OneCycle argument, not one of `fit`'s: "
                f"pass it to {owner} as one_cycle={{{key!r}: {fit_kwargs[key]!r}}}. "
                f"Received: {key}={fit_kwargs[key]!r}")


def check_optimizer(model, options, owner):
    """The checks OneCycle makes as training begins, made before any step:
    an optimizer without a momentum needs cycle_momentum=False."""
    optimizer = optimizers.base_optimizer(model)
    optimizers.know_groups(model)
    optimizers.check_learning_rate(optimizer, "OneCycle")
    cycle = OneCycle(1.0, **options).cycle_momentum
    try:
        optimizers.schedule_groups(optimizer, "OneCycle", cycle)
    except ValueError as error:
        raise ValueError(f"{error} (with {owner}: "
                         "one_cycle={'cycle_momentum': False})") from None
