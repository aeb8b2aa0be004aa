"""keras_clr.stopping: the smoothing and the stop rule, online and offline."""

import math

import numpy as np
import pytest

from keras_clr import stopping


def reference(losses, beta):
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.98])
def test_smoothing_in_pieces_equals_smoothing_at_once(beta):
    losses = np.random.default_rng(0).normal(size=97) + 3.0
    smoother = stopping.Smoother(beta)
    for piece in np.split(losses, [5, 6, 30, 31, 90]):
        smoother.extend(piece)
    whole = stopping.smooth(losses, beta)
    assert smoother.values.tolist() == whole.tolist()
    if beta:
        assert whole.tolist() == reference(losses.tolist(), beta)


def test_online_and_offline_stop_at_the_same_step():
    losses = np.concatenate([np.linspace(3, 1, 40), np.geomspace(1, 50, 30)])
    smoother, stop = stopping.Smoother(0.9), None
    for start in range(0, len(losses), 5):
        smoother.extend(losses[start : start + 5])
        stop = stop if stop is not None else stopping.diverged(smoother.values, 4.0)
    assert stop is not None
    assert stop == stopping.diverged(stopping.smooth(losses, 0.9), 4.0)


def test_no_stop_factor_stops_on_non_finite_values_only():
    assert stopping.diverged([1.0, 100.0], None) is None
    assert stopping.diverged([1.0, 100.0, math.nan], None) == 2
    assert stopping.smooth([1.0, math.inf, 1.0], 0.5)[2] == math.inf


def test_beta_is_checked():
    with pytest.raises(ValueError, match="Argument `beta`.*Received: beta=1"):
        stopping.Smoother(1)
