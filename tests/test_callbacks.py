"""Tests for keras_clr.callbacks: CyclicLR and OneCycle in real `model.fit`.

The weights a fit produces are compared with a float64 reference loop written
here with `tf.GradientTape` and the Keras update formulas, run with
`lr_schedule(k)` and `momentum_schedule(k)` at update k. Schedule values come
from the PyTorch references of test_curves.py.
"""

import copy
import csv
import math
import pickle
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_clr
from keras_clr import schedules
from keras_clr import tables
from test_curves import torch_cyclic
from test_curves import torch_one_cycle
from test_curves import triangular2_scale
from test_schedules import named
from test_schedules import ordered


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's with the same reset minus the garbage collection
    (~0.3 s per test)."""
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 3)).astype("float32")
Y = (0.5 * np.sin(X @ np.array([[1.0], [-2.0], [0.5]]))).astype("float32")
BATCH = 4
STEPS_PER_EPOCH = 5  # 20 samples / batch 4
ATOL = 1e-5


def make_model(optimizer, seed=0, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def fit(model, callbacks, epochs=3, **kwargs):
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


class Recorder(keras.callbacks.Callback):
    """Records the learning rate and momentum in each batch's logs."""

    def __init__(self):
        super().__init__()
        self.lr, self.momentum = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.lr.append(float(logs["learning_rate"]))
        self.momentum.append(float(logs.get("momentum", math.nan)))


# --- the float64 reference --------------------------------------------------


def gradients(weights, x, y):
    w = [tf.constant(v) for v in weights]
    with tf.GradientTape() as tape:
        tape.watch(w)
        out = tf.tanh(x @ w[0] + w[1]) @ w[2] + w[3]
        loss = tf.reduce_mean(tf.square(out - y))
    return [g.numpy() for g in tape.gradient(loss, w)]


def reference_weights(initial, update, lr, momentum, steps):
    """Trains a float64 copy of the model: same batches, same order."""
    weights = [np.asarray(w, dtype=np.float64) for w in initial]
    x, y = X.astype(np.float64), Y.astype(np.float64)
    state = {}
    for k in range(steps):
        i = (k % STEPS_PER_EPOCH) * BATCH
        grads = gradients(weights, x[i : i + BATCH], y[i : i + BATCH])
        weights = update(k, weights, grads, lr(k), momentum(k), state)
    return weights


def zeros(state, key, weights):
    return state.setdefault(key, [np.zeros_like(w) for w in weights])


def sgd(nesterov=False):
    def update(k, weights, grads, lr, mu, state):
        m = zeros(state, "m", weights)
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            m[i] = mu * m[i] - lr * g
            out.append(w + (mu * m[i] - lr * g if nesterov else m[i]))
        return out

    return update


def adam(weight_decay=0.0, beta_2=0.999, eps=1e-7):
    def update(k, weights, grads, lr, beta_1, state):
        m, v = zeros(state, "m", weights), zeros(state, "v", weights)
        t = k + 1
        alpha = lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            w = w - w * weight_decay * lr
            m[i] += (g - m[i]) * (1 - beta_1)
            v[i] += (g * g - v[i]) * (1 - beta_2)
            out.append(w - alpha * m[i] / (np.sqrt(v[i]) + eps))
        return out

    return update


def nadam(beta_2=0.999, eps=1e-7):
    def update(k, weights, grads, lr, beta_1, state):
        m, v = zeros(state, "m", weights), zeros(state, "v", weights)
        t = k + 1
        u_t = beta_1 * (1 - 0.5 * 0.96**t)
        u_next = beta_1 * (1 - 0.5 * 0.96 ** (t + 1))
        state["u_product"] = u_product = state.get("u_product", 1.0) * u_t
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            m[i] += (g - m[i]) * (1 - beta_1)
            v[i] += (g * g - v[i]) * (1 - beta_2)
            m_hat = u_next * m[i] / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
            v_hat = v[i] / (1 - beta_2**t)
            out.append(w - m_hat * lr / (np.sqrt(v_hat) + eps))
        return out

    return update


def adamax(beta_2=0.999, eps=1e-7):
    def update(k, weights, grads, lr, beta_1, state):
        m, u = zeros(state, "m", weights), zeros(state, "u", weights)
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            m[i] += (g - m[i]) * (1 - beta_1)
            u[i] = np.maximum(beta_2 * u[i], np.abs(g))
            out.append(w - lr * m[i] / ((1 - beta_1 ** (k + 1)) * (u[i] + eps)))
        return out

    return update


def rmsprop(rho=0.9, eps=1e-7):
    def update(k, weights, grads, lr, mu, state):
        v, m = zeros(state, "v", weights), zeros(state, "m", weights)
        out = []
        for i, (w, g) in enumerate(zip(weights, grads)):
            v[i] = rho * v[i] + (1 - rho) * g * g
            m[i] = mu * m[i] + lr * g / np.sqrt(v[i] + eps)
            out.append(w - m[i])
        return out

    return update


# name -> (optimizer factory, reference update, peak learning rate)
OPTIMIZERS = {
    "SGD": (lambda: keras.optimizers.SGD(0.1, momentum=0.9), sgd(), 0.2),
    "SGD-nesterov": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        sgd(nesterov=True),
        0.2,
    ),
    "Adam": (lambda: keras.optimizers.Adam(1e-3), adam(), 2e-2),
    "AdamW": (lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.1), adam(weight_decay=0.1), 2e-2),
    "Nadam": (lambda: keras.optimizers.Nadam(1e-3), nadam(), 2e-2),
    "Adamax": (lambda: keras.optimizers.Adamax(1e-3), adamax(), 2e-2),
    "RMSprop": (lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5), rmsprop(), 2e-2),
}

CALLBACKS = {
    "CyclicLR": lambda peak: keras_clr.CyclicLR(
        peak / 20, peak, step_size_up=4, step_size_down=2, mode="triangular2"
    ),
    "OneCycle": lambda peak: keras_clr.OneCycle(peak, div_factor=10.0),
    "WarmupStableDecay": lambda peak: keras_clr.WarmupStableDecay(
        peak, warmup_steps=4, decay_steps=6, total_steps=15, min_lr_ratio=0.1
    ),
}


def max_difference(weights, reference):
    return max(
        float(np.max(np.abs(np.asarray(w, np.float64) - r))) for w, r in zip(weights, reference)
    )


# --- exact learning rate and momentum in the update -------------------------


@pytest.mark.parametrize("callback", sorted(CALLBACKS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_weights_follow_scheduled_lr_and_momentum(optimizer, callback):
    make_optimizer, update, peak = OPTIMIZERS[optimizer]
    model = make_model(make_optimizer())
    initial = model.get_weights()
    cb = CALLBACKS[callback](peak)
    fit(model, [cb], epochs=3)
    steps = 3 * STEPS_PER_EPOCH
    assert int(model.optimizer.iterations) == steps
    lr, momentum = cb.lr_schedule, cb.momentum_schedule
    expected = reference_weights(initial, update, lr, momentum, steps)
    assert max_difference(model.get_weights(), expected) < ATOL

    # Negative control: the same reference with the momentum held at its
    # first value is far from the trained weights, so the check above can fail.
    held = momentum(0)
    control = reference_weights(initial, update, lr, lambda k: held, steps)
    assert max_difference(model.get_weights(), control) > 100 * ATOL


def test_steps_per_execution_is_exact_per_step():
    make_optimizer, update, peak = OPTIMIZERS["SGD"]
    model = make_model(make_optimizer(), steps_per_execution=3)  # 5 steps/epoch
    initial = model.get_weights()
    cb = CALLBACKS["CyclicLR"](peak)
    history = fit(model, [cb], epochs=3)
    expected = reference_weights(initial, update, cb.lr_schedule, cb.momentum_schedule, 15)
    assert max_difference(model.get_weights(), expected) < ATOL
    last_steps = np.array([4, 9, 14])
    np.testing.assert_allclose(
        history.history["learning_rate"], cb.lr_schedule(last_steps).astype(np.float32), rtol=1e-6
    )
    np.testing.assert_allclose(
        history.history["momentum"], cb.momentum_schedule(last_steps).astype(np.float32), rtol=1e-6
    )


def test_steps_per_execution_on_repeating_data_runs_whole_calls():
    # With steps_per_epoch=10 and k=4, each epoch's last call still runs 4
    # steps on repeating data: 12 steps an epoch, all on the schedule.
    make_optimizer, update, peak = OPTIMIZERS["SGD"]
    model = make_model(make_optimizer(), steps_per_execution=4)
    initial = model.get_weights()
    cb = keras_clr.CyclicLR(peak / 20, peak, step_size_up=5)
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH).repeat()
    history = model.fit(
        data, steps_per_epoch=10, epochs=2, shuffle=False, verbose=0, callbacks=[cb]
    )
    assert int(model.optimizer.iterations) == 24
    expected = reference_weights(initial, update, cb.lr_schedule, cb.momentum_schedule, 24)
    assert max_difference(model.get_weights(), expected) < ATOL
    np.testing.assert_allclose(
        history.history["learning_rate"], np.float32(cb.lr_schedule(np.array([11, 23]))), rtol=1e-6
    )


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    make_optimizer, update, peak = OPTIMIZERS["SGD"]
    model = make_model(make_optimizer())
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    initial = model.get_weights()
    cb = CALLBACKS["CyclicLR"](peak)
    history = fit(model, [cb], epochs=3)
    inner = model.optimizer.inner_optimizer
    assert int(inner.iterations) == 15  # no step skipped by the loss scale
    assert float(inner.learning_rate) == np.float32(cb.lr_schedule(14))
    assert history.history["learning_rate"][-1] == pytest.approx(cb.lr_schedule(14), rel=1e-6)
    assert history.history["momentum"][-1] == pytest.approx(cb.momentum_schedule(14), rel=1e-6)
    expected = reference_weights(initial, update, cb.lr_schedule, cb.momentum_schedule, 15)
    assert max_difference(model.get_weights(), expected) < 2e-3  # float16 compute


# --- repeated and resumed fits ----------------------------------------------


def test_second_fit_with_same_callback_continues_the_schedule():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    cb = keras_clr.CyclicLR(0.01, 0.1, step_size_up=3, step_size_down=4)
    first, second = Recorder(), Recorder()
    fit(model, [cb, first], epochs=2)
    fit(model, [cb, second], epochs=2)
    steps = np.arange(20)
    expected = np.array([torch_cyclic(int(k), 0.01, 0.1, 3, 4) for k in steps])
    np.testing.assert_allclose(first.lr + second.lr, expected[:, 0].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(
        first.momentum + second.momentum, expected[:, 1].astype(np.float32), rtol=1e-6
    )


def test_new_callback_on_trained_model_starts_at_step_zero():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    fit(model, [], epochs=2)
    cb, recorder = keras_clr.OneCycle(0.1), Recorder()
    fit(model, [cb, recorder], epochs=2)
    assert int(model.optimizer.iterations) == 20
    expected = np.array([torch_one_cycle(k, 10, 0.1) for k in range(10)])
    np.testing.assert_allclose(recorder.lr, expected[:, 0].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(recorder.momentum, expected[:, 1].astype(np.float32), rtol=1e-6)


def test_plain_fit_after_callback_fit_leaves_lr_alone():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    cb = keras_clr.CyclicLR(0.01, 0.1, step_size_up=3)
    fit(model, [cb], epochs=1)
    last_lr = np.float32(cb.lr_schedule(4))
    assert float(model.optimizer.learning_rate) == last_lr
    assert model.optimizer.momentum == 0.9 and type(model.optimizer.momentum) is float

    class ReadOptimizer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.lr, self.keys = [], set()

        def on_train_batch_end(self, batch, logs=None):
            self.lr.append(float(self.model.optimizer.learning_rate))
            self.keys |= set(logs)

    reader = ReadOptimizer()
    history = fit(model, [reader], epochs=2)
    assert reader.lr == [last_lr] * 10
    assert "learning_rate" not in reader.keys and "momentum" not in reader.keys
    assert "learning_rate" not in history.history


def test_resume_from_saved_model_continues_the_schedule(tmp_path):
    def optimizer():
        return keras.optimizers.Adam(1e-3)

    total = 4 * STEPS_PER_EPOCH

    def callback():
        return keras_clr.OneCycle(2e-2, total_steps=total, three_phase=True)

    straight = make_model(optimizer())
    full = Recorder()
    fit(straight, [callback(), full], epochs=4)

    first, second = Recorder(), Recorder()
    interrupted = make_model(optimizer())
    fit(interrupted, [callback(), first], epochs=2)
    interrupted.save(tmp_path / "half.keras")
    restored = keras.models.load_model(tmp_path / "half.keras")
    fit(restored, [callback(), second], epochs=4, initial_epoch=2)

    np.testing.assert_array_equal(first.lr + second.lr, full.lr)
    np.testing.assert_array_equal(first.momentum + second.momentum, full.momentum)
    expected = np.array([torch_one_cycle(k, total, 2e-2, three_phase=True) for k in range(total)])
    np.testing.assert_allclose(full.lr, expected[:, 0].astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(full.momentum, expected[:, 1].astype(np.float32), rtol=1e-6)
    assert (
        max_difference(
            restored.get_weights(), [w.astype(np.float64) for w in straight.get_weights()]
        )
        < 1e-6
    )


# --- schedules exposed, total_steps -----------------------------------------


def test_cyclic_lr_exposes_its_schedules():
    cb = keras_clr.CyclicLR(
        1e-3,
        1e-2,
        step_size_up=5,
        step_size_down=3,
        mode="exp_range",
        gamma=0.97,
        base_momentum=0.7,
        max_momentum=0.95,
    )
    assert isinstance(cb.lr_schedule, schedules.CyclicalLearningRate)
    assert isinstance(cb.momentum_schedule, schedules.CyclicalMomentum)
    steps = np.arange(60)
    expected = np.array(
        [
            torch_cyclic(int(k), 1e-3, 1e-2, 5, 3, lambda x: 0.97**x, "iterations", 0.7, 0.95)
            for k in steps
        ]
    )
    np.testing.assert_allclose(cb.lr_schedule(steps), expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(cb.momentum_schedule(steps), expected[:, 1], rtol=1e-6)
    assert keras_clr.CyclicLR(1e-3, 1e-2, cycle_momentum=False).momentum_schedule is None


@keras.saving.register_keras_serializable(package="test")
def cycle_scale(x):
    return 1.0 / x


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
def test_cyclic_lr_custom_scale_fn_overrides_mode(scale_mode):
    cb = keras_clr.CyclicLR(
        1e-3, 1e-2, step_size_up=2, mode="triangular2", scale_fn=cycle_scale, scale_mode=scale_mode
    )
    steps = np.arange(1, 30)
    expected = [
        torch_cyclic(int(k), 1e-3, 1e-2, 2, None, cycle_scale, scale_mode)[0] for k in steps
    ]
    np.testing.assert_allclose(cb.lr_schedule(steps), expected, rtol=1e-6)


def test_one_cycle_exposes_its_schedules():
    cb = keras_clr.OneCycle(1e-2, total_steps=50, anneal_strategy="linear")
    steps = np.arange(55)
    expected = np.array(
        [torch_one_cycle(int(k), 50, 1e-2, anneal_strategy="linear") for k in steps]
    )
    np.testing.assert_allclose(cb.lr_schedule(steps), expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(cb.momentum_schedule(steps), expected[:, 1], rtol=1e-6)
    assert keras_clr.OneCycle(1e-2, 50, cycle_momentum=False).momentum_schedule is None


def test_one_cycle_takes_total_steps_from_fit():
    cb = keras_clr.OneCycle(1e-2, pct_start=0.4)
    with pytest.raises(ValueError, match="total_steps"):
        _ = cb.lr_schedule
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    fit(model, [cb], epochs=2)
    assert cb.lr_schedule.total_steps == 10
    steps = np.arange(12)
    expected = np.array([torch_one_cycle(int(k), 10, 1e-2, pct_start=0.4) for k in steps])
    np.testing.assert_allclose(cb.lr_schedule(steps), expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(cb.momentum_schedule(steps), expected[:, 1], rtol=1e-6)


def unsized_dataset():
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)
    dataset = dataset.filter(lambda *batch: True)
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return dataset


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_one_cycle_on_unsized_data_asks_for_total_steps():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(ValueError, match="pass `total_steps`"):
        model.fit(
            unsized_dataset(),
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[keras_clr.OneCycle(1e-2)],
        )
    assert int(model.optimizer.iterations) == 0
    recorder = Recorder()
    model.fit(
        unsized_dataset(),
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(1e-2, total_steps=10), recorder],
    )
    # One epoch only: Keras 3.15 counts one extra optimizer iteration when an
    # unsized epoch runs out of data, which shifts the next epoch by a step.
    expected = [torch_one_cycle(k, 10, 1e-2)[0] for k in range(5)]
    np.testing.assert_allclose(recorder.lr, np.float32(expected), rtol=1e-6)


# --- logs ---------------------------------------------------------------------


def test_history_and_csv_logger_get_lr_and_momentum(tmp_path):
    model = make_model(keras.optimizers.Adam(1e-3))
    cb = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=3, mode="triangular2")
    path = tmp_path / "log.csv"
    history = fit(model, [cb, keras.callbacks.CSVLogger(str(path))], epochs=3)
    last = np.array([4, 9, 14])
    expected_lr = [torch_cyclic(int(k), 1e-3, 1e-2, 3, None, triangular2_scale)[0] for k in last]
    expected_momentum = [
        torch_cyclic(int(k), 1e-3, 1e-2, 3, None, triangular2_scale)[1] for k in last
    ]
    np.testing.assert_allclose(history.history["learning_rate"], np.float32(expected_lr), rtol=1e-6)
    np.testing.assert_allclose(
        history.history["momentum"], np.float32(expected_momentum), rtol=1e-6
    )
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], expected_lr, rtol=1e-6)
    np.testing.assert_allclose([float(r["momentum"]) for r in rows], expected_momentum, rtol=1e-6)


class ReadApplied(keras.callbacks.Callback):
    """Reads the optimizer's learning rate after each step (a host sync per
    step: fine in a test) beside the rate the logs carry."""

    def __init__(self):
        super().__init__()
        self.applied, self.logged = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.applied.append(float(self.model.optimizer.learning_rate))
        self.logged.append(logs["learning_rate"])


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_logged_rate_is_the_applied_rate(name):
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    cb, reader = CALLBACKS[name](0.2), ReadApplied()
    fit(model, [cb, reader], epochs=3)
    assert len(cb._fit.values.tables[0].values) == 3 * STEPS_PER_EPOCH  # looked up
    assert len(reader.applied) == 3 * STEPS_PER_EPOCH
    assert reader.logged == reader.applied  # bit for bit


def test_logs_keep_keras_batch_ends_asynchronous(monkeypatch):
    # On JAX and PyTorch, a callback with a batch-end hook that is not
    # `async_safe` makes Keras wait for every step's results before the next
    # one. (TensorFlow always dispatches batch ends synchronously.)
    from keras.src.callbacks import callback_list

    monkeypatch.setattr(callback_list.backend, "IS_THREAD_SAFE", True)
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    assert not keras.callbacks.CallbackList([Recorder()], model=model)._async_train
    for make in CALLBACKS.values():
        callbacks = keras.callbacks.CallbackList([make(0.2)], add_history=True, model=model)
        assert callbacks._async_train


@pytest.mark.parametrize("name", sorted(CALLBACKS))
def test_without_tables_the_values_are_the_same(name, monkeypatch):
    # Past TABLE_LIMIT steps the schedules are evaluated in the graph.
    make_optimizer, update, peak = OPTIMIZERS["SGD"]
    monkeypatch.setattr(tables, "TABLE_LIMIT", 1)
    model = make_model(make_optimizer())
    initial = model.get_weights()
    cb, recorder = CALLBACKS[name](peak), Recorder()
    fit(model, [cb, recorder], epochs=2)
    assert cb._fit.values.tables[0].values is None
    expected = reference_weights(initial, update, cb.lr_schedule, cb.momentum_schedule, 10)
    assert max_difference(model.get_weights(), expected) < ATOL
    np.testing.assert_allclose(recorder.lr, cb.lr_schedule(np.arange(10)), rtol=1e-6)
    np.testing.assert_allclose(recorder.momentum, cb.momentum_schedule(np.arange(10)), rtol=1e-6)


def test_tabulated_matches_the_schedule_and_holds_past_its_end():
    schedule = schedules.OneCycleLearningRate(0.1, 50)
    table = tables.Tabulated(schedule, 7, 43)  # steps 7..49, then held
    steps = np.arange(7, 60)
    expected = np.float32(schedule(steps))
    graph = [float(table(tf.constant(k, tf.int64))) for k in steps]
    assert graph == [float(v) for v in expected]
    assert [table.host(int(k)) for k in steps] == graph
    assert tables.Tabulated(schedule, 0, tables.TABLE_LIMIT + 1).values is None
    assert tables.Tabulated(schedule, 0, None).values is None


# --- optimizers that cannot be driven ---------------------------------------


@pytest.mark.parametrize(
    "make_callback",
    [lambda: keras_clr.CyclicLR(1e-3, 1e-2), lambda: keras_clr.OneCycle(1e-2)],
    ids=["CyclicLR", "OneCycle"],
)
def test_optimizer_with_own_schedule_fails_at_fit_start(make_callback):
    own = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.9)
    model = make_model(keras.optimizers.SGD(own, momentum=0.9))
    with pytest.raises(ValueError, match="compiled with its own schedule.*ExponentialDecay"):
        fit(model, [make_callback()], epochs=1)
    assert int(model.optimizer.iterations) == 0


class FixedRateSGD(keras.optimizers.SGD):
    """An SGD whose `learning_rate` is a float it computes, not a variable."""

    @property
    def learning_rate(self):
        return 0.01


class HiddenRateSGD(keras.optimizers.SGD):
    """An SGD whose `learning_rate` refuses to be read."""

    @property
    def learning_rate(self):
        raise AttributeError("no single learning rate here")


@pytest.mark.parametrize(
    "kind, match",
    [
        (FixedRateSGD, r"FixedRateSGD's `learning_rate` is a float, not a variable"),
        (
            HiddenRateSGD,
            r"HiddenRateSGD's `learning_rate` cannot be read "
            r"\(AttributeError: no single learning rate here\)",
        ),
    ],
)
def test_a_rate_that_cannot_be_set_is_refused_for_its_real_reason(kind, match):
    # Not "compiled with its own schedule (Variable)": it has no schedule.
    model = make_model(kind(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=match):
        fit(model, [keras_clr.OneCycle(1e-2)], epochs=1)
    with pytest.raises(ValueError, match=match):
        keras_clr.find_lr(model, X, Y, batch_size=BATCH, num_steps=5, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_cycle_momentum_needs_momentum():
    model = make_model(keras.optimizers.Adagrad(1e-2))
    with pytest.raises(ValueError, match=re.escape("cycle_momentum=False") + ".*Adagrad"):
        fit(model, [keras_clr.OneCycle(1e-2)], epochs=1)
    recorder = Recorder()
    fit(model, [keras_clr.OneCycle(1e-2, cycle_momentum=False), recorder], epochs=1)
    expected = [torch_one_cycle(k, 5, 1e-2)[0] for k in range(5)]
    np.testing.assert_allclose(recorder.lr, np.float32(expected), rtol=1e-6)
    assert all(math.isnan(m) for m in recorder.momentum)


def test_cycle_momentum_with_zero_momentum_sgd():
    model = make_model(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=re.escape("momentum=0")):
        fit(model, [keras_clr.CyclicLR(1e-3, 1e-2)], epochs=1)


# --- past total_steps ---------------------------------------------------------


def test_one_cycle_past_total_steps_warns_once_and_holds():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    cb, recorder = keras_clr.OneCycle(0.1, total_steps=7), Recorder()
    with pytest.warns(UserWarning, match="past total_steps=7") as record:
        fit(model, [cb, recorder], epochs=3)
    assert sum("past total_steps" in str(w.message) for w in record) == 1
    final_lr, final_momentum = torch_one_cycle(6, 7, 0.1)
    assert final_lr == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)
    np.testing.assert_allclose(recorder.lr[6:], [np.float32(final_lr)] * 9, rtol=1e-6)
    np.testing.assert_allclose(recorder.momentum[6:], [np.float32(final_momentum)] * 9, rtol=1e-6)


def test_one_cycle_exactly_total_steps_does_not_warn():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(model, [keras_clr.OneCycle(0.1, total_steps=10)], epochs=2)
    assert not [w for w in record if "total_steps" in str(w.message)]


# --- previews -----------------------------------------------------------------


def test_cyclic_lr_to_frame_and_plot():
    import matplotlib
    import matplotlib.pyplot as plt

    cb = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=4, step_size_down=2)
    frame = cb.to_frame()
    assert list(frame.columns) == ["step", "learning_rate", "momentum"]
    assert len(frame) == 18  # three cycles
    expected = np.array([torch_cyclic(int(k), 1e-3, 1e-2, 4, 2) for k in frame["step"]])
    np.testing.assert_allclose(frame["learning_rate"], expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(frame["momentum"], expected[:, 1], rtol=1e-6)
    assert len(cb.to_frame(total_steps=40)) == 40

    ax = cb.plot()
    assert isinstance(ax, matplotlib.axes.Axes)
    _, given = plt.subplots()
    assert cb.plot(ax=given) is given
    plt.close("all")


def test_preview_without_momentum_has_nan_column():
    frame = keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=2, cycle_momentum=False).to_frame()
    assert frame["momentum"].isna().all()


def test_one_cycle_preview_needs_a_length():
    import matplotlib
    import matplotlib.pyplot as plt

    cb = keras_clr.OneCycle(1e-2, three_phase=True)
    frame = cb.to_frame(total_steps=100)
    assert list(frame["step"]) == list(range(100))
    expected = np.array([torch_one_cycle(k, 100, 1e-2, three_phase=True) for k in range(100)])
    np.testing.assert_allclose(frame["learning_rate"], expected[:, 0], rtol=1e-6)
    np.testing.assert_allclose(frame["momentum"], expected[:, 1], rtol=1e-6)
    assert isinstance(cb.plot(total_steps=100), matplotlib.axes.Axes)
    with pytest.raises(ValueError, match="total_steps"):
        cb.plot()
    with pytest.raises(ValueError, match="total_steps"):
        cb.to_frame()
    plt.close("all")


# --- exp_range saves and loads ------------------------------------------------


def test_exp_range_schedules_save_and_load_in_safe_mode(tmp_path):
    cb = keras_clr.CyclicLR(
        1e-3,
        1e-2,
        step_size_up=5,
        step_size_down=3,
        mode="exp_range",
        gamma=0.97,
        base_momentum=0.7,
        max_momentum=0.95,
    )
    steps = np.arange(200)
    expected = np.array(
        [
            torch_cyclic(int(k), 1e-3, 1e-2, 5, 3, lambda x: 0.97**x, "iterations", 0.7, 0.95)
            for k in steps
        ]
    )
    for column, schedule in enumerate((cb.lr_schedule, cb.momentum_schedule)):
        model = make_model(keras.optimizers.SGD(learning_rate=schedule))
        path = tmp_path / f"schedule{column}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)  # safe mode
        restored = loaded.optimizer._learning_rate  # the schedule, not its value
        assert type(restored) is type(schedule)
        np.testing.assert_array_equal(restored(steps), schedule(steps))
        np.testing.assert_allclose(restored(steps), expected[:, column], rtol=1e-6)
        before = [w.copy() for w in loaded.get_weights()]
        fit(loaded, [], epochs=1)
        assert int(loaded.optimizer.iterations) == STEPS_PER_EPOCH
        assert float(loaded.optimizer.learning_rate) == pytest.approx(
            expected[STEPS_PER_EPOCH, column], rel=1e-6
        )
        after = loaded.get_weights()
        assert all(np.isfinite(w).all() for w in after)
        assert any(not np.array_equal(a, b) for a, b in zip(after, before))


# --- copies -------------------------------------------------------------------


def same_as_fresh(clone, fresh):
    """Whether `clone` has a fresh callback's attributes: the same values, and
    schedules (and scale functions) of the same class and config."""
    assert set(vars(clone)) == set(vars(fresh))
    for key, value in vars(fresh).items():
        other = vars(clone)[key]
        if hasattr(value, "get_config"):
            assert type(other) is type(value) and other.get_config() == value.get_config(), key
        else:
            assert other is value or other == value, key


COPIED = {
    "OneCycle": (
        lambda: keras_clr.OneCycle(0.05, pct_start=0.4),
        lambda k, total: torch_one_cycle(k, total, 0.05, pct_start=0.4),
    ),
    "CyclicLR": (
        lambda: keras_clr.CyclicLR(
            0.01, 0.1, step_size_up=3, step_size_down=4, mode="exp_range", gamma=0.9
        ),
        lambda k, total: torch_cyclic(k, 0.01, 0.1, 3, 4, lambda x: 0.9**x, "iterations"),
    ),
}


@pytest.mark.parametrize("name", sorted(COPIED))
def test_callback_copies_after_a_fit_as_a_fresh_one(name):
    make, reference = COPIED[name]
    cb = make()
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    fit(model, [cb], epochs=3)
    clones = {
        "deepcopy": copy.deepcopy(cb),
        "pickle": pickle.loads(pickle.dumps(cb)),
        "deepcopy before": copy.deepcopy(make()),
    }
    for how, clone in clones.items():
        assert clone.model is None and clone.params is None, how
        same_as_fresh(clone, make())
        # A copy starts its own schedule: OneCycle sizes it from the copy's
        # first fit (2 epochs: 10 steps), CyclicLR starts at step 0.
        recorder = Recorder()
        fit(make_model(keras.optimizers.SGD(0.1, momentum=0.9)), [clone, recorder], epochs=2)
        expected = np.array([reference(k, 10) for k in range(10)])
        np.testing.assert_allclose(
            recorder.lr, expected[:, 0].astype(np.float32), rtol=1e-6, err_msg=how
        )
        np.testing.assert_allclose(
            recorder.momentum, expected[:, 1].astype(np.float32), rtol=1e-6, err_msg=how
        )
    # The original continues its schedule on its model (OneCycle holds its
    # last value past its 15-step cycle, with a warning).
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(model, [cb, recorder], epochs=1)
    expected = np.array([reference(k, 15) for k in range(15, 20)])
    np.testing.assert_allclose(recorder.lr, expected[:, 0].astype(np.float32), rtol=1e-6)


class SharedRecorder(keras.callbacks.Callback):
    """Records the logged learning rates in a class attribute, which the deep
    copies Keras Tuner makes of its callbacks share."""

    lr = []

    def on_train_batch_end(self, batch, logs=None):
        type(self).lr.append(float(logs["learning_rate"]))


def test_keras_tuner_searches_with_a_used_callback(tmp_path):
    kt = pytest.importorskip("keras_tuner")
    cb = keras_clr.OneCycle(0.05)
    fit(make_model(keras.optimizers.SGD(0.1, momentum=0.9)), [cb], epochs=2)

    def build(hp):
        return make_model(keras.optimizers.SGD(0.1, momentum=hp.Choice("momentum", [0.8, 0.9])))

    tuner = kt.RandomSearch(
        build,
        objective="loss",
        max_trials=2,
        seed=0,
        directory=str(tmp_path),
        project_name="search",
    )
    SharedRecorder.lr = []
    tuner.search(
        X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[cb, SharedRecorder()]
    )
    trials = tuner.oracle.trials.values()
    assert len(trials) == 2
    assert all(trial.status == "COMPLETED" for trial in trials)
    # Each trial ran a copy sized by its own 1-epoch fit: a 5-step cycle.
    expected = [torch_one_cycle(k, STEPS_PER_EPOCH, 0.05)[0] for k in range(STEPS_PER_EPOCH)]
    np.testing.assert_allclose(SharedRecorder.lr, np.float32(expected * 2), rtol=1e-6)
    assert cb.lr_schedule.total_steps == 10  # the original keeps its cycle


# --- a CyclicLR that cannot reach max_lr ----------------------------------------


def unreached(record):
    return [str(w.message) for w in record if "will not reach max_lr" in str(w.message)]


def test_cyclic_lr_that_cannot_reach_max_lr_warns_once():
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    cb = keras_clr.CyclicLR(1e-3, 0.1)  # step_size_up=2000
    peak = 1e-3 + (0.1 - 1e-3) * 14 / 2000  # at the fit's last step, 14
    with pytest.warns(UserWarning, match="will not reach max_lr") as record:
        fit(model, [cb], epochs=3)
    [message] = unreached(record)
    assert "step_size_up=2000" in message and "plans 15 steps" in message
    assert f"peaks at {peak:.3g}" in message and "(10 to 50 here)" in message
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(model, [cb], epochs=3)
    assert not unreached(record)


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_cyclic_lr_reach_counts_from_where_the_fit_starts():
    with pytest.warns(UserWarning, match="schedule steps 0 to 9"):
        fit(
            make_model(keras.optimizers.SGD(0.1, momentum=0.9)),
            [keras_clr.CyclicLR(0.01, 0.1, step_size_up=12)],
            epochs=2,
        )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # Steps 10 to 14: past the peak at step 12.
        fit(
            make_model(keras.optimizers.SGD(0.1, momentum=0.9)),
            [keras_clr.CyclicLR(0.01, 0.1, step_size_up=12)],
            epochs=3,
            initial_epoch=2,
        )
        # Data of no length: no warning; the sized fit after it continues
        # from step 10.
        model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
        cb, recorder = keras_clr.CyclicLR(0.01, 0.1, step_size_up=12), Recorder()
        model.fit(unsized_dataset(), epochs=2, verbose=0, callbacks=[cb])
        fit(model, [cb, recorder], epochs=1)
    assert not unreached(record)
    expected = [torch_cyclic(k, 0.01, 0.1, 12)[0] for k in range(10, 15)]
    np.testing.assert_allclose(recorder.lr, np.float32(expected), rtol=1e-6)


@pytest.mark.parametrize("step_size_up", [5, 15])
def test_cyclic_lr_that_reaches_max_lr_does_not_warn(step_size_up):
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit(model, [keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=step_size_up)], epochs=3)
    assert not unreached(record)


# --- argument checks ------------------------------------------------------------

BAD = [
    (lambda: keras_clr.CyclicLR(0.0, 1e-2), named("base_lr", 0.0)),
    (lambda: keras_clr.CyclicLR(-1e-3, 1e-2), named("base_lr", -1e-3)),
    (lambda: keras_clr.CyclicLR(1e-3, math.nan), named("max_lr", math.nan)),
    (lambda: keras_clr.CyclicLR(1e-3, math.inf), named("max_lr", math.inf)),
    (lambda: keras_clr.CyclicLR(1e-2, 1e-3), ordered("base_lr", "max_lr", 1e-3)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=0), named("step_size_up", 0)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=2.5), named("step_size_up", 2.5)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, step_size_down=0), named("step_size_down", 0)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, step_size_down=2.5), named("step_size_down", 2.5)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, mode="cosine"), named("mode", "cosine")),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, scale_mode="epoch"), named("scale_mode", "epoch")),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, mode="exp_range", gamma=0.0), named("gamma", 0.0)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, mode="exp_range", gamma=1.01), named("gamma", 1.01)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, scale_fn=2.0), named("scale_fn", 2.0)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, base_momentum=-0.1), named("base_momentum", -0.1)),
    (lambda: keras_clr.CyclicLR(1e-3, 1e-2, max_momentum=1.5), named("max_momentum", 1.5)),
    (
        lambda: keras_clr.CyclicLR(1e-3, 1e-2, base_momentum=0.95, max_momentum=0.9),
        ordered("base_momentum", "max_momentum", 0.9),
    ),
    (lambda: keras_clr.OneCycle(0.0), named("max_lr", 0.0)),
    (lambda: keras_clr.OneCycle(math.inf), named("max_lr", math.inf)),
    (lambda: keras_clr.OneCycle(1e-2, total_steps=0), named("total_steps", 0)),
    (lambda: keras_clr.OneCycle(1e-2, total_steps=-5), named("total_steps", -5)),
    (lambda: keras_clr.OneCycle(1e-2, total_steps=2.5), named("total_steps", 2.5)),
    (lambda: keras_clr.OneCycle(1e-2, pct_start=0.0), named("pct_start", 0.0)),
    (lambda: keras_clr.OneCycle(1e-2, pct_start=1.0), named("pct_start", 1.0)),
    (
        lambda: keras_clr.OneCycle(1e-2, anneal_strategy="cosine"),
        named("anneal_strategy", "cosine"),
    ),
    (lambda: keras_clr.OneCycle(1e-2, div_factor=0.0), named("div_factor", 0.0)),
    (lambda: keras_clr.OneCycle(1e-2, final_div_factor=-1.0), named("final_div_factor", -1.0)),
    (lambda: keras_clr.OneCycle(1e-2, base_momentum=math.nan), named("base_momentum", math.nan)),
    (lambda: keras_clr.OneCycle(1e-2, max_momentum=1.01), named("max_momentum", 1.01)),
    (
        lambda: keras_clr.OneCycle(1e-2, base_momentum=0.96),
        ordered("base_momentum", "max_momentum", 0.95),
    ),
]


@pytest.mark.parametrize("factory, match", BAD, ids=[m for _, m in BAD])
def test_invalid_argument_raises_at_construction(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
