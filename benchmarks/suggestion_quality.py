"""How good is `result.suggest()` as `OneCycle`'s `max_lr`?

For each task (model, optimizer, data, a fixed number of training steps) and
each seed (the seed sets the initial weights):

1. build and compile the model and build its optimizer; run `find_lr(model,
   x, y, batch_size=..., verbose=0)` with its defaults (100 steps, 1e-7 to
   10, smoothing 0.98) `--orders` times (default 4), each with its own data
   order, each from the same initial model, which `find_lr` restores; each
   range test gives its own suggestion;
2. train that same initial model with `OneCycle(max_lr)` for the task's steps
   at each `max_lr` of a 9-point log grid (3 points per decade, bracketing
   the good region of the task's optimizer), and at each suggestion;
3. measure the test metric: accuracy, or R^2 for the regression task (0 when
   the training diverged to non-finite predictions).

Every training run starts from the same snapshot of the model and optimizer,
with the same data order for a given seed, so runs differ only in `max_lr`.
The metric of a (task, seed, max_lr) is computed once and cached; range-test
curves are cached per (task, seed, order), so `--methods` compares other
rules on the same curves and trains only at the learning rates they produce.

Per task the table gives the range of the suggested LRs, their mean metric
(over the range tests of a seed, then over seeds), the grid's best `max_lr`
(the grid point with the best seed-mean metric) and that metric, the
suggestions' metric as a fraction of the grid's best ("of best", the goal is
>= 99.5%), and the geometric mean of suggested LR / grid-best LR ("LR
ratio"). Several range tests per seed measure what a user gets from one
test, whose suggestion moves with the data order as much as with the
initial weights.

The 99.5% goal is close to the measurement's noise: the standard error of a
seed-mean metric (printed as "+-") is 0.1-0.5% of it, and the grid's best is
the largest of nine such means, so it sits high by about that much.

Tasks (all offline: scikit-learn's digits and Friedman #1, MNIST-1D generated
locally by the `mnist1d` package's `make_dataset`); steps of training:

    digits_cnn        2-D convnet (batch norm) on 8x8 digits, SGD momentum 0.9, 400
    digits_cnn_plain  the same convnet without batch norm: its range test never
                      descends, so the default rule gives no suggestion
    digits_mlp        MLP 64-64 on digits, SGD momentum 0.9, 400
    digits_adam       MLP 64-64 on digits, Adam, 400
    mnist1d_cnn       1-D convnet on MNIST-1D, Adam, 504
    mnist1d_gru       GRU(64) on MNIST-1D as 20 steps x 2 values, Adam, 504
    friedman_mlp      MLP 64-64 regression on make_friedman1, SGD momentum 0.9, 376
    digits_lstm       LSTM(32) on digits as 8 rows x 8 values, Adam, 400
    mnist1d_mlp       MLP 128-128 on MNIST-1D, SGD momentum 0.9, 504
    digits_cnn_adam   the 2-D convnet with Adam, 400
    mnist1d_cnn_sgd   the 1-D convnet with SGD momentum 0.9, 504
    friedman_adam     the Friedman MLP with Adam, 376
    mnist1d_gru_sgd   the GRU with SGD momentum 0.9, 504 (held out)
    mnist1d_mlp_adam  the MNIST-1D MLP with Adam, 504 (held out)

"Held out": added after the default rule was chosen, and not used to choose
it. A training takes 1-6 s on 2 CPU cores (2 s on average); a run trains
each (task, seed) at the 9 grid points and at each distinct suggestion.

Usage:
    .venv/bin/python benchmarks/suggestion_quality.py              # seeds 0 1, 4 orders
    .venv/bin/python benchmarks/suggestion_quality.py --compare    # + fastai's rules
    .venv/bin/python benchmarks/suggestion_quality.py --quick      # smoke run, ~30 s
    .venv/bin/python benchmarks/suggestion_quality.py --seeds 0 1 2 3 --compare
    .venv/bin/python benchmarks/suggestion_quality.py --methods default no-lag \
        --tasks digits_mlp --finder-steps 200 --cache /tmp/sq.json

`--cache FILE` keeps range-test curves and trained metrics in a JSON file, so
that a later run (another rule, more seeds) trains only what is new.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402
from keras_clr import optimizers  # noqa: E402
from keras_clr import results  # noqa: E402
from keras_clr import suggestions  # noqa: E402
from keras_clr.range_test import state as range_state  # noqa: E402

GOAL = 0.995


# -- data ----------------------------------------------------------------------


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return x_tr, y_tr.astype("int32"), x_te, y_te.astype("int32")


def _mnist1d():
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    data = make_dataset(get_dataset_args())  # generated here, not downloaded
    x_tr, x_te = data["x"].astype("float32"), data["x_test"].astype("float32")
    scale = x_tr.std()
    return (x_tr / scale, data["y"].astype("int32"), x_te / scale, data["y_test"].astype("int32"))


def _friedman():
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, noise=1.0, random_state=0)
    y = (y - y[:1500].mean()) / y[:1500].std()
    x = x.astype("float32")
    y = y.astype("float32")
    return x[:1500], y[:1500], x[1500:], y[1500:]


# -- models --------------------------------------------------------------------


def _dense(inputs, outputs, hidden=(64, 64)):
    return keras.Sequential(
        [keras.Input(inputs)]
        + [keras.layers.Dense(h, activation="relu") for h in hidden]
        + [keras.layers.Dense(outputs)]
    )


def _cnn2d(batch_norm=True):
    def conv(filters):
        if not batch_norm:
            return [keras.layers.Conv2D(filters, 3, padding="same", activation="relu")]
        return [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
        ]

    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Reshape((8, 8, 1)),
            *conv(16),
            *conv(32),
            keras.layers.MaxPooling2D(2),
            *conv(32),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def _cnn1d():
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((40, 1)),
            keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def _gru():
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((20, 2)),
            keras.layers.GRU(64),
            keras.layers.Dense(10),
        ]
    )


def _lstm():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Reshape((8, 8)),
            keras.layers.LSTM(32),
            keras.layers.Dense(10),
        ]
    )


def _pretrained(build, data, epochs, batch):
    """A builder of `build()`'s model pre-trained with Adam(1e-3) on
    `data()` (x, y) for `epochs`, then fine-tuned whole (all layers
    trainable, as in the fine-tuning tasks users run)."""

    def pretrained():
        model = build()
        x, y = data()
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
        fresh = build()  # the same architecture, a new optimizer to fine-tune with
        fresh.set_weights(model.get_weights())
        return fresh

    return pretrained


def _digits_other_half():
    """Pre-training data: the 30% of digits the tasks hold out as test
    data are not used; this is the training split's other half of classes,
    relabelled: digits 5-9 as 0-4 and 0-4 as 5-9 (a related task)."""
    x_tr, y_tr, _, _ = _digits()
    return x_tr, ((y_tr + 5) % 10).astype("int32")


def _mnist1d_shifted():
    """Pre-training data: MNIST-1D generated with other noise and shifts
    (a related task), made locally."""
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    args = get_dataset_args()
    args.seed, args.corr_noise_scale, args.iid_noise_scale = 7, 0.5, 4e-2
    args.shuffle_seq = False
    data = make_dataset(args)
    x = data["x"].astype("float32")
    return x / x.std(), data["y"].astype("int32")


def _sgd():
    return keras.optimizers.SGD(1e-3, momentum=0.9)


def _adam():
    return keras.optimizers.Adam(1e-3)


def _log_grid(low_exponent):
    """9 points, 3 per decade, from 10 ** low_exponent."""
    return [float(f"{10 ** (low_exponent + k / 3):.3g}") for k in range(9)]


SGD_GRID = _log_grid(-2.5)  # 3.16e-3 ... 1.47
ADAM_GRID = _log_grid(-3.5)  # 3.16e-4 ... 1.47e-1

TASKS = {
    # name: (data, model, optimizer, batch size, epochs, grid, metric)
    "digits_cnn": (_digits, _cnn2d, _sgd, 32, 10, SGD_GRID, "accuracy"),
    "digits_cnn_plain": (
        _digits,
        lambda: _cnn2d(batch_norm=False),
        _sgd,
        32,
        10,
        SGD_GRID,
        "accuracy",
    ),
    "digits_mlp": (_digits, lambda: _dense((64,), 10), _sgd, 32, 10, SGD_GRID, "accuracy"),
    "digits_adam": (_digits, lambda: _dense((64,), 10), _adam, 32, 10, ADAM_GRID, "accuracy"),
    "mnist1d_cnn": (_mnist1d, _cnn1d, _adam, 64, 8, ADAM_GRID, "accuracy"),
    "mnist1d_gru": (_mnist1d, _gru, _adam, 64, 8, ADAM_GRID, "accuracy"),
    "friedman_mlp": (_friedman, lambda: _dense((10,), 1), _sgd, 32, 8, SGD_GRID, "r2"),
    "digits_lstm": (_digits, _lstm, _adam, 32, 10, ADAM_GRID, "accuracy"),
    "mnist1d_mlp": (
        _mnist1d,
        lambda: _dense((40,), 10, (128, 128)),
        _sgd,
        64,
        8,
        SGD_GRID,
        "accuracy",
    ),
    "digits_cnn_adam": (_digits, _cnn2d, _adam, 32, 10, ADAM_GRID, "accuracy"),
    "mnist1d_cnn_sgd": (_mnist1d, _cnn1d, _sgd, 64, 8, SGD_GRID, "accuracy"),
    "friedman_adam": (_friedman, lambda: _dense((10,), 1), _adam, 32, 8, ADAM_GRID, "r2"),
    # held out: added after the default rule was chosen, and not used to choose it
    "mnist1d_gru_sgd": (_mnist1d, _gru, _sgd, 64, 8, SGD_GRID, "accuracy"),
    "mnist1d_mlp_adam": (
        _mnist1d,
        lambda: _dense((40,), 10, (128, 128)),
        _adam,
        64,
        8,
        ADAM_GRID,
        "accuracy",
    ),
}
# fine-tuning: a model pre-trained on a related task, every layer trained again
TASKS["digits_finetune_sgd"] = (
    _digits,
    _pretrained(lambda: _dense((64,), 10), _digits_other_half, 10, 32),
    _sgd,
    32,
    5,
    SGD_GRID,
    "accuracy",
)
TASKS["mnist1d_finetune_adam"] = (
    _mnist1d,
    _pretrained(_cnn1d, _mnist1d_shifted, 4, 64),
    _adam,
    64,
    4,
    ADAM_GRID,
    "accuracy",
)
HELD_OUT = ("mnist1d_gru_sgd", "mnist1d_mlp_adam", "digits_finetune_sgd", "mnist1d_finetune_adam")
QUICK = {"digits_mlp": 3, "digits_adam": 3}  # --quick: these tasks, these epochs


# -- the rules compared, on the trimmed smoothed curve `suggest()` reads --------


def _window(result):
    return result._window(finite=True)[:2]


def _lr_min(result):
    lrs, losses = _window(result)
    return float(lrs[int(np.argmin(losses))]) if len(losses) else None


def _lr_drop(result, fraction):
    """First LR where the smoothed loss has made `fraction` of its drop."""
    lrs, losses = _window(result)
    low = int(np.argmin(losses))
    target = losses[0] - fraction * (losses[0] - losses[low])
    return float(lrs[int(np.argmax(losses[: low + 1] <= target))])


def _ema_drop(result):
    """The earlier default: 0.7 x sqrt(lr_min * the first LR where the moving
    average has made two thirds of its drop), on fastai's trimmed window."""
    lrs, losses = _window(result)
    low = int(np.argmin(losses)) if len(losses) else 0
    if len(losses) < 2 or not losses[0] - losses[low] > 0.01 * abs(losses[0]):
        return None
    return max(0.7 * math.sqrt(lrs[low] * _lr_drop(result, 2 / 3)), float(lrs[0]))


METHODS = {
    "default": lambda r: r.suggest(),
    "no-lag": lambda r: suggestions._one_cycle_rule(
        r.lrs[r.num_steps // 10 :], r.losses[r.num_steps // 10 :]
    )[0],
    "no-bn": lambda r: suggestions._one_cycle_rule(
        r.lrs[r.num_steps // 10 :], r.losses[r.num_steps // 10 :], momentum=r.momentum
    )[0],
    "ema-drop": _ema_drop,
    "valley": lambda r: r.suggest("valley"),
    "steep": lambda r: r.suggest("steep"),
    "minimum": lambda r: r.suggest("minimum"),  # fastai's lr_min / 10
    "slide": lambda r: r.suggest("slide"),
    "min/2": lambda r: _lr_min(r) / 2,
    "min/2.5": lambda r: _lr_min(r) / 2.5,
    "min/4": lambda r: _lr_min(r) / 4,
    "drop80%x0.65": lambda r: 0.65 * _lr_drop(r, 0.8),
    "tune": None,  # keras_clr.tune_max_lr for the task's training (see Bench.tuned)
}
TUNE_BUDGET = 400  # tune_max_lr's default budget_steps


# -- runs ----------------------------------------------------------------------


class Bench:
    """Data, models and the caches of one benchmark run."""

    def __init__(self, finder_steps, cache_path=None):
        self.finder_steps = finder_steps
        self.data = {}
        self.models = {}
        self.curves = {}  # (task, seed) -> LRFinderResult
        self.metrics = {}  # (task, seed, epochs, max_lr) -> test metric
        self.cache_path = cache_path
        self.seconds = {"range test": 0.0, "training": 0.0}
        self.trainings = 0
        if cache_path and os.path.exists(cache_path):
            with open(cache_path) as f:
                saved = json.load(f)
            self.metrics = {tuple(json.loads(k)): v for k, v in saved["metrics"].items()}
            self.saved_curves = saved.get("curves", {})
        else:
            self.saved_curves = {}

    def save(self):
        if self.cache_path:
            with open(self.cache_path, "w") as f:
                json.dump(
                    {
                        "metrics": {json.dumps(list(k)): v for k, v in self.metrics.items()},
                        "curves": self.saved_curves,
                    },
                    f,
                )

    def _data(self, task):
        loader = TASKS[task][0]
        if loader not in self.data:
            self.data[loader] = loader()
        return self.data[loader]

    def _steps(self, task, epochs):
        x_tr = self._data(task)[0]
        return epochs * math.ceil(len(x_tr) / TASKS[task][3])

    def model(self, task, seed):
        """(model, snapshot): the compiled model of (task, seed), as built."""
        key = (task, seed)
        if key not in self.models:
            _, build, optimizer, _, _, _, metric = TASKS[task]
            keras.utils.set_random_seed(seed)
            model = build()
            loss = (
                "mse"
                if metric == "r2"
                else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
            model.compile(optimizer=optimizer(), loss=loss)
            range_state.build_optimizer(model)  # as the range test does first
            self.models[key] = (model, range_state.snapshot(model))
        return self.models[key]

    def curve(self, task, seed, order=0):
        """The range test of (task, seed) with data order `order`; every
        order starts from the same model, which `find_lr` restores."""
        key = (task, seed, order)
        if key not in self.curves:
            name = f"{task}/{seed}/{self.finder_steps}" + (f"/{order}" if order else "")
            if name in self.saved_curves:  # --cache: the range test of an earlier run
                lrs, losses = self.saved_curves[name]
                # what find_lr records besides the curve
                momentum = optimizers.velocity_momentum(TASKS[task][2]())
                batch_norm = optimizers.has_batch_norm(TASKS[task][1]())
                self.curves[key] = results.LRFinderResult(
                    lrs,
                    losses,
                    momentum=momentum,
                    batch_norm=batch_norm,
                    num_steps=self.finder_steps,
                )
            else:
                model, saved = self.model(task, seed)
                range_state.restore(saved)  # the model as built, not as last trained
                x_tr, y_tr, _, _ = self._data(task)
                keras.utils.set_random_seed(10_000 + seed + 1000 * order)
                start = time.perf_counter()
                self.curves[key] = keras_clr.find_lr(
                    model,
                    x_tr,
                    y_tr,
                    batch_size=TASKS[task][3],
                    num_steps=self.finder_steps,
                    verbose=0,
                )
                self.seconds["range test"] += time.perf_counter() - start
                self.saved_curves[name] = [
                    self.curves[key].lrs.tolist(),
                    self.curves[key].losses.tolist(),
                ]
        return self.curves[key]

    def metric(self, task, seed, lr, epochs):
        lr = float(f"{lr:.4g}")
        key = (task, seed, epochs, lr)
        if key not in self.metrics:
            model, saved = self.model(task, seed)
            _, _, _, batch, _, _, kind = TASKS[task]
            x_tr, y_tr, x_te, y_te = self._data(task)
            range_state.restore(saved)
            keras.utils.set_random_seed(20_000 + seed)
            start = time.perf_counter()
            model.fit(
                x_tr,
                y_tr,
                batch_size=batch,
                epochs=epochs,
                verbose=0,
                callbacks=[keras_clr.OneCycle(lr)],
            )
            out = model.predict(x_te, batch_size=512, verbose=0)
            self.seconds["training"] += time.perf_counter() - start
            self.trainings += 1
            value = _score(out, y_te, kind)
            self.metrics[key] = value
        return self.metrics[key]

    def baseline(self, task, seed, kind, epochs):
        """The test metric of what a user runs with no tuning (`BASELINES`),
        from the seed's initial weights and data order."""
        key = (task, seed, epochs, "baseline:" + kind)
        if key not in self.metrics:
            _, build, optimizer, batch, _, _, metric = TASKS[task]
            steps = self._steps(task, epochs)
            keras.utils.set_random_seed(seed)
            model = build()
            default = 1e-2 if optimizer is _sgd else 1e-3  # Keras's default learning rates
            momentum = {"momentum": 0.9} if optimizer is _sgd else {}
            kind_of = keras.optimizers.SGD if optimizer is _sgd else keras.optimizers.Adam
            if kind == "constant":
                chosen = kind_of(default, **momentum)
            elif kind == "cosine":
                warmup = max(1, steps // 20)
                chosen = kind_of(
                    keras.optimizers.schedules.CosineDecay(
                        0.0, steps - warmup, warmup_target=default, warmup_steps=warmup
                    ),
                    **momentum,
                )
            else:
                chosen = keras.optimizers.ScheduleFreeAdamW(warmup_steps=max(1, steps // 20))
            loss = (
                "mse"
                if metric == "r2"
                else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
            model.compile(optimizer=chosen, loss=loss)
            x_tr, y_tr, x_te, y_te = self._data(task)
            keras.utils.set_random_seed(20_000 + seed)
            model.fit(x_tr, y_tr, batch_size=batch, epochs=epochs, verbose=0)
            self.trainings += 1
            self.metrics[key] = _score(model.predict(x_te, batch_size=512, verbose=0), y_te, metric)
        return self.metrics[key]

    def tuned(self, task, seed, order, epochs, budget):
        """`tune_max_lr`'s answer for (task, seed) with data order `order`,
        for the task's training, from the seed's initial model."""
        name = f"tune/{task}/{seed}/{order}/{epochs}/{budget}"
        if name not in self.saved_curves:
            model, saved = self.model(task, seed)
            range_state.restore(saved)
            x_tr, y_tr, _, _ = self._data(task)
            keras.utils.set_random_seed(30_000 + seed + 1000 * order)
            start = time.perf_counter()
            search = keras_clr.tune_max_lr(
                model,
                x_tr,
                y_tr,
                batch_size=TASKS[task][3],
                total_steps=self._steps(task, epochs),
                budget_steps=budget,
                verbose=0,
            )
            self.seconds["tune_max_lr"] = (
                self.seconds.get("tune_max_lr", 0.0) + time.perf_counter() - start
            )
            self.saved_curves[name] = [search.max_lr, search.steps_used, search.candidates]
        return self.saved_curves[name][0]


def _score(out, y_te, kind):
    """Accuracy, or R^2; 0 (or the majority class's share) when diverged."""
    if not np.all(np.isfinite(out)):
        return 0.0 if kind == "r2" else float(np.mean(y_te == 0))
    if kind == "r2":
        from sklearn.metrics import r2_score

        return float(r2_score(y_te, out[:, 0]))
    return float(np.mean(np.argmax(out, axis=1) == y_te))


BASELINES = ("constant", "cosine", "schedule-free")


def _suggest(method, result):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return METHODS[method](result)


def _se(values):
    """Standard error of the mean over seeds."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def _pm(se):
    return "" if math.isnan(se) else f" +- {se:.4f}"


def run_task(bench, task, seeds, orders, epochs, methods, out, baselines=False):
    grid = TASKS[task][5]
    per_grid = np.array([[bench.metric(task, s, lr, epochs) for lr in grid] for s in seeds])
    means = per_grid.mean(axis=0)
    best = int(np.argmax(means))
    rows = []
    for method in methods:
        if method == "tune":
            lrs = [
                [bench.tuned(task, s, o, epochs, TUNE_BUDGET) for o in range(orders)] for s in seeds
            ]
        else:
            lrs = [
                [_suggest(method, bench.curve(task, s, o)) for o in range(orders)] for s in seeds
            ]
        flat = [lr for per_seed in lrs for lr in per_seed if lr is not None]
        missing = sum(lr is None for per_seed in lrs for lr in per_seed)
        if not flat:
            rows.append((method, lrs, missing, None, None, None, None))
            continue
        per_seed = [
            np.mean([bench.metric(task, s, lr, epochs) for lr in row if lr is not None])
            for s, row in zip(seeds, lrs)
            if any(lr is not None for lr in row)
        ]
        value = float(np.mean(per_seed))
        ratio = math.exp(np.mean([math.log(lr / grid[best]) for lr in flat]))
        rows.append((method, lrs, missing, value, _se(per_seed), value / means[best], ratio))
    base = {
        k: float(np.mean([bench.baseline(task, s, k, epochs) for s in seeds]))
        for k in (BASELINES if baselines else ())
    }
    bench.save()
    _, _, optimizer, batch, _, _, kind = TASKS[task]
    name = "Adam" if optimizer is _adam else "SGD m=0.9"
    out.write(
        f"\n{task} ({name}, {bench._steps(task, epochs)} steps, batch {batch}, "
        f"metric {kind}, seeds {seeds}, {orders} range tests per seed)\n"
    )
    out.write("  grid: " + "  ".join(f"{lr:.3g}:{m:.4f}" for lr, m in zip(grid, means)) + "\n")
    out.write(
        f"  grid best: max_lr {grid[best]:.3g}, {kind} {means[best]:.4f}"
        f"{_pm(_se(per_grid[:, best]))} (+- standard error over seeds)\n"
    )
    for method, lrs, missing, value, se, fraction, ratio in rows:
        shown = " / ".join(
            " ".join("none" if lr is None else f"{lr:.2e}" for lr in row) for row in lrs
        )
        if value is None:
            out.write(f"  {method:>13}: LR {shown}: no suggestion\n")
            continue
        flag = "" if fraction >= GOAL and not missing else "  < goal"
        out.write(
            f"  {method:>13}: LR {shown}  {kind} {value:.4f}{_pm(se)}  of best "
            f"{fraction:.2%}  LR ratio {ratio:.2f}"
            + (f", {missing} without a suggestion" if missing else "")
            + f"{flag}\n"
        )
    for name_, value in base.items():
        out.write(
            f"  {name_:>13}: {kind} {value:.4f}  of best {value / means[best]:.2%} (no tuning)\n"
        )
    out.flush()
    return {
        "baselines": {k: {"metric": v, "of_best": v / means[best]} for k, v in base.items()},
        "task": task,
        "optimizer": name,
        "metric": kind,
        "grid_best_lr": grid[best],
        "grid_best": float(means[best]),
        "grid_best_se": _se(per_grid[:, best]),
        "grid": dict(zip(grid, means.tolist())),
        "methods": {
            m: {"lrs": lrs, "missing": k, "metric": v, "se": se, "of_best": f, "lr_ratio": r}
            for m, lrs, k, v, se, f, r in rows
        },
    }


def _table(report, method, out):
    """The summary of one method, as a Markdown table."""
    out.write(
        f"\n{method}:\n\n| task | optimizer | suggested max_lr (lowest-highest) "
        "| metric at it | grid best max_lr | grid best metric | of best | LR ratio |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    for r in report:
        m = r["methods"][method]
        flat = [lr for row in m["lrs"] for lr in row if lr is not None]
        shown = f"{min(flat):.2g}-{max(flat):.2g}" if flat else "none"
        if m["missing"] and flat:
            shown += f" ({m['missing']} none)"
        if m["metric"] is None:
            cells = ["none", f"{r['grid_best_lr']:.3g}", f"{r['grid_best']:.4f}", "-", "-"]
        else:
            cells = [
                f"{m['metric']:.4f}",
                f"{r['grid_best_lr']:.3g}",
                f"{r['grid_best']:.4f}",
                f"{m['of_best']:.2%}",
                f"{m['lr_ratio']:.2f}",
            ]
        task = r["task"] + (" (held out)" if r["task"] in HELD_OUT else "")
        out.write(f"| {task} | {r['optimizer']} | {shown} | " + " | ".join(cells) + " |\n")


def _met(method_row):
    return (method_row["of_best"] or 0) >= GOAL and not method_row["missing"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--quick", action="store_true", help="two digits tasks, 3 epochs, seed 0: a smoke run"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHODS),
        default=["default"],
        help="rules to compare (fastai's valley, steep, ...); 'default' is result.suggest()",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="shorthand for --methods default ema-drop valley steep minimum",
    )
    parser.add_argument(
        "--orders",
        type=int,
        default=4,
        help="range tests per seed, each with its own data order, all "
        "from the seed's initial model: each gives a suggestion",
    )
    parser.add_argument(
        "--finder-steps",
        type=int,
        default=100,
        help="num_steps of the range test (find_lr's default: 100)",
    )
    parser.add_argument(
        "--cache", default=None, help="JSON file that keeps trained metrics between runs"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also train what a user runs with no tuning: the Keras "
        "default rate constant, CosineDecay with a 5%% warm-up to "
        "it, ScheduleFreeAdamW() with a 5%% warm-up",
    )
    args = parser.parse_args(argv)
    methods = (
        ["default", "ema-drop", "valley", "steep", "minimum"] if args.compare else args.methods
    )
    tasks = args.tasks or (list(QUICK) if args.quick else list(TASKS))
    seeds = [0] if args.quick and args.seeds == [0, 1] else args.seeds
    orders = 1 if args.quick and args.orders == 4 else args.orders
    if orders < 1:
        parser.error(f"--orders must be at least 1. Received: {orders}")
    bench = Bench(args.finder_steps, args.cache)
    start = time.perf_counter()
    out = sys.stdout
    out.write(
        f"suggestion quality: OneCycle(max_lr) test metric, find_lr("
        f"num_steps={args.finder_steps}), tasks {tasks}, seeds {seeds}\n"
    )
    report = []
    for task in tasks:
        epochs = QUICK.get(task, TASKS[task][4]) if args.quick else TASKS[task][4]
        report.append(run_task(bench, task, seeds, orders, epochs, methods, out, args.baselines))
    elapsed = time.perf_counter() - start
    for method in methods:
        _table(report, method, out)
    out.write(
        f"\nsummary ({', '.join(methods)}): of best >= {GOAL:.1%} on "
        + ", ".join(
            f"{m} {sum(_met(r['methods'][m]) for r in report)}/{len(report)}" for m in methods
        )
        + " tasks\n"
    )
    out.write(
        f"time: {elapsed:.0f} s ({bench.seconds['range test']:.0f} s range tests, "
        f"{bench.seconds['training']:.0f} s in {bench.trainings} trainings)\n"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
