"""`fit_one_cycle(max_lr="race")`: the winner's run is a plain OneCycle fit,
every candidate sees the same batches, the compute is counted exactly, the
dropping rule, and bad input refused before any step."""

import math
import warnings

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest

import keras_clr
from test_finder import _assert_same_state
from test_finder import _state

SAMPLES, BATCH = 96, 16  # 6 steps an epoch
RATES = [0.003, 0.01, 0.03, 0.1]


def _data(seed=0, samples=SAMPLES):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * rng.normal(size=(samples, 1))).astype(
        "float32"
    )
    return x, y


def _compiled(seed=0, run_eagerly=False, model_class=keras.Sequential):
    keras.utils.set_random_seed(seed)
    model = model_class(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse", run_eagerly=run_eagerly)
    return model


def _one_cycle_rates(max_lr, steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    """PyTorch's OneCycleLR (cos anneal, two phases): the rate of each step."""

    def cos(start, end, pct):
        return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))

    initial = max_lr / div_factor
    peak, last = pct_start * steps - 1, steps - 1
    return [
        cos(initial, max_lr, t / peak)
        if t <= peak
        else cos(max_lr, initial / final_div_factor, (t - peak) / (last - peak))
        for t in range(steps)
    ]


def _assert_close_state(expected, model, rtol=1e-5):
    got = _state(model)  # another model's: its paths have other numbers
    assert len(got) == len(expected)
    for (path, want), (_, have) in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=rtol, atol=1e-7, err_msg=path)


@pytest.mark.parametrize("epochs", [1, 5])
def test_the_winner_is_a_plain_fit_at_its_rate(epochs):
    # epochs=1 decides at the training's end, among candidates that all
    # trained to it: the model must end as the winner's run left it.
    x, y = _data()
    xv, yv = _data(1, 32)
    model = _compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        max_lr="race",
        candidates=RATES,
        shuffle=False,
        validation_data=(xv, yv),
        verbose=0,
    )
    race = history.race
    assert race.winner in RATES
    plain = _compiled()
    expected = plain.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        validation_data=(xv, yv),
        verbose=0,
        callbacks=[keras_clr.OneCycle(race.winner)],
    )
    _assert_close_state(_state(plain), model)
    assert int(model.optimizer.iterations) == epochs * 6
    # the History is the winner's, over every epoch
    assert history.model is model and model.history is history
    assert history.epoch == list(range(epochs))
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history.history[key], expected.history[key], rtol=1e-5)
    closed = _one_cycle_rates(race.winner, epochs * 6)
    np.testing.assert_allclose(
        history.history["learning_rate"],
        [closed[6 * (e + 1) - 1] for e in range(epochs)],
        rtol=1e-6,
    )
    assert history.params["epochs"] == epochs
    # the winner had the lowest validation loss where the last cut was made
    cut = 1 if epochs == 1 else 3  # the cuts (nearest 25% and 50%): epoch 1 / 1, 3
    at_cut = {rate: curve[cut - 1] for rate, curve in race.val_loss.items() if len(curve) >= cut}
    assert race.winner == min(at_cut, key=at_cut.get)


def test_every_candidate_sees_the_same_shuffled_batches():
    # Epoch e's order is np.random.default_rng([race_seed, e]).permutation(n),
    # whichever candidate trains it: each candidate's first epoch, and the
    # winner's whole run, equal plain fits fed those batches in that order.
    x, y = _data()
    xv, yv = _data(1, 32)
    epochs, seed, rates = 4, 123, [0.01, 0.05]
    model = _compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=epochs,
        max_lr="race",
        candidates=rates,
        race_seed=seed,
        validation_data=(xv, yv),
        verbose=0,
    )
    race = history.race

    def by_hand(rate, epochs_run):
        plain = _compiled()
        schedule = keras_clr.OneCycle(rate, total_steps=epochs * 6)
        losses = []
        for epoch in range(epochs_run):
            order = np.random.default_rng([seed, epoch]).permutation(SAMPLES)
            fitted = plain.fit(
                x[order],
                y[order],
                batch_size=BATCH,
                shuffle=False,
                initial_epoch=epoch,
                epochs=epoch + 1,
                verbose=0,
                validation_data=(xv, yv),
                callbacks=[schedule],
            )
            losses += fitted.history["val_loss"]
        return plain, losses

    for rate in rates:  # both trained the first epoch (the first cut is at its end)
        _, losses = by_hand(rate, 1)
        np.testing.assert_allclose(race.val_loss[rate][0], losses[0], rtol=1e-5)
    plain, losses = by_hand(race.winner, epochs)
    np.testing.assert_allclose(history.history["val_loss"], losses, rtol=1e-5)
    _assert_close_state(_state(plain), model)
    # the orders differ between epochs
    assert not np.array_equal(
        np.random.default_rng([seed, 0]).permutation(SAMPLES),
        np.random.default_rng([seed, 1]).permutation(SAMPLES),
    )


class _CountingSequential(keras.Sequential):
    """Counts the train steps it runs (compiled with run_eagerly=True)."""

    count = 0

    def train_step(self, data):
        type(self).count += 1
        return super().train_step(data)


def test_the_compute_is_every_step_trained_over_one_training():
    x, y = _data()
    xv, yv = _data(1, 32)
    _CountingSequential.count = 0
    model = _compiled(run_eagerly=True, model_class=_CountingSequential)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=8,
            max_lr="race",
            validation_data=(xv, yv),
            verbose=0,
        )
    race = history.race
    # the range test's steps and every candidate's, counted by the model
    assert race.range_steps > 0
    np.testing.assert_allclose(race.compute, _CountingSequential.count / 48)
    # with no candidate diverging: the 5 candidates the first 2 epochs (the
    # epoch nearest 25% of 8), the best 3 to epoch 4 (50%), the winner to 8
    k = len(race.candidates)
    assert not any("non-finite" in reason for _, reason in race.dropped.values())
    trained = 5 * 2 * 6 + 3 * 2 * 6 + 4 * 6
    assert _CountingSequential.count == race.range_steps + trained
    # the candidates: five, a third of a decade apart
    ratios = np.diff(np.log10(race.candidates))
    np.testing.assert_allclose(ratios, 1 / 3, rtol=1e-9)
    assert k == 5
    frame = race.to_frame()
    assert list(frame.columns) == ["max_lr", "epoch", "val_loss", "dropped", "winner"]
    assert len(frame) == 5 * 2 + 3 * 2 + 4
    assert frame["dropped"].notna().sum() == k - 1
    assert "winner=" in repr(race)
    ax = race.plot()
    assert len(ax.get_lines()) >= k
    plt.close(ax.figure)


def test_a_diverging_candidate_is_dropped_at_once_and_the_rest_cut():
    x, y = _data()
    xv, yv = _data(1, 32)
    rates = [0.001, 0.003, 0.01, 0.03, 0.1, 1e4]
    model = _compiled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=8,
            max_lr="race",
            candidates=rates,
            verbose=0,
            validation_data=(xv, yv),
        )
    race = history.race
    epoch, reason = race.dropped[1e4]
    assert epoch == 1 and "non-finite" in reason
    assert race.steps[1e4] == 6  # one epoch, then dropped
    # at the end of epoch 2 (nearest 25% of 8): the best 3 of 5 kept
    second = {rate: race.val_loss[rate][1] for rate in rates[:-1]}
    kept = sorted(second, key=second.get)[:3]
    for rate in rates[:-1]:
        if rate not in kept:
            assert race.dropped[rate][0] == 2
            assert race.steps[rate] == 12
    # at the end of epoch 4 (50%): the best one, which trains to the end
    fourth = {rate: race.val_loss[rate][3] for rate in kept}
    assert race.winner == min(fourth, key=fourth.get)
    for loser in set(kept) - {race.winner}:
        assert race.dropped[loser][0] == 4 and race.steps[loser] == 24
    assert race.steps[race.winner] == 48
    assert np.all(np.isfinite(model.get_weights()[0]))


def test_when_every_candidate_diverges_the_model_is_put_back():
    x, y = _data()
    model = _compiled()
    keras_clr.range_test.state.build_optimizer(model)
    before = _state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="Every candidate of the race diverged"):
            keras_clr.fit_one_cycle(
                model,
                x,
                y,
                batch_size=BATCH,
                epochs=4,
                max_lr="race",
                candidates=[1e4, 1e5],
                verbose=0,
                validation_data=_data(1, 32),
            )
    _assert_same_state(before, model)


def test_the_automatic_hold_out_warns_and_validation_split_is_keras_split():
    x, y = _data(samples=100)
    model = _compiled()
    with pytest.warns(UserWarning, match="first 90 samples and holds out the last 10"):
        history = keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=4,
            max_lr="race",
            candidates=RATES,
            shuffle=False,
            verbose=0,
        )
    # validation_split holds out the last samples, as Keras does: the winner
    # is a plain fit with the same split
    model = _compiled()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=4,
            max_lr="race",
            candidates=RATES,
            shuffle=False,
            validation_split=0.25,
            verbose=0,
        )
    assert not [w for w in caught if "holds out" in str(w.message)]
    plain = _compiled()
    expected = plain.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        shuffle=False,
        validation_split=0.25,
        verbose=0,
        callbacks=[keras_clr.OneCycle(history.race.winner)],
    )
    np.testing.assert_allclose(history.history["val_loss"], expected.history["val_loss"], rtol=1e-5)
    _assert_close_state(_state(plain), model)


def _dataset():
    import tensorflow as tf

    x, y = _data()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(candidates=[]), r"candidates.*Received: candidates=\[\]"),
        (dict(candidates=[0.1]), r"at least two.*Received: candidates=\[0.1\]"),
        (dict(candidates=[0.1, -1.0]), r"-1.0 is not one"),
        (dict(candidates=[0.1, float("nan")]), r"nan is not one"),
        (dict(candidates=[0.1, float("inf")]), r"inf is not one"),
        (dict(candidates="0.1"), r"Received: candidates='0.1'"),
        (dict(epochs=0), r"`epochs`.*Received: epochs=0"),
        (dict(callbacks=[keras.callbacks.EarlyStopping()]), r"EarlyStopping"),
        (dict(steps_per_epoch=3), r"`steps_per_epoch` is set by the race"),
        (dict(initial_epoch=1), r"`initial_epoch` is set by the race"),
        (dict(workers=2), r"`workers` is not one the race takes"),
        (dict(race_seed=-1), r"race_seed=-1"),
        (dict(shuffle="batch"), r"shuffle='batch'"),
        (dict(validation_split=1.5), r"validation_split=1.5"),
        (dict(validation_data=iter([])), r"not a generator"),
        (
            dict(validation_data=(np.zeros((4, 4)), np.zeros((4, 1))), validation_split=0.2),
            r"not both",
        ),
        (dict(x="dataset"), r"must be NumPy arrays.*Received: x=.*Dataset"),
        (dict(x="one sample"), r"leaves no training samples"),
    ],
)
def test_bad_input_is_refused_before_any_step(kwargs, match):
    x, y = _data()
    if kwargs.get("x") == "dataset":
        x, y = _dataset(), None
        del kwargs["x"]
    elif kwargs.get("x") == "one sample":
        x, y = x[:1], y[:1]
        del kwargs["x"]
    kwargs = {"epochs": 2, **kwargs}
    model = _compiled()
    keras_clr.range_test.state.build_optimizer(model)
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        keras_clr.fit_one_cycle(model, x, y, batch_size=BATCH, max_lr="race", verbose=0, **kwargs)
    _assert_same_state(before, model)
    assert int(model.optimizer.iterations) == 0


_USER_CALLBACKS = {
    "ModelCheckpoint": lambda d: keras.callbacks.ModelCheckpoint(str(d / "m.keras")),
    "EarlyStopping": lambda d: keras.callbacks.EarlyStopping(),
    "CSVLogger": lambda d: keras.callbacks.CSVLogger(str(d / "log.csv")),
    "TensorBoard": lambda d: keras.callbacks.TensorBoard(str(d / "tb")),
    "BackupAndRestore": lambda d: keras.callbacks.BackupAndRestore(str(d / "backup")),
}


def _refused(callbacks, tmp_path, match):
    """The race refuses `callbacks` before any step and before any file."""
    x, y = _data()
    model = _compiled()
    keras_clr.range_test.state.build_optimizer(model)
    before = _state(model)
    with pytest.raises(ValueError, match=match):
        keras_clr.fit_one_cycle(
            model, x, y, batch_size=BATCH, epochs=2, max_lr="race", callbacks=callbacks, verbose=0
        )
    _assert_same_state(before, model)
    assert int(model.optimizer.iterations) == 0
    assert not any(tmp_path.iterdir())  # no checkpoint, log or backup written


@pytest.mark.parametrize("name", sorted(_USER_CALLBACKS))
def test_a_users_callback_is_refused_by_name_before_any_step(name, tmp_path):
    _refused(
        [_USER_CALLBACKS[name](tmp_path)],
        tmp_path,
        rf"`callbacks` \({name}\) cannot be passed to the race.*"
        rf"pass a float `max_lr`.*Received: callbacks=\[{name}\]$",
    )


def test_every_callback_passed_is_named(tmp_path):
    names = sorted(_USER_CALLBACKS)
    listed = ", ".join(names)
    _refused(
        [_USER_CALLBACKS[name](tmp_path) for name in names],
        tmp_path,
        rf"`callbacks` \({listed}\).*Received: callbacks=\[{listed}\]$",
    )
    # a CallbackList, or one callback not in a list, likewise
    _refused(
        keras.callbacks.CallbackList(
            [keras.callbacks.EarlyStopping(), keras.callbacks.TerminateOnNaN()]
        ),
        tmp_path,
        r"Received: callbacks=\[EarlyStopping, TerminateOnNaN\]$",
    )
    _refused(keras.callbacks.EarlyStopping(), tmp_path, r"Received: callbacks=\[EarlyStopping\]$")


def test_race_arguments_need_the_race():
    x, y = _data()
    with pytest.raises(ValueError, match=r"candidates.*max_lr='race' only"):
        keras_clr.fit_one_cycle(
            _compiled(), x, y, epochs=1, max_lr=0.1, candidates=[0.1, 0.2], verbose=0
        )


@pytest.mark.parametrize("steps_per_execution, accumulation", [(4, None), (1, 2)])
def test_the_winner_is_a_plain_fit_with_several_steps_per_call_or_accumulation(
    steps_per_execution, accumulation
):
    # 4 steps per call do not divide the 6 of an epoch; accumulation over 2
    # batches gives 3 updates an epoch, each candidate's cycle 15 long
    def compiled():
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
        )
        model.compile(
            keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=accumulation),
            "mse",
            steps_per_execution=steps_per_execution,
        )
        return model

    x, y = _data()
    xv, yv = _data(1, 32)
    model = compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=5,
        max_lr="race",
        candidates=RATES,
        shuffle=False,
        validation_data=(xv, yv),
        verbose=0,
    )
    plain = compiled()
    plain.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=5,
        shuffle=False,
        validation_data=(xv, yv),
        verbose=0,
        callbacks=[keras_clr.OneCycle(history.race.winner)],
    )
    _assert_close_state(_state(plain), model)
    updates = 6 // (accumulation or 1)
    assert history.race.steps_per_training == 5 * updates
    closed = _one_cycle_rates(history.race.winner, 5 * updates)
    np.testing.assert_allclose(
        history.history["learning_rate"],
        [closed[updates * (e + 1) - 1] for e in range(5)],
        rtol=1e-6,
    )


@pytest.mark.parametrize("weights", ["sample_weight", "class_weight"])
def test_dict_inputs_and_weights_are_a_plain_fit(weights):
    rng = np.random.default_rng(0)
    x = {
        "a": rng.normal(size=(96, 3)).astype("float32"),
        "b": rng.normal(size=(96, 2)).astype("float32"),
    }
    y = rng.integers(0, 3, size=96).astype("int32")
    kwargs = (
        {"sample_weight": rng.uniform(0.5, 1.5, size=96).astype("float32")}
        if weights == "sample_weight"
        else {"class_weight": {0: 1.0, 1: 2.0, 2: 0.5}}
    )

    def compiled():
        keras.utils.set_random_seed(0)
        a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
        hidden = keras.layers.Dense(8, activation="tanh")(keras.layers.Concatenate()([a, b]))
        model = keras.Model({"a": a, "b": b}, keras.layers.Dense(3)(hidden))
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    model = compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        max_lr="race",
        candidates=[1e-3, 1e-2, 1e-1],
        shuffle=False,
        validation_split=0.25,
        verbose=0,
        **kwargs,
    )
    plain = compiled()
    expected = plain.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=4,
        shuffle=False,
        verbose=0,
        validation_split=0.25,
        **kwargs,
        callbacks=[keras_clr.OneCycle(history.race.winner)],
    )
    _assert_close_state(_state(plain), model)
    np.testing.assert_allclose(history.history["val_loss"], expected.history["val_loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "epochs, cuts",
    [
        (1, [(1, 1)]),
        (2, [(1, 1)]),
        (3, [(1, 3), (2, 1)]),
        (4, [(1, 3), (2, 1)]),
        (8, [(2, 3), (4, 1)]),
        (10, [(3, 3), (5, 1)]),
        (100, [(25, 3), (50, 1)]),
    ],
)
def test_the_cuts_are_at_the_epochs_nearest_a_quarter_and_half(epochs, cuts):
    from keras_clr import race

    assert race.checkpoints(epochs) == cuts
    # 5 candidates to the first cut, then as many as it keeps
    trained, alive, done = 0, 5, 0
    for epoch, kept in cuts:
        trained, alive, done = trained + alive * (epoch - done), kept, epoch
    trained += alive * (epochs - done)
    assert race.planned_trainings(5, epochs) == pytest.approx(trained / epochs)
    if epochs == 8:
        assert race.planned_trainings(5, 8) == pytest.approx((5 * 2 + 3 * 2 + 4) / 8)


def test_without_a_suggestion_the_candidates_are_half_a_decade_apart_below_the_end():
    from keras_clr import race
    from keras_clr.results import LRFinderResult

    lrs = np.logspace(-7, 1, 100)
    flat = LRFinderResult(lrs, np.full(100, 2.3), num_steps=100)  # never descends
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert flat.suggest(one_cycle=keras_clr.OneCycle(1.0)) is None
    from keras_clr.schedule_arguments import PlannedSchedule

    rates, _, rule = race.candidates_from(flat, PlannedSchedule(keras_clr.OneCycle, {}))
    # a decade below where the test ended (10), and down half a decade at a time
    np.testing.assert_allclose(rates, [1e-2, 10**-1.5, 1e-1, 10**-0.5, 1.0], rtol=1e-9)
    assert "no suggestion" in rule


def test_a_winner_that_never_lowered_the_validation_loss_warns():
    # The model starts at zero, which is exactly right on the validation
    # data (all targets 0): any training moves it away, so no candidate can
    # bring the validation loss below where it started.
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    xv = _data(1, 32)[0]
    with pytest.warns(UserWarning, match=r"never brought the validation loss below the 0 "):
        history = keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=4,
            max_lr="race",
            candidates=[0.003, 0.01, 0.03],
            validation_data=(xv, np.zeros((32, 1), "float32")),
            verbose=0,
        )
    assert history.race.start_val_loss == 0.0
    assert "val_loss before training: 0" in repr(history.race)
