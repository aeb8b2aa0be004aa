"""Serializable learning-rate (and momentum) schedules built on `curves`.

`CyclicalLearningRate` and its `Triangular`, `Triangular2` and `Exponential`
variants take the argument names of TF-Addons' end-of-life
`tfa.optimizers` classes and give the same value at every step, so migrating
is an import change. `OneCycleLearningRate` is PyTorch's `OneCycleLR` as a
schedule. All are registered with Keras: a model compiled with one saves to
`.keras` and loads back in safe mode.

Called with a Python int or a NumPy integer array, a schedule evaluates in
float64 on the host and returns a float (or a float64 array). Called with a
tensor, as an optimizer does with its step counter, it evaluates inside the
graph (float64 arithmetic on int64 steps) and returns a float32 tensor: with
`keras.ops` on TensorFlow; with jax.numpy (in JAX's 64-bit mode, for the
evaluation only) and torch on the other backends, where keras.ops would
round 64-bit values to 32 bits.
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_clr import _backend
from keras_clr import _checks
from keras_clr import curves

_PACKAGE = "keras_clr"


def _is_host_step(step):
    if isinstance(step, (numbers.Integral, np.integer, list, tuple)):
        return True
    return isinstance(step, np.ndarray)


# The scale functions of the named modes are registered so that a schedule
# built on them by hand saves and loads in safe mode.
triangular_scale = keras.saving.register_keras_serializable(_PACKAGE)(curves.triangular_scale)
triangular2_scale = keras.saving.register_keras_serializable(_PACKAGE)(curves.triangular2_scale)


class _Curve(keras.optimizers.schedules.LearningRateSchedule):
    """Dispatches a step to the host (NumPy) or graph (keras.ops) curve."""

    def curve(self, step, xp):
        """The value at `step` (int64, clipped at 0), computed with the
        array namespace `xp` (`keras_clr.curves.NumpyOps` on the host, the
        backend's in the graph); `__call__` picks `xp` and the dtype."""
        raise NotImplementedError

    def __call__(self, step):
        # A step before 0 takes step 0's value.
        if _is_host_step(step):
            step = np.maximum(np.asarray(step, dtype=np.int64), 0)
            value = np.asarray(self.curve(step, curves.NumpyOps), dtype=np.float64)
            return float(value) if value.ndim == 0 else value
        with _backend.graph_precision():
            step = ops.maximum(ops.cast(step, "int64"), 0)
            return ops.cast(self.curve(step, _backend.graph_ops()), "float32")


def _serialize_fn(fn):
    return keras.saving.serialize_keras_object(fn)


def _deserialize_fn(config, owner):
    if not isinstance(config, dict):
        return keras.saving.deserialize_keras_object(config)
    try:
        return keras.saving.deserialize_keras_object(config)
    except (ValueError, TypeError) as error:
        if config.get("class_name") == "__lambda__":
            raise ValueError(
                f"{owner} was saved with a lambda as `scale_fn`, which Keras "
                "will not restore in safe mode. Load it with "
                "`keras.models.load_model(..., safe_mode=False)` if you trust "
                "the file, or save it with a named schedule "
                "(TriangularCyclicalLearningRate, "
                "Triangular2CyclicalLearningRate, "
                "ExponentialCyclicalLearningRate) or a function decorated with "
                "`@keras.saving.register_keras_serializable()`."
            ) from error
        raise


def check_cyclical(
    initial,
    maximal,
    step_size,
    step_size_down,
    scale_mode,
    names=("initial_learning_rate", "maximal_learning_rate", "step_size"),
):
    """Checks a cyclical schedule's arguments; `names` are what the errors
    call the first three (the callback names them base_lr, max_lr, ...)."""
    initial = _checks.positive_finite(names[0], initial)
    maximal = _checks.positive_finite(names[1], maximal)
    _checks.ordered(names[0], initial, names[1], maximal)
    step_size = _checks.positive_int(names[2], step_size)
    if step_size_down is not None:
        step_size_down = _checks.positive_int("step_size_down", step_size_down)
    _checks.one_of("scale_mode", scale_mode, ("cycle", "iterations"))
    return initial, maximal, step_size, step_size_down


@keras.saving.register_keras_serializable(_PACKAGE)
class ExponentialScale:
    """The scale function of the `exp_range` mode: x -> `gamma ** x`.

    A registered object rather than a closure, so that a schedule built on it
    (`ExponentialCyclicalLearningRate`, or a `CyclicalMomentum` that follows
    one) saves and loads in safe mode.

    Args:
        gamma: the decay per step (or per cycle), in (0, 1].

    Returns:
        Called with x (a step or cycle number, a float, an array or a
        tensor), `gamma ** x`.

    Raises:
        ValueError: for a `gamma` outside (0, 1].

    Example:
        >>> from keras_clr.schedules import CyclicalMomentum, ExponentialScale
        >>> scale = ExponentialScale(0.5)
        >>> scale(0), scale(3)
        (1.0, 0.125)
        >>> momentum = CyclicalMomentum(0.8, 0.9, 4, scale, "iterations")
        >>> round(momentum(4), 5)  # the first trough: 0.9 - 0.1 * 0.5 ** 4
        0.89375
    """

    def __init__(self, gamma):
        self.gamma = _checks.in_interval("gamma", gamma, 0.0, 1.0, low_open=True)

    def __call__(self, x):
        return self.gamma**x

    def get_config(self):
        return {"gamma": self.gamma}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(_PACKAGE)
class CyclicalLearningRate(_Curve):
    """Cyclical learning rate (Smith 2017) with a custom scale function.

    The rate rises linearly from `initial_learning_rate` to
    `maximal_learning_rate` over `step_size` steps, falls back over
    `step_size_down` steps (default: `step_size`), and the height of each
    cycle is multiplied by `scale_fn(cycle)` or `scale_fn(step)`.

    Args:
        initial_learning_rate: the lower bound, a positive float.
        maximal_learning_rate: the upper bound, at least the lower bound.
        step_size: steps in the rising half of a cycle.
        scale_fn: x -> factor. Register it with
            `@keras.saving.register_keras_serializable()` to save and load the
            schedule in safe mode; a lambda cannot be restored there.
        scale_mode: `"cycle"` passes the 1-based cycle number to `scale_fn`,
            `"iterations"` the 0-based step.
        name: name of the schedule.
        step_size_down: steps in the falling half (an extension over
            TF-Addons, as in PyTorch's `CyclicLR`); None: `step_size`.

    Returns:
        Called with a step (a Python int, a NumPy integer array or an
        integer tensor), the learning rate of that step: a float, a float64
        array or a float32 tensor (see the module docstring). A step before
        0 takes step 0's value.

    Raises:
        ValueError: for a non-positive or non-finite rate, bounds in the wrong
            order, a step size that is not a positive integer, an unknown
            `scale_mode` or a `scale_fn` that is not callable.

    Example:
        >>> import keras, numpy as np
        >>> from keras_clr.schedules import CyclicalLearningRate, triangular2_scale
        >>> schedule = CyclicalLearningRate(1e-3, 1e-2, step_size=4,
        ...                                 scale_fn=triangular2_scale)
        >>> [round(schedule(step), 5) for step in range(0, 17, 2)]
        [0.001, 0.0055, 0.01, 0.0055, 0.001, 0.00325, 0.0055, 0.00325, 0.001]

        An optimizer applies it at each update, and it saves and loads with
        the model (`scale_fn` is a registered function):

        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(learning_rate=schedule), loss="mse")
        >>> history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
        >>> round(float(model.optimizer.learning_rate), 5)  # step 12's, the next
        0.0055
        >>> config = keras.saving.serialize_keras_object(schedule)
        >>> keras.saving.deserialize_keras_object(config)(10) == schedule(10)
        True

    References:
        Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
        Networks. arXiv:1506.01186.
    """

    def __init__(
        self,
        initial_learning_rate,
        maximal_learning_rate,
        step_size,
        scale_fn,
        scale_mode="cycle",
        name="CyclicalLearningRate",
        step_size_down=None,
    ):
        super().__init__()
        (
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.step_size,
            self.step_size_down,
        ) = check_cyclical(
            initial_learning_rate, maximal_learning_rate, step_size, step_size_down, scale_mode
        )
        self.scale_fn = _checks.a_callable("scale_fn", scale_fn)
        self.scale_mode = scale_mode
        self.name = name

    def curve(self, step, xp):
        down = self.step_size_down or self.step_size
        return curves.cyclic(
            step,
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.step_size,
            down,
            self.scale_fn,
            self.scale_mode,
            xp,
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "maximal_learning_rate": self.maximal_learning_rate,
            "step_size": self.step_size,
            "scale_fn": _serialize_fn(self.scale_fn),
            "scale_mode": self.scale_mode,
            "name": self.name,
            "step_size_down": self.step_size_down,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["scale_fn"] = _deserialize_fn(config["scale_fn"], cls.__name__)
        return cls(**config)


class _NamedCyclical(CyclicalLearningRate):
    """A cyclical schedule whose scale function is fixed by its class."""

    def get_config(self):
        config = super().get_config()
        del config["scale_fn"]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(_PACKAGE)
class TriangularCyclicalLearningRate(_NamedCyclical):
    """Cyclical learning rate whose cycles all have the same height.

    `CyclicalLearningRate` with `scale_fn=triangular_scale` (1 at every
    cycle), under TF-Addons' name and arguments.

    Args:
        initial_learning_rate: the lower bound, a positive float.
        maximal_learning_rate: the upper bound, at least the lower bound.
        step_size: steps in the rising half of a cycle.
        scale_mode: `"cycle"` or `"iterations"`; with a scale of 1 at every
            cycle, both give the same values.
        name: name of the schedule.
        step_size_down: steps in the falling half; None: `step_size`.

    Returns:
        Called with a step, that step's learning rate (see
        `CyclicalLearningRate`).

    Raises:
        ValueError: for a non-positive or non-finite rate, bounds in the wrong
            order, a step size that is not a positive integer or an unknown
            `scale_mode`.

    Example:
        >>> from keras_clr.schedules import TriangularCyclicalLearningRate
        >>> schedule = TriangularCyclicalLearningRate(1e-3, 1e-2, step_size=4)
        >>> [round(schedule(step), 5) for step in (0, 2, 4, 6, 8, 12)]
        [0.001, 0.0055, 0.01, 0.0055, 0.001, 0.01]
    """

    def __init__(
        self,
        initial_learning_rate,
        maximal_learning_rate,
        step_size,
        scale_mode="cycle",
        name="TriangularCyclicalLearningRate",
        step_size_down=None,
    ):
        super().__init__(
            initial_learning_rate,
            maximal_learning_rate,
            step_size,
            triangular_scale,
            scale_mode,
            name,
            step_size_down,
        )


@keras.saving.register_keras_serializable(_PACKAGE)
class Triangular2CyclicalLearningRate(_NamedCyclical):
    """Cyclical learning rate whose cycle height halves every cycle.

    `CyclicalLearningRate` with `scale_fn=triangular2_scale` (`2 ** (1 -
    cycle)`), under TF-Addons' name and arguments.

    Args:
        initial_learning_rate: the lower bound, a positive float.
        maximal_learning_rate: the upper bound of the first cycle, at least
            the lower bound.
        step_size: steps in the rising half of a cycle.
        scale_mode: `"cycle"` (the default: the height halves once per
            cycle) or `"iterations"` (the scale function gets the 0-based
            step instead, so the height halves at every step).
        name: name of the schedule.
        step_size_down: steps in the falling half; None: `step_size`.

    Returns:
        Called with a step, that step's learning rate (see
        `CyclicalLearningRate`).

    Raises:
        ValueError: for a non-positive or non-finite rate, bounds in the wrong
            order, a step size that is not a positive integer or an unknown
            `scale_mode`.

    Example:
        >>> import keras
        >>> from keras_clr.schedules import Triangular2CyclicalLearningRate
        >>> schedule = Triangular2CyclicalLearningRate(1e-3, 1e-2, step_size=4)
        >>> [round(schedule(step), 5) for step in (4, 12, 20)]  # the peaks
        [0.01, 0.0055, 0.00325]
        >>> optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
    """

    def __init__(
        self,
        initial_learning_rate,
        maximal_learning_rate,
        step_size,
        scale_mode="cycle",
        name="Triangular2CyclicalLearningRate",
        step_size_down=None,
    ):
        super().__init__(
            initial_learning_rate,
            maximal_learning_rate,
            step_size,
            triangular2_scale,
            scale_mode,
            name,
            step_size_down,
        )


@keras.saving.register_keras_serializable(_PACKAGE)
class ExponentialCyclicalLearningRate(_NamedCyclical):
    """Cyclical learning rate whose height decays as `gamma ** step`.

    `CyclicalLearningRate` with `scale_fn=ExponentialScale(gamma)`, under
    TF-Addons' name and arguments.

    Args:
        initial_learning_rate: the lower bound, a positive float.
        maximal_learning_rate: the upper bound before any decay, at least
            the lower bound.
        step_size: steps in the rising half of a cycle.
        scale_mode: `"iterations"` (the default: the height is multiplied
            by `gamma ** step`, the step 0-based) or `"cycle"` (by
            `gamma ** cycle`, the cycle 1-based).
        gamma: the decay per step (per cycle with `scale_mode="cycle"`), in
            (0, 1].
        name: name of the schedule.
        step_size_down: steps in the falling half; None: `step_size`.

    Returns:
        Called with a step, that step's learning rate (see
        `CyclicalLearningRate`).

    Raises:
        ValueError: for a non-positive or non-finite rate, bounds in the wrong
            order, a step size that is not a positive integer, an unknown
            `scale_mode` or a `gamma` outside (0, 1].

    Example:
        >>> from keras_clr.schedules import ExponentialCyclicalLearningRate
        >>> schedule = ExponentialCyclicalLearningRate(1e-3, 1e-2, step_size=4,
        ...                                            gamma=0.9)
        >>> round(schedule(4), 6)  # 1e-3 + 9e-3 * 0.9 ** 4
        0.006905
    """

    def __init__(
        self,
        initial_learning_rate,
        maximal_learning_rate,
        step_size,
        scale_mode="iterations",
        gamma=1.0,
        name="ExponentialCyclicalLearningRate",
        step_size_down=None,
    ):
        scale_fn = ExponentialScale(gamma)
        self.gamma = scale_fn.gamma
        super().__init__(
            initial_learning_rate,
            maximal_learning_rate,
            step_size,
            scale_fn,
            scale_mode,
            name,
            step_size_down,
        )

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


def check_one_cycle(total_steps, pct_start, anneal_strategy, div_factor, final_div_factor):
    total_steps = _checks.positive_int("total_steps", total_steps)
    pct_start = _checks.in_interval("pct_start", pct_start, 0.0, 1.0, True, True)
    _checks.one_of("anneal_strategy", anneal_strategy, tuple(curves.ANNEALS))
    div_factor = _checks.positive_finite("div_factor", div_factor)
    final_div_factor = _checks.positive_finite("final_div_factor", final_div_factor)
    return total_steps, pct_start, div_factor, final_div_factor


@keras.saving.register_keras_serializable(_PACKAGE)
class OneCycleLearningRate(_Curve):
    """One-cycle learning rate (Smith & Topin 2019), as PyTorch's `OneCycleLR`.

    The rate starts at `maximal_learning_rate / div_factor`, anneals up to
    `maximal_learning_rate` over the first `pct_start` of `total_steps`, then
    down to `initial / final_div_factor` at step `total_steps - 1`, and holds
    there afterwards. With `three_phase=True` it first comes back down to the
    initial rate symmetrically, then anneals to the final one.

    Args:
        maximal_learning_rate: the peak, a positive float.
        total_steps: optimizer steps in the whole cycle.
        pct_start: fraction of the steps spent rising, in (0, 1).
        anneal_strategy: `"cos"` or `"linear"`.
        div_factor: initial rate = maximal_learning_rate / div_factor.
        final_div_factor: final rate = initial rate / final_div_factor.
        three_phase: use the three-phase variant.
        name: name of the schedule.

    Returns:
        Called with a step, that step's learning rate: a float, a float64
        array or a float32 tensor, as `CyclicalLearningRate`.

    Raises:
        ValueError: for any argument outside the ranges above, or a
            `three_phase` that is not a bool.

    Example:
        >>> import keras, numpy as np
        >>> from keras_clr.schedules import OneCycleLearningRate
        >>> schedule = OneCycleLearningRate(1e-2, total_steps=100)
        >>> [f"{schedule(step):.2g}" for step in (0, 29, 99, 150)]
        ['0.0004', '0.01', '4e-08', '4e-08']

        An optimizer applies it at each update:

        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> schedule = OneCycleLearningRate(0.1, total_steps=8)
        >>> model.compile(keras.optimizers.AdamW(learning_rate=schedule), loss="mse")
        >>> history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        >>> round(float(model.optimizer.learning_rate), 4)  # step 4's, the next
        0.0556

    References:
        Smith, L. N., & Topin, N. (2019). Super-Convergence. arXiv:1708.07120.
    """

    def __init__(
        self,
        maximal_learning_rate,
        total_steps,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e4,
        three_phase=False,
        name="OneCycleLearningRate",
    ):
        super().__init__()
        self.maximal_learning_rate = _checks.positive_finite(
            "maximal_learning_rate", maximal_learning_rate
        )
        (self.total_steps, self.pct_start, self.div_factor, self.final_div_factor) = (
            check_one_cycle(total_steps, pct_start, anneal_strategy, div_factor, final_div_factor)
        )
        self.anneal_strategy = anneal_strategy
        self.three_phase = _checks.a_bool("three_phase", three_phase)
        self.name = name

    @property
    def initial_learning_rate(self):
        """The rate at step 0: `maximal_learning_rate / div_factor`."""
        return self.maximal_learning_rate / self.div_factor

    @property
    def final_learning_rate(self):
        """The rate from step `total_steps - 1` on: the initial rate over
        `final_div_factor`."""
        return self.initial_learning_rate / self.final_div_factor

    def curve(self, step, xp):
        return curves.one_cycle(
            step,
            self.total_steps,
            self.initial_learning_rate,
            self.maximal_learning_rate,
            self.final_learning_rate,
            self.pct_start,
            self.anneal_strategy,
            self.three_phase,
            xp,
        )

    def get_config(self):
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "anneal_strategy": self.anneal_strategy,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "three_phase": self.three_phase,
            "name": self.name,
        }


def check_momenta(base_momentum, max_momentum):
    base = _checks.in_interval("base_momentum", base_momentum, 0.0, 1.0)
    peak = _checks.in_interval("max_momentum", max_momentum, 0.0, 1.0)
    _checks.ordered("base_momentum", base, "max_momentum", peak)
    return base, peak


@keras.saving.register_keras_serializable(_PACKAGE)
class CyclicalMomentum(_Curve):
    """Momentum cycled inversely to a cyclical learning rate.

    It is `max_momentum` where the rate is lowest and
    `max_momentum - (max_momentum - base_momentum) * scale` at the rate's peak,
    as in PyTorch's `CyclicLR`. `CyclicLR` builds one with its own step sizes
    and scale function.

    Args:
        base_momentum: the momentum at the rate's peak, in [0, 1].
        max_momentum: the momentum where the rate is lowest, in [0, 1], at
            least `base_momentum`.
        step_size: steps in the falling half of a cycle (the rate's rising
            half).
        scale_fn: x -> factor, as for `CyclicalLearningRate`: it scales how
            far below `max_momentum` each cycle goes.
        scale_mode: `"cycle"` passes the 1-based cycle number to `scale_fn`,
            `"iterations"` the 0-based step.
        step_size_down: steps in the rising half (the rate's falling half);
            None: `step_size`.
        name: name of the schedule.

    Returns:
        Called with a step, that step's momentum: a float, a float64 array
        or a float32 tensor, as `CyclicalLearningRate`.

    Raises:
        ValueError: for a momentum outside [0, 1], `base_momentum` above
            `max_momentum`, a step size that is not a positive integer, an
            unknown `scale_mode` or a `scale_fn` that is not callable.

    Example:
        >>> from keras_clr.schedules import CyclicalMomentum, triangular2_scale
        >>> momentum = CyclicalMomentum(0.8, 0.9, step_size=4,
        ...                             scale_fn=triangular2_scale)
        >>> [round(momentum(step), 3) for step in (0, 2, 4, 8, 12)]
        [0.9, 0.85, 0.8, 0.9, 0.85]
    """

    def __init__(
        self,
        base_momentum,
        max_momentum,
        step_size,
        scale_fn,
        scale_mode="cycle",
        step_size_down=None,
        name="CyclicalMomentum",
    ):
        super().__init__()
        self.base_momentum, self.max_momentum = check_momenta(base_momentum, max_momentum)
        self.step_size = _checks.positive_int("step_size", step_size)
        self.step_size_down = (
            None
            if step_size_down is None
            else _checks.positive_int("step_size_down", step_size_down)
        )
        _checks.one_of("scale_mode", scale_mode, ("cycle", "iterations"))
        self.scale_fn = _checks.a_callable("scale_fn", scale_fn)
        self.scale_mode = scale_mode
        self.name = name

    def curve(self, step, xp):
        return curves.cyclic(
            step,
            self.max_momentum,
            self.base_momentum,
            self.step_size,
            self.step_size_down or self.step_size,
            self.scale_fn,
            self.scale_mode,
            xp,
        )

    def get_config(self):
        return {
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            "step_size": self.step_size,
            "scale_fn": _serialize_fn(self.scale_fn),
            "scale_mode": self.scale_mode,
            "step_size_down": self.step_size_down,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["scale_fn"] = _deserialize_fn(config["scale_fn"], cls.__name__)
        return cls(**config)


@keras.saving.register_keras_serializable(_PACKAGE)
class OneCycleMomentum(_Curve):
    """Momentum of the one-cycle policy: max -> base while the rate rises,
    then back to max (PyTorch's `OneCycleLR` with `cycle_momentum=True`).

    It anneals over the phases of the `OneCycleLearningRate` with the same
    `total_steps`, `pct_start`, `anneal_strategy` and `three_phase`, the
    other way: `max_momentum` at step 0, `base_momentum` at the rate's
    peak, `max_momentum` again at step `total_steps - 1` (with
    `three_phase`, already where the rate is back at its initial value),
    held afterwards.

    Args:
        total_steps: optimizer steps in the whole cycle.
        base_momentum: the momentum at the rate's peak, in [0, 1].
        max_momentum: the momentum at the start and the end, in [0, 1], at
            least `base_momentum`.
        pct_start: fraction of the steps spent falling, in (0, 1).
        anneal_strategy: `"cos"` or `"linear"`.
        three_phase: the three-phase variant.
        name: name of the schedule.

    Returns:
        Called with a step, that step's momentum: a float, a float64 array
        or a float32 tensor, as `CyclicalLearningRate`.

    Raises:
        ValueError: for any argument outside the ranges above,
            `base_momentum` above `max_momentum`, or a `three_phase` that is
            not a bool.

    Example:
        >>> from keras_clr.schedules import OneCycleMomentum
        >>> momentum = OneCycleMomentum(total_steps=100)
        >>> [round(momentum(step), 3) for step in (0, 29, 99)]
        [0.95, 0.85, 0.95]
    """

    def __init__(
        self,
        total_steps,
        base_momentum=curves.BASE_MOMENTUM,
        max_momentum=curves.MAX_MOMENTUM,
        pct_start=0.3,
        anneal_strategy="cos",
        three_phase=False,
        name="OneCycleMomentum",
    ):
        super().__init__()
        self.total_steps = _checks.positive_int("total_steps", total_steps)
        self.pct_start = _checks.in_interval("pct_start", pct_start, 0.0, 1.0, True, True)
        _checks.one_of("anneal_strategy", anneal_strategy, tuple(curves.ANNEALS))
        self.base_momentum, self.max_momentum = check_momenta(base_momentum, max_momentum)
        self.anneal_strategy = anneal_strategy
        self.three_phase = _checks.a_bool("three_phase", three_phase)
        self.name = name

    def curve(self, step, xp):
        return curves.one_cycle(
            step,
            self.total_steps,
            self.max_momentum,
            self.base_momentum,
            self.max_momentum,
            self.pct_start,
            self.anneal_strategy,
            self.three_phase,
            xp,
        )

    def get_config(self):
        return {
            "total_steps": self.total_steps,
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            "pct_start": self.pct_start,
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
            "name": self.name,
        }


WARMUP_TYPES = tuple(curves.WARMUPS)
DECAY_TYPES = tuple(curves.DECAYS)


def decay_length(decay_steps, total_steps):
    """The cooldown's steps: `decay_steps` itself, or a fraction of `total_steps`
    (rounded to the nearest step, at least 1)."""
    if isinstance(decay_steps, float):
        return max(1, round(decay_steps * total_steps))
    return decay_steps


def wsd_plan(warmup_steps, decay_steps, total_steps=None, stable_steps=None):
    """Checks a warmup-stable-decay plan; returns (warmup_steps, decay_start,
    decay_steps), decay_start None when neither `total_steps` nor
    `stable_steps` is given (the peak holds until a cooldown is asked for)."""
    warmup_steps = _checks.non_negative_int("warmup_steps", warmup_steps)
    decay_steps = _checks.steps_or_fraction("decay_steps", decay_steps)
    if total_steps is not None:
        total_steps = _checks.positive_int("total_steps", total_steps)
    if stable_steps is not None:
        stable_steps = _checks.non_negative_int("stable_steps", stable_steps)
    if total_steps is None and stable_steps is None:
        return warmup_steps, None, decay_steps
    if total_steps is None:
        if isinstance(decay_steps, float):
            raise ValueError(
                "Argument `decay_steps` is a fraction of `total_steps`, which was "
                "not given: pass `total_steps` instead of `stable_steps`, or "
                f"`decay_steps` as a number of steps. Received: decay_steps="
                f"{decay_steps!r}, total_steps=None, stable_steps={stable_steps!r}"
            )
        return warmup_steps, warmup_steps + stable_steps, decay_steps
    decay = decay_length(decay_steps, total_steps)
    if stable_steps is not None and warmup_steps + stable_steps + decay != total_steps:
        raise ValueError(
            "Arguments `total_steps` and `stable_steps` disagree: total_steps must "
            "be warmup_steps + stable_steps + decay_steps. Pass one of them. "
            f"Received: warmup_steps={warmup_steps}, stable_steps={stable_steps}, "
            f"decay_steps={decay}, total_steps={total_steps}"
        )
    if warmup_steps + decay > total_steps:
        raise ValueError(
            "Argument `total_steps` must be at least warmup_steps + decay_steps "
            f"({warmup_steps + decay}). Received: total_steps={total_steps}, "
            f"warmup_steps={warmup_steps}, decay_steps={decay}"
        )
    return warmup_steps, total_steps - decay, decay


class _WarmupStableDecay(_Curve):
    """The phases of a warmup-stable-decay schedule, checked."""

    def __init__(
        self, warmup_steps, decay_steps, total_steps, stable_steps, warmup_type, decay_type, name
    ):
        super().__init__()
        self.warmup_steps, self.decay_start, self.decay = wsd_plan(
            warmup_steps, decay_steps, total_steps, stable_steps
        )
        self.decay_steps = _checks.steps_or_fraction("decay_steps", decay_steps)
        self.total_steps, self.stable_steps = total_steps, stable_steps
        self.warmup_type = _checks.one_of("warmup_type", warmup_type, WARMUP_TYPES)
        self.decay_type = _checks.one_of("decay_type", decay_type, DECAY_TYPES)
        self.name = name

    def _shape(self, step, low, high, xp):
        return curves.warmup_stable_decay(
            step,
            self.warmup_steps,
            self.decay_start,
            self.decay,
            low,
            high,
            self.warmup_type,
            self.decay_type,
            xp,
        )

    def get_config(self):
        return {
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "total_steps": self.total_steps,
            "stable_steps": self.stable_steps,
            "warmup_type": self.warmup_type,
            "decay_type": self.decay_type,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(_PACKAGE)
class WarmupStableDecayLearningRate(_WarmupStableDecay):
    """Warmup-stable-decay learning rate, as transformers' `get_wsd_schedule`.

    The rate warms up from `min_lr_ratio * maximal_learning_rate` to
    `maximal_learning_rate` over `warmup_steps` steps, holds it, then cools
    down over the last `decay_steps` of `total_steps` (or after
    `stable_steps` steps at the peak) to `min_lr_ratio * maximal_learning_rate`,
    reached at step `total_steps` and held. Step k's value is
    `maximal_learning_rate` times transformers' multiplier at `current_step=k`
    (and timm's `WSDLRScheduler` with `warmup_lr_init = lr_min` and the
    constant stable function). With neither `total_steps` nor
    `stable_steps`, the rate holds the peak after the warm-up: the
    `keras_clr.WarmupStableDecay` callback starts such a cooldown on demand.

    Args:
        maximal_learning_rate: the peak, a positive float.
        warmup_steps: steps of the warm-up, an integer >= 0.
        decay_steps: steps of the cooldown, an integer >= 0, or a float in
            (0, 1): that fraction of `total_steps`.
        total_steps: warm-up + stable + cooldown steps.
        stable_steps: steps at the peak (instead of `total_steps`).
        warmup_type: `"linear"`, `"cosine"` or `"1-sqrt"`.
        decay_type: `"1-sqrt"`, `"linear"` or `"cosine"`.
        min_lr_ratio: the floor (and the warm-up's start) as a fraction of
            the peak, in [0, 1].
        name: name of the schedule.

    Returns:
        Called with a step, that step's learning rate: a float, a float64
        array or a float32 tensor, as `CyclicalLearningRate`.

    Raises:
        ValueError: for any argument outside the ranges above, `total_steps`
            shorter than the warm-up and cooldown, `total_steps` and
            `stable_steps` that disagree, or a fraction `decay_steps` with
            `stable_steps` instead of `total_steps`.

    Example:
        >>> import keras, numpy as np
        >>> from keras_clr.schedules import WarmupStableDecayLearningRate
        >>> schedule = WarmupStableDecayLearningRate(
        ...     1e-2, warmup_steps=2, decay_steps=0.2, total_steps=10)
        >>> [round(schedule(step), 5) for step in range(11)]
        [0.0, 0.005, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.00293, 0.0]

        An optimizer applies it at each update:

        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.AdamW(learning_rate=schedule), loss="mse")
        >>> history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        >>> round(float(model.optimizer.learning_rate), 5)  # step 8's, the next
        0.01

    References:
        Hu, S., et al. (2024). MiniCPM. arXiv:2404.06395.
        Hägele, A., et al. (2024). Scaling Laws and Compute-Optimal Training
        Beyond Fixed Training Durations. arXiv:2405.18392.
    """

    def __init__(
        self,
        maximal_learning_rate,
        warmup_steps=0,
        decay_steps=0,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        min_lr_ratio=0.0,
        name="WarmupStableDecayLearningRate",
    ):
        super().__init__(
            warmup_steps, decay_steps, total_steps, stable_steps, warmup_type, decay_type, name
        )
        self.maximal_learning_rate = _checks.positive_finite(
            "maximal_learning_rate", maximal_learning_rate
        )
        self.min_lr_ratio = _checks.in_interval("min_lr_ratio", min_lr_ratio, 0.0, 1.0)

    def curve(self, step, xp):
        return self.maximal_learning_rate * self._shape(step, self.min_lr_ratio, 1.0, xp)

    def get_config(self):
        return {
            "maximal_learning_rate": self.maximal_learning_rate,
            **super().get_config(),
            "min_lr_ratio": self.min_lr_ratio,
        }


@keras.saving.register_keras_serializable(_PACKAGE)
class WarmupStableDecayMomentum(_WarmupStableDecay):
    """Momentum cycled inversely to a warmup-stable-decay learning rate.

    It moves with the same shapes as the rate, the other way: from
    `max_momentum` down to `base_momentum` during the warm-up, holds
    `base_momentum` at the peak, and goes back up to `max_momentum` during
    the cooldown (`max_momentum - (max_momentum - base_momentum) * h`, where
    the rate is `floor + (peak - floor) * h`).

    Args:
        warmup_steps: steps of the warm-up, an integer >= 0.
        decay_steps: steps of the cooldown, an integer >= 0, or a float in
            (0, 1): that fraction of `total_steps`.
        total_steps: warm-up + stable + cooldown steps.
        stable_steps: steps at `base_momentum` (instead of `total_steps`).
        warmup_type: `"linear"`, `"cosine"` or `"1-sqrt"`.
        decay_type: `"1-sqrt"`, `"linear"` or `"cosine"`.
        base_momentum: the momentum at the rate's peak, in [0, 1].
        max_momentum: the momentum at the start and after the cooldown, in
            [0, 1], at least `base_momentum`.
        name: name of the schedule.

    Returns:
        Called with a step, that step's momentum: a float, a float64 array
        or a float32 tensor, as `CyclicalLearningRate`.

    Raises:
        ValueError: as `WarmupStableDecayLearningRate`, and for
            `base_momentum` above `max_momentum`.

    Example:
        >>> from keras_clr.schedules import WarmupStableDecayMomentum
        >>> momentum = WarmupStableDecayMomentum(
        ...     warmup_steps=2, decay_steps=2, total_steps=10, decay_type="linear")
        >>> [round(momentum(step), 3) for step in range(11)]
        [0.95, 0.9, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.9, 0.95]
    """

    def __init__(
        self,
        warmup_steps=0,
        decay_steps=0,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        base_momentum=curves.BASE_MOMENTUM,
        max_momentum=curves.MAX_MOMENTUM,
        name="WarmupStableDecayMomentum",
    ):
        super().__init__(
            warmup_steps, decay_steps, total_steps, stable_steps, warmup_type, decay_type, name
        )
        self.base_momentum, self.max_momentum = check_momenta(base_momentum, max_momentum)

    def curve(self, step, xp):
        return self._shape(step, self.max_momentum, self.base_momentum, xp)

    def get_config(self):
        return {
            **super().get_config(),
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
        }


@keras.saving.register_keras_serializable(_PACKAGE)
class JoinedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Schedules joined at step boundaries, as optax's `join_schedules`.

    Step k before `boundaries[0]` takes `schedules[0](k)`; from
    `boundaries[i - 1]` on (to `boundaries[i]`), `schedules[i](k -
    boundaries[i - 1])`: each piece counts its steps from 0 where it starts.
    The pieces are any `LearningRateSchedule`s (Keras's, keras_clr's, your
    own registered ones) or floats (a constant), and the whole saves to
    `.keras` and loads back when its pieces do.

    Args:
        schedules: a list of at least two schedules or floats.
        boundaries: the steps where each piece after the first starts, one
            fewer than `schedules`, positive and increasing.

    Returns:
        Called with a step, that step's learning rate: a float for a Python
        or NumPy integer (a float64 array for an array of them), a float32
        tensor for a tensor. A step before 0 takes step 0's value.

    Raises:
        ValueError: for fewer than two schedules, a piece that is neither a
            callable nor a real number, or boundaries that are not one fewer
            than the schedules, positive integers and increasing.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> warm_up = keras.optimizers.schedules.PolynomialDecay(0.0, 100, 0.1, power=1.0)
        >>> cosine = keras.optimizers.schedules.CosineDecay(0.1, 900, alpha=0.01)
        >>> schedule = keras_clr.schedules.JoinedSchedule([warm_up, cosine], [100])
        >>> [round(schedule(step), 4) for step in (0, 50, 100, 550, 1000)]
        [0.0, 0.05, 0.1, 0.0505, 0.001]
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
        >>> history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        >>> round(float(model.optimizer.learning_rate), 4)  # step 4's, the next
        0.004
    """

    def __init__(self, schedules, boundaries):
        if (
            isinstance(schedules, (str, bytes))
            or not hasattr(schedules, "__iter__")
            or len(list(schedules)) < 2
        ):
            raise ValueError(
                "Argument `schedules` must be a list of at least two schedules "
                f"(or floats). Received: schedules={schedules!r}"
            )
        schedules = list(schedules)
        for piece in schedules:
            if not (
                callable(piece) or (isinstance(piece, numbers.Real) and not isinstance(piece, bool))
            ):
                raise ValueError(
                    "Argument `schedules` must hold LearningRateSchedules, "
                    f"callables of the step or floats; {piece!r} is neither. "
                    f"Received: schedules={schedules!r}"
                )
        if (
            isinstance(boundaries, (str, bytes))
            or not hasattr(boundaries, "__iter__")
            or len(list(boundaries)) != len(schedules) - 1
        ):
            raise ValueError(
                f"Argument `boundaries` must be a list of {len(schedules) - 1} "
                f"steps, one fewer than the {len(schedules)} schedules. "
                f"Received: boundaries={boundaries!r}"
            )
        boundaries = list(boundaries)
        for boundary in boundaries:
            if (
                isinstance(boundary, bool)
                or not isinstance(boundary, numbers.Integral)
                or boundary < 1
            ):
                raise ValueError(
                    "Argument `boundaries` must hold positive integer steps. "
                    f"Received: boundaries={boundaries!r}"
                )
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"Argument `boundaries` must be increasing. Received: boundaries={boundaries!r}"
            )
        self.schedules = schedules
        self.boundaries = [int(b) for b in boundaries]

    def _piece(self, index, step):
        piece = self.schedules[index]
        return piece(step) if callable(piece) else piece

    def __call__(self, step):
        starts = [0] + self.boundaries
        if _is_host_step(step):
            steps = np.asarray(step, dtype=np.int64)
            if steps.ndim:
                return np.array([self(int(k)) for k in steps.ravel()], dtype=np.float64).reshape(
                    steps.shape
                )
            k = max(int(steps), 0)
            index = int(np.searchsorted(self.boundaries, k, side="right"))
            value = self._piece(index, k - starts[index])
            return float(np.asarray(ops.convert_to_numpy(value), dtype=np.float64))
        step = ops.maximum(step, 0)  # in the counter's own dtype, as each piece gets it
        value = ops.cast(self._piece(len(starts) - 1, step - starts[-1]), "float32")
        for index in range(len(starts) - 2, -1, -1):
            piece = ops.cast(self._piece(index, ops.maximum(step - starts[index], 0)), "float32")
            value = ops.where(step < starts[index + 1], piece, value)
        return value

    def get_config(self):
        return {
            "schedules": [
                piece if not callable(piece) else keras.saving.serialize_keras_object(piece)
                for piece in self.schedules
            ],
            "boundaries": list(self.boundaries),
        }

    @classmethod
    def from_config(cls, config):
        pieces = [
            piece
            if isinstance(piece, numbers.Real)
            else keras.saving.deserialize_keras_object(piece)
            for piece in config["schedules"]
        ]
        return cls(pieces, config["boundaries"])
