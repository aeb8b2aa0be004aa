"""Keras Tuner's `Hyperband` over `max_lr` against keras_clr's `max_lr` race.

For each task of `benchmarks/suggestion_quality.py` and each seed (the seed
sets the initial weights), Keras Tuner's `Hyperband` searches `OneCycle`'s
`max_lr` (log-uniform in 1e-4..1, objective `val_loss`), and its best rate is
retrained; the race's results come from the cache `race_quality.py` writes
(`race/{rule}/{task}/{seed}/{epochs}`, the race's current rule). Both are
scored as the suite scores:

- the grid: `OneCycle(max_lr)` trained on all the training arrays for the
  task's epochs at each of 9 log-spaced rates (`Bench.metric`, cached);
- Hyperband's final model: its best rate trained exactly as a grid point is
  (`Bench.metric`: all the training arrays, the task's epochs,
  `OneCycle(max_lr=best)`, the seed's initial weights and data order; the rate
  is rounded to 4 significant digits as the grid's cache key is); "of grid
  best" is its test metric (seed-mean) / the grid's best seed-mean metric;
  "on 90%" trains that rate on the search's 90% only (the race's final model
  is trained on that 90%, so this column isolates the hold-out's cost);
- compute, in trainings: (epochs trained by all Hyperband trials, counted
  exactly by a callback, + the retraining's epochs) / the task's epochs.

The search sees what the race sees: the first 90% of the training arrays to
train on and the last 10% as `validation_data`.

Each trial builds the task's model after `keras.utils.set_random_seed(seed)`
(the seed's initial weights, as `Bench.model` builds them), compiles it with
the task's optimizer and loss, and trains with
`keras_clr.OneCycle(max_lr, total_steps=epochs x steps per epoch)`, where
`epochs` is the `epochs` Hyperband passes to `fit` for that trial
(`tuner/epochs`). A trial that continues an earlier round's trial
(`tuner/initial_epoch` = e > 0) is a fresh model into which Keras Tuner loads
the weights of that trial's checkpoint (its best `val_loss` epoch, not
necessarily its last); `model.load_weights` skips the optimizer's variables
(Keras warns "Skipping variable loading for optimizer"), so the optimizer
restarts: iteration counter 0, no momentum / Adam moments. It then fits
epochs e..epochs-1 with `initial_epoch=e`: `OneCycle` places a fit with
`initial_epoch=e` at step e x steps per epoch whatever the optimizer's
counter holds, so the continued trial runs the last (epochs - e) epochs of a
cycle sized by its `epochs` (the first round ran a whole shorter cycle:
Hyperband's continuation does not replay the schedule a trial of `epochs`
from scratch would have run). Keras Tuner deep-copies the callbacks passed
to `search` before each trial; the `OneCycle` and the epoch counter are
made inside `HyperModel.fit`, after the copy, and the counter writes to a
module-level list.

Budgets (`--budgets`):

- `race` (at the race's compute, every design task): Hyperband with factor 3
  and one iteration, and `max_epochs`, its documented budget argument, set to
  the largest value whose whole iteration (every bracket, every round, as
  planned by Hyperband's schedule) plus the retraining fits in 3 trainings.
  This keeps the algorithm whole; its cost is that trials are shorter than the
  training (max_epochs 3 for both 8- and 10-epoch tasks: 11 epochs of search).
- `capped` (also at about the race's compute): `max_epochs` = the task's
  epochs, and the search stopped (an `HyperbandOracle` subclass returns
  "STOPPED") before a trial would take the search past 2 trainings of
  epochs: the trials that run are the first bracket's first round, whole
  cycles at random rates (10 trials of 2 epochs on the 10-epoch tasks, 5 of
  3 epochs on the 8-epoch ones; the next trial, a promotion, would pass the
  budget): a random search of short trials.
- `default` (Hyperband's own budget; `--default-tasks`): `max_epochs` = the
  task's epochs, factor 3, one iteration: 30 trials and 120 epochs of search
  on the 10-epoch tasks (13 trainings with the retraining), 10 trials and 49
  epochs on the 8-epoch ones (7.1 trainings).

`max_consecutive_failed_trials` is raised from its default 3: a trial whose
`val_loss` is NaN at every epoch (a diverging rate) is marked failed by Keras
Tuner, and three in a row would abort the search with a RuntimeError; here a
diverged trial is a result (it is never promoted, and its epochs count).
Keras Tuner promotes from a round only while more of its trials completed
than the next round drops, so a failed trial can cancel a promotion: that
search then trains fewer epochs than planned (the compute column counts what
ran).

Hyperband draws its rates from its own `seed` alone (not from the task);
each (task, seed) gets its own (`oracle_seed`), so that the tasks do not all
share the same few draws.

By default the design tasks run (the suite's TASKS minus HELD_OUT).

Usage (the cache: a copy of race_quality.py's, which holds the grid and
the races; without one the grid's 9 x 2 trainings per task are run first):
    nice .venv/bin/python benchmarks/race_hyperband.py --cache /tmp/hb_cache.json
    nice .venv/bin/python benchmarks/race_hyperband.py --quick --cache /tmp/hb_cache.json
    nice .venv/bin/python benchmarks/race_hyperband.py --budgets race default \\
        --default-tasks digits_mlp friedman_mlp --cache /tmp/hb_cache.json
"""

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import race_quality  # noqa: E402
import suggestion_quality as sq  # noqa: E402

# isort: split

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr.range_test import state as range_state  # noqa: E402

RACE_RULE = race_quality.RULE  # the race's cache version
FACTOR = 3
TRAININGS = 3  # the race's compute: search + retraining, in trainings
DEFAULT_TASKS = ("digits_mlp", "friedman_mlp", "mnist1d_gru", "digits_cnn_adam")
VERSION = 2  # of this benchmark's cached searches

# Epochs each trial trained, appended by `_EpochCount` (Keras Tuner copies
# the callbacks passed to `search`; this list is shared by every trial).
TRIAL_EPOCHS = []


# -- Hyperband's plan ----------------------------------------------------------


def planned_epochs(max_epochs, factor=FACTOR):
    """Epochs one Hyperband iteration trains, by Keras Tuner's schedule
    (`HyperbandOracle._get_size`, `_get_epochs`, `_get_num_brackets`,
    min_epochs 1), each continued trial training epochs initial..epochs."""
    brackets, epochs = 0, max_epochs
    while epochs >= 1:
        epochs, brackets = epochs / factor, brackets + 1
    end = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for b in range(brackets):
        for r in range(b + 1):
            size = math.ceil(end / (b + 1) * factor ** (b - r))
            now = math.ceil(max_epochs / factor ** (b - r))
            before = math.ceil(max_epochs / factor ** (b - r + 1)) if r else 0
            total += size * (now - before)
    return total


def race_max_epochs(epochs):
    """The largest max_epochs whose iteration + the retraining fit in
    TRAININGS trainings of `epochs`."""
    best = 1
    for m in range(2, epochs + 1):
        if planned_epochs(m) + epochs <= TRAININGS * epochs:
            best = m
    return best


# -- the search ------------------------------------------------------------------


def oracle_seed(task, seed):
    """Hyperband's seed for (task, seed): its rates are drawn from the seed
    alone, so one seed for every task would give every task the same draws."""
    return zlib.crc32(f"{task}/{seed}".encode()) % 2**31


class _EpochCount(keras.callbacks.Callback):
    def __init__(self, record):
        super().__init__()
        self.record = record

    def on_epoch_end(self, epoch, logs=None):
        self.record["epochs"] += 1
        self.record["val_loss"].append(float((logs or {}).get("val_loss", math.nan)))


class OneCycleHyperModel(kt.HyperModel):
    """The task's model from the seed's initial weights; `max_lr` searched,
    trained with a `OneCycle` sized by the trial's `epochs`."""

    def __init__(self, task, seed, steps_per_epoch):
        super().__init__()
        self.task, self.seed, self.steps_per_epoch = task, seed, steps_per_epoch

    def build(self, hp):
        hp.Float("max_lr", 1e-4, 1.0, sampling="log")
        _, build, optimizer, _, _, _, metric = sq.TASKS[self.task]
        keras.utils.set_random_seed(self.seed)  # the seed's initial weights
        model = build()
        loss = (
            "mse"
            if metric == "r2"
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        model.compile(optimizer=optimizer(), loss=loss)
        return model

    def fit(self, hp, model, *args, **kwargs):
        epochs, initial = kwargs["epochs"], kwargs.get("initial_epoch", 0)
        record = {
            "max_lr": hp.get("max_lr"),
            "initial_epoch": initial,
            "epochs_arg": epochs,
            "epochs": 0,
            "val_loss": [],
        }
        TRIAL_EPOCHS.append(record)
        cycle = keras_clr.OneCycle(hp.get("max_lr"), total_steps=epochs * self.steps_per_epoch)
        kwargs["callbacks"] = [cycle, _EpochCount(record)] + list(kwargs.get("callbacks", []))
        keras.utils.set_random_seed(50_000 + self.seed)  # the trials' data order
        return model.fit(*args, **kwargs)


class _CappedOracle(kt.oracles.HyperbandOracle):
    """Hyperband's oracle, stopped before a trial would take the search's
    epochs (counted in TRIAL_EPOCHS) past `budget`."""

    def __init__(self, budget, **kwargs):
        super().__init__(**kwargs)
        self.budget = budget

    def populate_space(self, trial_id):
        result = super().populate_space(trial_id)
        if result["status"] == "RUNNING":
            values = result["values"]
            more = values["tuner/epochs"] - values["tuner/initial_epoch"]
            if sum(r["epochs"] for r in TRIAL_EPOCHS) + more > self.budget:
                return {"status": "STOPPED"}
        return result


class _CappedHyperband(kt.Hyperband):
    """`Hyperband` (its trials and checkpoint reloads) on a `_CappedOracle`."""

    def __init__(self, hypermodel, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)


def search(bench, task, seed, epochs, budget):
    """Hyperband's search of (task, seed) at `budget`, cached: its best
    rate, the epochs its trials trained, its trials."""
    name = f"hyperband/{VERSION}/{budget}/{task}/{seed}/{epochs}"
    if name not in bench.saved_curves:
        _, _, _, batch, _, _, _ = sq.TASKS[task]
        x_tr, y_tr, _, _ = bench._data(task)
        split = int(len(x_tr) * 0.9)  # as the race's automatic hold-out
        hypermodel = OneCycleHyperModel(task, seed, math.ceil(split / batch))
        max_epochs = race_max_epochs(epochs) if budget == "race" else epochs
        options = dict(
            objective="val_loss",
            max_epochs=max_epochs,
            factor=FACTOR,
            hyperband_iterations=1,
            seed=oracle_seed(task, seed),
            max_consecutive_failed_trials=10**6,
        )
        directory = tempfile.mkdtemp(prefix="hb_")
        TRIAL_EPOCHS.clear()
        start = time.perf_counter()
        try:
            if budget == "capped":
                oracle = _CappedOracle((TRAININGS - 1) * epochs, **options)
                tuner = _CappedHyperband(
                    hypermodel, oracle, directory=directory, project_name="search", overwrite=True
                )
            else:
                tuner = kt.Hyperband(
                    hypermodel,
                    directory=directory,
                    project_name="search",
                    overwrite=True,
                    **options,
                )
            with warnings.catch_warnings():
                # Keras Tuner's reload of a checkpoint into a fresh model (see above)
                warnings.filterwarnings("ignore", message="Skipping variable loading")
                tuner.search(
                    x_tr[:split],
                    y_tr[:split],
                    batch_size=batch,
                    validation_data=(x_tr[split:], y_tr[split:]),
                    verbose=0,
                )
            best = float(tuner.get_best_hyperparameters(1)[0].get("max_lr"))
            failed = sum(t.status == "FAILED" for t in tuner.oracle.trials.values())
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        trained = sum(r["epochs"] for r in TRIAL_EPOCHS)
        bench.saved_curves[name] = {
            "max_lr": best,
            "max_epochs": max_epochs,
            "epochs": trained,
            "planned": planned_epochs(max_epochs) if budget != "capped" else None,
            "trials": [
                [
                    r["max_lr"],
                    r["initial_epoch"],
                    r["epochs_arg"],
                    r["epochs"],
                    min(r["val_loss"], default=math.nan),
                ]
                for r in TRIAL_EPOCHS
            ],
            "failed": failed,
            "seconds": time.perf_counter() - start,
        }
        bench.save()
    return bench.saved_curves[name]


def on_90(bench, task, seed, epochs, lr):
    """Test metric of OneCycle(lr) trained as a grid point, on the search's
    90% of the training arrays only."""
    lr = float(f"{lr:.4g}")
    name = f"hyperband90/{task}/{seed}/{epochs}/{lr}"
    if name not in bench.saved_curves:
        _, _, _, batch, _, _, kind = sq.TASKS[task]
        model, saved = bench.model(task, seed)
        range_state.restore(saved)
        x_tr, y_tr, x_te, y_te = bench._data(task)
        split = int(len(x_tr) * 0.9)
        keras.utils.set_random_seed(20_000 + seed)
        model.fit(
            x_tr[:split],
            y_tr[:split],
            batch_size=batch,
            epochs=epochs,
            verbose=0,
            callbacks=[keras_clr.OneCycle(lr)],
        )
        bench.saved_curves[name] = sq._score(
            model.predict(x_te, batch_size=512, verbose=0), y_te, kind
        )
        bench.save()
    return bench.saved_curves[name]


# -- the table -------------------------------------------------------------------


def run_task(bench, task, seeds, epochs, budgets, with_90, out):
    grid = sq.TASKS[task][5]
    means = np.mean([[bench.metric(task, s, lr, epochs) for lr in grid] for s in seeds], axis=0)
    best = float(means.max())
    races = [bench.saved_curves.get(f"race/{RACE_RULE}/{task}/{s}/{epochs}") for s in seeds]
    row = {
        "task": task,
        "grid_best_lr": grid[int(np.argmax(means))],
        "grid_best": best,
        "race": None,
        "hyperband": {},
    }
    if all(races):
        row["race"] = {
            "winners": [r[1] for r in races],
            "of_best": float(np.mean([r[0] for r in races])) / best,
            "compute": float(np.mean([r[2] for r in races])),
            # its winners trained as the grid trains (race_quality's
            # "winners on all the data"): the choice alone
            "on_all": float(
                np.mean([bench.metric(task, s, r[1], epochs) for s, r in zip(seeds, races)])
            )
            / best,
        }
    for budget in budgets:
        found = [search(bench, task, s, epochs, budget) for s in seeds]
        metric = float(
            np.mean([bench.metric(task, s, f["max_lr"], epochs) for s, f in zip(seeds, found)])
        )
        bench.save()
        cell = {
            "rates": [f["max_lr"] for f in found],
            "of_best": metric / best,
            "compute": float(np.mean([(f["epochs"] + epochs) / epochs for f in found])),
            "trials": float(np.mean([len(f["trials"]) for f in found])),
            "failed": sum(f["failed"] for f in found),
            "max_epochs": found[0]["max_epochs"],
            "seconds": float(np.mean([f["seconds"] for f in found])),
            "on_90": None,
        }
        if with_90:
            cell["on_90"] = (
                float(
                    np.mean(
                        [on_90(bench, task, s, epochs, f["max_lr"]) for s, f in zip(seeds, found)]
                    )
                )
                / best
            )
        row["hyperband"][budget] = cell
        out.write(
            f"{task} [{budget}, max_epochs {cell['max_epochs']}]: rates "
            + " ".join(f"{r:.3g}" for r in cell["rates"])
            + f", {cell['of_best']:.2%} of grid best {best:.4f} (max_lr "
            f"{row['grid_best_lr']:.3g}), compute {cell['compute']:.2f} trainings, "
            f"{cell['trials']:.0f} trials ({cell['failed']} failed), "
            f"{cell['seconds']:.0f} s per search"
            + (
                f"; race {row['race']['of_best']:.2%}, {row['race']['compute']:.2f}"
                if row["race"]
                else ""
            )
            + "\n"
        )
        out.flush()
    return row


def _table(rows, budget, out):
    rows = [r for r in rows if budget in r["hyperband"]]
    if not rows:
        return
    with_90 = rows[0]["hyperband"][budget]["on_90"] is not None
    out.write(
        f"\nHyperband ({budget}) against the race\n\n"
        "| task | grid best max_lr | Hyperband's rates | Hyperband of grid best "
        + ("| Hyperband's rate on 90% " if with_90 else "")
        + "| Hyperband compute | race's winners | race of grid best "
        "| race's winners on all the data | race compute |\n" + "|---" * (9 + with_90) + "|\n"
    )
    for r in rows:
        h, race = r["hyperband"][budget], r["race"]
        out.write(
            f"| {r['task']} | {r['grid_best_lr']:.3g} | "
            + ", ".join(f"{x:.3g}" for x in h["rates"])
            + f" | {h['of_best']:.2%} | "
            + (f"{h['on_90']:.2%} | " if with_90 else "")
            + f"{h['compute']:.2f} | "
            + (
                ", ".join(f"{x:.3g}" for x in race["winners"])
                + f" | {race['of_best']:.2%} | {race['on_all']:.2%} | "
                f"{race['compute']:.2f} |\n"
                if race
                else "- | - | - | - |\n"
            )
        )
    shares = [r["hyperband"][budget]["of_best"] for r in rows]
    computes = [r["hyperband"][budget]["compute"] for r in rows]
    raced = [r["race"] for r in rows if r["race"]]
    for label, pick in (("mean", np.mean), ("worst", None)):
        hb = np.mean(shares) if pick else min(shares)
        hc = np.mean(computes) if pick else max(computes)
        cells = [f"{hb:.2%}"]
        if with_90:
            o = [r["hyperband"][budget]["on_90"] for r in rows]
            cells.append(f"{(np.mean(o) if pick else min(o)):.2%}")
        cells.append(f"{hc:.2f}")
        if raced:
            rs = [x["of_best"] for x in raced]
            ra = [x["on_all"] for x in raced]
            rc = [x["compute"] for x in raced]
            cells += [
                "",
                f"{(np.mean(rs) if pick else min(rs)):.2%}",
                f"{(np.mean(ra) if pick else min(ra)):.2%}",
                f"{(np.mean(rc) if pick else max(rc)):.2f}",
            ]
        else:
            cells += ["", "-", "-", "-"]
        out.write(f"| **{label}** | | | " + " | ".join(cells) + " |\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(sq.TASKS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--budgets",
        nargs="+",
        choices=("race", "capped", "default"),
        default=["race", "capped", "default"],
    )
    parser.add_argument(
        "--default-tasks",
        nargs="+",
        choices=sorted(sq.TASKS),
        default=list(DEFAULT_TASKS),
        help="the tasks the `default` budget runs on",
    )
    parser.add_argument(
        "--no-90",
        action="store_true",
        help="skip training Hyperband's rates on the search's 90%% only",
    )
    parser.add_argument(
        "--quick", action="store_true", help="digits_mlp, seed 0, the `race` budget: a smoke run"
    )
    parser.add_argument(
        "--cache",
        default=None,
        help="JSON file with the grid's metrics and the races "
        "(race_quality.py's cache); searches are added to it",
    )
    args = parser.parse_args(argv)
    tasks = args.tasks or (
        ["digits_mlp"] if args.quick else [t for t in sq.TASKS if t not in sq.HELD_OUT]
    )
    seeds = [0] if args.quick and args.seeds == [0, 1] else args.seeds
    budgets = ["race"] if args.quick else args.budgets
    bench = sq.Bench(100, args.cache)
    out = sys.stdout
    out.write(
        f"Hyperband over OneCycle's max_lr against the max_lr race; tasks {tasks}, "
        f"seeds {seeds}, budgets {budgets}\n"
    )
    start = time.perf_counter()
    rows = []
    for task in tasks:
        chosen = [b for b in budgets if b != "default" or task in args.default_tasks]
        if chosen:
            rows.append(
                run_task(bench, task, seeds, sq.TASKS[task][4], chosen, not args.no_90, out)
            )
    for budget in budgets:
        _table(rows, budget, out)
    out.write(f"\n{time.perf_counter() - start:.0f} s\n")
    return rows


if __name__ == "__main__":
    main()
