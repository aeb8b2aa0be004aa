"""`tune_max_lr` and `fit_one_cycle`: probes that are what they say,
restoration, the budget, and bad input refused before any step."""

import re

import keras
import matplotlib.pyplot as plt
import numpy as np
import pytest

import keras_clr
from keras_clr import schedule_arguments
from keras_clr import tuning
from test_finder import _assert_same_state
from test_finder import _state

SAMPLES, BATCH = 96, 16  # 6 steps an epoch
QUIET = dict(verbose=0)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]])).astype("float32")
    return x, y


def _compiled(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


def test_the_search_restores_the_model_and_stays_within_its_budget():
    x, y = _data()
    model = _compiled()
    tuning.state.build_optimizer(model)
    before = _state(model)
    search = keras_clr.tune_max_lr(
        model, x, y, batch_size=BATCH, epochs=10, budget_steps=190, **QUIET
    )
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
    assert list(frame.columns) == ["max_lr", "probe_steps", "loss", "note", "chosen"]
    assert frame["note"].isna().all()
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
    search = keras_clr.tune_max_lr(
        model, x, y, batch_size=BATCH, total_steps=30, budget_steps=250, shuffle=False, **QUIET
    )
    row = search.candidates[1]
    reference = _compiled()
    reference.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=row["probe_steps"] // 6,
        verbose=0,
        shuffle=False,
        callbacks=[keras_clr.OneCycle(row["max_lr"], total_steps=row["probe_steps"])],
    )
    want = reference.evaluate(
        x[: tuning.EVAL_BATCHES * BATCH],
        y[: tuning.EVAL_BATCHES * BATCH],
        batch_size=BATCH,
        verbose=0,
    )
    assert row["probe_steps"] == 30  # min(total_steps, what the budget leaves)
    np.testing.assert_allclose(row["loss"], want, rtol=1e-5)


def test_fit_one_cycle_trains_at_the_tuned_rate():
    x, y = _data()
    model = _compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        epochs=4,
        batch_size=BATCH,
        budget_steps=160,
        verbose=0,
        callbacks=[keras.callbacks.History()],
    )
    search = history.max_lr_search
    assert isinstance(search, keras_clr.MaxLRSearch)
    rates = history.history["learning_rate"]
    assert len(rates) == 4
    schedule = keras_clr.OneCycle(search.max_lr, total_steps=24).lr_schedule
    np.testing.assert_allclose(rates[-1], np.float32(schedule(23)), rtol=1e-6)
    assert int(model.optimizer.iterations) == 24  # only the real training's steps
    fixed = keras_clr.fit_one_cycle(
        _compiled(),
        x,
        y,
        epochs=1,
        batch_size=BATCH,
        max_lr=0.05,
        one_cycle={"pct_start": 0.5},
        verbose=0,
    )
    assert fixed.max_lr_search is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=2, budget_steps=100), "`budget_steps` must be at least 160.*budget_steps=100"),
        (dict(), "`total_steps` or `epochs`.*total_steps=None, epochs=None"),
        (dict(total_steps=10, epochs=2), "one of `total_steps` and `epochs`"),
        (dict(epochs=0), "`epochs` must be a positive integer"),
        (dict(epochs=2, callbacks=[]), "without your callbacks"),
    ],
)
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
            yield x[i : i + BATCH], y[i : i + BATCH]

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
    search = keras_clr.tune_max_lr(
        model, x, y, batch_size=BATCH, epochs=3, validation_data=held, budget_steps=190, **QUIET
    )
    np.testing.assert_allclose(search.start_loss, start, rtol=1e-6)
    assert search.range_test.monitor == "loss"  # the range test reads the training loss


def test_fit_one_cycle_is_tune_max_lr_then_fit_with_one_cycle():
    x, y = _data()
    model = _compiled()
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        epochs=3,
        batch_size=BATCH,
        budget_steps=190,
        shuffle=False,
        verbose=0,
        one_cycle={"pct_start": 0.4},
    )
    by_hand = _compiled()
    search = keras_clr.tune_max_lr(
        by_hand, x, y, epochs=3, batch_size=BATCH, budget_steps=190, shuffle=False, verbose=0
    )
    assert search.max_lr == history.max_lr_search.max_lr
    by_hand.fit(
        x,
        y,
        epochs=3,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=[keras_clr.OneCycle(search.max_lr, pct_start=0.4)],
    )
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


@pytest.mark.parametrize(
    "losses, want",
    [
        ([0.5, 0.4, 0.3], 0.4),  # best the highest: on by the spacing (x2)
        ([0.3, 0.4, 0.5], 0.025),  # best the lowest: down by the spacing
        ([0.99, 0.985, 0.98], 2.0),  # barely trained (under 5% below the start): a decade up
        ([0.5, 0.3, 0.4], 0.02**0.5),  # bracketed: halfway to the better neighbour
    ],
)
def test_the_next_rate(losses, want):
    rows = [{"max_lr": r, "loss": v} for r, v in zip([0.05, 0.1, 0.2], losses)]
    np.testing.assert_allclose(tuning._next_rate(rows, 1.0), want)


def test_the_search_ends_once_the_spacing_is_fine():
    rows = [
        {"max_lr": r, "loss": v} for r, v in zip([0.05, 0.1, 0.2, 0.02**0.5], [0.5, 0.3, 0.4, 0.2])
    ]
    assert tuning._next_rate(rows, 1.0) is None


def test_steps_per_epoch_sets_the_training_to_tune_for():
    x, y = _data()
    model = _compiled()
    search = keras_clr.tune_max_lr(
        model, x, y, batch_size=BATCH, epochs=4, steps_per_epoch=3, budget_steps=170, **QUIET
    )
    assert search.total_steps == 12
    history = keras_clr.fit_one_cycle(
        model, x, y, batch_size=BATCH, epochs=2, steps_per_epoch=3, budget_steps=170, verbose=0
    )
    assert history.max_lr_search.total_steps == 6
    assert int(model.optimizer.iterations) == 6


def test_batch_norm_statistics_are_those_of_the_weights_a_probe_reached():
    # After a short probe the moving averages hold mostly their old values;
    # the probe is scored with them set to the mean over the scoring batches.
    x, _ = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    evaluation = ((x[:32], None), {"batch_size": BATCH})
    tuning._recalibrate(model, evaluation)
    norm = model.layers[0]
    want = np.mean([x[:16].mean(axis=0), x[16:32].mean(axis=0)], axis=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), want, rtol=1e-5)
    assert norm.momentum == 0.99


def test_a_batch_norm_model_is_restored_bit_for_bit():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(), "mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    before = _state(model)
    keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, total_steps=20, budget_steps=170, **QUIET)
    _assert_same_state(before, model)


# The probes run the training's OneCycle -----------------------------------


def _one_cycle_closed_form(
    max_lr,
    steps,
    pct_start=0.3,
    div_factor=25.0,
    final_div_factor=1e4,
    base_momentum=0.85,
    max_momentum=0.95,
):
    """PyTorch's OneCycleLR (cos anneal, two phases): (rates, momenta) per step."""

    def cos(start, end, pct):
        return end + (start - end) / 2 * (1 + np.cos(np.pi * pct))

    initial = max_lr / div_factor
    peak_step, last = pct_start * steps - 1, steps - 1
    rates, momenta = [], []
    for t in range(steps):
        if t <= peak_step:
            pct = t / peak_step
            rates.append(cos(initial, max_lr, pct))
            momenta.append(cos(max_momentum, base_momentum, pct))
        else:
            pct = (t - peak_step) / (last - peak_step)
            rates.append(cos(max_lr, initial / final_div_factor, pct))
            momenta.append(cos(base_momentum, max_momentum, pct))
    return np.array(rates), np.array(momenta)


class _Recorded(keras_clr.OneCycle):
    """A OneCycle that keeps what it wrote in the logs at each step (the
    values applied), to see what the probes ran."""

    built = []
    async_safe = False  # batch ends in order (Keras may run async-safe ones in a thread)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rates, self.momenta = [], []
        _Recorded.built.append(self)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self.rates.append(logs["learning_rate"])
        self.momenta.append(logs.get("momentum"))


@pytest.mark.parametrize("entry", ["tune_max_lr", "fit_one_cycle"])
def test_the_probes_run_the_one_cycle_of_the_training(monkeypatch, entry):
    x, y = _data()
    monkeypatch.setattr(schedule_arguments, "OneCycle", _Recorded)
    _Recorded.built = []
    options = {"pct_start": 0.1, "base_momentum": 0.9, "div_factor": 10}
    closed_form = dict(pct_start=0.1, div_factor=10, base_momentum=0.9)
    if entry == "tune_max_lr":
        search = keras_clr.tune_max_lr(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            epochs=10,
            budget_steps=190,
            one_cycle=options,
            **QUIET,
        )
    else:
        history = keras_clr.fit_one_cycle(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            epochs=10,
            budget_steps=190,
            one_cycle=options,
            verbose=0,
        )
        search = history.max_lr_search
        training = _Recorded.built[-1]  # the real training, after the probes
        rates, momenta = _one_cycle_closed_form(search.max_lr, 60, **closed_form)
        np.testing.assert_allclose(training.rates, rates, rtol=1e-6)
        np.testing.assert_allclose(training.momenta, momenta, rtol=1e-6)
    probes = [c for c in _Recorded.built if len(c.rates) == 20]
    assert len(probes) == len(search.candidates) >= 3
    for probe, row in zip(probes, search.candidates):
        assert row["probe_steps"] == 20
        rates, momenta = _one_cycle_closed_form(row["max_lr"], 20, **closed_form)
        np.testing.assert_allclose(probe.rates, rates, rtol=1e-6)
        np.testing.assert_allclose(probe.momenta, momenta, rtol=1e-6)
    assert search.one_cycle == options
    assert "pct_start=0.1" in search.reason and "one_cycle={'pct_start': 0.1" in repr(search)


def test_a_one_cycle_instance_gives_its_arguments_but_max_lr():
    got = schedule_arguments.one_cycle_options(
        keras_clr.OneCycle(3.0, pct_start=0.2, cycle_momentum=False), "tune_max_lr"
    )
    assert got == {
        "pct_start": 0.2,
        "anneal_strategy": "cos",
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "three_phase": False,
        "cycle_momentum": False,
        "base_momentum": 0.85,
        "max_momentum": 0.95,
    }


@pytest.mark.parametrize(
    "optimizer",
    [keras.optimizers.Adagrad, keras.optimizers.SGD],
    ids=["Adagrad", "SGD-without-momentum"],
)
def test_an_optimizer_without_momentum_trains_with_cycle_momentum_false(optimizer):
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer(), "mse")
    history = keras_clr.fit_one_cycle(
        model,
        x,
        y,
        epochs=2,
        batch_size=BATCH,
        budget_steps=160,
        verbose=0,
        one_cycle={"cycle_momentum": False},
    )
    search = history.max_lr_search
    assert search.max_lr is not None and search.one_cycle == {"cycle_momentum": False}
    assert "momentum" not in history.history
    rates, _ = _one_cycle_closed_form(search.max_lr, 12)
    np.testing.assert_allclose(history.history["learning_rate"], rates[[5, 11]], rtol=1e-6)
    # Without it, the search refuses before any step, and says how to ask.
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    fresh.compile(optimizer(), "mse")
    with pytest.raises(ValueError, match=re.escape("one_cycle={'cycle_momentum': False}")):
        keras_clr.tune_max_lr(fresh, x, y, batch_size=BATCH, epochs=2, **QUIET)
    assert int(fresh.optimizer.iterations) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(cycle_momentum=False),
            re.escape("pass it to tune_max_lr as one_cycle={'cycle_momentum': False}"),
        ),
        (dict(pct_start=0.1), re.escape("one_cycle={'pct_start': 0.1}")),
        (dict(one_cycle={"pct": 0.1}), "`one_cycle` must hold OneCycle arguments.*`pct`"),
        (dict(one_cycle={"max_lr": 0.1}), "`one_cycle` sets `max_lr`"),
        (dict(one_cycle={"total_steps": 10}), "`one_cycle` sets `total_steps`"),
        (
            dict(one_cycle={"pct_start": 1.5}),
            r"`one_cycle` holds an invalid.*pct_start=1.5.*one_cycle=\{'pct_start': 1.5\}",
        ),
        (dict(one_cycle={"anneal_strategy": "step"}), "anneal_strategy='step'"),
        (
            dict(one_cycle=keras_clr.OneCycle(0.1, total_steps=50)),
            "`one_cycle` is a OneCycle with its own total_steps.*total_steps=50",
        ),
        (dict(one_cycle=[("pct_start", 0.1)]), "`one_cycle` must be a dict"),
    ],
)
def test_bad_one_cycle_input_is_refused_before_any_step(kwargs, match):
    x, y = _data()
    model = _compiled()
    with pytest.raises(ValueError, match=match):
        keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, epochs=2, **kwargs, **QUIET)
    assert int(model.optimizer.iterations) == 0
    with pytest.raises(ValueError, match=match.replace("tune_max_lr", "fit_one_cycle")):
        keras_clr.fit_one_cycle(
            model, x, y, batch_size=BATCH, epochs=2, max_lr=0.1, verbose=0, **kwargs
        )
    assert int(model.optimizer.iterations) == 0


# Probes that leave the weights non-finite ------------------------------------


def _relu_nan_to_zero(h):
    # What oneDNN's fused ReLU does on TensorFlow's CPU by default: NaN -> 0,
    # so NaN weights give a finite output and a finite loss.
    return keras.ops.where(keras.ops.isnan(h), 0.0, keras.ops.relu(h))


def _masking_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, name="hidden"),
            keras.layers.Lambda(_relu_nan_to_zero),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


def test_the_case_a_nan_sample_poisons_the_weights_but_not_the_loss():
    x, y = _data()
    x[50, 0] = np.nan
    model = _masking_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert not np.isfinite(model.layers[0].kernel.numpy()).all()


def test_a_probe_that_poisons_the_weights_scores_inf():
    x, y = _data()
    x[50, 0] = np.nan  # one sample; every 20-step probe meets it
    model = _masking_model()
    tuning.state.build_optimizer(model)
    before = _state(model)
    search = keras_clr.tune_max_lr(
        model, x, y, batch_size=BATCH, epochs=2, budget_steps=170, **QUIET
    )
    _assert_same_state(before, model)
    assert search.max_lr is None
    assert all(row["loss"] == np.inf for row in search.candidates)
    assert all("hidden/kernel" in row["note"] for row in search.candidates)
    assert re.search(
        "every probe left the weights .* non-finite .*hidden/kernel.*NaN or inf in the data",
        search.reason,
    )
    assert "non-finite" in repr(search) and search.to_frame()["note"].notna().all()
    with pytest.raises(ValueError, match="found no max_lr: every probe left the weights"):
        keras_clr.fit_one_cycle(
            model, x, y, batch_size=BATCH, epochs=2, budget_steps=170, verbose=0
        )
    _assert_same_state(before, model)


def test_a_range_test_stopped_by_nan_is_said_in_the_reason():
    x, y = _data()
    x[::BATCH, 0] = np.nan  # a NaN in every batch: the loss is NaN from step 0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    search = keras_clr.tune_max_lr(
        model, x[1:], y[1:], batch_size=BATCH, epochs=2, budget_steps=170, shuffle=False, **QUIET
    )
    assert search.range_test.stop_reason == "nan"
    assert "the range test stopped on a non-finite" in search.reason
    assert search.max_lr is None


def test_weights_that_are_already_non_finite_are_refused():
    x, y = _data()
    model = _masking_model()
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    with pytest.raises(ValueError, match="must start from finite weights.*hidden/kernel"):
        keras_clr.tune_max_lr(model, x, y, batch_size=BATCH, epochs=2, **QUIET)
    assert int(model.optimizer.iterations) == 0


def test_the_training_length_counts_the_samples_validation_split_leaves_as_keras_does():
    # 107 samples, validation_split=0.1: Keras trains on the first
    # floor(107 x 0.9) = floor(96.3) = 96 samples, 6 batches of 16 an epoch
    # (ceil would count 97 samples, 7 batches).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(107, 4)).astype("float32")
    y = x[:, :1].copy()
    model = _compiled()
    history = model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=1,
        validation_split=0.1,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.01)],
    )
    assert len(history.history["learning_rate"]) == 1
    keras_steps = int(model.optimizer.iterations.numpy())
    assert keras_steps == 6
    search = keras_clr.tune_max_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        epochs=3,
        validation_split=0.1,
        budget_steps=160,
        **QUIET,
    )
    assert search.total_steps == 3 * keras_steps
