"""Fine-tuning: one rate for every layer against discriminative rates.

Three fine-tuning tasks (a model pre-trained on a related task, then
trained again on the task), an MLP, a convnet and a GRU:
`digits_finetune_sgd` and `mnist1d_finetune_adam` of
`suggestion_quality.py` (held out there), and `mnist1d_gru_finetune_adam`,
defined here (the suite's GRU pre-trained on shifted MNIST-1D). For each
task and seed, from the same pre-trained model, the test metric of:

- **no tuning**: a plain `fit` at Keras's default rate (1e-2 for SGD, 1e-3
  for Adam), constant, every layer trainable;
- **suggest()**: `OneCycle(max_lr=result.suggest())` after a 100-step range
  test, every layer at one rate;
- **tune_max_lr**: `fit_one_cycle(max_lr="auto")`, one rate;
- **fine_tune**: `keras_clr.fine_tune(model, x, y, freeze_epochs=1,
  epochs=task's epochs - 1, max_lr="auto")`: the head alone for an epoch,
  then every layer at discriminative rates (fastai's spread, `lr_mult`
  default); the same number of epochs in all;
- **fine_tune at the grid's best**: the same with `max_lr` the grid's best
  one rate for both stages: the discriminative spread without the tuning;
- **fine_tune, lr_mult=10**: "auto", the body at a tenth of the head's rate;
- **the grid**: `OneCycle(max_lr)` at each of the task's 9 grid points, one
  rate (the suite's `Bench.metric`, cached with `--cache`).

Each as a share of the grid's best seed-mean metric. The grid and the other
one-rate methods train every layer for the task's epochs.

Usage:
    .venv/bin/python benchmarks/finetune_quality.py --cache /tmp/finetune.json
    .venv/bin/python benchmarks/finetune_quality.py --tasks digits_finetune_sgd --seeds 0
"""

import argparse
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

sq.TASKS.setdefault(
    "mnist1d_gru_finetune_adam",
    (
        sq._mnist1d,
        sq._pretrained(sq._gru, sq._mnist1d_shifted, 4, 64),
        sq._adam,
        64,
        4,
        sq.ADAM_GRID,
        "accuracy",
    ),
)
TASKS = ("digits_finetune_sgd", "mnist1d_finetune_adam", "mnist1d_gru_finetune_adam")
METHODS = (
    "no tuning",
    "suggest()",
    "tune_max_lr",
    "fine_tune",
    "fine_tune at the grid's best",
    "fine_tune, lr_mult=10",
)


def _fresh(task, seed):
    """The task's pre-trained model of `seed`, compiled with its optimizer."""
    _, build, optimizer, _, _, _, metric = sq.TASKS[task]
    keras.utils.set_random_seed(seed)
    model = build()
    loss = "mse" if metric == "r2" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer(), loss=loss)
    return model


def method_metric(bench, task, seed, method, grid_best=None):
    """(test metric, rate used or None) of `method` on (task, seed)."""
    name = f"finetune/{method}/{task}/{seed}"
    if name not in bench.saved_curves:
        _, _, optimizer, batch, epochs, _, kind = sq.TASKS[task]
        x_tr, y_tr, x_te, y_te = bench._data(task)
        rate = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "no tuning":
                model = _fresh(task, seed)
                keras.utils.set_random_seed(20_000 + seed)
                model.fit(x_tr, y_tr, batch_size=batch, epochs=epochs, verbose=0)
            elif method == "suggest()":
                rate = bench.curve(task, seed).suggest()
                if rate is None:
                    return 0.0, None
                return bench.metric(task, seed, rate, epochs), rate
            elif method == "tune_max_lr":
                model, saved = bench.model(task, seed)
                range_state.restore(saved)
                keras.utils.set_random_seed(20_000 + seed)
                history = keras_clr.fit_one_cycle(
                    model, x_tr, y_tr, batch_size=batch, epochs=epochs, max_lr="auto", verbose=0
                )
                rate = history.max_lr_search.max_lr
            else:
                model = _fresh(task, seed)
                keras.utils.set_random_seed(20_000 + seed)
                given = grid_best if method.endswith("grid's best") else "auto"
                spread = {"lr_mult": 10} if method.endswith("lr_mult=10") else {}
                stages = keras_clr.fine_tune(
                    model,
                    x_tr,
                    y_tr,
                    batch_size=batch,
                    freeze_epochs=1,
                    epochs=epochs - 1,
                    max_lr=given,
                    verbose=0,
                    **spread,
                )
                rate = grid_best if given != "auto" else _stage_rate(stages)
        metric = sq._score(model.predict(x_te, batch_size=512, verbose=0), y_te, kind)
        bench.saved_curves[name] = [metric, rate]
        bench.save()
    return tuple(bench.saved_curves[name])


def _stage_rate(stages):
    """The unfrozen stage's peak rate (the head's), where the result says."""
    second = stages[-1] if isinstance(stages, (tuple, list)) else getattr(stages, "unfrozen", None)
    search = getattr(second, "max_lr_search", None)
    return None if search is None else float(search.max_lr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    bench = sq.Bench(100, args.cache)
    start = time.perf_counter()
    rows = []
    for task in args.tasks:
        epochs, grid = sq.TASKS[task][4], sq.TASKS[task][5]
        means = np.mean(
            [[bench.metric(task, s, lr, epochs) for lr in grid] for s in args.seeds], axis=0
        )
        bench.save()
        best = float(means.max())
        row = {"task": task, "grid_best_lr": grid[int(np.argmax(means))], "best": best}
        for method in METHODS:
            runs = [method_metric(bench, task, s, method, row["grid_best_lr"]) for s in args.seeds]
            row[method] = (float(np.mean([r[0] for r in runs])) / best, [r[1] for r in runs])
        rows.append(row)
        print(f"{task}: " + "; ".join(f"{m} {row[m][0]:.2%}" for m in METHODS), flush=True)
    print("\n| task | grid best max_lr | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for row in rows:
        cells = []
        for method in METHODS:
            share, rates = row[method]
            shown = ", ".join("-" if r is None else f"{r:.3g}" for r in rates)
            cells.append(f"{share:.2%}" + (f" ({shown})" if method != "no tuning" else ""))
        print(f"| {row['task']} | {row['grid_best_lr']:.3g} | " + " | ".join(cells) + " |")
    for method in METHODS:
        shares = [row[method][0] for row in rows]
        print(f"{method}: mean {np.mean(shares):.2%}, worst {min(shares):.2%}")
    print(f"{time.perf_counter() - start:.0f} s; seeds {args.seeds}")


if __name__ == "__main__":
    main()
