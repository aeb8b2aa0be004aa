"""Traces and whole-call time of keras_clr fits on fresh and traced models.

Each keras_clr schedule `fit` wraps the model's train step. The wrapped step
reads its inputs (the tables of learning rates and momenta, the step offset)
from variables, so it is traced once per model and optimizer and serves every
later schedule `fit`; `find_lr` traces its own step on each call. This counts
the traces (Python calls of the model's `train_step`, which TensorFlow makes
only while tracing) and times whole calls, as ratios against plain `fit` in
the same round:

    (a) fresh model     find_lr (--steps) then fit(OneCycle) of --fit-steps,
                        against a plain fit of --steps + --fit-steps steps
    (b) traced model    on a model that has run a plain fit and a keras_clr
                        fit: a --steps fit(OneCycle), a --steps find_lr and a
                        --steps fit(CyclicLR), each against a plain --steps fit

Each round times every call once beside its baseline (which of the two goes
first alternates between rounds); the table gives medians over --repeats
rounds of each round's ratio, for wall and process CPU time, and the middle
half of the wall ratios. Nothing here asserts a time.

Usage:
    .venv/bin/python benchmarks/trace_reuse.py             # about 2.5 minutes, 2 cores
    .venv/bin/python benchmarks/trace_reuse.py --quick
"""

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402

BATCH = 32


class CountingMLP(keras.Sequential):
    """An MLP that counts the traces of its train step."""

    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = CountingMLP(
        [
            keras.Input((64,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data(steps):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, 64)).astype("float32")
    y = rng.integers(0, 10, size=steps * BATCH)
    return x, y


def timed(call):
    """(wall seconds, traces, CPU seconds) of one call."""
    gc.collect()
    before = CountingMLP.traces
    start, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - start, CountingMLP.traces - before, time.process_time() - cpu)


def plain_fit(model, x, y):
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def schedule_fit(model, x, y, callback):
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[callback])


def fresh_round(steps, fit_steps):
    x, y = data(steps + fit_steps)
    xf, yf = data(fit_steps)
    plain = timed(lambda: plain_fit(make_model(), x, y))
    model = make_model()

    def ours():
        keras_clr.find_lr(model, x, y, batch_size=BATCH, num_steps=steps, verbose=0)
        schedule_fit(model, xf, yf, keras_clr.OneCycle(1e-2))  # the rate is not timed

    clr = timed(ours)
    return {"(a) find_lr + fit(OneCycle)": (clr[0] / plain[0], clr[1], plain[1], clr[2] / plain[2])}


def traced_round(model, steps, swap):
    x, y = data(steps)
    variants = {
        "(b) fit(OneCycle)": lambda: schedule_fit(model, x, y, keras_clr.OneCycle(0.05)),
        "(b) find_lr": lambda: keras_clr.find_lr(
            model, x, y, batch_size=BATCH, num_steps=steps, verbose=0
        ),
        "(b) fit(CyclicLR)": lambda: schedule_fit(
            model, x, y, keras_clr.CyclicLR(1e-3, 0.05, step_size_up=steps // 4)
        ),
    }
    out = {}
    for name, call in variants.items():
        if swap:  # which call goes first alternates between rounds
            ours = timed(call)
            plain = timed(lambda: plain_fit(model, x, y))
        else:
            plain = timed(lambda: plain_fit(model, x, y))
            ours = timed(call)
        out[name] = (ours[0] / plain[0], ours[1], plain[1], ours[2] / plain[2])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps of the timed calls")
    parser.add_argument(
        "--fit-steps", type=int, default=300, help="steps of the fit after find_lr in (a)"
    )
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds")
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.fit_steps, args.repeats = 20, 40, 2

    traced = make_model(1)
    x, y = data(args.steps)
    plain_fit(traced, x, y)
    schedule_fit(traced, x, y, keras_clr.OneCycle(0.05))
    rows = {}
    for round_ in range(args.repeats):
        for name, value in {
            **fresh_round(args.steps, args.fit_steps),
            **traced_round(traced, args.steps, round_ % 2),
        }.items():
            rows.setdefault(name, []).append(value)
    print(
        "| call | wall / plain fit | middle half of rounds | CPU / plain fit "
        "| traces | plain fit's traces |\n|---|---:|---:|---:|---:|---:|"
    )
    for name, values in rows.items():
        ratios = sorted(v[0] for v in values)
        quarter = len(ratios) // 4
        traces = statistics.median(v[1] for v in values)
        plain = statistics.median(v[2] for v in values)
        cpu = statistics.median(v[3] for v in values)
        spread = f"{ratios[quarter]:.2f}-{ratios[-1 - quarter]:.2f}"
        print(
            f"| {name} | {statistics.median(ratios):.3f} | {spread} | {cpu:.3f} "
            f"| {traces:g} | {plain:g} |"
        )
    print(
        f"({args.repeats} rounds; --steps {args.steps}, --fit-steps {args.fit_steps}, "
        f"batch {BATCH}; traces count Python calls of train_step, two per "
        "trace that creates variables)"
    )


if __name__ == "__main__":
    main()
