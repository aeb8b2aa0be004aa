"""`find_lr`: the range test in one call, its repeats and the weight-decay sweep."""

import math
import warnings

import keras
import numpy as np

from keras_clr import _checks
from keras_clr import optimizers
from keras_clr import results
from keras_clr.range_test.callback import CHECK_EVERY
from keras_clr.range_test.callback import LRFinder
from keras_clr.range_test.data import check_data
from keras_clr.range_test.data import ensure_built
from keras_clr.range_test.data import fit_plan
from keras_clr.range_test.data import is_torch_loader
from keras_clr.range_test.data import reordered
from keras_clr.range_test.data import repeating
from keras_clr.range_test.sweep import weight_decay_sweep


def find_lr(
    model,
    x=None,
    y=None,
    *,
    batch_size=None,
    start_lr=1e-7,
    end_lr=10.0,
    num_steps=100,
    step_mode="exp",
    smoothing=0.98,
    stop_factor=4.0,
    monitor="loss",
    validation_data=None,
    callbacks=None,
    verbose=1,
    repeats=1,
    weight_decays=None,
    val_every=None,
    val_steps=None,
    mode="auto",
    **fit_kwargs,
):
    """Runs the learning-rate range test on a compiled model and restores it.

    Accepts the data `fit` accepts: NumPy arrays, a `tf.data.Dataset`
    (finite or repeated), a Python generator or a `keras.utils.PyDataset`,
    cycling through it when `num_steps` exceeds one pass. Whatever happens,
    completion, divergence, NaN, an exception or KeyboardInterrupt from a
    callback (re-raised), the model's weights and optimizer state are
    bit-identical afterwards to what they were before.

    Args:
        model: a compiled Keras model.
        x: the training data, as for `model.fit`: arrays (or a dict or list
            of them), a `tf.data.Dataset`, a `keras.utils.PyDataset`, a
            Python generator or, on PyTorch, a DataLoader.
        y: the targets, with array `x`; None otherwise.
        batch_size: the batch size, with array `x` (None: Keras's 32); also
            the batch size of array `validation_data`.
        start_lr: the first learning rate, a positive float.
        end_lr: the last learning rate, above `start_lr`.
        num_steps: steps of the test, at least 2.
        step_mode: `"exp"` (rates evenly spaced in log space) or `"linear"`.
        smoothing: beta of the bias-corrected moving average of the loss, in
            [0, 1); 0 disables smoothing.
        stop_factor: stop once the smoothed loss is this many times the best
            one; above 1, or None to stop on NaN or inf only.
        monitor: the curve to record: `"loss"`, a training metric such as
            `"accuracy"`, or a validation one (`"val_loss"`, ...) measured
            every `val_every` steps on `validation_data` (see `LRFinder`).
        validation_data: data for a validation monitor, as in `fit`; only
            with one.
        callbacks: more callbacks to run alongside the test.
        verbose: 0 silent, 1 progress bar and summary.
        repeats: run the test this many times from the same start with
            different data orders; the result holds the mean curve and its
            band, and suggestions come from the mean.
        weight_decays: a list of weight decays to sweep (Smith 2018): one
            test per value, each with `repeats`.
        val_every: with a validation monitor, steps between two
            evaluations (None: 10).
        val_steps: with a validation monitor, batches of `validation_data`
            in the fixed subset each evaluation uses (None: 4).
        mode: `"min"`, `"max"` or `"auto"` (max for accuracy-like names):
            whether the suggestions look for low or high values.
        **fit_kwargs: passed to `model.fit` (e.g. `class_weight`,
            `sample_weight`, `validation_split`); not `epochs`,
            `steps_per_epoch` or `initial_epoch`, which `num_steps` sets.

    Returns:
        `keras_clr.LRFinderResult`, or with `weight_decays` a
        `keras_clr.WeightDecaySweep`: a result per weight decay, the best
        (lowest smoothed loss) and its suggestions.

    Raises:
        ValueError: before any training step, for an uncompiled model, any
            argument `LRFinder` refuses, `x` missing or not data `fit`
            takes, `epochs`, `steps_per_epoch` or `initial_epoch` among
            `fit_kwargs`, a `repeats` that is not a positive integer, an
            empty `weight_decays` or one below 0 (or an optimizer without
            `weight_decay`), and what `LRFinder` refuses as training begins.

    Example:
        >>> import keras, numpy as np, keras_clr
        >>> keras.utils.set_random_seed(0)
        >>> x = np.random.rand(64, 4)
        >>> y = x.sum(axis=1, keepdims=True)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(keras.optimizers.SGD(momentum=0.9), loss="mse")
        >>> result = keras_clr.find_lr(model, x, y, batch_size=16, num_steps=60,
        ...                            verbose=0)
        >>> result.stop_reason  # the loss blew up before end_lr=10
        'diverged'
        >>> max_lr = result.suggest()  # a max_lr for OneCycle
        >>> 1e-3 < max_lr < 1.0
        True
        >>> history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
        ...                     callbacks=[keras_clr.OneCycle(max_lr)])
    """
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with an optimizer "
            f"before the range test. Received: model={model.name!r}, "
            "not compiled"
        )
    for key in ("epochs", "steps_per_epoch", "initial_epoch"):
        if key in fit_kwargs:
            raise ValueError(
                f"Argument `{key}` is set by the range test from "
                f"`num_steps`. Received: {key}={fit_kwargs[key]!r}"
            )
    repeats = _checks.positive_int("repeats", repeats)
    settings = dict(
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        step_mode=step_mode,
        smoothing=smoothing,
        stop_factor=stop_factor,
        monitor=monitor,
        validation_data=validation_data,
        val_every=val_every,
        val_steps=val_steps,
        mode=mode,
        # validation arrays are cut into batches of batch_size
        val_batch_size=(batch_size if isinstance(validation_data, (tuple, list)) else None),
    )
    LRFinder(**settings, verbose=0)  # checks every argument before training
    if x is None:
        raise ValueError(
            "Argument `x` must be the training data, as for `model.fit`. Received: x=None"
        )
    check_data(x)
    if weight_decays is not None:
        weight_decays = _checked_weight_decays(weight_decays)
    x = ensure_built(model, x, batch_size)
    if hasattr(x, "__next__"):
        x = repeating(x)  # later repeats (and sweeps) go on with later batches
    if weight_decays is not None:
        return weight_decay_sweep(
            model,
            weight_decays,
            lambda: _repeated(
                model, x, y, batch_size, settings, callbacks, verbose, fit_kwargs, repeats
            ),
        )
    return _repeated(model, x, y, batch_size, settings, callbacks, verbose, fit_kwargs, repeats)


def _checked_weight_decays(weight_decays):
    """A non-empty list of weight decays >= 0, checked before any test."""
    if isinstance(weight_decays, (str, bytes, dict)) or not hasattr(weight_decays, "__iter__"):
        raise ValueError(
            "Argument `weight_decays` must be a list of weight decays to sweep, "
            f"such as [0.0, 1e-4, 1e-3]. Received: weight_decays={weight_decays!r}"
        )
    values = list(weight_decays)
    if not values:
        raise ValueError(
            "Argument `weight_decays` must list at least one weight decay. "
            f"Received: weight_decays={weight_decays!r}"
        )
    return [
        _checks.in_interval("weight_decays", value, 0.0, math.inf, high_open=True)
        for value in values
    ]


def _average(runs):
    """One result from repeated tests: the mean curve, with the band between
    the lowest and highest smoothed curve, over the steps all runs reached."""
    length = min(len(r.lrs) for r in runs)
    stack = lambda name: np.stack([getattr(r, name)[:length] for r in runs])  # noqa: E731
    smoothed = stack("smoothed_losses")
    if np.array_equal(smoothed.min(axis=0), smoothed.max(axis=0), equal_nan=True):
        warnings.warn(
            f"The {len(runs)} repeats of the range test recorded the same curve: "
            "their data came in the same order. keras_clr reorders arrays "
            "itself; a tf.data.Dataset or a PyDataset must shuffle itself "
            "(`dataset.shuffle(...)`, or pass `shuffle=True` for a PyDataset).",
            stacklevel=4,
        )
    shortest = min(runs, key=lambda r: len(r.lrs))
    first = runs[0]
    metrics = None
    if first.metrics:
        metrics = {k: np.mean([r.metrics[k][:length] for r in runs], axis=0) for k in first.metrics}
    return results.LRFinderResult(
        first.lrs[:length],
        stack("losses").mean(axis=0),
        smoothed.mean(axis=0),
        num_steps=first.num_steps,
        smoothing=first.smoothing,
        stop_reason=shortest.stop_reason,
        monitor=first.monitor,
        mode=first.mode,
        metrics=metrics,
        loss_band=(smoothed.min(axis=0), smoothed.max(axis=0)),
        start_lr=first.start_lr,
        end_lr=first.end_lr,
        momentum=first.momentum,
        batch_norm=first.batch_norm,
        steps=first.steps[:length],
        nonfinite_variable=shortest.nonfinite_variable,
        nonfinite_step=shortest.nonfinite_step,
        nonfinite_lr=shortest.nonfinite_lr,
    )


def _repeated(model, x, y, batch_size, settings, callbacks, verbose, fit_kwargs, repeats):
    """One test, or the average of `repeats` tests that share one compiled step."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # find_lr warned of its arguments already
        finder = LRFinder(**settings, verbose=verbose)
    runs = [
        _run_once(model, x, y, batch_size, finder, callbacks, fit_kwargs, repeat)
        for repeat in range(repeats)
    ]
    return runs[0] if repeats == 1 else _average(runs)


def _run_once(model, x, y, batch_size, finder, callbacks, fit_kwargs, repeat=0):
    split = fit_kwargs.get("validation_split")
    # Updates a loss scale skips take a batch each and no step of the test:
    # plan more batches than steps (the test stops once its steps are done).
    planned = finder.num_steps
    if optimizers.loss_scaled(model):
        planned = 2 * finder.num_steps + CHECK_EVERY
    data, epochs, steps = fit_plan(model, x, batch_size, planned, split)
    batched = isinstance(x, keras.utils.PyDataset) or is_torch_loader(x)
    if repeat and data is x and not batched:
        weights = fit_kwargs.get("sample_weight")
        data, y, weights = reordered(
            x, y, seed=repeat, sample_weight=weights, validation_split=split
        )
        if weights is not None:
            fit_kwargs = {**fit_kwargs, "sample_weight": weights}
    if data is not x or batched:
        fit_kwargs = {"shuffle": False, **fit_kwargs}  # the data shuffles itself
    history = getattr(model, "history", None)
    try:
        with finder:
            model.fit(
                data,
                y,
                batch_size=batch_size,
                epochs=epochs,
                steps_per_epoch=steps,
                verbose=0,
                callbacks=[finder, *(callbacks or [])],
                **fit_kwargs,
            )
    finally:
        model.history = history
    return finder.result
