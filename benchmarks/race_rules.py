"""Which race rule? Every grid rate trained to the end, and rules replayed on it.

The race (`fit_one_cycle(max_lr="race")`) trains its candidates on the same
batches in the same order and compares them on held-out validation loss at
epoch ends; a candidate's curve up to a cut is the same whether it is then
dropped or trains on. So one full training per (task, seed, rate), on the
race's own data path, tells what any rule of cuts would have chosen:

1. ``collect``: for each task, seed and point of the task's 9-point grid, a
   `OneCycle(rate)` training for the task's epochs on the race's split (the
   first 90% of the training arrays; `RaceBatches` with the race's seed),
   the validation loss on the last 10% after every epoch and the test
   metric at the end; and the range test the race runs (100 steps on the
   90%), with the candidates the race would take from it.
2. ``simulate``: replays rules on those curves. Candidates are grid points
   around the one nearest the race's centre (the range test's suggestion),
   a third or two thirds of a decade apart, or the first race's own; a
   rule is a list of (fraction of the training, candidates kept) cuts and
   a way to compare. A choice is scored by the test metric the other
   seeds' trainings reach at the chosen rate, over the grid's best
   seed-mean metric on the same 90% (the choice alone, the hold-out's cost
   aside; scoring the run that chose, `--same-run`, flatters every rule:
   its validation loss shares that run's luck); compute is the epochs
   trained by all candidates and the range test, in trainings.

Design tasks only by default (the suite's TASKS minus HELD_OUT); the
held-out tasks are for after a rule is chosen.

Usage:
    .venv/bin/python benchmarks/race_rules.py collect --json /tmp/race_curves.json --seeds 0 1
    .venv/bin/python benchmarks/race_rules.py simulate --json /tmp/race_curves.json
"""

import argparse
import itertools
import json
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

from keras_clr import race as race_module  # noqa: E402
from keras_clr.callbacks import OneCycle  # noqa: E402
from keras_clr.range_test import state  # noqa: E402
from keras_clr.range_test.api import find_lr  # noqa: E402
from keras_clr.schedule_arguments import PlannedSchedule  # noqa: E402

RACE_SEED = 40_000


def _split(x, y):
    split = math.floor(len(x) * (1 - race_module.HOLD_OUT))
    return x[:split], y[:split], (x[split:], y[split:])


def collect_one(bench, task, seed):
    """{"rates", "val_loss" (rate x epoch), "metric" (rate), "candidates",
    "range_steps", "steps_per_training", "seconds"} for (task, seed)."""
    _, _, _, batch, epochs, grid, kind = sq.TASKS[task]
    model, saved = bench.model(task, seed)
    x_tr, y_tr, x_te, y_te = bench._data(task)
    x, y, validation = _split(x_tr, y_tr)
    per_epoch = math.ceil(len(x) / batch)
    total = epochs * per_epoch
    state.restore(saved)
    counter = race_module._StepCount()
    keras.utils.set_random_seed(RACE_SEED + seed)
    result = find_lr(
        model,
        x,
        y,
        batch_size=batch,
        num_steps=race_module.RANGE_STEPS,
        verbose=0,
        callbacks=[counter],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rates, centre, _ = race_module.candidates_from(result, PlannedSchedule(OneCycle, {}))
    out = {
        "rates": list(grid),
        "val_loss": [],
        "metric": [],
        "candidates": rates,
        "centre": centre,
        "range_steps": counter.steps,
        "steps_per_training": total,
        "epochs": epochs,
        "seconds": [],
    }
    for rate in grid:
        state.restore(saved)
        batches = race_module.RaceBatches(x, y, None, batch, True, RACE_SEED + seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            history = model.fit(
                batches,
                epochs=epochs,
                validation_data=validation,
                validation_batch_size=batch,
                shuffle=False,
                verbose=0,
                callbacks=[race_module._EpochOrder(batches), OneCycle(rate, total_steps=total)],
            )
        out["seconds"].append(time.perf_counter() - start)
        losses = [float(v) for v in history.history.get("val_loss", [])]
        losses += [float("nan")] * (epochs - len(losses))  # stopped: diverged
        out["val_loss"].append(losses)
        out["metric"].append(sq._score(model.predict(x_te, batch_size=512, verbose=0), y_te, kind))
    return out


def collect(args):
    saved = {}
    if os.path.exists(args.json):
        with open(args.json) as f:
            saved = json.load(f)
    bench = sq.Bench(100, None)
    tasks = args.tasks or [t for t in sq.TASKS if t not in sq.HELD_OUT]
    for task in tasks:
        for seed in args.seeds:
            name = f"{task}/{seed}"
            if name in saved:
                continue
            start = time.perf_counter()
            saved[name] = collect_one(bench, task, seed)
            with open(args.json, "w") as f:
                json.dump(saved, f)
            print(
                f"{name}: {time.perf_counter() - start:.0f} s; best "
                f"{saved[name]['rates'][int(np.argmax(saved[name]['metric']))]:.3g}",
                flush=True,
            )


# -- replaying rules ---------------------------------------------------------


def _nearest(grid, rate):
    return int(np.argmin([abs(math.log(g / rate)) for g in grid]))


def _cut_epochs(epochs, fractions):
    """The epochs (from 1) nearest each fraction, increasing and distinct,
    at most `epochs`."""
    out = []
    for fraction in fractions:
        epoch = max(1, math.floor(epochs * fraction + 0.5))
        if out and epoch <= out[-1]:
            epoch = out[-1] + 1
        out.append(min(epoch, epochs))
    return out


def replay(run, pool, cuts, compare="last"):
    """(index chosen, epochs trained by all candidates) of a race over the
    grid indices `pool` with `cuts` = [(fraction, keep), ...]; the last keep
    is 1. `compare`: "last" (validation loss at the cut) or "min" (lowest
    so far). A candidate whose validation loss is not finite is dropped at
    the next cut."""
    epochs = run["epochs"]
    curves = np.array(run["val_loss"], dtype=float)
    alive = sorted(set(pool))
    trained = done = 0
    for epoch, (_, keep) in zip(_cut_epochs(epochs, [c[0] for c in cuts]), cuts):
        trained += len(alive) * (epoch - done)
        alive = [i for i in alive if np.all(np.isfinite(curves[i, :epoch]))] or alive[:1]
        done = epoch
        if len(alive) > keep:
            score = {
                i: (curves[i, epoch - 1] if compare == "last" else np.nanmin(curves[i, :epoch]))
                for i in alive
            }
            alive = sorted(alive, key=lambda i: score[i])[:keep]
    trained += len(alive) * (epochs - done)
    chosen = min(alive, key=lambda i: curves[i, -1] if np.isfinite(curves[i, -1]) else 1e30)
    return chosen, trained


def _score(saved, tasks, pool, cuts, compare="last", same_run=False):
    """(mean share, worst share, compute mean, compute max, shares per task)
    of a rule. A choice is scored by the test metric the other seeds'
    trainings reached at the chosen rate (their mean): what training at
    that rate gives, not the run the choice was made on, whose luck its
    validation loss shares (`same_run=True` scores that run instead). A
    cut's keep of "third" keeps ceil(K / 3) of K."""
    shares, computes = [], []
    for task in tasks:
        runs = [saved[k] for k in sorted(saved) if k.split("/")[0] == task]
        metrics = np.array([run["metric"] for run in runs])
        grid_best = metrics.mean(axis=0).max()
        scores = []
        for j, run in enumerate(runs):
            chosen_pool = sorted(set(pool(run)))
            resolved = [(f, -(-len(chosen_pool) // 3) if k == "third" else k) for f, k in cuts]
            chosen, trained = replay(run, chosen_pool, resolved, compare)
            others = (
                np.delete(metrics[:, chosen], j)
                if len(runs) > 1 and not same_run
                else metrics[j : j + 1, chosen]
            )
            scores.append(others.mean())
            computes.append(
                trained / run["epochs"] + run["range_steps"] / run["steps_per_training"]
            )
        shares.append(np.mean(scores) / grid_best)
    return np.mean(shares), min(shares), np.mean(computes), max(computes), shares


def simulate(args):
    with open(args.json) as f:
        saved = json.load(f)
    tasks = sorted({name.split("/")[0] for name in saved})
    if not args.held_out:
        tasks = [t for t in tasks if t not in sq.HELD_OUT]
    pools = {
        f"{count} a {'third' if step == 1 else 'two thirds'} of a decade apart": (
            lambda count, step: lambda run: _around(run, count, step)
        )(count, step)
        for count in range(3, 8)
        for step in (1, 2)
    }
    # The first race's candidates, in curves collected while it was the
    # default (its budget trimming is gone from the library).
    if all("trimmed" in run for run in saved.values()):
        pools["the first race's (4-6 half a decade apart)"] = lambda run: [
            _nearest(run["rates"], r) for r in run["trimmed"]
        ]
    cutsets = [[(f, 1)] for f in (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)]
    for first, second in itertools.product((0.2, 0.25, 0.3, 0.4, 0.5), (0.4, 0.5, 0.6, 0.75)):
        if second > first:
            cutsets += [[(first, keep), (second, 1)] for keep in (2, 3, "third")]
    rows = []
    for (pool_name, pool), cuts in itertools.product(pools.items(), cutsets):
        for compare in ("last", "min"):
            rows.append(
                (
                    *_score(saved, tasks, pool, cuts, compare, args.same_run),
                    pool_name,
                    f"cuts {cuts}, {compare}",
                )
            )

    def show(row, per_task=False):
        print(
            f"{row[0]:.2%} | {row[1]:.2%} | {row[2]:.2f} | {row[3]:.2f} | {row[5]} | "
            f"{row[6]}" + (" | " + " ".join(f"{s:.3f}" for s in row[4]) if per_task else "")
        )

    print(
        f"tasks: {tasks}; seeds per task: "
        f"{[sum(k.split('/')[0] == t for k in saved) for t in tasks]}; {len(rows)} rules; "
        + (
            "scored on the run that chose"
            if args.same_run
            else "scored by the other seeds at the chosen rate"
        )
    )
    print("mean | worst | compute mean | compute max | candidates | rule")
    within = [r for r in rows if r[3] <= args.budget]
    print(f"\nbest mean within {args.budget} trainings (max over runs):")
    for row in sorted(within, key=lambda r: -r[0])[: args.top]:
        show(row, per_task=True)
    print(f"\nbest worst task within {args.budget} trainings:")
    for row in sorted(within, key=lambda r: -r[1])[: args.top]:
        show(row)
    print("\nreferences:")
    every = lambda run: list(range(len(run["rates"])))  # noqa: E731
    for fraction in (0.25, 0.5, 0.75, 1.0):
        show(
            (
                *_score(saved, tasks, every, [(fraction, 1)], "last", args.same_run),
                "all 9 grid points",
                f"the lowest validation loss at {fraction:.0%}",
            )
        )
    for name, pool, cuts in (
        (
            "the first race's (4-6 half a decade apart)",
            pools["the first race's (4-6 half a decade apart)"],
            [(0.25, "third"), (0.5, 1)],
        ),
        (
            "3 two thirds of a decade apart",
            pools["3 a two thirds of a decade apart"],
            [(0.5, 2), (0.75, 1)],
        ),
        (
            "5 a third of a decade apart (the race's default)",
            pools["5 a third of a decade apart"],
            [(0.25, 3), (0.5, 1)],
        ),
    ):
        show(
            (*_score(saved, tasks, pool, cuts, "last", args.same_run), name, f"cuts {cuts}"),
            per_task=True,
        )


def _around(run, count, step=2):
    """`count` grid indices `step` apart (2: two thirds of a decade) around
    the grid point nearest the race's centre, clipped to the grid."""
    centre = _nearest(run["rates"], run["centre"])
    first = centre - step * ((count - 1) // 2)
    top = len(run["rates"]) - 1
    return sorted({min(max(0, first + step * k), top) for k in range(count)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["collect", "simulate"])
    parser.add_argument("--json", required=True)
    parser.add_argument("--tasks", nargs="+", choices=sorted(sq.TASKS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="include the held-out tasks (after a rule is chosen)",
    )
    parser.add_argument(
        "--same-run",
        action="store_true",
        help="score a choice on the run that made it, not the other seeds",
    )
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    collect(args) if args.mode == "collect" else simulate(args)


if __name__ == "__main__":
    main()
