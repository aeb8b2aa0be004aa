"""The suggestion rules: a range test's curve in, a learning rate out.

Pure functions of arrays: every fact a rule needs (the number of planned
steps, the mode, the optimizer's momentum, whether the network has batch
normalization) is an argument. Each rule returns `(value, reason)`: the
suggestion, or None where there is none, and a sentence saying why.
`keras_clr.LRFinderResult` calls them on its record.

Suggestions named `valley`, `slide`, `minimum` and `steep` return the value
fastai 2.8's functions of those names return for the same record: the
smoothed losses are trimmed to `[num_steps // 10 : -5]` and cut at the first
NaN, as fastai's `lr_find` does (`window`), and each rule is re-implemented
here with its quirks. Where fastai would return a meaningless number (fewer
than `MIN_POINTS` points, a curve that never descends, an index that wraps
around, a value outside the tested range) the suggestion is None and the
reason says why.

A record need not have a point per step: a validation-monitored test has
one per `val_every` steps, and `steps` gives the step of each point. The
trim is then made in steps, as fastai's is: the points of the test's first
tenth and of its last `TAIL_STEPS` steps are left out, whatever their number.
"""

import numpy as np

from keras_clr import _checks
from keras_clr import curves

METHODS = ("one_cycle", "valley", "slide", "minimum", "steep")
ONE_CYCLE_WIDTH = 0.2  # default rule: the smoothing kernel's sigma, in decades of LR
ONE_CYCLE_FALL = 0.9  # default rule: the landmark is where this much of the fall is made
ONE_CYCLE_FACTOR = 1.2  # default rule: FACTOR x the landmark's LR
ONE_CYCLE_MIN_DROP = 0.01  # default rule: None unless the loss falls by this fraction
RANGE_START_FRACTION = 0.05  # suggest_range: the "clear drop" for base_lr
RAGGED_WINDOW = 5  # suggest_range: points in the raw-loss variability window
RAGGED_FACTOR = 4.0  # suggest_range: variability "blows up" at this ratio
# suggest_range: the raw loss's raggedness ends the range only once the
# smoothed loss has made this much of its fall (before, it is one noisy batch)
RAGGED_AFTER_FALL = 0.5
# suggest_range on sparse points: the range ends at the first point that has
# made this much of the fall to the lowest (the descent is over there)
SPARSE_RANGE_FALL = 0.95
SLIDE_LR_DIFF, SLIDE_THRESH, SLIDE_ADJUST = 15, 0.005, 1.0  # fastai defaults
# Every rule: None on fewer points than this (slide: SLIDE_LR_DIFF + 1). A
# descent is told from noise by a level, two points on the way down, the
# lowest point and one after it.
MIN_POINTS = 5
TAIL_STEPS = 5  # the window leaves out the record's last steps (fastai's -5)


def _too_few(n, needed, sparse=False):
    hint = " (one point per few steps: lower `val_every` or raise `num_steps`)" if sparse else ""
    return (
        f"only {n} point{'' if n == 1 else 's'} left after trimming (needs at least {needed}){hint}"
    )


# fastai 2.8's rules, on the trimmed, NaN-cut smoothed curve. Each returns
# (lr or None, reason).


def _valley(lrs, losses):
    n = len(losses)
    if n < 2:
        return None, _too_few(n, 2)
    lds = np.ones(n, dtype=np.int64)  # longest decreasing subsequence ending at i
    for i in range(1, n):
        longer = lds[:i][losses[:i] > losses[i]]
        if longer.size:
            lds[i] = longer.max() + 1
    end = int(np.argmax(lds))  # first maximum, as fastai's strict `<` update
    if lds[end] == 1:
        return None, "the smoothed loss never decreases"
    start = end - int(lds[end])  # fastai's off-by-one: may be -1
    sections = (end - start) / 3
    idx = start + int(sections) + int(sections / 2)
    if idx < 0:
        return None, (
            f"the longest descent has only {lds[end]} points, so "
            "fastai's index wraps around to the last LR"
        )
    return float(lrs[idx]), (
        "half-way into the longest descending run of the "
        f"smoothed loss ({lrs[max(start, 0)]:.1e} to {lrs[end]:.1e})"
    )


def _slide(lrs, losses):
    n = len(losses)
    if n < SLIDE_LR_DIFF + 1:
        return None, _too_few(n, SLIDE_LR_DIFF + 1)
    with np.errstate(all="ignore"):
        grad = np.gradient(losses)
        r_idx, l_idx = -1, -1 - SLIDE_LR_DIFF
        lr = lrs[l_idx]
        while l_idx >= -n and abs(grad[r_idx] - grad[l_idx]) > SLIDE_THRESH:
            lr = lrs[l_idx]
            r_idx -= 1
            l_idx -= 1
    return float(lr) * SLIDE_ADJUST, (
        f"where the loss gradient {SLIDE_LR_DIFF} points apart first differs by "
        f"at most {SLIDE_THRESH}, walking down from the largest LR"
    )


def _minimum(lrs, losses, lowest):
    if len(losses) == 0:
        return None, _too_few(0, 1)
    lr_min = float(lrs[np.argmin(losses)])
    if lr_min / 10 < lowest:
        return None, (
            f"a tenth of the LR at the lowest loss ({lr_min:.1e}) is "
            f"below the smallest tested LR ({lowest:.1e})"
        )
    return lr_min / 10, f"a tenth of the LR at the lowest smoothed loss ({lr_min:.1e})"


def _steep(lrs, losses):
    if len(losses) < 2:
        return None, _too_few(len(losses), 2)
    with np.errstate(all="ignore"):
        grads = np.diff(losses) / np.diff(np.log(lrs))
    k = int(np.argmin(grads))  # a NaN slope wins, as in torch
    if np.isnan(grads[k]):
        return None, "the steepest slope is undefined (infinite loss)"
    if grads[k] >= 0:
        return None, "the smoothed loss never decreases"
    return float(lrs[k]), "where the smoothed loss falls fastest against log(LR)"


def kernel_smooth(lrs, losses, width):
    """Gaussian kernel smoothing against log10(lr), without lag.

    Each point becomes the average of the losses around it, weighted by
    `exp(-d**2 / (2 * width**2))` where `d` is the distance in decades of
    learning rate (points further than 4 widths are left out). Unlike the
    moving average of `smooth`, which lags its input by about
    `1 / (1 - beta)` steps, its lowest point sits where the losses around
    it are lowest, and the width does not depend on the number of steps.

    Args:
        lrs: positive, increasing learning rates.
        losses: finite losses, one per learning rate.
        width: the kernel's standard deviation, in decades.

    Returns:
        A float64 array of the same length.
    """
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    losses = np.asarray(losses, dtype=np.float64)
    low = np.searchsorted(x, x - 4 * width, side="left")
    high = np.searchsorted(x, x + 4 * width, side="right")
    out = np.empty_like(losses)
    for i in range(len(x)):
        weights = np.exp(-0.5 * ((x[low[i] : high[i]] - x[i]) / width) ** 2)
        out[i] = weights @ losses[low[i] : high[i]] / weights.sum()
    return out


def momentum_lag(momentum, growth, peak_momentum=None):
    """How much more strongly `OneCycle` applies a learning rate than a range test did.

    Keras's SGD and RMSprop fold the learning rate into their velocity
    (`v = momentum * v - lr * grad`), so a step moves the weights by a sum
    of past rates. At a rate held still with momentum `b` that sum is
    `lr / (1 - b)`; while the range test raises the rate by `growth` per
    step it is only `lr / (1 - momentum / growth)`. `OneCycle` holds its
    peak rate with momentum `peak_momentum` (its `base_momentum`, 0.85 by
    default), so the same rate moves the weights
    `(1 - momentum / growth) / (1 - peak_momentum)` times as far there as in
    the test: 1.69 for momentum 0.9 in a 100-step test from 1e-7 to 10.

    Args:
        momentum: the optimizer's momentum during the test, in [0, 1).
        growth: the ratio of consecutive learning rates of the test, > 1.
        peak_momentum: the momentum at `OneCycle`'s peak; None for its
            default `base_momentum`.

    Returns:
        The factor, a float.
    """
    if peak_momentum is None:
        peak_momentum = curves.BASE_MOMENTUM
    return (1 - momentum / growth) / (1 - peak_momentum)


def _one_cycle_rule(
    lrs,
    losses,
    width=ONE_CYCLE_WIDTH,
    fall=ONE_CYCLE_FALL,
    factor=ONE_CYCLE_FACTOR,
    momentum=None,
    batch_norm=False,
    peak_momentum=None,
    steps=None,
):
    """The default suggestion: a `max_lr` for `OneCycle`.

    The raw losses are smoothed without lag (`kernel_smooth`, a Gaussian
    `ONE_CYCLE_WIDTH` = 0.2 decades wide); the landmark is the first LR
    where the smoothed loss has made `ONE_CYCLE_FALL` (90%) of its fall from
    its first value to its lowest, where the valley's floor begins, and the
    suggestion is `ONE_CYCLE_FACTOR` (1.2) times it, kept within the tested
    range. When the optimizer folds the learning rate into its velocity
    (`momentum` given: Keras's SGD and RMSprop with momentum) the value is
    divided by `momentum_lag`, so that `OneCycle` moves the weights at its
    peak as the test did at the landmark. For a network with batch
    normalization the suggestion is instead the last LR of the floor (before
    the smoothed loss climbs out of its lowest 10% again), uncorrected:
    batch normalization lets training that warms up, as `OneCycle` does,
    hold rates at which the test, starting cold, was already failing. The
    moving average of the plot puts its minimum 1-2 decades late on a
    100-step test, by an amount that depends on how fast the loss rises
    after it; the lowest point itself
    wanders along a broad floor from one run to the next, and on recurrent
    nets sits close to where training at that rate falls apart. None when
    the smoothed loss never falls below its first value by more than
    `ONE_CYCLE_MIN_DROP` of it: without a descent its lowest point is noise.
    Measured against a grid of `max_lr` in benchmarks/suggestion_quality.py
    (see benchmarks/README.md).

    Args:
        lrs: the learning rates of the raw curve from step
            `num_steps // 10` on.
        losses: the raw losses there; the curve is cut at their first
            non-finite value.
        width: the smoothing kernel's sigma, in decades of learning rate
            (benchmarks try others).
        fall: the landmark is where this fraction of the fall is made.
        factor: the suggestion is `factor` times the landmark's rate.
        momentum: the momentum of an optimizer that folds the learning
            rate into its velocity, or None.
        batch_norm: whether the network has batch normalization.
        peak_momentum: the momentum `OneCycle` will hold at `max_lr`; None
            for its default `base_momentum`.
        steps: the step of each point, or None for consecutive steps: the
            growth of the LR per step, which sets the momentum's lag, is
            the ratio of two points to the power 1 / their distance in steps.

    Returns:
        (lr or None, reason): None on fewer than `MIN_POINTS` finite points.
    """
    steps = np.arange(len(lrs)) if steps is None else np.asarray(steps)
    finite = np.isfinite(losses)
    if not finite.all():
        end = int(np.argmin(finite))
        lrs, losses, steps = lrs[:end], losses[:end], steps[:end]
    if len(losses) < MIN_POINTS:
        return None, _too_few(len(losses), MIN_POINTS, _sparse(steps))
    smoothed = kernel_smooth(lrs, losses, width)
    low = int(np.argmin(smoothed))
    first, lowest = float(smoothed[0]), float(smoothed[low])
    if not first - lowest > ONE_CYCLE_MIN_DROP * abs(first):
        return None, (
            f"the loss, smoothed without lag, never falls more than "
            f"{ONE_CYCLE_MIN_DROP:.0%} below its first value, so its lowest "
            "point is noise"
        )
    target = first - fall * (first - lowest)
    if batch_norm:
        above = np.flatnonzero(smoothed[low:] > target)
        end = low + int(above[0]) - 1 if above.size else len(smoothed) - 1
        return float(lrs[end]), (
            f"the last LR where the loss, smoothed without lag (a Gaussian {width:g} "
            f"decades wide), is within the lowest {1 - fall:.0%} of its fall, for a "
            "network with batch normalization"
        )
    at = int(np.argmax(smoothed[: low + 1] <= target))
    floor = float(lrs[at])
    reason = (
        f"{factor:g} x the LR where the loss, smoothed without lag (a Gaussian "
        f"{width:g} decades wide), has made {fall:.0%} of its fall ({floor:.1e})"
    )
    lr = factor * floor
    if momentum:
        i = max(at, 1)
        growth = float(lrs[i] / lrs[i - 1]) ** (1 / float(steps[i] - steps[i - 1]))
        lag = momentum_lag(momentum, growth, peak_momentum)
        lr /= lag
        reason += (
            f", divided by {lag:.2f} for the lag of a velocity with momentum "
            f"{momentum:g} behind the rising rate"
        )
    return min(max(lr, float(lrs[0])), float(lrs[-1])), reason


def _finite_median(values):
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else np.nan


def _descent(smoothed):
    """(base, low, level): the indices where the descent to the lowest point
    begins and that point, and the curve's starting level; None when the
    curve never drops below its starting level. See `suggest_range`."""
    low = int(np.argmin(smoothed))
    # The curve's starting level: the median of its first quarter before the
    # minimum, which one noisy point (or an early hump) does not move.
    level = float(np.median(smoothed[: low // 4 + 1]))
    depth = level - smoothed[low]
    if low == 0 or not depth > 0:
        return None
    # The descent that ends at the minimum begins after the last point still
    # at that level (within a small fraction of the drop): early wobbles
    # below it do not start it.
    still = np.flatnonzero(smoothed[:low] >= level - RANGE_START_FRACTION * depth)
    return (int(still[-1]) + 1 if still.size else 0), low, level


def _sparse_valley(lrs, losses):
    """fastai's valley for points steps apart: without the batches' noise,
    the flat start is a long run of tiny descents, so the run is the
    descent `_descent` finds, and the index fastai's arithmetic puts in it
    (without its off-by-one, a whole point here)."""
    found = _descent(losses)
    if found is None:
        return None, "the loss never drops below its starting level"
    base, low, _ = found
    run = low - base + 1
    idx = base + int(run / 3) + int(run / 6)
    return float(lrs[idx]), (
        "half-way into the descent of the loss to its lowest "
        f"point ({lrs[base]:.1e} to {lrs[low]:.1e})"
    )


def _cyclic_range(lrs, smoothed, raw, sparse=False):
    """(base_lr, max_lr) for CyclicLR on the window; see `suggest_range`."""
    n = len(smoothed)
    if n < MIN_POINTS:
        return None, _too_few(n, MIN_POINTS, sparse)
    found = _descent(smoothed)
    if found is None:
        return None, "the smoothed loss never drops below its starting level"
    base, low, level = found
    depth = level - smoothed[low]
    top, why = low, "the lowest smoothed loss"
    if sparse:
        # Points steps apart differ by more than the batches' noise: no
        # ragged cut; the descent ends at the first point that has made
        # most of the fall (a flat floor after it is not more descent).
        done = np.flatnonzero(smoothed[base : low + 1] <= level - SPARSE_RANGE_FALL * depth)
        if done.size and base + int(done[0]) < low:
            top = base + int(done[0])
            why = f"the first point that has made {SPARSE_RANGE_FALL:.0%} of its fall"
        return (float(lrs[base]), float(lrs[top])), (
            f"from where the loss last leaves its level (within "
            f"{RANGE_START_FRACTION:.0%} of its drop) to {why}"
        )
    wiggle = np.full(n, np.nan)
    with np.errstate(all="ignore"):
        wiggle[1:-1] = np.abs(raw[:-2] - 2 * raw[1:-1] + raw[2:])
    baseline = _finite_median(wiggle[1 : low + 1])
    if baseline > 0:
        # Raggedness counts once the loss has made RAGGED_AFTER_FALL of its
        # fall: before that a ragged stretch is a noisy batch, not the rate
        # becoming too high.
        fallen = level - RAGGED_AFTER_FALL * depth
        for k in range(base + 1, low + 1):
            window = wiggle[max(1, k - RAGGED_WINDOW + 1) : k + 1]
            if smoothed[k] <= fallen and _finite_median(window) > RAGGED_FACTOR * baseline:
                top, why = k, "where the raw loss turns ragged"
                break
    return (float(lrs[base]), float(lrs[top])), (
        f"from where the smoothed loss last leaves its level (within "
        f"{RANGE_START_FRACTION:.0%} of its drop) to {why}"
    )


def _sparse(steps):
    """Whether a record's points are further apart than one step."""
    return bool(np.any(np.diff(steps) > 1))


def first_point(steps, num_steps):
    """The index of the first point past the test's first tenth: fastai's
    `num_steps // 10` on a record with a point per step."""
    return int(np.searchsorted(steps, num_steps // 10, side="left"))


def window(lrs, smoothed, raw, *, num_steps, mode="min", finite=False, steps=None):
    """The curve fastai's rules see: the record (learning rates, smoothed and
    raw losses) from its first point past the test's first tenth
    (`first_point`) to its last point `TAIL_STEPS` steps before its last
    one: `[num_steps // 10 : -5]` with a point per step. Cut at the first
    NaN smoothed value (the first non-finite one when `finite`), negated in
    mode "max". `steps`: the step of each point, None for consecutive ones.
    Returns (lrs, smoothed, raw)."""
    steps = np.arange(len(lrs)) if steps is None else np.asarray(steps)
    end = int(np.searchsorted(steps, steps[-1] - TAIL_STEPS, side="right")) if len(steps) else 0
    cut = slice(first_point(steps, num_steps), end)
    lrs, smoothed, raw = lrs[cut], smoothed[cut], raw[cut]
    bad = ~np.isfinite(smoothed) if finite else np.isnan(smoothed)
    if bad.any():
        end = int(np.argmax(bad))
        lrs, smoothed, raw = lrs[:end], smoothed[:end], raw[:end]
    sign = -1.0 if mode == "max" else 1.0
    return lrs, sign * smoothed, sign * raw


def suggest(
    method,
    lrs,
    losses,
    smoothed,
    *,
    num_steps,
    mode="min",
    momentum=None,
    batch_norm=False,
    peak_momentum=None,
    steps=None,
):
    """The suggestion `method` for a range test's record.

    Args:
        method: one of `METHODS`: "one_cycle" (`_one_cycle_rule`), or
            fastai's "valley", "slide", "minimum" or "steep".
        lrs: the record's learning rates, one per point.
        losses: its raw losses.
        smoothed: its smoothed losses.
        num_steps: the number of steps the test was planned for.
        mode: "min", or "max" for an accuracy-like monitor (the curve is
            negated).
        momentum: for "one_cycle", see `_one_cycle_rule`.
        batch_norm: for "one_cycle", see `_one_cycle_rule`.
        peak_momentum: for "one_cycle", see `_one_cycle_rule`.
        steps: the step of each point (a validation-monitored test has one
            per `val_every` steps), or None for one point per step.

    Returns:
        (lr or None, reason): None on fewer than `MIN_POINTS` points left
        after trimming (`SLIDE_LR_DIFF + 1` for "slide").

    Raises:
        ValueError: for an unknown method.
    """
    _checks.one_of("method", method, METHODS)
    lrs, losses, smoothed = (np.asarray(a, dtype=np.float64) for a in (lrs, losses, smoothed))
    steps = np.arange(len(lrs)) if steps is None else np.asarray(steps)
    if method == "one_cycle":
        # Like every rule, it needs MIN_POINTS in the trimmed window ...
        count = len(
            window(lrs, smoothed, losses, num_steps=num_steps, mode=mode, finite=True, steps=steps)[
                0
            ]
        )
        if count < MIN_POINTS:
            return None, _too_few(count, MIN_POINTS, _sparse(steps))
        # ... and reads the raw curve from fastai's start of window to its
        # first non-finite loss: the kernel needs the rise past the minimum
        # that fastai's trim of the last 5 points would cut off.
        sign = -1.0 if mode == "max" else 1.0
        start = first_point(steps, num_steps)
        return _one_cycle_rule(
            lrs[start:],
            sign * losses[start:],
            momentum=momentum,
            batch_norm=batch_norm,
            peak_momentum=peak_momentum,
            steps=steps[start:],
        )
    w_lrs, w_smoothed, _ = window(
        lrs, smoothed, losses, num_steps=num_steps, mode=mode, steps=steps
    )
    if method != "slide" and len(w_lrs) < MIN_POINTS:
        return None, _too_few(len(w_lrs), MIN_POINTS, _sparse(steps))
    if method == "slide" and len(w_lrs) < SLIDE_LR_DIFF + 1:
        return None, _too_few(len(w_lrs), SLIDE_LR_DIFF + 1, _sparse(steps))
    if method == "minimum":
        return _minimum(w_lrs, w_smoothed, lrs[0] if len(lrs) else np.inf)
    if method == "valley" and _sparse(steps):
        return _sparse_valley(w_lrs, w_smoothed)
    return {"valley": _valley, "slide": _slide, "steep": _steep}[method](w_lrs, w_smoothed)


def suggest_range(lrs, losses, smoothed, *, num_steps, mode="min", steps=None):
    """(base_lr, max_lr) for `CyclicLR`, after Smith (2017), section 3.3.

    On the smoothed curve trimmed as fastai does and cut at its first
    non-finite value (`window`, negated in mode "max"), with `s_min` its
    lowest value (at index `m`):

    * `base_lr` is where the descent to `m` begins: the LR one point
      after the last point before `m` with `s >= s0 - 0.05 * (s0 - s_min)`
      (`RANGE_START_FRACTION`), `s0` being the median of the curve's first
      quarter before `m` (its starting level, which a noisy first point
      or an early hump does not move). Early wobbles below the level do
      not start the range, so it stays within the descending stretch,
      also of the mean curve of repeats.
    * `max_lr` is the LR at `m`, or earlier where the raw loss turns
      ragged: the first index `k` after `base_lr`'s with the median of
      `|raw[i-1] - 2 raw[i] + raw[i+1]|` over the last `RAGGED_WINDOW`
      points above `RAGGED_FACTOR` times its median over indices 1..m, at
      a point where the smoothed loss has made at least `RAGGED_AFTER_FALL`
      (half) of its fall `s0 - s_min` (earlier, a ragged stretch is one
      noisy batch). Only on a record with a point per step: on points
      further apart (a validation-monitored test), which differ by more
      than the batches' noise, `max_lr` is instead the first point that
      has made `SPARSE_RANGE_FALL` (95%) of the fall, so a flat floor
      before the lowest point is left out.

    Args:
        lrs: the record's learning rates.
        losses: its raw losses.
        smoothed: its smoothed losses.
        num_steps: the number of steps the test was planned for.
        mode: "min", or "max" for an accuracy-like monitor.
        steps: the step of each point, or None for one point per step.

    Returns:
        ((base_lr, max_lr) or None, reason): None when the curve never
        drops below its starting level or has fewer than `MIN_POINTS` points.

    References:
        Smith, L. N. (2015). Cyclical Learning Rates for Training Neural
        Networks. arXiv:1506.01186.
    """
    lrs, losses, smoothed = (np.asarray(a, dtype=np.float64) for a in (lrs, losses, smoothed))
    steps = np.arange(len(lrs)) if steps is None else np.asarray(steps)
    return _cyclic_range(
        *window(lrs, smoothed, losses, num_steps=num_steps, mode=mode, finite=True, steps=steps),
        sparse=_sparse(steps),
    )
