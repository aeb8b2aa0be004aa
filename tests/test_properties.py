"""Property tests (hypothesis): schedules stay in bounds, bad arguments are
named, and no range-test record makes `LRFinderResult` fail.

The bounds come from the arguments themselves: a cyclical rate stays within
[initial, maximal], a one-cycle rate within its initial, peak and final
rates, a momentum within [base, max], at any step up to 10**9.
"""

import math
import warnings

import matplotlib
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_clr
from keras_clr import schedules
from keras_clr.results import LRFinderResult
from keras_clr.suggestions import METHODS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAST = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
MAX_STEP = 10**9

steps = st.lists(st.integers(0, MAX_STEP), min_size=1, max_size=20)
rates = st.floats(1e-8, 1e3)
step_sizes = st.integers(1, 10**7)
momenta = st.floats(0.0, 1.0)
scale_fns = st.sampled_from(
    [
        schedules.triangular_scale,
        schedules.triangular2_scale,
        lambda x: 0.5,
        lambda x: 1.0 / (1.0 + x),
    ]
)


def _check(schedule, chosen_steps, low, high):
    """Finite values within [low, high] for a Python int and an array of steps.

    PyTorch's anneal formulas, which the schedules reproduce bit for bit, can
    land an ulp or two past an end (`(end - start) * 1.0 + start != end`), so
    the bounds get a relative slack of 1e-12.
    """
    values = np.asarray(schedule(np.array(chosen_steps, dtype=np.int64)))
    first = schedule(chosen_steps[0])
    assert isinstance(first, float)
    values = np.append(values, first)
    assert np.all(np.isfinite(values)), values
    slack = 1e-12 * max(abs(low), abs(high))
    assert np.all((values >= low - slack) & (values <= high + slack)), (low, high, values)


@st.composite
def pairs(draw, values):
    a, b = draw(values), draw(values)
    return min(a, b), max(a, b)


# -- schedules in bounds -------------------------------------------------------


@FAST
@given(
    pairs(rates),
    step_sizes,
    st.none() | step_sizes,
    scale_fns,
    st.sampled_from(["cycle", "iterations"]),
    steps,
)
def test_cyclical_learning_rate_in_bounds(bounds, up, down, scale_fn, mode, at):
    schedule = schedules.CyclicalLearningRate(*bounds, up, scale_fn, mode, step_size_down=down)
    _check(schedule, at, *bounds)


@FAST
@given(
    pairs(rates),
    step_sizes,
    st.sampled_from(["cycle", "iterations"]),
    st.floats(1e-6, 1.0, exclude_min=False),
    st.integers(0, 2),
    steps,
)
def test_named_cyclical_learning_rates_in_bounds(bounds, size, mode, gamma, kind, at):
    if kind == 0:
        schedule = schedules.TriangularCyclicalLearningRate(*bounds, size, mode)
    elif kind == 1:
        schedule = schedules.Triangular2CyclicalLearningRate(*bounds, size, mode)
    else:
        schedule = schedules.ExponentialCyclicalLearningRate(*bounds, size, mode, gamma)
    _check(schedule, at, *bounds)


one_cycle_settings = st.fixed_dictionaries(
    {
        "total_steps": st.integers(1, 10**8),
        "pct_start": st.floats(1e-6, 1.0, exclude_max=True),
        "anneal_strategy": st.sampled_from(["cos", "linear"]),
        "div_factor": st.floats(1e-2, 1e6),
        "final_div_factor": st.floats(1e-2, 1e8),
        "three_phase": st.booleans(),
    }
)


@FAST
@given(rates, one_cycle_settings, steps)
def test_one_cycle_learning_rate_in_bounds(peak, config, at):
    schedule = schedules.OneCycleLearningRate(peak, **config)
    ends = (peak, schedule.initial_learning_rate, schedule.final_learning_rate)
    _check(schedule, at, min(ends), max(ends))


@FAST
@given(
    pairs(momenta),
    step_sizes,
    st.none() | step_sizes,
    scale_fns,
    st.sampled_from(["cycle", "iterations"]),
    steps,
)
def test_cyclical_momentum_in_bounds(bounds, up, down, scale_fn, mode, at):
    _check(schedules.CyclicalMomentum(*bounds, up, scale_fn, mode, down), at, *bounds)


@FAST
@given(pairs(momenta), one_cycle_settings, steps)
def test_one_cycle_momentum_in_bounds(bounds, config, at):
    config = {k: v for k, v in config.items() if "div" not in k}
    _check(
        schedules.OneCycleMomentum(base_momentum=bounds[0], max_momentum=bounds[1], **config),
        at,
        *bounds,
    )


@FAST
@given(
    pairs(rates),
    step_sizes,
    st.none() | step_sizes,
    st.sampled_from(["triangular", "triangular2", "exp_range"]),
    st.floats(1e-6, 1.0),
    pairs(momenta),
    steps,
)
def test_cyclic_lr_callback_in_bounds(bounds, up, down, mode, gamma, momentum, at):
    callback = keras_clr.CyclicLR(
        *bounds,
        up,
        down,
        mode=mode,
        gamma=gamma,
        base_momentum=momentum[0],
        max_momentum=momentum[1],
    )
    _check(callback.lr_schedule, at, *bounds)
    _check(callback.momentum_schedule, at, *momentum)


@FAST
@given(rates, one_cycle_settings, pairs(momenta), steps)
def test_one_cycle_callback_in_bounds(peak, config, momentum, at):
    callback = keras_clr.OneCycle(
        peak, **config, base_momentum=momentum[0], max_momentum=momentum[1]
    )
    initial = peak / config["div_factor"]
    ends = (peak, initial, initial / config["final_div_factor"])
    _check(callback.lr_schedule, at, min(ends), max(ends))
    _check(callback.momentum_schedule, at, *momentum)


wsd_settings = st.fixed_dictionaries(
    {
        "warmup_steps": st.integers(0, 10**6),
        "decay_steps": st.integers(0, 10**6) | st.floats(0.01, 0.99),
        "total_steps": st.integers(2 * 10**6, 10**8),
        "warmup_type": st.sampled_from(["linear", "cosine", "1-sqrt"]),
        "decay_type": st.sampled_from(["linear", "cosine", "1-sqrt"]),
    }
)


@FAST
@given(rates, wsd_settings, st.floats(0.0, 1.0), pairs(momenta), st.booleans(), steps)
def test_warmup_stable_decay_in_bounds(peak, config, ratio, momentum, planned, at):
    if not planned:
        config = {**config, "total_steps": None}
    callback = keras_clr.WarmupStableDecay(
        peak, **config, min_lr_ratio=ratio, base_momentum=momentum[0], max_momentum=momentum[1]
    )
    _check(callback.lr_schedule, at, ratio * peak, peak)
    _check(callback.momentum_schedule, at, *momentum)


# -- invalid arguments are named -----------------------------------------------

junk = st.sampled_from(
    [
        None,
        "x",
        "",
        [],
        {},
        (),
        True,
        False,
        1j,
        object(),
        -1,
        0,
        -0.5,
        math.nan,
        math.inf,
        -math.inf,
        2.5,
        1e400,
        -1e-300,
    ]
)

VALID = {
    schedules.CyclicalLearningRate: dict(
        initial_learning_rate=1e-3,
        maximal_learning_rate=1e-2,
        step_size=10,
        scale_fn=schedules.triangular_scale,
        scale_mode="cycle",
        step_size_down=None,
    ),
    schedules.TriangularCyclicalLearningRate: dict(
        initial_learning_rate=1e-3,
        maximal_learning_rate=1e-2,
        step_size=10,
        scale_mode="cycle",
        step_size_down=None,
    ),
    schedules.Triangular2CyclicalLearningRate: dict(
        initial_learning_rate=1e-3, maximal_learning_rate=1e-2, step_size=10
    ),
    schedules.ExponentialCyclicalLearningRate: dict(
        initial_learning_rate=1e-3,
        maximal_learning_rate=1e-2,
        step_size=10,
        scale_mode="iterations",
        gamma=0.99,
    ),
    schedules.OneCycleLearningRate: dict(
        maximal_learning_rate=1e-2,
        total_steps=100,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e4,
    ),
    schedules.CyclicalMomentum: dict(
        base_momentum=0.8,
        max_momentum=0.9,
        step_size=10,
        scale_fn=schedules.triangular_scale,
        scale_mode="cycle",
        step_size_down=None,
    ),
    schedules.OneCycleMomentum: dict(
        total_steps=100, base_momentum=0.85, max_momentum=0.95, pct_start=0.3, anneal_strategy="cos"
    ),
    keras_clr.CyclicLR: dict(
        base_lr=1e-3,
        max_lr=1e-2,
        step_size_up=10,
        step_size_down=None,
        mode="triangular",
        gamma=1.0,
        scale_fn=None,
        scale_mode="cycle",
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    keras_clr.OneCycle: dict(
        max_lr=1e-2,
        total_steps=None,
        pct_start=0.3,
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
    ),
    schedules.WarmupStableDecayLearningRate: dict(
        maximal_learning_rate=1e-2,
        warmup_steps=10,
        decay_steps=20,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        min_lr_ratio=0.1,
    ),
    schedules.WarmupStableDecayMomentum: dict(
        warmup_steps=10,
        decay_steps=20,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        base_momentum=0.85,
        max_momentum=0.95,
    ),
    keras_clr.WarmupStableDecay: dict(
        max_lr=1e-2,
        warmup_steps=10,
        decay_steps=0.2,
        total_steps=None,
        stable_steps=None,
        warmup_type="linear",
        decay_type="1-sqrt",
        min_lr_ratio=0.1,
        base_momentum=0.85,
        max_momentum=0.95,
    ),
}


def _real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


KINDS = {  # argument -> what makes a value valid for it on its own
    "positive": lambda v: _real(v) and v > 0,
    "count": lambda v: _real(v) and v >= 1 and v == int(v),
    "fraction": lambda v: _real(v) and 0 < v < 1,
    "gamma": lambda v: _real(v) and 0 < v <= 1,
    "momentum": lambda v: _real(v) and 0 <= v <= 1,
    "callable": callable,
    "choice": lambda v: False,  # no junk value is a mode's name
    "steps": lambda v: _real(v) and v >= 0 and v == int(v),
    "steps_or_fraction": lambda v: (
        isinstance(v, int)
        and not isinstance(v, bool)
        and v >= 0
        or isinstance(v, float)
        and 0 < v < 1
    ),
    "ratio": lambda v: _real(v) and 0 <= v <= 1,
}
KIND_OF = {
    "initial_learning_rate": "positive",
    "maximal_learning_rate": "positive",
    "base_lr": "positive",
    "max_lr": "positive",
    "div_factor": "positive",
    "final_div_factor": "positive",
    "step_size": "count",
    "step_size_up": "count",
    "step_size_down": "count",
    "total_steps": "count",
    "pct_start": "fraction",
    "gamma": "gamma",
    "base_momentum": "momentum",
    "max_momentum": "momentum",
    "scale_fn": "callable",
    "scale_mode": "choice",
    "mode": "choice",
    "anneal_strategy": "choice",
    "warmup_steps": "steps",
    "stable_steps": "steps",
    "decay_steps": "steps_or_fraction",
    "warmup_type": "choice",
    "decay_type": "choice",
    "min_lr_ratio": "ratio",
}


def _valid_alone(cls, name, value):
    if value is None and VALID[cls][name] is None:
        return True  # an optional argument: step_size_down, scale_fn, total_steps
    return KINDS[KIND_OF[name]](value)


@FAST
@given(st.sampled_from(sorted(VALID, key=lambda c: c.__name__)), st.data(), junk)
def test_invalid_arguments_are_named(cls, data, value):
    name = data.draw(st.sampled_from(sorted(VALID[cls])))
    assume(not _valid_alone(cls, name, value))
    with pytest.raises(ValueError, match=f"Argument `{name}`"):
        cls(**{**VALID[cls], name: value})


ORDERED = [
    ("initial_learning_rate", "maximal_learning_rate"),
    ("base_lr", "max_lr"),
    ("base_momentum", "max_momentum"),
]


@FAST
@given(st.sampled_from(sorted(VALID, key=lambda c: c.__name__)), st.floats(0.0, 0.99))
def test_bounds_in_the_wrong_order_are_named(cls, fraction):
    for low, high in ORDERED:
        if low in VALID[cls]:
            config = {**VALID[cls], high: VALID[cls][low] * fraction}
            with pytest.raises(ValueError, match=f"Argument `{high}`"):
                cls(**config)


# -- range-test results never fail ---------------------------------------------

special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324])
loss_values = st.floats(-1e6, 1e6) | special


@st.composite
def records(draw):
    """(lrs, losses, smoothed or None, num_steps, smoothing, mode)."""
    n = draw(st.integers(0, 300))
    start = draw(st.floats(1e-10, 1.0))
    end = start * draw(st.floats(1.5, 1e12))
    if draw(st.booleans()):
        lrs = np.geomspace(start, end, n) if n else np.array([])
    else:
        lrs = np.linspace(start, end, n) if n else np.array([])
    assume(n < 2 or np.all(np.diff(lrs) > 0))
    shape = draw(st.sampled_from(["random", "flat", "rising", "valley", "negative"]))
    x = np.linspace(0.0, 1.0, n)
    base = {
        "random": np.zeros(n),
        "flat": np.full(n, 2.0),
        "rising": 1.0 + 3 * x,
        "valley": 2.0 - np.sin(np.pi * x),
        "negative": -5.0 - 3 * x,
    }[shape]
    noise = np.array(draw(st.lists(loss_values, min_size=n, max_size=n)), dtype=float)
    if shape == "random":
        losses = noise
    else:
        keep = (
            np.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), dtype=int)
            if n
            else np.zeros(0, int)
        )
        losses = np.where(keep == 0, noise, base)  # a few injected values
    smoothed = None
    if draw(st.integers(0, 4)) == 0:
        smoothed = np.array(draw(st.lists(loss_values, min_size=n, max_size=n)), dtype=float)
    num_steps = n + draw(st.integers(0, 300))
    assume(num_steps >= 1 or n == 0)
    smoothing = draw(st.sampled_from([0.0, 0.5, 0.9, 0.98]) | st.floats(0.0, 0.999))
    mode = draw(st.sampled_from(["min", "max"]))
    return lrs, losses, smoothed, num_steps or None, smoothing, mode


def _in_range(value, lrs):
    return lrs.size and lrs[0] <= value <= lrs[-1]


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(records(), st.none() | st.floats(0.0, 0.99), st.booleans(), st.sampled_from([1, 3, 10]))
def test_result_never_fails_and_stays_in_the_tested_range(record, momentum, batch_norm, every):
    # every > 1: a point after every `every`-th step, as a validation monitor records
    lrs, losses, smoothed, num_steps, smoothing, mode = record
    steps = np.arange(1, len(lrs) + 1) * every - 1 if every > 1 else None
    result = LRFinderResult(
        lrs,
        losses,
        smoothed,
        num_steps=num_steps and num_steps * every,
        smoothing=smoothing,
        mode=mode,
        momentum=momentum,
        batch_norm=batch_norm,
        steps=steps,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in (None, *METHODS):
            value = result.suggest(method)
            assert value is None or (isinstance(value, float) and _in_range(value, lrs)), (
                method,
                value,
            )
        assert result.suggestions() == {m: result.suggest(m) for m in METHODS}
        pair = result.suggest_range()
        assert pair is None or (
            _in_range(pair[0], lrs) and _in_range(pair[1], lrs) and pair[0] <= pair[1]
        ), pair
        explained = result.explain()
        assert set(explained) == {*METHODS, "range"}
        assert all(isinstance(text, str) for text in explained.values())
        assert repr(result).startswith("LRFinderResult(")
        ax = result.plot()
    plt.close(ax.figure)


@FAST
@given(records(), st.sampled_from(["best", "fastest", "", None, 3]))
def test_unknown_method_is_the_documented_error(record, method):
    lrs, losses, smoothed, num_steps, smoothing, mode = record
    result = LRFinderResult(
        lrs, losses, smoothed, num_steps=num_steps, smoothing=smoothing, mode=mode
    )
    if method is None:
        return
    with pytest.raises(ValueError, match="Argument `method`"):
        result.suggest(method)
    with pytest.raises(ValueError, match="Argument `method`"):
        result.explain(method)


@FAST
@given(st.lists(records(), min_size=1, max_size=3), st.sampled_from(["min", "max"]))
def test_a_sweep_of_any_records_never_fails(chosen, mode):
    tests = {}
    for i, (lrs, losses, smoothed, num_steps, smoothing, _) in enumerate(chosen):
        tests[10.0**-i if i else 0.0] = LRFinderResult(
            lrs, losses, smoothed, num_steps=num_steps, smoothing=smoothing, mode=mode
        )
    sweep = keras_clr.WeightDecaySweep(tests)
    assert sweep.best is sweep.results[sweep.weight_decay]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sweep.suggest() == sweep.best.suggest()
        assert sweep.suggest_range() == sweep.best.suggest_range()
        text = repr(sweep)
        ax = sweep.plot()
    plt.close(ax.figure)
    assert text.count("(best)") == 1 and len(text.splitlines()) == len(tests) + 1
    frame = sweep.to_frame()
    assert len(frame) == sum(len(r.lrs) for r in tests.values())
    assert frame["weight_decay"].tolist() == [wd for wd, r in tests.items() for _ in r.lrs]
