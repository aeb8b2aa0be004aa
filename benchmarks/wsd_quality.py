"""WarmupStableDecay at the range test's suggested peak, against OneCycle.

For each task of `suggestion_quality.py` and each seed, from the same
initial model, the test metric of training for the task's epochs with:

- `OneCycle(max_lr=s)`, s the 100-step range test's `suggest()` (the rule
  was chosen for `OneCycle`'s peak);
- `WarmupStableDecay(max_lr=s, warmup_steps=10% of the steps,
  decay_steps=0.2)` (linear warm-up, 1-sqrt cooldown to 0), and the same at
  s / 2 (a schedule that holds its peak for 70% of the training may want a
  lower one);

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

import suggestion_quality as sq  # noqa: E402

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr.range_test import state as range_state  # noqa: E402

SCHEDULES = ("OneCycle at suggest()", "WSD at suggest()", "WSD at suggest() / 2")


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
            model.fit(x_tr, y_tr, batch_size=batch, epochs=epochs, verbose=0,
                      callbacks=[keras_clr.WarmupStableDecay(
                          peak, warmup_steps=max(1, steps // 10), decay_steps=0.2,
                          total_steps=steps)])
        bench.saved_curves[name] = sq._score(model.predict(x_te, batch_size=512, verbose=0),
                                             y_te, kind)
        bench.save()
    return bench.saved_curves[name]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(sq.TASKS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    tasks = args.tasks or [t for t in sq.TASKS if t not in sq.HELD_OUT]
    bench = sq.Bench(100, args.cache)
    start = time.perf_counter()
    rows = []
    for task in tasks:
        epochs, grid = sq.TASKS[task][4], sq.TASKS[task][5]
        best = float(np.max(np.mean([[bench.metric(task, s, lr, epochs) for lr in grid]
                                     for s in args.seeds], axis=0)))
        shares = {name: [] for name in SCHEDULES}
        for seed in args.seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                peak = bench.curve(task, seed).suggest()
            if peak is None:
                for name in SCHEDULES:
                    shares[name].append(np.nan)
                continue
            shares[SCHEDULES[0]].append(bench.metric(task, seed, peak, epochs))
            shares[SCHEDULES[1]].append(wsd_metric(bench, task, seed, peak))
            shares[SCHEDULES[2]].append(wsd_metric(bench, task, seed, peak / 2))
        bench.save()
        row = {name: float(np.nanmean(values)) / best for name, values in shares.items()}
        rows.append((task, row))
        print(f"{task}: " + "; ".join(f"{k} {v:.2%}" for k, v in row.items()), flush=True)
    print("\n| task | " + " | ".join(SCHEDULES) + " |")
    print("|---|" + "---|" * len(SCHEDULES))
    for task, row in rows:
        print(f"| {task} | " + " | ".join(f"{row[k]:.2%}" for k in SCHEDULES) + " |")
    for name in SCHEDULES:
        values = [row[name] for _, row in rows if not math.isnan(row[name])]
        print(f"{name}: mean {np.mean(values):.2%}, worst {min(values):.2%}")
    print(f"{time.perf_counter() - start:.0f} s; seeds {args.seeds}")


if __name__ == "__main__":
    main()
