"""The learning-rate range test's result: the record and what follows from it.

`LRFinderResult` holds what a range test measured (one learning rate and one
loss per step, or per `val_every` steps for a validation monitor) and checks
it; the rules that read a learning rate off it are
`keras_clr.suggestions`, the drawing `keras_clr.plotting`, the export
`keras_clr.files` and `keras_clr.tensorboard`.
"""

import warnings

import numpy as np

from keras_clr import _checks
from keras_clr import curves
from keras_clr import files
from keras_clr import plotting  # matplotlib is imported when a plot is drawn
from keras_clr import suggestions
from keras_clr import tensorboard  # and TensorFlow when a summary is written
from keras_clr.callbacks import OneCycle
from keras_clr.stopping import smooth

# The rules' public names, importable from here as before they had a module.
from keras_clr.suggestions import METHODS
from keras_clr.suggestions import kernel_smooth
from keras_clr.suggestions import momentum_lag

__all__ = [
    "LRFinderResult",
    "METHODS",
    "kernel_smooth",
    "momentum_lag",
    "one_cycle_peak_momentum",
    "smooth",
]

# A "nan" stop on a curve that had fallen less than FLAT_FALL of its first
# smoothed value and was within NEAR_LOWEST of its best (a flat curve that
# had not risen) was not a divergence: the suggestions and explain() say so.
NEAR_LOWEST = 0.1
FLAT_FALL = 0.1

_RESERVED = ("step", "lr", "loss", "smoothed_loss", "loss_low", "loss_high")


class LRFinderResult:
    """The record of one learning-rate range test, and what follows from it.

    Args:
        lrs: 1-D array, the learning rate of each point: positive, finite and
            strictly increasing.
        losses: 1-D array of the same length, the raw monitored value per point.
        smoothed_losses: the smoothed curve, or None for `smooth(losses, smoothing)`.
        num_steps: the number of steps the test was planned for (fastai's
            `num_it`, which sets its trimming); defaults to the last step + 1.
        steps: 1-D array of the same length, the step of the test each point
            was measured at: increasing integers from 0. None: one point per
            step (0, 1, 2, ...). A validation-monitored test measures after
            every `val_every`-th step (9, 19, 29, ... for 10); the rules trim
            and read the curve in steps (`keras_clr.suggestions`).
        smoothing: the smoothing factor `beta`, in [0, 1).
        stop_reason: why the test ended, e.g. "completed" or "diverged".
        monitor: the name of the recorded quantity.
        mode: "min" for a loss, "max" for an accuracy-like monitor (the
            suggestions negate the curve, so the same rules apply).
        metrics: optional dict name -> 1-D array with one value per step.
        loss_band: optional (low, high) arrays around a mean curve of repeats.
        weight_decay: the weight decay the test ran at (a sweep's), for the
            record; None, or a float >= 0.
        start_lr: the test's `start_lr`, for the record.
        end_lr: the test's `end_lr`, for the record.
        momentum: the momentum of an optimizer that folds the learning rate
            into its velocity (Keras's SGD and RMSprop), in [0, 1), or None
            (Adam and the like). It changes the default suggestion (see
            `suggest`); `find_lr` fills it.
        batch_norm: whether the network has batch normalization; it changes
            the default suggestion too, and `find_lr` fills it.
        nonfinite_variable: for a test that stopped ("nan") because a
            step's update left a weight or an optimizer variable NaN or inf
            while its loss was finite: the path of the first such variable.
            `explain()` and the repr say so. The three `nonfinite_`
            arguments go together: all three or none.
        nonfinite_step: that step, from 0.
        nonfinite_lr: that step's learning rate.

    Raises:
        ValueError: for arrays not 1-D or of different lengths, learning
            rates not positive, finite and strictly increasing, `steps` not
            increasing integers from 0, a `num_steps` below the points
            recorded, `smoothing` outside [0, 1), an empty `stop_reason` or
            `monitor`, a `mode` other than "min" or "max", a metric named
            as a column (step, lr, loss, smoothed_loss, loss_low,
            loss_high), a `loss_band` that is not a pair, a setting out of
            its range, or only some of the `nonfinite_` arguments.

    Example:
        A record made by hand (`find_lr` and `LRFinder` make one from a
        test): flat, then falling, then blowing up.

        >>> import numpy as np, keras_clr
        >>> lrs = np.geomspace(1e-5, 1.0, 100)
        >>> d = np.log10(lrs)
        >>> losses = 2.0 - np.tanh(2 * (d + 3)) + np.exp(4 * (d + 0.5))
        >>> result = keras_clr.LRFinderResult(lrs, losses)
        >>> result
        LRFinderResult(monitor='loss', mode='min')
          steps: 100 run of 100 planned, stopped: completed
          lr: 1.0e-05 to 1.0e+00
          one_cycle (default): 5.1e-03
          valley: 2.1e-03
          slide: 1.7e-03
          minimum: 2.2e-02
          steep: 2.4e-03
          range: 4.6e-04 to 2.2e-01
        >>> f"{result.suggest():.1e}"  # a max_lr for OneCycle
        '5.1e-03'
    """

    def __init__(
        self,
        lrs,
        losses,
        smoothed_losses=None,
        *,
        num_steps=None,
        smoothing=0.98,
        stop_reason="completed",
        monitor="loss",
        mode="min",
        metrics=None,
        loss_band=None,
        weight_decay=None,
        start_lr=None,
        end_lr=None,
        momentum=None,
        batch_norm=False,
        steps=None,
        nonfinite_variable=None,
        nonfinite_step=None,
        nonfinite_lr=None,
    ):
        self.lrs = _array("lrs", lrs)
        self.losses = _same_length("losses", losses, self.lrs)
        _check_rates(self.lrs)
        self.steps = _checked_steps(steps, self.lrs)
        self.smoothing = _checks.in_interval("smoothing", smoothing, 0, 1, high_open=True)
        self.smoothed_losses = (
            smooth(self.losses, self.smoothing)
            if smoothed_losses is None
            else _same_length("smoothed_losses", smoothed_losses, self.lrs)
        )
        self.num_steps = _checked_num_steps(
            num_steps, int(self.steps[-1]) + 1 if len(self.steps) else 0
        )
        self.stop_reason = _non_empty("stop_reason", stop_reason)
        self.monitor = _non_empty("monitor", monitor)
        self.mode = _checks.one_of("mode", mode, ("min", "max"))
        self.metrics = _checked_metrics(metrics, self.lrs)
        self.loss_band = _checked_band(loss_band, self.lrs)
        (self.weight_decay, self.start_lr, self.end_lr, self.momentum, self.batch_norm) = (
            _checked_settings(weight_decay, start_lr, end_lr, momentum, batch_norm)
        )
        (self.nonfinite_variable, self.nonfinite_step, self.nonfinite_lr) = _checked_nonfinite(
            nonfinite_variable, nonfinite_step, nonfinite_lr
        )

    def _window(self, finite):  # the curve fastai's rules see; benchmarks/ reads it
        return suggestions.window(
            self.lrs,
            self.smoothed_losses,
            self.losses,
            num_steps=self.num_steps,
            mode=self.mode,
            finite=finite,
            steps=self.steps,
        )

    def suggest(self, method=None, *, one_cycle=None, peak_momentum=None):
        """A learning rate read off the curve.

        Args:
            method: None for the library's default ("one_cycle": a `max_lr`
                for `OneCycle`), or fastai's "valley", "slide", "minimum" or
                "steep" (the value fastai 2.8 returns); see `keras_clr.suggestions`.
            one_cycle: the `OneCycle` you will train with, or None for its
                defaults: with SGD or RMSprop with momentum, the default rule
                allows for the momentum it holds at its peak (`base_momentum`;
                the optimizer's own with `cycle_momentum=False`; `momentum_lag`).
            peak_momentum: that momentum given directly, instead of `one_cycle`.

        Returns:
            The learning rate (a float within the tested range), or None, with
            a warning, when the rule finds nothing; `explain(method)` says why.
            A test that stopped on weights gone NaN or inf under a finite
            loss warns that the suggestion may mislead.

        Raises:
            ValueError: for an unknown method, both `one_cycle` and
                `peak_momentum`, a `one_cycle` that is not a
                `keras_clr.OneCycle`, or a `peak_momentum` outside [0, 1).

        Example:
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 100)
            >>> d = np.log10(lrs)
            >>> losses = 2.0 - np.tanh(2 * (d + 3)) + np.exp(4 * (d + 0.5))
            >>> result = keras_clr.LRFinderResult(lrs, losses)
            >>> f"{result.suggest():.1e}", f"{result.suggest('valley'):.1e}"
            ('5.1e-03', '2.1e-03')
        """
        return suggest_with_warning(self, method, 2, one_cycle, peak_momentum)

    def suggest_one_cycle(self, *, one_cycle=None, peak_momentum=None):
        """`suggest()`: the default rule, a `max_lr` for `OneCycle`.

        Args:
            one_cycle: the `OneCycle` you will train with, or None for its
                defaults (see `suggest`).
            peak_momentum: the momentum at its peak, instead of `one_cycle`.

        Returns:
            The learning rate (float), or None with a warning.

        Raises:
            ValueError: as `suggest`.
        """
        return suggest_with_warning(self, "one_cycle", 2, one_cycle, peak_momentum)

    def suggestions(self):
        """Every method's suggestion, as a dict method -> float or None (no warnings).

        The default rule assumes `OneCycle`'s defaults (as `suggest()`).

        Returns:
            A dict with a key per method of `METHODS`.

        Example:
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 100)
            >>> d = np.log10(lrs)
            >>> losses = 2.0 - np.tanh(2 * (d + 3)) + np.exp(4 * (d + 0.5))
            >>> found = keras_clr.LRFinderResult(lrs, losses).suggestions()
            >>> {method: f"{lr:.1e}" for method, lr in found.items()}
            {'one_cycle': '5.1e-03', 'valley': '2.1e-03', 'slide': '1.7e-03',
             'minimum': '2.2e-02', 'steep': '2.4e-03'}
        """
        return {method: apply_rule(self, method)[0] for method in METHODS}

    def suggest_range(self):
        """(base_lr, max_lr) for `CyclicLR`, after Smith (2017), section 3.3.

        The rule is `keras_clr.suggestions.suggest_range`.

        Returns:
            `(base_lr, max_lr)`, two floats; None, with a warning, when the
            curve never drops below its starting level or has fewer than 5
            points after trimming, and `explain("range")` says why.

        Example:
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 100)
            >>> d = np.log10(lrs)
            >>> losses = 2.0 - np.tanh(2 * (d + 3)) + np.exp(4 * (d + 0.5))
            >>> base_lr, max_lr = keras_clr.LRFinderResult(lrs, losses).suggest_range()
            >>> f"{base_lr:.1e} to {max_lr:.1e}"
            '4.6e-04 to 2.2e-01'
        """
        return suggest_range_with_warning(self, 2)

    def explain(self, method=None):
        """Why each suggestion is what it is, in a sentence.

        Args:
            method: one of `METHODS` or "range"; None for all of them.

        Returns:
            The sentence for `method`, or a dict method -> sentence.

        Raises:
            ValueError: for an unknown method.

        Example:
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 100)
            >>> d = np.log10(lrs)
            >>> losses = 2.0 - np.tanh(2 * (d + 3)) + np.exp(4 * (d + 0.5))
            >>> print(keras_clr.LRFinderResult(lrs, losses).explain("valley"))
            valley: 2.1e-03, half-way into the longest descending run of the
            smoothed loss (3.2e-05 to 2.2e-01).
        """
        if method is None:
            return {name: self.explain(name) for name in METHODS + ("range",)}
        _checks.one_of("method", method, METHODS + ("range",))
        value, reason = apply_rule(self, method)
        note = _nonfinite_note(self)
        return f"{method}: {'none' if value is None else _shown(value)}, {reason}." + (
            f" {note}" if note else ""
        )

    def __repr__(self):
        return _describe(self)

    def plot(self, ax=None, suggest=True, show_raw=True):
        """Draws the curve; see `keras_clr.plotting.plot_range_test`.

        Never calls `plt.show()`.

        Args:
            ax: a matplotlib Axes to draw on; a new figure when None.
            suggest: mark the suggestions (and shade `suggest_range()`).
            show_raw: draw the raw losses under the smoothed curve.

        Returns:
            The Axes.

        Example:
            >>> import matplotlib.pyplot as plt
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 100)
            >>> result = keras_clr.LRFinderResult(lrs, 2.0 - np.tanh(np.log10(lrs) + 3))
            >>> ax = result.plot()
            >>> ax.get_xscale(), ax.get_title()
            ('log', 'LR range test: 100 steps, stopped: completed')
            >>> plt.close(ax.figure)
        """
        return plotting.plot_range_test(self, ax=ax, suggest=suggest, show_raw=show_raw)

    def to_tensorboard(self, log_dir, name="lr_finder"):
        """Writes the curves and the plot to TensorBoard.

        See `keras_clr.tensorboard.write_range_test`: a scalar series per
        column of `to_frame` but the step, at the test's steps, under
        `{name}/`, and the plot as the image `{name}/plot`. Needs
        TensorFlow (and matplotlib).

        Args:
            log_dir: the directory of the event file.
            name: the tag prefix.

        Returns:
            `log_dir`, as a string.

        Raises:
            ValueError: if `name` is not a non-empty string.

        Example:
            >>> import os, tempfile
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 20)
            >>> result = keras_clr.LRFinderResult(lrs, 2.0 - np.tanh(np.log10(lrs) + 3))
            >>> with tempfile.TemporaryDirectory() as log_dir:
            ...     written = result.to_tensorboard(log_dir)
            ...     names = os.listdir(log_dir)
            >>> [name.startswith("events.out.tfevents") for name in names]
            [True]
        """
        return tensorboard.write_range_test(self, log_dir, name=name)

    def to_frame(self):
        """The record as a DataFrame, a row per point.

        Returns:
            A pandas DataFrame (a copy) with the columns step, lr, loss,
            smoothed_loss, then one per metric, then loss_low and
            loss_high when the result has a band.

        Example:
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 20)
            >>> result = keras_clr.LRFinderResult(lrs, 2.0 - np.tanh(np.log10(lrs) + 3))
            >>> frame = result.to_frame()
            >>> frame.columns.tolist(), frame.shape
            (['step', 'lr', 'loss', 'smoothed_loss'], (20, 4))
        """
        return files.to_frame(self)

    def to_csv(self, path):
        """Writes a CSV that `read_csv` restores exactly; see `keras_clr.files`.

        The settings go in `# key=value` lines before the header, every
        float is written with `repr` (a NaN keeps its sign and payload). In a
        multi-process training only process 0 writes.

        Args:
            path: the file to write (replaced if it exists).

        Example:
            >>> import os, tempfile
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 20)
            >>> result = keras_clr.LRFinderResult(lrs, 2.0 - np.tanh(np.log10(lrs) + 3))
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     path = os.path.join(folder, "range_test.csv")
            ...     result.to_csv(path)
            ...     back = keras_clr.LRFinderResult.read_csv(path)
            >>> np.array_equal(back.smoothed_losses, result.smoothed_losses)
            True
        """
        files.write_csv(self, path)

    @classmethod
    def read_csv(cls, path):
        """Reads a file `to_csv` wrote.

        Args:
            path: the CSV file.

        Returns:
            The `LRFinderResult`, equal to the one written.

        Raises:
            ValueError: for a file `to_csv` did not write, or one damaged
                or truncated (the message says what is wrong).

        Example: see `to_csv`.
        """
        return files.read_csv(cls, path)

    def to_json(self, path):
        """Writes standard JSON that `read_json` restores exactly; see `keras_clr.files`.

        Finite floats are JSON numbers that read back bit for bit; inf and
        NaN are strings (a NaN keeps its sign and payload), so the file is
        strict JSON. In a multi-process training only process 0
        writes.

        Args:
            path: the file to write (replaced if it exists).

        Example:
            >>> import os, tempfile
            >>> import numpy as np, keras_clr
            >>> lrs = np.geomspace(1e-5, 1.0, 20)
            >>> result = keras_clr.LRFinderResult(lrs, 2.0 - np.tanh(np.log10(lrs) + 3))
            >>> with tempfile.TemporaryDirectory() as folder:
            ...     path = os.path.join(folder, "range_test.json")
            ...     result.to_json(path)
            ...     back = keras_clr.LRFinderResult.read_json(path)
            >>> np.array_equal(back.lrs, result.lrs), back.stop_reason
            (True, 'completed')
        """
        files.write_json(self, path)

    @classmethod
    def read_json(cls, path):
        """Reads a file `to_json` wrote.

        Args:
            path: the JSON file.

        Returns:
            The `LRFinderResult`, equal to the one written.

        Raises:
            ValueError: for a file `to_json` did not write, or one damaged
                or truncated (the message says what is wrong).

        Example: see `to_json`.
        """
        return files.read_json(cls, path)


# Checks of the record --------------------------------------------------------


def _array(name, values):
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Argument `{name}` must be a 1-D array of numbers. "
            f"Received: {name} of type {type(values).__name__}"
        ) from None
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must be a 1-D array. Received: {name} with shape {array.shape}"
        )
    return array


def _same_length(name, values, lrs):
    array = _array(name, values)
    if len(array) != len(lrs):
        raise ValueError(
            f"Argument `{name}` must have one value per step, as `lrs`. "
            f"Received: len(lrs)={len(lrs)}, len({name})={len(array)}"
        )
    return array


def _check_rates(lrs):
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        i = int(np.argmin(np.isfinite(lrs) & (lrs > 0)))
        raise ValueError(
            "Argument `lrs` must hold positive finite numbers. "
            f"Received: lrs[{i}]={float(lrs[i])!r}"
        )
    rising = np.diff(lrs) > 0
    if not rising.all():
        i = int(np.argmin(rising)) + 1
        raise ValueError(
            "Argument `lrs` must be strictly increasing. Received: "
            f"lrs[{i - 1}]={float(lrs[i - 1])!r}, lrs[{i}]={float(lrs[i])!r}"
        )


def _checked_steps(steps, lrs):
    if steps is None:
        return np.arange(len(lrs))
    array = _same_length("steps", steps, lrs)
    if not (np.all(array == np.round(array)) and np.all(array >= 0) and np.all(np.diff(array) > 0)):
        raise ValueError(
            "Argument `steps` must hold strictly increasing integers "
            f"from 0. Received: steps={array.tolist()!r}"
        )
    return array.astype(np.int64)


def _checked_num_steps(num_steps, recorded):
    if num_steps is None:
        num_steps = recorded
    if (
        isinstance(num_steps, bool)
        or not isinstance(num_steps, (int, np.integer))
        or num_steps < recorded
    ):
        raise ValueError(
            "Argument `num_steps` must be an integer at least the number "
            f"of recorded steps ({recorded}). Received: num_steps={num_steps!r}"
        )
    return int(num_steps)


def _checked_settings(weight_decay, start_lr, end_lr, momentum, batch_norm):
    if weight_decay is not None:
        weight_decay = _checks.in_interval("weight_decay", weight_decay, 0, np.inf, high_open=True)
    start_lr = None if start_lr is None else _checks.positive_finite("start_lr", start_lr)
    end_lr = None if end_lr is None else _checks.positive_finite("end_lr", end_lr)
    if momentum is not None:
        momentum = _checks.in_interval("momentum", momentum, 0, 1, high_open=True)
    if not isinstance(batch_norm, (bool, np.bool_)):
        raise ValueError(
            f"Argument `batch_norm` must be True or False. Received: batch_norm={batch_norm!r}"
        )
    return weight_decay, start_lr, end_lr, momentum, bool(batch_norm)


def _checked_nonfinite(variable, step, lr):
    given = [value is not None for value in (variable, step, lr)]
    if any(given) and not all(given):
        raise ValueError(
            "Arguments `nonfinite_variable`, `nonfinite_step` and `nonfinite_lr` "
            "go together: give all three or none. Received: "
            f"nonfinite_variable={variable!r}, nonfinite_step={step!r}, "
            f"nonfinite_lr={lr!r}"
        )
    if variable is None:
        return None, None, None
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(
            "Argument `nonfinite_step` must be a step number, an "
            f"integer >= 0. Received: nonfinite_step={step!r}"
        )
    return (
        _non_empty("nonfinite_variable", variable),
        int(step),
        _checks.positive_finite("nonfinite_lr", lr),
    )


def _non_empty(name, value):
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"Argument `{name}` must be a non-empty string. Received: {name}={value!r}"
        )
    return value


def _checked_metrics(metrics, lrs):
    checked = {}
    for name, values in (metrics or {}).items():
        if not isinstance(name, str) or name in _RESERVED:
            raise ValueError(
                "Argument `metrics` must map new column names to arrays; "
                f"{_RESERVED} are taken. Received: metric name {name!r}"
            )
        checked[name] = _same_length(f"metrics[{name!r}]", values, lrs)
    return checked


def _checked_band(loss_band, lrs):
    if loss_band is None:
        return None
    if len(loss_band) != 2:
        raise ValueError(
            f"Argument `loss_band` must be a (low, high) pair. Received: {len(loss_band)} items"
        )
    return (
        _same_length("loss_band[0]", loss_band[0], lrs),
        _same_length("loss_band[1]", loss_band[1], lrs),
    )


# Text -------------------------------------------------------------------------


def _warned(method, value, reason, stacklevel, note=""):
    """`value`, after a warning with `reason` when it is None, or with
    `note` (why the test stopped, when that casts doubt on the curve)."""
    what = "CyclicLR range" if method == "range" else f"{method!r} learning-rate"
    if value is None:
        warnings.warn(
            f"No {what} suggestion: {reason}." + (f" {note}" if note else ""),
            stacklevel=stacklevel + 1,
        )
    elif note:
        warnings.warn(f"The {what} suggestion may mislead: {note}", stacklevel=stacklevel + 1)
    return value


def _shown(value):
    """A suggestion as text: an LR, or a (base_lr, max_lr) range."""
    return f"{value[0]:.1e} to {value[1]:.1e}" if isinstance(value, tuple) else f"{value:.1e}"


def _stopped_near_lowest(result):
    """Whether a "nan" stop came on a flat curve that had not risen: the
    smoothed curve fell less than `FLAT_FALL` of its first value and its
    last finite value is within `NEAR_LOWEST` of its best."""
    sign = -1.0 if result.mode == "max" else 1.0
    curve = sign * result.smoothed_losses
    curve = curve[np.isfinite(curve)]
    if curve.size == 0:
        return True
    first, best = float(curve[0]), float(curve.min())
    return first - best <= FLAT_FALL * abs(first) and float(curve[-1]) <= best + NEAR_LOWEST * abs(
        best
    )


def _describe(result):
    """The repr: the run, then every suggestion or why there is none."""
    run = len(result.lrs)
    lines = [f"LRFinderResult(monitor={result.monitor!r}, mode={result.mode!r})"]
    if run > 1 and np.any(np.diff(result.steps) > 1):
        lines.append(
            f"  points: {run}, measured at steps {result.steps[0]} to "
            f"{result.steps[-1]} of {result.num_steps} planned, stopped: "
            f"{result.stop_reason}"
        )
    else:
        lines.append(
            f"  steps: {run} run of {result.num_steps} planned, stopped: {result.stop_reason}"
        )
    if run:
        lines.append(f"  lr: {result.lrs[0]:.1e} to {result.lrs[-1]:.1e}")
    note = _nonfinite_note(result)
    if note:
        lines.append(f"  non-finite: {note}")
    for method in METHODS + ("range",):
        value, reason = apply_rule(result, method)
        shown = f"none ({reason})" if value is None else _shown(value)
        lines.append(f"  {method}{' (default)' if method == 'one_cycle' else ''}: {shown}")
    return "\n".join(lines)


def _nonfinite_note(result):
    """Why a test stopped on weights gone NaN/inf under a finite loss, or on
    a NaN/inf loss while the loss was still near its lowest; or ''."""
    if result.nonfinite_variable is None:
        if result.stop_reason != "nan" or not _stopped_near_lowest(result):
            return ""
        return (
            f"The test stopped at step {int(result.steps[-1])} (lr "
            f"{result.lrs[-1]:.1e}) on a NaN or inf loss while the smoothed "
            "loss was still flat and near its lowest, not after it rose: the data may "
            "hold NaN or inf, or a value overflowed. The suggestions read the "
            "curve before that step; check the data with `np.isfinite(x).all()`."
        )
    return (
        f"The test stopped at step {result.nonfinite_step} "
        f"(lr {result.nonfinite_lr:.1e}): that step's update left "
        f"{result.nonfinite_variable!r} NaN or inf while its loss was finite, "
        "so the data likely holds NaN or inf (with TensorFlow's oneDNN a "
        "fused ReLU turns a NaN input into 0, and the loss hides it); check "
        "it with `np.isfinite(x).all()`."
    )


# The rules on a result -----------------------------------------------------------


def apply_rule(result, method, peak_momentum=None):
    """(value or None, reason) of `method` on `result`: one of `METHODS`, or
    "range"; no warning."""
    record = (result.lrs, result.losses, result.smoothed_losses)
    if method == "range":
        return suggestions.suggest_range(
            *record, num_steps=result.num_steps, mode=result.mode, steps=result.steps
        )
    return suggestions.suggest(
        method,
        *record,
        num_steps=result.num_steps,
        mode=result.mode,
        momentum=result.momentum,
        batch_norm=result.batch_norm,
        peak_momentum=peak_momentum,
        steps=result.steps,
    )


def suggest_with_warning(result, method, stacklevel, one_cycle=None, peak_momentum=None):
    """`LRFinderResult.suggest`: the value, with a warning `stacklevel` frames
    above the caller when the rule finds none."""
    method = _checks.one_of("method", "one_cycle" if method is None else method, METHODS)
    peak = _peak_momentum(one_cycle, peak_momentum, result.momentum)
    return _warned(
        method, *apply_rule(result, method, peak), stacklevel + 1, _nonfinite_note(result)
    )


def suggest_range_with_warning(result, stacklevel):
    """`LRFinderResult.suggest_range`, warning as `suggest_with_warning` does."""
    return _warned("range", *apply_rule(result, "range"), stacklevel + 1, _nonfinite_note(result))


# The momentum at OneCycle's peak ------------------------------------------------


def one_cycle_peak_momentum(one_cycle=None):
    """The momentum `OneCycle` holds at its peak rate: the `base_momentum` of
    `one_cycle`, or of `OneCycle`'s defaults; None for a `OneCycle` that
    leaves the momentum alone (`cycle_momentum=False`)."""
    if one_cycle is None:
        return curves.BASE_MOMENTUM
    if not isinstance(one_cycle, OneCycle):
        raise ValueError(
            "Argument `one_cycle` must be the keras_clr.OneCycle to "
            f"train with. Received: one_cycle={type(one_cycle).__name__}"
        )
    return one_cycle.base_momentum if one_cycle.cycle_momentum is not False else None


def _peak_momentum(one_cycle=None, peak_momentum=None, momentum=None):
    """The momentum at `OneCycle`'s peak from `LRFinderResult.suggest`'s
    arguments (`one_cycle` or `peak_momentum`; a `OneCycle` with
    `cycle_momentum=False` runs at the test's `momentum`), or None for
    `OneCycle`'s default. Raises ValueError when both are given."""
    if peak_momentum is not None:
        if one_cycle is not None:
            raise ValueError(
                "Pass `one_cycle` or `peak_momentum`, not both. Received: "
                f"one_cycle={type(one_cycle).__name__}, peak_momentum={peak_momentum!r}"
            )
        return _checks.in_interval("peak_momentum", peak_momentum, 0, 1, high_open=True)
    if one_cycle is None:
        return None
    peak = one_cycle_peak_momentum(one_cycle)
    # A OneCycle that leaves the momentum alone runs at the test's.
    return peak if peak is not None else momentum
