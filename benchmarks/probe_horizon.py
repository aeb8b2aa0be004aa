"""How well does a short `OneCycle` probe rank `max_lr` for the full training?

`tune_max_lr` scores each candidate `max_lr` by the loss a short `OneCycle`
probe ends with. This script measures, per task of `suggestion_quality.py`
and seed, how the rate a probe prefers relates to the rate the full
training prefers:

1. the test metric of the full `OneCycle` training at each point of the
   task's 9-point grid (as `suggestion_quality.py` trains it, same cache);
2. the loss after a probe of each length in `--lengths` at each grid
   point, from the same initial model, scored as `tune_max_lr` scores it
   (the first 8 training batches, batch-norm statistics recomputed) and on
   the test data; each length with `--orders` data orders.

Per task it prints, for each probe length, scoring and order, the grid
point with the lowest probe loss, and the full training's metric there as
a share of the grid's best: what a search that probed exactly the grid
would reach. The horizon bias is the log10 ratio of the probe's best rate
to the training's best rate; the order-to-order spread of the probes' best
rate is the noise.

At the end (or alone, from a saved `--json`, with `--summary`) it prints
what a search that probed every grid point would reach over the tasks,
scored by the full trainings (mean, worst, tasks at 98% or more):

- the lowest probe loss, per data order, and of the two orders' mean loss;
- the lowest probe loss moved by a fixed log10 step, up for SGD and down
  for Adam (the direction of the probes' bias in the table), the metric
  interpolated in log rate between grid points;
- the highest rate (SGD) or lowest (Adam) whose probe loss is within a
  tolerance of the lowest;
- the reference: the grid's best of one seed's full trainings, scored on
  the other seed (the noise floor of the comparison itself).

Usage:
    .venv/bin/python benchmarks/probe_horizon.py --tasks mnist1d_gru friedman_adam \
        --seeds 0 1 --lengths 60 150 --cache /tmp/sq.json --json /tmp/horizon.json
    .venv/bin/python benchmarks/probe_horizon.py --summary /tmp/horizon.json
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suggestion_quality as sq  # noqa: E402  (sets the backend, imports keras)

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_clr import tuning  # noqa: E402
from keras_clr.range_test import state  # noqa: E402


def _test_loss(model, x_te, y_te):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = model.evaluate(x_te, y_te, batch_size=512, verbose=0)
    value = float(value[0] if isinstance(value, list) else value)
    return value if math.isfinite(value) else math.inf


def probe_losses(bench, task, seed, length, order):
    """{max_lr: (probe loss on the training subset, on the test data)}."""
    model, saved = bench.model(task, seed)
    x_tr, y_tr, x_te, y_te = bench._data(task)
    batch = sq.TASKS[task][3]
    evaluation = tuning._evaluation_data(x_tr, y_tr, batch, {})
    out = {}
    for lr in sq.TASKS[task][5]:
        keras.utils.set_random_seed(40_000 + seed + 1000 * order)
        loss, _, _ = tuning._probe(model, saved, x_tr, y_tr, batch, lr, length, evaluation, {}, {})
        out[lr] = (loss, _test_loss(model, x_te, y_te))
    state.restore(saved)
    return out


def run(bench, task, seeds, lengths, orders, out):
    grid = sq.TASKS[task][5]
    epochs = sq.TASKS[task][4]
    steps = bench._steps(task, epochs)
    full = np.array([[bench.metric(task, s, lr, epochs) for lr in grid] for s in seeds])
    bench.save()
    means = full.mean(axis=0)
    best = int(np.argmax(means))
    out.write(
        f"\n{task} ({steps} steps): full training best max_lr {grid[best]:.3g} "
        f"({means[best]:.4f}); grid " + " ".join(f"{m:.3f}" for m in means) + "\n"
    )
    record = {"task": task, "steps": steps, "grid": grid, "full": full.tolist(), "probes": []}
    for length in lengths:
        for order in range(orders):
            for scoring in (0, 1):
                shares, logs = [], []
                for i, seed in enumerate(seeds):
                    key = f"probe/{task}/{seed}/{length}/{order}"
                    if key not in bench.saved_curves:
                        losses = probe_losses(bench, task, seed, length, order)
                        bench.saved_curves[key] = [[lr, *v] for lr, v in losses.items()]
                        bench.save()
                    rows = bench.saved_curves[key]
                    chosen = int(np.argmin([row[1 + scoring] for row in rows]))
                    shares.append(full[i, chosen] / means[best])
                    logs.append(math.log10(grid[chosen] / grid[best]))
                    record["probes"].append(
                        {"seed": seed, "length": length, "order": order, "rows": rows}
                    )
                name = "train subset" if scoring == 0 else "test data"
                out.write(
                    f"  probe {length:>4} steps ({length / steps:.0%}), order {order}, "
                    f"{name:>12}: best rate / training's best 10^"
                    + " 10^".join(f"{v:+.2f}" for v in logs)
                    + f"; share of best {np.mean(shares):.2%}\n"
                )
    out.flush()
    return record


def _probe_rows(record):
    """{(seed index, length, order): rows} of one task's record."""
    seeds = sorted({p["seed"] for p in record["probes"]})
    return {(seeds.index(p["seed"]), p["length"], p["order"]): p["rows"] for p in record["probes"]}


def _pick(rows, shift=0.0, tolerance=None, upward=True):
    """log10 of the chosen rate: the lowest probe loss (training subset),
    moved by `shift`, or the farthest rate within `tolerance` of it."""
    rates = np.log10([row[0] for row in rows])
    losses = np.array([row[1] if math.isfinite(row[1]) else math.inf for row in rows])
    lowest = int(np.argmin(losses))
    if tolerance is None:
        return rates[lowest] + shift
    near = np.flatnonzero(losses <= losses[lowest] + tolerance * abs(losses[lowest]))
    return rates[near.max() if upward else near.min()]


def _share(record, seed_index, log_rate):
    """The full training's metric at `log_rate` (interpolated in log rate,
    clipped to the grid) as a share of the grid's best seed mean."""
    full = np.array(record["full"])
    grid = np.log10(record["grid"])
    log_rate = min(max(log_rate, grid[0]), grid[-1])
    return float(np.interp(log_rate, grid, full[seed_index]) / full.mean(axis=0).max())


def summarize(report, out):
    """Prints how far ranking by the probes gets (see the module docstring)."""
    lengths = sorted({p["length"] for r in report for p in r["probes"]})
    orders = sorted({p["order"] for r in report for p in r["probes"]})
    sgd = {task for task, spec in sq.TASKS.items() if spec[2] is sq._sgd}

    def line(name, share_of):
        shares = {r["task"]: float(np.mean(share_of(r))) for r in report}
        values = np.array(list(shares.values()))
        worst = min(shares, key=shares.get)
        out.write(
            f"  {name:<58} mean {values.mean():7.2%}  worst {values.min():7.2%} "
            f"({worst})  at 98% or more: {(values >= 0.98).sum()} of {len(values)}\n"
        )

    out.write(f"\nA search that probed all 9 grid points, over {len(report)} tasks:\n")
    for length in lengths:
        line(
            f"{length}-step probes, lowest loss",
            lambda r: [
                _share(r, i, _pick(rows))
                for (i, n, _), rows in _probe_rows(r).items()
                if n == length
            ],
        )
        line(
            f"{length}-step probes, lowest mean loss of {len(orders)} orders",
            lambda r: [
                _share(
                    r,
                    i,
                    _pick(
                        [
                            [
                                row[0],
                                np.mean([_probe_rows(r)[(i, length, o)][k][1] for o in orders]),
                            ]
                            for k, row in enumerate(_probe_rows(r)[(i, length, orders[0])])
                        ]
                    ),
                )
                for i in range(len(r["full"]))
            ],
        )
        for step in (0.15, 0.33):
            line(
                f"{length}-step, lowest loss x10^{step:+.2f} (SGD) / x10^{-step:+.2f} (Adam)",
                lambda r: [
                    _share(r, i, _pick(rows, step if r["task"] in sgd else -step))
                    for (i, n, _), rows in _probe_rows(r).items()
                    if n == length
                ],
            )
        for tolerance in (0.05, 0.2):
            line(
                f"{length}-step, farthest within {tolerance:.0%} (SGD up, Adam down)",
                lambda r: [
                    _share(r, i, _pick(rows, tolerance=tolerance, upward=r["task"] in sgd))
                    for (i, n, _), rows in _probe_rows(r).items()
                    if n == length
                ],
            )

    def full_reference(record):
        full = np.array(record["full"])
        grid = np.log10(record["grid"])
        return [_share(record, 1 - a, grid[int(np.argmax(full[a]))]) for a in (0, 1)]

    if all(len(r["full"]) == 2 for r in report):
        line("reference: full trainings of the other seed", full_reference)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(sq.TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--lengths", nargs="+", type=int, default=[60, 150])
    parser.add_argument("--orders", type=int, default=2)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--summary", default=None, metavar="JSON", help="only print the summary of a saved --json"
    )
    args = parser.parse_args(argv)
    if args.summary:
        with open(args.summary) as f:
            summarize(json.load(f), sys.stdout)
        return
    if not args.tasks:
        parser.error("--tasks is required (unless --summary)")
    bench = sq.Bench(100, args.cache)
    start = time.perf_counter()
    report = [
        run(bench, task, args.seeds, args.lengths, args.orders, sys.stdout) for task in args.tasks
    ]
    sys.stdout.write(f"\ntime: {time.perf_counter() - start:.0f} s\n")
    summarize(report, sys.stdout)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
