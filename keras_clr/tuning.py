"""`tune_max_lr` and `fit_one_cycle`: a `max_lr` for `OneCycle` chosen by
training, within a budget of optimizer steps.

One range test (100 steps) places the first candidates: the ends and the
middle, in log scale, of the stretch where its loss descends
(`suggest_range()`). Each candidate is trained for a short `OneCycle` probe
from the same start and scored by the loss it ends with (on
`validation_data` when given, else on a fixed subset of the training data).
While the best candidate is the lowest or highest tried, the search goes on
past it; once it is bracketed, the rest of the budget halves the spacing
around it. The best candidate is the answer.

A range test alone cannot tell a task that wants twice its loss minimum
from one that collapses before it, and one noisy test can put its
suggestion decades off; a probe trains at the rate itself, with the warm-up
and anneal the real training will have. Every probe runs the `OneCycle`
the training will run (`one_cycle`: every argument but `max_lr` and the
probe's length). A probe that leaves a weight or an optimizer slot
non-finite (NaN in the data can do so while the loss stays finite, where a
fused ReLU turns NaN into 0) scores inf. The model and optimizer are put
back bit for bit afterwards, whatever happens.
"""

import math
import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import optimizers
from keras_clr import race
from keras_clr.callbacks import OneCycle
from keras_clr.callbacks import check_conflicts
from keras_clr.range_test import state
from keras_clr.range_test.api import find_lr
from keras_clr.range_test.data import batches_per_epoch
from keras_clr.range_test.data import check_data
from keras_clr.range_test.data import fit_plan
from keras_clr.range_test.data import is_arrays
from keras_clr.range_test.data import is_tf_dataset
from keras_clr.range_test.data import is_torch_loader
from keras_clr.range_test.data import repeating
from keras_clr.range_test.data import slice_samples
from keras_clr.schedule_arguments import PlannedSchedule
from keras_clr.schedule_arguments import check_no_one_cycle_kwargs
from keras_clr.schedule_arguments import check_optimizer
from keras_clr.schedule_arguments import check_planned_length
from keras_clr.schedule_arguments import planned_schedule

RANGE_STEPS = 100  # the range test's length
SPREAD = 2.0  # the first candidates span at least SPREAD ** 2; refined to sqrt(SPREAD)
PROBES = 5  # probes the budget left after the range test is shared between
EVAL_BATCHES = 8  # batches of the fixed subset each probe is evaluated on
MIN_PROBE_STEPS = 20  # shortest probe worth running
FLAT = 0.05  # a probe that lowers the loss by less than this fraction barely trained
# Probes run a OneCycle (with the schedule's momenta) whatever the schedule
# tuned for: for a WarmupStableDecay its answer reached more of the grid's
# best than probes that run the WSD (`benchmarks/wsd_quality.py --tuned`).
PROBE_AS_ONE_CYCLE = True


class MaxLRSearch:
    """What `tune_max_lr` found: `max_lr`, and how.

    `tune_max_lr` (and `fit_one_cycle`, as `history.max_lr_search`)
    returns one; it is not meant to be built by hand.

    Attributes:
        max_lr: the chosen `max_lr` (float), or None when no candidate's
            loss descends (`reason` says why).
        reason: a sentence on how `max_lr` was chosen.
        steps_used: optimizer steps spent in all (range test and probes).
        range_test: the `LRFinderResult` that placed the candidates.
        candidates: list of dicts (max_lr, probe_steps, loss, note), in the
            order they were trained; `note` is None, or says which variable
            a probe left non-finite (its loss is then inf).
        total_steps: the training the answer is for.
        schedule: the schedule tuned for, `"OneCycle"` or
            `"WarmupStableDecay"` (its class name); `reason` says what the
            probes ran.
        options: its arguments besides `max_lr` and the length, a dict; {}
            for the defaults.
        one_cycle: `options` when the schedule is `OneCycle`, else None.
        start_loss: the loss before any probe; a candidate is chosen only
            if its loss ends below it.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> search = keras_clr.tune_max_lr(model, x, y, batch_size=16, total_steps=40,
        ...                               budget_steps=160, verbose=0)
        >>> print(search)  # doctest: +ELLIPSIS
        MaxLRSearch(max_lr=..., steps_used=..., for 40 steps, one_cycle={})
          the lowest loss after a 20-step OneCycle(max_lr, total_steps=probe_steps) probe, ...
        >>> search.to_frame().columns.tolist()  # a row per probe
        ['max_lr', 'probe_steps', 'loss', 'note', 'chosen']
        >>> import matplotlib.pyplot as plt
        >>> ax = search.plot()  # the range test, and each probe's loss
        >>> plt.close(ax.figure)
    """

    def __init__(
        self,
        max_lr,
        reason,
        steps_used,
        range_test,
        candidates,
        total_steps,
        start_loss=None,
        plan=None,
    ):
        self.max_lr = max_lr
        self.reason = reason
        self.steps_used = int(steps_used)
        self.range_test = range_test
        self.candidates = [{"note": None, **row} for row in candidates]
        self.total_steps = total_steps
        self.start_loss = start_loss
        self.plan = plan or PlannedSchedule(OneCycle, {})
        self.schedule, self.options = self.plan.name, self.plan.shown_options
        self.one_cycle = None if self.plan.wsd else dict(self.plan.options)

    def to_frame(self):
        """Every candidate evaluated: max_lr, probe_steps, loss, note, chosen.

        Returns:
            A pandas DataFrame, a row per probe in the order they ran;
            `chosen` is True on the row of `max_lr`.
        """
        import pandas as pd

        frame = pd.DataFrame(self.candidates, columns=["max_lr", "probe_steps", "loss", "note"])
        frame["chosen"] = frame["max_lr"] == self.max_lr
        return frame

    def plot(self, ax=None):
        """The range test's curve, and each probe's loss at its `max_lr`
        (on a twin axis).

        Args:
            ax: a matplotlib Axes to draw on; a new figure when None.

        Returns:
            The Axes of the range test (never calls `plt.show()`).
        """
        from keras_clr import plotting

        return plotting.plot_max_lr_search(self, ax=ax)

    def __repr__(self):
        chosen = "none" if self.max_lr is None else f"{self.max_lr:.3g}"
        lines = [
            f"MaxLRSearch(max_lr={chosen}, steps_used={self.steps_used}, "
            f"for {self.total_steps} steps, {self.plan.shown()})",
            f"  {self.reason}",
        ]
        for row in self.candidates:
            mark = " <- chosen" if row["max_lr"] == self.max_lr else ""
            note = f" ({row['note']})" if row.get("note") else ""
            lines.append(
                f"  max_lr {row['max_lr']:.3g}: loss {row['loss']:.4g} after "
                f"{row['probe_steps']} steps{note}{mark}"
            )
        return "\n".join(lines)


def _planned_steps(model, x, batch_size, total_steps, epochs, fit_kwargs):
    """The optimizer steps of the training to tune for."""
    if total_steps is not None:
        if epochs is not None:
            raise ValueError(
                "Pass one of `total_steps` and `epochs`, not both. "
                f"Received: total_steps={total_steps!r}, epochs={epochs!r}"
            )
        return _checks.positive_int("total_steps", total_steps)
    if epochs is None:
        raise ValueError(
            "Argument `total_steps` or `epochs` must say how long the "
            "training to tune for is. Received: total_steps=None, "
            "epochs=None"
        )
    epochs = _checks.positive_int("epochs", epochs)
    per_epoch = fit_kwargs.get("steps_per_epoch") or batches_per_epoch(
        x, batch_size, fit_kwargs.get("validation_split")
    )
    if per_epoch is None:
        raise ValueError(
            "Argument `epochs` needs data with a known length to count the "
            "steps of an epoch; this data has none. Pass `total_steps` (or "
            f"`steps_per_epoch`). Received: x={type(x).__name__}, epochs={epochs}"
        )
    accumulation = optimizers.accumulation_steps(optimizers.base_optimizer(model))
    return max(1, optimizers.planned_updates(epochs, int(per_epoch), accumulation))


def _evaluation_data(x, y, batch_size, fit_kwargs):
    """The fixed data each probe is scored on: `validation_data`, or the first
    `EVAL_BATCHES` batches of the training data."""
    validation = fit_kwargs.get("validation_data")
    source = validation if validation is not None else (x if y is None else (x, y))
    size = batch_size or 32
    if isinstance(source, (tuple, list)) and is_arrays(source[0]):
        count = EVAL_BATCHES * size
        return (
            tuple(None if part is None else slice_samples(part, 0, count) for part in source),
            {"batch_size": size},
        )
    if is_tf_dataset(source):
        return (source.take(EVAL_BATCHES).cache(),), {}
    if isinstance(source, keras.utils.PyDataset) or is_torch_loader(source):
        batches = [b for _, b in zip(range(EVAL_BATCHES), iter(source))]
    else:  # a (repeating) generator
        batches = [next(source) for _ in range(EVAL_BATCHES)]
    xs = np.concatenate([np.asarray(b[0]) for b in batches])
    ys = np.concatenate([np.asarray(b[1]) for b in batches])
    return (xs, ys), {"batch_size": len(batches[0][0])}


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += optimizers.steps_per_execution(self.model)
        if self.seen >= self.steps:
            self.model.stop_training = True


def _probe(
    model, saved, x, y, batch_size, max_lr, steps, evaluation, fit_kwargs, plan, planned_steps
):
    """(loss, optimizer steps taken, note) of a `steps`-step run of `plan`
    (a `PlannedSchedule`) at `max_lr`, shaped as the training of
    `planned_steps` will be, from `saved`: the loss is inf, and the
    note names the variable, when the probe left a weight or an optimizer
    slot non-finite (the loss can stay finite then)."""
    state.restore(saved)
    optimizer = optimizers.base_optimizer(model)
    before = optimizers.iterations(optimizer)
    data, epochs, per_epoch = fit_plan(
        model, x, batch_size, steps, fit_kwargs.get("validation_split")
    )
    kwargs = {k: v for k, v in fit_kwargs.items() if k != "validation_data"}
    if data is not x:
        kwargs = {"shuffle": False, **kwargs}
    history = getattr(model, "history", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(
                data,
                y,
                batch_size=batch_size,
                epochs=epochs,
                steps_per_epoch=per_epoch,
                verbose=0,
                callbacks=[plan.build(max_lr, steps, planned_steps), _StopAfter(steps)],
                **kwargs,
            )
        path = state.first_nonfinite(state.float_variables(model))
        loss = _loss(model, evaluation) if path is None else math.inf
    finally:
        model.history = history
    note = None if path is None else f"non-finite {path}"
    return loss, optimizers.iterations(optimizer) - before, note


def _recalibrate(model, evaluation):
    """Sets the moving statistics of the model's batch normalization to
    their average over the evaluation batches (as torch's `update_bn` does
    for SWA): after a short probe the moving averages (momentum 0.99) still
    hold mostly their starting values, and the loss in inference mode would
    say little of the weights the probe reached."""
    layers = optimizers.batch_norm_layers(model)
    if not layers:
        return
    args, kwargs = evaluation
    if len(args) == 1:  # a dataset of (x, y) batches
        inputs = [batch[0] for batch in args[0]]
    else:
        size = kwargs["batch_size"]
        count = len(next(iter(args[0].values())) if isinstance(args[0], dict) else args[0])
        inputs = [slice_samples(args[0], start, start + size) for start in range(0, count, size)]
    momenta = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(inputs):
            for layer in layers:
                layer.momentum = i / (i + 1)  # a running mean over the batches
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _loss(model, evaluation):
    _recalibrate(model, evaluation)
    args, kwargs = evaluation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = model.evaluate(*args, verbose=0, return_dict=True, **kwargs)
    loss = float(values.get("loss", next(iter(values.values()))))
    return loss if math.isfinite(loss) else math.inf


def _first_rates(result, plan=None):
    """(the first three rates to probe, reason) from the range test: the ends
    and the middle (in log scale) of the stretch where its loss descends
    (`suggest_range()`), at least `SPREAD ** 2` wide. `plan` is the
    training's `PlannedSchedule` (for the default rule's momentum)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A span only where the loss clearly descends (the default rule's 1%).
        plan = plan or PlannedSchedule(OneCycle, {})
        peak = plan.peak_momentum(result.momentum)
        span = result.suggest_range() if result.suggest(peak_momentum=peak) is not None else None
    if span is not None:
        low, high = span
        why = f"across the range test's descent, {low:.3g} to {high:.3g}"
    else:
        # No descent within the test: a decade either side of where it ended.
        # A network the cold test diverges at may train there once warmed up,
        # as OneCycle does; or a slow start may need more steps than the test.
        top = float(result.lrs[-1]) if len(result.lrs) else 1e-2
        low, high = top / 10, top * 10
        why = "a decade either side of where the range test ended, which never descended"
    middle = math.sqrt(low * high)
    half = max(math.sqrt(high / low), SPREAD)
    return [middle / half, middle, middle * half], why


def _next_rate(rows, start_loss):
    """The next rate to probe: past the best while it is the lowest or the
    highest tried, by the spacing there (a decade up when even the best
    barely moved the loss: the rates are far too low); else halfway (in log
    scale) between it and its better neighbour; None once that spacing is
    below `sqrt(SPREAD)`."""
    tried = sorted(rows, key=lambda row: row["max_lr"])
    best = min(range(len(tried)), key=lambda i: tried[i]["loss"])
    rate, loss = tried[best]["max_lr"], tried[best]["loss"]
    if len(tried) == 1:
        return rate * SPREAD
    if best in (0, len(tried) - 1):
        neighbour = tried[1 if best == 0 else -2]["max_lr"]
        step = max(rate, neighbour) / min(rate, neighbour)
        if best == 0:
            return rate / step
        stalled = not start_loss - loss > FLAT * abs(start_loss)
        return rate * max(step, 10.0 if stalled else SPREAD)
    low, high = tried[best - 1], tried[best + 1]
    other = low if low["loss"] <= high["loss"] else high
    if max(rate, other["max_lr"]) / min(rate, other["max_lr"]) < SPREAD**0.5 * 1.01:
        return None
    return math.sqrt(rate * other["max_lr"])


def tune_max_lr(
    model,
    x=None,
    y=None,
    *,
    total_steps=None,
    epochs=None,
    batch_size=None,
    budget_steps=400,
    one_cycle=None,
    schedule=None,
    verbose=1,
    **fit_kwargs,
):
    """Chooses `max_lr` for a `OneCycle` training of `total_steps` steps (or
    the peak of another schedule: `schedule`).

    Runs one range test (`RANGE_STEPS` steps), then short `OneCycle` probes
    (the rest of `budget_steps` shared by `PROBES`, no longer than the
    training itself but at least `MIN_PROBE_STEPS`), each from the same
    start, while the budget lasts: at the ends and the middle
    of the range test's descent (`suggest_range()`), then on past the best
    while it is the lowest or highest tried, then between it and its better
    neighbour. The answer is the candidate whose probe ends at the lowest
    loss (on `validation_data` when passed, else on the first
    `EVAL_BATCHES` batches of `x`). Each probe is
    `OneCycle(rate, total_steps=probe_steps, **one_cycle)`, the schedule of
    the training to tune for. A probe that leaves a weight or optimizer
    slot NaN or inf scores inf, noted in `candidates` and `reason` (the loss
    alone may not show it: a fused ReLU turns NaN into 0); when every probe
    does, `max_lr` is None. The model's weights and optimizer state are
    bit-identical afterwards, whatever happens.

    Args:
        model: a compiled Keras model.
        x: the training data, as for `model.fit`.
        y: the targets, with array `x`.
        batch_size: the batch size, with array `x`.
        total_steps: the optimizer steps of the training to tune for; or
        epochs: its epochs (the data must have a length). One of the two.
        budget_steps: optimizer steps to spend in all, at least
            `RANGE_STEPS + 3 * MIN_PROBE_STEPS` (160).
        one_cycle: the `OneCycle` arguments of the training to tune for,
            besides `max_lr` and `total_steps` (`pct_start`, `div_factor`,
            `cycle_momentum`, `base_momentum`, ...), as a dict; or a
            `keras_clr.OneCycle` built with `total_steps=None`, whose
            other arguments but `max_lr` are used. None: the defaults.
        schedule: instead of `one_cycle`, the schedule of the training to
            tune for, built without a length (its `max_lr` is replaced): a
            `keras_clr.OneCycle`, or a `keras_clr.WarmupStableDecay` with
            `total_steps` and `stable_steps` None (its `warmup_steps` count
            steps of the training, and must fit in it with the cooldown).
            The probes run a `OneCycle` with the schedule's momenta even so:
            on the benchmark suite the peak `OneCycle` probes choose served
            `WarmupStableDecay` better than probes that run it
            (`benchmarks/wsd_quality.py --tuned`; `PROBE_AS_ONE_CYCLE`).
        verbose: 0 silent, 1 a line per candidate.
        **fit_kwargs: passed to `model.fit` (`validation_data`,
            `validation_split`, `sample_weight`, `class_weight`, ...).

    Returns:
        `keras_clr.MaxLRSearch`.

    Raises:
        ValueError: before any step, for an uncompiled model, `callbacks`
            among `fit_kwargs`, `x` missing or not data `fit` takes, neither
            or both of `total_steps` and `epochs`, `epochs` on data without
            a length, `budget_steps` too small, an invalid `one_cycle` or
            `schedule` (or both given; a `WarmupStableDecay` with a length
            of its own, or whose warm-up and cooldown do not fit in the
            training), a OneCycle argument passed as a keyword of its own,
            an optimizer the schedule cannot drive (without a momentum, it
            needs `cycle_momentum=False`), or a model whose weights are
            already NaN or inf; and what `find_lr` refuses.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> before = model.get_weights()
        >>> search = keras_clr.tune_max_lr(model, x, y, batch_size=16, epochs=10,
        ...                                budget_steps=160, verbose=0)
        >>> search.total_steps, search.max_lr is not None
        (40, True)
        >>> all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
        True
        >>> history = model.fit(x, y, batch_size=16, epochs=10, verbose=0,
        ...                     callbacks=[keras_clr.OneCycle(search.max_lr)])
    """
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with an optimizer "
            f"before tuning. Received: model={model.name!r}, not compiled"
        )
    if "callbacks" in fit_kwargs:
        raise ValueError(
            "tune_max_lr runs its own trainings, without your callbacks "
            "(fit_one_cycle passes them to the real training). "
            f"Received: callbacks={fit_kwargs['callbacks']!r}"
        )
    check_no_one_cycle_kwargs(fit_kwargs, "tune_max_lr")
    plan = planned_schedule(one_cycle, schedule, "tune_max_lr")
    budget = _checks.positive_int("budget_steps", budget_steps)
    least = RANGE_STEPS + 3 * MIN_PROBE_STEPS
    if budget < least:
        raise ValueError(
            f"Argument `budget_steps` must be at least {least}: a {RANGE_STEPS}-step "
            f"range test and three probes of {MIN_PROBE_STEPS} steps. "
            f"Received: budget_steps={budget_steps!r}"
        )
    if x is None:
        raise ValueError(
            "Argument `x` must be the training data, as for `model.fit`. Received: x=None"
        )
    check_data(x)
    training_steps = _planned_steps(model, x, batch_size, total_steps, epochs, fit_kwargs)
    check_planned_length(plan, training_steps, "tune_max_lr")
    check_optimizer(model, plan, "tune_max_lr")
    poisoned = state.first_nonfinite(state.float_variables(model))
    if poisoned is not None:
        raise ValueError(
            f"Argument `model` must start from finite weights; {poisoned} "
            "holds NaN or inf already. Received: model with non-finite "
            f"{poisoned}"
        )
    # The range test and the probes set their own lengths.
    fit_kwargs = {k: v for k, v in fit_kwargs.items() if k != "steps_per_epoch"}
    if hasattr(x, "__next__"):
        x = repeating(x)
    # The range test reads the training loss; validation_data scores the probes.
    result = find_lr(
        model,
        x,
        y,
        batch_size=batch_size,
        num_steps=RANGE_STEPS,
        verbose=0,
        **{k: v for k, v in fit_kwargs.items() if k != "validation_data"},
    )
    used = len(result.lrs)
    rates, why = _first_rates(result, plan)
    probe_steps = max(MIN_PROBE_STEPS, min(training_steps, (budget - used) // PROBES))
    probe_plan = plan.as_one_cycle() if PROBE_AS_ONE_CYCLE else plan
    evaluation = _evaluation_data(x, y, batch_size, fit_kwargs)
    state.build_optimizer(model)
    saved = state.snapshot(model)
    rows = []
    try:
        start_loss = _loss(model, evaluation)
        while rates and used + probe_steps <= budget:
            rate = rates.pop(0)
            loss, steps, note = _probe(
                model,
                saved,
                x,
                y,
                batch_size,
                rate,
                probe_steps,
                evaluation,
                fit_kwargs,
                probe_plan,
                training_steps,
            )
            used += steps
            rows.append(
                {"max_lr": float(rate), "probe_steps": int(steps), "loss": loss, "note": note}
            )
            if verbose:
                print(
                    f"tune_max_lr: max_lr {rate:.3g}: loss {loss:.4g} "
                    f"after {steps} steps{f' ({note})' if note else ''}"
                )
            if not rates:
                rate = _next_rate(rows, start_loss)
                rates = [] if rate is None else [rate]
    finally:
        state.restore(saved)
    best = min(rows, key=lambda row: row["loss"])
    notes = [row["note"] for row in rows if row["note"]]
    found = best["max_lr"] if best["loss"] < start_loss else None
    if len(notes) == len(rows):
        lowest = min(row["max_lr"] for row in rows)
        reason = (
            f"every probe left the weights or optimizer state non-finite (first: "
            f"{notes[0]}), down to max_lr {lowest:.3g}: likely NaN or inf in the "
            f"data; probed {why}"
        )
    elif found is None:
        reason = f"no probe's loss fell below the start ({start_loss:.4g}); probed {why}"
    else:
        reason = (
            f"the lowest loss after a {probe_steps}-step {probe_plan.described()} "
            f"probe, of {len(rows)} {why}"
        )
    if notes and len(notes) < len(rows):
        reason += (
            f"; {len(notes)} of {len(rows)} probes left the weights or optimizer "
            f"state non-finite ({notes[0]}) and scored inf"
        )
    if result.stop_reason == "nan":
        reason += "; the range test stopped on a non-finite loss or weight (stop_reason='nan')"
    return MaxLRSearch(found, reason, used, result, rows, training_steps, start_loss, plan)


def fit_one_cycle(
    model,
    x=None,
    y=None,
    *,
    epochs,
    max_lr="auto",
    budget_steps=400,
    one_cycle=None,
    candidates=None,
    race_seed=None,
    schedule=None,
    **fit_kwargs,
):
    """`model.fit` with a `OneCycle` schedule, its `max_lr` tuned first.

    Args:
        model: a compiled Keras model.
        x: the training data, as for `model.fit` (NumPy arrays for
            `max_lr="race"`).
        y: the targets, with array `x`.
        epochs: epochs of the training.
        max_lr: a float; "auto" to run `tune_max_lr` for this training
            first (spending `budget_steps` optimizer steps); or "race" to
            train several candidates (`OneCycle`, or `schedule`) through the
            training itself, drop the losers early on validation loss and
            keep the winner's training (`MaxLRRace`; about 3 trainings of
            compute).
        budget_steps: with `max_lr="auto"`, the optimizer steps
            `tune_max_lr` may spend (at least 160); ignored otherwise.
        candidates: with `max_lr="race"`, the rates to race (at least two
            positive floats); None races 5, a third of a decade apart,
            around a 100-step range test's suggestion.
        race_seed: with `max_lr="race"`, the seed of the batch order every
            candidate sees; None draws it from NumPy's global generator
            (`keras.utils.set_random_seed` makes it reproducible).
        one_cycle: the further `OneCycle` arguments (`pct_start`,
            `div_factor`, `cycle_momentum`, `base_momentum`, ...), as a dict
            or a `keras_clr.OneCycle` with `total_steps=None` (its `max_lr`
            is replaced); the tuning's probes run the same schedule.
        schedule: instead of `one_cycle`, the schedule to train with, as
            for `tune_max_lr`: a `keras_clr.WarmupStableDecay` built without
            a length is planned for the whole training (`epochs` of the
            data, which must have a length or come with `steps_per_epoch`);
            the race's candidates run it too (`tune_max_lr`'s probes run a
            `OneCycle`: see there).
        **fit_kwargs: every other `fit` argument, callbacks included.

    Returns:
        The `keras.callbacks.History`; with `max_lr="auto"` it holds the
        search (a `keras_clr.MaxLRSearch`) as `history.max_lr_search`
        (None for a float `max_lr`); with `max_lr="race"` it is the
        winner's (every epoch's logs) and holds the race (a
        `keras_clr.MaxLRRace`) as `history.race`.

    Raises:
        ValueError: before any step, for an invalid `one_cycle` or
            `schedule` (as for `tune_max_lr`; a `WarmupStableDecay` also
            needs data with a length), a OneCycle argument passed as a
            keyword of its own, `candidates` or `race_seed` without
            `max_lr="race"`, or a float `max_lr` that is not positive and
            finite; with
            `max_lr="auto"`, as `tune_max_lr` does, and when it finds no
            `max_lr` (its reason says why: no probe lowered the loss, or
            every probe left the weights non-finite); with `max_lr="race"`,
            before any step, for `candidates` that are not at least two
            distinct positive finite floats, `epochs` below 1, data other
            than NumPy arrays, `callbacks`, `fit` arguments the race sets
            itself (`initial_epoch`, `steps_per_epoch`, ...) or does not
            know, and too few samples to hold out validation data; after
            the race, when every candidate diverged (the model is put back
            as it started); and what `OneCycle` refuses as training begins.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> history = keras_clr.fit_one_cycle(model, x, y, epochs=5, batch_size=16,
        ...                                   budget_steps=160, verbose=0)
        >>> history.max_lr_search.max_lr is not None, len(history.epoch)
        (True, 5)
        >>> history.history["loss"][-1] < history.history["loss"][0]
        True

        `keras_clr.MaxLRRace` shows `max_lr="race"`.
    """
    check_no_one_cycle_kwargs(fit_kwargs, "fit_one_cycle")
    plan = planned_schedule(one_cycle, schedule, "fit_one_cycle")
    if isinstance(max_lr, str) and max_lr == "race":
        return race.race(
            model,
            x,
            y,
            epochs=epochs,
            candidates=candidates,
            schedule=plan,
            race_seed=race_seed,
            **fit_kwargs,
        )
    for name, value in (("candidates", candidates), ("race_seed", race_seed)):
        if value is not None:
            raise ValueError(
                f"Argument `{name}` is for max_lr='race' only. Received: "
                f"{name}={value!r} with max_lr={max_lr!r}"
            )
    search = None
    steps = None
    # A callback that also sets the rate is refused before any tuning.
    check_conflicts(plan.template, fit_kwargs.get("callbacks") or [])
    if plan.wsd or (isinstance(max_lr, str) and max_lr == "auto"):
        check_data(x)
        unknown = (
            fit_kwargs.get("steps_per_epoch") is None
            and batches_per_epoch(
                x, fit_kwargs.get("batch_size"), fit_kwargs.get("validation_split")
            )
            is None
        )
        if unknown:
            needs = "a WarmupStableDecay is planned" if plan.wsd else "max_lr='auto' tunes"
            raise ValueError(
                f"Argument `x` has no known length, and {needs} for the training's "
                f"length in steps: pass `steps_per_epoch`. Received: x={type(x).__name__}, "
                f"epochs={epochs!r}, steps_per_epoch=None"
            )
    if plan.wsd:  # planned for the training's length
        steps = _planned_steps(model, x, fit_kwargs.get("batch_size"), None, epochs, fit_kwargs)
        check_planned_length(plan, steps, "fit_one_cycle")
    if isinstance(max_lr, str) and max_lr == "auto":
        tuning = {
            k: v
            for k, v in fit_kwargs.items()
            if k not in ("callbacks", "verbose", "initial_epoch")
        }
        search = tune_max_lr(
            model,
            x,
            y,
            epochs=epochs,
            budget_steps=budget_steps,
            schedule=plan,
            verbose=0,
            **tuning,
        )
        if search.max_lr is None:
            raise ValueError(
                f"tune_max_lr found no max_lr: {search.reason}. Pass a "
                "float `max_lr`. Received: max_lr='auto'"
            )
        max_lr = search.max_lr
    max_lr = _checks.positive_finite("max_lr", max_lr)
    callbacks = [plan.for_fit(max_lr, steps), *(fit_kwargs.pop("callbacks", None) or [])]
    history = model.fit(x, y, epochs=epochs, callbacks=callbacks, **fit_kwargs)
    history.max_lr_search = search
    return history
