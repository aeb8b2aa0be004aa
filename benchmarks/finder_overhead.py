"""Cost of `keras_clr.find_lr` against plain `fit` and a classic LR-finder callback.

Time. Three ways to run the same number of training steps on the same MLP
(784-256-256-10, SGD momentum 0.9, batch 128; synthetic data, a cached
`tf.data` pipeline of 20 batches that each way repeats), each on its own
identical model, in alternating rounds (the order rotates each round):

    plain   `model.fit` for `--steps` steps (one epoch)
    ours    `find_lr(model, data, num_steps=--steps, stop_factor=None,
            verbose=0)`: snapshot, the in-graph test, result, restore
    naive   a per-batch callback written here, as classic Keras LR finders do:
            `learning_rate.assign` in `on_train_batch_begin`, `float(logs
            ["loss"])` in `on_train_batch_end` (a host sync per step, and Keras
            turns its asynchronous batch-end dispatch off), the weights saved
            with `get_weights` and put back with `set_weights`

measured three ways:

    cold      fresh models, as compiled: Keras builds the optimizer inside the
              first trace of a plain `fit`, and TensorFlow then traces that
              first call twice; `find_lr` builds the optimizer before its
              trace, so it traces once
    cold, prebuilt
              fresh models whose optimizer is built before timing: each way
              traces its train function exactly once
    warm      models already traced by an earlier `fit`: plain and naive reuse
              the traced function, `find_lr` retraces its own (every call does)
    marginal  warm, (median time of `--long` steps - median time of
              `--steps` steps) / (`--long` - `--steps`): the per-step cost
              with the one-off costs (trace, snapshot, restore) cancelled out

Each round's times (wall clock, and process CPU time, which other jobs on
the same cores disturb much less) are divided by the same round's plain fit;
the tables give medians over `--repeats` rounds.

Memory, on a larger MLP (784-2048-1536-10, ~4.8M parameters, Adam), each
way in a fresh child process after two warm-up `fit`s (so that free heap
memory left by one run cannot serve, or hide, the next one's):

    - bytes of the host snapshot `find_lr` takes vs the bytes of the model's
      and the optimizer's variables (what must be restorable);
    - peak RSS during a `find_lr` above the RSS at its start (sampled from
      /proc/self/statm every millisecond), during a `find_lr` whose snapshot
      and restore are turned off (the cost of its own train function, traced
      anew), and during a plain `fit` of the same steps; their difference is
      the snapshot's share;
    - the RSS still held once each has returned;
    - peak of the Python-tracked heap (`tracemalloc`, which NumPy reports to).

Usage:
    .venv/bin/python benchmarks/finder_overhead.py             # ~2 min, 2 cores
    .venv/bin/python benchmarks/finder_overhead.py --quick     # smoke run
"""

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.data and TF train functions

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr.range_test import state as range_state  # noqa: E402

START_LR, END_LR = 1e-5, 1e-2  # low enough that the test never diverges
BATCH = 128
WAYS = ("plain", "ours", "naive")


# -- models and data -----------------------------------------------------------


def make_model(hidden=(256, 256), optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((784,))]
        + [keras.layers.Dense(units, activation="relu") for units in hidden]
        + [keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def make_data(batches=20):
    """A cached dataset of `batches` batches; every way repeats it the same way."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batches * BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=batches * BATCH).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().prefetch(2)


def state_bytes(model):
    """Bytes of every model and optimizer variable."""
    variables = {id(v): v for v in [*model.variables, *model.optimizer.variables]}
    return sum(v.numpy().nbytes for v in variables.values())


# -- the three ways ------------------------------------------------------------


class NaiveRangeTest(keras.callbacks.Callback):
    """The classic Keras LR finder: host-side learning rate and loss per batch."""

    def __init__(self, start_lr, end_lr, num_steps, smoothing=0.98):
        super().__init__()
        self.start_lr, self.end_lr, self.num_steps = start_lr, end_lr, num_steps
        self.smoothing = smoothing

    def on_train_begin(self, logs=None):
        self.step, self.average = 0, 0.0
        self.lrs, self.losses, self.smoothed = [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        pct = min(self.step, self.num_steps - 1) / (self.num_steps - 1)
        lr = self.start_lr * (self.end_lr / self.start_lr) ** pct
        self.model.optimizer.learning_rate.assign(lr)
        self.lrs.append(lr)

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self.step += 1
        self.average = self.smoothing * self.average + (1 - self.smoothing) * loss
        self.losses.append(loss)
        self.smoothed.append(self.average / (1 - self.smoothing**self.step))
        if self.step >= self.num_steps or not math.isfinite(loss):
            self.model.stop_training = True


def run_plain(model, data, steps):
    model.fit(data.repeat(), epochs=1, steps_per_epoch=steps, verbose=0)


def run_ours(model, data, steps):
    # find_lr repeats a tf.data.Dataset itself and runs one epoch of `steps`.
    result = keras_clr.find_lr(
        model, data, start_lr=START_LR, end_lr=END_LR, num_steps=steps, stop_factor=None, verbose=0
    )
    if result.stop_reason != "completed" or len(result.lrs) != steps:
        raise RuntimeError(f"the range test did not complete: {result!r}")


def run_naive(model, data, steps):
    weights = model.get_weights()
    lr = float(model.optimizer.learning_rate)
    test = NaiveRangeTest(START_LR, END_LR, steps)
    try:
        model.fit(data.repeat(), epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[test])
    finally:
        model.set_weights(weights)
        model.optimizer.learning_rate.assign(lr)
    if len(test.losses) != steps:
        raise RuntimeError(f"the naive test ran {len(test.losses)} steps, not {steps}")


RUN = {"plain": run_plain, "ours": run_ours, "naive": run_naive}


def timed(way, model, data, steps):
    """(wall seconds, process CPU seconds) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    RUN[way](model, data, steps)
    return time.perf_counter() - wall, time.process_time() - cpu


# -- time --------------------------------------------------------------------------


def rotated(ways, repeat):
    """The ways in turn, starting one further each round (no position bias)."""
    start = repeat % len(ways)
    return ways[start:] + ways[:start]


def fresh_model(prebuilt):
    model = make_model()
    if prebuilt:
        # Keras builds the optimizer inside the first trace, which makes
        # tf.function trace that first call twice; built here, each way
        # traces its train function exactly once.
        model.optimizer.build(model.trainable_variables)
    return model


def bench_time(args, out):
    data = make_data()
    # One throw-away cold round: the process's first trace is slower.
    for way in WAYS:
        timed(way, make_model(), data, args.steps)
    cold = {prebuilt: {w: [] for w in WAYS} for prebuilt in (False, True)}
    for repeat in range(args.repeats):
        for prebuilt in (False, True):
            models = {w: fresh_model(prebuilt) for w in WAYS}
            gc.collect()
            for way in rotated(WAYS, repeat):
                cold[prebuilt][way].append(timed(way, models[way], data, args.steps))
            del models
        out.write(
            f"  cold round {repeat + 1}/{args.repeats} (as compiled; prebuilt): "
            + ", ".join(
                f"{w} {cold[False][w][-1][0]:.3f}; {cold[True][w][-1][0]:.3f} s" for w in WAYS
            )
            + "\n"
        )
        out.flush()

    warm_models = {w: make_model() for w in WAYS}
    for model in warm_models.values():
        run_plain(model, data, args.steps)  # traces the plain train function
    warm = {w: [] for w in WAYS}
    long = {w: [] for w in WAYS}
    for repeat in range(args.repeats):
        gc.collect()
        for way in rotated(WAYS, repeat):
            warm[way].append(timed(way, warm_models[way], data, args.steps))
        for way in rotated(WAYS, repeat):
            long[way].append(timed(way, warm_models[way], data, args.long))
        out.write(
            f"  warm round {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{w} {warm[w][-1][0]:.3f}/{long[w][-1][0]:.3f} s" for w in WAYS)
            + "\n"
        )
        out.flush()
    # Differences of medians: a per-round difference of two noisy times can
    # come out near zero, and a ratio of such differences means nothing.
    extra = args.long - args.steps
    marginal = {
        w: [
            tuple(
                (
                    statistics.median(b[c] for b in long[w])
                    - statistics.median(a[c] for a in warm[w])
                )
                / extra
                for c in (0, 1)
            )
        ]
        for w in WAYS
    }
    return [
        (f"cold: fresh model as compiled, {args.steps} steps", cold[False], "s", 1),
        (
            f"cold: fresh model, optimizer prebuilt (one trace each), {args.steps} steps",
            cold[True],
            "s",
            1,
        ),
        (f"warm: traced model, {args.steps} steps", warm, "s", 1),
        (f"marginal per step, warm ({args.steps} to {args.long} steps)", marginal, "ms", 1e3),
    ]


def time_table(rows, args):
    lines = [
        "| measure | plain fit | find_lr (ours) | naive callback "
        "| ours / plain, wall (min-max) | naive / plain, wall (min-max) "
        "| ours / plain, CPU | naive / plain, CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, times, unit, scale in rows:
        cells = [f"{statistics.median(t[0] for t in times[w]) * scale:.3f} {unit}" for w in WAYS]
        for clock in (0, 1):
            for way in ("ours", "naive"):
                ratios = [t[clock] / b[clock] for t, b in zip(times[way], times["plain"])]
                cell = f"{statistics.median(ratios):.3f}"
                if clock == 0 and len(ratios) > 1:
                    cell += f" ({min(ratios):.3f}-{max(ratios):.3f})"
                cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- memory (child process) -------------------------------------------------------


class RssSampler:
    """Peak resident memory above its level at entry, sampled every ms."""

    def __init__(self):
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self):
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self._page

    def _sample(self):
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.start


def run_ours_without_snapshot(model, data, steps):
    """`find_lr` with its snapshot and restore turned off: what the range
    test's own train function costs, apart from the snapshot."""
    saved = range_state.snapshot, range_state.restore
    range_state.snapshot, range_state.restore = (lambda model: []), (lambda saved: None)
    try:
        run_ours(model, data, steps)
    finally:
        range_state.snapshot, range_state.restore = saved


MEMORY_WAYS = {"plain": run_plain, "ours": run_ours, "ours-nosnap": run_ours_without_snapshot}


def memory_child(steps, way):
    """One way's memory, in a fresh process (the heap's free memory left by
    an earlier run would otherwise serve, or hide, the next one's)."""
    import tracemalloc

    model = make_model((2048, 1536), keras.optimizers.Adam(1e-4))
    data = make_data()
    run_plain(model, data, steps)  # traces, builds the optimizer, sets the peak
    run_plain(model, data, steps)
    report = {"params": int(model.count_params()), "state_bytes": state_bytes(model)}
    gc.collect()
    with RssSampler() as sampler:
        MEMORY_WAYS[way](model, data, steps)
    gc.collect()
    report["rss_peak"] = sampler.growth
    report["rss_after"] = sampler._rss() - sampler.start
    tracemalloc.start()
    MEMORY_WAYS[way](model, data, steps)
    report["traced"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    saved = range_state.snapshot(model)
    report["snapshot_bytes"] = sum(value.nbytes for _, value in saved)
    return report


def bench_memory(args):
    reports = {}
    for way in MEMORY_WAYS:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--memory-child",
            way,
            "--steps",
            str(args.memory_steps),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"memory child failed:\n{done.stderr[-3000:]}")
        reports[way] = json.loads(done.stdout.strip().splitlines()[-1])
    return reports


def memory_table(reports):
    mib = 2**20
    first = reports["plain"]
    state = first["state_bytes"]
    ours, bare, plain = reports["ours"], reports["ours-nosnap"], reports["plain"]
    rows = [
        ("host snapshot taken by find_lr (sum of its arrays)", first["snapshot_bytes"]),
        ("find_lr: peak RSS above RSS at its start", ours["rss_peak"]),
        ("find_lr without its snapshot: peak RSS above start", bare["rss_peak"]),
        (
            "the snapshot's share of the peak (difference of the two)",
            ours["rss_peak"] - bare["rss_peak"],
        ),
        ("plain fit: peak RSS above RSS at its start", plain["rss_peak"]),
        ("find_lr: RSS still held after it returned", ours["rss_after"]),
        ("find_lr without its snapshot: RSS held after it returned", bare["rss_after"]),
        ("find_lr: peak traced Python heap (tracemalloc)", ours["traced"]),
        ("plain fit: peak traced Python heap (tracemalloc)", plain["traced"]),
    ]
    lines = [
        f"model: {first['params'] / 1e6:.2f}M parameters, Adam; weights + "
        f"optimizer variables = {state / mib:.1f} MiB; each way in a fresh "
        "process, after two warm-up fits; RSS sampled every ms",
        "",
        "| measure | MiB | / (weights + optimizer) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {value / mib:.1f} | {value / state:.3f} |" for label, value in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of each run")
    parser.add_argument(
        "--long", type=int, default=500, help="steps of the long runs (marginal per-step cost)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="alternating rounds")
    parser.add_argument(
        "--memory-steps", type=int, default=100, help="steps of the runs in the memory measurement"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20 and 100 steps, 3 rounds, 20 memory steps",
    )
    parser.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    parser.add_argument("--memory-child", choices=sorted(MEMORY_WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.steps, args.memory_child)))
        return
    if args.quick:
        args.steps, args.long, args.repeats, args.memory_steps = 20, 100, 3, 20
    if args.steps < 2 or args.long <= args.steps:
        parser.error("need 2 <= --steps < --long")
    if args.repeats < 1 or args.memory_steps < 2:
        parser.error("--repeats must be positive and --memory-steps at least 2")
    started = time.perf_counter()
    rows = None if args.memory_only else bench_time(args, sys.stderr)
    reports = bench_memory(args)
    print(
        f"keras {keras.__version__}, TensorFlow {tf.__version__}, "
        f"{os.cpu_count()} CPU cores, {time.perf_counter() - started:.0f} s\n"
    )
    if rows is not None:
        print(
            f"MLP 784-256-256-10, SGD momentum 0.9, batch {BATCH}, "
            f"{args.repeats} alternating rounds (medians)\n"
        )
        print(time_table(rows, args))
        print()
    print(memory_table(reports))


if __name__ == "__main__":
    main()
