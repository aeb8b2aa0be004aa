"""The schedules in the `fit` set-ups users really run.

Gradient accumulation, updates a loss scale skips, data of unknown length,
BackupAndRestore resumes, other learning-rate callbacks, optimizers whose
`beta_1` is not a momentum, repeated fits and the one trace per model. In
each, the values logged are the values the optimizer applied (read back from
it after every step here: a host sync per step, fine in a test), and those
are the schedule's values at the update's index, computed independently.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_clr
from test_callbacks import gradients
from test_callbacks import sgd
from test_curves import torch_cyclic
from test_curves import torch_one_cycle
from test_curves import triangular2_scale

RNG = np.random.default_rng(1)
X = RNG.normal(size=(64, 3)).astype("float32")
Y = (0.5 * np.sin(X @ np.array([[1.0], [-2.0], [0.5]]))).astype("float32")
BATCH = 4
BATCHES = 16  # per epoch


def make_model(optimizer, seed=0, model_class=keras.Sequential, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = model_class(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def fit(model, callbacks, epochs=3, x=X, **kwargs):
    if isinstance(x, np.ndarray):
        kwargs.update(y=Y, batch_size=BATCH)
    return model.fit(x, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks, **kwargs)


class ReadApplied(keras.callbacks.Callback):
    """After each call of the train step: the learning rate the optimizer
    holds (the one its last step used), its update count, and the logs."""

    def __init__(self):
        super().__init__()
        self.applied, self.updates, self.logged, self.momentum = [], [], [], []

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.applied.append(float(optimizer.learning_rate))
        self.updates.append(int(optimizer.iterations.numpy()))
        self.logged.append(logs["learning_rate"])
        self.momentum.append(logs.get("momentum", math.nan))


def one_cycle(steps, max_lr, total):
    return np.array([torch_one_cycle(int(k), total, max_lr) for k in steps])


def unsized(batches=8):
    def gen():
        for i in range(batches):
            yield X[i * BATCH : (i + 1) * BATCH], Y[i * BATCH : (i + 1) * BATCH]

    return tf.data.Dataset.from_generator(
        gen,
        output_signature=(
            tf.TensorSpec((None, 3), tf.float32),
            tf.TensorSpec((None, 1), tf.float32),
        ),
    )


# --- gradient accumulation ----------------------------------------------------


def accumulated_reference(initial, lr, momentum, updates, k):
    """SGD with momentum on the mean gradient of each k micro-batches."""
    weights = [np.asarray(w, dtype=np.float64) for w in initial]
    x, y = X.astype(np.float64), Y.astype(np.float64)
    update, state = sgd(), {}
    for u in range(updates):
        total = None
        for j in range(k):
            i = ((u * k + j) % BATCHES) * BATCH
            grads = gradients(weights, x[i : i + BATCH], y[i : i + BATCH])
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        weights = update(u, weights, [g / k for g in total], lr(u), momentum(u), state)
    return weights


@pytest.mark.parametrize("spe", [1, 2])
def test_gradient_accumulation_counts_real_updates(spe):
    k = 4
    model = make_model(
        keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=k),
        steps_per_execution=spe,
    )
    initial = model.get_weights()
    cb, reader = keras_clr.OneCycle(0.1), ReadApplied()
    history = fit(model, [cb, reader], epochs=3)
    updates = 3 * BATCHES // k
    assert int(model.optimizer.iterations) == updates
    assert cb.lr_schedule.total_steps == updates  # counted in real updates
    # Every micro-batch of update u sees lr_schedule(u); logs = applied.
    assert reader.logged == reader.applied
    batches = np.arange(spe - 1, 3 * BATCHES, spe)
    expected = one_cycle(batches // k, 0.1, updates)
    np.testing.assert_array_equal(reader.applied, np.float32(expected[:, 0]))
    np.testing.assert_array_equal(np.float32(reader.momentum), np.float32(expected[:, 1]))
    assert reader.applied[-1] == np.float32(0.1 / 25 / 1e4)  # it anneals
    assert history.history["learning_rate"][-1] == reader.applied[-1]
    reference = accumulated_reference(initial, cb.lr_schedule, cb.momentum_schedule, updates, k)
    difference = max(np.max(np.abs(w - r)) for w, r in zip(model.get_weights(), reference))
    assert difference < 1e-5


@pytest.mark.parametrize("spe", [2, 4])
def test_batch_logs_with_several_steps_per_call_are_the_calls_last_step(spe):
    # Keras 3.10 passes a call's first batch to on_train_batch_end, 3.15 its
    # last: either way the logs hold the rate of the call's last step, the
    # one the optimizer holds after the call.
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9), steps_per_execution=spe)
    cb, reader = keras_clr.OneCycle(0.1), ReadApplied()
    fit(model, [cb, reader], epochs=2)
    steps = 2 * BATCHES
    assert reader.updates == list(range(spe, steps + 1, spe))
    expected = one_cycle(np.arange(spe - 1, steps, spe), 0.1, steps)
    np.testing.assert_array_equal(reader.applied, np.float32(expected[:, 0]))
    assert reader.logged == reader.applied


def test_gradient_accumulation_on_unsized_data_is_refused():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="steps_per_epoch.*gradient_accumulation_steps=2"):
        fit(model, [keras_clr.CyclicLR(1e-3, 1e-2, step_size_up=4)], x=unsized())
    assert int(model.optimizer._iterations) == 0


# --- skipped updates ----------------------------------------------------------


def test_updates_the_loss_scale_skips_do_not_advance_the_schedule():
    keras.mixed_precision.set_global_policy("mixed_float16")
    # A huge initial scale overflows float16 until it has halved enough.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.01, momentum=0.9), initial_scale=2.0**40
    )
    model = make_model(optimizer)
    cb, reader = keras_clr.OneCycle(0.05), ReadApplied()
    with pytest.warns(UserWarning, match="loss scale skipped") as record:
        fit(model, [cb, reader], epochs=3)
    applied = int(model.optimizer.iterations)
    skipped = 3 * BATCHES - applied
    assert skipped > 5
    assert str(skipped) in str([w.message for w in record if "skipped" in str(w.message)][0])
    assert reader.logged == reader.applied  # the skipped steps too
    # Batch b's step is the number of updates applied before it.
    before = np.array([0] + reader.updates[:-1])
    expected = one_cycle(before, 0.05, 3 * BATCHES)
    np.testing.assert_array_equal(reader.applied, np.float32(expected[:, 0]))
    np.testing.assert_array_equal(np.float32(reader.momentum), np.float32(expected[:, 1]))


# --- data of unknown length -------------------------------------------------


def test_unsized_data_does_not_skip_a_step_per_epoch():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    cb, reader = keras_clr.OneCycle(0.1, total_steps=24), ReadApplied()
    with warnings_as_errors("past total_steps"):
        history = fit(model, [cb, reader], x=unsized(8), epochs=3)
    assert len(reader.applied) == 24
    assert reader.logged == reader.applied
    expected = one_cycle(range(24), 0.1, 24)
    np.testing.assert_array_equal(reader.applied, np.float32(expected[:, 0]))
    np.testing.assert_array_equal(
        np.float32(history.history["learning_rate"]), np.float32(expected[[7, 15, 23], 0])
    )


def test_unsized_data_with_several_steps_per_call_logs_the_last_step_run():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9), steps_per_execution=3)
    cb, reader = keras_clr.CyclicLR(0.01, 0.1, step_size_up=5), ReadApplied()
    history = fit(model, [cb, reader], x=unsized(8), epochs=2)
    assert int(model.optimizer.iterations) == 16
    assert reader.logged == reader.applied
    # Calls of 3, 3 and 2 steps per epoch: their last steps.
    last = [2, 5, 7, 10, 13, 15]
    expected = [torch_cyclic(k, 0.01, 0.1, 5, 5)[0] for k in last]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))
    assert history.history["learning_rate"] == [reader.applied[2], reader.applied[5]]


class warnings_as_errors:
    """Fails on a warning whose message contains `text`."""

    def __init__(self, text):
        import warnings

        self.text, self._catch = text, warnings.catch_warnings(record=True)

    def __enter__(self):
        import warnings

        self._record = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        messages = [str(w.message) for w in self._record if self.text in str(w.message)]
        assert not messages, messages


# --- BackupAndRestore ---------------------------------------------------------


class Interrupt(keras.callbacks.Callback):
    """Raises at a given batch of a given epoch, like a preempted job."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.at is not None and (self.epoch, batch) == self.at:
            raise RuntimeError("preempted")


SCHEDULES = {
    "OneCycle": lambda: keras_clr.OneCycle(0.1),
    "CyclicLR": lambda: keras_clr.CyclicLR(0.01, 0.1, step_size_up=5, mode="triangular2"),
    "WarmupStableDecay": lambda: keras_clr.WarmupStableDecay(
        0.1,
        warmup_steps=5,
        decay_steps=0.25,
        total_steps=3 * BATCHES,
        warmup_type="cosine",
        min_lr_ratio=0.05,
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("order", ["schedule_first", "backup_first"])
@pytest.mark.parametrize("same_model", [True, False], ids=["same_model", "new_model"])
def test_backup_and_restore_resumes_the_uninterrupted_values(name, order, same_model, tmp_path):
    def callbacks(schedule, backup, *others):
        pair = [schedule, backup] if order == "schedule_first" else [backup, schedule]
        return pair + list(others)

    def optimizer():
        return keras.optimizers.SGD(0.01, momentum=0.9)

    # The uninterrupted run, backed up every 4 batches like the others.
    reference = ReadApplied()
    fit(
        make_model(optimizer()),
        callbacks(
            SCHEDULES[name](),
            keras.callbacks.BackupAndRestore(str(tmp_path / "a"), save_freq=4),
            reference,
        ),
        epochs=3,
    )

    # Preempted at batch 9 of epoch 2 (last backup after batch 7), then resumed.
    backup_dir = str(tmp_path / "b")
    model, schedule = make_model(optimizer()), SCHEDULES[name]()
    with pytest.raises(RuntimeError, match="preempted"):
        fit(
            model,
            callbacks(
                schedule, keras.callbacks.BackupAndRestore(backup_dir, save_freq=4), Interrupt(2, 9)
            ),
            epochs=3,
        )
    if not same_model:
        model, schedule = make_model(optimizer(), seed=5), SCHEDULES[name]()
    resumed = ReadApplied()
    with warnings_as_errors("past total_steps"):
        history = fit(
            model,
            callbacks(schedule, keras.callbacks.BackupAndRestore(backup_dir, save_freq=4), resumed),
            epochs=3,
        )
    # Keras replays epoch 2 from its first batch, from the weights and the
    # update count of the backup: each batch gets the uninterrupted run's value.
    assert len(resumed.applied) == BATCHES
    assert resumed.applied == reference.applied[2 * BATCHES :]
    assert resumed.logged == resumed.applied
    np.testing.assert_array_equal(resumed.momentum, reference.momentum[2 * BATCHES :])
    assert history.history["learning_rate"] == [reference.applied[-1]]
    assert int(model.optimizer.iterations) == 3 * BATCHES + 8


def test_checkpoint_load_model_and_initial_epoch_continue(tmp_path):
    path = str(tmp_path / "model.keras")
    reference = ReadApplied()
    fit(make_model(keras.optimizers.Adam(1e-3)), [keras_clr.OneCycle(0.01), reference], epochs=4)
    model = make_model(keras.optimizers.Adam(1e-3))
    fit(
        model,
        [keras_clr.OneCycle(0.01, total_steps=4 * BATCHES), keras.callbacks.ModelCheckpoint(path)],
        epochs=2,
    )
    loaded = keras.saving.load_model(path)
    resumed = ReadApplied()
    fit(
        loaded,
        [keras_clr.OneCycle(0.01, total_steps=4 * BATCHES), resumed],
        epochs=4,
        initial_epoch=2,
    )
    assert resumed.applied == reference.applied[2 * BATCHES :]
    assert resumed.logged == resumed.applied


# --- other learning-rate callbacks and optimizers ----------------------------


@pytest.mark.parametrize(
    "other",
    [
        lambda: keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0),
        lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
        lambda: keras_clr.CyclicLR(0.01, 0.1, step_size_up=4),
        lambda: keras_clr.LRFinder(num_steps=10, verbose=0),
    ],
    ids=["ReduceLROnPlateau", "LearningRateScheduler", "CyclicLR", "LRFinder"],
)
@pytest.mark.parametrize("first", [True, False])
def test_another_learning_rate_callback_is_refused_before_training(other, first):
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    schedule, other = keras_clr.OneCycle(0.1), other()
    kind = type(other).__name__
    callbacks = [schedule, other] if first else [other, schedule]
    with pytest.raises(ValueError, match=f"(OneCycle.*{kind}|{kind}.*OneCycle)"):
        fit(model, callbacks, epochs=2)
    assert int(model.optimizer.iterations) == 0


@pytest.mark.skipif(
    not hasattr(keras.optimizers, "ScheduleFreeAdamW"), reason="ScheduleFreeAdamW needs Keras 3.14"
)
def test_schedule_free_beta_1_is_not_cycled_by_default():
    def optimizer():
        return keras.optimizers.ScheduleFreeAdamW(1e-3, warmup_steps=0)

    model, reader = make_model(optimizer()), ReadApplied()
    fit(model, [keras_clr.OneCycle(1e-2), reader], epochs=1)
    assert model.optimizer.beta_1 == 0.9 and type(model.optimizer.beta_1) is float
    assert all(math.isnan(m) for m in reader.momentum)  # nothing cycled, none logged
    np.testing.assert_array_equal(
        reader.applied, np.float32(one_cycle(range(BATCHES), 1e-2, BATCHES)[:, 0])
    )
    with pytest.raises(ValueError, match="iterate averaging.*cycle_momentum=False"):
        fit(make_model(optimizer()), [keras_clr.OneCycle(1e-2, cycle_momentum=True)])


# --- repeated fits and the one trace per model -------------------------------


def test_a_longer_second_fit_continues_the_first_cycle_and_warns():
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    cb, first, second = keras_clr.OneCycle(0.1), ReadApplied(), ReadApplied()
    fit(model, [cb, first], epochs=1)
    with pytest.warns(UserWarning) as record:
        fit(model, [cb, second], epochs=3)
    messages = " | ".join(str(w.message) for w in record)
    assert "keeps the 16-step cycle" in messages and "plans 48 steps" in messages
    assert "past total_steps=16" in messages
    assert cb.lr_schedule.total_steps == BATCHES
    final = np.float32(0.1 / 25 / 1e4)
    assert first.applied[-1] == final and set(second.applied) == {final}  # no jump


class CountingModel(keras.Sequential):
    """Counts the traces of its train step (a Python call per trace)."""

    traces = 0

    def train_step(self, data):
        type(self).traces += 1
        return super().train_step(data)


def test_one_trace_serves_every_schedule_fit_on_a_model():
    CountingModel.traces = 0
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9), model_class=CountingModel)
    reader = ReadApplied()
    fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    traced = CountingModel.traces  # TensorFlow traces twice as variables are made
    assert traced > 0
    fit(model, [keras_clr.CyclicLR(0.01, 0.05, step_size_up=3), reader], epochs=2)
    fit(model, [keras_clr.OneCycle(0.2, pct_start=0.5)], epochs=1)
    assert CountingModel.traces == traced
    expected = [torch_cyclic(k, 0.01, 0.05, 3, 3)[0] for k in range(2 * BATCHES)]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))
    fit(model, [], epochs=1)  # the model's own step: its own trace
    plain = CountingModel.traces
    assert plain > traced
    fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    assert CountingModel.traces == plain
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss="mae")
    reader = ReadApplied()
    fit(model, [keras_clr.OneCycle(0.1), reader], epochs=1)  # compiled again: traced again
    assert CountingModel.traces > plain
    np.testing.assert_array_equal(
        reader.applied, np.float32(one_cycle(range(BATCHES), 0.1, BATCHES)[:, 0])
    )


def test_logging_callbacks_listed_first_still_get_the_values(tmp_path):
    import csv

    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    path = str(tmp_path / "log.csv")
    reader = ReadApplied()
    history = fit(
        model, [keras.callbacks.CSVLogger(path), reader, keras_clr.OneCycle(0.1)], epochs=2
    )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    last = [reader.applied[BATCHES - 1], reader.applied[-1]]
    assert [float(r["learning_rate"]) for r in rows] == last
    assert history.history["learning_rate"] == last
    assert reader.logged == reader.applied


class MoveCounter(keras.callbacks.Callback):
    """Sets the optimizer's update count as an epoch begins (as a callback
    restoring a checkpoint there would)."""

    def __init__(self, epoch, value):
        super().__init__()
        self.epoch, self.value = epoch, value

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.iterations.assign(self.value)


@pytest.mark.parametrize("value", [100, 3])
def test_a_counter_moved_between_epochs_is_tabulated_again(value):
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    cb, reader = keras_clr.CyclicLR(0.01, 0.1, step_size_up=5, mode="triangular2"), ReadApplied()
    fit(model, [cb, MoveCounter(1, value), reader], epochs=2)
    steps = list(range(BATCHES)) + list(range(value, value + BATCHES))
    expected = [torch_cyclic(k, 0.01, 0.1, 5, 5, scale_fn=triangular2_scale)[0] for k in steps]
    np.testing.assert_array_equal(reader.applied, np.float32(expected))
    assert reader.logged == reader.applied


def test_the_same_callback_on_another_model_starts_its_own_schedule():
    cb, first, second = keras_clr.CyclicLR(0.01, 0.1, step_size_up=5), ReadApplied(), ReadApplied()
    fit(make_model(keras.optimizers.SGD(0.01, momentum=0.9)), [cb, first], epochs=1)
    other = make_model(keras.optimizers.SGD(0.01, momentum=0.9))
    fit(other, [], epochs=2)  # 32 updates before
    fit(other, [cb, second], epochs=1)
    assert second.applied == first.applied  # from step 0 again
    assert second.logged == second.applied


@pytest.mark.parametrize("accumulation", [None, 3])
def test_a_short_last_call_logs_the_step_it_ran(accumulation):
    # 16 batches an epoch in calls of 3: the last call of each runs 1 step,
    # and Keras reports it as batch 17.
    model = make_model(
        keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=accumulation),
        steps_per_execution=3,
    )
    cb, reader = keras_clr.OneCycle(0.05), ReadApplied()
    history = fit(model, [cb, reader], epochs=3)
    assert reader.logged == reader.applied
    k = accumulation or 1
    total = 3 * BATCHES // k
    last = [min(e * BATCHES + b, (e + 1) * BATCHES - 1) for e in range(3) for b in range(2, 18, 3)]
    expected = one_cycle(np.array(last) // k, 0.05, total)
    np.testing.assert_array_equal(reader.applied, np.float32(expected[:, 0]))
    assert history.history["learning_rate"] == [reader.applied[i] for i in (5, 11, 17)]


def test_schedules_hold_step_0_before_it():
    cb = keras_clr.OneCycle(0.1, total_steps=10)
    assert cb.lr_schedule(-3) == cb.lr_schedule(0)
    np.testing.assert_array_equal(cb.lr_schedule(np.array([-1, 0])), cb.lr_schedule(0))
    assert float(cb.lr_schedule(tf.constant(-2))) == np.float32(cb.lr_schedule(0))


@pytest.mark.parametrize(
    "factory, name",
    [
        (lambda: keras_clr.OneCycle(0.1, cycle_momentum="false"), "cycle_momentum"),
        (lambda: keras_clr.OneCycle(0.1, three_phase="no"), "three_phase"),
        (lambda: keras_clr.CyclicLR(0.01, 0.1, cycle_momentum=1), "cycle_momentum"),
    ],
)
def test_flags_take_booleans_only(factory, name):
    with pytest.raises(ValueError, match=f"Argument `{name}` must be True or False.*Received"):
        factory()


def test_default_momentum_error_says_it_is_the_default():
    model = make_model(keras.optimizers.Adagrad(0.01))
    with pytest.raises(ValueError, match=r"by default \(cycle_momentum='auto'\).*Adagrad"):
        fit(model, [keras_clr.CyclicLR(1e-3, 1e-2)], epochs=1)
