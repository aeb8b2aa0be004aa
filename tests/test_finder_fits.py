"""The range test with the `fit` options users pass: validation_split,
sample_weight with repeats, generators across a weight-decay sweep, gradient
accumulation, a custom train_step's keys, and bad input."""

import re

import keras
import numpy as np
import pytest

import keras_clr
from keras_clr import find_lr
from test_finder import BATCH
from test_finder import QUIET
from test_finder import SubclassedNet
from test_finder import _compiled
from test_finder import _data
from test_finder import _grid


def test_validation_split_plans_the_test_from_the_data_trained_on():
    x, y = _data()
    result = find_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        num_steps=40,
        stop_factor=None,
        validation_split=0.5,
        **QUIET,
    )
    assert result.stop_reason == "completed"
    np.testing.assert_array_equal(result.lrs, _grid(1e-7, 10.0, 40, "exp"))


def test_sample_weights_follow_their_samples_in_every_repeat():
    # The samples outside the weighted half have huge targets: if a repeat
    # weighted the wrong samples, its losses would be around 1e10.
    x, y = _data()
    weights = (np.arange(len(x)) % 2).astype("float32")
    y = np.where(weights[:, None] > 0, y, 1e5).astype("float32")
    result = find_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        num_steps=12,
        end_lr=1e-2,
        stop_factor=None,
        repeats=3,
        sample_weight=weights,
        **QUIET,
    )
    assert np.all(np.isfinite(result.losses)) and np.max(result.losses) < 100


def test_a_sweep_over_a_finite_generator_gives_every_test_its_steps():
    x, y = _data()

    def batches():
        for i in range(0, 10 * BATCH, BATCH):
            yield x[i : i + BATCH], y[i : i + BATCH]

    model = _compiled(keras.optimizers.AdamW(1e-3, weight_decay=0.01))
    sweep = find_lr(
        model,
        batches(),
        num_steps=15,
        end_lr=1e-1,
        stop_factor=None,
        weight_decays=[0.0, 1e-3],
        **QUIET,
    )
    assert list(sweep.results) == [0.0, 1e-3]
    for result in sweep.results.values():
        assert result.stop_reason == "completed"
        assert len(result.lrs) == 15


def test_gradient_accumulation_is_refused_before_any_step():
    x, y = _data()
    model = _compiled(keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=4))
    weights = model.get_weights()
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4"):
        find_lr(model, x, y, batch_size=BATCH, num_steps=10, **QUIET)
    assert int(model.optimizer._iterations) == 0
    for old, new in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(old, new)


class KeyedLoss(keras.Sequential):
    """A custom train step that returns its loss under `KEY`."""

    KEY = "total"

    def train_step(self, data):
        logs = super().train_step(data)
        return {self.KEY: logs["loss"]}


class LossKey(KeyedLoss):
    KEY = "loss"


def _keyed(model_class):
    keras.utils.set_random_seed(0)
    model = model_class(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    return model


def test_a_custom_train_steps_loss_key_can_be_monitored():
    x, y = _data()
    settings = dict(batch_size=BATCH, num_steps=12, shuffle=False, **QUIET)
    keyed = find_lr(_keyed(KeyedLoss), x, y, monitor="total", **settings)
    plain = find_lr(_keyed(LossKey), x, y, **settings)
    np.testing.assert_array_equal(keyed.losses, plain.losses)
    with pytest.raises(ValueError, match=re.escape("returns ('total'") + ".*monitor='loss'"):
        find_lr(_keyed(KeyedLoss), x, y, **settings)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), "Argument `x` must be the training data.*x=None"),
        (dict(x="data", weight_decays=[]), "weight_decays.*at least one.*weight_decays=\\[\\]"),
        (dict(x="data", weight_decays=0.01), "weight_decays.*must be a list.*weight_decays=0.01"),
        (dict(x="data", weight_decays=[0.0, -1.0]), "weight_decays.*weight_decays=-1.0"),
        (dict(x="data", validation_data="data"), "validation_data.*monitor='val_loss'"),
    ],
)
def test_bad_input_is_refused_before_any_step(kwargs, match):
    x, y = _data()
    model = _compiled(keras.optimizers.AdamW(1e-3))
    for key, value in list(kwargs.items()):
        if value == "data":
            kwargs[key] = x if key == "x" else (x, y)
    if "x" in kwargs:
        kwargs["y"] = y
    fits = []
    began = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: fits.append(1))
    with pytest.raises(ValueError, match=match):
        find_lr(model, batch_size=BATCH, num_steps=10, callbacks=[began], **kwargs, **QUIET)
    assert not fits  # refused before any test ran


@pytest.mark.parametrize("x", [3, "data.csv", None.__class__, [], {}])
def test_data_of_another_kind_is_refused_naming_its_type(x):
    with pytest.raises(
        ValueError, match=f"Argument `x` must be training data.*Received: x={type(x).__name__}"
    ):
        find_lr(_compiled(), x, batch_size=BATCH, num_steps=10, **QUIET)


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_dict_and_list_inputs(kind):
    x, y = _data()
    inputs = [keras.Input((2,), name="a"), keras.Input((1,), name="b")]
    out = keras.layers.Dense(1)(keras.layers.Concatenate()(inputs))
    keras.utils.set_random_seed(0)
    model = keras.Model(inputs, out)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    data = {"a": x[:, :2], "b": x[:, 2:]} if kind == "dict" else [x[:, :2], x[:, 2:]]
    result = find_lr(
        model, data, y, batch_size=BATCH, num_steps=30, stop_factor=None, repeats=2, **QUIET
    )
    assert result.stop_reason == "completed" and len(result.lrs) == 30


def test_the_suggestion_allows_for_the_momentum_of_the_one_cycle_to_run():
    lrs = np.geomspace(1e-5, 1.0, 100)
    x = np.log10(lrs)
    losses = 1.0 + np.tanh(-(x + 2.5) * 2) + np.where(x > -1, (x + 1) ** 2 * 5, 0)
    result = keras_clr.LRFinderResult(lrs, losses, momentum=0.9)
    default = result.suggest()
    assert default is not None
    assert result.suggest(one_cycle=keras_clr.OneCycle(1.0)) == default
    # The suggestion scales with 1 - the peak momentum (momentum_lag).
    higher = result.suggest(peak_momentum=0.9)
    assert higher == pytest.approx(default * (1 - 0.9) / (1 - 0.85), rel=1e-12)
    assert (
        result.suggest(one_cycle=keras_clr.OneCycle(1.0, base_momentum=0.9, max_momentum=0.95))
        == higher
    )
    # A OneCycle that leaves the momentum alone keeps the optimizer's, 0.9.
    assert result.suggest(one_cycle=keras_clr.OneCycle(1.0, cycle_momentum=False)) == higher
    with pytest.raises(ValueError, match="one_cycle.*Received: one_cycle=CyclicLR"):
        result.suggest(one_cycle=keras_clr.CyclicLR(0.1, 1.0))


def test_a_validation_curve_ends_on_the_model_its_steps_left():
    # The last point is measured after step num_steps - 1, not after the
    # steps fit runs past it before the test's check stops it.
    x, y = _data()
    xv, yv = _data(seed=1)
    model = _compiled()
    result = find_lr(
        model,
        x,
        y,
        batch_size=BATCH,
        num_steps=12,
        end_lr=1.0,
        stop_factor=None,
        monitor="val_loss",
        validation_data=(xv, yv),
        val_every=3,
        val_steps=2,
        shuffle=False,
        **QUIET,
    )
    reference = _compiled()
    lrs = _grid(1e-7, 1.0, 12, "exp")
    for i, lr in enumerate(lrs):
        reference.optimizer.learning_rate.assign(lr)
        j = (i * BATCH) % len(x)
        reference.train_on_batch(x[j : j + BATCH], y[j : j + BATCH])
    last = reference.evaluate(xv[: 2 * BATCH], yv[: 2 * BATCH], verbose=0)
    assert result.lrs[-1] == lrs[-1]
    assert result.losses[-1] == pytest.approx(last, rel=1e-6)
    # A point every val_every steps: after steps 3, 6, 9 and 12.
    np.testing.assert_array_equal(result.lrs, lrs[[2, 5, 8, 11]])


def test_repeats_leave_the_validation_split_out():
    # Repeats reorder only what validation_split leaves for training: with
    # the held-out half given huge targets, no repeat may train on it.
    x, y = _data()
    half = len(x) // 2
    y = np.concatenate([y[:half], np.full_like(y[half:], 1e5)])
    result = find_lr(
        _compiled(),
        x,
        y,
        batch_size=BATCH,
        num_steps=12,
        end_lr=1e-2,
        stop_factor=None,
        repeats=3,
        validation_split=0.5,
        **QUIET,
    )
    assert np.max(result.losses) < 100


def test_repeats_keep_every_sample_keras_holds_out_where_it_is():
    # Keras trains on the first floor(n x (1 - split)) samples: with 107 and
    # 0.1, the first 96, holding out 11 (ceil would hold out only 10). A
    # repeat reorders the 96 and leaves the 11 as they are.
    from keras_clr.range_test.data import reordered

    x = np.arange(107, dtype="float32").reshape(107, 1)
    for seed in (1, 2, 3):
        moved, _, _ = reordered(x, x, seed=seed, validation_split=0.1)
        np.testing.assert_array_equal(moved[96:], x[96:])
        np.testing.assert_array_equal(np.sort(moved[:96], axis=0), x[:96])


def test_repeats_of_the_same_order_warn():
    import tensorflow as tf

    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    with pytest.warns(UserWarning, match="recorded the same curve.*shuffle"):
        find_lr(_compiled(), data, num_steps=8, repeats=2, **QUIET)


def test_skipped_updates_are_not_steps_of_the_test():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = _data()
        model = _model_with_loss_scale()
        result = find_lr(
            model, x, y, batch_size=BATCH, num_steps=20, end_lr=1e-2, stop_factor=None, **QUIET
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert result.stop_reason == "completed"
    np.testing.assert_array_equal(result.lrs, _grid(1e-7, 1e-2, 20, "exp"))


def _model_with_loss_scale():
    from test_finder import _model

    model = _model()
    # A huge initial scale: the first updates overflow and are skipped.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.01, momentum=0.9), initial_scale=2.0**30
    )
    model.compile(optimizer, "mse")
    return model


def test_empty_data_is_refused():
    import tensorflow as tf

    x, y = _data()
    with pytest.raises(ValueError, match="at least one sample.*shape \\(0, 3\\)"):
        find_lr(_compiled(), x[:0], y[:0], batch_size=BATCH, **QUIET)
    with pytest.raises(ValueError, match="at least one batch"):
        find_lr(_compiled(), tf.data.Dataset.from_tensor_slices((x, y)).take(0), **QUIET)


def test_a_subclassed_model_without_weights():
    x, y = _data()
    model = SubclassedNet()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    if keras.backend.backend() == "tensorflow":  # it builds it in the first step
        with pytest.raises(ValueError, match="has none yet.*model.built=False"):
            model.fit(
                x,
                y,
                batch_size=BATCH,
                epochs=2,
                verbose=0,
                callbacks=[keras_clr.LRFinder(num_steps=8, verbose=0)],
            )
        assert int(model.optimizer.iterations) == 0
    # find_lr builds it on a batch: the weights it starts from come back.
    model = SubclassedNet()
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    result = find_lr(model, x, y, batch_size=BATCH, num_steps=8, **QUIET)
    assert len(result.lrs) == 8
    before = [w.copy() for w in model.get_weights()]
    find_lr(model, x, y, batch_size=BATCH, num_steps=8, **QUIET)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert int(model.optimizer.iterations) == 0


@pytest.mark.parametrize(
    "kwargs, unused",
    [
        (dict(val_every=5), "`val_every` has no effect with a training monitor"),
        (dict(val_steps=2, val_every=5), "`val_every`, `val_steps` have no effect"),
    ],
)
def test_validation_arguments_without_effect_warn(kwargs, unused):
    with pytest.warns(UserWarning, match=re.escape(unused)):
        keras_clr.LRFinder(**kwargs)
    x, y = _data()
    with pytest.warns(UserWarning, match=re.escape(unused)) as caught:
        find_lr(_compiled(), x, y, batch_size=BATCH, num_steps=4, **kwargs, **QUIET)
    assert sum("no effect" in str(w.message) for w in caught) == 1  # once


def test_validation_arguments_in_use_do_not_warn():
    import warnings

    import tensorflow as tf

    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        find_lr(_compiled(), x, y, batch_size=BATCH, num_steps=4, **QUIET)
        find_lr(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            num_steps=4,
            monitor="val_loss",
            validation_data=(x, y),
            val_every=2,
            val_steps=1,
            **QUIET,
        )
        batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
        find_lr(
            _compiled(),
            x,
            y,
            batch_size=BATCH,
            num_steps=4,
            monitor="val_loss",
            validation_data=batched,
            **QUIET,
        )
    with pytest.warns(
        UserWarning, match="`val_batch_size` has no effect with validation_data=.*Dataset"
    ):
        keras_clr.LRFinder(monitor="val_loss", validation_data=batched, val_batch_size=8)
