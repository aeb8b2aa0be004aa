"""The learning-rate range test's result: the record, suggestions, export.

`LRFinderResult` holds what a range test measured (one learning rate and one
loss per step) and computes from it; it draws nothing itself (`plot` hands
the result to `keras_clr.plotting`) and leaves files to `keras_clr.files`.

Suggestions named `valley`, `slide`, `minimum` and `steep` return the value
fastai 2.8's functions of those names return for the same record: the
smoothed losses are trimmed to `[num_steps // 10 : -5]` and cut at the first
NaN, as fastai's `lr_find` does, and each rule is re-implemented here with
its quirks. Where fastai would return a meaningless number (too few points,
a curve that never descends, an index that wraps around, a value outside the
tested range) the suggestion is None and `explain` says why.
"""

import warnings

import numpy as np

from keras_clr import _checks
from keras_clr import files
from keras_clr.stopping import smooth  # noqa: F401  (the result's smoothing)

METHODS = ("one_cycle", "valley", "slide", "minimum", "steep")
ONE_CYCLE_WIDTH = 0.2  # default rule: the smoothing kernel's sigma, in decades of LR
ONE_CYCLE_FALL = 0.9  # default rule: the landmark is where this much of the fall is made
ONE_CYCLE_FACTOR = 1.2  # default rule: FACTOR x the landmark's LR
ONE_CYCLE_MIN_DROP = 0.01  # default rule: None unless the loss falls by this fraction
RANGE_START_FRACTION = 0.05  # suggest_range: the "clear drop" for base_lr
RAGGED_WINDOW = 5  # suggest_range: points in the raw-loss variability window
RAGGED_FACTOR = 4.0  # suggest_range: variability "blows up" at this ratio
SLIDE_LR_DIFF, SLIDE_THRESH, SLIDE_ADJUST = 15, 0.005, 1.0  # fastai defaults
_RESERVED = ("step", "lr", "loss", "smoothed_loss", "loss_low", "loss_high")


def _array(name, values):
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"Argument `{name}` must be a 1-D array of numbers. "
                         f"Received: {name} of type {type(values).__name__}") from None
    if array.ndim != 1:
        raise ValueError(f"Argument `{name}` must be a 1-D array. "
                         f"Received: {name} with shape {array.shape}")
    return array


def _too_few(n, needed):
    return (f"only {n} point{'' if n == 1 else 's'} left after trimming "
            f"(needs at least {needed})")


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
        return None, (f"the longest descent has only {lds[end]} points, so "
                      "fastai's index wraps around to the last LR")
    return float(lrs[idx]), ("half-way into the longest descending run of the "
                             f"smoothed loss ({lrs[max(start, 0)]:.1e} to {lrs[end]:.1e})")


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
        f"at most {SLIDE_THRESH}, walking down from the largest LR")


def _minimum(lrs, losses, lowest):
    if len(losses) == 0:
        return None, _too_few(0, 1)
    lr_min = float(lrs[np.argmin(losses)])
    if lr_min / 10 < lowest:
        return None, (f"a tenth of the LR at the lowest loss ({lr_min:.1e}) is "
                      f"below the smallest tested LR ({lowest:.1e})")
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
        weights = np.exp(-0.5 * ((x[low[i]:high[i]] - x[i]) / width) ** 2)
        out[i] = weights @ losses[low[i]:high[i]] / weights.sum()
    return out


def one_cycle_peak_momentum(one_cycle=None):
    """The momentum `OneCycle` holds at its peak rate: the `base_momentum` of
    `one_cycle`, or of `OneCycle`'s defaults; None for a `OneCycle` that
    leaves the momentum alone (`cycle_momentum=False`)."""
    from keras_clr.callbacks import OneCycle

    if one_cycle is None:
        import inspect

        return inspect.signature(OneCycle).parameters["base_momentum"].default
    if not isinstance(one_cycle, OneCycle):
        raise ValueError("Argument `one_cycle` must be the keras_clr.OneCycle to "
                         f"train with. Received: one_cycle={type(one_cycle).__name__}")
    return one_cycle.base_momentum if one_cycle.cycle_momentum is not False else None


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
        peak_momentum = one_cycle_peak_momentum()
    return (1 - momentum / growth) / (1 - peak_momentum)


def _one_cycle_rule(lrs, losses, width=ONE_CYCLE_WIDTH, fall=ONE_CYCLE_FALL,
                    factor=ONE_CYCLE_FACTOR, momentum=None, batch_norm=False,
                    peak_momentum=None):
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
        lrs, losses: the raw curve from step `num_steps // 10` on; it is cut
            at its first non-finite value.
        width, fall, factor: the rule's constants (benchmarks try others).
        momentum: the momentum of an optimizer that folds the learning
            rate into its velocity, or None; consecutive points are taken
            as consecutive steps.
        batch_norm: whether the network has batch normalization.
        peak_momentum: the momentum `OneCycle` will hold at `max_lr`; None
            for its default `base_momentum`.

    Returns:
        (lr or None, reason).
    """
    finite = np.isfinite(losses)
    if not finite.all():
        lrs, losses = lrs[:int(np.argmin(finite))], losses[:int(np.argmin(finite))]
    if len(losses) < 2:
        return None, _too_few(len(losses), 2)
    smoothed = kernel_smooth(lrs, losses, width)
    low = int(np.argmin(smoothed))
    first, lowest = float(smoothed[0]), float(smoothed[low])
    if not first - lowest > ONE_CYCLE_MIN_DROP * abs(first):
        return None, (f"the loss, smoothed without lag, never falls more than "
                      f"{ONE_CYCLE_MIN_DROP:.0%} below its first value, so its lowest "
                      "point is noise")
    target = first - fall * (first - lowest)
    if batch_norm:
        above = np.flatnonzero(smoothed[low:] > target)
        end = low + int(above[0]) - 1 if above.size else len(smoothed) - 1
        return float(lrs[end]), (
            f"the last LR where the loss, smoothed without lag (a Gaussian {width:g} "
            f"decades wide), is within the lowest {1 - fall:.0%} of its fall, for a "
            "network with batch normalization")
    at = int(np.argmax(smoothed[:low + 1] <= target))
    floor = float(lrs[at])
    reason = (f"{factor:g} x the LR where the loss, smoothed without lag (a Gaussian "
              f"{width:g} decades wide), has made {fall:.0%} of its fall ({floor:.1e})")
    lr = factor * floor
    if momentum:
        lag = momentum_lag(momentum, float(lrs[max(at, 1)] / lrs[max(at, 1) - 1]),
                           peak_momentum)
        lr /= lag
        reason += (f", divided by {lag:.2f} for the lag of a velocity with momentum "
                   f"{momentum:g} behind the rising rate")
    return min(max(lr, float(lrs[0])), float(lrs[-1])), reason


def _finite_median(values):
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else np.nan


def _cyclic_range(lrs, smoothed, raw):
    """(base_lr, max_lr) for CyclicLR; see `LRFinderResult.suggest_range`."""
    n = len(smoothed)
    if n < 3:
        return None, _too_few(n, 3)
    low = int(np.argmin(smoothed))
    # The curve's starting level: the median of its first quarter before the
    # minimum, which one noisy point (or an early hump) does not move.
    level = float(np.median(smoothed[:low // 4 + 1]))
    depth = level - smoothed[low]
    if low == 0 or not depth > 0:
        return None, "the smoothed loss never drops below its starting level"
    # The descent that ends at the minimum begins after the last point still
    # at that level (within a small fraction of the drop): early wobbles
    # below it do not start it.
    still = np.flatnonzero(smoothed[:low] >= level - RANGE_START_FRACTION * depth)
    base = int(still[-1]) + 1 if still.size else 0
    wiggle = np.full(n, np.nan)
    with np.errstate(all="ignore"):
        wiggle[1:-1] = np.abs(raw[:-2] - 2 * raw[1:-1] + raw[2:])
    baseline = _finite_median(wiggle[1:low + 1])
    top, why = low, "the lowest smoothed loss"
    if baseline > 0:
        for k in range(base + 1, low + 1):
            window = wiggle[max(1, k - RAGGED_WINDOW + 1):k + 1]
            if _finite_median(window) > RAGGED_FACTOR * baseline:
                top, why = k, "where the raw loss turns ragged"
                break
    return (float(lrs[base]), float(lrs[top])), (
        f"from where the smoothed loss last leaves its level (within "
        f"{RANGE_START_FRACTION:.0%} of its drop) to {why}")


class LRFinderResult:
    """The record of one learning-rate range test, and what follows from it.

    Args:
        lrs: 1-D array, the learning rate of each step: positive, finite and
            strictly increasing.
        losses: 1-D array of the same length, the raw monitored value per step.
        smoothed_losses: the smoothed curve, or None to compute it with
            `smooth(losses, smoothing)`.
        num_steps: the number of steps the test was planned for (fastai's
            `num_it`, which sets its trimming); defaults to `len(lrs)`.
        smoothing: the smoothing factor `beta`, in [0, 1).
        stop_reason: why the test ended, e.g. "completed" or "diverged".
        monitor: the name of the recorded quantity.
        mode: "min" for a loss, "max" for an accuracy-like monitor. With "max"
            the suggestions negate the curve, so the same rules apply.
        metrics: optional dict name -> 1-D array with one value per step.
        loss_band: optional (low, high) arrays around a mean curve of repeats.
        weight_decay, start_lr, end_lr: the test's settings, for the record.
        momentum: the momentum of an optimizer that folds the learning rate
            into its velocity (Keras's SGD and RMSprop), or None (Adam and
            the like). The default suggestion allows for that velocity's
            lag behind the rising rate (`momentum_lag`); `find_lr` fills it.
        batch_norm: whether the tested network has batch normalization,
            which changes the default suggestion; `find_lr` fills it.

    Raises:
        ValueError: for arrays of different lengths, not 1-D, or learning
            rates that are not positive, finite and strictly increasing.

    Example:
        >>> result = LRFinderResult(lrs, losses, num_steps=100)
        >>> result.suggest()          # max_lr for OneCycle
        >>> result.suggest("valley")  # as fastai's lr_find
        >>> result.plot()
    """

    def __init__(self, lrs, losses, smoothed_losses=None, *, num_steps=None,
                 smoothing=0.98, stop_reason="completed", monitor="loss",
                 mode="min", metrics=None, loss_band=None, weight_decay=None,
                 start_lr=None, end_lr=None, momentum=None, batch_norm=False):
        self.sweep = None  # weight decay -> result, after a weight-decay sweep
        self.lrs = _array("lrs", lrs)
        self.losses = self._same_length("losses", losses)
        if not np.all(np.isfinite(self.lrs) & (self.lrs > 0)):
            i = int(np.argmin(np.isfinite(self.lrs) & (self.lrs > 0)))
            raise ValueError("Argument `lrs` must hold positive finite numbers. "
                             f"Received: lrs[{i}]={float(self.lrs[i])!r}")
        rising = np.diff(self.lrs) > 0
        if not rising.all():
            i = int(np.argmin(rising)) + 1
            raise ValueError("Argument `lrs` must be strictly increasing. Received: "
                             f"lrs[{i - 1}]={float(self.lrs[i - 1])!r}, lrs[{i}]={float(self.lrs[i])!r}")
        self.smoothing = _checks.in_interval("smoothing", smoothing, 0, 1, high_open=True)
        self.smoothed_losses = (smooth(self.losses, self.smoothing) if smoothed_losses is None
                                else self._same_length("smoothed_losses", smoothed_losses))
        if num_steps is None:
            num_steps = len(self.lrs)
        if (isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer))
                or num_steps < len(self.lrs)):
            raise ValueError("Argument `num_steps` must be an integer at least the number "
                             f"of recorded steps ({len(self.lrs)}). Received: num_steps={num_steps!r}")
        self.num_steps = int(num_steps)
        for name, value in (("stop_reason", stop_reason), ("monitor", monitor)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"Argument `{name}` must be a non-empty string. "
                                 f"Received: {name}={value!r}")
        self.stop_reason, self.monitor = stop_reason, monitor
        self.mode = _checks.one_of("mode", mode, ("min", "max"))
        self.metrics = {}
        for name, values in (metrics or {}).items():
            if not isinstance(name, str) or name in _RESERVED:
                raise ValueError("Argument `metrics` must map new column names to arrays; "
                                 f"{_RESERVED} are taken. Received: metric name {name!r}")
            self.metrics[name] = self._same_length(f"metrics[{name!r}]", values)
        self.loss_band = None
        if loss_band is not None:
            if len(loss_band) != 2:
                raise ValueError("Argument `loss_band` must be a (low, high) pair. "
                                 f"Received: {len(loss_band)} items")
            self.loss_band = (self._same_length("loss_band[0]", loss_band[0]),
                              self._same_length("loss_band[1]", loss_band[1]))
        self.weight_decay = (None if weight_decay is None else
                             _checks.in_interval("weight_decay", weight_decay, 0, np.inf, high_open=True))
        self.start_lr = None if start_lr is None else _checks.positive_finite("start_lr", start_lr)
        self.end_lr = None if end_lr is None else _checks.positive_finite("end_lr", end_lr)
        self.momentum = (None if momentum is None else
                         _checks.in_interval("momentum", momentum, 0, 1, high_open=True))
        if not isinstance(batch_norm, (bool, np.bool_)):
            raise ValueError("Argument `batch_norm` must be True or False. "
                             f"Received: batch_norm={batch_norm!r}")
        self.batch_norm = bool(batch_norm)

    def _same_length(self, name, values):
        array = _array(name, values)
        if len(array) != len(self.lrs):
            raise ValueError(f"Argument `{name}` must have one value per step, as `lrs`. "
                             f"Received: len(lrs)={len(self.lrs)}, len({name})={len(array)}")
        return array

    # Suggestions -----------------------------------------------------------

    def _window(self, finite):
        """The curve the rules see: fastai's trim, cut at the first NaN (or
        first non-finite value when `finite`), negated in mode "max"."""
        cut = slice(self.num_steps // 10, -5)
        lrs, smoothed, raw = self.lrs[cut], self.smoothed_losses[cut], self.losses[cut]
        bad = ~np.isfinite(smoothed) if finite else np.isnan(smoothed)
        if bad.any():
            end = int(np.argmax(bad))
            lrs, smoothed, raw = lrs[:end], smoothed[:end], raw[:end]
        sign = -1.0 if self.mode == "max" else 1.0
        return lrs, sign * smoothed, sign * raw

    def _rule(self, method, peak_momentum=None):
        if method == "one_cycle":
            # The raw curve from fastai's start of window to its first
            # non-finite loss: the kernel needs the rise past the minimum
            # that fastai's trim of the last 5 points would cut off.
            sign = -1.0 if self.mode == "max" else 1.0
            start = self.num_steps // 10
            return _one_cycle_rule(self.lrs[start:], sign * self.losses[start:],
                                   momentum=self.momentum, batch_norm=self.batch_norm,
                                   peak_momentum=peak_momentum)
        lrs, losses, _ = self._window(finite=False)
        if method == "minimum":
            return _minimum(lrs, losses, self.lrs[0] if len(self.lrs) else np.inf)
        return {"valley": _valley, "slide": _slide, "steep": _steep}[method](lrs, losses)

    def _peak_momentum(self, one_cycle, peak_momentum):
        """The momentum at OneCycle's peak, from the arguments of `suggest`."""
        if peak_momentum is not None:
            if one_cycle is not None:
                raise ValueError(
                    "Pass `one_cycle` or `peak_momentum`, not both. Received: "
                    f"one_cycle={type(one_cycle).__name__}, peak_momentum={peak_momentum!r}")
            return _checks.in_interval("peak_momentum", peak_momentum, 0, 1, high_open=True)
        if one_cycle is None:
            return None
        peak = one_cycle_peak_momentum(one_cycle)
        # A OneCycle that leaves the momentum alone runs at the test's.
        return peak if peak is not None else self.momentum

    def _suggest(self, method, stacklevel, one_cycle=None, peak_momentum=None):
        method = _checks.one_of("method", "one_cycle" if method is None else method, METHODS)
        peak = self._peak_momentum(one_cycle, peak_momentum)
        lr, reason = self._rule(method, peak) if method == "one_cycle" else self._rule(method)
        if lr is None:
            warnings.warn(f"No {method!r} learning-rate suggestion: {reason}.",
                          stacklevel=stacklevel + 1)
        return lr

    def suggest(self, method=None, *, one_cycle=None, peak_momentum=None):
        """A learning rate read off the curve.

        Args:
            method: None for the library's default ("one_cycle": a `max_lr`
                for `OneCycle`, see `_one_cycle_rule`), or fastai's "valley",
                "slide", "minimum" or "steep" (the value fastai 2.8 returns).
            one_cycle: the `OneCycle` you will train with: the default rule
                allows for the momentum it holds at its peak (its
                `base_momentum`; the optimizer's own with
                `cycle_momentum=False`). None: `OneCycle`'s defaults.
            peak_momentum: that momentum given directly, instead of
                `one_cycle`. Both only matter for SGD and RMSprop with
                momentum (see `momentum_lag`).

        Returns:
            The learning rate (a float within the tested range), or None, with
            a warning, when the rule finds nothing; `explain(method)` says why.

        Raises:
            ValueError: for an unknown method.
        """
        return self._suggest(method, stacklevel=2, one_cycle=one_cycle,
                             peak_momentum=peak_momentum)

    def suggest_one_cycle(self, *, one_cycle=None, peak_momentum=None):
        """`suggest()`: the default rule, a `max_lr` for `OneCycle`."""
        return self._suggest("one_cycle", stacklevel=2, one_cycle=one_cycle,
                             peak_momentum=peak_momentum)

    def suggestions(self):
        """Every method's suggestion, as a dict method -> float or None (no warnings)."""
        return {method: self._rule(method)[0] for method in METHODS}

    def _range(self):
        return _cyclic_range(*self._window(finite=True))

    def suggest_range(self):
        """(base_lr, max_lr) for `CyclicLR`, after Smith (2015), section 3.3.

        On the smoothed curve trimmed as fastai does and cut at its first
        non-finite value (negated in mode "max"), with `s_min` its lowest
        value (at index `m`):

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
          points above `RAGGED_FACTOR` times its median over indices 1..m.

        Returns:
            (base_lr, max_lr), or None with a warning when the curve never
            drops below its starting level or has fewer than 3 points;
            `explain("range")` says why.

        References:
            Smith, L. N. (2015). Cyclical Learning Rates for Training Neural
            Networks. arXiv:1506.01186.
        """
        pair, reason = self._range()
        if pair is None:
            warnings.warn(f"No CyclicLR range suggestion: {reason}.", stacklevel=2)
        return pair

    def explain(self, method=None):
        """Why each suggestion is what it is, in a sentence.

        Args:
            method: one of `METHODS` or "range"; None for all of them.

        Returns:
            The sentence for `method`, or a dict method -> sentence when None.
        """
        if method is None:
            return {name: self.explain(name) for name in METHODS + ("range",)}
        _checks.one_of("method", method, METHODS + ("range",))
        value, reason = self._range() if method == "range" else self._rule(method)
        if value is None:
            return f"{method}: none, {reason}."
        shown = (f"{value[0]:.1e} to {value[1]:.1e}" if method == "range"
                 else f"{value:.1e}")
        return f"{method}: {shown}, {reason}."

    def __repr__(self):
        run = len(self.lrs)
        lines = [f"LRFinderResult(monitor={self.monitor!r}, mode={self.mode!r})",
                 f"  steps: {run} run of {self.num_steps} planned, stopped: {self.stop_reason}"]
        if run:
            lines.append(f"  lr: {self.lrs[0]:.1e} to {self.lrs[-1]:.1e}")
        for method in METHODS + ("range",):
            value, reason = self._range() if method == "range" else self._rule(method)
            if value is None:
                shown = f"none ({reason})"
            elif method == "range":
                shown = f"{value[0]:.1e} to {value[1]:.1e}"
            else:
                shown = f"{value:.1e}"
            lines.append(f"  {method}{' (default)' if method == 'one_cycle' else ''}: {shown}")
        return "\n".join(lines)

    # Drawing ---------------------------------------------------------------

    def plot(self, ax=None, suggest=True, show_raw=True):
        """Draw the curve; see `keras_clr.plotting.plot_range_test`. Returns the Axes.

        The result of a weight-decay sweep (`find_lr(weight_decays=...)`, whose
        `sweep` maps each weight decay to its result) draws every curve
        overlaid instead; see `keras_clr.plotting.plot_weight_decays`.
        """
        from keras_clr import plotting

        if self.sweep:
            return plotting.plot_weight_decays(self.sweep, ax=ax)
        return plotting.plot_range_test(self, ax=ax, suggest=suggest, show_raw=show_raw)

    def to_tensorboard(self, log_dir, name="lr_finder"):
        """Write to TensorBoard; see `keras_clr.tensorboard.write_range_test`."""
        from keras_clr import tensorboard

        return tensorboard.write_range_test(self, log_dir, name=name)

    # Export ----------------------------------------------------------------

    def _metadata(self):
        return {"num_steps": self.num_steps, "smoothing": self.smoothing,
                "stop_reason": self.stop_reason, "monitor": self.monitor, "mode": self.mode,
                "start_lr": self.start_lr, "end_lr": self.end_lr,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "batch_norm": self.batch_norm}

    def _columns(self):
        columns = {"lr": self.lrs, "loss": self.losses, "smoothed_loss": self.smoothed_losses}
        columns.update(self.metrics)
        if self.loss_band is not None:
            columns["loss_low"], columns["loss_high"] = self.loss_band
        return columns

    def to_frame(self):
        """A pandas DataFrame: step, lr, loss, smoothed_loss, one column per
        metric, and loss_low / loss_high when there is a band."""
        import pandas as pd

        frame = pd.DataFrame({"step": np.arange(len(self.lrs))})
        for name, values in self._columns().items():
            frame[name] = values.copy()
        return frame

    def to_csv(self, path):
        """Write a CSV that `read_csv` restores exactly (NaN and inf included).

        Leading `# key=json-value` lines hold the metadata; cells are written
        with `repr`, so every float64 round-trips.
        """
        files.write_csv(self, path)

    @classmethod
    def read_csv(cls, path):
        """Read a file written by `to_csv`.

        Raises:
            ValueError: for a file that is not such a CSV or is damaged,
                truncated included (`to_csv` ends every line with a newline).
        """
        return files.read_csv(cls, path)

    def to_json(self, path):
        """Write standard JSON that `read_json` restores exactly; non-finite
        values are the strings "nan", "-nan", "inf" and "-inf"."""
        files.write_json(self, path)

    @classmethod
    def read_json(cls, path):
        """Read a file written by `to_json`.

        Raises:
            ValueError: for a file that is not such a JSON file or is damaged.
        """
        return files.read_json(cls, path)
