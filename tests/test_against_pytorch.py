"""CyclicLR and OneCycle against PyTorch's own schedulers (skipped without torch).

For update k, PyTorch's value is the one in the optimizer's param group before
the k-th `scheduler.step()` call after construction; keras_clr's is
`lr_schedule(k)` / `momentum_schedule(k)`. The two callbacks take PyTorch's
argument names, so the same keyword arguments build both.
"""

import numpy as np
import pytest

import keras_clr

torch = pytest.importorskip("torch")

RTOL = 1e-6


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Overrides conftest's: no Keras state here, and its garbage collection
    costs ~0.3 s per test."""
    yield


def torch_optimizer(kind):
    param = torch.nn.Parameter(torch.zeros(1))
    if kind == "SGD":
        return torch.optim.SGD([param], lr=0.1, momentum=0.9)
    return torch.optim.Adam([param], lr=0.1)


def momentum_of(group):
    return group["momentum"] if "momentum" in group else group["betas"][0]


def torch_run(optimizer, scheduler, steps):
    """(learning rates, momenta) used by updates 0 .. steps - 1."""
    lrs, momenta = [], []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        lrs.append(float(group["lr"]))
        momenta.append(float(momentum_of(group)))
        optimizer.step()
        scheduler.step()
    return np.array(lrs), np.array(momenta)


def scale_by_cycle(x):
    return 1.0 / (1.0 + 0.5 * x)


def scale_by_step(x):
    return 1.0 / (1.0 + 1e-3 * x)


CYCLIC = {
    "triangular": dict(base_lr=1e-4, max_lr=1e-2, step_size_up=50),
    "triangular-down": dict(base_lr=1e-4, max_lr=1e-2, step_size_up=30, step_size_down=70),
    "triangular2": dict(base_lr=1e-4, max_lr=1e-2, step_size_up=40, mode="triangular2"),
    "triangular2-down": dict(
        base_lr=1e-4, max_lr=1e-2, step_size_up=17, step_size_down=3, mode="triangular2"
    ),
    "exp_range": dict(base_lr=1e-4, max_lr=1e-2, step_size_up=25, mode="exp_range", gamma=0.995),
    "exp_range-tail": dict(
        base_lr=1e-300, max_lr=1.0, step_size_up=2, mode="exp_range", gamma=0.99
    ),
    "custom-cycle": dict(
        base_lr=1e-3, max_lr=1e-1, step_size_up=20, scale_fn=scale_by_cycle, scale_mode="cycle"
    ),
    "custom-iterations": dict(
        base_lr=1e-3,
        max_lr=1e-1,
        step_size_up=20,
        step_size_down=9,
        scale_fn=scale_by_step,
        scale_mode="iterations",
    ),
    "momenta": dict(
        base_lr=1e-3, max_lr=1e-1, step_size_up=10, base_momentum=0.6, max_momentum=0.99
    ),
}


def assert_same(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize("name", sorted(CYCLIC))
def test_cyclic_lr(name, kind):
    kwargs = CYCLIC[name]
    optimizer = torch_optimizer(kind)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, **kwargs)
    lrs, momenta = torch_run(optimizer, scheduler, 1000)
    cb = keras_clr.CyclicLR(**kwargs)
    steps = np.arange(1000)
    assert_same(cb.lr_schedule(steps), lrs)
    assert_same(cb.momentum_schedule(steps), momenta)


@pytest.mark.parametrize(
    "name", ["triangular-down", "exp_range", "custom-cycle", "custom-iterations"]
)
def test_cyclic_lr_far_out(name):
    # PyTorch's float formula for the position in the cycle keeps ~1e-10 of
    # relative precision at step 1e8, well inside the tolerance. Its
    # triangular2 raises OverflowError (2.0 ** cycle) past cycle 1025, so it
    # is left out here; test_curves checks keras_clr's value there.
    kwargs = CYCLIC[name]
    optimizer = torch_optimizer("SGD")
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, **kwargs)
    cb = keras_clr.CyclicLR(**kwargs)
    for k in [10**8 + j for j in range(0, 200, 7)] + [10**9 + 1]:
        scheduler.last_epoch = k - 1
        optimizer.step()
        scheduler.step()
        group = optimizer.param_groups[0]
        assert cb.lr_schedule(k) == pytest.approx(group["lr"], rel=RTOL)
        assert cb.momentum_schedule(k) == pytest.approx(group["momentum"], rel=RTOL)


ONE_CYCLE = {
    "cos": dict(max_lr=1e-2, total_steps=1000),
    "linear": dict(max_lr=1e-2, total_steps=1000, anneal_strategy="linear"),
    "three-phase": dict(max_lr=1e-2, total_steps=1000, three_phase=True),
    "three-phase-linear": dict(
        max_lr=3e-3, total_steps=777, three_phase=True, anneal_strategy="linear", pct_start=0.25
    ),
    "factors": dict(
        max_lr=0.5,
        total_steps=333,
        pct_start=0.45,
        div_factor=7.0,
        final_div_factor=300.0,
        base_momentum=0.7,
        max_momentum=0.99,
    ),
    "short": dict(max_lr=1e-2, total_steps=12, pct_start=0.5),
}


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.parametrize("name", sorted(ONE_CYCLE))
def test_one_cycle(name, kind):
    kwargs = ONE_CYCLE[name]
    optimizer = torch_optimizer(kind)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **kwargs)
    total = kwargs["total_steps"]
    lrs, momenta = torch_run(optimizer, scheduler, total)
    cb = keras_clr.OneCycle(**kwargs)
    steps = np.arange(total)
    assert_same(cb.lr_schedule(steps), lrs)
    assert_same(cb.momentum_schedule(steps), momenta)
    # Past total_steps PyTorch raises; keras_clr holds the final values.
    assert_same(cb.lr_schedule(np.arange(total, total + 5)), [lrs[-1]] * 5)
    assert_same(cb.momentum_schedule(np.arange(total, total + 5)), [momenta[-1]] * 5)
