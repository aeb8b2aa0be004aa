"""Argument checks shared by the schedules, callbacks and the range test.

Each check raises `ValueError` naming the argument, what was expected and the
value received, in the wording Keras uses.
"""

import math
import numbers

import numpy as np


def _fail(name, expected, value):
    raise ValueError(f"Argument `{name}` must be {expected}. Received: {name}={value!r}")


def positive_finite(name, value):
    """A real number > 0 that is not inf or NaN; returns it as a float."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        _fail(name, "a positive finite number", value)
    return float(value)


def positive_int(name, value):
    """An integer >= 1 (a float with an integral value is accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, "a positive integer", value)
    if isinstance(value, numbers.Integral):
        if value < 1:
            _fail(name, "a positive integer", value)
        return int(value)
    if not math.isfinite(value) or value != int(value) or value < 1:
        _fail(name, "a positive integer", value)
    return int(value)


def non_negative_int(name, value):
    """An integer >= 0 (a float with an integral value is accepted)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value != int(value)
        or value < 0
    ):
        _fail(name, "a non-negative integer", value)
    return int(value)


def steps_or_fraction(name, value):
    """A number of steps (an integer >= 0) or a fraction (a float in (0, 1))."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, numbers.Integral))
        and 0 < value < 1
    ):
        return float(value)
    _fail(name, "a non-negative integer (steps) or a float in (0, 1) (a fraction)", value)


def in_interval(name, value, low, high, low_open=False, high_open=False):
    """A finite real number within the interval; returns it as a float."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(name, f"a number in {interval}", value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        _fail(name, f"a number in {interval}", value)
    return float(value)


def one_of(name, value, choices):
    """One of a fixed set of strings."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        _fail(name, f"one of {listed}", value)
    return value


def ordered(low_name, low, high_name, high):
    """`low <= high`, for pairs such as base_lr and max_lr."""
    if low > high:
        raise ValueError(
            f"Argument `{high_name}` must be at least `{low_name}`. "
            f"Received: {low_name}={low!r}, {high_name}={high!r}"
        )


def a_callable(name, value):
    if not callable(value):
        _fail(name, "a callable (x -> scale factor)", value)
    return value


def a_bool(name, value, also=()):
    """True or False (NumPy's too), or one of the strings in `also`."""
    if isinstance(value, str) and value in also:
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    expected = " or ".join(["True", "False", *(repr(a) for a in also)])
    _fail(name, expected, value)
