"""The schedule that `tune_max_lr`, the race and `fit_one_cycle` choose a
peak for: a `OneCycle` or a `WarmupStableDecay`, given without a length and
rebuilt at each candidate's rate for each run's length.

A `OneCycle` is shaped by fractions (`pct_start`), so a probe shorter than
the training is the same schedule compressed. A `WarmupStableDecay`
template's warm-up (and a cooldown given as a number of steps) is counted
in the training's steps; a shorter run scales them by its share of the
training, so a probe warms up and cools down over the same fractions of
its length as the training will.
"""

import inspect

from keras_clr import schedules
from keras_clr.callbacks import OneCycle
from keras_clr.callbacks import WarmupStableDecay

# The arguments a run takes from the template: all but the rate and length.
ONE_CYCLE_OPTIONS = tuple(name for name in inspect.signature(OneCycle).parameters
                          if name not in ("max_lr", "total_steps"))
WSD_OPTIONS = tuple(name for name in inspect.signature(WarmupStableDecay).parameters
                    if name not in ("max_lr", "total_steps", "stable_steps"))
_WSD_DEFAULTS = {name: parameter.default for name, parameter
                 in inspect.signature(WarmupStableDecay).parameters.items()}


class PlannedSchedule:
    """A schedule's kind and arguments, without `max_lr` and a length.

    Attributes:
        kind: the callback class, `OneCycle` or `WarmupStableDecay`.
        options: its other arguments, a dict ({} for the defaults).
    """

    def __init__(self, kind, options):
        self.kind, self.options = kind, dict(options)
        self._template = kind(1.0, **self.options)

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
        return self._template.cycle_momentum

    def peak_momentum(self, test_momentum):
        """The momentum the schedule holds at its peak rate (what the range
        test's default rule corrects for): its `base_momentum`, or the
        test's own momentum when it leaves the momentum alone."""
        if self.cycle_momentum is False:
            return test_momentum
        return self._template.base_momentum

    def as_one_cycle(self):
        """A `OneCycle` with this schedule's momenta (the schedule itself
        when it is one)."""
        if not self.wsd:
            return self
        keep = ("cycle_momentum", "base_momentum", "max_momentum")
        return PlannedSchedule(OneCycle, {key: value for key, value
                                          in self.options.items() if key in keep})

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
                value = options.setdefault(key, _WSD_DEFAULTS[key])
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
        shown = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"{self.name}(max_lr, total_steps={length}{shown})"

    def shown(self):
        """How a report of the runs shows the schedule."""
        if not self.wsd:
            return f"one_cycle={self.options!r}"
        return f"schedule={self.name}, options={self.options!r}"

    def __repr__(self):
        return self.described("...")
