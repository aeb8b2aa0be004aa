"""Tests for keras_clr.curves, against PyTorch's formulas written out here.

The `torch_cyclic` and `torch_one_cycle` references re-implement PyTorch's
documented `CyclicLR` and `OneCycleLR` algorithms in float64. They are also
the references of `test_schedules.py` and `test_callbacks.py`, which import
them from this module.
"""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_clr import curves

RTOL = 1e-6


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's: these tests touch no Keras state, and its
    `clear_session()` garbage collection costs ~0.3 s per test."""
    yield


# Steps from the first cycles to far beyond any real training run.
STEPS = (
    list(range(0, 41))
    + [99, 100, 101, 999, 1000, 1001, 12_345]
    + [10**8 - 1, 10**8, 10**8 + 1, 10**8 + 7, 10**9, 10**9 + 3]
)


# --- references -------------------------------------------------------------


def triangular_scale(x):
    return 1.0


def triangular2_scale(x):
    # 0.5 ** (x - 1) rather than PyTorch's 1 / 2 ** (x - 1): the same value,
    # but Python raises OverflowError on 2.0 ** 5e8 where 0.5 ** 5e8 is 0.0.
    return 0.5 ** (x - 1)


def exp_range_scale(gamma):
    return lambda x: gamma**x


def torch_cyclic(
    k,
    base_lr,
    max_lr,
    step_size_up,
    step_size_down=None,
    scale_fn=triangular_scale,
    scale_mode="cycle",
    base_momentum=0.8,
    max_momentum=0.9,
):
    """PyTorch's CyclicLR at update k: (learning rate, momentum), float64.

    PyTorch computes `cycle = floor(1 + k / total)` and
    `x = 1 + k / total - cycle` in floats, which loses the position in the
    cycle at large k; here the same formulas run on exact fractions.
    """
    step_size_down = step_size_up if step_size_down is None else step_size_down
    total = step_size_up + step_size_down
    ratio = Fraction(step_size_up, total)
    cycle = 1 + k // total
    x = 1 + Fraction(k, total) - cycle
    scale = float(x / ratio if x <= ratio else (x - 1) / (ratio - 1))
    factor = scale_fn(float(cycle) if scale_mode == "cycle" else float(k))
    lr = base_lr + (max_lr - base_lr) * scale * factor
    momentum = max_momentum - (max_momentum - base_momentum) * scale * factor
    return lr, momentum


def _anneal(strategy, start, end, pct):
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def torch_one_cycle(
    k,
    total_steps,
    max_lr,
    pct_start=0.3,
    anneal_strategy="cos",
    div_factor=25.0,
    final_div_factor=1e4,
    three_phase=False,
    base_momentum=0.85,
    max_momentum=0.95,
):
    """PyTorch's OneCycleLR at update k: (learning rate, momentum), float64.

    Past total_steps PyTorch raises; keras_clr holds the last step's values
    (a documented difference), so k is clamped to total_steps - 1 here.
    """
    k = min(k, total_steps - 1)
    initial = max_lr / div_factor
    final = initial / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, max_momentum, base_momentum),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial, base_momentum, max_momentum),
            (total_steps - 1, initial, final, max_momentum, max_momentum),
        ]
    else:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, max_momentum, base_momentum),
            (total_steps - 1, max_lr, final, base_momentum, max_momentum),
        ]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if k <= end or i == len(phases) - 1:
            pct = (k - start) / (end - start)
            return (_anneal(anneal_strategy, lr0, lr1, pct), _anneal(anneal_strategy, m0, m1, pct))
        start = end
    raise AssertionError("unreachable")


def wsd_multiplier(k, warmup, stable, decay, warmup_type="linear", decay_type="1-sqrt", ratio=0.0):
    """transformers' `get_wsd_schedule` multiplier at update k (its
    `current_step`), float64: the rate is the peak times this.

    The warm-up rises from `ratio` to 1 over steps 0 .. warmup - 1 (at step
    warmup it is 1); the cooldown's progress is (k - warmup - stable) / decay,
    so its first step is 1 and the floor `ratio` first comes one step after
    its last; later steps hold the floor.
    """
    if k < warmup:
        t = k / max(1, warmup)
        shape = {
            "linear": t,
            "cosine": (1 - math.cos(math.pi * t)) / 2,
            "1-sqrt": 1 - math.sqrt(1 - t),
        }[warmup_type]
        return ratio + (1 - ratio) * shape
    if stable is None or k < warmup + stable:
        return 1.0
    if k >= warmup + stable + decay:
        return ratio
    t = (k - warmup - stable) / max(1, decay)
    shape = {
        "linear": 1 - t,
        "cosine": (1 + math.cos(math.pi * t)) / 2,
        "1-sqrt": 1 - math.sqrt(t),
    }[decay_type]
    return ratio + (1 - ratio) * shape


def assert_close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        rtol=rtol,
        atol=0,
    )


# --- triangle ---------------------------------------------------------------


@pytest.mark.parametrize("up, down", [(1, 1), (5, 5), (4, 2), (2, 7), (2000, 3000)])
def test_triangle_matches_exact_position(up, down):
    steps = np.array(STEPS, dtype=np.int64)
    cycle, height = curves.triangle(steps, up, down)
    expected = [torch_cyclic(int(k), 0.0, 1.0, up, down, base_momentum=0.0)[0] for k in steps]
    np.testing.assert_array_equal(cycle, 1 + steps // (up + down))
    assert_close(height, expected)
    assert cycle.dtype.kind == "i"


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 10**12), up=st.integers(1, 10_000), down=st.integers(1, 10_000))
def test_triangle_at_any_step(k, up, down):
    _, height = curves.triangle(np.int64(k), up, down)
    expected = torch_cyclic(k, 0.0, 1.0, up, down, base_momentum=0.0)[0]
    assert_close(height, expected)


def test_triangle_corners():
    cycle, height = curves.triangle(np.arange(7), 4, 2)
    np.testing.assert_array_equal(cycle, [1, 1, 1, 1, 1, 1, 2])
    assert_close(height, [0, 0.25, 0.5, 0.75, 1.0, 0.5, 0])


# --- scale functions --------------------------------------------------------


def test_triangular_scale_is_one():
    assert curves.triangular_scale(1.0) == 1.0
    assert curves.triangular_scale(1e9) == 1.0


@pytest.mark.parametrize("x", [1.0, 2.0, 3.0, 11.0, 1075.0, 5e8])
def test_triangular2_scale_halves_each_cycle(x):
    assert curves.triangular2_scale(x) == triangular2_scale(x)


def test_triangular2_scale_underflows_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "overflow encountered in power"
        np.testing.assert_array_equal(
            curves.triangular2_scale(np.array([1.0, 2.0, 5e8])), [1.0, 0.5, 0.0]
        )


# --- cyclic -----------------------------------------------------------------

CYCLIC_CASES = {
    "triangular": dict(scale_fn=triangular_scale),
    "triangular2": dict(scale_fn=triangular2_scale),
    "exp_range": dict(scale_fn=exp_range_scale(0.99), scale_mode="iterations"),
    "custom-cycle": dict(scale_fn=lambda x: 1.0 / (1.0 + 0.5 * x)),
    "custom-iterations": dict(scale_fn=lambda x: 1.0 / (1.0 + 1e-3 * x), scale_mode="iterations"),
}


@pytest.mark.parametrize("case", sorted(CYCLIC_CASES))
@pytest.mark.parametrize("up, down", [(5, 5), (4, 2)])
def test_cyclic_value_and_inverse(case, up, down):
    kwargs = CYCLIC_CASES[case]
    steps = np.array(STEPS, dtype=np.int64)
    lr = curves.cyclic(
        steps, 1e-3, 1e-1, up, down, kwargs["scale_fn"], kwargs.get("scale_mode", "cycle")
    )
    momentum = curves.cyclic(
        steps, 0.9, 0.8, up, down, kwargs["scale_fn"], kwargs.get("scale_mode", "cycle")
    )
    expected = np.array([torch_cyclic(int(k), 1e-3, 1e-1, up, down, **kwargs) for k in steps])
    assert_close(lr, expected[:, 0])
    assert_close(momentum, expected[:, 1])


def test_cyclic_exp_range_tail():
    # With a negligible bottom the value is the decaying height itself, down
    # to ~1e-218 at step 50_000: the relative error of the tail is checked.
    steps = np.array([0, 1, 7, 1001, 20_001, 49_999, 50_001])
    scale = exp_range_scale(0.99)
    values = curves.cyclic(steps, 1e-300, 1.0, 2, 2, scale, "iterations")
    expected = [torch_cyclic(int(k), 1e-300, 1.0, 2, 2, scale, "iterations")[0] for k in steps]
    assert min(expected[1:]) < 1e-200
    assert_close(values, expected)


# --- anneals and piecewise --------------------------------------------------


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("start, end", [(1.0, 0.0), (0.004, 4e-8), (0.85, 0.95)])
def test_anneal(strategy, start, end):
    pct = np.linspace(0.0, 1.0, 17)
    actual = curves.ANNEALS[strategy](start, end, pct)
    assert_close(actual, [_anneal(strategy, start, end, p) for p in pct])
    assert_close(actual[[0, -1]], [start, end])


def test_piecewise_phases():
    steps = np.arange(0, 12)
    values = curves.piecewise(steps, [3.0, 5.0, 10.0], [0.0, 3.0, 1.0, 6.0], curves.anneal_linear)
    expected = [0, 1, 2, 3, 2, 1, 2, 3, 4, 5, 6, 7]  # past the end: last phase
    assert_close(values, expected)


def test_piecewise_zero_length_phase_jumps_to_its_end():
    values = curves.piecewise(
        np.arange(4), [0.0, 0.0, 3.0], [5.0, 1.0, 2.0, 8.0], curves.anneal_linear
    )
    assert_close(values, [1.0, 4.0, 6.0, 8.0])


# --- one cycle --------------------------------------------------------------


@pytest.mark.parametrize(
    "total, pct, three_phase, expected",
    [
        (100, 0.3, False, [29.0, 99.0]),
        (100, 0.3, True, [29.0, 58.0, 99.0]),
        (25, 0.3, False, [6.5, 24.0]),
        (25, 0.25, True, [5.25, 10.5, 24.0]),
    ],
)
def test_one_cycle_phases(total, pct, three_phase, expected):
    assert curves.one_cycle_phases(total, pct, three_phase) == pytest.approx(expected)


ONE_CYCLE_CASES = [
    dict(total_steps=100),
    dict(total_steps=100, anneal_strategy="linear"),
    dict(total_steps=100, three_phase=True),
    dict(total_steps=100, three_phase=True, anneal_strategy="linear"),
    dict(total_steps=37, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
    dict(total_steps=7, pct_start=0.5),
    dict(total_steps=10**8, pct_start=0.4, three_phase=True),
]


@pytest.mark.parametrize("case", ONE_CYCLE_CASES, ids=str)
def test_one_cycle_lr_and_momentum(case):
    case = dict(case)
    total = case.pop("total_steps")
    kwargs = dict(
        pct_start=case.get("pct_start", 0.3),
        anneal=case.get("anneal_strategy", "cos"),
        three_phase=case.get("three_phase", False),
    )
    div, final_div = case.get("div_factor", 25.0), case.get("final_div_factor", 1e4)
    initial = 1e-2 / div
    checkpoints = [
        int(e) + d
        for e in curves.one_cycle_phases(total, kwargs["pct_start"], kwargs["three_phase"])
        for d in (-1, 0, 1, 2)
    ]
    steps = np.array(
        sorted(
            {k for k in STEPS[:41] + checkpoints + [total - 1, total, total + 5, 10**9] if k >= 0}
        ),
        dtype=np.int64,
    )
    lr = curves.one_cycle(steps, total, initial, 1e-2, initial / final_div, **kwargs)
    momentum = curves.one_cycle(steps, total, 0.95, 0.85, 0.95, **kwargs)
    expected = np.array([torch_one_cycle(int(k), total, 1e-2, **case) for k in steps])
    assert_close(lr, expected[:, 0])
    assert_close(momentum, expected[:, 1])


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_holds_final_value_after_total_steps(anneal):
    values = curves.one_cycle(np.array([99, 100, 101, 10**9]), 100, 4e-4, 1e-2, 4e-8, anneal=anneal)
    assert_close(values, [4e-8] * 4)


# --- warmup-stable-decay ------------------------------------------------------

SHAPES = ["linear", "cosine", "1-sqrt"]


@pytest.mark.parametrize("warmup_type", SHAPES)
@pytest.mark.parametrize("decay_type", SHAPES)
@pytest.mark.parametrize(
    "warmup, stable, decay, ratio", [(7, 5, 9, 0.1), (0, 3, 4, 0.0), (4, 0, 1, 0.3), (1, 1, 0, 0.5)]
)
def test_warmup_stable_decay_is_transformers_multiplier(
    warmup_type, decay_type, warmup, stable, decay, ratio
):
    end = warmup + stable + decay
    steps = np.arange(end + 4)
    actual = curves.warmup_stable_decay(
        steps, warmup, warmup + stable, decay, ratio, 1.0, warmup_type, decay_type
    )
    expected = [
        wsd_multiplier(int(k), warmup, stable, decay, warmup_type, decay_type, ratio) for k in steps
    ]
    assert_close(actual, expected, rtol=1e-14)
    # The boundaries: the warm-up starts at the floor and hands over at the
    # peak; the cooldown's first step is the peak; the floor comes after it.
    if warmup:
        assert actual[0] == ratio
    assert actual[warmup] == 1.0
    assert actual[end] == ratio and actual[-1] == ratio
    if decay > 1:
        assert actual[warmup + stable] == 1.0 and ratio < actual[end - 1] < 1.0


def test_warmup_stable_decay_without_a_cooldown_holds_the_peak():
    steps = np.array([0, 1, 2, 3, 4, 10**6, 10**12])
    actual = curves.warmup_stable_decay(steps, 4, None, 0, 0.2, 1.0)
    assert_close(actual, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0], rtol=1e-15)


def test_warmup_stable_decay_inverse_momentum():
    steps = np.arange(12)
    actual = curves.warmup_stable_decay(steps, 4, 6, 4, 0.95, 0.85, "linear", "linear")
    expected = [0.95, 0.925, 0.9, 0.875, 0.85, 0.85, 0.85, 0.875, 0.9, 0.925, 0.95, 0.95]
    assert_close(actual, expected, rtol=1e-15)
