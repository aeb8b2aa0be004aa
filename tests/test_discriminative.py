"""`discriminative_optimizer`: a Keras MultiOptimizer with a rate per group.

Every variable must land in the group intended (read from Keras's own
OptimizerMap, as MultiOptimizer assigns it), each group at the rate written
here in closed form (decay ** depth from the head, or log-spaced from lo to
hi), frozen weights unchanged bit for bit, the optimizer saved and loaded
with the model, and each group's applied rate under OneCycle the schedule's
(PyTorch's closed form, test_curves.py) times its ratio.
"""

import math
import re

import keras
import numpy as np
import pytest

import keras_clr
from test_callbacks import BATCH
from test_callbacks import STEPS_PER_EPOCH
from test_callbacks import X
from test_callbacks import Y
from test_curves import torch_one_cycle
from test_multi_optimizer import ReadGroups

pytestmark = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras 3.15 introduced MultiOptimizer"
)

NAMES = ("a", "bn", "b", "head")


def functional(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="a")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Dense(4, activation="tanh", name="b")(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(h))


def sequential(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(4, activation="tanh", name="b"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def layer_of(variable):
    """The layer a variable of these models belongs to, from its path."""
    return variable.path.split("/")[-2]


def assigned(model, optimizer):
    """{variable path: sub-optimizer name}, as Keras's map assigns them."""
    groups = optimizer.get_config()  # the OptimizerMap, as Keras saves it
    assert groups["optimizer_map"]["class_name"] == "OptimizerMap"
    return {v.path: optimizer._optimizer_map(v).name for v in model.trainable_variables}


def rates(optimizer):
    return {sub.name: float(sub.learning_rate) for sub in optimizer.optimizers}


@pytest.mark.parametrize("build", [functional, sequential])
def test_decay_gives_each_layer_its_group_and_rate(build):
    model = build()
    optimizer = keras_clr.discriminative_optimizer(
        model, keras.optimizers.SGD(0.08, momentum=0.9), decay=0.5
    )
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    # One group per layer with weights, first to head, the head at 0.08.
    expected = {name: f"group_{i}" for i, name in enumerate(NAMES)}
    assert assigned(model, optimizer) == {
        v.path: expected[layer_of(v)] for v in model.trainable_variables
    }
    assert rates(optimizer) == {
        f"group_{i}": float(np.float32(0.08 * 0.5 ** (3 - i))) for i in range(4)
    }
    assert [sub.name for sub in optimizer.optimizers] == [f"group_{i}" for i in range(4)]
    assert all(sub.momentum == 0.9 for sub in optimizer.optimizers)


def test_lo_hi_spreads_log_linearly_over_groups_of_consecutive_layers():
    model = sequential()
    optimizer = keras_clr.discriminative_optimizer(
        model, keras.optimizers.Adam(0.1), lo=1e-3, groups=3
    )
    # Four layers in three runs: [a, bn], [b], [head]; hi defaults to 0.1.
    members = {"a": "group_0", "bn": "group_0", "b": "group_1", "head": "group_2"}
    assert assigned(model, optimizer) == {
        v.path: members[layer_of(v)] for v in model.trainable_variables
    }
    np.testing.assert_allclose(list(rates(optimizer).values()), [1e-3, 1e-2, 1e-1], rtol=1e-6)
    optimizer = keras_clr.discriminative_optimizer(
        model, keras.optimizers.Adam(0.1), lo=1e-4, hi=1e-2
    )
    np.testing.assert_allclose(
        list(rates(optimizer).values()), [1e-4 * 100 ** (i / 3) for i in range(4)], rtol=1e-6
    )


def test_blocks_name_layers_or_regexes():
    model = functional()
    optimizer = keras_clr.discriminative_optimizer(
        model, keras.optimizers.SGD(0.1), decay=0.1, blocks=[["a", "b.*"], ["head"]]
    )
    members = {"a": "group_0", "bn": "group_0", "b": "group_0", "head": "group_1"}
    assert assigned(model, optimizer) == {
        v.path: members[layer_of(v)] for v in model.trainable_variables
    }
    np.testing.assert_allclose(list(rates(optimizer).values()), [0.01, 0.1], rtol=1e-6)


def test_a_nested_model_is_grouped_by_its_own_layers():
    base = keras.applications.MobileNet(
        input_shape=(32, 32, 3), weights=None, include_top=False, alpha=0.25
    )
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(h))
    early = r"conv1(_bn)?|conv_(dw|pw)_[1-6](_bn)?"
    optimizer = keras_clr.discriminative_optimizer(
        model,
        keras.optimizers.SGD(0.1),
        lo=0.001,
        blocks=[[early], [r"conv_(dw|pw)_([7-9]|1[0-3])(_bn)?"], ["top"]],
    )
    found = assigned(model, optimizer)
    assert len(found) == len(model.trainable_variables) == 83
    for path, group in found.items():
        name = path.split("/")[-2]
        expected = (
            "group_2" if name == "top" else "group_0" if re.fullmatch(early, name) else "group_1"
        )
        assert group == expected, path
    # By default a nested model is one group: the body, then the head.
    optimizer = keras_clr.discriminative_optimizer(model, keras.optimizers.SGD(0.1), lo=0.001)
    assert set(assigned(model, optimizer).values()) == {"group_0", "group_1"}
    assert {p for p, g in assigned(model, optimizer).items() if g == "group_1"} == {
        "top/kernel",
        "top/bias",
    }


def fit(model, callbacks, epochs=2):
    return model.fit(
        X, Y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks
    )


def test_frozen_layers_stay_bit_for_bit_and_the_rest_follow_one_cycle():
    model = functional()
    optimizer = keras_clr.discriminative_optimizer(
        model,
        keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.01),
        decay=0.5,
        frozen=["a", "bn"],
    )
    assert [sub.name for sub in optimizer.optimizers] == ["frozen", "group_2", "group_3"]
    model.compile(optimizer=optimizer, loss="mse")
    before = {v.path: np.array(v) for v in model.trainable_variables}
    reader = ReadGroups()
    fit(model, [keras_clr.OneCycle(0.2, div_factor=10.0), reader])
    for v in model.trainable_variables:
        if layer_of(v) in ("a", "bn"):
            assert np.array_equal(np.array(v), before[v.path]), v.path
        else:
            assert not np.allclose(np.array(v), before[v.path]), v.path
    # Each group's applied rate: the schedule's times its rate over the head's.
    steps = 2 * STEPS_PER_EPOCH
    schedule = np.array([torch_one_cycle(k, steps, 0.2, div_factor=10.0)[0] for k in range(steps)])
    for group, ratio in (("frozen", 0.0), ("group_2", 0.5), ("group_3", 1.0)):
        applied = [step[group] for step in reader.applied]
        np.testing.assert_allclose(applied, schedule * ratio, rtol=1e-6)
        assert [logs[f"learning_rate_{group}"] for logs in reader.logs] == applied


@pytest.mark.parametrize("build", [functional, sequential])
def test_the_model_saves_and_loads_with_its_groups(build, tmp_path):
    model = build()
    model.compile(
        optimizer=keras_clr.discriminative_optimizer(
            model, keras.optimizers.Adam(0.01), decay=0.5, frozen=["bn"]
        ),
        loss="mse",
    )
    fit(model, [keras_clr.OneCycle(0.05)], epochs=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, keras.optimizers.MultiOptimizer)
    assert rates(loaded.optimizer) == rates(model.optimizer)
    # A Sequential's paths lose their `sequential/` scope once loaded; every
    # variable is still in the group of the same layer.
    groups = {
        layer_of(v): g
        for v, g in zip(model.trainable_variables, assigned(model, model.optimizer).values())
    }
    assert groups == {"a": "group_0", "bn": "frozen", "b": "group_2", "head": "group_3"}
    assert {
        layer_of(v): g
        for v, g in zip(loaded.trainable_variables, assigned(loaded, loaded.optimizer).values())
    } == groups
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.array(saved), np.array(restored))
    # And both go on to the same weights.
    fit(model, [], epochs=1)
    fit(loaded, [], epochs=1)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("outer", ["sequential", "functional"])
def test_a_nested_sequential_body_saves_and_loads_with_its_groups(outer, tmp_path):
    # A nested Sequential names its variables body/d1/kernel, and the same
    # model loaded from a file d1/kernel: every variable must keep its group.
    keras.utils.set_random_seed(0)
    body = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="d1"), keras.layers.Dense(4, name="d2")],
        name="body",
    )
    if outer == "sequential":
        model = keras.Sequential([keras.Input((3,)), body, keras.layers.Dense(1, name="head")])
    else:
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(1, name="head")(body(inputs)))
    model.compile(
        optimizer=keras_clr.discriminative_optimizer(
            model, keras.optimizers.SGD(0.01, momentum=0.9), lo=1e-4, frozen=["d1"]
        ),
        loss="mse",
    )
    fit(model, [keras_clr.OneCycle(0.01)], epochs=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    groups = {
        layer_of(v): g
        for v, g in zip(model.trainable_variables, assigned(model, model.optimizer).values())
    }
    assert groups == {"d1": "frozen", "d2": "group_0", "head": "group_1"}
    assert {
        layer_of(v): g
        for v, g in zip(loaded.trainable_variables, assigned(loaded, loaded.optimizer).values())
    } == groups
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.array(saved), np.array(restored))


def test_layers_that_share_a_name_in_two_nested_sequentials_are_refused():
    # In memory their paths differ (s1/same/kernel, s2/same/kernel); once
    # loaded both are same/kernel, so the groups could not tell them apart.
    first = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="same")], name="s1")
    second = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="same")], name="s2")
    model = keras.Sequential([keras.Input((3,)), first, second, keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="cannot tell .*same/kernel"):
        keras_clr.discriminative_optimizer(model, keras.optimizers.SGD(0.1), decay=0.5)


def test_layers_that_share_a_name_in_two_nested_models_are_refused():
    def inner():
        i = keras.Input((3,))
        return keras.Model(i, keras.layers.Dense(3, name="same")(i))

    first, second = inner(), inner()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(second(first(inputs))))
    assert [v.path for v in model.trainable_variables][:4] == [
        "same/kernel",
        "same/bias",
        "same/kernel",
        "same/bias",
    ]
    with pytest.raises(ValueError, match="cannot tell same/kernel"):
        keras_clr.discriminative_optimizer(model, keras.optimizers.SGD(0.1), decay=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decay": 0.0}, r"Argument `decay` must be a number in \(0, 1\]. Received: decay=0.0"),
        ({"decay": 1.5}, r"Received: decay=1.5"),
        ({"lo": 0.1}, r"`lo` must be below `hi`.*Received: lo=0.1, hi=0.1"),
        ({"lo": 0.1, "hi": 0.01}, r"Received: lo=0.1, hi=0.01"),
        ({"hi": 0.1}, r"`hi` needs `lo`"),
        ({"lo": 0.001, "decay": 0.5}, r"Pass `decay` or `lo`"),
        ({"groups": 0}, r"Argument `groups` must be a positive integer. Received: groups=0"),
        ({"groups": 5}, r"at most the 4 top-level layers.*Received: groups=5"),
        ({"blocks": [["a"], ["nope"]]}, r"`blocks` names a layer.*'nope'"),
        ({"blocks": [["a"], ["head"]]}, r"every layer with trainable weights; 4 weights"),
        ({"blocks": [["a", "b"], ["b", "bn", "head"]]}, r"puts b/kernel in two blocks"),
        ({"blocks": "a"}, r"Argument `blocks` must be a non-empty list"),
        ({"groups": 2, "blocks": [["a", "bn", "b", "head"]]}, r"Pass `groups` or `blocks`"),
        ({"frozen": ["nope"]}, r"`frozen` names a layer.*Received: frozen=\['nope'\]"),
        ({"frozen": "a"}, r"Argument `frozen` must be a list"),
        ({"frozen": [".*"]}, r"freezes every trainable weight"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    model = functional()
    with pytest.raises(ValueError, match=match):
        keras_clr.discriminative_optimizer(model, keras.optimizers.SGD(0.1), **kwargs)


def test_bad_optimizers_and_models_are_refused(monkeypatch):
    model = functional()
    with pytest.raises(ValueError, match="Argument `optimizer` must have a float"):
        keras_clr.discriminative_optimizer(
            model,
            keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)),
            decay=0.5,
        )
    with pytest.raises(ValueError, match="Argument `optimizer` must be a Keras optimizer"):
        keras_clr.discriminative_optimizer(
            model, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)), decay=0.5
        )
    with pytest.raises(ValueError, match="Ftrl still changes weights at rate 0"):
        keras_clr.discriminative_optimizer(model, keras.optimizers.Ftrl(0.1), frozen=["a"])
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="Argument `model` must be a built Keras model"):
        keras_clr.discriminative_optimizer(unbuilt, keras.optimizers.SGD(0.1), decay=0.5)
    monkeypatch.delattr(keras.optimizers, "MultiOptimizer")
    with pytest.raises(ValueError, match="needs Keras 3.15 or later"):
        keras_clr.discriminative_optimizer(model, keras.optimizers.SGD(0.1), decay=0.5)


def test_a_group_rate_is_the_closed_form_for_every_decay():
    model = sequential()
    for decay in (1.0, 0.9, 0.25):
        optimizer = keras_clr.discriminative_optimizer(
            model, keras.optimizers.SGD(0.3), decay=decay
        )
        for depth, sub in enumerate(reversed(optimizer.optimizers)):
            assert math.isclose(float(sub.learning_rate), 0.3 * decay**depth, rel_tol=1e-6)
