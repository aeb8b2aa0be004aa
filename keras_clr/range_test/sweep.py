"""The weight-decay sweep: one range test per weight decay, and its result.

After Smith (2018): the same range test at a few weight decays, the curves
side by side; the one whose smoothed loss goes lowest marks the weight decay
to train with, and its suggestions the learning rate.
"""

import numpy as np

from keras_clr import _checks
from keras_clr import files
from keras_clr import optimizers
from keras_clr import plotting
from keras_clr.results import LRFinderResult
from keras_clr.results import apply_rule
from keras_clr.results import suggest_range_with_warning
from keras_clr.results import suggest_with_warning


class WeightDecaySweep:
    """The range tests of a weight-decay sweep, and the best of them.

    `find_lr(..., weight_decays=[...])` returns one. Each test is an
    `LRFinderResult` of its own, recording its weight decay; the best is the
    one whose smoothed loss goes lowest (highest in mode "max"), the first
    of them on a tie. Its suggestions are the sweep's.

    Args:
        results: a non-empty dict weight decay -> `LRFinderResult`, in the
            order swept.

    Attributes:
        results: that dict.
        best: the result with the lowest smoothed loss.
        weight_decay: the weight decay of `best`.

    Raises:
        ValueError: for an empty dict, a weight decay below 0 or a value that
            is not an `LRFinderResult`.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.AdamW(), loss="mse")
        >>> sweep = keras_clr.find_lr(model, x, y, batch_size=16, num_steps=40,
        ...                           weight_decays=[0.0, 0.1], verbose=0)
        >>> list(sweep.results), sweep.best is sweep.results[sweep.weight_decay]
        ([0.0, 0.1], True)
        >>> sweep.suggestions() == sweep.best.suggestions()
        True
        >>> sweep.to_frame().shape  # a row per weight decay and step
        (80, 5)
        >>> print(sweep)  # doctest: +ELLIPSIS
        WeightDecaySweep(monitor='loss', mode='min', weight_decay=...)
          weight decay 0: lowest smoothed loss ..., suggestion ...
          weight decay 0.1: lowest smoothed loss ..., suggestion ...

    References:
        Smith, L. N. (2018). A disciplined approach to neural network
        hyper-parameters: Part 1. arXiv:1803.09820.
    """

    def __init__(self, results):
        if not isinstance(results, dict) or not results:
            raise ValueError(
                "Argument `results` must be a non-empty dict weight decay -> "
                f"LRFinderResult. Received: results={results!r}"
            )
        self.results = {}
        for weight_decay, result in results.items():
            if not isinstance(result, LRFinderResult):
                raise ValueError(
                    "Argument `results` must map each weight decay to an LRFinderResult. "
                    f"Received: results[{weight_decay!r}] of type {type(result).__name__}"
                )
            weight_decay = _checks.in_interval(
                "weight_decay", weight_decay, 0, np.inf, high_open=True
            )
            self.results[weight_decay] = result
        self.weight_decay = min(self.results, key=lambda wd: _lowest(self.results[wd]))
        self.best = self.results[self.weight_decay]

    def suggest(self, method=None, *, one_cycle=None, peak_momentum=None):
        """The best result's `LRFinderResult.suggest`.

        Args:
            method: None for the default rule, or one of fastai's
                (`"valley"`, `"slide"`, `"minimum"`, `"steep"`).
            one_cycle: the `OneCycle` you will train with, or None.
            peak_momentum: the momentum at the `OneCycle`'s peak, instead
                of `one_cycle`.

        Returns:
            A learning rate (float), or None with a warning when the rule
            finds nothing.

        Raises:
            ValueError: as `LRFinderResult.suggest`.
        """
        return suggest_with_warning(self.best, method, 2, one_cycle, peak_momentum)

    def suggest_range(self):
        """The best result's `LRFinderResult.suggest_range`.

        Returns:
            `(base_lr, max_lr)` for `CyclicLR`, or None with a warning.
        """
        return suggest_range_with_warning(self.best, 2)

    def suggestions(self):
        """The best result's `LRFinderResult.suggestions`.

        Returns:
            A dict method -> learning rate or None, without warnings.
        """
        return self.best.suggestions()

    def plot(self, ax=None):
        """Every smoothed curve on one Axes; see `keras_clr.plotting.plot_weight_decays`.

        Args:
            ax: a matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes (never calls `plt.show()`).
        """
        return plotting.plot_weight_decays(self.results, ax=ax, best=self.weight_decay)

    def to_frame(self):
        """A long pandas DataFrame: a row per weight decay and step, the columns of
        `LRFinderResult.to_frame` after a `weight_decay` column, in the order swept.

        Returns:
            A pandas DataFrame.
        """
        import pandas as pd

        frames = [result.to_frame() for result in self.results.values()]
        for weight_decay, frame in zip(self.results, frames):
            frame.insert(0, "weight_decay", weight_decay)
        return pd.concat(frames, ignore_index=True)

    def __repr__(self):
        best = self.best
        lines = [
            f"WeightDecaySweep(monitor={best.monitor!r}, mode={best.mode!r}, "
            f"weight_decay={self.weight_decay:g})"
        ]
        for weight_decay, result in self.results.items():
            sign = -1.0 if result.mode == "max" else 1.0
            lr = apply_rule(result, "one_cycle")[0]  # the default suggestion, without a warning
            lines.append(
                f"  weight decay {weight_decay:g}: "
                f"{'highest' if sign < 0 else 'lowest'} smoothed {result.monitor} "
                f"{sign * _lowest(result):.4g}, suggestion "
                f"{'none' if lr is None else format(lr, '.1e')}"
                f"{' (best)' if weight_decay == self.weight_decay else ''}"
            )
        return "\n".join(lines)


def _lowest(result):
    """The result's lowest smoothed loss (negated in mode "max"); inf for none."""
    sign = -1.0 if result.mode == "max" else 1.0
    values = sign * result.smoothed_losses
    return np.min(np.where(np.isfinite(values), values, np.inf), initial=np.inf)


def weight_decay_sweep(model, weight_decays, run_test):
    """Runs the sweep: `run_test()` (one range test, or its repeats) at each
    of `weight_decays` in turn, the optimizer's own weight decay put back
    afterwards whatever happens; returns the `WeightDecaySweep`."""
    optimizer = optimizers.base_optimizer(model)
    # A MultiOptimizer applies no weight decay itself: each group's
    # sub-optimizer gets the value swept.
    optimizers.know_groups(model)
    owners = list(optimizer.optimizers) if optimizers.is_multi_optimizer(optimizer) else [optimizer]
    if not owners:
        raise ValueError(
            "Argument `weight_decays` sets the weight decay of each of the "
            "MultiOptimizer's sub-optimizers, and it has none yet (one given a "
            "function finds them as it is built). Build the model first, for "
            "example with `model(x[:1])`. Received: optimizer.optimizers=[]"
        )
    for owner in owners:
        if getattr(owner, "weight_decay", False) is False:
            raise ValueError(
                "Argument `weight_decays` needs an optimizer with `weight_decay`. "
                f"Received: optimizer={type(owner).__name__}"
            )
    originals = [owner.weight_decay for owner in owners]
    tested = {}
    try:
        for value in weight_decays:
            for owner in owners:
                owner.weight_decay = value
            tested[value] = _recorded(run_test(), value)
    finally:
        for owner, original in zip(owners, originals):
            owner.weight_decay = original
    return WeightDecaySweep(tested)


def _recorded(result, weight_decay):
    """`result` built again with the weight decay it ran at, for the record."""
    return LRFinderResult(
        result.lrs,
        result.losses,
        result.smoothed_losses,
        metrics=result.metrics,
        loss_band=result.loss_band,
        steps=result.steps,
        **{**files.metadata(result), "weight_decay": weight_decay},
    )
