"""Tests for keras_clr.schedules: values, TF-Addons compatibility, argument
checks, configs and saving.

Expected values come from the float64 PyTorch references of test_curves.py
(`torch_cyclic`, `torch_one_cycle`) and, for TF-Addons, from its formula
written out below.
"""

import inspect
import json
import math
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_clr import schedules as S
from test_curves import STEPS
from test_curves import assert_close
from test_curves import torch_cyclic
from test_curves import torch_one_cycle
from test_curves import triangular2_scale
from test_curves import wsd_multiplier


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's with the same reset minus the garbage collection
    (~0.3 s per test, which would dominate this module's runtime)."""
    keras.backend.clear_session(free_memory=False)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@keras.saving.register_keras_serializable(package="test")
def harmonic_scale(x):
    return 1.0 / (1.0 + 0.5 * x)


@keras.saving.register_keras_serializable(package="test")
def slow_decay(x):
    return 1.0 / (1.0 + 1e-3 * x)


def exp_range(gamma):
    return lambda x: gamma**x


# The tail of exp_range: ~1e-218 at step 50_001 above a 1e-300 bottom.
TAIL_STEPS = [20_001, 49_999, 50_001]

# id -> (schedule factory, reference k -> value)
CASES = {
    "cyclical": (
        lambda: S.CyclicalLearningRate(1e-3, 1e-1, 5, harmonic_scale),
        lambda k: torch_cyclic(k, 1e-3, 1e-1, 5, scale_fn=harmonic_scale)[0],
    ),
    "cyclical-iterations-down": (
        lambda: S.CyclicalLearningRate(1e-3, 1e-1, 4, slow_decay, "iterations", step_size_down=7),
        lambda k: torch_cyclic(k, 1e-3, 1e-1, 4, 7, slow_decay, "iterations")[0],
    ),
    "triangular": (
        lambda: S.TriangularCyclicalLearningRate(1e-4, 1e-2, 5),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 5)[0],
    ),
    "triangular-down": (
        lambda: S.TriangularCyclicalLearningRate(1e-4, 1e-2, 3, step_size_down=2),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 3, 2)[0],
    ),
    "triangular2": (
        lambda: S.Triangular2CyclicalLearningRate(1e-4, 1e-2, 5),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 5, scale_fn=triangular2_scale)[0],
    ),
    "triangular2-down": (
        lambda: S.Triangular2CyclicalLearningRate(1e-4, 1e-2, 2, step_size_down=9),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 2, 9, scale_fn=triangular2_scale)[0],
    ),
    "exponential": (
        lambda: S.ExponentialCyclicalLearningRate(1e-4, 1e-2, 5, gamma=0.99),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 5, scale_fn=exp_range(0.99), scale_mode="iterations")[
            0
        ],
    ),
    "exponential-cycle": (
        lambda: S.ExponentialCyclicalLearningRate(1e-4, 1e-2, 5, "cycle", 0.5),
        lambda k: torch_cyclic(k, 1e-4, 1e-2, 5, scale_fn=exp_range(0.5))[0],
    ),
    "exponential-tail": (
        lambda: S.ExponentialCyclicalLearningRate(1e-300, 1.0, 2, gamma=0.99),
        lambda k: torch_cyclic(
            k, 1e-300, 1.0, 2, scale_fn=exp_range(0.99), scale_mode="iterations"
        )[0],
    ),
    "one-cycle-cos": (
        lambda: S.OneCycleLearningRate(1e-2, 100),
        lambda k: torch_one_cycle(k, 100, 1e-2)[0],
    ),
    "one-cycle-linear": (
        lambda: S.OneCycleLearningRate(1e-2, 100, anneal_strategy="linear"),
        lambda k: torch_one_cycle(k, 100, 1e-2, anneal_strategy="linear")[0],
    ),
    "one-cycle-three-phase": (
        lambda: S.OneCycleLearningRate(1e-2, 100, three_phase=True),
        lambda k: torch_one_cycle(k, 100, 1e-2, three_phase=True)[0],
    ),
    "one-cycle-three-phase-linear": (
        lambda: S.OneCycleLearningRate(3e-3, 37, 0.25, "linear", 10.0, 100.0, True),
        lambda k: torch_one_cycle(k, 37, 3e-3, 0.25, "linear", 10.0, 100.0, True)[0],
    ),
    "one-cycle-1e8": (
        lambda: S.OneCycleLearningRate(1e-2, 10**8, pct_start=0.4),
        lambda k: torch_one_cycle(k, 10**8, 1e-2, pct_start=0.4)[0],
    ),
    "cyclical-momentum": (
        lambda: S.CyclicalMomentum(0.8, 0.9, 5, S.triangular2_scale),
        lambda k: torch_cyclic(k, 0, 0, 5, scale_fn=triangular2_scale)[1],
    ),
    "cyclical-momentum-iterations-down": (
        lambda: S.CyclicalMomentum(0.85, 0.95, 4, slow_decay, "iterations", 2),
        lambda k: torch_cyclic(k, 0, 0, 4, 2, slow_decay, "iterations", 0.85, 0.95)[1],
    ),
    "cyclical-momentum-exp-range": (
        lambda: S.CyclicalMomentum(0.7, 0.95, 5, S.ExponentialScale(0.97), "iterations", 3),
        lambda k: torch_cyclic(k, 0, 0, 5, 3, exp_range(0.97), "iterations", 0.7, 0.95)[1],
    ),
    "one-cycle-momentum": (
        lambda: S.OneCycleMomentum(100),
        lambda k: torch_one_cycle(k, 100, 1.0)[1],
    ),
    "one-cycle-momentum-three-phase-linear": (
        lambda: S.OneCycleMomentum(37, 0.8, 0.9, 0.25, "linear", True),
        lambda k: torch_one_cycle(
            k, 37, 1.0, 0.25, "linear", three_phase=True, base_momentum=0.8, max_momentum=0.9
        )[1],
    ),
    "wsd": (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 20, total_steps=100, min_lr_ratio=0.1),
        lambda k: 1e-2 * wsd_multiplier(k, 10, 70, 20, ratio=0.1),
    ),
    "wsd-cosine-fraction": (
        lambda: S.WarmupStableDecayLearningRate(
            3e-3, 7, 0.25, total_steps=37, warmup_type="cosine", decay_type="cosine"
        ),
        lambda k: 3e-3 * wsd_multiplier(k, 7, 21, 9, "cosine", "cosine"),
    ),
    "wsd-1-sqrt-stable-steps": (
        lambda: S.WarmupStableDecayLearningRate(
            0.5, 3, 11, stable_steps=5, warmup_type="1-sqrt", decay_type="linear", min_lr_ratio=0.01
        ),
        lambda k: 0.5 * wsd_multiplier(k, 3, 5, 11, "1-sqrt", "linear", 0.01),
    ),
    "wsd-open-ended": (
        lambda: S.WarmupStableDecayLearningRate(1e-3, 5, 0.2, min_lr_ratio=0.1),
        lambda k: 1e-3 * wsd_multiplier(k, 5, None, 0, ratio=0.1),
    ),
    "wsd-1e8": (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 1000, 0.2, total_steps=10**8),
        lambda k: 1e-2 * wsd_multiplier(k, 1000, 8 * 10**7 - 1000, 2 * 10**7),
    ),
    "wsd-momentum": (
        lambda: S.WarmupStableDecayMomentum(10, 20, total_steps=100),
        lambda k: 0.95 - 0.1 * wsd_multiplier(k, 10, 70, 20),
    ),
    "wsd-momentum-cosine": (
        lambda: S.WarmupStableDecayMomentum(
            4,
            6,
            stable_steps=3,
            warmup_type="cosine",
            decay_type="cosine",
            base_momentum=0.8,
            max_momentum=0.99,
        ),
        lambda k: 0.99 - 0.19 * wsd_multiplier(k, 4, 3, 6, "cosine", "cosine"),
    ),
}


def case_steps(schedule):
    steps = set(STEPS + TAIL_STEPS)
    total = getattr(schedule, "total_steps", None)
    if total is not None:
        steps |= {max(0, total + d) for d in range(-3, 4)}
        steps |= {
            max(0, int(total * f) + d)
            for f in (0.25, 0.3, 0.4, 0.5, 0.6, 0.8)
            for d in (-2, -1, 0, 1)
        }
    return np.array(sorted(steps), dtype=np.int64)


@pytest.fixture(params=sorted(CASES))
def case(request):
    factory, reference = CASES[request.param]
    schedule = factory()
    steps = case_steps(schedule)
    return schedule, steps, np.array([reference(int(k)) for k in steps])


# --- values -----------------------------------------------------------------


class TestValues:
    def test_host_scalar(self, case):
        schedule, steps, expected = case
        actual = [schedule(int(k)) for k in steps]
        assert all(type(v) is float for v in actual)
        assert_close(actual, expected)

    def test_host_array(self, case):
        schedule, steps, expected = case
        actual = schedule(steps)
        assert isinstance(actual, np.ndarray) and actual.dtype == np.float64
        assert_close(actual, expected)
        grid = schedule(steps[:40].reshape(5, 8))
        assert grid.shape == (5, 8)
        assert_close(grid.ravel(), expected[:40])

    def test_tensor(self, case):
        schedule, steps, expected = case
        actual = schedule(tf.constant(steps, dtype=tf.int64))
        assert actual.dtype == tf.float32
        keep = expected > 1e-30
        np.testing.assert_allclose(
            np.asarray(actual)[keep], expected[keep].astype(np.float32), rtol=1e-6
        )

    def test_optimizer_step_variable(self, case):
        schedule, steps, expected = case
        step = keras.Variable(0, dtype="int64", trainable=False)
        for k, value in list(zip(steps, expected))[-6:]:
            step.assign(k)
            assert float(schedule(step)) == pytest.approx(np.float32(value), rel=1e-6)


@pytest.mark.parametrize("step", [7, np.int64(7), np.int32(7), np.array(7)])
def test_integer_scalars_give_floats(step):
    value = S.TriangularCyclicalLearningRate(0.1, 1.0, 5)(step)
    assert type(value) is float
    assert value == pytest.approx(torch_cyclic(7, 0.1, 1.0, 5)[0], rel=1e-12)


def test_list_gives_array():
    values = S.TriangularCyclicalLearningRate(0.1, 1.0, 5)([0, 5, 10])
    assert isinstance(values, np.ndarray)
    assert_close(values, [0.1, 1.0, 0.1])


# --- TF-Addons compatibility ------------------------------------------------


def tfa_cyclical(step, initial, maximal, step_size, scale_fn, scale_mode):
    """tfa.optimizers.CyclicalLearningRate.__call__, in float64."""
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    mode_step = cycle if scale_mode == "cycle" else step
    return initial + (maximal - initial) * max(0.0, 1 - x) * scale_fn(mode_step)


TFA_CASES = {
    "CyclicalLearningRate": (
        lambda: S.CyclicalLearningRate(
            initial_learning_rate=0.1,
            maximal_learning_rate=1.0,
            step_size=40,
            scale_fn=harmonic_scale,
            scale_mode="cycle",
            name="CyclicalLearningRate",
        ),
        harmonic_scale,
        "cycle",
    ),
    "TriangularCyclicalLearningRate": (
        lambda: S.TriangularCyclicalLearningRate(
            initial_learning_rate=0.1,
            maximal_learning_rate=1.0,
            step_size=40,
            scale_mode="cycle",
            name="TriangularCyclicalLearningRate",
        ),
        lambda x: 1.0,
        "cycle",
    ),
    "Triangular2CyclicalLearningRate": (
        lambda: S.Triangular2CyclicalLearningRate(
            initial_learning_rate=0.1,
            maximal_learning_rate=1.0,
            step_size=40,
            scale_mode="cycle",
            name="Triangular2CyclicalLearningRate",
        ),
        lambda x: 1 / (2.0 ** (x - 1)),
        "cycle",
    ),
    "ExponentialCyclicalLearningRate": (
        lambda: S.ExponentialCyclicalLearningRate(
            initial_learning_rate=0.1,
            maximal_learning_rate=1.0,
            step_size=40,
            scale_mode="iterations",
            gamma=0.996,
            name="ExponentialCyclicalLearningRate",
        ),
        lambda x: 0.996**x,
        "iterations",
    ),
}


@pytest.mark.parametrize("name", sorted(TFA_CASES))
def test_tf_addons_formula(name):
    factory, scale_fn, scale_mode = TFA_CASES[name]
    steps = np.arange(0, 5 * 40 + 1)
    expected = [tfa_cyclical(int(k), 0.1, 1.0, 40, scale_fn, scale_mode) for k in steps]
    assert_close(factory()(steps), expected, rtol=1e-12)


def test_tf_addons_default_arguments():
    exponential = S.ExponentialCyclicalLearningRate(0.1, 1.0, 40)
    assert (exponential.scale_mode, exponential.gamma) == ("iterations", 1.0)
    for cls in (S.TriangularCyclicalLearningRate, S.Triangular2CyclicalLearningRate):
        assert cls(0.1, 1.0, 40).scale_mode == "cycle"
    assert S.CyclicalLearningRate(0.1, 1.0, 40, harmonic_scale).scale_mode == "cycle"


# --- argument checks --------------------------------------------------------


def named(name, value):
    """The message of `_checks`: names the argument and the value received."""
    return re.escape(f"`{name}` must be") + ".*" + re.escape(f"Received: {name}={value!r}")


def ordered(low, high, high_value):
    return (
        re.escape(f"`{high}` must be at least `{low}`") + ".*" + re.escape(f"{high}={high_value!r}")
    )


BAD = [
    # Cyclical learning rates.
    (lambda: S.TriangularCyclicalLearningRate(0.0, 1.0, 5), named("initial_learning_rate", 0.0)),
    (
        lambda: S.TriangularCyclicalLearningRate(-1e-3, 1.0, 5),
        named("initial_learning_rate", -1e-3),
    ),
    (
        lambda: S.TriangularCyclicalLearningRate(math.nan, 1.0, 5),
        named("initial_learning_rate", math.nan),
    ),
    (
        lambda: S.TriangularCyclicalLearningRate(0.1, math.inf, 5),
        named("maximal_learning_rate", math.inf),
    ),
    (lambda: S.TriangularCyclicalLearningRate(0.1, "1", 5), named("maximal_learning_rate", "1")),
    (
        lambda: S.TriangularCyclicalLearningRate(0.1, 0.01, 5),
        ordered("initial_learning_rate", "maximal_learning_rate", 0.01),
    ),
    (lambda: S.TriangularCyclicalLearningRate(0.1, 1.0, 0), named("step_size", 0)),
    (lambda: S.TriangularCyclicalLearningRate(0.1, 1.0, -3), named("step_size", -3)),
    (lambda: S.TriangularCyclicalLearningRate(0.1, 1.0, 2.5), named("step_size", 2.5)),
    (lambda: S.Triangular2CyclicalLearningRate(0.1, 1.0, True), named("step_size", True)),
    (
        lambda: S.Triangular2CyclicalLearningRate(0.1, 1.0, 5, step_size_down=0),
        named("step_size_down", 0),
    ),
    (
        lambda: S.Triangular2CyclicalLearningRate(0.1, 1.0, 5, step_size_down=1.5),
        named("step_size_down", 1.5),
    ),
    (
        lambda: S.Triangular2CyclicalLearningRate(0.1, 1.0, 5, scale_mode="epoch"),
        named("scale_mode", "epoch"),
    ),
    (lambda: S.CyclicalLearningRate(0.1, 1.0, 5, 3.0), named("scale_fn", 3.0)),
    (lambda: S.CyclicalLearningRate(0.1, 1.0, 5, None), named("scale_fn", None)),
    (lambda: S.ExponentialCyclicalLearningRate(0.1, 1.0, 5, gamma=0.0), named("gamma", 0.0)),
    (lambda: S.ExponentialCyclicalLearningRate(0.1, 1.0, 5, gamma=1.5), named("gamma", 1.5)),
    (lambda: S.ExponentialCyclicalLearningRate(0.1, 1.0, 5, gamma=-0.5), named("gamma", -0.5)),
    (lambda: S.ExponentialScale(1.5), named("gamma", 1.5)),
    # One-cycle learning rate.
    (lambda: S.OneCycleLearningRate(0.0, 100), named("maximal_learning_rate", 0.0)),
    (lambda: S.OneCycleLearningRate(math.inf, 100), named("maximal_learning_rate", math.inf)),
    (lambda: S.OneCycleLearningRate(1e-2, 0), named("total_steps", 0)),
    (lambda: S.OneCycleLearningRate(1e-2, 10.5), named("total_steps", 10.5)),
    (lambda: S.OneCycleLearningRate(1e-2, None), named("total_steps", None)),
    (lambda: S.OneCycleLearningRate(1e-2, 100, pct_start=0.0), named("pct_start", 0.0)),
    (lambda: S.OneCycleLearningRate(1e-2, 100, pct_start=1.0), named("pct_start", 1.0)),
    (
        lambda: S.OneCycleLearningRate(1e-2, 100, anneal_strategy="cosine"),
        named("anneal_strategy", "cosine"),
    ),
    (lambda: S.OneCycleLearningRate(1e-2, 100, div_factor=0.0), named("div_factor", 0.0)),
    (
        lambda: S.OneCycleLearningRate(1e-2, 100, final_div_factor=-1.0),
        named("final_div_factor", -1.0),
    ),
    # Momenta.
    (lambda: S.CyclicalMomentum(-0.1, 0.9, 5, harmonic_scale), named("base_momentum", -0.1)),
    (lambda: S.CyclicalMomentum(0.8, 1.1, 5, harmonic_scale), named("max_momentum", 1.1)),
    (
        lambda: S.CyclicalMomentum(0.95, 0.85, 5, harmonic_scale),
        ordered("base_momentum", "max_momentum", 0.85),
    ),
    (lambda: S.CyclicalMomentum(0.8, 0.9, 0, harmonic_scale), named("step_size", 0)),
    (
        lambda: S.CyclicalMomentum(0.8, 0.9, 5, harmonic_scale, step_size_down=2.5),
        named("step_size_down", 2.5),
    ),
    (lambda: S.CyclicalMomentum(0.8, 0.9, 5, harmonic_scale, "step"), named("scale_mode", "step")),
    (lambda: S.CyclicalMomentum(0.8, 0.9, 5, "harmonic"), named("scale_fn", "harmonic")),
    (lambda: S.OneCycleMomentum(0), named("total_steps", 0)),
    (lambda: S.OneCycleMomentum(100, pct_start=1.2), named("pct_start", 1.2)),
    (lambda: S.OneCycleMomentum(100, anneal_strategy="step"), named("anneal_strategy", "step")),
    (lambda: S.OneCycleMomentum(100, base_momentum=math.nan), named("base_momentum", math.nan)),
    (lambda: S.OneCycleMomentum(100, 0.95, 0.85), ordered("base_momentum", "max_momentum", 0.85)),
    # Warmup-stable-decay.
    (
        lambda: S.WarmupStableDecayLearningRate(0.0, 10, 10, 100),
        named("maximal_learning_rate", 0.0),
    ),
    (lambda: S.WarmupStableDecayLearningRate(1e-2, -1, 10, 100), named("warmup_steps", -1)),
    (lambda: S.WarmupStableDecayLearningRate(1e-2, 2.5, 10, 100), named("warmup_steps", 2.5)),
    (lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 1.5, 100), named("decay_steps", 1.5)),
    (lambda: S.WarmupStableDecayLearningRate(1e-2, 10, -3, 100), named("decay_steps", -3)),
    (lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 0), named("total_steps", 0)),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, stable_steps=-1),
        named("stable_steps", -1),
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 100, warmup_type="exp"),
        named("warmup_type", "exp"),
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 100, decay_type="sqrt"),
        named("decay_type", "sqrt"),
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 100, min_lr_ratio=1.5),
        named("min_lr_ratio", 1.5),
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 15),
        re.escape(
            "`total_steps` must be at least warmup_steps + decay_steps (20). "
            "Received: total_steps=15"
        ),
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 10, 100, stable_steps=50),
        re.escape("`total_steps` and `stable_steps` disagree") + ".*stable_steps=50",
    ),
    (
        lambda: S.WarmupStableDecayLearningRate(1e-2, 10, 0.2, stable_steps=50),
        re.escape("`decay_steps` is a fraction of `total_steps`") + ".*decay_steps=0.2",
    ),
    (
        lambda: S.WarmupStableDecayMomentum(10, 10, 100, base_momentum=0.99),
        ordered("base_momentum", "max_momentum", 0.95),
    ),
]


@pytest.mark.parametrize("factory, match", BAD, ids=[m for _, m in BAD])
def test_invalid_argument_raises_at_construction(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


# --- configs ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_get_config_is_constructor_arguments(name):
    schedule = CASES[name][0]()
    config = schedule.get_config()
    json.dumps(config)
    parameters = set(inspect.signature(type(schedule).__init__).parameters) - {"self"}
    assert set(config) == parameters
    for key, value in config.items():
        if key != "scale_fn":
            assert value == getattr(schedule, key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_config_round_trip(name):
    schedule = CASES[name][0]()
    restored = type(schedule).from_config(schedule.get_config())
    assert restored.get_config() == schedule.get_config()
    steps = case_steps(schedule)
    np.testing.assert_array_equal(restored(steps), schedule(steps))


@pytest.mark.parametrize(
    "cls",
    [
        S.TriangularCyclicalLearningRate,
        S.Triangular2CyclicalLearningRate,
        S.ExponentialCyclicalLearningRate,
    ],
)
def test_named_classes_save_without_scale_fn(cls):
    config = cls(0.1, 1.0, 5).get_config()
    assert "scale_fn" not in config
    assert "lambda" not in json.dumps(config)


# --- saving -----------------------------------------------------------------


def save_and_load(schedule, path, **load_kwargs):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    model.save(path)
    loaded = keras.models.load_model(path, **load_kwargs)
    return loaded.optimizer._learning_rate  # the schedule itself, not its value


@pytest.mark.parametrize(
    "name",
    [
        "cyclical",
        "triangular-down",
        "triangular2",
        "exponential",
        "one-cycle-three-phase",
        "cyclical-momentum",
        "cyclical-momentum-exp-range",
        "one-cycle-momentum",
        "wsd-cosine-fraction",
        "wsd-open-ended",
        "wsd-momentum-cosine",
    ],
)
def test_every_class_saves_and_loads_in_safe_mode(name, tmp_path):
    schedule = CASES[name][0]()
    restored = save_and_load(schedule, tmp_path / "model.keras")
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = case_steps(schedule)
    np.testing.assert_array_equal(restored(steps), schedule(steps))


def test_hand_built_schedule_on_library_scale_saves_in_safe_mode(tmp_path):
    schedule = S.CyclicalLearningRate(0.1, 1.0, 5, S.triangular2_scale)
    restored = save_and_load(schedule, tmp_path / "model.keras")
    np.testing.assert_array_equal(restored(np.arange(40)), schedule(np.arange(40)))


def test_lambda_scale_fn_saves_but_safe_mode_load_explains(tmp_path):
    schedule = S.CyclicalLearningRate(0.1, 1.0, 5, lambda x: 1.0 / x)
    path = tmp_path / "model.keras"
    with (
        pytest.raises(ValueError, match="safe_mode=False") as error,
        pytest.warns(UserWarning, match="lambda"),
    ):  # Keras's, when saving
        save_and_load(schedule, path)
    assert "register_keras_serializable" in str(error.value)
    assert "CyclicalLearningRate" in str(error.value)
    restored = keras.models.load_model(path, safe_mode=False).optimizer._learning_rate
    np.testing.assert_array_equal(restored(np.arange(40)), schedule(np.arange(40)))


def test_lambda_in_cyclical_momentum_explains(tmp_path):
    schedule = S.CyclicalMomentum(0.8, 0.9, 5, lambda x: 1.0)
    with (
        pytest.raises(ValueError, match="safe_mode=False.*register_keras_serializable"),
        pytest.warns(UserWarning, match="lambda"),
    ):
        save_and_load(schedule, tmp_path / "model.keras")


# --- import cost ------------------------------------------------------------


def test_import_does_not_load_pandas_or_matplotlib():
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None\n"
        "sys.modules['matplotlib'] = None\n"
        "import keras_clr\n"
        "keras_clr.OneCycle(1e-2, total_steps=10).lr_schedule(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- JoinedSchedule ------------------------------------------------------------


def _joined_reference(k):
    """Linear warm-up 0 -> 1 over 5 steps, then a cosine from 1 to 0.1 over
    10 steps, held at 0.1: the closed form, step by step."""
    if k < 5:
        return k / 5
    t = min(k - 5, 10) / 10
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def _joined():
    warm_up = keras.optimizers.schedules.PolynomialDecay(0.0, 5, 1.0, power=1.0)
    cosine = keras.optimizers.schedules.CosineDecay(1.0, 10, alpha=0.1)
    return S.JoinedSchedule([warm_up, cosine], [5])


def test_joined_schedule_gives_each_piece_from_its_own_step_0():
    schedule = _joined()
    expected = [_joined_reference(k) for k in range(20)]
    np.testing.assert_allclose([schedule(k) for k in range(20)], expected, rtol=1e-6, atol=1e-7)
    steps = keras.ops.convert_to_tensor(np.arange(20), dtype="int64")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(schedule(steps)), expected, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(schedule(np.arange(20)), expected, rtol=1e-6, atol=1e-7)
    # three pieces, a float among them: a constant
    three = S.JoinedSchedule([0.5, _joined(), 0.01], [3, 13])
    assert [three(k) for k in (0, 2)] == [0.5, 0.5]
    np.testing.assert_allclose(
        [three(k) for k in range(3, 13)],
        [_joined_reference(k) for k in range(10)],
        rtol=1e-6,
        atol=1e-7,
    )
    assert [three(k) for k in (13, 100)] == [0.01, 0.01]


def test_joined_schedule_drives_an_optimizer_and_saves_and_loads(tmp_path):
    schedule = S.JoinedSchedule([S.OneCycleLearningRate(0.1, total_steps=8), 0.001], [8])
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9), "mse")
    x, y = np.ones((12, 3), "float32"), np.ones((12, 1), "float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 6 steps
    one_cycle = S.OneCycleLearningRate(0.1, total_steps=8)
    assert float(model.optimizer.learning_rate) == pytest.approx(one_cycle(6), rel=1e-6)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 12 steps: the second piece
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001, rel=1e-6)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    restored = keras.saving.deserialize_keras_object(loaded.optimizer.get_config()["learning_rate"])
    assert isinstance(restored, S.JoinedSchedule)
    np.testing.assert_allclose(
        [restored(k) for k in range(12)], [schedule(k) for k in range(12)], rtol=1e-7
    )


@pytest.mark.parametrize(
    "schedules, boundaries, match",
    [
        ([0.1], [], r"at least two schedules.*Received: schedules=\[0.1\]"),
        ([0.1, "x"], [3], r"'x' is neither"),
        ([0.1, 0.2], [], r"a list of 1 steps.*Received: boundaries=\[\]"),
        ([0.1, 0.2], [0], r"positive integer steps. Received: boundaries=\[0\]"),
        ([0.1, 0.2, 0.3], [5, 5], r"must be increasing. Received: boundaries=\[5, 5\]"),
    ],
)
def test_joined_schedule_bad_arguments_are_named(schedules, boundaries, match):
    with pytest.raises(ValueError, match=match):
        S.JoinedSchedule(schedules, boundaries)
