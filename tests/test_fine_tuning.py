"""`fine_tune`: stage 1 trains the head with the body frozen, stage 2 every
layer at discriminative rates, each a one-cycle.

The reference is the two stages run by hand here: `trainable = False`, a
compile, a fit with OneCycle; then the layers unfrozen and a MultiOptimizer
built by hand from an OptimizerMap, at rates written in closed form (fastai's
log spread from max_lr / lr_mult to max_lr). Same data order (shuffle=False).
"""

import keras
import numpy as np
import pytest

import keras_clr
from test_callbacks import BATCH
from test_callbacks import STEPS_PER_EPOCH
from test_callbacks import X
from test_callbacks import Y

pytestmark = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras 3.15 introduced MultiOptimizer"
)

LAYERS = ("body", "mid", "head")


def make(seed=0, optimizer=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="body")(inputs)
    h = keras.layers.Dense(4, activation="tanh", name="mid")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer=optimizer or sgd(0.05), loss="mse", metrics=["mae"])
    return model


def sgd(rate):
    return keras.optimizers.SGD(rate, momentum=0.9)


class Weights(keras.callbacks.Callback):
    """The weights at the end of each fit (each stage)."""

    def __init__(self):
        super().__init__()
        self.ends, self.trainable = [], []

    def on_train_end(self, logs=None):
        self.ends.append({v.path: np.array(v) for v in self.model.weights})
        self.trainable.append({v.path for v in self.model.trainable_weights})


def by_name(model):
    return {v.path: np.array(v) for v in model.weights}


FIT = {"batch_size": BATCH, "shuffle": False, "verbose": 0}


def by_hand(carry_head=False):
    """The two stages by hand, at max_lr (0.1, 0.05) and lr_mult 100."""
    model = make()
    for name in ("body", "mid"):
        model.get_layer(name).trainable = False
    stage_1 = sgd(0.05)
    model.compile(optimizer=stage_1, loss="mse", metrics=["mae"])
    model.fit(X, Y, epochs=1, callbacks=[keras_clr.OneCycle(0.1)], **FIT)
    for name in ("body", "mid"):
        model.get_layer(name).trainable = True
    # 0.05 / 100 to 0.05 in three log-spaced steps: 5e-4, 5e-3, 5e-2.
    head = stage_1 if carry_head else sgd(5e-2)
    head.learning_rate.assign(5e-2)
    groups = keras.optimizers.OptimizerMap(head, {"body/.*": sgd(5e-4), "mid/.*": sgd(5e-3)})
    model.compile(optimizer=keras.optimizers.MultiOptimizer(groups), loss="mse", metrics=["mae"])
    model.fit(X, Y, epochs=2, callbacks=[keras_clr.OneCycle(0.05)], **FIT)
    return model


def test_fine_tune_is_its_two_stages_by_hand():
    model = make()
    template = model.optimizer
    initial = by_name(model)
    weights = Weights()
    stages = keras_clr.fine_tune(
        model, X, Y, epochs=2, max_lr=(0.1, 0.05), callbacks=[weights], **FIT
    )
    expected = by_hand()
    assert max(np.max(np.abs(by_name(model)[k] - w)) for k, w in by_name(expected).items()) < 1e-5

    # Stage 1 froze the body bit for bit and trained the head.
    assert weights.trainable == [{"head/kernel", "head/bias"}, set(initial)]
    for key, value in initial.items():
        assert np.array_equal(weights.ends[0][key], value) == (not key.startswith("head"))
    assert stages.frozen.history["loss"] and len(stages.frozen.history["loss"]) == 1
    assert len(stages.unfrozen.history["loss"]) == 2
    assert {"learning_rate_group_0", "learning_rate_group_1", "learning_rate_group_2"} <= set(
        stages.unfrozen.history
    )
    np.testing.assert_allclose(
        stages.unfrozen.history["learning_rate_group_0"],
        np.array(stages.unfrozen.history["learning_rate"]) / 100,
        rtol=1e-6,
    )
    # What is kept: the weights and the compile (loss, metrics), not the
    # optimizer state: stage 2's optimizer counts its own steps only, and the
    # template the model was compiled with was never trained.
    assert isinstance(model.optimizer, keras.optimizers.MultiOptimizer)
    assert int(model.optimizer.iterations) == 2 * STEPS_PER_EPOCH
    assert [int(sub.iterations) for sub in model.optimizer.optimizers] == [2 * STEPS_PER_EPOCH] * 3
    assert int(template.iterations) == 0 and not template.built
    assert "mae" in stages.unfrozen.history
    assert all(model.get_layer(name).trainable for name in LAYERS)
    # Negative control: carrying the head's velocity from stage 1 into
    # stage 2 gives other weights.
    carried = by_hand(carry_head=True)
    assert max(np.max(np.abs(by_name(model)[k] - w)) for k, w in by_name(carried).items()) > 1e-4


def test_stage_1_leaves_the_body_bit_for_bit():
    model = make()
    initial = by_name(model)
    weights = Weights()
    keras_clr.fine_tune(
        model, X, Y, epochs=1, max_lr=0.05, head=["mid", "head"], callbacks=[weights], **FIT
    )
    for key, value in initial.items():  # head=["mid", "head"]: body alone frozen
        assert np.array_equal(weights.ends[0][key], value) == key.startswith("body"), key
        assert not np.array_equal(weights.ends[1][key], value), key


def test_a_layer_frozen_before_stays_frozen_and_decay_sets_the_ratios():
    model = make()
    model.get_layer("mid").trainable = False
    model.compile(optimizer=sgd(0.05), loss="mse")
    initial = by_name(model)
    with pytest.warns(UserWarning, match="frozen now frozen in both stages: mid"):
        stages = keras_clr.fine_tune(model, X, Y, epochs=1, max_lr=0.05, decay=0.5, **FIT)
    assert not model.get_layer("mid").trainable
    for key in ("mid/kernel", "mid/bias"):
        assert np.array_equal(by_name(model)[key], initial[key])
    assert not np.array_equal(by_name(model)["body/kernel"], initial["body/kernel"])
    history = stages.unfrozen.history  # body (group_0) and head (group_2)
    assert [sub.name for sub in model.optimizer.optimizers] == ["group_0", "group_1"]
    np.testing.assert_allclose(
        history["learning_rate_group_0"], np.array(history["learning_rate"]) * 0.5, rtol=1e-6
    )


def test_freeze_epochs_0_skips_stage_1():
    model = make()
    stages = keras_clr.fine_tune(model, X, Y, epochs=1, freeze_epochs=0, max_lr=0.05, **FIT)
    assert stages.frozen is None and len(stages.unfrozen.history["loss"]) == 1


def test_max_lr_auto_tunes_each_stage():
    model = make()
    stages = keras_clr.fine_tune(model, X, Y, epochs=1, budget_steps=160, **FIT)
    for history in stages:
        assert history.max_lr_search is not None and history.max_lr_search.max_lr
        assert max(history.history["learning_rate"]) <= history.max_lr_search.max_lr


def test_max_lr_race_races_each_stage():
    model = make()
    xv, yv = X[:16], Y[:16]
    stages = keras_clr.fine_tune(
        model,
        X,
        Y,
        epochs=2,
        freeze_epochs=2,
        max_lr="race",
        candidates=[0.003, 0.01, 0.03],
        race_seed=3,
        validation_data=(xv, yv),
        **FIT,
    )
    for history in stages:
        race = history.race
        assert race.winner in (0.003, 0.01, 0.03) and len(history.epoch) == 2
        # the head's rate (the largest group's) peaks at the winner
        assert max(history.history["learning_rate"]) <= race.winner
    groups = [k for k in stages.unfrozen.history if k.startswith("learning_rate_group_")]
    assert len(groups) >= 2


class Fails(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise RuntimeError("stop")


def test_a_failing_stage_1_puts_the_model_back():
    model = make()
    template = model.optimizer
    with pytest.raises(RuntimeError, match="stop"):
        keras_clr.fine_tune(model, X, Y, epochs=1, max_lr=0.05, callbacks=[Fails()], **FIT)
    assert all(model.get_layer(name).trainable for name in LAYERS)
    assert model.optimizer is template


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, r"Argument `epochs` must be a positive integer. Received: epochs=0"),
        ({"freeze_epochs": -1}, r"Received: freeze_epochs=-1"),
        ({"head": "nope"}, r"`head` names 'nope'"),
        ({"head": ["body", "mid", "head"]}, r"no body to freeze"),
        ({"head": [3]}, r"Argument `head` must be"),
        ({"lr_mult": 1}, r"`lr_mult` must be above 1 .*Received: lr_mult=1$"),
        ({"lr_mult": 10, "decay": 0.5}, r"Pass `lr_mult` or `decay`"),
        ({"decay": 1.5}, r"Received: decay=1.5"),
        ({"max_lr": -1.0}, r"Received: max_lr=-1.0"),
        ({"max_lr": (0.1,)}, r"a pair of them"),
        ({"max_lr": "fast"}, r"Received: max_lr='fast'"),
        (
            {"max_lr": (0.01, "race"), "callbacks": [keras.callbacks.TerminateOnNaN()]},
            r"`callbacks` \(TerminateOnNaN\) cannot be passed to the race",
        ),
        ({"max_lr": (0.01, "race"), "steps_per_epoch": 2}, r"`steps_per_epoch` is set by the race"),
        ({"groups": 2}, r"`groups` is discriminative_optimizer's, not fine_tune's.*groups=2"),
        ({"frozen": ["body"]}, r"`frozen` is discriminative_optimizer's"),
        ({"one_cycle": {"bogus": 1}}, r"`bogus` is not one"),
        ({"pct_start": 0.5}, r"pass it to fine_tune as one_cycle"),
        ({"blocks": [["nope"]]}, r"`blocks` names a layer"),
    ],
)
def test_bad_input_is_refused_before_any_step(kwargs, match):
    model = make()
    template = model.optimizer
    initial = by_name(model)
    kwargs = {"epochs": 1, "max_lr": 0.05, **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_clr.fine_tune(model, X, Y, **kwargs, **FIT)
    assert model.optimizer is template and not template.built
    assert all(np.array_equal(w, initial[k]) for k, w in by_name(model).items())
    assert all(model.get_layer(name).trainable for name in LAYERS)


def test_a_model_not_compiled_or_with_a_multi_optimizer_is_refused(monkeypatch):
    model = make()
    uncompiled = keras.Model(model.inputs, model.outputs)
    with pytest.raises(ValueError, match="Argument `model` must be compiled"):
        keras_clr.fine_tune(uncompiled, X, Y, epochs=1)
    model.compile(
        optimizer=keras_clr.discriminative_optimizer(model, sgd(0.1), decay=0.5), loss="mse"
    )
    with pytest.raises(ValueError, match="this one is a MultiOptimizer"):
        keras_clr.fine_tune(model, X, Y, epochs=1)
    monkeypatch.delattr(keras.optimizers, "MultiOptimizer")
    with pytest.raises(ValueError, match="fine_tune's second stage .* needs Keras 3.15"):
        keras_clr.fine_tune(make(), X, Y, epochs=1)
