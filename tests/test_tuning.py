"""`tune_max_lr` and `fit_one_cycle`: probes that are what they say,
restoration, the budget, and bad input refused before any step."""

import re

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest

import keras_clr
from keras_clr import tuning
from test_finder import _assert_same_state, _state

SAMPLES, BATCH = 96, 16  # 6 steps an epoch
QUIET = dict(verbose=0)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]])).astype("float32")
    return x, y


def _compiled(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


def test_the_search_restores_the_model_and_stays_within_its_budget():
    x, y = _data()
    model = _compiled()
    tuning.state.build_optimizer(model)
    before = _state(model)
    search = keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, epochs=10,
                                   budget_steps=190, **QUIET)
    _assert_same_state(before, model)
    assert search.total_steps == 60
    assert search.steps_used <= 190
    rates = [row["max_lr"] for row in search.candidates]
    # 20-step probes (at most 90 steps left / 5, at least 20), while the budget lasts
    probes = [row["probe_steps"] for row in search.candidates]
    assert set(probes) == {20} and len(probes) >= 4
    assert search.steps_used == len(search.range_test.lrs) + sum(probes)
    # the first three span the range test's descent, evenly in log scale
    low, high = search.range_test.suggest_range()
    np.testing.assert_allclose(rates[1], np.sqrt(low * high))
    np.testing.assert_allclose(rates[0] * rates[2], rates[1] ** 2)
    assert rates[2] / rates[0] >= 4 * (1 - 1e-9)
    assert search.max_lr in rates
    best = min(search.candidates, key=lambda row: row["loss"])
    assert search.max_lr == best["max_lr"]
    frame = search.to_frame()
    assert list(frame.columns) == ["max_lr", "probe_steps", "loss", "chosen"]
    assert frame["chosen"].sum() == 1
    assert f"max_lr={search.max_lr:.3g}" in repr(search)
    assert isinstance(search.range_test, keras_clr.LRFinderResult)
    ax = search.plot()
    assert ax.get_xscale() == "log"
    plt.close(ax.figure)


def test_a_probe_is_a_one_cycle_training_from_the_same_start():
    # The loss a probe reports is that of OneCycle(max_lr, total_steps=P)
    # trained P steps from the model as it was, evaluated on the fixed subset.
    x, y = _data()
    model = _compiled()
    search = keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, total_steps=30,
                                   budget_steps=250, shuffle=False, **QUIET)
    row = search.candidates[1]
    reference = _compiled()
    reference.fit(x, y, batch_size=BATCH, epochs=row["probe_steps"] // 6, verbose=0,
                  shuffle=False,
                  callbacks=[keras_clr.OneCycle(row["max_lr"], total_steps=row["probe_steps"])])
    want = reference.evaluate(x[:tuning.EVAL_BATCHES * BATCH], y[:tuning.EVAL_BATCHES * BATCH],
                              batch_size=BATCH, verbose=0)
    assert row["probe_steps"] == 30  # min(total_steps, what the budget leaves)
    np.testing.assert_allclose(row["loss"], want, rtol=1e-5)


def test_fit_one_cycle_trains_at_the_tuned_rate():
    x, y = _data()
    model = _compiled()
    history = keras_clr.fit_one_cycle(model, x, y, epochs=4, batch_size=BATCH,
                                      budget_steps=160, verbose=0,
                                      callbacks=[keras.callbacks.History()])
    search = history.max_lr_search
    assert isinstance(search, keras_clr.MaxLRSearch)
    rates = history.history["learning_rate"]
    assert len(rates) == 4
    schedule = keras_clr.OneCycle(search.max_lr, total_steps=24).lr_schedule
    np.testing.assert_allclose(rates[-1], np.float32(schedule(23)), rtol=1e-6)
    assert int(model.optimizer.iterations) == 24  # only the real training's steps
    fixed = keras_clr.fit_one_cycle(_compiled(), x, y, epochs=1, batch_size=BATCH,
                                    max_lr=0.05, one_cycle={"pct_start": 0.5}, verbose=0)
    assert fixed.max_lr_search is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=2, budget_steps=100), "`budget_steps` must be at least 160.*budget_steps=100"),
    (dict(), "`total_steps` or `epochs`.*total_steps=None, epochs=None"),
    (dict(total_steps=10, epochs=2), "one of `total_steps` and `epochs`"),
    (dict(epochs=0), "`epochs` must be a positive integer"),
    (dict(epochs=2, callbacks=[]), "without your callbacks"),
])
def test_bad_input_is_refused_before_any_step(kwargs, match):
    x, y = _data()
    model = _compiled()
    with pytest.raises(ValueError, match=match):
        keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, **kwargs, **QUIET)
    assert int(model.optimizer.iterations) == 0


def test_epochs_need_data_with_a_length():
    x, y = _data()

    def batches():
        for i in range(0, SAMPLES, BATCH):
            yield x[i:i + BATCH], y[i:i + BATCH]

    model = _compiled()
    with pytest.raises(ValueError, match=re.escape("Pass `total_steps`")):
        keras_clr.tune_max_lr(model, batches(), epochs=2, **QUIET)
    uncompiled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="must be compiled"):
        keras_clr.tune_max_lr(uncompiled, x, y, epochs=2, **QUIET)
    with pytest.raises(ValueError, match="dict of OneCycle arguments"):
        keras_clr.fit_one_cycle(model, x, y, epochs=1, max_lr=0.1, one_cycle=0.3)


def test_validation_data_scores_the_probes():
    x, y = _data()
    model = _compiled()
    held = (x[:32] * 2, y[:32] * 2)  # data the probes do not train on
    start = model.evaluate(*held, batch_size=BATCH, verbose=0)
    search = keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, epochs=3,
                                   validation_data=held, budget_steps=190, **QUIET)
    np.testing.assert_allclose(search.start_loss, start, rtol=1e-6)
    assert search.range_test.monitor == "loss"  # the range test reads the training loss


def test_fit_one_cycle_is_tune_max_lr_then_fit_with_one_cycle():
    x, y = _data()
    model = _compiled()
    history = keras_clr.fit_one_cycle(model, x, y, epochs=3, batch_size=BATCH,
                                      budget_steps=190, shuffle=False, verbose=0,
                                      one_cycle={"pct_start": 0.4})
    by_hand = _compiled()
    search = keras_clr.tune_max_lr(by_hand, x, y, epochs=3, batch_size=BATCH,
                                   budget_steps=190, shuffle=False, verbose=0)
    assert search.max_lr == history.max_lr_search.max_lr
    by_hand.fit(x, y, epochs=3, batch_size=BATCH, shuffle=False, verbose=0,
                callbacks=[keras_clr.OneCycle(search.max_lr, pct_start=0.4)])
    for got, want in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_the_first_rates_span_the_descent_or_where_the_test_ended():
    lrs = np.geomspace(1e-5, 1.0, 50)
    falling = keras_clr.LRFinderResult(lrs, 2.0 - 1.0 / (1 + np.exp(-4 * (np.log10(lrs) + 2))))
    low, high = falling.suggest_range()
    rates, why = tuning._first_rates(falling)
    np.testing.assert_allclose(rates[1], np.sqrt(low * high))  # its middle, in log scale
    np.testing.assert_allclose(rates[0] * rates[2], rates[1] ** 2)
    np.testing.assert_allclose(rates[2] / rates[0], max(high / low, 4.0))  # at least 4x wide
    assert "descent" in why
    # flat, or falling too little for a suggestion (under 1%): where it ended
    flat = keras_clr.LRFinderResult(lrs[:30], np.linspace(2.0, 1.995, 30))
    rates, why = tuning._first_rates(flat)
    np.testing.assert_allclose(rates, [lrs[29] / 10, lrs[29], lrs[29] * 10])
    assert "never descended" in why


@pytest.mark.parametrize("losses, want", [
    ([0.5, 0.4, 0.3], 0.4),     # best the highest: on by the spacing (x2)
    ([0.3, 0.4, 0.5], 0.025),   # best the lowest: down by the spacing
    ([0.99, 0.985, 0.98], 2.0),  # barely trained (under 5% below the start): a decade up
    ([0.5, 0.3, 0.4], 0.02 ** 0.5),  # bracketed: halfway to the better neighbour
])
def test_the_next_rate(losses, want):
    rows = [{"max_lr": r, "loss": v} for r, v in zip([0.05, 0.1, 0.2], losses)]
    np.testing.assert_allclose(tuning._next_rate(rows, 1.0), want)


def test_the_search_ends_once_the_spacing_is_fine():
    rows = [{"max_lr": r, "loss": v}
            for r, v in zip([0.05, 0.1, 0.2, 0.02 ** 0.5], [0.5, 0.3, 0.4, 0.2])]
    assert tuning._next_rate(rows, 1.0) is None


def test_steps_per_epoch_sets_the_training_to_tune_for():
    x, y = _data()
    model = _compiled()
    search = keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, epochs=4, steps_per_epoch=3,
                                   budget_steps=170, **QUIET)
    assert search.total_steps == 12
    history = keras_clr.fit_one_cycle(model, x, y, batch_size=BATCH, epochs=2, steps_per_epoch=3,
                                      budget_steps=170, verbose=0)
    assert history.max_lr_search.total_steps == 6
    assert int(model.optimizer.iterations) == 6


def test_batch_norm_statistics_are_those_of_the_weights_a_probe_reached():
    # After a short probe the moving averages hold mostly their old values;
    # the probe is scored with them set to the mean over the scoring batches.
    x, _ = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    evaluation = ((x[:32], None), {"batch_size": BATCH})
    tuning._recalibrate(model, evaluation)
    norm = model.layers[0]
    want = np.mean([x[:16].mean(axis=0), x[16:32].mean(axis=0)], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), want, rtol=1e-5)
    assert norm.momentum == 0.99


def test_a_batch_norm_model_is_restored_bit_for_bit():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(), "mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    before = _state(model)
    keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, total_steps=20, budget_steps=170,
                          **QUIET)
    _assert_same_state(before, model)
