"""The schedule that `tune_max_lr`, the race, `fit_one_cycle` and
`fine_tune` train with, from their `one_cycle` or `schedule` argument:
a `OneCycle` or a `WarmupStableDecay` given without `max_lr` and a length,
checked before any step and rebuilt at each candidate's rate for each
run's length (`PlannedSchedule`).

A `OneCycle` is shaped by fractions (`pct_start`), so a run shorter than
the training is the same schedule compressed. A `WarmupStableDecay`
template's warm-up (and a cooldown given as a number of steps) is counted
in the training's steps; a shorter run scales them by its share of the
training.
"""

import inspect

from keras_clr import optimizers
from keras_clr import schedules
from keras_clr.callbacks import OneCycle
from keras_clr.callbacks import WarmupStableDecay

# The OneCycle arguments a run takes from the training: all but these two.
ONE_CYCLE_OPTIONS = tuple(
    name for name in inspect.signature(OneCycle).parameters if name not in ("max_lr", "total_steps")
)
# The WarmupStableDecay arguments a run takes from the template.
WSD_OPTIONS = tuple(
    name
    for name in inspect.signature(WarmupStableDecay).parameters
    if name not in ("max_lr", "total_steps", "stable_steps")
)


class PlannedSchedule:
    """A schedule's kind and arguments, without `max_lr` and a length.

    Attributes:
        kind: the callback class, `OneCycle` or `WarmupStableDecay` (or a
            subclass whose constructor takes their arguments).
        options: the arguments every run is built with, a dict.
    """

    def __init__(self, kind, options):
        self.kind, self.options = kind, dict(options)
        self.template = kind(1.0, **self.options)  # at max_lr 1.0, without a length

    @property
    def shown_options(self):
        """The arguments that differ from the kind's own defaults."""
        defaults = _defaults(self.kind)
        return {
            key: value
            for key, value in self.options.items()
            if key not in defaults or not _same(value, defaults[key])
        }

    @property
    def wsd(self):
        """Whether the schedule is planned for its run's length (a
        `WarmupStableDecay`) rather than shaped by fractions of it."""
        return issubclass(self.kind, WarmupStableDecay)

    @property
    def name(self):
        return self.kind.__name__

    @property
    def cycle_momentum(self):
        return self.template.cycle_momentum

    def peak_momentum(self, test_momentum):
        """The momentum the schedule holds at its peak rate (what the range
        test's default rule corrects for): its `base_momentum`, or the
        test's own momentum when it leaves the momentum alone."""
        if self.cycle_momentum is False:
            return test_momentum
        return self.template.base_momentum

    def as_one_cycle(self):
        """A `OneCycle` with this schedule's momenta (the schedule itself
        when it is one)."""
        if not self.wsd:
            return self
        keep = ("cycle_momentum", "base_momentum", "max_momentum")
        return PlannedSchedule(
            OneCycle, {key: value for key, value in self.options.items() if key in keep}
        )

    def build(self, max_lr, steps, training_steps=None):
        """The callback for a run of `steps` optimizer updates at `max_lr`,
        shaped as the training of `training_steps` updates (None: the run
        is that training) will be."""
        if not self.wsd:
            return self.kind(max_lr, total_steps=steps, **self.options)
        options = dict(self.options)
        if training_steps is not None and training_steps != steps:
            share = steps / training_steps
            for key in ("warmup_steps", "decay_steps"):
                value = options.setdefault(key, _defaults(self.kind)[key])
                if isinstance(value, int) and value > 0:
                    options[key] = max(1, round(value * share))
            # a run too short for both: the cooldown keeps its steps
            cooldown = schedules.decay_length(options["decay_steps"], steps)
            options["warmup_steps"] = min(options["warmup_steps"], max(0, steps - cooldown))
        return self.kind(max_lr, total_steps=steps, **options)

    def for_fit(self, max_lr, steps):
        """The callback of the training itself: a `OneCycle` reads its
        length from `fit`; a `WarmupStableDecay` is planned for `steps`."""
        if not self.wsd:
            return self.kind(max_lr, **self.options)
        return self.kind(max_lr, total_steps=steps, **self.options)

    def described(self, length="probe_steps"):
        shown = "".join(f", {key}={value!r}" for key, value in self.shown_options.items())
        return f"{self.name}(max_lr, total_steps={length}{shown})"

    def shown(self):
        """How a report of the runs shows the schedule."""
        if not self.wsd:
            return f"one_cycle={self.shown_options!r}"
        return f"schedule={self.name}, options={self.shown_options!r}"

    def __repr__(self):
        return self.described("...")


def one_cycle_options(one_cycle, owner, argument="one_cycle"):
    """The `OneCycle` arguments (besides `max_lr` and `total_steps`) of
    `one_cycle`: None, a dict of them, or a `keras_clr.OneCycle` whose
    `max_lr` is replaced (and whose `total_steps` must be None); ValueError
    for anything else, an unknown key or an invalid value. `argument` is
    the name the messages give it."""
    if one_cycle is None:
        return {}
    if isinstance(one_cycle, OneCycle):
        if one_cycle.total_steps is not None:
            raise ValueError(
                f"Argument `{argument}` is a OneCycle with its own total_steps; "
                f"{owner} sets the length of each run itself. Build it "
                f"with total_steps=None. Received: {argument}=OneCycle(..., "
                f"total_steps={one_cycle.total_steps})"
            )
        return {name: getattr(one_cycle, name) for name in ONE_CYCLE_OPTIONS}
    if not isinstance(one_cycle, dict):
        raise ValueError(
            "Argument `one_cycle` must be a dict of OneCycle arguments "
            f"(or a keras_clr.OneCycle). Received: one_cycle={one_cycle!r}"
        )
    for key in one_cycle:
        if key in ("max_lr", "total_steps"):
            raise ValueError(
                f"Argument `one_cycle` sets `{key}`, which {owner} sets "
                f"itself. Received: one_cycle={one_cycle!r}"
            )
        if key not in ONE_CYCLE_OPTIONS:
            raise ValueError(
                f"Argument `one_cycle` must hold OneCycle arguments "
                f"({', '.join(ONE_CYCLE_OPTIONS)}); `{key}` is not one. "
                f"Received: one_cycle={one_cycle!r}"
            )
    try:
        OneCycle(1.0, **one_cycle)
    except ValueError as error:
        raise ValueError(
            f"Argument `one_cycle` holds an invalid OneCycle argument "
            f"({error}). Received: one_cycle={one_cycle!r}"
        ) from None
    return dict(one_cycle)


def check_no_one_cycle_kwargs(fit_kwargs, owner):
    """ValueError for a OneCycle argument passed where `fit`'s belong."""
    for key in fit_kwargs:
        if key in ONE_CYCLE_OPTIONS:
            raise ValueError(
                f"Argument `{key}` is a OneCycle argument, not one of `fit`'s: "
                f"pass it to {owner} as one_cycle={{{key!r}: {fit_kwargs[key]!r}}}. "
                f"Received: {key}={fit_kwargs[key]!r}"
            )


def planned_schedule(one_cycle, schedule, owner):
    """The `PlannedSchedule` of `one_cycle` (None, a dict of `OneCycle`
    arguments, or a `OneCycle` built with `total_steps=None`) or
    `schedule` (a `OneCycle` or `WarmupStableDecay` built without a
    length); ValueError for anything else, or for both."""
    if schedule is None:
        return PlannedSchedule(OneCycle, one_cycle_options(one_cycle, owner))
    if isinstance(schedule, PlannedSchedule) and one_cycle is None:
        return schedule
    if one_cycle is not None:
        raise ValueError(
            f"Pass `one_cycle` or `schedule` to {owner}, not both. Received: "
            f"one_cycle={one_cycle!r}, schedule={type(schedule).__name__}"
        )
    if isinstance(schedule, OneCycle):
        return _rebuilt(schedule, one_cycle_options(schedule, owner, "schedule"), owner)
    if isinstance(schedule, WarmupStableDecay):
        if schedule.total_steps is not None or schedule.stable_steps is not None:
            raise ValueError(
                f"Argument `schedule` is a WarmupStableDecay with its own length; "
                f"{owner} sets the length of each run itself: build it with "
                f"total_steps=None and stable_steps=None (its warmup_steps count "
                f"steps of the training). Received: schedule=WarmupStableDecay(..., "
                f"total_steps={schedule.total_steps}, "
                f"stable_steps={schedule.stable_steps})"
            )
        return _rebuilt(schedule, {key: getattr(schedule, key) for key in WSD_OPTIONS}, owner)
    raise ValueError(
        "Argument `schedule` must be a keras_clr.OneCycle or keras_clr.WarmupStableDecay "
        f"built without a length (its max_lr is replaced). Received: schedule={schedule!r}"
    )


def _rebuilt(schedule, options, owner):
    """The `PlannedSchedule` of a template: every run is built as
    `type(schedule)(max_lr, **options, <length>)`; ValueError, before any
    step, for a subclass that this would not rebuild as it is (its
    constructor takes other arguments, or sets other attributes)."""
    kind = type(schedule)
    base = OneCycle if isinstance(schedule, OneCycle) else WarmupStableDecay
    length = {"total_steps": None} if base is OneCycle else {}
    try:
        copy = kind(schedule.max_lr, **options, **length)
    except TypeError as error:
        copy, why = None, f"its constructor does not take {base.__name__}'s arguments ({error})"
    if copy is not None:
        differ = sorted(
            key
            for key, value in vars(schedule).items()
            if not key.startswith("_") and not _same(vars(copy).get(key, _MISSING), value)
        )
        why = f"built again from {base.__name__}'s arguments it differs in {differ}"
        if not differ:
            return PlannedSchedule(kind, options)
    raise ValueError(
        f"Argument `schedule` is a {kind.__name__}, which {owner} cannot rebuild at each "
        f"candidate's rate and each run's length: {why}. Pass a keras_clr.{base.__name__} "
        f"(or a subclass that takes its arguments). Received: schedule={kind.__name__}"
    )


_MISSING = object()


def _defaults(kind):
    """The constructor defaults of `kind`, a subclass's over its bases'
    (a subclass that passes `**kwargs` on keeps its base's)."""
    out = {}
    for cls in reversed(kind.__mro__):
        if "__init__" in vars(cls):
            for name, parameter in inspect.signature(cls.__init__).parameters.items():
                if parameter.default is not inspect.Parameter.empty:
                    out[name] = parameter.default
    return out


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:  # arrays, or values that do not compare
        return a is b


def check_optimizer(model, plan, owner):
    """The checks the schedule (a `PlannedSchedule`) makes as training
    begins, made before any step: an optimizer without a momentum needs
    cycle_momentum=False."""
    optimizer = optimizers.base_optimizer(model)
    optimizers.know_groups(model)
    optimizers.check_learning_rate(optimizer, plan.name)
    try:
        optimizers.schedule_groups(optimizer, plan.name, plan.cycle_momentum)
    except ValueError as error:
        fix = (
            "one_cycle={'cycle_momentum': False}"
            if not plan.wsd
            else "schedule=WarmupStableDecay(..., cycle_momentum=False)"
        )
        raise ValueError(f"{error} (with {owner}: {fix})") from None


def check_planned_length(plan, steps, owner):
    """ValueError, before any step, when the schedule cannot run `steps`
    updates (a warm-up and cooldown longer than the training)."""
    try:
        plan.build(1.0, steps)
    except ValueError as error:
        raise ValueError(
            f"The schedule cannot plan the {steps}-step training of {owner}: {error}"
        ) from None
