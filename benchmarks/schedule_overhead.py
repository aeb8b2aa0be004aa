"""Per-step cost of `OneCycle` and `CyclicLR` against a constant learning rate.

For a small MLP and a small CNN on synthetic data, every variant trains an
identical model (SGD, momentum 0.9) with `model.fit`:

    constant     no schedule: the baseline
    onecycle     keras_clr.OneCycle, learning rate and momentum cycled in-graph
    onecycle-own OneCycle with constant tables in a trace of each fit's own
                 (as before the tables moved into variables shared per
                 model): separates the cost of reading the variables
    onecycle-lr  keras_clr.OneCycle(cycle_momentum=False): the learning rate
                 only, which separates the cost of the momentum cycle
    onecycle-arith  OneCycle with its schedules evaluated in the graph instead
                 of looked up in a table, as for fits over tables.TABLE_LIMIT
                 steps
    cycliclr     keras_clr.CyclicLR, learning rate and momentum cycled in-graph
    naive        a per-batch callback that assigns the learning rate from
                 Python in `on_train_batch_begin` (what pre-Keras-3 CLR
                 callbacks did); it leaves the momentum alone
    constant-again  the baseline again on its own model: an A/A control whose
                 distance from 1.000 is the noise floor of the run

Each timed `fit` runs `1 + --epochs` epochs of `--steps` steps on a cached,
repeated `tf.data` pipeline (one iterator for the whole fit). A callback with
epoch-level hooks only timestamps `on_epoch_begin` / `on_epoch_end` (wall
clock and process CPU time): it adds no per-step host work and leaves Keras's
asynchronous batch-end dispatch on. The first epoch carries the one-off costs
(the retrace `OneCycle` and `CyclicLR` do at the start of every `fit`) and is
reported separately; the steady per-step time is the median of the other
epochs over `--steps`. Variants alternate (a, b, c, ..., a, b, c, ...) for
`--repeats` rounds, and each round's time is divided by (and subtracted from)
the same round's baseline; the table gives medians over rounds. The CPU-time
ratio counts the cycles this process spent, so it is less disturbed than wall
time when other jobs share the cores. Nothing here asserts a time.

`--loop` measures the steady per-step cost alone, more finely: each
variant's callbacks are set up as `fit` sets them up, then blocks of
`--block` calls of the compiled train function alternate between the
variants (reversing the order every other round) for `--loop-rounds`
rounds, on `--instances` identical models per variant. Interleaving every few
milliseconds makes the ratios far less sensitive to other jobs than whole
`fit` calls; it leaves out `fit`'s own per-step Python (callback dispatch),
which is the same for every variant.

Usage:
    .venv/bin/python benchmarks/schedule_overhead.py            # ~2.5 min, 2 cores
    .venv/bin/python benchmarks/schedule_overhead.py --quick    # smoke run
    .venv/bin/python benchmarks/schedule_overhead.py --steps 50 --repeats 30
    .venv/bin/python benchmarks/schedule_overhead.py --variants constant,onecycle
    .venv/bin/python benchmarks/schedule_overhead.py --loop        # ~1 min
    .venv/bin/python benchmarks/schedule_overhead.py --loop --multi  # two groups

`--multi` compiles every model with a Keras 3.15 `MultiOptimizer` of two SGD
groups (momentum 0.9): the output layer at the base rate, the layers below
at a tenth of it; the schedules then set both groups' rates and momenta.
"""

import argparse
import gc
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.data and TF train functions

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr import fit_steps  # noqa: E402
from keras_clr import tables  # noqa: E402
from keras_clr import train_step  # noqa: E402

MAX_LR = 0.05
BASE_LR = 0.005
VARIANTS = (
    "constant",
    "onecycle",
    "onecycle-own",
    "onecycle-lr",
    "onecycle-arith",
    "cycliclr",
    "naive",
    "constant-again",
)
# Loop mode sets the callbacks up for a fit of this many epochs and steps
# (more than the loop runs), as fit would for a real training run.
LOOP_EPOCHS, LOOP_STEPS = 50, 1000


# -- models and data -----------------------------------------------------------


def build_mlp():
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(10, name="head"),
        ]
    )


def build_cnn():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="head"),
        ]
    )


MODELS = {
    # name: (builder, input shape, batch size)
    "MLP 784-256-256-10": (build_mlp, (784,), 128),
    "CNN conv16-conv32 on 32x32x3": (build_cnn, (32, 32, 3), 64),
}


# Set from --jit: compile the train step with XLA (Keras's "auto" resolves
# to no XLA on TensorFlow).
JIT_COMPILE = False
# Set from --multi: a MultiOptimizer of two groups (see the module docstring).
MULTI = False


def make_optimizer():
    if not MULTI:
        return keras.optimizers.SGD(BASE_LR, momentum=0.9)
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(BASE_LR / 10, momentum=0.9),
            {".*head.*": keras.optimizers.SGD(BASE_LR, momentum=0.9)},
        )
    )


def make_model(builder):
    keras.utils.set_random_seed(0)
    model = builder()
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=JIT_COMPILE,
    )
    return model


def make_dataset(shape, batch_size, batches=16):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batches * batch_size, *shape), dtype=np.float32)
    y = rng.integers(0, 10, size=batches * batch_size).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    return dataset.cache().repeat().prefetch(2)


# -- callbacks ---------------------------------------------------------------------


class EpochTimer(keras.callbacks.Callback):
    """Epoch wall and process CPU times; epoch-level hooks only, so no
    per-step host sync."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


class NaiveOneCycle(keras.callbacks.Callback):
    """The classic host-side schedule: one eager `assign` per batch.

    Computes the one-cycle learning rate in Python and assigns it before
    every batch; the momentum is not touched (a float baked into the traced
    step cannot be changed from a callback).
    """

    def __init__(self, max_lr, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        super().__init__()
        self.max_lr, self.total_steps, self.pct_start = max_lr, total_steps, pct_start
        self.initial = max_lr / div_factor
        self.final = self.initial / final_div_factor
        self.step = 0

    def _lr(self, step):
        up = self.pct_start * self.total_steps - 1
        step = min(step, self.total_steps - 1)
        if step <= up:
            start, end, pct = self.initial, self.max_lr, step / up
        else:
            start, end = self.max_lr, self.final
            pct = (step - up) / (self.total_steps - 1 - up)
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        rate = self._lr(self.step)
        if MULTI:  # the head at the schedule's rate, the rest at a tenth
            for sub in optimizer.optimizers:
                scale = 1.0 if any("head" in v.path for v in sub.variables) else 0.1
                sub.learning_rate.assign(rate * scale)
        else:
            optimizer.learning_rate.assign(rate)
        self.step += 1


class ArithmeticOneCycle(keras_clr.OneCycle):
    """`OneCycle` as it runs when a fit has more than `tables.TABLE_LIMIT`
    steps: its schedules evaluated in the graph, not looked up."""

    def on_train_batch_begin(self, batch, logs=None):
        limit, tables.TABLE_LIMIT = tables.TABLE_LIMIT, 0
        try:
            super().on_train_batch_begin(batch, logs)
        finally:
            tables.TABLE_LIMIT = limit


class _OwnTraceValues(fit_steps.FitValues):
    """The fit's values as constant tables in a trace of the fit's own."""

    def tabulate(self, first, count, updates_at_zero):
        own = [
            None if schedule is None else tables.Tabulated(schedule, first, count)
            for schedule in self.schedules
        ]
        self.tables = own
        self.control = train_step.StepControl(self.model, *own, groups=self.groups)
        self.control.count_offset = updates_at_zero
        self.control.install()


class OwnTraceOneCycle(keras_clr.OneCycle):
    """`OneCycle` with constant tables in a trace of each fit's own, as every
    fit ran before the tables moved into variables shared per model."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        values = self._fit.values
        self._fit.values = _OwnTraceValues(
            values.model, values.schedules, values.groups, values.log_values
        )


def variant_callbacks(variant, total_steps, steps):
    if variant in ("constant", "constant-again"):
        return []
    if variant == "onecycle":
        return [keras_clr.OneCycle(MAX_LR, total_steps=total_steps)]
    if variant == "onecycle-own":
        return [OwnTraceOneCycle(MAX_LR, total_steps=total_steps)]
    if variant == "onecycle-lr":
        return [keras_clr.OneCycle(MAX_LR, total_steps=total_steps, cycle_momentum=False)]
    if variant == "onecycle-arith":
        return [ArithmeticOneCycle(MAX_LR, total_steps=total_steps)]
    if variant == "cycliclr":
        return [keras_clr.CyclicLR(BASE_LR, MAX_LR, step_size_up=max(1, steps // 2))]
    if variant == "naive":
        return [NaiveOneCycle(MAX_LR, total_steps)]
    raise ValueError(f"unknown variant {variant!r}")


# -- measurement ---------------------------------------------------------------------


def timed_fit(model, dataset, variant, steps, epochs):
    """Per-step seconds of one fit: (first epoch wall, steady wall, steady CPU)."""
    gc.collect()  # garbage from earlier fits (retraced functions) is not ours
    timer = EpochTimer()
    total = (epochs + 1) * steps
    model.fit(
        dataset,
        epochs=epochs + 1,
        steps_per_epoch=steps,
        verbose=0,
        shuffle=False,
        callbacks=[*variant_callbacks(variant, total, steps), timer],
    )
    return (
        timer.wall[0] / steps,
        statistics.median(timer.wall[1:]) / steps,
        statistics.median(timer.cpu[1:]) / steps,
    )


def bench_model(name, builder, shape, batch_size, args, out):
    dataset = make_dataset(shape, batch_size)
    variants = args.variants
    models = {}
    for variant in variants:
        models[variant] = make_model(builder)
        # Warm-up: traces the plain train step and warms the pipeline.
        models[variant].fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    times = {v: [] for v in variants}  # (first, wall, cpu) per round
    for repeat in range(args.repeats):
        for variant in variants:
            times[variant].append(
                timed_fit(models[variant], dataset, variant, args.steps, args.epochs)
            )
        done = ", ".join(f"{v} {times[v][-1][1] * 1e3:.2f}" for v in variants)
        out.write(f"  [{name}] round {repeat + 1}/{args.repeats}: wall ms/step {done}\n")
        out.flush()
    base = times["constant"]
    rows = []
    for variant in variants:
        ours = times[variant]
        wall = [t[1] / b[1] for t, b in zip(ours, base)]
        cpu = [t[2] / b[2] for t, b in zip(ours, base)]
        # One-off cost: the first epoch's excess over the steady epochs,
        # beyond the baseline's own first-epoch excess (iterator start-up).
        once = [((t[0] - t[1]) - (b[0] - b[1])) * args.steps for t, b in zip(ours, base)]
        rows.append(
            dict(
                model=name,
                variant=variant,
                ms=statistics.median(t[1] for t in ours) * 1e3,
                wall=statistics.median(wall),
                low=min(wall),
                high=max(wall),
                us=statistics.median((t[1] - b[1]) * 1e6 for t, b in zip(ours, base)),
                cpu=statistics.median(cpu),
                once=statistics.median(once) * 1e3,
            )
        )
    return rows


def markdown(rows, args):
    lines = [
        f"steps/epoch={args.steps}, timed epochs/fit={args.epochs} (+1 discarded), "
        f"rounds={args.repeats}; medians over rounds of per-round ratios",
        "",
        "| model | variant | ms/step (wall) | ratio vs constant, wall (min-max) "
        "| extra us/step, wall | ratio vs constant, CPU time "
        "| one-off cost, first epoch (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = r["variant"] == "constant"
        once = "-" if base else f"{r['once']:+.0f}"
        extra = "-" if base else f"{r['us']:+.0f}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['ms']:.2f} | "
            f"{r['wall']:.3f} ({r['low']:.3f}-{r['high']:.3f}) | {extra} "
            f"| {r['cpu']:.3f} | {once} |"
        )
    return "\n".join(lines)


# -- loop mode: the compiled train step alone, finely interleaved ------------------


def loop_runner(builder, dataset, variant, steps):
    """A function running `steps` train steps of `variant`; returns seconds.

    The callbacks are driven as `fit` drives them (set_model, set_params,
    on_train_begin, on_epoch_begin, the first on_train_batch_begin; the naive
    one gets on_train_batch_begin before each step) and the train function is called
    directly, so the blocks of different variants can alternate every few
    milliseconds.
    """
    model = make_model(builder)
    model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    callbacks = variant_callbacks(variant, LOOP_EPOCHS * LOOP_STEPS, LOOP_STEPS // 2)
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": LOOP_EPOCHS, "steps": LOOP_STEPS, "verbose": 0})
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        callback.on_train_batch_begin(0)  # the schedules install here
    per_batch = [c for c in callbacks if isinstance(c, NaiveOneCycle)]
    iterator = iter(dataset)

    def run():
        start, cpu = time.perf_counter(), time.process_time()
        for step in range(steps):
            for callback in per_batch:
                callback.on_train_batch_begin(step)
            logs = model.train_function(iterator)
        float(logs["loss"])  # wait for the last step
        return time.perf_counter() - start, time.process_time() - cpu

    run()  # traces
    run()
    return run


def bench_loop(name, builder, shape, batch_size, args, out):
    # Several identical models per variant: one model's own speed (where its
    # buffers landed) differs from another's by about 1%, enough to mask
    # the schedules' cost; each round times all of them.
    dataset = make_dataset(shape, batch_size)
    runners = {
        v: [loop_runner(builder, dataset, v, args.block) for _ in range(args.instances)]
        for v in args.variants
    }
    times = {v: [] for v in args.variants}
    cpu = {v: [] for v in args.variants}
    steps = args.block * args.instances
    for repeat in range(args.loop_rounds):
        order = args.variants if repeat % 2 == 0 else args.variants[::-1]
        for variant in order:
            wall, used = map(sum, zip(*(run() for run in runners[variant])))
            times[variant].append(wall / steps)
            cpu[variant].append(used / steps)
    out.write(f"  [{name}] loop: {args.loop_rounds} rounds done\n")
    rows = []
    for variant in args.variants:
        ratios = [t / b for t, b in zip(times[variant], times["constant"])]
        cpu_ratios = [t / b for t, b in zip(cpu[variant], cpu["constant"])]
        rows.append(
            dict(
                model=name,
                variant=variant,
                ms=statistics.median(times[variant]) * 1e3,
                ratio=statistics.median(ratios),
                us=statistics.median(
                    (t - b) * 1e6 for t, b in zip(times[variant], times["constant"])
                ),
                cpu_ratio=statistics.median(cpu_ratios),
            )
        )
    return rows


def loop_markdown(rows, args):
    lines = [
        f"loop mode: {args.instances} models per variant, blocks of {args.block} "
        f"steps each, {args.loop_rounds} rounds, order reversed every other round",
        "",
        "| model | variant | ms/step (median) | ratio vs constant (median of rounds) "
        "| extra us/step | ratio vs constant, CPU time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        extra = "-" if r["variant"] == "constant" else f"{r['us']:+.0f}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['ms']:.3f} | "
            f"{r['ratio']:.3f} | {extra} | {r['cpu_ratio']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument(
        "--epochs", type=int, default=3, help="timed epochs per fit (one more is run and discarded)"
    )
    parser.add_argument("--repeats", type=int, default=15, help="alternating rounds")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10 steps, 2 timed epochs, 3 rounds"
    )
    parser.add_argument(
        "--jit", action="store_true", help="compile every model with jit_compile=True (XLA)"
    )
    parser.add_argument(
        "--multi", action="store_true", help="compile every model with a two-group MultiOptimizer"
    )
    parser.add_argument(
        "--loop", action="store_true", help="time the compiled train step in a loop instead of fit"
    )
    parser.add_argument("--block", type=int, default=10, help="loop mode: steps per timed block")
    parser.add_argument(
        "--loop-rounds", type=int, default=100, help="loop mode: alternating rounds"
    )
    parser.add_argument(
        "--instances", type=int, default=3, help="loop mode: identical models per variant"
    )
    args = parser.parse_args(argv)
    global JIT_COMPILE, MULTI
    JIT_COMPILE, MULTI = args.jit, args.multi
    if MULTI and not hasattr(keras.optimizers, "MultiOptimizer"):
        parser.error("--multi needs Keras 3.15 or later (MultiOptimizer)")
    if args.quick:
        args.steps, args.epochs, args.repeats, args.loop_rounds, args.instances = 10, 2, 3, 10, 1
    for name in ("steps", "epochs", "repeats", "block", "loop_rounds", "instances"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or "constant" not in args.variants:
        parser.error(
            f"--variants must include constant and name only {VARIANTS}; received {args.variants}"
        )
    started = time.perf_counter()
    bench, table = (bench_loop, loop_markdown) if args.loop else (bench_model, markdown)
    rows = []
    for name, (builder, shape, batch_size) in MODELS.items():
        rows += bench(name, builder, shape, batch_size, args, sys.stderr)
    print(
        f"keras {keras.__version__}, TensorFlow {tf.__version__}, "
        f"{os.cpu_count()} CPU cores, {time.perf_counter() - started:.0f} s"
        f"{', two-group MultiOptimizer' if MULTI else ''}\n"
    )
    print(table(rows, args))


if __name__ == "__main__":
    main()
