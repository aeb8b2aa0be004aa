"""Cases run under tf.distribute.MirroredStrategy on two logical CPUs.

Not collected by the main run (the name does not start with `test_`):
`tests/test_distribute.py` runs this module in a fresh interpreter, because
the logical devices must be configured before TensorFlow initialises its
devices, which the main run has long done.

Each case trains the same tiny model twice on the same data with the same
global batch: once under the strategy (two replicas, half a batch each) and
once on one device; the two must agree.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras_clr  # noqa: E402

BATCH = 16  # global batch: 8 per replica
SAMPLES = 64
STEPS_PER_EPOCH = SAMPLES // BATCH


@pytest.fixture(scope="module")
def strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2, devices
    return tf.distribute.MirroredStrategy(devices)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(SAMPLES, 1))).astype(
        "float32"
    )
    return x, y


def _model(optimizer, batchnorm=False):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((3,)), keras.layers.Dense(4, activation="tanh")]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    model = keras.Sequential([*layers, keras.layers.Dense(1)])
    model.compile(optimizer(), "mse", metrics=["mae"])
    return model


def _pair(strategy, optimizer, batchnorm=False):
    """(model under the strategy, the same model on one device)."""
    with strategy.scope():
        mirrored = _model(optimizer, batchnorm)
    return mirrored, _model(optimizer, batchnorm)


def _sgd():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def _adam():
    return keras.optimizers.Adam(0.01)


def _replica_values(model):
    """Every replica's copy of every model, optimizer and metric variable."""
    values = {}
    for v in model.variables + model.optimizer.variables + model.metrics_variables:
        copies = getattr(v.value, "values", None) or (v.value,)
        values[v.path] = [np.array(c.numpy()) for c in copies]
    return values


def _assert_bit_identical(before, after):
    assert before.keys() == after.keys()
    for path, copies in before.items():
        assert len(copies) == len(after[path]), path
        for old, new in zip(copies, after[path]):
            assert old.dtype == new.dtype and old.tobytes() == new.tobytes(), path


class _BatchLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append((logs["learning_rate"], logs["momentum"]))


def _fit(model, callback, epochs=3):
    x, y = _data()
    logs = _BatchLogs()
    history = model.fit(
        x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback, logs]
    )
    return np.array(logs.rows), history.history


def test_models_are_mirrored(strategy):
    mirrored, _ = _pair(strategy, _sgd)
    assert mirrored.distribute_strategy is strategy
    assert all(len(v.value.values) == 2 for v in mirrored.trainable_variables)


@pytest.mark.parametrize(
    "make_callback, optimizer, attribute",
    [
        (lambda: keras_clr.OneCycle(0.1, total_steps=12), _sgd, "momentum"),
        (
            lambda: keras_clr.OneCycle(
                0.05, total_steps=12, anneal_strategy="linear", three_phase=True
            ),
            _adam,
            "beta_1",
        ),
        (lambda: keras_clr.CyclicLR(0.001, 0.1, step_size_up=3), _sgd, "momentum"),
        (
            lambda: keras_clr.CyclicLR(
                0.001, 0.05, step_size_up=2, step_size_down=3, mode="triangular2"
            ),
            _adam,
            "beta_1",
        ),
        (
            lambda: keras_clr.WarmupStableDecay(0.1, warmup_steps=3, decay_steps=4, total_steps=12),
            _sgd,
            "momentum",
        ),
        (
            lambda: keras_clr.WarmupStableDecay(
                0.05,
                warmup_steps=2,
                decay_steps=0.5,
                total_steps=12,
                warmup_type="cosine",
                decay_type="cosine",
                min_lr_ratio=0.1,
            ),
            _adam,
            "beta_1",
        ),
    ],
    ids=["one_cycle-sgd", "one_cycle-adam", "cyclic-sgd", "cyclic-adam", "wsd-sgd", "wsd-adam"],
)
def test_schedules_match_one_device(strategy, make_callback, optimizer, attribute):
    mirrored, single = _pair(strategy, optimizer)
    callback = make_callback()
    rows, history = _fit(mirrored, callback)
    single_rows, _ = _fit(single, make_callback())

    steps = np.arange(3 * STEPS_PER_EPOCH)
    np.testing.assert_allclose(rows[:, 0], callback.lr_schedule(steps), rtol=1e-6)
    np.testing.assert_allclose(rows[:, 1], callback.momentum_schedule(steps), rtol=1e-6)
    np.testing.assert_array_equal(rows, single_rows)
    assert {"learning_rate", "momentum", "loss"} <= set(history)
    for got, want in zip(mirrored.get_weights(), single.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the optimizer has its float back, the model its own train step
    assert type(getattr(mirrored.optimizer, attribute)) is float
    assert "train_step" not in mirrored.__dict__


class _CooldownAt(keras.callbacks.Callback):
    def __init__(self, schedule, epoch, batch):
        super().__init__()
        self.schedule, self.at = schedule, (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.schedule.start_cooldown()


def test_cooldown_on_demand_matches_one_device(strategy):
    runs = []
    for model in _pair(strategy, _sgd):
        callback = keras_clr.WarmupStableDecay(0.1, warmup_steps=2, decay_steps=4)
        logs = _BatchLogs()
        x, y = _data()
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=[callback, _CooldownAt(callback, 1, 1), logs],
        )
        assert callback.decay_start == STEPS_PER_EPOCH + 2
        runs.append(np.array(logs.rows))
    mirrored, single = runs
    np.testing.assert_array_equal(mirrored, single)
    # The peak until step 5, then 1 - sqrt over steps 6 to 9, then 0.
    expected = [0.0, 0.05] + [0.1] * 4 + [0.1 * (1 - np.sqrt(t / 4)) for t in range(4)]
    np.testing.assert_allclose(mirrored[:10, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(mirrored[10:, 0], 0.0)


def test_schedule_continues_over_two_fits(strategy):
    mirrored, single = _pair(strategy, _sgd)
    callback = keras_clr.CyclicLR(0.001, 0.1, step_size_up=5)
    first, _ = _fit(mirrored, callback, epochs=1)
    second, _ = _fit(mirrored, callback, epochs=2)
    reference, _ = _fit(single, keras_clr.CyclicLR(0.001, 0.1, step_size_up=5), epochs=3)
    np.testing.assert_array_equal(np.concatenate([first, second]), reference)


def _pretrained(strategy, **kwargs):
    """A model pair one epoch into training: non-zero slots and metrics."""
    mirrored, single = _pair(strategy, _sgd, **kwargs)
    x, y = _data(seed=1)
    for model in (mirrored, single):
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return mirrored, single


@pytest.mark.parametrize(
    "settings, reasons",
    [
        (dict(num_steps=12, stop_factor=None), {"completed"}),
        (dict(num_steps=30, end_lr=1e4), {"diverged", "nan"}),
    ],
    ids=["completed", "diverged"],
)
def test_find_lr_restores_every_replica(strategy, settings, reasons):
    model, _ = _pretrained(strategy, batchnorm=True)
    before = _replica_values(model)
    x, y = _data()
    result = keras_clr.find_lr(model, x, y, batch_size=BATCH, verbose=0, **settings)
    assert result.stop_reason in reasons
    _assert_bit_identical(before, _replica_values(model))
    assert type(model.optimizer.momentum) is float


def test_find_lr_restores_after_an_exception(strategy):
    model, _ = _pretrained(strategy)
    before = _replica_values(model)

    class Boom(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == 7:
                raise tf.errors.ResourceExhaustedError(None, None, "OOM on replica")

    x, y = _data()
    with pytest.raises(tf.errors.ResourceExhaustedError):
        keras_clr.find_lr(
            model, x, y, batch_size=BATCH, num_steps=20, verbose=0, callbacks=[Boom()]
        )
    _assert_bit_identical(before, _replica_values(model))


def test_find_lr_losses_match_one_device(strategy):
    mirrored, single = _pretrained(strategy)
    x, y = _data()
    settings = dict(
        batch_size=BATCH, num_steps=12, stop_factor=None, verbose=0, start_lr=1e-4, end_lr=1.0
    )
    got = keras_clr.find_lr(mirrored, x, y, **settings)
    want = keras_clr.find_lr(single, x, y, **settings)
    assert len(got.lrs) == 12 and got.stop_reason == "completed"
    np.testing.assert_array_equal(got.lrs, want.lrs)
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-5)


def test_lr_finder_monitors_a_metric_and_validation(strategy):
    mirrored, single = _pretrained(strategy)
    x, y = _data()
    settings = dict(
        batch_size=BATCH,
        num_steps=8,
        stop_factor=None,
        verbose=0,
        monitor="val_mae",
        validation_data=_data(seed=2),
        val_every=4,
        val_steps=2,
    )
    got = keras_clr.find_lr(mirrored, x, y, **settings)
    want = keras_clr.find_lr(single, x, y, **settings)
    assert len(got.lrs) == 2
    np.testing.assert_allclose(got.losses, want.losses, rtol=1e-5)
    np.testing.assert_allclose(got.metrics["train_loss"], want.metrics["train_loss"], rtol=1e-5)


def test_find_lr_repeats_restore_every_replica(strategy):
    model, _ = _pretrained(strategy, batchnorm=True)
    before = _replica_values(model)
    x, y = _data()
    result = keras_clr.find_lr(
        model, x, y, batch_size=BATCH, num_steps=12, stop_factor=None, repeats=3, verbose=0
    )
    assert result.stop_reason == "completed" and result.loss_band is not None
    _assert_bit_identical(before, _replica_values(model))


def test_tune_max_lr_restores_every_replica_and_matches_one_device(strategy):
    mirrored, single = _pretrained(strategy)
    before = _replica_values(mirrored)
    x, y = _data()
    searches = [
        keras_clr.tune_max_lr(
            model,
            x,
            y,
            batch_size=BATCH,
            total_steps=20,
            budget_steps=180,
            shuffle=False,
            verbose=0,
        )
        for model in (mirrored, single)
    ]
    _assert_bit_identical(before, _replica_values(mirrored))
    got, want = searches
    assert got.steps_used <= 180
    np.testing.assert_allclose(
        [r["max_lr"] for r in got.candidates[:3]],
        [r["max_lr"] for r in want.candidates[:3]],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        [r["loss"] for r in got.candidates[:3]], [r["loss"] for r in want.candidates[:3]], rtol=1e-3
    )


def _state_per_replica(model):
    """Every replica's copy of every model and optimizer variable, in order."""
    return [
        (v.path, np.array(copy.numpy()))
        for v in model.variables + model.optimizer.variables
        for copy in (getattr(v.value, "values", None) or (v.value,))
    ]


def test_race_winner_is_a_plain_fit_at_its_rate(strategy):
    # from a model one epoch into training (momentum slots for every
    # candidate to start from), shuffled batches: the winner's run equals a
    # plain fit under the strategy fed epoch e's batches in the race's order
    x, y = _data()
    model, _ = _pretrained(strategy)
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        max_lr="race",
        candidates=[0.003, 0.01, 0.03],
        race_seed=7,
        validation_data=_data(seed=2),
        verbose=0,
    )
    race = history.race
    assert race.winner in race.candidates and history.epoch == [0, 1, 2, 3]
    # the cuts of 4 epochs are at the ends of epochs 1 (the best 3 kept: all)
    # and 2 (the best one, which trains on to the end)
    assert race.compute == (3 * 1 + 3 * 1 + 1 * 2) / 4
    plain, _ = _pretrained(strategy)
    schedule = keras_clr.OneCycle(race.winner, total_steps=4 * STEPS_PER_EPOCH)
    for epoch in range(4):
        order = np.random.default_rng([7, epoch]).permutation(SAMPLES)
        plain.fit(
            x[order],
            y[order],
            batch_size=BATCH,
            shuffle=False,
            initial_epoch=epoch,
            epochs=epoch + 1,
            verbose=0,
            callbacks=[schedule],
        )
    got, want = _state_per_replica(model), _state_per_replica(plain)
    assert len(got) == len(want) == 2 * len(model.variables + model.optimizer.variables)
    for (path, have), (_, expected) in zip(got, want):
        np.testing.assert_allclose(have, expected, rtol=1e-5, atol=1e-7, err_msg=path)
    # one epoch before the race, 4 in it
    assert keras_clr.optimizers.iterations(model.optimizer) == 5 * STEPS_PER_EPOCH


# -- a MultiOptimizer (Keras 3.15 on): a learning rate per group ----------------------

needs_multi = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras 3.15 introduced MultiOptimizer"
)


def _multi():
    return keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(0.01, momentum=0.9), {".*head.*": keras.optimizers.Adam(0.05)}
        )
    )


def _multi_pair(strategy):
    """(model under the strategy, the same on one device): its hidden layer
    updated by an SGD, its output layer ("head") by an Adam."""

    def model():
        keras.utils.set_random_seed(0)
        built = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(4, activation="tanh", name="body"),
                keras.layers.Dense(1, name="head"),
            ]
        )
        built.compile(_multi(), "mse", metrics=["mae"])
        return built

    with strategy.scope():
        mirrored = model()
    return mirrored, model()


class _GroupLogs(keras.callbacks.Callback):
    """Each step's logged and applied rates, per group (applied: read from
    each sub-optimizer's variable)."""

    def __init__(self):
        super().__init__()
        self.logged, self.applied = [], []

    def on_train_batch_end(self, batch, logs=None):
        subs = self.model.optimizer.optimizers
        self.logged.append([logs[f"learning_rate_{o.name}"] for o in subs])
        self.applied.append([float(o.learning_rate.numpy()) for o in subs])


@needs_multi
def test_a_multi_optimizer_schedule_matches_one_device(strategy):
    mirrored, single = _multi_pair(strategy)
    x, y = _data()
    runs = []
    for model in (mirrored, single):
        logs = _GroupLogs()
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[keras_clr.OneCycle(0.1), logs],
        )
        runs.append(logs)
    assert runs[0].logged == runs[0].applied  # what each group applied
    assert runs[0].applied == runs[1].applied
    lrs = keras_clr.OneCycle(0.1, total_steps=2 * STEPS_PER_EPOCH).lr_schedule(
        np.arange(2 * STEPS_PER_EPOCH)
    )
    # Keras lists the mapped Adam (0.05, the largest: the schedule's own
    # rates) before the default SGD (0.01: a fifth of them).
    np.testing.assert_allclose([row[0] for row in runs[0].applied], lrs, rtol=1e-6)
    np.testing.assert_allclose([row[1] for row in runs[0].applied], lrs * 0.2, rtol=1e-6)
    for got, want in zip(mirrored.get_weights(), single.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    subs = mirrored.optimizer.optimizers
    assert type(subs[0].beta_1) is float and type(subs[1].momentum) is float


@needs_multi
def test_find_lr_restores_every_group_on_every_replica(strategy):
    mirrored, _ = _multi_pair(strategy)
    x, y = _data(seed=1)
    mirrored.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    before = _replica_values(mirrored)
    x, y = _data()
    result = keras_clr.find_lr(
        mirrored, x, y, batch_size=BATCH, verbose=0, num_steps=30, end_lr=1e4
    )
    assert result.stop_reason in {"diverged", "nan"}
    _assert_bit_identical(before, _replica_values(mirrored))
