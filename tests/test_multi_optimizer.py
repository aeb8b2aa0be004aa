"""keras_clr driving Keras 3.15's `MultiOptimizer` (a learning rate per group).

A two-layer model whose hidden layer ("body") and output layer ("head") are
updated by two sub-optimizers. Each group's learning rate is the schedule's
times the group's compiled learning rate over the largest of them. The rates
each sub-optimizer applied are read back from it after every step, and the
weights are compared with a float64 reference loop written here with
`tf.GradientTape` and the Keras update formulas, each group with its own
update and rate, and the momentum of its own kind. Schedule values come from
the PyTorch references of test_curves.py. Keras below 3.15 has no
MultiOptimizer: the module is skipped there.
"""

import re

import keras
import numpy as np
import pytest

import keras_clr
from test_callbacks import ATOL
from test_callbacks import BATCH
from test_callbacks import STEPS_PER_EPOCH
from test_callbacks import X
from test_callbacks import Y
from test_callbacks import adam
from test_callbacks import gradients
from test_callbacks import max_difference
from test_callbacks import sgd
from test_curves import torch_cyclic
from test_curves import torch_one_cycle
from test_curves import triangular2_scale
from test_curves import wsd_multiplier
from test_real_fits import CountingModel
from test_real_fits import Interrupt

pytestmark = pytest.mark.skipif(
    not hasattr(keras.optimizers, "MultiOptimizer"), reason="Keras 3.15 introduced MultiOptimizer"
)

# name -> (body optimizer, head optimizer, their reference updates)
GROUPS = {
    # The issue's set-up: the head at ten times the body's rate.
    "SGD+SGD": (
        lambda: keras.optimizers.SGD(0.01, momentum=0.9),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9),
        (sgd(), sgd()),
    ),
    # Groups of two kinds: SGD's momentum and Adam's beta_1 both cycle.
    "SGD+Adam": (
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        (sgd(), adam()),
    ),
}

# name -> (callback, (lr, momentum) at step k)
CALLBACKS = {
    "OneCycle": (
        lambda: keras_clr.OneCycle(0.2, div_factor=10.0),
        lambda k: torch_one_cycle(k, 3 * STEPS_PER_EPOCH, 0.2, div_factor=10.0),
    ),
    "CyclicLR": (
        lambda: keras_clr.CyclicLR(0.01, 0.2, step_size_up=4, step_size_down=2, mode="triangular2"),
        lambda k: torch_cyclic(k, 0.01, 0.2, 4, 2, scale_fn=triangular2_scale),
    ),
    "WarmupStableDecay": (
        lambda: keras_clr.WarmupStableDecay(
            0.2, warmup_steps=4, decay_steps=6, total_steps=3 * STEPS_PER_EPOCH, min_lr_ratio=0.1
        ),
        lambda k: (
            0.2 * wsd_multiplier(k, 4, 5, 6, ratio=0.1),
            0.95 - 0.1 * wsd_multiplier(k, 4, 5, 6),
        ),
    ),
}


def multi_model(body, head, seed=0, model_class=keras.Sequential, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = model_class(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="body"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(body, {".*head.*": head})
    )
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model


def fit(model, callbacks, epochs=3, **kwargs):
    return model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


class ReadGroups(keras.callbacks.Callback):
    """After each step: each sub-optimizer's learning rate (the one its last
    update used, read from its variable: a host sync per step, fine in a
    test), and the logs."""

    def __init__(self):
        super().__init__()
        self.applied, self.logs = [], []

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        self.applied.append({o.name: float(o.learning_rate) for o in optimizer.optimizers})
        self.logs.append(dict(logs))


def keras_keys(model):
    """The keys Keras's own LearningRateScheduler logs for the model's groups
    (one epoch that keeps each rate)."""
    history = fit(model, [keras.callbacks.LearningRateScheduler(lambda e, lr: lr)], epochs=1)
    return {key for key in history.history if key.startswith("learning_rate_")}


def reference(initial, updates, rates, momentum, steps):
    """Trains a float64 copy of the model: the body's weights (kernel, bias)
    with the body's update at rates[0](k), the head's with the head's at
    rates[1](k), both with momentum(k); same batches, same order."""
    weights = [np.asarray(w, dtype=np.float64) for w in initial]
    x, y = X.astype(np.float64), Y.astype(np.float64)
    states = ({}, {})
    for k in range(steps):
        i = (k % STEPS_PER_EPOCH) * BATCH
        grads = gradients(weights, x[i : i + BATCH], y[i : i + BATCH])
        body = updates[0](k, weights[:2], grads[:2], rates[0](k), momentum(k), states[0])
        head = updates[1](k, weights[2:], grads[2:], rates[1](k), momentum(k), states[1])
        weights = body + head
    return weights


# --- every group follows the schedule, exactly ------------------------------


@pytest.mark.parametrize("callback", sorted(CALLBACKS))
@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_each_group_follows_the_schedule_at_its_ratio(kind, callback):
    make_body, make_head, updates = GROUPS[kind]
    make_callback, closed_form = CALLBACKS[callback]
    body, head = make_body(), make_head()
    compiled = (body.learning_rate.numpy(), head.learning_rate.numpy())
    ratios = [float(np.float64(r) / max(compiled)) for r in compiled]
    model = multi_model(body, head)
    initial = model.get_weights()
    reader = ReadGroups()
    history = fit(model, [make_callback(), reader], epochs=3)
    steps = 3 * STEPS_PER_EPOCH
    assert int(model.optimizer.iterations) == steps

    # The rates each sub-optimizer applied, step by step: the schedule's
    # times the group's compiled rate over the largest (float32 rounding).
    schedule = np.array([closed_form(k) for k in range(steps)])
    for group, ratio in zip((body, head), ratios):
        applied = [step[group.name] for step in reader.applied]
        np.testing.assert_allclose(applied, schedule[:, 0] * ratio, rtol=1e-6)
        # What the logs say each group applied is what it applied, bit for bit.
        assert [logs[f"learning_rate_{group.name}"] for logs in reader.logs] == applied
    # `learning_rate` is the schedule's: the rate of the group compiled highest.
    top = head if ratios[1] == 1.0 else body
    assert [logs["learning_rate"] for logs in reader.logs] == [
        step[top.name] for step in reader.applied
    ]
    np.testing.assert_allclose(
        [logs["momentum"] for logs in reader.logs], schedule[:, 1], rtol=1e-6
    )

    assert history.history[f"learning_rate_{body.name}"][-1] == reader.applied[-1][body.name]

    # The weights: each group's own update at its own rate, with the cycled
    # momentum in its own attribute (SGD's momentum, Adam's beta_1).
    rates = [lambda k, r=r: closed_form(k)[0] * r for r in ratios]
    momentum = lambda k: closed_form(k)[1]  # noqa: E731
    expected_weights = reference(initial, updates, rates, momentum, steps)
    assert max_difference(model.get_weights(), expected_weights) < ATOL
    # Negative controls: every group at the schedule's own rate, or the
    # momentum held at its first value, are far from the trained weights.
    for control_rates, control_momentum in (
        ([lambda k: closed_form(k)[0]] * 2, momentum),
        (rates, lambda k: closed_form(0)[1]),
    ):
        control = reference(initial, updates, control_rates, control_momentum, steps)
        assert max_difference(model.get_weights(), control) > 100 * ATOL

    # The keys: one per group as Keras's own callbacks name them, and each
    # group's momentum.
    expected = keras_keys(model)
    assert len(expected) == 2
    assert {k for k in reader.logs[0] if k.startswith("learning_rate_")} == expected
    assert {k for k in reader.logs[0] if k.startswith("momentum_")} == {
        "momentum_" + k[len("learning_rate_") :] for k in expected
    }


def test_the_issue_example_peaks_each_group_at_its_compiled_rate():
    # OneCycle(max_lr=1e-3) on groups compiled at 1e-4 / 1e-3 peaks at
    # 1e-4 / 1e-3, as fastai's slice(1e-4, 1e-3) gives the head 1e-3.
    body, head = (
        keras.optimizers.SGD(1e-4, momentum=0.9),
        keras.optimizers.SGD(1e-3, momentum=0.9),
    )
    model = multi_model(body, head)
    reader = ReadGroups()
    fit(model, [keras_clr.OneCycle(1e-3, pct_start=0.5), reader], epochs=2)
    peak = max(range(len(reader.applied)), key=lambda k: reader.applied[k][head.name])
    assert reader.applied[peak][head.name] == np.float32(1e-3)
    np.testing.assert_allclose(reader.applied[peak][body.name], 1e-4, rtol=1e-6)
    # The schedule began at max_lr / 25 in each group.
    np.testing.assert_allclose(reader.applied[0][head.name], 1e-3 / 25, rtol=1e-6)
    np.testing.assert_allclose(reader.applied[0][body.name], 1e-4 / 25, rtol=1e-6)


def test_later_fits_keep_the_ratios_and_one_trace():
    # The schedules leave the rates scaled; the next fit's ratios are still
    # the compiled ones, and one trace of the step serves every fit.
    CountingModel.traces = 0
    body, head = keras.optimizers.SGD(0.02, momentum=0.9), keras.optimizers.Adam(0.1)
    model = multi_model(body, head, model_class=CountingModel)
    fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    traced = CountingModel.traces
    assert traced > 0
    reader = ReadGroups()
    fit(model, [keras_clr.CyclicLR(0.01, 0.05, step_size_up=3), reader], epochs=2)
    expected = np.array([torch_cyclic(k, 0.01, 0.05, 3)[0] for k in range(2 * STEPS_PER_EPOCH)])
    np.testing.assert_allclose([s[head.name] for s in reader.applied], expected, rtol=1e-6)
    np.testing.assert_allclose([s[body.name] for s in reader.applied], expected * 0.2, rtol=1e-6)
    fit(model, [keras_clr.OneCycle(0.2, pct_start=0.5)], epochs=1)
    assert CountingModel.traces == traced


# --- what cannot be driven says why -------------------------------------------


def test_a_group_with_its_own_schedule_is_named():
    own = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.9)
    head = keras.optimizers.SGD(own, momentum=0.9)
    model = multi_model(keras.optimizers.SGD(0.01, momentum=0.9), head)
    with pytest.raises(
        ValueError,
        match=re.escape(f"group {head.name!r}")
        + ".*compiled with its own schedule.*ExponentialDecay",
    ):
        fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    assert int(model.optimizer.iterations) == 0


def test_a_group_without_momentum_buffers_is_named():
    body = keras.optimizers.SGD(0.01)
    model = multi_model(body, keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(ValueError, match=re.escape(f"group {body.name!r}") + ".*momentum=0"):
        fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    assert int(model.optimizer.iterations) == 0
    reader = ReadGroups()
    fit(model, [keras_clr.OneCycle(0.1, cycle_momentum=False), reader], epochs=1)
    assert "momentum" not in reader.logs[0]
    assert not any(key.startswith("momentum_") for key in reader.logs[0])


# --- the range test -------------------------------------------------------------


def state(model):
    """Every model and optimizer variable (each sub-optimizer's included),
    by path, as host bytes."""
    variables = [*model.variables, *model.optimizer.variables]
    return {v.path: keras.ops.convert_to_numpy(v).tobytes() for v in variables}


def test_the_range_test_ramps_every_group_at_its_ratio():
    body, head = keras.optimizers.Adam(2e-3), keras.optimizers.SGD(1e-2, momentum=0.9)
    model = multi_model(body, head)
    reader = ReadGroups()
    with keras_clr.LRFinder(
        start_lr=1e-4, end_lr=1.0, num_steps=10, stop_factor=None, verbose=0
    ) as finder:
        model.fit(
            X, Y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[finder, reader]
        )
    result = finder.result
    assert result.stop_reason == "completed"
    ramp = 1e-4 * (1.0 / 1e-4) ** (np.arange(10) / 9)
    # All groups ramp together, each at its compiled fraction of the largest.
    np.testing.assert_allclose([s[head.name] for s in reader.applied[:10]], ramp, rtol=1e-6)
    np.testing.assert_allclose(
        [s[body.name] for s in reader.applied[:10]],
        ramp * np.float32(2e-3) / np.float32(1e-2),
        rtol=1e-6,
    )
    # The curve's rates are the reference group's (the largest), as applied.
    assert list(result.lrs) == [s[head.name] for s in reader.applied[:10]]
    assert result.momentum == pytest.approx(0.9)  # the reference group's, an SGD's


@pytest.mark.parametrize("ending", ["completed", "diverged"])
def test_the_range_test_restores_every_group_bit_for_bit(ending):
    body, head = keras.optimizers.SGD(1e-2, momentum=0.9), keras.optimizers.Adam(1e-3)
    model = multi_model(body, head)
    fit(model, [keras_clr.OneCycle(0.05)], epochs=1)  # trained, scaled rates
    before = state(model)
    assert any("momentum" in path for path in before)  # every slot is there
    assert any(f"{head.name}/learning_rate" == path for path in before)
    kwargs = (
        dict(start_lr=1e-4, end_lr=1e-1, num_steps=8, stop_factor=None)
        if ending == "completed"
        else dict(start_lr=1e-2, end_lr=1e4, num_steps=30, smoothing=0.0)
    )
    result = keras_clr.find_lr(model, X, Y, batch_size=BATCH, shuffle=False, verbose=0, **kwargs)
    assert result.stop_reason == ending
    assert state(model) == before
    assert result.momentum == pytest.approx(0.9)


def test_a_weight_decay_sweep_sets_every_group():
    body, head = keras.optimizers.SGD(1e-2, momentum=0.9), keras.optimizers.AdamW(1e-3)
    model = multi_model(body, head)
    original = (body.weight_decay, head.weight_decay)
    sweep = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=8,
        stop_factor=None,
        weight_decays=[0.0, 10.0],
    )
    # A weight decay of 10 at these rates shrinks the weights (and changes
    # the loss) where 0 does not: each test ran with its own.
    low, high = (sweep.results[wd].losses for wd in (0.0, 10.0))
    assert not np.allclose(low[1:], high[1:])
    assert (body.weight_decay, head.weight_decay) == original


# --- gradient accumulation and skipped updates ----------------------------------


def test_groups_that_accumulate_follow_the_real_updates():
    k = 2
    body = keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=k)
    head = keras.optimizers.Adam(0.05, gradient_accumulation_steps=k)
    model = multi_model(body, head)
    cb, reader = keras_clr.OneCycle(0.1), ReadGroups()
    fit(model, [cb, reader], epochs=2)
    batches = 2 * STEPS_PER_EPOCH
    updates = batches // k
    assert int(model.optimizer.iterations) == batches  # it counts batches
    assert int(body.iterations) == int(head.iterations) == updates
    assert cb.lr_schedule.total_steps == updates  # counted in real updates
    # Every micro-batch of update u sees the schedule's step u, in each group.
    schedule = np.array([torch_one_cycle(b // k, updates, 0.1)[0] for b in range(batches)])
    np.testing.assert_allclose([s[head.name] for s in reader.applied], schedule, rtol=1e-6)
    np.testing.assert_allclose([s[body.name] for s in reader.applied], schedule * 0.2, rtol=1e-6)
    assert [logs[f"learning_rate_{body.name}"] for logs in reader.logs] == [
        s[body.name] for s in reader.applied
    ]


def test_groups_that_accumulate_differently_are_refused():
    body = keras.optimizers.SGD(0.01, momentum=0.9, gradient_accumulation_steps=2)
    head = keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=4)
    model = multi_model(body, head)
    with pytest.raises(
        ValueError,
        match=re.escape(f"gradient_accumulation_steps={{{head.name}: 4, {body.name}: 2}}"),
    ):
        fit(model, [keras_clr.OneCycle(0.1)], epochs=1)
    assert int(model.optimizer.iterations) == 0


def test_updates_the_loss_scale_skips_do_not_advance_any_group():
    keras.mixed_precision.set_global_policy("mixed_float16")
    body, head = keras.optimizers.SGD(0.01, momentum=0.9), keras.optimizers.SGD(0.05, momentum=0.9)
    # A huge initial scale overflows float16 until it has halved enough.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(body, {".*head.*": head})),
        initial_scale=2.0**40,
    )
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="body"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")

    class Updates(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counts.append(int(optimizer.inner_optimizer.iterations))

    counts, reader = [], ReadGroups()
    with pytest.warns(UserWarning, match="loss scale skipped"):
        fit(model, [keras_clr.OneCycle(0.05), reader, Updates()], epochs=3)
    total = 3 * STEPS_PER_EPOCH
    assert counts[-1] < total - 3  # some updates were skipped
    # Batch b's step is the number of updates applied before it.
    before = [0] + counts[:-1]
    schedule = np.array([torch_one_cycle(u, total, 0.05)[0] for u in before])
    np.testing.assert_allclose([s[head.name] for s in reader.applied], schedule, rtol=1e-6)
    np.testing.assert_allclose([s[body.name] for s in reader.applied], schedule * 0.2, rtol=1e-6)
    for name in (body.name, head.name):  # the logs come from the step itself
        assert [logs[f"learning_rate_{name}"] for logs in reader.logs] == [
            s[name] for s in reader.applied
        ]


# --- BackupAndRestore -------------------------------------------------------------


@pytest.mark.parametrize("same_model", [True, False], ids=["same_model", "new_model"])
def test_backup_and_restore_resumes_every_group_exactly(same_model, tmp_path):
    # BackupAndRestore listed first restores the scaled rates of the backup
    # before the schedule's callback begins: the ratios stay the compiled ones.
    def model_and_optimizers(seed=0):
        # Rates whose ratio, read again from the backup's scaled rates, would
        # round to another float32.
        body, head = keras.optimizers.SGD(0.013, momentum=0.9), keras.optimizers.Adam(0.03)
        return multi_model(body, head, seed=seed), body, head

    def callbacks(directory, schedule, *others):
        return [keras.callbacks.BackupAndRestore(str(directory), save_freq=3), schedule, *others]

    model, body, head = model_and_optimizers()
    reference = ReadGroups()
    fit(model, callbacks(tmp_path / "a", keras_clr.OneCycle(0.1), reference), epochs=3)

    model, body, head = model_and_optimizers()
    schedule = keras_clr.OneCycle(0.1)
    with pytest.raises(RuntimeError, match="preempted"):
        fit(model, callbacks(tmp_path / "b", schedule, Interrupt(2, 3)), epochs=3)
    if not same_model:
        (model, body, _), schedule = model_and_optimizers(seed=5), keras_clr.OneCycle(0.1)
    resumed = ReadGroups()
    fit(model, callbacks(tmp_path / "b", schedule, resumed), epochs=3)
    # Keras replays epoch 2 from the backup: each group gets, bit for bit,
    # the uninterrupted run's rates.
    names = [o.name for o in model.optimizer.optimizers]
    replayed = [[step[name] for name in names] for step in resumed.applied]
    uninterrupted = [list(step.values()) for step in reference.applied[2 * STEPS_PER_EPOCH :]]
    assert replayed == uninterrupted
    assert [logs[f"learning_rate_{body.name}"] for logs in resumed.logs] == [
        step[body.name] for step in resumed.applied
    ]


# --- a MultiOptimizer given a function ----------------------------------------------


def test_groups_a_function_picks_are_found_before_the_first_step():
    # Given a function, a MultiOptimizer knows its sub-optimizers only once
    # built, which Keras does at the first step.
    body, head = keras.optimizers.SGD(0.01, momentum=0.9), keras.optimizers.Adam(0.1)
    model = multi_model(body, head)
    model.compile(
        keras.optimizers.MultiOptimizer(lambda v: head if "head" in v.path else body), loss="mse"
    )
    assert model.optimizer.optimizers == []
    reader = ReadGroups()
    fit(model, [keras_clr.OneCycle(0.1), reader], epochs=1)
    schedule = np.array(
        [torch_one_cycle(k, STEPS_PER_EPOCH, 0.1)[0] for k in range(STEPS_PER_EPOCH)]
    )
    np.testing.assert_allclose([s[head.name] for s in reader.applied], schedule, rtol=1e-6)
    np.testing.assert_allclose([s[body.name] for s in reader.applied], schedule * 0.1, rtol=1e-6)
    # The slots are named as Keras names them, each under its sub-optimizer.
    assert f"{body.name}/sequential_body_kernel_momentum" in [
        v.path for v in model.optimizer.variables
    ]

    body, head = keras.optimizers.SGD(0.01, momentum=0.9), keras.optimizers.Adam(0.1)
    model = multi_model(body, head)
    model.compile(
        keras.optimizers.MultiOptimizer(lambda v: head if "head" in v.path else body), loss="mse"
    )
    result = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        num_steps=6,
        verbose=0,
        start_lr=1e-3,
        end_lr=1e-1,
        stop_factor=None,
    )
    assert result.stop_reason == "completed"
    assert [float(body.learning_rate), float(head.learning_rate)] == [
        float(np.float32(0.01)),
        float(np.float32(0.1)),
    ]


def test_a_weight_decay_sweep_finds_the_groups_a_function_picks():
    body, head = keras.optimizers.AdamW(1e-3), keras.optimizers.AdamW(1e-2)
    model = multi_model(body, head)
    model.compile(
        keras.optimizers.MultiOptimizer(lambda v: head if "head" in v.path else body), loss="mse"
    )
    original = (body.weight_decay, head.weight_decay)
    sweep = keras_clr.find_lr(
        model,
        X,
        Y,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=8,
        stop_factor=None,
        weight_decays=[0.0, 10.0],
    )
    low, high = (sweep.results[wd].losses for wd in (0.0, 10.0))
    assert not np.allclose(low[1:], high[1:])  # each group had each weight decay
    assert (body.weight_decay, head.weight_decay) == original  # and its own back
