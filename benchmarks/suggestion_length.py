"""How much does `result.suggest()` depend on the range test's length?

For each task of benchmarks/suggestion_quality.py (its models, optimizers,
data and batch sizes) and each seed, run `find_lr` with its defaults (1e-7
to 10, exp ramp, smoothing 0.98) at each `num_steps` of `--lengths`, each
from the same initial model (which `find_lr` restores) and the same data
order, and print `suggest()` per length (a markdown table on stdout), and
the spread: the largest over the smallest suggestion of a (task, seed).

No training: range tests only. The "distance" columns test one correction:
a longer test spends more steps at each rate, so by the time it reaches a
rate the weights have travelled further (the sum of the rates so far,
`lr * g / (g - 1)` on a ramp growing by `g` per step); scaling each
suggestion by that sum's ratio to the 100-step test's (about
`num_steps / 100`) gives the rate at which the 100-step test had travelled
as far. The default 100-step value is unchanged by it.

By default the design tasks (every task of suggestion_quality.py but its
HELD_OUT ones); `--held-out` runs those instead, `--tasks` any.

Usage:
    .venv/bin/python benchmarks/suggestion_length.py             # design tasks, seeds 0 1
    .venv/bin/python benchmarks/suggestion_length.py --quick     # 2 tasks, 1 seed, ~1 min
    .venv/bin/python benchmarks/suggestion_length.py --held-out
    .venv/bin/python benchmarks/suggestion_length.py --tasks digits_mlp --lengths 100 1000
"""

import argparse
import math
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suggestion_quality as sq  # noqa: E402  (sets the Keras environment first)

# isort: split

import numpy as np  # noqa: E402

LENGTHS = (50, 100, 200, 500, 1000)
START_LR, END_LR = 1e-7, 10.0  # find_lr's defaults, which the runs use


def distance_factor(num_steps, reference=100):
    """How much further a test of `num_steps` steps has moved the weights
    by the time it reaches a rate than a `reference`-step test: the ratio of
    `g / (g - 1)`, `g` the ramp's growth per step."""

    def travelled(n):
        g = (END_LR / START_LR) ** (1 / (n - 1))
        return g / (g - 1)

    return travelled(num_steps) / travelled(reference)


def _spread(values):
    values = [v for v in values if v is not None]
    return max(values) / min(values) if len(values) > 1 else math.nan


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument(
        "--held-out", action="store_true", help="the held-out tasks of suggestion_quality.py"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="digits_mlp and digits_adam, seed 0, lengths 50 100 200",
    )
    args = parser.parse_args()
    if args.quick:
        tasks, seeds, lengths = ["digits_mlp", "digits_adam"], [0], [50, 100, 200]
    else:
        tasks = args.tasks or [t for t in sq.TASKS if (t in sq.HELD_OUT) == args.held_out]
        seeds, lengths = args.seeds, args.lengths
    print(
        f"suggest() by num_steps (find_lr defaults otherwise); tasks {tasks}, seeds {seeds}\n",
        file=sys.stderr,
    )
    print(
        "| task | seed | "
        + " | ".join(f"{n} steps" for n in lengths)
        + " | spread | spread after the distance correction |"
    )
    print("|---|---:|" + "---:|" * len(lengths) + "---:|---:|")
    spreads, corrected_spreads = [], []
    start = time.perf_counter()
    benches = {n: sq.Bench(n) for n in lengths}
    for task in tasks:
        for seed in seeds:
            found = []
            for n in lengths:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found.append(benches[n].curve(task, seed).suggest())
            corrected = [
                None if lr is None else lr * distance_factor(n) for lr, n in zip(found, lengths)
            ]
            spread, fixed = _spread(found), _spread(corrected)
            spreads.append(spread)
            corrected_spreads.append(fixed)
            cells = " | ".join("none" if v is None else f"{v:.3g}" for v in found)
            print(f"| {task} | {seed} | {cells} | {spread:.2f} | {fixed:.2f} |", flush=True)
        for n in lengths:  # free the models of this task
            benches[n].models.clear()
            benches[n].curves.clear()

    def summary(values):
        values = [v for v in values if not math.isnan(v)]
        return (
            f"median {np.median(values):.2f}, geometric mean "
            f"{math.exp(np.mean(np.log(values))):.2f}, max {max(values):.2f}"
        )

    print(
        f"\nSpread (largest / smallest suggestion of a task and seed) over num_steps "
        f"{lengths}: {summary(spreads)}; after the distance correction: "
        f"{summary(corrected_spreads)}."
    )
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
