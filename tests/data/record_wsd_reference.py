"""Records transformers' `get_wsd_schedule` and timm's `WSDLRScheduler` rates.

Writes `wsd_reference.json` beside this file: for each case, the learning
rate each library applies at updates 0 .. total + 2 (the value in the
optimizer's param group before the k-th `scheduler.step()` after
construction). `tests/test_against_transformers.py` compares keras_clr's
`WarmupStableDecayLearningRate` with them. Rerun with both libraries
importable (they need torch):

    python tests/data/record_wsd_reference.py

timm is imported without its package `__init__` (which loads its models and
torchvision): only `timm.scheduler.scheduler` and `timm.scheduler.wsd_lr`.
"""

import functools
import importlib
import importlib.util
import json
import pathlib
import sys
import types

import torch

MAX_LR = 0.3
# name: (warmup_steps, stable_steps, decay_steps, warmup_type, decay_type, min_lr_ratio)
CASES = {}
for warmup in ("linear", "cosine", "1-sqrt"):
    for decay in ("linear", "cosine", "1-sqrt"):
        CASES[f"{warmup}-{decay}"] = (7, 5, 9, warmup, decay, 0.1)
CASES.update(
    {
        "no-warmup": (0, 4, 6, "linear", "1-sqrt", 0.0),
        "no-stable": (5, 0, 5, "cosine", "cosine", 0.25),
        "no-decay": (3, 4, 0, "linear", "linear", 0.2),
        "one-step-phases": (1, 1, 1, "1-sqrt", "1-sqrt", 0.05),
        "floor-zero": (10, 10, 10, "linear", "cosine", 0.0),
        "floor-one": (4, 2, 4, "cosine", "linear", 1.0),
        "long": (100, 300, 200, "linear", "1-sqrt", 0.01),
    }
)


def run(optimizer, step, steps):
    values = []
    for k in range(steps):
        values.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        step(k)
    return values


def transformers_rates(warmup, stable, decay, warmup_type, decay_type, ratio, steps):
    from transformers.optimization import get_wsd_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=MAX_LR)
    scheduler = get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup,
        num_decay_steps=decay,
        num_stable_steps=stable,
        warmup_type=warmup_type,
        decay_type=decay_type,
        min_lr_ratio=ratio,
    )
    return run(optimizer, lambda k: scheduler.step(), steps)


@functools.cache
def timm_module():
    spec = importlib.util.find_spec("timm")
    root = pathlib.Path(spec.submodule_search_locations[0])
    for name, path in (("timm", root), ("timm.scheduler", root / "scheduler")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    return importlib.import_module("timm.scheduler.wsd_lr")


def timm_rates(warmup, stable, decay, warmup_type, decay_type, ratio, steps):
    if warmup_type != "linear" or decay == 0:
        return None  # timm warms up linearly and needs a decay phase
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=MAX_LR)
    scheduler = timm_module().WSDLRScheduler(
        optimizer,
        t_initial=stable + decay,
        decay_t=decay,
        lr_min=ratio * MAX_LR,
        decay_fn=decay_type,
        warmup_t=warmup,
        warmup_lr_init=ratio * MAX_LR,
        t_in_epochs=False,
    )
    return run(optimizer, lambda k: scheduler.step_update(num_updates=k + 1), steps)


def main():
    from importlib.metadata import version

    versions = {name: version(name) for name in ("transformers", "timm", "torch")}
    cases = {}
    for name, (warmup, stable, decay, wt, dt, ratio) in CASES.items():
        steps = warmup + stable + decay + 3
        args = (warmup, stable, decay, wt, dt, ratio, steps)
        cases[name] = {
            "max_lr": MAX_LR,
            "warmup_steps": warmup,
            "stable_steps": stable,
            "decay_steps": decay,
            "warmup_type": wt,
            "decay_type": dt,
            "min_lr_ratio": ratio,
            "transformers": transformers_rates(*args),
            "timm": timm_rates(*args),
        }
    path = pathlib.Path(__file__).with_name("wsd_reference.json")
    path.write_text(json.dumps({"versions": versions, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
