"""The public API on the JAX and PyTorch Keras backends.

Not collected by the TensorFlow run (the name does not match `test_*.py`):
tests/test_backends.py runs it in a subprocess per backend with
KERAS_BACKEND set, since Keras fixes its backend at import. On JAX the
subprocess also has two host devices (XLA_FLAGS), for the DataParallel cases.

References are closed-form: the schedules as PyTorch writes them, and
float64 NumPy update loops for a linear model with MSE, whose gradients are
written out here.
"""

import math

import keras
import numpy as np
import pytest

if keras.backend.backend() not in ("jax", "torch"):
    pytest.skip(
        "runs under KERAS_BACKEND=jax or torch (see test_backends.py)", allow_module_level=True
    )

import keras_clr  # noqa: E402
from keras_clr import schedules  # noqa: E402

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(20, 3)).astype("float32")
Y = (X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
BATCH = 4
STEPS_PER_EPOCH = 5
KERNEL = np.array([[0.2], [-0.1], [0.4]], dtype="float32")
BIAS = np.array([0.1], dtype="float32")
TOL = dict(rtol=1e-5, atol=1e-6)  # float32 training against float64 references


# -- closed-form references ---------------------------------------------------


def one_cycle_ref(k, total, max_lr, low, high, pct_start=0.3, div=25.0, final_div=1e4):
    """PyTorch's OneCycleLR (cos, two phases): (learning rate, momentum)."""
    initial, final = max_lr / div, max_lr / div / final_div
    k = min(k, total - 1)
    end1, end2 = pct_start * total - 1, total - 1

    def cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if k <= end1:
        pct = k / end1
        return cos(initial, max_lr, pct), cos(high, low, pct)
    pct = (k - end1) / (end2 - end1)
    return cos(max_lr, final, pct), cos(low, high, pct)


def cyclic_ref(k, base, peak, up, down, low, high, gamma=None):
    """PyTorch's CyclicLR: (learning rate, momentum); exp_range with gamma."""
    total = up + down
    ratio = up / total
    cycle = math.floor(1 + k / total)
    x = 1.0 + k / total - cycle
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    scale = 1.0 if gamma is None else gamma**k
    return (base + (peak - base) * height * scale, high - (high - low) * height * scale)


def wsd_ref(k, warmup, stable, decay, ratio=0.0, warmup_type="linear", decay_type="1-sqrt"):
    """transformers' get_wsd_schedule multiplier (stable None: no cooldown)."""
    if k < warmup:
        t = k / warmup
        h = {
            "linear": t,
            "cosine": (1 - math.cos(math.pi * t)) / 2,
            "1-sqrt": 1 - math.sqrt(1 - t),
        }[warmup_type]
        return ratio + (1 - ratio) * h
    if stable is None or k < warmup + stable:
        return 1.0
    if k >= warmup + stable + decay:
        return ratio
    t = (k - warmup - stable) / decay
    h = {"linear": 1 - t, "cosine": (1 + math.cos(math.pi * t)) / 2, "1-sqrt": 1 - math.sqrt(t)}[
        decay_type
    ]
    return ratio + (1 - ratio) * h


def gradients(w, b, x, y):
    """MSE of a linear model: loss and gradients, in float64."""
    r = x @ w + b - y
    return np.mean(r**2), 2.0 * x.T @ r / r.size, 2.0 * np.sum(r, axis=0) / r.size


def batches(steps):
    for k in range(steps):
        i = (k % STEPS_PER_EPOCH) * BATCH
        yield k, X[i : i + BATCH].astype(np.float64), Y[i : i + BATCH].astype(np.float64)


def sgd_ref(lrs, momenta):
    """Keras SGD: m = mu * m - lr * g; w += m. Returns (w, b, losses)."""
    w, b = KERNEL.astype(np.float64), BIAS.astype(np.float64)
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    losses = []
    for k, x, y in batches(len(lrs)):
        loss, gw, gb = gradients(w, b, x, y)
        losses.append(loss)
        mw = momenta[k] * mw - lrs[k] * gw
        mb = momenta[k] * mb - lrs[k] * gb
        w, b = w + mw, b + mb
    return w, b, np.array(losses)


def adam_ref(lrs, beta_1s, beta_2=0.999, eps=1e-7):
    """Keras Adam with the step's beta_1 in its update and bias correction."""
    w, b = KERNEL.astype(np.float64), BIAS.astype(np.float64)
    state = [[np.zeros_like(w), np.zeros_like(w)], [np.zeros_like(b), np.zeros_like(b)]]
    for k, x, y in batches(len(lrs)):
        _, gw, gb = gradients(w, b, x, y)
        t, b1 = k + 1, beta_1s[k]
        alpha = lrs[k] * math.sqrt(1 - beta_2**t) / (1 - b1**t)
        new = []
        for value, g, (m, v) in zip((w, b), (gw, gb), state):
            m += (g - m) * (1 - b1)
            v += (g * g - v) * (1 - beta_2)
            new.append(value - alpha * m / (np.sqrt(v) + eps))
        w, b = new
    return w, b


# -- helpers --------------------------------------------------------------------


@pytest.fixture
def two_devices():
    """JAX DataParallel over the two host devices the subprocess has."""
    import jax

    if len(jax.devices()) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    yield
    keras.distribution.set_distribution(None)


def make_model(optimizer, **compile_kwargs):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([KERNEL, BIAS])
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def weights(model):
    kernel, bias = (keras.ops.convert_to_numpy(v) for v in model.weights)
    return kernel.astype(np.float64), bias.astype(np.float64)


def state_bytes(model):
    """Every model, optimizer and metric variable, as raw bytes."""
    variables = model.variables + model.optimizer.variables + model.metrics_variables
    return [(v.path, keras.ops.convert_to_numpy(v).tobytes()) for v in variables]


class BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append({k: float(keras.ops.convert_to_numpy(v)) for k, v in logs.items()})


# -- schedules --------------------------------------------------------------------

STEPS = [0, 1, 2, 3, 7, 29, 30, 31, 64, 99, 100, 1000, 10**6, 2**31 - 1]


@pytest.mark.parametrize(
    "name", ["one_cycle", "triangular", "exp_range", "momentum", "wsd", "wsd_momentum"]
)
def test_schedule_values_host_and_tensor(name):
    if name == "wsd":
        schedule = schedules.WarmupStableDecayLearningRate(
            0.1, 30, 0.2, total_steps=1000, warmup_type="1-sqrt", min_lr_ratio=0.1
        )
        ref = lambda k: 0.1 * wsd_ref(k, 30, 770, 200, 0.1, "1-sqrt")  # noqa: E731
    elif name == "wsd_momentum":
        schedule = schedules.WarmupStableDecayMomentum(
            7, 64, stable_steps=22, warmup_type="cosine", decay_type="cosine"
        )
        ref = lambda k: 0.95 - 0.1 * wsd_ref(k, 7, 22, 64, 0.0, "cosine", "cosine")  # noqa: E731
    elif name == "one_cycle":
        schedule = schedules.OneCycleLearningRate(0.1, 100)
        ref = lambda k: one_cycle_ref(k, 100, 0.1, 0.85, 0.95)[0]  # noqa: E731
    elif name == "triangular":
        schedule = schedules.TriangularCyclicalLearningRate(1e-3, 1e-1, 5, step_size_down=3)
        ref = lambda k: cyclic_ref(k, 1e-3, 1e-1, 5, 3, 0.8, 0.9)[0]  # noqa: E731
    elif name == "exp_range":
        schedule = schedules.ExponentialCyclicalLearningRate(1e-3, 1e-1, 5, gamma=0.99)
        ref = lambda k: cyclic_ref(k, 1e-3, 1e-1, 5, 5, 0.8, 0.9, 0.99)[0]  # noqa: E731
    else:
        schedule = schedules.OneCycleMomentum(100)
        ref = lambda k: one_cycle_ref(k, 100, 0.1, 0.85, 0.95)[1]  # noqa: E731
    expected = np.array([ref(k) for k in STEPS])
    host = np.array([schedule(k) for k in STEPS])
    np.testing.assert_allclose(host, expected, rtol=1e-12)
    tensor = np.array(
        [
            float(keras.ops.convert_to_numpy(schedule(keras.ops.convert_to_tensor(k, "int32"))))
            for k in STEPS
        ]
    )
    keep = expected > 1e-30  # exp_range underflows at 2**31 - 1
    np.testing.assert_allclose(tensor[keep], expected[keep], rtol=1e-6)


# -- CyclicLR and OneCycle in fit ---------------------------------------------------


def test_one_cycle_sgd_momentum_matches_reference():
    model = make_model(keras.optimizers.SGD(momentum=0.9))
    batch_logs = BatchLogs()
    history = model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.5), batch_logs],
    )
    steps = 2 * STEPS_PER_EPOCH
    lrs, momenta = zip(*(one_cycle_ref(k, steps, 0.5, 0.85, 0.95) for k in range(steps)))
    w, b, _ = sgd_ref(lrs, momenta)
    kernel, bias = weights(model)
    np.testing.assert_allclose(kernel, w, **TOL)
    np.testing.assert_allclose(bias, b, **TOL)
    # Negative control: the optimizer's own constant momentum ends elsewhere.
    w_const, _, _ = sgd_ref(lrs, [0.9] * steps)
    assert np.max(np.abs(w_const - w)) > 1e-3
    # Logs: per batch and per epoch, the values in force.
    np.testing.assert_allclose([r["learning_rate"] for r in batch_logs.rows], lrs, rtol=1e-6)
    np.testing.assert_allclose([r["momentum"] for r in batch_logs.rows], momenta, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], lrs[4::5], rtol=1e-6)
    np.testing.assert_allclose(history.history["momentum"], momenta[4::5], rtol=1e-6)
    # The optimizer's learning-rate variable holds the last applied value.
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), lrs[-1], rtol=1e-6
    )
    assert model.optimizer.momentum == 0.9  # the float is back after fit


def test_cyclic_adam_beta_1_matches_reference():
    model = make_model(keras.optimizers.Adam(beta_1=0.9))
    callback = keras_clr.CyclicLR(
        0.01, 0.2, step_size_up=3, step_size_down=2, base_momentum=0.8, max_momentum=0.95
    )
    model.fit(X, Y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
    steps = 3 * STEPS_PER_EPOCH
    lrs, beta_1s = zip(*(cyclic_ref(k, 0.01, 0.2, 3, 2, 0.8, 0.95) for k in range(steps)))
    w, b = adam_ref(lrs, beta_1s)
    kernel, bias = weights(model)
    np.testing.assert_allclose(kernel, w, **TOL)
    np.testing.assert_allclose(bias, b, **TOL)
    w_const, _ = adam_ref(lrs, [0.9] * steps)
    assert np.max(np.abs(w_const - w)) > 1e-3
    assert model.optimizer.beta_1 == 0.9


def test_schedule_continues_across_fits():
    model = make_model(keras.optimizers.SGD(momentum=0.9))
    callback = keras_clr.OneCycle(0.5, total_steps=10)
    for _ in range(2):
        model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    lrs, momenta = zip(*(one_cycle_ref(k, 10, 0.5, 0.85, 0.95) for k in range(10)))
    w, b, _ = sgd_ref(lrs, momenta)
    np.testing.assert_allclose(weights(model)[0], w, **TOL)


class ReadApplied(keras.callbacks.Callback):
    """The optimizer's learning rate after each call, beside the logged one."""

    def __init__(self):
        super().__init__()
        self.applied, self.logged = [], []

    def on_train_batch_end(self, batch, logs=None):
        rate = self.model.optimizer.learning_rate
        self.applied.append(float(keras.ops.convert_to_numpy(rate)))
        self.logged.append(float(logs["learning_rate"]))


def test_gradient_accumulation_counts_updates():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=5))
    callback, reader = keras_clr.OneCycle(0.5), ReadApplied()
    model.fit(
        X, Y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0, callbacks=[callback, reader]
    )
    assert callback.lr_schedule.total_steps == 4
    assert reader.logged == reader.applied
    expected = [one_cycle_ref(b // 5, 4, 0.5, 0.85, 0.95)[0] for b in range(20)]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))


def test_unsized_data_steps_every_batch():
    def generator():
        for i in range(STEPS_PER_EPOCH):
            yield X[i * BATCH : (i + 1) * BATCH], Y[i * BATCH : (i + 1) * BATCH]

    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    callback, reader = keras_clr.CyclicLR(0.01, 0.1, step_size_up=3), ReadApplied()
    for _ in range(3):  # one epoch of a fresh generator per fit
        model.fit(generator(), epochs=1, verbose=0, callbacks=[callback, reader])
    assert reader.logged == reader.applied
    expected = [cyclic_ref(k, 0.01, 0.1, 3, 3, 0.8, 0.9)[0] for k in range(15)]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))


def test_backup_and_restore_resume(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == (1, 3):
                raise RuntimeError("preempted")

    def run(callbacks, model=None):
        model = model or make_model(keras.optimizers.SGD(0.01, momentum=0.9))
        model.fit(X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    reference = ReadApplied()
    run([keras_clr.OneCycle(0.5), reference])
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="preempted"):
        run(
            [
                keras_clr.OneCycle(0.5),
                keras.callbacks.BackupAndRestore(backup, save_freq=2),
                Interrupt(),
            ]
        )
    resumed = ReadApplied()
    run([keras_clr.OneCycle(0.5), keras.callbacks.BackupAndRestore(backup, save_freq=2), resumed])
    assert resumed.applied == reference.applied[STEPS_PER_EPOCH:]
    assert resumed.logged == resumed.applied


class Call(keras.callbacks.Callback):
    """Calls `action()` at the end of batch `batch` of epoch `epoch`."""

    def __init__(self, action, epoch, batch):
        super().__init__()
        self.action, self.at = action, (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.action()


def test_warmup_stable_decay_cooldown_on_demand():
    model = make_model(keras.optimizers.SGD(momentum=0.9))
    callback = keras_clr.WarmupStableDecay(0.5, warmup_steps=2, decay_steps=4)
    reader = ReadApplied()
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callback, Call(callback.start_cooldown, 1, 1), reader],
    )
    assert callback.decay_start == 7  # the step after batch 1 of epoch 1
    lrs = [0.5 * wsd_ref(k, 2, 5, 4) for k in range(15)]
    momenta = [0.95 - 0.1 * wsd_ref(k, 2, 5, 4) for k in range(15)]
    np.testing.assert_array_equal(reader.applied, np.float32(lrs))
    assert reader.logged == reader.applied
    w, b, _ = sgd_ref(lrs, momenta)
    np.testing.assert_allclose(weights(model)[0], w, **TOL)
    np.testing.assert_allclose(weights(model)[1], b, **TOL)


def test_warmup_stable_decay_extended_is_the_longer_plan():
    def run(total, *extend):
        model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
        callback, reader = (
            keras_clr.WarmupStableDecay(0.5, warmup_steps=2, decay_steps=0.2, total_steps=total),
            ReadApplied(),
        )
        calls = [Call(lambda: callback.extend(*extend), 0, 3)] if extend else []
        model.fit(
            X,
            Y,
            batch_size=BATCH,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[callback, *calls, reader],
        )
        return model, reader

    planned, expected = run(20)
    extended, reader = run(10, 20)
    assert reader.applied == expected.applied and reader.logged == reader.applied
    for a, b in zip(weights(extended), weights(planned)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        expected.applied, np.float32([0.5 * wsd_ref(k, 2, 14, 4) for k in range(20)])
    )


def test_warmup_stable_decay_under_a_loss_scale():
    # On JAX the host cannot read the update count mid-epoch: a cooldown asked
    # for mid-epoch under a loss scale starts with the next epoch, and says so.
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01, momentum=0.9))
    model = make_model(optimizer)
    callback = keras_clr.WarmupStableDecay(0.5, warmup_steps=2, decay_steps=3)
    reader = ReadApplied()
    call = Call(callback.start_cooldown, 0, 1)
    if BACKEND == "jax":
        with pytest.warns(UserWarning, match="next epoch's first step"):
            model.fit(
                X,
                Y,
                batch_size=BATCH,
                epochs=3,
                shuffle=False,
                verbose=0,
                callbacks=[callback, call, reader],
            )
        start = STEPS_PER_EPOCH
    else:
        model.fit(
            X,
            Y,
            batch_size=BATCH,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[callback, call, reader],
        )
        start = 2
    assert callback.decay_start == start
    assert reader.logged == reader.applied
    expected = [0.5 * wsd_ref(k, 2, start - 2, 3) for k in range(15)]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))


def test_conflicting_callback_is_refused():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    with pytest.raises(ValueError, match="ReduceLROnPlateau.*OneCycle"):
        model.fit(
            X,
            Y,
            batch_size=BATCH,
            epochs=1,
            verbose=0,
            callbacks=[keras_clr.OneCycle(0.5), keras.callbacks.ReduceLROnPlateau()],
        )


# -- the range test ------------------------------------------------------------------


def range_lrs(start, end, count):
    return [start * (end / start) ** (i / (count - 1)) for i in range(count)]


@pytest.mark.skipif(BACKEND != "torch", reason="a torch DataLoader, on PyTorch")
def test_find_lr_on_a_torch_data_loader():
    import torch

    data = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH)  # 5 batches
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    before = [w.tobytes() for w in model.get_weights()]
    result = keras_clr.find_lr(model, loader, num_steps=12, end_lr=1.0, stop_factor=None, verbose=0)
    assert result.stop_reason == "completed"
    np.testing.assert_allclose(result.lrs, range_lrs(1e-7, 1.0, 12), rtol=1e-6)
    assert [w.tobytes() for w in model.get_weights()] == before


def test_find_lr_records_true_batch_losses():
    model = make_model(keras.optimizers.SGD(momentum=0.5))
    result = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=12,
        stop_factor=None,
        verbose=0,
        shuffle=False,
    )
    lrs = range_lrs(1e-3, 0.1, 12)
    _, _, losses = sgd_ref(lrs, [0.5] * 12)
    assert result.stop_reason == "completed"
    np.testing.assert_allclose(result.lrs, lrs, rtol=1e-6)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    # Not Keras's running mean: the losses rise and fall batch by batch.
    assert not np.allclose(result.losses, np.cumsum(losses) / np.arange(1, 13), rtol=1e-3)


class Boom(keras.callbacks.Callback):
    """Raises in the seventh step, in the test's second epoch."""

    calls = 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1
        if self.calls == 7:
            raise RuntimeError("boom")


@pytest.mark.parametrize("ending", ["completed", "diverged", "exception"])
def test_find_lr_restores_bit_identically(ending):
    model = make_model(keras.optimizers.Adam(1e-3))
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)  # slots and counts not zero
    before = state_bytes(model)
    metrics = list(model.metrics)
    kwargs = dict(batch_size=BATCH, num_steps=12, verbose=0)
    if ending == "completed":
        result = keras_clr.find_lr(model, X, Y, end_lr=1e-2, stop_factor=None, **kwargs)
        assert result.stop_reason == "completed"
    elif ending == "diverged":
        result = keras_clr.find_lr(model, X, Y, start_lr=1.0, end_lr=1e4, **kwargs)
        assert result.stop_reason in ("diverged", "nan")
        assert len(result.losses) < 12
    else:
        with pytest.raises(RuntimeError, match="boom"):
            keras_clr.find_lr(
                model, X, Y, end_lr=1e-2, stop_factor=None, callbacks=[Boom()], **kwargs
            )
    assert state_bytes(model) == before
    assert model.metrics == metrics
    # The model trains on as it would have without the test.
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)


def test_find_lr_repeats_share_a_step_and_restore():
    # The repeats reuse one compiled step; each must see a fresh record and
    # start from the restored model, as a test of its own does.
    from keras_clr.range_test import api as range_api
    from keras_clr.range_test import state as range_state

    model = make_model(keras.optimizers.SGD(momentum=0.5))
    range_state.build_optimizer(model)
    before = state_bytes(model)
    metrics = list(model.metrics)
    settings = dict(start_lr=1e-3, end_lr=0.1, num_steps=12, stop_factor=None)
    shared = keras_clr.find_lr(
        model, X, Y, batch_size=BATCH, repeats=3, verbose=0, shuffle=False, **settings
    )
    assert state_bytes(model) == before and model.metrics == metrics
    runs = [
        range_api._run_once(
            model,
            X,
            Y,
            BATCH,
            keras_clr.LRFinder(**settings, verbose=0),
            None,
            {"shuffle": False},
            repeat,
        )
        for repeat in range(3)
    ]
    assert state_bytes(model) == before and model.metrics == metrics
    separate = range_api._average(runs)
    np.testing.assert_array_equal(shared.lrs, separate.lrs)
    np.testing.assert_allclose(shared.losses, separate.losses, rtol=1e-6)


class HidesNaN(keras.layers.Layer):
    """NaN activations to 0, as TensorFlow's oneDNN fused ReLU: a NaN input
    gives a finite loss and a NaN kernel gradient."""

    def call(self, x):
        return keras.ops.where(keras.ops.isnan(x), 0.0, x)


def test_nan_weights_under_a_finite_loss_stop_the_test():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            HidesNaN(),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    before = state_bytes(model)
    x = X.copy()
    x[2 * BATCH + 1, 0] = np.nan  # in the third batch
    result = keras_clr.find_lr(
        model,
        x,
        Y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=12,
        stop_factor=None,
        shuffle=False,
        verbose=0,
    )
    assert result.stop_reason == "nan"
    np.testing.assert_allclose(result.lrs, range_lrs(1e-3, 0.1, 12)[:3], rtol=1e-6)
    assert np.isfinite(result.losses[:2]).all() and np.isnan(result.losses[2])
    assert result.nonfinite_variable == model.layers[0].kernel.path
    assert result.nonfinite_step == 2
    assert repr(model.layers[0].kernel.path) in result.explain("one_cycle")
    assert state_bytes(model) == before


class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            raise KeyboardInterrupt


def test_interrupted_finder_keeps_its_partial_result():
    from keras_clr.range_test import state as range_state

    model = make_model(keras.optimizers.SGD(momentum=0.5))
    range_state.build_optimizer(model)  # its slots in `before`, at zero
    before = state_bytes(model)
    with pytest.raises(KeyboardInterrupt):
        with keras_clr.LRFinder(
            start_lr=1e-3, end_lr=0.1, num_steps=12, stop_factor=None, verbose=0
        ) as finder:
            model.fit(
                X,
                Y,
                batch_size=BATCH,
                epochs=3,
                shuffle=False,
                verbose=0,
                callbacks=[finder, Interrupt()],
            )
    lrs = range_lrs(1e-3, 0.1, 12)
    _, _, losses = sgd_ref(lrs, [0.5] * 12)
    assert finder.result.stop_reason == "interrupted"
    np.testing.assert_allclose(finder.result.lrs, lrs[:4], rtol=1e-6)
    np.testing.assert_allclose(finder.result.losses, losses[:4], rtol=1e-5)
    assert state_bytes(model) == before


# -- backend specifics -------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "jax", reason="JAX runs several steps per call")
def test_jax_steps_per_execution():
    model = make_model(keras.optimizers.SGD(momentum=0.5), steps_per_execution=3)
    result = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=12,
        stop_factor=None,
        verbose=0,
        shuffle=False,
    )
    lrs = range_lrs(1e-3, 0.1, 12)
    np.testing.assert_allclose(result.losses, sgd_ref(lrs, [0.5] * 12)[2], rtol=1e-5)
    model = make_model(keras.optimizers.SGD(momentum=0.9), steps_per_execution=2)
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.5)],
    )
    lrs, momenta = zip(*(one_cycle_ref(k, 10, 0.5, 0.85, 0.95) for k in range(10)))
    np.testing.assert_allclose(weights(model)[0], sgd_ref(lrs, momenta)[0], **TOL)


@pytest.mark.skipif(BACKEND != "torch", reason="Keras's own limit on PyTorch")
def test_torch_refuses_steps_per_execution():
    model = make_model(keras.optimizers.SGD(momentum=0.9), steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[keras_clr.OneCycle(0.5)])


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is JAX-only")
def test_jax_data_parallel(two_devices):
    model = make_model(keras.optimizers.SGD(momentum=0.5))
    model.optimizer.build(model.trainable_variables)
    before = state_bytes(model)
    result = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=12,
        stop_factor=None,
        verbose=0,
        shuffle=False,
    )
    lrs = range_lrs(1e-3, 0.1, 12)
    np.testing.assert_allclose(result.losses, sgd_ref(lrs, [0.5] * 12)[2], rtol=1e-5)
    assert state_bytes(model) == before

    model = make_model(keras.optimizers.SGD(momentum=0.9))
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.5)],
    )
    lrs, momenta = zip(*(one_cycle_ref(k, 10, 0.5, 0.85, 0.95) for k in range(10)))
    np.testing.assert_allclose(weights(model)[0], sgd_ref(lrs, momenta)[0], **TOL)


def test_tune_max_lr_restores_and_keeps_its_budget():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)  # slots and a count to restore
    before = [
        np.array(keras.ops.convert_to_numpy(v)) for v in model.variables + model.optimizer.variables
    ]
    search = keras_clr.tune_max_lr(
        model, X, Y, batch_size=BATCH, total_steps=20, budget_steps=180, verbose=0
    )
    after = [
        np.array(keras.ops.convert_to_numpy(v)) for v in model.variables + model.optimizer.variables
    ]
    for old, new in zip(before, after):
        assert old.tobytes() == new.tobytes()
    assert search.steps_used <= 180 and search.max_lr is not None
    history = keras_clr.fit_one_cycle(
        model, X, Y, batch_size=BATCH, epochs=2, max_lr=0.05, verbose=0
    )
    assert len(history.history["loss"]) == 2


def test_race_winner_is_a_plain_fit_at_its_rate():
    # from a model trained one epoch (slots and a count for each candidate
    # to start from), shuffled batches: the winner's run equals plain fits
    # fed epoch e's batches in the race's order for e
    xv, yv = X[:8] + 0.1, Y[:8]

    def compiled():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
        )
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
        model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        return model

    model = compiled()
    history = keras_clr.fit_one_cycle(
        model,
        X,
        Y,
        batch_size=BATCH,
        epochs=4,
        max_lr="race",
        candidates=[0.003, 0.01, 0.03],
        race_seed=7,
        validation_data=(xv, yv),
        verbose=0,
    )
    race = history.race
    assert race.winner in race.candidates and race.compute == (3 * 1 + 3 * 1 + 1 * 2) / 4
    plain = compiled()
    schedule = keras_clr.OneCycle(race.winner, total_steps=4 * STEPS_PER_EPOCH)
    for epoch in range(4):
        order = np.random.default_rng([7, epoch]).permutation(len(X))
        plain.fit(
            X[order],
            Y[order],
            batch_size=BATCH,
            shuffle=False,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=[schedule],
        )
    for got, want in zip(
        model.variables + model.optimizer.variables, plain.variables + plain.optimizer.variables
    ):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want), rtol=1e-5, atol=1e-7
        )
    assert history.epoch == [0, 1, 2, 3]


# -- a MultiOptimizer (Keras 3.15 on): a learning rate per group ----------------------

needs_multi = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras 3.15 introduced MultiOptimizer"
)


def multi_model(kernel, bias):
    """The linear model with its kernel and its bias in groups of their own."""
    return make_model(
        keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(kernel, {".*bias.*": bias}))
    )


def multi_ref(kernel_lrs, bias_lrs, momenta, beta_2=0.999, eps=1e-7):
    """SGD with momentum on the kernel, Adam with beta_1 = momentum on the
    bias, each at its own rates."""
    w, b = KERNEL.astype(np.float64), BIAS.astype(np.float64)
    mw, m, v = np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    for k, x, y in batches(len(kernel_lrs)):
        _, gw, gb = gradients(w, b, x, y)
        mw = momenta[k] * mw - kernel_lrs[k] * gw
        w = w + mw
        t, b1 = k + 1, momenta[k]
        alpha = bias_lrs[k] * math.sqrt(1 - beta_2**t) / (1 - b1**t)
        m += (gb - m) * (1 - b1)
        v += (gb * gb - v) * (1 - beta_2)
        b = b - alpha * m / (np.sqrt(v) + eps)
    return w, b


class ReadGroups(keras.callbacks.Callback):
    """Each sub-optimizer's learning rate after each call, and the logs."""

    def __init__(self):
        super().__init__()
        self.applied, self.logs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.applied.append(
            {
                o.name: float(keras.ops.convert_to_numpy(o.learning_rate))
                for o in self.model.optimizer.optimizers
            }
        )
        self.logs.append({k: float(keras.ops.convert_to_numpy(v)) for k, v in logs.items()})


@needs_multi
def test_one_cycle_drives_each_group_of_a_multi_optimizer():
    kernel, bias = keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(0.01)
    model = multi_model(kernel, bias)
    reader = ReadGroups()
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.5), reader],
    )
    steps = 2 * STEPS_PER_EPOCH
    lrs, momenta = zip(*(one_cycle_ref(k, steps, 0.5, 0.85, 0.95) for k in range(steps)))
    ratio = float(np.float32(0.01)) / float(np.float32(0.1))
    np.testing.assert_allclose([s[kernel.name] for s in reader.applied], lrs, rtol=1e-6)
    np.testing.assert_allclose(
        [s[bias.name] for s in reader.applied], np.array(lrs) * ratio, rtol=1e-6
    )
    for group in (kernel, bias):  # logged as Keras names the groups: what each applied
        assert [r[f"learning_rate_{group.name}"] for r in reader.logs] == [
            s[group.name] for s in reader.applied
        ]
    w, b = multi_ref(lrs, np.array(lrs) * ratio, momenta)
    np.testing.assert_allclose(weights(model)[0], w, **TOL)
    np.testing.assert_allclose(weights(model)[1], b, **TOL)
    # Negative control: the bias at the schedule's own rate ends elsewhere.
    assert np.max(np.abs(multi_ref(lrs, lrs, momenta)[1] - b)) > 1e-3
    assert kernel.momentum == 0.9 and bias.beta_1 == 0.9  # the floats are back


@needs_multi
def test_groups_that_accumulate_count_updates():
    kernel = keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=5)
    bias = keras.optimizers.SGD(0.05, momentum=0.9, gradient_accumulation_steps=5)
    model = multi_model(kernel, bias)
    reader = ReadGroups()
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.5), reader],
    )
    expected = [one_cycle_ref(b // 5, 4, 0.5, 0.85, 0.95)[0] for b in range(20)]
    np.testing.assert_allclose([s[kernel.name] for s in reader.applied], expected, rtol=1e-6)
    np.testing.assert_allclose(
        [s[bias.name] for s in reader.applied], np.array(expected) * 0.5, rtol=1e-6
    )


@needs_multi
@pytest.mark.parametrize("ending", ["completed", "diverged"])
def test_find_lr_restores_every_group_bit_identically(ending):
    kernel, bias = keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(0.01)
    model = multi_model(kernel, bias)
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)  # slots and counts not zero
    before = state_bytes(model)
    assert any(bias.name in path and "momentum" in path for path, _ in before)
    reader = ReadGroups()
    kwargs = dict(batch_size=BATCH, num_steps=12, verbose=0, callbacks=[reader])
    if ending == "completed":
        result = keras_clr.find_lr(model, X, Y, end_lr=1e-2, stop_factor=None, **kwargs)
        assert result.stop_reason == "completed"
        # Every group ramps, at its ratio; the curve has the largest group's rates.
        ramp = range_lrs(1e-7, 1e-2, 12)
        np.testing.assert_allclose(result.lrs, ramp, rtol=1e-6)
        np.testing.assert_allclose(
            [s[bias.name] for s in reader.applied[:12]], np.array(ramp) * 0.1, rtol=1e-6
        )
    else:
        result = keras_clr.find_lr(model, X, Y, start_lr=1.0, end_lr=1e4, **kwargs)
        assert result.stop_reason in ("diverged", "nan")
    assert state_bytes(model) == before
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)


@needs_multi
def test_tune_max_lr_and_fit_one_cycle_drive_a_multi_optimizer():
    kernel = keras.optimizers.SGD(0.01, momentum=0.9)
    bias = keras.optimizers.SGD(0.002, momentum=0.9)
    model = multi_model(kernel, bias)
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    before = state_bytes(model)
    search = keras_clr.tune_max_lr(
        model, X, Y, batch_size=BATCH, total_steps=20, budget_steps=180, verbose=0
    )
    assert state_bytes(model) == before
    assert search.max_lr is not None
    reader = ReadGroups()
    history = keras_clr.fit_one_cycle(
        model, X, Y, batch_size=BATCH, epochs=2, max_lr=0.05, verbose=0, callbacks=[reader]
    )
    lrs = [one_cycle_ref(k, 10, 0.05, 0.85, 0.95)[0] for k in range(10)]
    np.testing.assert_allclose(
        [s[bias.name] for s in reader.applied], np.array(lrs) * 0.2, rtol=1e-6
    )
    assert f"learning_rate_{bias.name}" in history.history


def two_layers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="body")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model


class EndWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_end(self, logs=None):
        self.ends.append({v.path: keras.ops.convert_to_numpy(v) for v in self.model.weights})


@needs_multi
def test_fine_tune_is_its_stages_by_hand_and_saves_its_groups(tmp_path):
    model, ends = two_layers(), EndWeights()
    initial = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    fit = dict(batch_size=BATCH, shuffle=False, verbose=0)
    keras_clr.fine_tune(
        model, X, Y, epochs=2, max_lr=(0.1, 0.05), lr_mult=10, callbacks=[ends], **fit
    )
    for key, value in initial.items():  # stage 1 froze the body bit for bit
        assert np.array_equal(ends.ends[0][key], value) == key.startswith("body")
    hand = two_layers()
    hand.get_layer("body").trainable = False
    hand.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    hand.fit(X, Y, epochs=1, callbacks=[keras_clr.OneCycle(0.1)], **fit)
    hand.get_layer("body").trainable = True
    hand.compile(
        optimizer=keras.optimizers.MultiOptimizer(
            keras.optimizers.OptimizerMap(
                keras.optimizers.SGD(0.05, momentum=0.9),
                {"body/.*": keras.optimizers.SGD(0.005, momentum=0.9)},
            )
        ),
        loss="mse",
    )
    hand.fit(X, Y, epochs=2, callbacks=[keras_clr.OneCycle(0.05)], **fit)
    for a, b in zip(model.get_weights(), hand.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [
        (o.name, float(keras.ops.convert_to_numpy(o.learning_rate)))
        for o in loaded.optimizer.optimizers
    ] == [
        (o.name, float(keras.ops.convert_to_numpy(o.learning_rate)))
        for o in model.optimizer.optimizers
    ]
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_joined_schedule_as_an_optimizers_learning_rate():
    # A OneCycle piece for 8 steps, then a constant: the optimizer's rate
    # after each epoch is the joined schedule's at its update count.
    joined = schedules.JoinedSchedule(
        [schedules.OneCycleLearningRate(0.1, total_steps=8), 0.001], [8]
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(joined, momentum=0.9), "mse")
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)  # 5 steps
    one_cycle = schedules.OneCycleLearningRate(0.1, total_steps=8)
    assert float(model.optimizer.learning_rate) == pytest.approx(one_cycle(5), rel=1e-6)
    model.fit(X, Y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)  # 10 steps
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001, rel=1e-6)
    steps = keras.ops.convert_to_tensor(np.arange(12))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(joined(steps)), [joined(k) for k in range(12)], rtol=1e-6
    )
