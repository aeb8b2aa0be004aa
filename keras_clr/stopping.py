"""The range test's smoothing and stop rule, once, online and offline.

`Smoother` keeps the bias-corrected moving average's state, so the callback
smooths each recorded loss once as the record grows, and `smooth` is the same
computation over a whole record. `diverged` is the stop rule on a smoothed
curve: the callback applies it to the curve so far, the result to the whole.
"""

import numpy as np

from keras_clr import _checks


class Smoother:
    """Bias-corrected exponential moving average, extended a few values at a time.

    `avg_i = beta * avg_{i-1} + (1 - beta) * loss_i` with `avg_{-1} = 0`, and
    `smoothed_i = avg_i / (1 - beta ** (i + 1))`. With `beta=0` the output
    equals the input. A NaN or infinite loss makes every later smoothed value
    non-finite (NaN or inf): one diverged step is not averaged away.

    Args:
        beta: the smoothing factor, in [0, 1).
    """

    def __init__(self, beta):
        self.beta = _checks.in_interval("beta", beta, 0, 1, high_open=True)
        self._average = 0.0
        self._count = 0
        self.values = np.empty(0, dtype=np.float64)  # every smoothed value so far

    def extend(self, losses):
        """Smooths the next `losses` (a 1-D float64 array); returns them smoothed."""
        losses = np.asarray(losses, dtype=np.float64)
        if self.beta == 0:
            out = losses.copy()
        else:
            out = np.empty_like(losses)
            beta, average = self.beta, self._average
            for i, loss in enumerate(losses.tolist(), start=self._count + 1):
                average = beta * average + (1 - beta) * loss
                out[i - self._count - 1] = average / (1 - beta**i)
            self._average = average
        self._count += len(losses)
        self.values = np.concatenate([self.values, out])
        return out


def smooth(losses, beta):
    """The smoothed curve of a whole record (see `Smoother`).

    Args:
        losses: 1-D sequence of per-step losses.
        beta: the smoothing factor, in [0, 1).

    Returns:
        A float64 array of the same length.
    """
    return Smoother(beta).extend(losses)


def diverged(smoothed, stop_factor):
    """Index of the first step past the stop rule, or None.

    A step stops the test when its value is not finite, or when its smoothed
    value exceeds the best (lowest) smoothed value before it by more than
    `(stop_factor - 1) * |best|`. For positive losses this is fastai's rule,
    `smoothed > stop_factor * best`; for negative losses it still means
    "worse than the best by (stop_factor - 1) times its size". A
    `stop_factor` of None or inf stops on non-finite values only.
    """
    if stop_factor is None:
        stop_factor = np.inf
    smoothed = np.asarray(smoothed, dtype=np.float64)
    if smoothed.size == 0:
        return None
    bad = ~np.isfinite(smoothed)
    clean = np.where(bad, np.inf, smoothed)
    best = np.concatenate([[np.inf], np.minimum.accumulate(clean)[:-1]])
    with np.errstate(invalid="ignore"):
        limit = best + (stop_factor - 1.0) * np.abs(best)
        bad |= np.isfinite(best) & (smoothed > limit)
    return int(np.argmax(bad)) if bad.any() else None
