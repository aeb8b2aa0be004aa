"""WarmupStableDecay against transformers' `get_wsd_schedule` and timm's
`WSDLRScheduler`, step for step.

`tests/data/wsd_reference.json` holds the rates both libraries applied at
each update (recorded by `tests/data/record_wsd_reference.py` with
transformers 5.23.0, timm 1.0.31 and torch 2.13). The recording is itself
checked against transformers' formula written out in `test_curves.py`, and
where transformers is importable the same cases run live against it too.
keras_clr's schedule takes transformers' argument names (without `num_`),
so each case builds both from the same numbers.
"""

import json
import pathlib

import numpy as np
import pytest

import keras_clr
from keras_clr import schedules
from test_curves import wsd_multiplier

REFERENCE = json.loads(
    pathlib.Path(__file__).with_name("data").joinpath("wsd_reference.json").read_text()
)["cases"]
ARGUMENTS = (
    "warmup_steps",
    "stable_steps",
    "decay_steps",
    "warmup_type",
    "decay_type",
    "min_lr_ratio",
)


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's: no Keras state here."""
    yield


def ours(case):
    kwargs = {name: case[name] for name in ARGUMENTS}
    return schedules.WarmupStableDecayLearningRate(case["max_lr"], **kwargs)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_the_recording_is_transformers_formula(name):
    case = REFERENCE[name]
    expected = [
        case["max_lr"]
        * wsd_multiplier(
            k,
            case["warmup_steps"],
            case["stable_steps"],
            case["decay_steps"],
            case["warmup_type"],
            case["decay_type"],
            case["min_lr_ratio"],
        )
        for k in range(len(case["transformers"]))
    ]
    np.testing.assert_allclose(case["transformers"], expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_transformers_step_for_step(name):
    case = REFERENCE[name]
    steps = np.arange(len(case["transformers"]))
    # The same float64 arithmetic: equal, not just close.
    np.testing.assert_array_equal(ours(case)(steps), case["transformers"])


@pytest.mark.parametrize("name", sorted(n for n in REFERENCE if REFERENCE[n]["timm"]))
def test_timm_step_for_step(name):
    case = REFERENCE[name]
    steps = np.arange(len(case["timm"]))
    # timm computes lr_min + (lr - lr_min) * decay: the same value, rounded
    # differently in the last bits.
    np.testing.assert_allclose(ours(case)(steps), case["timm"], rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", ["linear-cosine", "1-sqrt-1-sqrt", "no-stable"])
def test_the_callback_lr_schedule_is_the_same(name):
    case = REFERENCE[name]
    total = case["warmup_steps"] + case["stable_steps"] + case["decay_steps"]
    cb = keras_clr.WarmupStableDecay(
        case["max_lr"],
        warmup_steps=case["warmup_steps"],
        decay_steps=case["decay_steps"],
        total_steps=total,
        warmup_type=case["warmup_type"],
        decay_type=case["decay_type"],
        min_lr_ratio=case["min_lr_ratio"],
    )
    steps = np.arange(len(case["transformers"]))
    np.testing.assert_array_equal(cb.lr_schedule(steps), case["transformers"])


def test_live_against_transformers():
    torch = pytest.importorskip("torch")
    optimization = pytest.importorskip("transformers.optimization")
    for name, case in REFERENCE.items():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=case["max_lr"])
        scheduler = optimization.get_wsd_schedule(
            optimizer,
            num_warmup_steps=case["warmup_steps"],
            num_stable_steps=case["stable_steps"],
            num_decay_steps=case["decay_steps"],
            warmup_type=case["warmup_type"],
            decay_type=case["decay_type"],
            min_lr_ratio=case["min_lr_ratio"],
        )
        theirs = []
        for _ in range(len(case["transformers"])):
            theirs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        np.testing.assert_array_equal(ours(case)(np.arange(len(theirs))), theirs, err_msg=name)
