"""WarmupStableDecay in real fits: planned, open-ended, cooled down on demand
and extended.

The rates the optimizer applied are read back from it after every step (a
host sync per step, fine in a test) and compared with transformers' WSD
multiplier written out in test_curves.py (`wsd_multiplier`), at the steps
the plan says; an extended run is compared bit for bit with an
uninterrupted run planned at the new length from the start.
"""

import copy
import math
import re
import warnings

import keras
import numpy as np
import pytest

import keras_clr
from test_curves import wsd_multiplier
from test_real_fits import BATCHES
from test_real_fits import ReadApplied
from test_real_fits import fit
from test_real_fits import make_model

PEAK = 0.1


def sgd():
    return keras.optimizers.SGD(0.01, momentum=0.9)


def rates(steps, warmup, stable, decay, ratio=0.0, **types):
    return np.float32(
        [PEAK * wsd_multiplier(k, warmup, stable, decay, ratio=ratio, **types) for k in steps]
    )


def momenta(steps, warmup, stable, decay, **types):
    # max_momentum - (max - base) * h, h the shape of the rate from 0 to 1.
    return np.float32(
        [0.95 - 0.1 * wsd_multiplier(k, warmup, stable, decay, **types) for k in steps]
    )


class Call(keras.callbacks.Callback):
    """Calls `action()` once, at the end of batch `batch` of epoch `epoch`
    (batch None: at the end of that epoch), as a plateau detector would.

    `batch` may be a range (first, last): with several steps per call, Keras
    3.10 reports a call's first batch where later versions report its last.
    """

    def __init__(self, action, epoch, batch=None):
        super().__init__()
        self.action, self.epoch, self.done = action, None, False
        self.at_epoch = epoch
        self.batches = batch if isinstance(batch, tuple) or batch is None else (batch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (
            not self.done
            and self.batches is not None
            and self.epoch == self.at_epoch
            and self.batches[0] <= batch <= self.batches[1]
        ):
            self.done, self.fired_at = True, batch
            self.action()

    def on_epoch_end(self, epoch, logs=None):
        if not self.done and self.batches is None and epoch == self.at_epoch:
            self.done = True
            self.action()


# --- planned ----------------------------------------------------------------


def test_a_planned_run_applies_transformers_rates_and_momenta():
    cb, reader = (
        keras_clr.WarmupStableDecay(
            PEAK,
            warmup_steps=5,
            decay_steps=0.25,
            total_steps=3 * BATCHES,
            warmup_type="cosine",
            min_lr_ratio=0.05,
        ),
        ReadApplied(),
    )
    history = fit(make_model(sgd()), [cb, reader], epochs=3)
    steps = range(3 * BATCHES)
    expected = rates(steps, 5, 31, 12, 0.05, warmup_type="cosine")
    np.testing.assert_array_equal(reader.applied, expected)
    assert reader.logged == reader.applied
    np.testing.assert_array_equal(
        np.float32(reader.momentum), momenta(steps, 5, 31, 12, warmup_type="cosine")
    )
    assert reader.applied[5] == np.float32(PEAK)  # the warm-up hands over at the peak
    assert reader.applied[36] == np.float32(PEAK)  # the cooldown's first step
    assert history.history["learning_rate"] == [reader.applied[k] for k in (15, 31, 47)]
    assert cb.decay_start == 36


def test_an_open_ended_run_holds_the_peak_in_a_short_table():
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=4), ReadApplied()
    fit(make_model(sgd()), [cb, reader], epochs=2)
    np.testing.assert_array_equal(reader.applied, rates(range(2 * BATCHES), 4, None, 0))
    assert reader.logged == reader.applied
    # The tables end where the peak holds: the second epoch's holds its step 16.
    table = cb._fit.values.tables[0]
    assert (table.first, len(table.values)) == (BATCHES, 1)
    assert cb.decay_start is None


# --- on demand --------------------------------------------------------------


@pytest.mark.parametrize("spe", [1, 4])
def test_start_cooldown_at_the_next_step_in_a_real_fit(spe):
    model = make_model(sgd(), steps_per_execution=spe)
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=4, decay_steps=0.2), ReadApplied()
    # Asked at the end of batch 7 of epoch 1 (16 steps per epoch): the next
    # call starts at step 24, after 24 steps run.
    stop = Call(cb.start_cooldown, 1, (8 - spe, 7))
    history = fit(model, [cb, stop, reader], epochs=3)
    start = 24
    decay = round(0.2 * start / 0.8)  # a fifth of the whole run
    assert cb.decay_start == start
    batches = np.arange(spe - 1, 3 * BATCHES, spe)
    np.testing.assert_array_equal(reader.applied, rates(batches, 4, start - 4, decay))
    assert reader.logged == reader.applied
    np.testing.assert_array_equal(
        np.float32(reader.momentum), momenta(batches, 4, start - 4, decay)
    )
    assert reader.applied[-1] == 0.0  # cooled down to the floor
    assert history.history["learning_rate"][-1] == 0.0
    # Its plan, as a planned callback resuming it would take it.
    resumed = keras_clr.WarmupStableDecay(
        PEAK, warmup_steps=4, stable_steps=cb.decay_start - 4, decay_steps=cb.cooldown_steps
    )
    np.testing.assert_array_equal(resumed.lr_schedule(batches), cb.lr_schedule(batches))


def test_start_cooldown_at_the_epoch_end():
    cb, reader = (
        keras_clr.WarmupStableDecay(PEAK, warmup_steps=4, decay_steps=10, decay_type="linear"),
        ReadApplied(),
    )
    stop = Call(lambda: cb.start_cooldown(at="epoch_end"), 1, 3)
    fit(make_model(sgd()), [cb, stop, reader], epochs=3)
    assert cb.decay_start == 2 * BATCHES
    np.testing.assert_array_equal(
        reader.applied, rates(range(3 * BATCHES), 4, 28, 10, decay_type="linear")
    )
    assert reader.logged == reader.applied


def test_start_cooldown_from_another_callbacks_epoch_end():
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=4, decay_steps=10), ReadApplied()
    stop = Call(lambda: cb.start_cooldown(decay_steps=6), 0)  # after ours ran
    fit(make_model(sgd()), [cb, stop, reader], epochs=2)
    assert cb.decay_start == BATCHES
    np.testing.assert_array_equal(reader.applied, rates(range(2 * BATCHES), 4, 12, 6))
    assert reader.logged == reader.applied


def test_start_cooldown_between_fits_starts_where_the_last_ended():
    model = make_model(sgd())
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=4, decay_steps=8), ReadApplied()
    fit(model, [cb], epochs=1)
    cb.start_cooldown()
    assert cb.decay_start == BATCHES
    frame = cb.to_frame()
    assert len(frame) == BATCHES + 8
    fit(model, [cb, reader], epochs=1)
    np.testing.assert_array_equal(reader.applied, rates(range(BATCHES, 2 * BATCHES), 4, 12, 8))


def test_a_cooldown_asked_for_during_the_warm_up_starts_as_it_ends():
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=10, decay_steps=5), ReadApplied()
    fit(make_model(sgd()), [cb, Call(cb.start_cooldown, 0, 2), reader], epochs=1)
    assert cb.decay_start == 10
    np.testing.assert_array_equal(reader.applied, rates(range(BATCHES), 10, 0, 5))


def test_a_planned_cooldown_that_came_first_goes_on():
    cb, reader = (
        keras_clr.WarmupStableDecay(PEAK, warmup_steps=2, decay_steps=8, total_steps=20),
        ReadApplied(),
    )
    fit(make_model(sgd()), [cb, Call(cb.start_cooldown, 0, 14), reader], epochs=2)
    assert cb.decay_start == 12
    np.testing.assert_array_equal(reader.applied, rates(range(2 * BATCHES), 2, 10, 8))


# --- extension ----------------------------------------------------------------


def uninterrupted(total, epochs):
    model, reader = make_model(sgd()), ReadApplied()
    fit(
        model,
        [
            keras_clr.WarmupStableDecay(PEAK, warmup_steps=5, decay_steps=0.25, total_steps=total),
            reader,
        ],
        epochs=epochs,
    )
    return model, reader


def test_extend_between_fits_is_the_run_planned_at_the_new_length():
    reference, expected = uninterrupted(5 * BATCHES, 5)
    model, first, then = make_model(sgd()), ReadApplied(), ReadApplied()
    cb = keras_clr.WarmupStableDecay(
        PEAK, warmup_steps=5, decay_steps=0.25, total_steps=3 * BATCHES
    )
    fit(model, [cb, first], epochs=2)
    cb.extend(total_steps=5 * BATCHES)
    assert cb.decay_start == 60
    fit(model, [cb, then], epochs=5, initial_epoch=2)
    # Bit for bit: the rates, the momenta, the logs and the weights.
    assert first.applied + then.applied == expected.applied
    assert first.momentum + then.momentum == expected.momentum
    assert then.logged == then.applied
    for w, r in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(w, r)
    np.testing.assert_array_equal(expected.applied, rates(range(80), 5, 55, 20))


def test_extend_during_a_fit_is_the_run_planned_at_the_new_length():
    reference, expected = uninterrupted(5 * BATCHES, 5)
    model, reader = make_model(sgd()), ReadApplied()
    cb = keras_clr.WarmupStableDecay(
        PEAK, warmup_steps=5, decay_steps=0.25, total_steps=3 * BATCHES
    )
    fit(model, [cb, Call(lambda: cb.extend(5 * BATCHES), 1), reader], epochs=5)
    assert reader.applied == expected.applied
    assert reader.momentum == expected.momentum
    assert reader.logged == reader.applied
    for w, r in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(w, r)


def test_extend_plans_an_open_ended_run():
    cb = keras_clr.WarmupStableDecay(PEAK, warmup_steps=5, decay_steps=0.25)
    cb.extend(total_steps=80)
    assert cb.decay_start == 60
    np.testing.assert_array_equal(
        cb.lr_schedule(np.arange(90)),
        PEAK * np.array([wsd_multiplier(k, 5, 55, 20) for k in range(90)]),
    )


def test_a_cooldown_that_has_begun_cannot_move():
    model = make_model(sgd())
    cb = keras_clr.WarmupStableDecay(PEAK, warmup_steps=5, decay_steps=8, total_steps=24)
    fit(model, [cb], epochs=2)
    with pytest.raises(ValueError, match=re.escape("cannot move a cooldown that has begun")):
        cb.extend(total_steps=80)
    assert cb.decay_start == 16  # unchanged
    # Shortening a run whose cooldown has not begun would jump too.
    cb = keras_clr.WarmupStableDecay(PEAK, decay_steps=8, total_steps=100)
    fit(model, [cb], epochs=1)
    with pytest.raises(ValueError, match="rate would jump"):
        cb.extend(total_steps=20)


# --- preview, copies, conflicts, arguments -----------------------------------


def test_preview_of_planned_and_open_ended_runs():
    import matplotlib
    import matplotlib.pyplot as plt

    cb = keras_clr.WarmupStableDecay(
        PEAK, warmup_steps=3, decay_steps=5, total_steps=20, decay_type="cosine", min_lr_ratio=0.1
    )
    frame = cb.to_frame()
    assert list(frame["step"]) == list(range(20))
    expected = [
        PEAK * wsd_multiplier(k, 3, 12, 5, decay_type="cosine", ratio=0.1) for k in range(20)
    ]
    np.testing.assert_allclose(frame["learning_rate"], expected, rtol=1e-15)
    np.testing.assert_allclose(
        frame["momentum"],
        [0.95 - 0.1 * wsd_multiplier(k, 3, 12, 5, decay_type="cosine") for k in range(20)],
        rtol=1e-15,
    )
    assert isinstance(cb.plot(), matplotlib.axes.Axes)
    open_ended = keras_clr.WarmupStableDecay(PEAK, warmup_steps=3)
    with pytest.raises(ValueError, match="open-ended.*total_steps"):
        open_ended.to_frame()
    assert len(open_ended.to_frame(total_steps=10)) == 10
    plt.close("all")


def test_a_copy_is_the_callback_as_constructed():
    cb = keras_clr.WarmupStableDecay(PEAK, warmup_steps=4)
    fit(make_model(sgd()), [cb], epochs=1)
    cb.start_cooldown()
    clone = copy.deepcopy(cb)
    assert cb.decay_start == BATCHES and clone.decay_start is None
    assert clone.model is None


@pytest.mark.parametrize(
    "other",
    [
        lambda: keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0),
        lambda: keras_clr.OneCycle(0.1),
    ],
    ids=["ReduceLROnPlateau", "OneCycle"],
)
def test_another_learning_rate_callback_is_refused_before_training(other):
    model = make_model(sgd())
    other = other()
    kind = type(other).__name__
    with pytest.raises(ValueError, match=f"(WarmupStableDecay.*{kind}|{kind}.*WarmupStableDecay)"):
        fit(model, [keras_clr.WarmupStableDecay(PEAK), other], epochs=1)
    assert int(model.optimizer.iterations) == 0


def named(name, value):
    return re.escape(f"`{name}` must be") + ".*" + re.escape(f"Received: {name}={value!r}")


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: keras_clr.WarmupStableDecay(0.0), named("max_lr", 0.0)),
        (lambda: keras_clr.WarmupStableDecay(PEAK, warmup_steps=-2), named("warmup_steps", -2)),
        (lambda: keras_clr.WarmupStableDecay(PEAK, decay_steps=1.0), named("decay_steps", 1.0)),
        (lambda: keras_clr.WarmupStableDecay(PEAK, decay_type="sqrt"), named("decay_type", "sqrt")),
        (lambda: keras_clr.WarmupStableDecay(PEAK, warmup_type="exp"), named("warmup_type", "exp")),
        (lambda: keras_clr.WarmupStableDecay(PEAK, min_lr_ratio=-0.1), named("min_lr_ratio", -0.1)),
        (
            lambda: keras_clr.WarmupStableDecay(PEAK, 10, 10, total_steps=15),
            "at least warmup_steps",
        ),
        (lambda: keras_clr.WarmupStableDecay(PEAK, base_momentum=0.99), "at least `base_momentum`"),
        (lambda: keras_clr.WarmupStableDecay(PEAK).start_cooldown(at="now"), named("at", "now")),
        (
            lambda: keras_clr.WarmupStableDecay(PEAK).start_cooldown(decay_steps=-1),
            named("decay_steps", -1),
        ),
        (lambda: keras_clr.WarmupStableDecay(PEAK).extend(total_steps=0), named("total_steps", 0)),
        (
            lambda: keras_clr.WarmupStableDecay(PEAK, 10).extend(total_steps=12, decay_steps=5),
            "at least warmup_steps",
        ),
    ],
)
def test_invalid_arguments_are_named(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


# --- the fit set-ups of test_real_fits ---------------------------------------------


def test_cooldown_on_demand_counts_the_updates_the_loss_scale_applied():
    keras.mixed_precision.set_global_policy("mixed_float16")
    optimizer = keras.optimizers.LossScaleOptimizer(sgd(), initial_scale=2.0**40)
    model = make_model(optimizer)
    cb, reader = keras_clr.WarmupStableDecay(0.05, warmup_steps=3, decay_steps=8), ReadApplied()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped updates' warning
        fit(model, [cb, Call(cb.start_cooldown, 2, 5), reader], epochs=3)
    before = np.array([0] + reader.updates[:-1])  # each batch's step
    assert 3 * BATCHES - reader.updates[-1] > 5  # some updates were skipped
    start = reader.updates[2 * BATCHES + 5]  # the updates applied as it was asked
    assert start > 3
    assert cb.decay_start == start
    expected = np.float32([0.05 * wsd_multiplier(int(k), 3, start - 3, 8) for k in before])
    np.testing.assert_array_equal(reader.applied, expected)
    assert reader.logged == reader.applied


def test_cooldown_on_demand_under_gradient_accumulation():
    k = 4
    model = make_model(keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=k))
    cb, reader = keras_clr.WarmupStableDecay(PEAK, warmup_steps=2, decay_steps=3), ReadApplied()
    fit(model, [cb, Call(cb.start_cooldown, 1, 5), reader], epochs=2)
    # Batch 21 ends mid-update 5 (batches 20-23): the cooldown starts with it.
    assert cb.decay_start == 5
    updates = np.arange(2 * BATCHES) // k
    np.testing.assert_array_equal(reader.applied, rates(updates, 2, 3, 3))
    assert reader.logged == reader.applied


def test_cooldown_and_extension_keep_the_one_trace():
    from test_real_fits import CountingModel

    CountingModel.traces = 0
    model = make_model(sgd(), model_class=CountingModel)
    fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    traced = CountingModel.traces
    cb = keras_clr.WarmupStableDecay(PEAK, warmup_steps=2, decay_steps=5, total_steps=40)
    fit(model, [cb, Call(lambda: cb.extend(60), 0, 3), Call(cb.start_cooldown, 1, 2)], epochs=2)
    assert cb.decay_start == BATCHES + 3
    assert CountingModel.traces == traced


# --- warm-up and cosine to a floor ---------------------------------------------


@pytest.mark.parametrize("warmup, decay, alpha", [(5, 20, 0.1), (0, 12, 0.0), (3, 1, 0.5)])
def test_warm_up_and_cosine_to_a_floor_is_keras_cosine_decay(warmup, decay, alpha):
    # No stable phase, a cosine cooldown: Keras's CosineDecay with a warm-up
    # from the floor (Keras computes in float32).
    keras_schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=alpha * PEAK,
        decay_steps=decay,
        alpha=alpha,
        warmup_target=PEAK,
        warmup_steps=warmup,
    )
    cb = keras_clr.WarmupStableDecay(
        PEAK,
        warmup_steps=warmup,
        decay_steps=decay,
        stable_steps=0,
        decay_type="cosine",
        min_lr_ratio=alpha,
    )
    steps = np.arange(warmup + decay + 5)
    theirs = [float(keras_schedule(int(k))) for k in steps]
    np.testing.assert_allclose(cb.lr_schedule(steps), theirs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        cb.lr_schedule(steps),
        [
            PEAK * wsd_multiplier(int(k), warmup, 0, decay, decay_type="cosine", ratio=alpha)
            for k in steps
        ],
        rtol=1e-15,
    )


def _transformers_linear(k, warmup, total):
    # transformers' get_linear_schedule_with_warmup multiplier, written out
    if k < warmup:
        return k / max(1, warmup)
    return max(0.0, (total - k) / max(1, total - warmup))


def _transformers_cosine_min_lr(k, warmup, total, min_lr_rate):
    # transformers' get_cosine_with_min_lr_schedule_with_warmup (num_cycles
    # 0.5), written out; defined to `total` (past it the cosine rises again)
    if k < warmup:
        return k / max(1, warmup)
    progress = (k - warmup) / max(1, total - warmup)
    return (0.5 * (1 + math.cos(math.pi * progress))) * (1 - min_lr_rate) + min_lr_rate


@pytest.mark.parametrize("warmup, total", [(5, 25), (0, 12), (1, 2)])
def test_linear_decay_to_zero_is_transformers_linear_schedule(warmup, total):
    cb = keras_clr.WarmupStableDecay(
        PEAK, warmup_steps=warmup, decay_steps=total - warmup, stable_steps=0, decay_type="linear"
    )
    steps = np.arange(total + 5)
    np.testing.assert_allclose(
        cb.lr_schedule(steps),
        [PEAK * _transformers_linear(int(k), warmup, total) for k in steps],
        rtol=1e-12,
        atol=1e-15,
    )


@pytest.mark.parametrize("warmup, total, ratio", [(5, 25, 0.1), (0, 12, 0.3), (4, 9, 0.0)])
def test_warm_up_and_cosine_to_a_floor_is_transformers_cosine_with_min_lr(warmup, total, ratio):
    cb = keras_clr.WarmupStableDecay(
        PEAK,
        warmup_steps=warmup,
        decay_steps=total - warmup,
        stable_steps=0,
        decay_type="cosine",
        min_lr_ratio=ratio,
    )
    # transformers warms up from 0, keras_clr from the floor: they agree
    # from the warm-up's end (and throughout with a floor of 0)
    steps = np.arange(warmup if ratio else 0, total + 1)
    np.testing.assert_allclose(
        cb.lr_schedule(steps),
        [PEAK * _transformers_cosine_min_lr(int(k), warmup, total, ratio) for k in steps],
        rtol=1e-12,
        atol=1e-15,
    )
