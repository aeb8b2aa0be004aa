"""WarmupStableDecay at the range test's suggested peak, against OneCycle.

For each task of `suggestion_quality.py` and each seed, from the same
initial model, the test metric of training for the task's epochs with:

- `OneCycle(max_lr=s)`, s the 100-step range test's `suggest()` (the rule
  was chosen for `OneCycle`'s peak);
- `WarmupStableDecay(max_lr=s, warmup_steps=10% of the steps,
  decay_steps=0.2)` (linear warm-up, 1-sqrt cooldown to 0), and the same at
  s / 2 (a schedule that holds its peak for 70% of the training may want a
  lower one);

and, with `--tuned`, the peaks chosen by training:

- `tune_max_lr(schedule=WarmupStableDecay(...))` with probes that run the
  WSD of the training, shrunk to the probe (`PROBE_AS_ONE_CYCLE = False`);
- `tune_max_lr()`'s `OneCycle` answer used as the WSD's peak (what
  `tune_max_lr(schedule=WarmupStableDecay(...))` returns, its probes
  running a `OneCycle`), beside `OneCycle` trained at it;
- the race, `fit_one_cycle(max_lr="race", schedule=WarmupStableDecay(...))`,
  beside the `OneCycle` race (`race_quality.py`'s, cached under its rule);

each as a share of the `OneCycle` grid's best seed-mean metric (the suite's
9 points). Design tasks by default.

Usage:
    .venv/bin/python benchmarks/wsd_quality.py --cache /tmp/wsd.json
"""

import argparse
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import race_quality  # noqa: E402
import suggestion_quality as sq  # noqa: E402

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr import tuning  # noqa: E402
from keras_clr.range_test import state as range_state  # noqa: E402

SCHEDULES = ("OneCycle at suggest()", "WSD at suggest()", "WSD at suggest() / 2")
TUNED = (
    "WSD at tune_max_lr, WSD probes",
    "WSD at tune_max_lr, OneCycle probes",
    "OneCycle at tune_max_lr(OneCycle)",
    "WSD race",
    "OneCycle race",
)


def template(steps):
    """The WSD of a training of `steps` updates, without its length: 10%
    warm-up, 1-sqrt cooldown over the last 20%."""
    return keras_clr.WarmupStableDecay(1.0, warmup_steps=max(1, steps // 10), decay_steps=0.2)


def tuned_wsd(bench, task, seed):
    """The peak `tune_max_lr(schedule=WSD)` chooses with probes that run the
    WSD, for (task, seed), cached."""
    name = f"tune-wsd/{task}/{seed}"
    if name not in bench.saved_curves:
        _, _, _, batch, epochs, _, _ = sq.TASKS[task]
        model, saved = bench.model(task, seed)
        range_state.restore(saved)
        x_tr, y_tr, _, _ = bench._data(task)
        steps = bench._steps(task, epochs)
        keras.utils.set_random_seed(30_000 + seed)  # as Bench.tuned
        tuning.PROBE_AS_ONE_CYCLE = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search = keras_clr.tune_max_lr(
                    model,
                    x_tr,
                    y_tr,
                    batch_size=batch,
                    total_steps=steps,
                    schedule=template(steps),
                    verbose=0,
                )
        finally:
            tuning.PROBE_AS_ONE_CYCLE = True
        bench.saved_curves[name] = [search.max_lr, search.steps_used]
        bench.save()
    return bench.saved_curves[name][0]


def wsd_race(bench, task, seed):
    """(metric, winner, compute) of the race with the WSD template, cached."""
    name = f"race-wsd/{race_quality.RULE}/{task}/{seed}"
    if name not in bench.saved_curves:
        _, _, _, batch, epochs, _, kind = sq.TASKS[task]
        model, saved = bench.model(task, seed)
        range_state.restore(saved)
        x_tr, y_tr, x_te, y_te = bench._data(task)
        keras.utils.set_random_seed(40_000 + seed)  # as race_quality.race
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = keras_clr.fit_one_cycle(
                model,
                x_tr,
                y_tr,
                batch_size=batch,
                epochs=epochs,
                max_lr="race",
                schedule=template(bench._steps(task, epochs)),
                verbose=0,
            )
        metric = sq._score(model.predict(x_te, batch_size=512, verbose=0), y_te, kind)
        bench.saved_curves[name] = [metric, history.race.winner, history.race.compute]
        bench.save()
    return bench.saved_curves[name]


def wsd_metric(bench, task, seed, peak):
    """Test metric of a WarmupStableDecay(peak) training of (task, seed)."""
    name = f"wsd/{task}/{seed}/{peak:.4g}"
    if name not in bench.saved_curves:
        _, _, _, batch, epochs, _, kind = sq.TASKS[task]
        model, saved = bench.model(task, seed)
        range_state.restore(saved)
        x_tr, y_tr, x_te, y_te = bench._data(task)
        steps = epochs * math.ceil(len(x_tr) / batch)
        keras.utils.set_random_seed(20_000 + seed)  # the grid's data order
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(
                x_tr,
                y_tr,
                batch_size=batch,
                epochs=epochs,
                verbose=0,
                callbacks=[
                    keras_clr.WarmupStableDecay(
                        peak, warmup_steps=max(1, steps // 10), decay_steps=0.2, total_steps=steps
                    )
                ],
            )
        bench.saved_curves[name] = sq._score(
            model.predict(x_te, batch_size=512, verbose=0), y_te, kind
        )
        bench.save()
    return bench.saved_curves[name]


def suggested(bench, task, seed, epochs):
    """The metrics of `SCHEDULES` for (task, seed), NaN without a suggestion."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peak = bench.curve(task, seed).suggest()
    if peak is None:
        return [np.nan] * len(SCHEDULES)
    return [
        bench.metric(task, seed, peak, epochs),
        wsd_metric(bench, task, seed, peak),
        wsd_metric(bench, task, seed, peak / 2),
    ]


def tuned(bench, task, seed, epochs):
    """The metrics of `TUNED` for (task, seed), and the WSD race's compute."""
    peak = tuned_wsd(bench, task, seed)
    one_cycle = bench.tuned(task, seed, 0, epochs, sq.TUNE_BUDGET)
    bench.save()
    metric, _, compute = wsd_race(bench, task, seed)
    return [
        np.nan if peak is None else wsd_metric(bench, task, seed, peak),
        np.nan if one_cycle is None else wsd_metric(bench, task, seed, one_cycle),
        np.nan if one_cycle is None else bench.metric(task, seed, one_cycle, epochs),
        metric,
        race_quality.race(bench, task, seed, epochs)[0],
    ], compute


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(sq.TASKS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cache", default=None)
    parser.add_argument(
        "--tuned", action="store_true", help="the peaks tune_max_lr and the race choose, instead"
    )
    parser.add_argument(
        "--held-out", action="store_true", help="the held-out tasks instead of the design tasks"
    )
    args = parser.parse_args(argv)
    tasks = args.tasks or [t for t in sq.TASKS if (t in sq.HELD_OUT) == args.held_out]
    names = TUNED if args.tuned else SCHEDULES
    bench = sq.Bench(100, args.cache)
    start = time.perf_counter()
    rows = []
    for task in tasks:
        epochs, grid = sq.TASKS[task][4], sq.TASKS[task][5]
        metrics = [[bench.metric(task, s, lr, epochs) for lr in grid] for s in args.seeds]
        best = float(np.max(np.mean(metrics, axis=0)))
        shares, computes = {name: [] for name in names}, []
        for seed in args.seeds:
            if args.tuned:
                values, compute = tuned(bench, task, seed, epochs)
                computes.append(compute)
            else:
                values = suggested(bench, task, seed, epochs)
            for name, value in zip(names, values):
                shares[name].append(value)
        bench.save()
        row = {name: float(np.nanmean(values)) / best for name, values in shares.items()}
        rows.append((task, row))
        extra = f"; WSD race compute {np.mean(computes):.2f}" if computes else ""
        print(f"{task}: " + "; ".join(f"{k} {v:.2%}" for k, v in row.items()) + extra, flush=True)
    print("\n| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for task, row in rows:
        print(f"| {task} | " + " | ".join(f"{row[k]:.2%}" for k in names) + " |")
    for name in names:
        values = [row[name] for _, row in rows if not math.isnan(row[name])]
        print(f"{name}: mean {np.mean(values):.2%}, worst {min(values):.2%}")
    print(f"{time.perf_counter() - start:.0f} s; seeds {args.seeds}")


if __name__ == "__main__":
    main()
