"""`tune_max_lr`, the race and `fit_one_cycle` choosing the peak of a
`WarmupStableDecay` (`schedule=`): every probe and candidate runs the
schedule the training will, shaped to its length, and bad templates are
refused before any step."""

import re
import warnings

import keras
import numpy as np
import pytest

import keras_clr
from keras_clr import schedule_arguments
from keras_clr import tuning
from test_curves import wsd_multiplier
from test_tuning import _compiled
from test_tuning import _data

BATCH = 16  # 96 samples: 6 steps an epoch


class _RecordedWSD(keras_clr.WarmupStableDecay):
    """A WarmupStableDecay that keeps the rate and momentum it wrote in the
    logs at each step (the values applied), to see what a run trained with."""

    built = []
    async_safe = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rates, self.momenta = [], []
        _RecordedWSD.built.append(self)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self.rates.append(logs["learning_rate"])
        self.momenta.append(logs.get("momentum"))


def _expected(max_lr, steps, warmup, decay, ratio=0.0):
    """(rates, momenta) of a planned WSD run, transformers' multiplier."""
    stable = steps - warmup - decay
    shape = np.array([wsd_multiplier(k, warmup, stable, decay, ratio=ratio) for k in range(steps)])
    plain = np.array([wsd_multiplier(k, warmup, stable, decay) for k in range(steps)])
    return max_lr * shape, 0.95 - 0.1 * plain


def test_tune_max_lr_for_a_wsd_probes_a_one_cycle_with_its_momenta(monkeypatch):
    from test_tuning import _one_cycle_closed_form
    from test_tuning import _Recorded

    x, y = _data()
    monkeypatch.setattr(schedule_arguments, "OneCycle", _Recorded)
    _Recorded.built = []
    template = keras_clr.WarmupStableDecay(1.0, warmup_steps=12, base_momentum=0.8)
    search = keras_clr.tune_max_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        epochs=10,
        budget_steps=190,
        schedule=template,
        verbose=0,
    )
    probes = [run for run in _Recorded.built if run.rates]
    assert len(probes) == len(search.candidates) >= 3
    for probe, row in zip(probes, search.candidates):
        rates, momenta = _one_cycle_closed_form(row["max_lr"], 20, base_momentum=0.8)
        np.testing.assert_allclose(probe.rates, rates, rtol=1e-6)
        np.testing.assert_allclose(probe.momenta, momenta, rtol=1e-6)
    assert search.schedule == "WarmupStableDecay" and search.one_cycle is None
    assert search.options == {"warmup_steps": 12, "base_momentum": 0.8}
    assert "20-step _Recorded(max_lr, total_steps=probe_steps, base_momentum=0.8)" in (
        search.reason
    )
    assert "schedule=WarmupStableDecay" in repr(search)


def test_probes_that_run_the_wsd_are_it_shrunk_to_the_probe(monkeypatch):
    # The alternative benchmarks/wsd_quality.py --tuned measures.
    monkeypatch.setattr(tuning, "PROBE_AS_ONE_CYCLE", False)
    x, y = _data()
    _RecordedWSD.built = []
    # The training: 60 steps, 12 of warm-up, a fifth of cooldown (12 steps).
    template = _RecordedWSD(1.0, warmup_steps=12, decay_steps=0.2, min_lr_ratio=0.1)
    search = keras_clr.tune_max_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        epochs=10,
        budget_steps=190,
        schedule=template,
        verbose=0,
    )
    probes = [run for run in _RecordedWSD.built if run.rates]
    assert len(probes) == len(search.candidates) >= 3
    for probe, row in zip(probes, search.candidates):
        assert row["probe_steps"] == 20
        # 20 steps: the warm-up scaled to 12 * 20 / 60 = 4, the cooldown 20%
        rates, momenta = _expected(row["max_lr"], 20, warmup=4, decay=4, ratio=0.1)
        np.testing.assert_allclose(probe.rates, rates, rtol=1e-6)
        np.testing.assert_allclose(probe.momenta, momenta, rtol=1e-6)
    # (the class of the template: a subclass keeps its name)
    assert search.schedule == "_RecordedWSD" and search.one_cycle is None
    assert search.options == {"warmup_steps": 12, "min_lr_ratio": 0.1}
    assert "_RecordedWSD(max_lr, total_steps=probe_steps, warmup_steps=12" in search.reason


def test_fit_one_cycle_trains_the_wsd_it_tuned_for_the_whole_training():
    x, y = _data()
    _RecordedWSD.built = []
    template = _RecordedWSD(1.0, warmup_steps=6, decay_steps=12)
    history = keras_clr.fit_one_cycle(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        epochs=10,
        budget_steps=190,
        schedule=template,
        verbose=0,
    )
    search = history.max_lr_search
    training = _RecordedWSD.built[-1]
    rates, momenta = _expected(search.max_lr, 60, warmup=6, decay=12)
    np.testing.assert_allclose(training.rates, rates, rtol=1e-6)
    np.testing.assert_allclose(training.momenta, momenta, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"][-1], rates[-1], rtol=1e-6)
    # the probes ran OneCycles
    assert [run for run in _RecordedWSD.built if run.rates] == [training]
    assert "OneCycle(max_lr, total_steps=probe_steps)" in search.reason


def test_the_race_trains_each_candidate_with_the_wsd_of_the_training():
    x, y = _data()
    xv, yv = _data(1)
    _RecordedWSD.built = []
    template = _RecordedWSD(1.0, warmup_steps=3, decay_steps=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = keras_clr.fit_one_cycle(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            epochs=4,
            max_lr="race",
            candidates=[0.01, 0.03, 0.1],
            validation_data=(xv, yv),
            schedule=template,
            race_seed=0,
            verbose=0,
        )
    race = history.race
    assert race.schedule == "_RecordedWSD" and race.one_cycle is None
    # every candidate's schedule is planned for the whole training (24 steps)
    runs = {run.max_lr: run for run in _RecordedWSD.built if run.rates}
    assert sorted(runs) == race.candidates
    for rate, run in runs.items():
        rates, _ = _expected(rate, 24, warmup=3, decay=6)
        np.testing.assert_allclose(run.rates, rates[: len(run.rates)], rtol=1e-6)
        assert len(run.rates) == race.steps[rate]
    winner = np.asarray(history.history["learning_rate"])
    np.testing.assert_allclose(winner, _expected(race.winner, 24, 3, 6)[0][5::6], rtol=1e-6)


@pytest.mark.parametrize("entry", ["tune_max_lr", "fit_one_cycle", "race"])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(schedule=keras_clr.WarmupStableDecay(1.0, total_steps=60)),
            r"schedule.*WarmupStableDecay with its own length.*total_steps=60",
        ),
        (
            dict(schedule=keras_clr.WarmupStableDecay(1.0, stable_steps=10, decay_steps=5)),
            r"schedule.*own length.*stable_steps=10",
        ),
        (
            dict(schedule=keras_clr.WarmupStableDecay(1.0, warmup_steps=200)),
            r"cannot plan the \d+-step training.*warmup_steps",
        ),
        (
            dict(schedule=keras_clr.CyclicLR(0.001, 0.1)),
            r"`schedule` must be a keras_clr.OneCycle or keras_clr.WarmupStableDecay",
        ),
        (
            dict(schedule=keras_clr.WarmupStableDecay(1.0), one_cycle={"pct_start": 0.2}),
            r"Pass `one_cycle` or `schedule`.*not both",
        ),
        (
            dict(schedule=keras_clr.OneCycle(1.0, total_steps=50)),
            r"`schedule` is a OneCycle with its own total_steps.*schedule=OneCycle",
        ),
    ],
)
def test_a_bad_template_is_refused_before_any_step(entry, kwargs, match):
    x, y = _data()
    model = _compiled()
    before = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations)
    call = {
        "tune_max_lr": lambda: keras_clr.tune_max_lr(
            model, x, y, batch_size=BATCH, epochs=10, verbose=0, **kwargs
        ),
        "fit_one_cycle": lambda: keras_clr.fit_one_cycle(
            model, x, y, batch_size=BATCH, epochs=10, verbose=0, **kwargs
        ),
        "race": lambda: keras_clr.fit_one_cycle(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=10,
            verbose=0,
            max_lr="race",
            validation_data=_data(1),
            **kwargs,
        ),
    }[entry]
    with pytest.raises(ValueError, match=match):
        call()
    assert int(model.optimizer.iterations) == iterations
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_an_optimizer_without_momentum_is_told_how_to_leave_it_alone():
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adagrad(0.01), "mse")
    with pytest.raises(
        ValueError, match=re.escape("schedule=WarmupStableDecay(..., cycle_momentum=False)")
    ):
        keras_clr.tune_max_lr(
            model,
            x,
            y,
            batch_size=BATCH,
            epochs=10,
            verbose=0,
            schedule=keras_clr.WarmupStableDecay(1.0, cycle_momentum=True),
        )
    search = keras_clr.tune_max_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        epochs=10,
        budget_steps=160,
        verbose=0,
        schedule=keras_clr.WarmupStableDecay(1.0, cycle_momentum=False),
    )
    assert search.max_lr is not None


def test_a_subclass_is_rebuilt_with_the_arguments_it_was_given():
    # A subclass with another default: the value passed explicitly (the
    # base class's default) is the one every run is built with.
    class LinearCooldown(keras_clr.WarmupStableDecay):
        def __init__(self, max_lr, decay_type="linear", **kwargs):
            super().__init__(max_lr, decay_type=decay_type, **kwargs)

    x, y = _data()
    template = LinearCooldown(1.0, warmup_steps=4, decay_steps=6, decay_type="1-sqrt")
    history = keras_clr.fit_one_cycle(
        _compiled(), x, y, batch_size=BATCH, epochs=4, max_lr=0.05, schedule=template, verbose=0
    )
    rates, _ = _expected(0.05, 24, warmup=4, decay=6)  # 1-sqrt
    np.testing.assert_allclose(history.history["learning_rate"], rates[5::6], rtol=1e-6)


def test_a_subclass_that_cannot_be_rebuilt_is_refused_before_any_step():
    class Scaled(keras_clr.WarmupStableDecay):
        def __init__(self, max_lr, scale, **kwargs):
            super().__init__(max_lr * scale, **kwargs)

    class Tagged(keras_clr.WarmupStableDecay):
        def __init__(self, max_lr, tag="a", **kwargs):
            super().__init__(max_lr, **kwargs)
            self.tag = tag

    x, y = _data()
    model = _compiled()
    for template, why in ((Scaled(1.0, 0.5), "does not take"), (Tagged(1.0, tag="b"), "'tag'")):
        with pytest.raises(
            ValueError,
            match=f"Argument `schedule` is a {type(template).__name__}.*cannot rebuild.*{why}",
        ):
            keras_clr.fit_one_cycle(
                model, x, y, batch_size=BATCH, epochs=2, max_lr=0.05, schedule=template
            )
    assert int(model.optimizer.iterations) == 0


def test_a_one_cycle_with_a_length_is_named_as_passed():
    x, y = _data()
    with pytest.raises(ValueError) as info:
        keras_clr.fit_one_cycle(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            epochs=2,
            max_lr=0.05,
            schedule=keras_clr.OneCycle(1.0, total_steps=14),
        )
    message = str(info.value)
    assert "Argument `schedule` is a OneCycle" in message and "fit_one_cycle sets" in message
    assert "fit_schedule" not in message and "probes" not in message


def test_data_without_a_length_is_told_to_pass_steps_per_epoch():
    import tensorflow as tf

    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(BATCH)
    model = _compiled()
    for max_lr, schedule in ((0.05, keras_clr.WarmupStableDecay(1.0)), ("auto", None)):
        with pytest.raises(ValueError, match=r"no known length.*pass `steps_per_epoch`"):
            keras_clr.fit_one_cycle(model, data, epochs=2, max_lr=max_lr, schedule=schedule)
    assert int(model.optimizer.iterations) == 0
    # with steps_per_epoch, the WSD is planned for 2 epochs of 3 steps
    history = keras_clr.fit_one_cycle(
        model,
        data.repeat(),
        epochs=2,
        steps_per_epoch=3,
        max_lr=0.05,
        schedule=keras_clr.WarmupStableDecay(1.0, warmup_steps=1, decay_steps=2),
        verbose=0,
    )
    rates, _ = _expected(0.05, 6, warmup=1, decay=2)
    np.testing.assert_allclose(history.history["learning_rate"], rates[2::3], rtol=1e-6)


def test_a_callback_that_sets_the_rate_is_refused_before_any_tuning(monkeypatch):
    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned before refusing the callback")

    monkeypatch.setattr(tuning, "tune_max_lr", no_tuning)
    x, y = _data()
    for schedule in (None, keras_clr.WarmupStableDecay(1.0)):
        with pytest.raises(ValueError, match="ReduceLROnPlateau cannot change the learning rate"):
            keras_clr.fit_one_cycle(
                _compiled(),
                x,
                y,
                batch_size=BATCH,
                epochs=2,
                max_lr="auto",
                schedule=schedule,
                callbacks=[keras.callbacks.ReduceLROnPlateau()],
            )
