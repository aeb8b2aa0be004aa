"""The `max_lr` race: several `OneCycle` candidates trained through the real
training, one after another, the losers dropped early, the winner kept.

Every candidate starts from the model's weights and optimizer state as they
are (a host snapshot, `keras_clr.range_test.state`) and trains with
`OneCycle(max_lr=candidate, **one_cycle)` sized for the whole training, on
the same batches in the same order (`RaceBatches`). The training runs in
segments of epochs, from one cut to the next: for each segment, each
surviving candidate's state is restored, one `fit` over the segment's
epochs runs (placed on its schedule by `initial_epoch`), and its state is
copied back to the host. Validation loss at each epoch's end compares them:

- a candidate whose training or validation loss is NaN or inf stops at
  that epoch's end and is dropped, as is one that leaves a weight or an
  optimizer slot NaN or inf (checked as each segment ends);
- at the end of the epoch nearest 25% of the training the best 3 are
  kept, at the epoch nearest 50% the best one (`checkpoints`; the rule
  chosen in `benchmarks/race_rules.py`).

The winner trains on to the end in one `fit`: its run is the user's
training, and the model ends with its weights and optimizer state.
"""

import math
import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import optimizers
from keras_clr.callbacks import OneCycle
from keras_clr.range_test import state
from keras_clr.range_test.api import find_lr
from keras_clr.range_test.data import ensure_built
from keras_clr.range_test.data import is_arrays
from keras_clr.range_test.data import slice_samples
from keras_clr.range_test.data import take
from keras_clr.schedule_arguments import PlannedSchedule
from keras_clr.schedule_arguments import check_optimizer
from keras_clr.schedule_arguments import check_planned_length
from keras_clr.schedule_arguments import planned_schedule

RANGE_STEPS = 100  # the range test that places the candidates
CANDIDATES = 5  # the range test's candidates: the suggestion and two either side
SPACING = 10 ** (1 / 3)  # between neighbouring candidates
COMPUTE_BUDGET = 3.0  # trainings of compute above which the race warns
HOLD_OUT = 0.1  # the automatic hold-out, the last fraction of the arrays
CUTS = ((0.25, 3), (0.5, 1))  # (fraction of the training, candidates kept there)

# `fit` arguments the race sets itself, or cannot honour.
_RACE_OWNS = ("initial_epoch", "steps_per_epoch", "validation_steps", "validation_freq")
_FIT_ARGS = (
    "batch_size",
    "verbose",
    "validation_split",
    "validation_data",
    "shuffle",
    "class_weight",
    "sample_weight",
    "validation_batch_size",
    "callbacks",
)


def _length(data):
    if isinstance(data, dict):
        return len(next(iter(data.values())))
    if isinstance(data, (list, tuple)):
        return _length(data[0])
    return len(data)


class RaceBatches(keras.utils.PyDataset):
    """The batches of one epoch of NumPy arrays, the same for every candidate.

    Epoch `e`'s order is a permutation drawn from
    `np.random.default_rng([seed, e])` (the identity with `shuffle=False`),
    so any epoch can be served again in the same order; `set_epoch(e)`
    chooses the epoch before each `fit` segment.
    """

    def __init__(self, x, y, sample_weight, batch_size, shuffle, seed):
        super().__init__()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.count = _length(x)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.order = (
            np.random.default_rng([self.seed, epoch]).permutation(self.count)
            if self.shuffle
            else np.arange(self.count)
        )

    def __len__(self):
        return math.ceil(self.count / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = (take(self.x, rows), take(self.y, rows))
        if self.sample_weight is not None:
            batch += (take(self.sample_weight, rows),)
        return batch


def checkpoints(epochs):
    """[(epoch, kept), ...]: the epochs (counted from 1) at whose end the
    race keeps the best `kept` candidates, the epoch nearest each fraction
    of `CUTS`; cuts that fall on the same epoch are one, the later's
    `kept`. The last keeps one."""
    out = []
    for fraction, kept in CUTS:
        epoch = min(epochs, max(1, math.floor(epochs * fraction + 0.5)))
        if out and out[-1][0] >= epoch:
            out[-1] = (out[-1][0], kept)
        else:
            out.append((epoch, kept))
    return out


def planned_trainings(count, epochs):
    """Trainings of compute the race plans for `count` candidates over
    `epochs` (the range test aside), if none diverges."""
    trained, alive, done = 0, count, 0
    for epoch, kept in checkpoints(epochs):
        trained += alive * (epoch - done)
        alive, done = min(alive, kept), epoch
    return (trained + alive * (epochs - done)) / epochs


def candidates_from(result, plan):
    """(candidates, centre, rule): `CANDIDATES` rates `SPACING` apart,
    centred on the range test's suggestion for `plan`'s peak momentum
    (`suggest(peak_momentum=...)`). Without one the
    curve never clearly descends, and where the rate should be is less
    sure: `CANDIDATES` rates half a decade apart, from a decade below where
    the test ended down."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suggestion = result.suggest(peak_momentum=plan.peak_momentum(result.momentum))
    if suggestion is not None:
        low = -((CANDIDATES - 1) // 2)
        rates = [suggestion * SPACING**k for k in range(low, low + CANDIDATES)]
        return (
            rates,
            suggestion,
            (
                f"rates a third of a decade apart around the "
                f"range test's suggestion for {plan.name} ({suggestion:.3g})"
            ),
        )
    top = float(result.lrs[-1]) if len(result.lrs) else 1e-1
    rates = [top / 10 ** (1 + k / 2) for k in range(CANDIDATES - 1, -1, -1)]
    return (
        rates,
        top / 10,
        (
            f"rates half a decade apart below where the range test ended "
            f"({top:.3g}): it made no suggestion"
        ),
    )


class MaxLRRace:
    """What a race of `max_lr` candidates did, and which won.

    `keras_clr.fit_one_cycle(..., max_lr="race")` builds one, fills it as
    the race runs and returns it as `history.race`; it is not meant to be
    built by hand.

    Attributes:
        winner: the winning `max_lr` (float).
        candidates: the rates raced, in increasing order.
        rule: how the candidates were chosen.
        epochs: the training's epochs.
        val_loss: dict rate -> list of validation losses, one per epoch the
            candidate trained.
        dropped: dict rate -> (epoch, reason) for the candidates dropped;
            the epoch is counted from 1, at whose end it was dropped.
        steps: dict rate -> optimizer steps it trained.
        range_steps: optimizer steps of the range test (0 without one).
        steps_per_training: optimizer steps of one training.
        range_test: the `LRFinderResult` that placed the candidates, or None.
        schedule: the schedule every candidate trained with, `"OneCycle"`
            or `"WarmupStableDecay"`.
        options: its arguments besides `max_lr` and the length, a dict.
        one_cycle: `options` when the schedule is `OneCycle`, else None.
        start_val_loss: the validation loss before any candidate trained.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> history = keras_clr.fit_one_cycle(
        ...     model, x, y, epochs=2, batch_size=16, max_lr="race",
        ...     candidates=[0.01, 0.1], race_seed=0, validation_split=0.25, verbose=0)
        >>> race = history.race
        >>> race.candidates, race.winner in race.candidates, race.compute
        ([0.01, 0.1], True, 1.5)
        >>> print(race)  # doctest: +ELLIPSIS
        MaxLRRace(winner=..., compute=1.50 trainings, epochs=2, one_cycle={})
          2 candidates given
          val_loss before training: ...
        >>> race.to_frame().columns.tolist()  # a row per candidate and epoch
        ['max_lr', 'epoch', 'val_loss', 'dropped', 'winner']
        >>> import matplotlib.pyplot as plt
        >>> ax = race.plot()
        >>> plt.close(ax.figure)
    """

    def __init__(
        self,
        candidates,
        rule,
        epochs,
        steps_per_training,
        range_test=None,
        range_steps=0,
        plan=None,
    ):
        self.candidates = sorted(float(rate) for rate in candidates)
        self.rule, self.epochs = rule, epochs
        self.steps_per_training = steps_per_training
        self.range_test, self.range_steps = range_test, int(range_steps)
        self.plan = plan or PlannedSchedule(OneCycle, {})
        self.schedule, self.options = self.plan.name, self.plan.shown_options
        self.one_cycle = None if self.plan.wsd else dict(self.plan.options)
        self.val_loss = {rate: [] for rate in self.candidates}
        self.steps = {rate: 0 for rate in self.candidates}
        self.dropped = {}
        self.winner = None
        self.start_val_loss = None

    @property
    def compute(self):
        """Optimizer steps trained by all candidates and the range test, in
        trainings (divided by the steps of one training).

        Returns:
            A float: 1.0 is the compute of one training.
        """
        return (sum(self.steps.values()) + self.range_steps) / self.steps_per_training

    def to_frame(self):
        """One row per candidate and epoch it trained: max_lr, epoch (from
        1), val_loss, dropped (the reason, at the epoch it was dropped),
        winner.

        Returns:
            A pandas DataFrame.
        """
        import pandas as pd

        rows = []
        for rate in self.candidates:
            for epoch, loss in enumerate(self.val_loss[rate], start=1):
                drop = self.dropped.get(rate)
                rows.append(
                    {
                        "max_lr": rate,
                        "epoch": epoch,
                        "val_loss": loss,
                        "dropped": drop[1] if drop and drop[0] == epoch else None,
                        "winner": rate == self.winner,
                    }
                )
        return pd.DataFrame(rows, columns=["max_lr", "epoch", "val_loss", "dropped", "winner"])

    def plot(self, ax=None):
        """Every candidate's validation loss against the epoch.

        Args:
            ax: a matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes (never calls `plt.show()`).
        """
        from keras_clr import plotting

        return plotting.plot_max_lr_race(self, ax=ax)

    def __repr__(self):
        winner = "none" if self.winner is None else f"{self.winner:.3g}"
        lines = [
            f"MaxLRRace(winner={winner}, compute={self.compute:.2f} trainings, "
            f"epochs={self.epochs}, {self.plan.shown()})",
            f"  {self.rule}",
        ]
        if self.start_val_loss is not None:
            lines.append(f"  val_loss before training: {self.start_val_loss:.4g}")
        for rate in self.candidates:
            curve = self.val_loss[rate]
            last = f"val_loss {curve[-1]:.4g} after {len(curve)} epochs" if curve else "-"
            drop = self.dropped.get(rate)
            mark = (
                f", dropped after epoch {drop[0]}: {drop[1]}"
                if drop
                else " <- winner"
                if rate == self.winner
                else ""
            )
            lines.append(f"  max_lr {rate:.3g}: {last}{mark}")
        return "\n".join(lines)


def _check_candidates(candidates):
    if isinstance(candidates, (str, bytes)) or not hasattr(candidates, "__iter__"):
        raise ValueError(
            "Argument `candidates` must be a list of at least two positive "
            f"finite learning rates. Received: candidates={candidates!r}"
        )
    rates = list(candidates)
    if len(rates) < 2 or len(set(rates)) != len(rates):
        raise ValueError(
            "Argument `candidates` must be a list of at least two distinct "
            f"positive finite learning rates. Received: candidates={candidates!r}"
        )
    for rate in rates:
        try:
            _checks.positive_finite("candidates", rate)
        except ValueError:
            raise ValueError(
                "Argument `candidates` must hold positive finite learning rates only; "
                f"{rate!r} is not one. Received: candidates={candidates!r}"
            ) from None
    return sorted(float(rate) for rate in rates)


def _check_arrays(name, value):
    if value is not None and not is_arrays(value):
        raise ValueError(
            f"Argument `{name}` must be NumPy arrays (an array, or a dict or list of "
            "them) for the race, which serves every candidate the same batches in the "
            "same order; tf.data, generators, PyDatasets and DataLoaders cannot be "
            "replayed that way. Pass arrays, or a float `max_lr` (or max_lr='auto'). "
            f"Received: {name}={type(value).__name__}"
        )


def _split(x, y, sample_weight, fit_kwargs):
    """(x, y, sample_weight, validation_data, held): the training arrays
    and what compares the candidates; `held` is the automatic hold-out's
    size, or 0."""
    validation = fit_kwargs.pop("validation_data", None)
    fraction = fit_kwargs.pop("validation_split", None) or 0.0
    count = _length(x)
    if validation is not None:
        if fraction:
            raise ValueError(
                "Pass one of `validation_data` and `validation_split`, "
                f"not both. Received: validation_split={fraction!r}"
            )
        if hasattr(validation, "__next__"):
            raise ValueError(
                "Argument `validation_data` must be data every candidate can be "
                "evaluated on again (arrays, a tf.data.Dataset or a PyDataset), not "
                f"a generator. Received: validation_data={type(validation).__name__}"
            )
        return x, y, sample_weight, validation, 0
    held = 0
    if not fraction:
        fraction = HOLD_OUT
        held = count - math.floor(count * (1 - fraction))
    else:
        fraction = _checks.in_interval(
            "validation_split", fraction, 0.0, 1.0, low_open=True, high_open=True
        )
    split = math.floor(count * (1 - fraction))  # as Keras splits
    if split < 1 or split == count:
        raise ValueError(
            f"The race needs validation data to compare its candidates: holding out "
            f"{fraction:g} of {count} samples leaves "
            f"{'no training' if split < 1 else 'no validation'} samples. Pass "
            f"`validation_data`, or more data. Received: x with {count} samples"
        )
    part = slice(0, split), slice(split, count)
    validation = tuple(
        slice_samples(d, part[1].start, part[1].stop)
        for d in (x, y, sample_weight)
        if d is not None
    )
    return (
        slice_samples(x, 0, split),
        None if y is None else slice_samples(y, 0, split),
        None if sample_weight is None else slice_samples(sample_weight, 0, split),
        validation,
        held,
    )


def check_inputs(x, y, fit_kwargs):
    """ValueError for data, `fit` arguments or callbacks the race cannot
    take; `fit_kwargs` is left as it is."""
    for key in fit_kwargs:
        if key in _RACE_OWNS:
            raise ValueError(
                f"Argument `{key}` is set by the race, which trains every candidate "
                "over the whole data epoch by epoch. Received: "
                f"{key}={fit_kwargs[key]!r}"
            )
        if key not in _FIT_ARGS:
            raise ValueError(
                f"Argument `{key}` is not one the race takes (fit's "
                f"{', '.join(_FIT_ARGS[:-1])}). Received: "
                f"{key}={fit_kwargs[key]!r}"
            )
    callbacks = fit_kwargs.get("callbacks", None)
    callbacks = getattr(callbacks, "callbacks", callbacks)  # a CallbackList's own
    if callbacks is None or not hasattr(callbacks, "__iter__"):  # one callback alone
        callbacks = [] if callbacks is None else [callbacks]
    callbacks = list(callbacks)
    if callbacks:
        names = ", ".join(type(callback).__name__ for callback in callbacks)
        raise ValueError(
            f"Argument `callbacks` ({names}) cannot be passed to the race: it trains "
            "several candidates epoch by epoch, so a callback would see their runs "
            "interleaved, not one training. Race without callbacks (the model ends "
            "as the winner's training left it), or pass a float `max_lr` (such as a "
            "race's `history.race.winner`) to fit with callbacks. Received: "
            f"callbacks=[{names}]"
        )
    shuffle = fit_kwargs.get("shuffle", True)
    if shuffle not in (True, False):
        raise ValueError(
            f"Argument `shuffle` must be True or False for the race. Received: shuffle={shuffle!r}"
        )
    if x is None:
        raise ValueError("Argument `x` must be the training data. Received: x=None")
    _check_arrays("x", x)
    _check_arrays("y", y)
    _check_arrays("sample_weight", fit_kwargs.get("sample_weight"))


def race(
    model,
    x,
    y,
    *,
    epochs,
    candidates=None,
    one_cycle=None,
    race_seed=None,
    schedule=None,
    **fit_kwargs,
):
    """Trains `model` for `epochs` with the `OneCycle` rate that wins a race;
    called by `keras_clr.fit_one_cycle(..., max_lr="race")` (see there).

    Returns:
        The winner's `keras.callbacks.History`, with `history.race` the
        `MaxLRRace`.
    """
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with an optimizer "
            f"before the race. Received: model={model.name!r}, not compiled"
        )
    epochs = _checks.positive_int("epochs", epochs)
    check_inputs(x, y, fit_kwargs)
    fit_kwargs.pop("callbacks", None)
    shuffle = fit_kwargs.pop("shuffle", True)
    if race_seed is not None and (
        isinstance(race_seed, bool) or not isinstance(race_seed, (int, np.integer)) or race_seed < 0
    ):
        raise ValueError(
            "Argument `race_seed` must be a non-negative integer or None. "
            f"Received: race_seed={race_seed!r}"
        )
    rates = None if candidates is None else _check_candidates(candidates)
    plan = planned_schedule(one_cycle, schedule, "the race")
    check_optimizer(model, plan, "the race")
    batch_size = fit_kwargs.pop("batch_size", None) or 32
    batch_size = _checks.positive_int("batch_size", batch_size)
    verbose = fit_kwargs.pop("verbose", "auto")
    verbose = 1 if verbose == "auto" else verbose
    x, y, sample_weight, validation, held = _split(
        x, y, fit_kwargs.pop("sample_weight", None), fit_kwargs
    )
    fit_kwargs.setdefault("validation_batch_size", batch_size)
    accumulation = optimizers.accumulation_steps(optimizers.base_optimizer(model))
    per_epoch = math.ceil(_length(x) / batch_size)
    total_steps = max(1, optimizers.planned_updates(epochs, per_epoch, accumulation))
    check_planned_length(plan, total_steps, "the race")
    x = ensure_built(model, x, batch_size)
    state.build_optimizer(model)
    poisoned = state.first_nonfinite(state.float_variables(model))
    if poisoned is not None:
        raise ValueError(
            f"Argument `model` must start from finite weights; {poisoned} "
            "holds NaN or inf already. Received: model with non-finite "
            f"{poisoned}"
        )
    if held:
        warnings.warn(
            f"The race compares its candidates on held-out data: it trains on the "
            f"first {_length(x)} samples and holds out the last {held} ({HOLD_OUT:.0%}), "
            "as validation_split=0.1 would. Pass `validation_data` (or "
            "`validation_split`) to choose the data it compares on.",
            stacklevel=3,
        )
    seed = int(np.random.randint(0, 2**31 - 1)) if race_seed is None else int(race_seed)

    result, range_steps = None, 0
    if rates is None:
        counter = _StepCount()
        result = find_lr(
            model,
            x,
            y,
            batch_size=batch_size,
            num_steps=RANGE_STEPS,
            verbose=0,
            sample_weight=sample_weight,
            callbacks=[counter],
            **{k: v for k, v in fit_kwargs.items() if k == "class_weight"},
        )
        # The test may run a few steps past the last it records (it reads the
        # loss every few steps): these count too.
        range_steps = counter.steps
        rates, _, rule = candidates_from(result, plan)
        rule = f"{len(rates)} {rule}"
    else:
        rule = f"{len(rates)} candidates given"
    report = MaxLRRace(rates, rule, epochs, total_steps, result, range_steps, plan)
    expected = planned_trainings(len(rates), epochs) + range_steps / total_steps
    if expected > COMPUTE_BUDGET:
        cuts = [epoch for epoch, _ in checkpoints(epochs)]
        warnings.warn(
            f"The race of {len(rates)} candidates over {epochs} epoch(s) will spend about "
            f"{expected:.2f} trainings of compute (the range test's {range_steps} steps "
            f"included), more than {COMPUTE_BUDGET:g}: its checkpoints are at the end of "
            f"epoch{'s' if len(cuts) > 1 else ''} {' and '.join(map(str, cuts))}. Fewer "
            "candidates (`candidates=[...]`), or a training of more epochs, spend less.",
            stacklevel=3,
        )
    batches = RaceBatches(x, y, sample_weight, batch_size, shuffle, seed)
    fit_args = dict(fit_kwargs, validation_data=validation, shuffle=False, verbose=0)
    _run(model, report, batches, fit_args, verbose)
    return report._history


def _run(model, report, batches, fit_args, verbose):
    """The race itself: trains, compares, drops; leaves the model as the
    winner's training left it and `report._history` its History."""

    optimizer = optimizers.base_optimizer(model)
    epochs = report.epochs
    cuts = dict(checkpoints(epochs))
    start = state.snapshot(model)
    report.start_val_loss = _validation_loss(model, fit_args)
    alive = {
        rate: {
            "saved": start,
            "schedule": report.plan.build(rate, report.steps_per_training),
            "logs": [],
        }
        for rate in report.candidates
    }

    last = None  # the candidate whose state the model holds

    def train(rate, begin, end):
        nonlocal last
        last = rate
        run = alive[rate]
        state.restore(run["saved"])
        before = optimizers.iterations(optimizer)
        batches.set_epoch(begin)
        history = model.fit(
            batches,
            initial_epoch=begin,
            epochs=end,
            callbacks=[_EpochOrder(batches), run["schedule"]],
            **fit_args,
        )
        report.steps[rate] += optimizers.iterations(optimizer) - before
        run["logs"].extend(
            zip(
                history.epoch,
                (
                    {key: values[i] for key, values in history.history.items()}
                    for i in range(len(history.epoch))
                ),
            )
        )
        run["params"] = history.params
        losses = history.history.get("val_loss", [])
        report.val_loss[rate].extend(float(v) for v in losses)
        bad = None
        if not all(math.isfinite(float(v)) for v in losses):
            bad = "non-finite validation loss"
        elif not all(math.isfinite(float(v)) for v in history.history.get("loss", [])):
            bad = "non-finite training loss"
        else:
            path = state.first_nonfinite(state.float_variables(model))
            if path is not None:
                bad = f"non-finite {path}"
        return bad

    def drop(rate, epoch, reason):
        report.dropped[rate] = (epoch, reason)
        del alive[rate]
        if verbose:
            print(f"race: max_lr {rate:.3g} dropped after epoch {epoch}: {reason}")

    epoch = 0
    while epoch < epochs:
        # to the next cut; the last one standing trains to the end
        end = epochs if len(alive) == 1 else min(e for e in [*cuts, epochs] if e > epoch)
        for rate in list(alive):
            bad = train(rate, epoch, end)
            if bad is not None:
                drop(rate, len(report.val_loss[rate]), bad)  # the epoch it diverged
            elif len(alive) > 1 or end < epochs:
                alive[rate]["saved"] = state.snapshot(model)
        if not alive:
            state.restore(start)
            raise ValueError(
                f"Every candidate of the race diverged ({report!r}); the model is "
                "back as it started. Race lower rates: pass `candidates`. Received: "
                f"candidates={report.candidates!r}"
            )
        epoch = end
        if epoch in cuts and len(alive) > cuts[epoch]:
            keep = cuts[epoch]
            ranked = sorted(alive, key=lambda rate: report.val_loss[rate][-1])
            for rate in ranked[keep:]:
                drop(
                    rate,
                    epoch,
                    f"val_loss {report.val_loss[rate][-1]:.4g} not among "
                    f"the best {keep} at epoch {epoch}",
                )
        if verbose and len(alive) > 1:
            shown = ", ".join(f"{rate:.3g}: {report.val_loss[rate][-1]:.4g}" for rate in alive)
            print(f"race: epoch {epoch}/{epochs}: val_loss {shown}")
    ((winner, run),) = alive.items()
    if last != winner:  # decided at the end: the model holds another's state
        state.restore(run["saved"])
    report.winner = winner
    if not min(report.val_loss[winner]) < report.start_val_loss:
        warnings.warn(
            f"The race's winner, max_lr {winner:.3g}, never brought the validation loss "
            f"below the {report.start_val_loss:.4g} the model started from (its lowest: "
            f"{min(report.val_loss[winner]):.4g}): none of the candidates "
            f"{[float(f'{r:.3g}') for r in report.candidates]} trained. Race lower rates "
            "(`candidates=[...]`), or look at the range test "
            "(`history.race.range_test.plot()`).",
            stacklevel=4,
        )
    history = keras.callbacks.History()
    history.set_model(model)
    history.epoch = [epoch for epoch, _ in run["logs"]]
    for _, logs in run["logs"]:
        for key, value in logs.items():
            history.history.setdefault(key, []).append(value)
    history.set_params({**run["params"], "epochs": epochs})
    history.race = report
    model.history = history
    report._history = history
    if verbose:
        print(f"race: winner max_lr {winner:.3g}, {report.compute:.2f} trainings of compute")


def _validation_loss(model, fit_args):
    """The model's loss on the race's validation data, as `fit` reports it."""
    data = fit_args["validation_data"]
    batch_size = fit_args.get("validation_batch_size")
    if isinstance(data, (tuple, list)):
        x, y, *weights = data
        logs = model.evaluate(
            x,
            y,
            sample_weight=weights[0] if weights else None,
            batch_size=batch_size,
            verbose=0,
            return_dict=True,
        )
    else:
        logs = model.evaluate(data, verbose=0, return_dict=True)
    return float(logs["loss"])


class _StepCount(keras.callbacks.Callback):
    """Counts the optimizer steps of the fits it is passed to: one read of
    the update count as each begins and as each epoch ends (the range test
    puts the model back before `on_train_end`)."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.begin = self.last = optimizers.iterations(optimizers.base_optimizer(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self.last = optimizers.iterations(optimizers.base_optimizer(self.model))

    def on_train_end(self, logs=None):
        self.steps += self.last - self.begin


class _EpochOrder(keras.callbacks.Callback):
    """Serves each epoch of a segment in its own order."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        # A candidate whose loss is no longer finite stops here (one read of
        # the epoch's logs), to be dropped as its fit ends.
        losses = [logs.get(key) for key in ("loss", "val_loss")] if logs else []
        if not all(math.isfinite(float(v)) for v in losses if v is not None):
            self.model.stop_training = True
