"""Faults: a range test that fails part-way, and damaged result files.

A range test that ends in an error, whatever raises it (a callback, an op
inside the compiled step, the train step itself, the data), re-raises it and
leaves every model, optimizer and metric variable bit-identical to before.
Reading a truncated or foreign file raises a ValueError that says so.
"""

import json
import os

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_clr
from keras_clr import LRFinderResult

BATCH = 8
FAIL_AT = 7  # the step (1-based) that fails
OOM = "OOM when allocating tensor with shape[8,4] (simulated)"


def _data(n=80):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype("float32")
    return x, y


def _out_of_memory(*_):
    return tf.errors.ResourceExhaustedError(None, None, OOM)


class _FailingLayer(keras.layers.Layer):
    """Identity that raises inside the compiled step on its FAIL_AT-th
    training call, through `tf.py_function`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls, self.armed = 0, True

    def _forward(self, x):
        self.calls += 1
        if self.armed and self.calls == FAIL_AT:
            raise _out_of_memory()
        return x

    def call(self, x, training=None):
        if not training:
            return x
        y = tf.py_function(self._forward, [x], Tout=x.dtype)
        y.set_shape(x.shape)
        return y


class _FailingStepModel(keras.Sequential):
    """A custom `train_step` whose in-graph check fails at a given update."""

    fail_at_iteration = None

    def train_step(self, data):
        if self.fail_at_iteration is not None:
            tf.debugging.assert_less(
                self.optimizer.iterations,
                tf.constant(self.fail_at_iteration, "int64"),
                message="simulated device fault in train_step",
            )
        return super().train_step(data)


def _model(kind="plain", optimizer=None, **compile_kwargs):
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input((3,)),
        keras.layers.Dense(4, activation="tanh"),
        keras.layers.BatchNormalization(),
    ]
    if kind == "layer":
        layers.append(_FailingLayer())
    layers.append(keras.layers.Dense(1))
    model = (_FailingStepModel if kind == "train_step" else keras.Sequential)(
        layers, name=f"{kind}_model"
    )
    model.compile(
        optimizer or keras.optimizers.SGD(0.01, momentum=0.9),
        "mse",
        metrics=["mae"],
        **compile_kwargs,
    )
    return model


def _state(model):
    variables = model.variables + model.optimizer.variables + model.metrics_variables
    return {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in variables}


def _assert_bit_identical(before, model):
    after = _state(model)
    assert before.keys() == after.keys()
    for path, value in before.items():
        assert value.dtype == after[path].dtype and value.tobytes() == after[path].tobytes(), path


class _RaiseAt(keras.callbacks.Callback):
    def __init__(self, error):
        super().__init__()
        self.error, self.seen = error, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == FAIL_AT:
            raise self.error


def _trained(kind="plain", **kwargs):
    """A model one epoch into training (non-zero slots, BatchNorm statistics)."""
    model = _model(kind, **kwargs)
    x, y = _data()
    _arm(model, False)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    _arm(model, True)
    return model


def _arm(model, armed):
    """Turns the failing layer on (counting from the next step) or off."""
    for layer in model.layers:
        if isinstance(layer, _FailingLayer):
            layer.calls, layer.armed = 0, armed


def _generator_failing_at(step):
    x, y = _data()
    for i in range(step - 1):
        j = (i * BATCH) % len(x)
        yield x[j : j + BATCH], y[j : j + BATCH]
    raise _out_of_memory()


def _fits_normally(model):
    x, y = _data()
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert "momentum" not in history.history  # no schedule left in the step
    assert "train_step" not in model.__dict__
    assert "make_train_function" not in model.__dict__
    assert type(model.optimizer.momentum) is float


@pytest.mark.parametrize(
    "where", ["callback", "layer", "train_step", "data", "steps_per_execution"]
)
def test_error_mid_test_restores_the_model(where):
    model = _trained(
        "layer" if where == "layer" else "train_step" if where == "train_step" else "plain",
        steps_per_execution=3 if where == "steps_per_execution" else 1,
    )
    before = _state(model)
    x, y = _data()
    kwargs = dict(batch_size=BATCH, num_steps=30, stop_factor=None, verbose=0)
    expected, match = tf.errors.ResourceExhaustedError, "simulated"
    if where in ("callback", "steps_per_execution"):
        kwargs["callbacks"] = [_RaiseAt(_out_of_memory())]
    elif where == "layer":
        expected = tf.errors.OpError  # py_function reports it as UnknownError
    elif where == "train_step":
        model.fail_at_iteration = (
            int(keras.ops.convert_to_numpy(model.optimizer.iterations)) + FAIL_AT - 1
        )
        expected = tf.errors.InvalidArgumentError
    elif where == "data":
        x, y = _generator_failing_at(FAIL_AT), None
        expected = tf.errors.OpError  # reported through py_func as UnknownError
        del kwargs["batch_size"]
    with pytest.raises(expected, match=match):
        keras_clr.find_lr(model, x, y, **kwargs)
    _assert_bit_identical(before, model)
    model.fail_at_iteration = None
    _arm(model, False)
    _fits_normally(model)


def test_error_inside_fit_with_the_callback_as_context_manager():
    model = _trained("layer")
    before = _state(model)
    x, y = _data()
    with pytest.raises(tf.errors.OpError, match="simulated"):
        with keras_clr.LRFinder(num_steps=30, verbose=0) as finder:
            model.fit(x, y, batch_size=BATCH, epochs=5, verbose=0, callbacks=[finder])
    # the partial curve: the steps before the one that failed
    assert finder.result.stop_reason == "interrupted"
    assert len(finder.result.lrs) == FAIL_AT - 1
    _assert_bit_identical(before, model)
    _arm(model, False)
    _fits_normally(model)


def test_error_in_another_callbacks_train_begin():
    model = _trained()
    before = _state(model)

    class Broken(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            raise _out_of_memory()

    x, y = _data()
    with pytest.raises(tf.errors.ResourceExhaustedError):
        keras_clr.find_lr(
            model, x, y, batch_size=BATCH, num_steps=10, verbose=0, callbacks=[Broken()]
        )
    _assert_bit_identical(before, model)
    _fits_normally(model)


@pytest.mark.parametrize(
    "callback",
    [
        lambda: keras_clr.OneCycle(0.1),
        lambda: keras_clr.CyclicLR(1e-3, 1e-1, 4),
        lambda: keras_clr.LRFinder(verbose=0),
    ],
    ids=["one_cycle", "cyclic", "lr_finder"],
)
def test_next_fit_after_a_failed_one_has_the_models_own_step(callback):
    model = _trained("layer")
    x, y = _data()
    with pytest.raises(tf.errors.OpError, match="simulated"):
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[callback()])
    # No callback hears of a fit that ends in an exception, and the weights
    # stay where training stopped, as in Keras; but the next fit uses the
    # model's own train step and float momentum.
    _arm(model, False)
    _fits_normally(model)


# -- damaged and foreign files --------------------------------------------------


def _result():
    lrs = np.geomspace(1e-5, 1.0, 12)
    losses = np.r_[np.linspace(2.0, 0.5, 10), np.nan, np.inf]
    return LRFinderResult(
        lrs, losses, num_steps=20, stop_reason="nan", metrics={"train_loss": losses * 1.5}
    )


@pytest.fixture(params=["csv", "json"])
def written(request, tmp_path):
    path = tmp_path / f"good.{request.param}"
    getattr(_result(), f"to_{request.param}")(path)
    return request.param, path.read_bytes()


def _read(kind, path):
    return getattr(LRFinderResult, f"read_{kind}")(path)


def test_every_truncation_is_refused(written, tmp_path):
    kind, data = written
    path = tmp_path / f"cut.{kind}"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(ValueError, match="Cannot read an LR range test") as info:
            _read(kind, path)
        assert "cut." in str(info.value)


def test_truncation_messages_say_what_is_wrong(written, tmp_path):
    kind, data = written
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[:-7])
    expected = "truncated file" if kind == "csv" else "not valid JSON, truncated"
    with pytest.raises(ValueError, match=expected):
        _read(kind, path)
    if kind == "csv":  # cut at a line end: rows are missing
        path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])
        with pytest.raises(ValueError, match="11 data rows where the metadata says 12"):
            _read(kind, path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "first line must be"),
        (b"\x00\x01\x02\xff\xfe garbage \x89PNG", "not UTF-8"),
        (bytes(range(0x20, 0x7F)) * 3, "first line must be"),
        (b"# keras_clr.LRFinderResult v1\n\x00\x00\x00\n", "not a '# key=json-value'|missing"),
    ],
)
def test_foreign_csv(tmp_path, content, match):
    path = tmp_path / "foreign.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        LRFinderResult.read_csv(path)


def test_pandas_csv_with_other_columns(tmp_path):
    path = tmp_path / "frame.csv"
    frame = _result().to_frame()
    frame["extra"] = 1.0
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match="not a CSV written by `LRFinderResult.to_csv`"):
        LRFinderResult.read_csv(path)
    pd.DataFrame({"a": [1, 2]}).to_csv(path)
    with pytest.raises(ValueError, match="first line must be"):
        LRFinderResult.read_csv(path)


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "not valid JSON"),
        ("\x00\x01garbage", "not valid JSON"),
        ("[" * 100000, "not valid JSON"),
        ("[1, 2, 3]", "not a JSON file written by `LRFinderResult.to_json`"),
        (json.dumps({"lr": [1e-3, 1e-2], "loss": [1.0, 0.5]}), 'no "format"'),
        (json.dumps({"format": "keras_clr.LRFinderResult", "version": 1}), "'lrs' is missing"),
        (json.dumps({"format": "keras_clr.LRFinderResult"}), "unsupported version None"),
    ],
)
def test_foreign_json(tmp_path, content, match):
    path = tmp_path / "foreign.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        LRFinderResult.read_json(path)


def test_pandas_json_is_refused(tmp_path):
    path = tmp_path / "frame.json"
    _result().to_frame().to_json(path)
    with pytest.raises(ValueError, match='no "format"'):
        LRFinderResult.read_json(path)


def test_intact_files_still_read(written, tmp_path):
    kind, data = written
    path = tmp_path / f"copy.{kind}"
    path.write_bytes(data)
    result = _read(kind, path)
    assert np.array_equal(result.losses, _result().losses, equal_nan=True)
    assert os.path.getsize(path) == len(data)
