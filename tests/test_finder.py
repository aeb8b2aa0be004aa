"""Tests of keras_clr.range_test: the LR range test (`LRFinder`, `find_lr`).

Expected learning rates come from the closed form of the range test and
expected per-batch losses from a `tf.GradientTape` reference loop written
here; never from the code under test.
"""

import math
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_clr import optimizers
from keras_clr import stopping
from keras_clr import train_step
from keras_clr.range_test import LRFinder
from keras_clr.range_test import api as range_api
from keras_clr.range_test import find_lr
from keras_clr.range_test import state as range_state

BATCH = 8
SAMPLES = 40  # 5 batches of 8 per pass over the data
QUIET = dict(verbose=0)


# -- helpers -------------------------------------------------------------------


def _data(seed=0, classes=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 3)).astype("float32")
    if classes:
        y = rng.integers(0, classes, size=SAMPLES).astype("int32")
    else:
        y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(SAMPLES, 1))).astype(
            "float32"
        )
    return x, y


def _batches(x, y):
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def _model(batchnorm=False, classes=None, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((3,)), keras.layers.Dense(4, activation="tanh")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    if classes:
        layers.append(keras.layers.Dense(classes, activation="softmax"))
    else:
        layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def _compiled(optimizer=None, **kwargs):
    model = _model(batchnorm=kwargs.pop("batchnorm", False))
    model.compile(optimizer or keras.optimizers.SGD(0.01, momentum=0.9), "mse", **kwargs)
    return model


def _grid(start, end, n, mode):
    """The range test's learning rates in closed form, as float32."""
    i = np.arange(n, dtype=np.float64)
    if mode == "exp":
        values = start * (end / start) ** (i / (n - 1))
    else:
        values = start + (end - start) * i / (n - 1)
    return values.astype(np.float32)


def _state(model):
    """(path, value) of every model and optimizer variable."""
    variables = list(model.variables) + list(model.optimizer.variables)
    return [(v.path, np.array(keras.ops.convert_to_numpy(v), copy=True)) for v in variables]


def _assert_same_state(before, model):
    after = _state(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (path, old), (_, new) in zip(before, after):
        assert np.array_equal(old, new), path


def _reference(model, weights, batches, lrs, momentum=0.0, loss=None):
    """Per-batch losses and predictions of plain SGD (Keras's momentum
    formula m = mu * m - lr * g; w += m) over `batches` with rates `lrs`."""
    ref = keras.models.clone_model(model)
    ref.set_weights(weights)
    loss_fn = loss or keras.losses.MeanSquaredError()
    velocity = [tf.zeros_like(v) for v in ref.trainable_variables]
    losses, preds = [], []
    for (xb, yb), lr in zip(batches, lrs):
        with tf.GradientTape() as tape:
            pred = ref(xb, training=True)
            value = loss_fn(yb, pred)
        grads = tape.gradient(value, ref.trainable_variables)
        lr = tf.constant(lr, tf.float32)
        for i, (var, grad) in enumerate(zip(ref.trainable_variables, grads)):
            velocity[i] = momentum * velocity[i] - lr * grad
            var.assign_add(velocity[i])
        losses.append(float(value))
        preds.append(pred.numpy())
    return np.array(losses), preds


class _LearningRates(keras.callbacks.Callback):
    """Reads the optimizer's learning-rate variable at every batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        opt = self.model.optimizer
        opt = getattr(opt, "inner_optimizer", opt)
        self.seen.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))


class _Raise(keras.callbacks.Callback):
    def __init__(self, error, at=3):
        super().__init__()
        self.error, self.at = error, at

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            raise self.error


class _Changed(keras.callbacks.Callback):
    """Records whether the state moved away from `before` during the test, so
    that a restoration check is not vacuous."""

    def __init__(self, before):
        super().__init__()
        self.before, self.changed, self.looked = dict(before), False, False

    def on_train_batch_end(self, batch, logs=None):
        if batch >= 2 and not self.looked:
            self.looked = True
            now = _state(self.model)
            self.changed = any(
                path in self.before and not np.array_equal(self.before[path], value)
                for path, value in now
            )


class _Count(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = self.begins = 0

    def on_train_begin(self, logs=None):
        self.begins += 1

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _fits_normally(model, x, y):
    """The next `fit` keeps the optimizer's own learning rate; returns it."""
    opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
    probe = _LearningRates()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[probe], **QUIET)
    assert probe.seen and set(probe.seen) == {lr}
    assert np.isfinite(history.history["loss"]).all()
    assert "train_step" not in model.__dict__


# -- 1. the learning-rate grid --------------------------------------------------


@pytest.mark.parametrize(
    "mode,per_execution", [("exp", 1), ("linear", 1), ("exp", 4), ("linear", 4)]
)
def test_lr_grid_closed_form(mode, per_execution):
    x, y = _data()
    model = _compiled(steps_per_execution=per_execution)
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-4,
        end_lr=1e-1,
        num_steps=10,
        step_mode=mode,
        stop_factor=None,
        shuffle=False,
        **QUIET,
    )
    expected = _grid(1e-4, 1e-1, 10, mode)
    assert result.stop_reason == "completed"
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-6)
    assert result.lrs[0] == np.float32(1e-4) and result.lrs[-1] == np.float32(1e-1)
    assert np.isfinite(result.losses).all()


# -- 2. the true per-batch loss ------------------------------------------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_losses_match_gradient_tape_reference(momentum):
    x, y = _data()
    model = _compiled(keras.optimizers.SGD(0.01, momentum=momentum))
    weights = model.get_weights()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        shuffle=False,
        **QUIET,
    )
    assert len(result.lrs) == 12
    batches = _batches(x, y)
    order = [batches[i % 5] for i in range(12)]  # 0..4, 0..4, 0, 1: cycles
    expected, _ = _reference(model, weights, order, result.lrs, momentum)
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    # Not Keras's running mean over the epoch (the trap the test avoids).
    running = np.concatenate(
        [np.cumsum(part) / np.arange(1, len(part) + 1) for part in np.split(expected, [5, 10])]
    )
    assert np.max(np.abs(running - result.losses) / np.abs(expected)) > 1e-2


# -- 3. exact restoration ------------------------------------------------------


def _scenario(name):
    """(model, find_lr kwargs, expected stop_reason or exception)."""
    slow_safe = dict(start_lr=1e-3, end_lr=1e-1, num_steps=12, stop_factor=None)
    if name == "mixed_precision":
        keras.mixed_precision.set_global_policy("mixed_float16")
    if name == "adam_trained":
        model = _compiled(keras.optimizers.Adam(1e-3))
    elif name == "batchnorm":
        model = _compiled(batchnorm=True)
    elif name == "steps_per_execution":
        model = _compiled(steps_per_execution=4)
    else:
        model = _compiled()
    kwargs, expect = dict(slow_safe), "completed"
    if name == "diverged":
        kwargs = dict(start_lr=1e-3, end_lr=1e3, num_steps=30, smoothing=0.0)
        expect = "diverged"
    elif name == "nan":
        kwargs = dict(start_lr=1e-2, end_lr=1e6, num_steps=12, stop_factor=None)
        expect = "nan"
    elif name == "callback_error":
        kwargs["callbacks"] = [_Raise(RuntimeError("boom"), at=3)]
        expect = RuntimeError
    elif name == "keyboard_interrupt":
        kwargs["callbacks"] = [_Raise(KeyboardInterrupt(), at=3)]
        expect = KeyboardInterrupt
    return model, kwargs, expect


@pytest.mark.parametrize(
    "name",
    [
        "completed",
        "diverged",
        "nan",
        "callback_error",
        "keyboard_interrupt",
        "steps_per_execution",
        "mixed_precision",
        "batchnorm",
        "adam_trained",
    ],
)
def test_state_restored_bit_for_bit(name):
    x, y = _data()
    model, kwargs, expect = _scenario(name)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)  # trained state
    before = _state(model)
    changed = _Changed(before)
    kwargs["callbacks"] = [changed, *kwargs.get("callbacks", [])]
    if isinstance(expect, str):
        result = find_lr(model, x, y, batch_size=BATCH, shuffle=False, **kwargs, **QUIET)
        assert result.stop_reason == expect
    else:
        with pytest.raises(expect):
            find_lr(model, x, y, batch_size=BATCH, shuffle=False, **kwargs, **QUIET)
    assert changed.changed
    _assert_same_state(before, model)
    assert model.history is history
    paths = [path for path, _ in before]
    if name == "mixed_precision":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert any("dynamic_scale" in p for p in paths)
        assert any("step_counter" in p for p in paths)
    if name == "batchnorm":
        assert any("moving_mean" in p for p in paths)
        assert any("moving_variance" in p for p in paths)
    _fits_normally(model, x, y)


def _twin(model):
    """A copy of `model` with the same weights and optimizer state."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.compile(model.optimizer.__class__.from_config(model.optimizer.get_config()), "mse")
    if model.optimizer.built:
        twin.optimizer.build(twin.trainable_variables)
        for mine, theirs in zip(model.optimizer.variables, twin.optimizer.variables):
            theirs.assign(mine)
    return twin


def _fit_both_equal(model, twin, x, y):
    for m in (model, twin):
        m.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, **QUIET)
    for a, b in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "dtype, shape",
    [
        ("float32", (700, 400)),  # own pages
        ("float32", (3, 5)),
        ("int64", ()),
        ("bfloat16", (4, 4)),
        ("float16", (9,)),
    ],
)
def test_snapshot_copy_is_exact_independent_and_aligned(dtype, shape):
    rng = np.random.default_rng(0)
    variable = keras.Variable(rng.standard_normal(shape) * 100, dtype=dtype)
    before = keras.ops.convert_to_numpy(variable).copy()
    copy = range_state._host_copy(variable)
    assert copy.shape == before.shape and copy.dtype == before.dtype
    assert copy.tobytes() == before.tobytes()
    assert copy.ctypes.data % 64 == 0
    variable.assign_add(keras.ops.ones(shape, dtype=dtype))  # training moves on
    assert copy.tobytes() == before.tobytes()
    variable.assign(copy)
    variable.assign_add(keras.ops.ones(shape, dtype=dtype))  # after a restore too
    assert copy.tobytes() == before.tobytes()
    variable.assign(copy)
    assert keras.ops.convert_to_numpy(variable).tobytes() == before.tobytes()


def test_optimizer_never_built_restored_to_initial_values():
    x, y = _data()
    model = _compiled()
    assert not model.optimizer.built
    twin = _twin(model)
    weights = model.get_weights()
    find_lr(model, x, y, batch_size=BATCH, end_lr=1.0, num_steps=12, stop_factor=None, **QUIET)
    for old, new in zip(weights, model.get_weights()):
        assert np.array_equal(old, new)
    opt = model.optimizer
    assert int(opt.iterations) == 0
    assert float(opt.learning_rate) == np.float32(0.01)
    slots = [v for v in opt.variables if "momentum" in v.path]
    assert len(slots) == 4
    for v in slots:
        assert not np.any(keras.ops.convert_to_numpy(v))  # their initial zeros
    _fit_both_equal(model, twin, x, y)


def test_adam_trained_state_then_fit_matches_untouched_twin():
    x, y = _data()
    model = _compiled(keras.optimizers.Adam(1e-2))
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    twin = _twin(model)
    find_lr(model, x, y, batch_size=BATCH, end_lr=10.0, num_steps=12, **QUIET)
    _fit_both_equal(model, twin, x, y)


def test_callback_in_fit_restores_at_train_end():
    x, y = _data()
    model = _compiled()
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    before = _state(model)
    lr_finder = LRFinder(start_lr=1e-3, end_lr=1e-1, num_steps=8, stop_factor=None, **QUIET)
    history = model.fit(
        x, y, batch_size=BATCH, epochs=5, shuffle=False, callbacks=[lr_finder], **QUIET
    )
    assert len(history.epoch) < 5  # the test stopped training
    assert lr_finder.result.stop_reason == "completed"
    np.testing.assert_allclose(lr_finder.result.lrs, _grid(1e-3, 1e-1, 8, "exp"), rtol=1e-6)
    _assert_same_state(before, model)
    _fits_normally(model, x, y)


def test_context_manager_restores_when_fit_raises():
    x, y = _data()
    model = _compiled()
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with LRFinder(start_lr=1e-3, end_lr=1.0, num_steps=20, **QUIET) as lr_finder:
            model.fit(
                x,
                y,
                batch_size=BATCH,
                epochs=5,
                **QUIET,
                callbacks=[lr_finder, _Raise(RuntimeError("boom"), at=3)],
            )
    _assert_same_state(before, model)
    _fits_normally(model, x, y)


# -- 4. data types --------------------------------------------------------------


class _Sequence(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return math.ceil(len(self.x) / BATCH)

    def __getitem__(self, i):
        return self.x[i * BATCH : (i + 1) * BATCH], self.y[i * BATCH : (i + 1) * BATCH]


def _data_of_kind(kind, x, y):
    """(x argument, keyword arguments, number of distinct batches per pass)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    if kind == "numpy":
        return x, dict(y=y, batch_size=BATCH, shuffle=False), 5
    if kind == "dataset":
        assert int(dataset.cardinality()) == 5
        return dataset, {}, 5
    if kind == "repeated":
        return dataset.repeat(), {}, 5
    if kind == "unknown_cardinality":
        unknown = dataset.filter(lambda a, b: True)
        assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
        return unknown, {}, 5
    if kind == "generator":

        def three_batches():
            for i in range(3):
                yield x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]

        return three_batches(), {}, 3
    return _Sequence(x, y), {}, 5


@pytest.mark.parametrize(
    "kind", ["numpy", "dataset", "repeated", "unknown_cardinality", "generator", "py_dataset"]
)
def test_data_kinds_record_num_steps_true_losses(kind):
    x, y = _data()
    model = _compiled(keras.optimizers.SGD(0.01))
    weights = model.get_weights()
    before = _state(model)
    data, kwargs, per_pass = _data_of_kind(kind, x, y)
    result = find_lr(
        model, data, start_lr=1e-3, end_lr=1e-1, num_steps=12, stop_factor=None, **kwargs, **QUIET
    )
    assert len(result.lrs) == 12 and result.stop_reason == "completed"
    batches = _batches(x, y)
    order = [batches[i % per_pass] for i in range(12)]  # replayed in order
    expected, _ = _reference(model, weights, order, result.lrs)
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    _assert_same_state(before, model)


# -- 5. the stop rule ------------------------------------------------------------


class TestDiverged:
    def test_positive_losses_stop_past_factor_times_best(self):
        # best before index 5 is 1.0; the limit 4 * 1.0 is reached, not passed,
        # at index 4.
        assert stopping.diverged([3.0, 2.0, 1.0, 2.0, 4.0, 4.1], 4.0) == 5

    def test_negative_losses_use_distance_from_best(self):
        # best -2: limit -2 + (4 - 1) * |-2| = 4.
        assert stopping.diverged([-1.0, -2.0, 0.0, 3.9, 4.0, 4.1], 4.0) == 5
        assert stopping.diverged([-1.0, -2.0, 0.0, 3.9, 4.0], 4.0) is None

    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_stops_at_once(self, bad):
        assert stopping.diverged([1.0, 0.9, bad, 0.5], 4.0) == 2
        assert stopping.diverged([bad, 1.0], 4.0) == 0
        assert stopping.diverged([1.0, bad], math.inf) == 1

    def test_none_when_no_step_diverges(self):
        assert stopping.diverged([3.0, 2.0, 1.0, 1.5, 3.9, 4.0], 4.0) is None
        assert stopping.diverged([], 4.0) is None
        assert stopping.diverged([1.0, 100.0], math.inf) is None


# -- 6. monitors ---------------------------------------------------------------


def test_accuracy_monitor_records_per_batch_accuracy():
    x, y = _data(classes=2)
    model = _model(classes=2)
    model.compile(
        keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )  # metrics not built yet
    weights = model.get_weights()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        monitor="accuracy",
        shuffle=False,
        **QUIET,
    )
    assert result.mode == "max" and len(result.lrs) == 12
    assert np.all((result.losses >= 0) & (result.losses <= 1))
    batches = _batches(x, y)
    order = [batches[i % 5] for i in range(12)]
    losses, preds = _reference(
        model, weights, order, result.lrs, loss=keras.losses.SparseCategoricalCrossentropy()
    )
    accuracy = [np.mean(np.argmax(p, axis=1) == yb) for p, (_, yb) in zip(preds, order)]
    np.testing.assert_allclose(result.losses, accuracy, rtol=0, atol=1e-7)
    train_loss = [v for k, v in result.metrics.items() if "loss" in k]
    assert len(train_loss) == 1
    np.testing.assert_allclose(train_loss[0], losses, rtol=1e-5)


@pytest.mark.parametrize("num_steps,val_every", [(12, 3), (12, 5)])
def test_validation_monitor_evaluates_every_val_every_steps(num_steps, val_every):
    x, y = _data()
    xv, yv = _data(seed=1)
    model = _compiled()
    weights = model.get_weights()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=num_steps,
        stop_factor=None,
        monitor="val_loss",
        validation_data=(xv, yv),
        val_every=val_every,
        shuffle=False,
        **QUIET,
    )
    assert len(result.lrs) == num_steps // val_every
    assert result.mode == "min"
    grid = _grid(1e-3, 1e-1, num_steps, "exp")
    for lr in result.lrs:  # each point is a step of the ramp
        assert np.any(np.isclose(grid, lr, rtol=1e-6))
    assert np.all(np.isfinite(result.losses))
    assert int(model.optimizer.iterations) == 0
    for old, new in zip(weights, model.get_weights()):
        assert np.array_equal(old, new)


def _digits_mlp(optimizer):
    """A 64-64 MLP on scikit-learn's 8x8 digits: 1,300 images to train on,
    497 to validate on."""
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    train, held = order[:1300], order[1300:]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model, (x[train], y[train]), (x[held], y[held])


@pytest.mark.parametrize(
    "optimizer, momentum",
    [
        (lambda: keras.optimizers.SGD(0.01, momentum=0.9), 0.9),
        (lambda: keras.optimizers.Adam(), None),
    ],
    ids=["sgd", "adam"],
)
def test_validation_suggestions_read_the_descent(optimizer, momentum):
    # With the defaults (100 steps, a point after every 10th) the validation
    # loss is flat up to about 1e-3 and falls by more than half after it.
    model, (x, y), validation = _digits_mlp(optimizer())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="No .*suggestion")  # none is short of points
        result = find_lr(
            model, x, y, batch_size=32, monitor="val_loss", validation_data=validation, **QUIET
        )
        found = {
            method: result.suggest(method) for method in ("one_cycle", "valley", "minimum", "steep")
        }
        base, top = result.suggest_range()
    count = len(result.lrs)
    assert result.steps.tolist() == list(range(9, 10 * count, 10))
    assert result.num_steps == 100 and result.momentum == momentum
    assert result.smoothed_losses.tolist() == result.losses.tolist()  # as measured
    loss = dict(zip(result.lrs.tolist(), result.losses.tolist()))
    first, lowest = result.losses[1], result.losses.min()  # from step 19 on
    assert first - lowest > 0.3 * first
    assert loss[base] - loss[top] > 0.6 * (first - lowest)  # the range covers the descent
    assert loss[found["valley"]] < first - 0.05 * (first - lowest)  # not the flat start
    assert all(lr > 1e-3 for lr in found.values())
    if momentum:
        assert "divided by" in result.explain("one_cycle")


@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_two_steps_suggest_nothing_and_say_why(monitor):
    x, y = _data()
    validation = dict(validation_data=(x, y), val_every=1) if monitor == "val_loss" else {}
    result = find_lr(
        _compiled(), x, y, batch_size=BATCH, num_steps=2, monitor=monitor, **validation, **QUIET
    )
    assert len(result.lrs) == 2
    for method in ("one_cycle", "valley", "slide", "minimum", "steep"):
        with pytest.warns(UserWarning, match=f"No '{method}'.*needs at least"):
            assert result.suggest(method) is None
        assert "needs at least" in result.explain(method)
    with pytest.warns(UserWarning, match="No CyclicLR range.*needs at least"):
        assert result.suggest_range() is None


@pytest.mark.parametrize("metrics", [None, ["mae"]])
def test_unknown_monitor_fails_before_any_step(metrics):
    x, y = _data()
    model = _model()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse", metrics=metrics)
    weights = model.get_weights()
    with pytest.raises(ValueError, match=re.escape("monitor='val_bogus'")):
        find_lr(model, x, y, batch_size=BATCH, monitor="val_bogus", validation_data=(x, y), **QUIET)
    with pytest.raises(ValueError, match=re.escape("monitor='bogus'")):
        find_lr(model, x, y, batch_size=BATCH, monitor="bogus", **QUIET)
    assert int(model.optimizer.iterations) == 0
    for old, new in zip(weights, model.get_weights()):
        assert np.array_equal(old, new)


# -- 7. bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(start_lr=1.0, end_lr=1.0), "`end_lr`.*start_lr=1.0, end_lr=1.0"),
        (dict(start_lr=1e-2, end_lr=1e-3), "`end_lr`.*start_lr=0.01, end_lr=0.001"),
        (dict(start_lr=0.0), "`start_lr`.*start_lr=0.0"),
        (dict(start_lr=-1e-3), "`start_lr`.*start_lr=-0.001"),
        (dict(end_lr=float("inf")), "`end_lr`.*end_lr=inf"),
        (dict(num_steps=1), "`num_steps`.*num_steps=1"),
        (dict(num_steps=0), "`num_steps`.*num_steps=0"),
        (dict(smoothing=1.0), "`smoothing`.*smoothing=1.0"),
        (dict(smoothing=-0.1), "`smoothing`.*smoothing=-0.1"),
        (dict(stop_factor=1.0), "`stop_factor`.*stop_factor=1.0"),
        (dict(stop_factor=0.5), "`stop_factor`.*stop_factor=0.5"),
        (dict(step_mode="cubic"), "`step_mode`.*step_mode='cubic'"),
        (dict(monitor=""), "`monitor`.*monitor=''"),
        (dict(monitor="val_loss"), "`validation_data`.*validation_data=None"),
        (dict(epochs=3), "`epochs`.*epochs=3"),
        (dict(steps_per_epoch=3), "`steps_per_epoch`.*steps_per_epoch=3"),
        (dict(repeats=0), "`repeats`.*repeats=0"),
    ],
)
def test_invalid_arguments_raise_before_training(kwargs, message):
    x, y = _data()
    model = _compiled()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=message):
        find_lr(model, x, y, batch_size=BATCH, **kwargs, **QUIET)
    assert int(model.optimizer.iterations) == 0
    for old, new in zip(weights, model.get_weights()):
        assert np.array_equal(old, new)


def test_uncompiled_model_raises():
    x, y = _data()
    with pytest.raises(ValueError, match="`model` must be compiled"):
        find_lr(_model(), x, y, batch_size=BATCH, **QUIET)


def test_lr_finder_checks_arguments_at_construction():
    with pytest.raises(ValueError, match=re.escape("Received: start_lr=1.0, end_lr=0.5")):
        LRFinder(start_lr=1.0, end_lr=0.5)
    with pytest.raises(ValueError, match=re.escape("Received: val_every=0")):
        LRFinder(val_every=0)
    with pytest.raises(ValueError, match=re.escape("Received: mode='up'")):
        LRFinder(mode="up")


# -- 8. repeats and the weight-decay sweep ----------------------------------------


def test_repeats_give_a_band_around_the_mean():
    x, y = _data()
    model = _compiled()
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    before = _state(model)
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=8,
        stop_factor=None,
        repeats=3,
        **QUIET,
    )
    low, high = result.loss_band
    assert len(low) == len(high) == len(result.lrs) == 8
    # The mean of three values can round one ulp past their min or max.
    mean, slack = result.smoothed_losses, 1e-12 * np.abs(result.smoothed_losses)
    assert np.all(low <= mean + slack) and np.all(mean <= high + slack)
    # Each repeat sees the data in another order, so the curves differ.
    assert np.max(high - low) > 0
    _assert_same_state(before, model)


class SubclassedNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, x):
        return self.out(self.hidden(x))


def test_model_without_weights_yet_is_left_at_its_initial_weights():
    x, y = _data()
    keras.utils.set_random_seed(3)
    model = SubclassedNet()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    find_lr(model, x, y, batch_size=BATCH, num_steps=8, end_lr=1e-1, **QUIET)
    keras.utils.set_random_seed(3)
    fresh = SubclassedNet()
    fresh(x[:BATCH])
    for got, want in zip(model.variables, fresh.variables):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_weight_decay_sweep_with_adamw():
    from keras_clr import LRFinderResult
    from keras_clr import WeightDecaySweep

    x, y = _data()
    model = _compiled(keras.optimizers.AdamW(1e-3, weight_decay=0.004))
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    before = _state(model)
    sweep = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=6,
        stop_factor=None,
        weight_decays=[0.0, 1e-4, 1e-2],
        shuffle=False,
        **QUIET,
    )
    assert isinstance(sweep, WeightDecaySweep)
    assert list(sweep.results) == [0.0, 1e-4, 1e-2]  # in the order swept
    assert sweep.best is sweep.results[sweep.weight_decay]
    lowest = {wd: np.nanmin(r.smoothed_losses) for wd, r in sweep.results.items()}
    assert lowest[sweep.weight_decay] == min(lowest.values())
    for value, result in sweep.results.items():
        assert isinstance(result, LRFinderResult)
        assert result.weight_decay == value and not hasattr(result, "sweep")
        assert len(result.lrs) == 6
    # Same data, same start: only the weight decay differs between runs.
    assert not np.array_equal(sweep.results[0.0].losses, sweep.results[1e-2].losses)
    assert model.optimizer.weight_decay == 0.004
    _assert_same_state(before, model)
    _fits_normally(model, x, y)
    # The sweep's plot overlays one smoothed curve per weight decay.
    ax = sweep.plot()
    assert len(ax.get_lines()) == 3


# -- 9. extra callbacks ------------------------------------------------------------


def test_extra_callbacks_see_the_batches():
    x, y = _data()
    model = _compiled()
    counter = _Count()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        callbacks=[counter],
        **QUIET,
    )
    assert len(result.lrs) == 12
    assert counter.begins == 1
    assert counter.batches >= 12


@pytest.mark.parametrize(
    "optimizer, expected",
    [
        (lambda: keras.optimizers.SGD(0.01, momentum=0.9), 0.9),
        (lambda: keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), 0.9),
        (lambda: keras.optimizers.RMSprop(0.01, momentum=0.5), 0.5),
        (lambda: keras.optimizers.SGD(0.01), None),
        (lambda: keras.optimizers.Adam(0.01), None),
    ],
    ids=["sgd", "nesterov", "rmsprop", "sgd-no-momentum", "adam"],
)
def test_result_records_the_momentum_folded_into_the_velocity(optimizer, expected):
    # Keras's SGD and RMSprop put lr * grad into their velocity, so the
    # default suggestion allows for its lag; Adam applies the rate per step.
    x, y = _data()
    result = find_lr(_compiled(optimizer()), x, y, batch_size=BATCH, num_steps=10, **QUIET)
    assert result.momentum == expected


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("monitor", ["loss", "val_loss"])
def test_result_records_batch_normalization(batchnorm, monitor):
    x, y = _data()
    validation = dict(validation_data=(x, y), val_every=2) if monitor.startswith("val_") else {}
    result = find_lr(
        _compiled(batchnorm=batchnorm),
        x,
        y,
        batch_size=BATCH,
        num_steps=10,
        monitor=monitor,
        **validation,
        **QUIET,
    )
    assert result.batch_norm is batchnorm


def test_batch_normalization_found_in_nested_models():
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()]
    )
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)])
    assert optimizers.has_batch_norm(outer) and not optimizers.has_batch_norm(_model())


def test_repeats_share_one_compiled_step_and_match_separate_tests(monkeypatch):
    x, y = _data()
    model = _compiled()
    traces = []
    step_count = train_step._step_count
    monkeypatch.setattr(train_step, "_step_count", lambda *a: traces.append(1) or step_count(*a))
    range_state.build_optimizer(model)
    before = _state(model)
    shared = find_lr(model, x, y, batch_size=BATCH, num_steps=12, repeats=3, **QUIET)
    assert len(traces) == 1  # one trace serves the three tests
    _assert_same_state(before, model)
    # the same three tests, each with a callback of its own: the model's
    # range-test step serves them too
    runs = [
        range_api._run_once(model, x, y, BATCH, LRFinder(num_steps=12, verbose=0), None, {}, repeat)
        for repeat in range(3)
    ]
    assert len(traces) == 1
    # a test of another length has a step of its own
    find_lr(model, x, y, batch_size=BATCH, num_steps=7, **QUIET)
    assert len(traces) == 2
    separate = range_api._average(runs)
    for name in ("lrs", "losses", "smoothed_losses"):
        np.testing.assert_array_equal(getattr(shared, name), getattr(separate, name))
    _assert_same_state(before, model)


# -- 12. non-finite weights under a finite loss; an interrupted test ------------


class _HidesNaN(keras.layers.Layer):
    """Sets NaN activations to 0, as TensorFlow's oneDNN fused ReLU does: a
    NaN input then gives a finite loss, and a NaN gradient for the kernel
    before this layer."""

    def call(self, x):
        return keras.ops.where(keras.ops.isnan(x), 0.0, x)


def _nan_hiding_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            _HidesNaN(),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


@pytest.mark.parametrize("batch", [0, 3])
def test_nan_in_the_data_under_a_finite_loss_stops_as_nan(batch):
    x, y = _data()
    model = _nan_hiding_model()
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)  # trained state
    before = _state(model)
    x[batch * BATCH + 2, 1] = np.nan  # one sample of batch `batch`
    plain = keras.models.clone_model(model)
    plain.compile(keras.optimizers.SGD(0.01), "mse")
    plain.set_weights(model.get_weights())
    loss = plain.train_on_batch(
        x[batch * BATCH : (batch + 1) * BATCH], y[batch * BATCH : (batch + 1) * BATCH]
    )
    assert np.isfinite(loss) and not np.isfinite(plain.layers[0].kernel.numpy()).all()

    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        shuffle=False,
        **QUIET,
    )
    assert result.stop_reason == "nan"
    # the curve ends with the step whose update went non-finite
    lrs = _grid(1e-3, 1e-1, 12, "exp")
    np.testing.assert_allclose(result.lrs, lrs[: batch + 1], rtol=1e-6)
    assert np.isfinite(result.losses[:batch]).all() and np.isnan(result.losses[batch])
    kernel = model.layers[0].kernel.path
    assert result.nonfinite_variable == kernel
    assert result.nonfinite_step == batch
    np.testing.assert_allclose(result.nonfinite_lr, lrs[batch], rtol=1e-6)
    for text in (result.explain("one_cycle"), repr(result)):
        assert f"step {batch} " in text and repr(kernel) in text
        assert "data likely holds NaN or inf" in text
    _assert_same_state(before, model)
    assert all(np.isfinite(value).all() for _, value in _state(model))


def test_finite_weights_give_no_nonfinite_variable():
    x, y = _data()
    model = _nan_hiding_model()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-2,
        end_lr=1e6,
        num_steps=12,
        stop_factor=None,
        shuffle=False,
        **QUIET,
    )
    # a loss that overflows: the stop of old, named by the loss itself
    assert result.stop_reason == "nan" and result.nonfinite_variable is None
    assert "data likely" not in repr(result)


class _Sentinels(keras.layers.Layer):
    """Identity with a non-trainable vector that starts at `start` and, from
    its `at`-th training call on, holds `later` (both may be inf or huge)."""

    def __init__(self, start, later, at, **kwargs):
        super().__init__(**kwargs)
        self.start, self.later, self.at = start, later, at

    def build(self, shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)
        self.kept = self.add_weight(
            shape=(4,), trainable=False, initializer=keras.initializers.Constant(self.start)
        )

    def call(self, x, training=False):
        if training:
            self.calls.assign(self.calls + 1.0)
            self.kept.assign(
                keras.ops.where(
                    self.calls >= self.at,
                    keras.ops.full((4,), self.later),
                    keras.ops.full((4,), self.start),
                )
            )
        return x


def _sentinel_model(start, later, at):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4),
            _Sentinels(start, later, at),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


@pytest.mark.parametrize("start", [np.inf, 3e38])
def test_a_variable_non_finite_or_huge_from_the_start_is_not_checked(start):
    x, y = _data()
    model = _sentinel_model(start, start, at=1.0)
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        **QUIET,
    )
    assert result.stop_reason == "completed" and len(result.lrs) == 12


def test_finite_values_whose_sum_overflows_stop_as_diverged():
    # the third step sets four values of 3e38: finite, but their float32
    # sum overflows (4 * 3e38 > 3.4e38); no variable is non-finite
    x, y = _data()
    model = _sentinel_model(0.0, 3e38, at=3.0)
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        start_lr=1e-3,
        end_lr=1e-1,
        num_steps=12,
        stop_factor=None,
        **QUIET,
    )
    assert result.stop_reason == "diverged" and len(result.lrs) == 3
    assert result.nonfinite_variable is None


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_nonfinite_variable_round_trips(kind, tmp_path):
    from keras_clr import LRFinderResult

    lrs = _grid(1e-3, 1e-1, 5, "exp").astype(np.float64)
    losses = np.r_[1.0, 0.9, 0.8, 0.7, np.nan]
    result = LRFinderResult(
        lrs,
        losses,
        num_steps=12,
        stop_reason="nan",
        nonfinite_variable="sequential/dense/kernel",
        nonfinite_step=4,
        nonfinite_lr=float(lrs[4]),
    )
    path = tmp_path / f"result.{kind}"
    getattr(result, f"to_{kind}")(path)
    back = getattr(LRFinderResult, f"read_{kind}")(path)
    assert (back.nonfinite_variable, back.nonfinite_step, back.nonfinite_lr) == (
        "sequential/dense/kernel",
        4,
        float(lrs[4]),
    )
    assert repr(back) == repr(result)
    with pytest.raises(ValueError, match="all three or none"):
        LRFinderResult(lrs, losses, nonfinite_variable="dense/kernel")


def test_nan_in_the_data_with_tensorflows_onednn(tmp_path):
    # TensorFlow's oneDNN (on by default on recent Intel CPUs; forced on
    # here) fuses Dense + ReLU and turns a NaN input into 0: the loss stays
    # finite while the first kernel goes NaN. oneDNN is chosen at import, so
    # this runs in a process of its own.
    import json
    import os
    import subprocess
    import sys

    script = r"""
import json
import numpy as np, keras, keras_clr
from keras import ops
fused = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="relu")])
fused.compile("sgd", "mse")
xs = np.array([[np.nan, 1.0]] * 4, "float32")
if np.isnan(fused.predict(xs, verbose=0)).any():
    print(json.dumps("no fusion")); raise SystemExit
rng = np.random.default_rng(0)
out = {}
for at in (0, 5):
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(160, 8)).astype("float32")
    y = x[:, :3].argmax(1).astype("int32")
    x[at * 16 + 3, 1] = np.nan
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.SGD(momentum=0.9), "sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    state = lambda: [ops.convert_to_numpy(v).tobytes()
                     for v in model.variables + model.optimizer.variables]
    before = state()
    probe = keras.models.clone_model(model)
    probe.compile(keras.optimizers.SGD(1e-7), "sparse_categorical_crossentropy")
    probe.set_weights(model.get_weights())
    loss = probe.train_on_batch(x[at * 16:(at + 1) * 16], y[at * 16:(at + 1) * 16])
    result = keras_clr.find_lr(model, x, y, batch_size=16, num_steps=10, end_lr=1e-1,
                               stop_factor=None, shuffle=False, verbose=0)
    out[at] = dict(loss=float(loss), poisoned=not np.isfinite(probe.layers[0].kernel.numpy()).all(),
                   stop=result.stop_reason, points=len(result.lrs),
                   variable=getattr(result, "nonfinite_variable", None),
                   kernel=model.layers[0].kernel.path,
                   explain=result.explain("one_cycle"), restored=state() == before)
print(json.dumps(out))
"""
    env = {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if out == "no fusion":
        pytest.skip("this TensorFlow build has no oneDNN ReLU fusion")
    for at, case in out.items():
        # the set-up reproduces the poisoning: a finite loss, a NaN kernel
        assert math.isfinite(case["loss"]) and case["poisoned"], at
        assert case["stop"] == "nan" and case["points"] == int(at) + 1, (at, case)
        assert case["variable"] == case["kernel"], (at, case)
        assert repr(case["kernel"]) in case["explain"]
        assert case["restored"], at


class _Interrupt(keras.callbacks.Callback):
    """KeyboardInterrupt after `after` batches, counted across epochs."""

    def __init__(self, after):
        super().__init__()
        self.after, self.seen = after, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


def test_interrupted_finder_keeps_its_partial_result(capsys):
    x, y = _data()
    model = _compiled(keras.optimizers.SGD(0.01))
    model.fit(x, y, batch_size=BATCH, epochs=1, **QUIET)
    weights = model.get_weights()
    before = _state(model)
    with pytest.raises(KeyboardInterrupt):
        with LRFinder(
            start_lr=1e-3, end_lr=1e-1, num_steps=20, stop_factor=None, verbose=1
        ) as finder:
            model.fit(
                x,
                y,
                batch_size=BATCH,
                epochs=10,
                shuffle=False,
                verbose=0,
                callbacks=[finder, _Interrupt(7)],
            )  # in the second epoch
    result = finder.result
    assert result is not None and result.stop_reason == "interrupted"
    lrs = _grid(1e-3, 1e-1, 20, "exp")
    np.testing.assert_allclose(result.lrs, lrs[:7], rtol=1e-6)
    batches = _batches(x, y)
    expected, _ = _reference(model, weights, [batches[i % 5] for i in range(7)], lrs[:7])
    np.testing.assert_allclose(result.losses, expected, rtol=1e-5)
    _assert_same_state(before, model)
    out = capsys.readouterr().out
    assert "stopped: interrupted" in out and out.endswith("\n")
    finder.restore()  # nothing left to restore: the result stays
    assert finder.result is result
