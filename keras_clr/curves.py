"""Pure step -> value curves behind every schedule in keras_clr.

Each function maps a 0-based optimizer step (a Python int, a NumPy integer
array, or an integer tensor) to a value. They are written against a small
array namespace ``xp`` so that the same arithmetic runs on the host with NumPy
(float64, for previews, logs and tests) and inside a compiled train step with
``keras.ops`` (see ``keras_clr.schedules``). Steps stay integers until the
last moment, so a cycle's position is exact at any step, 10**9 included.

References:
    Smith, L. N. (2017). Cyclical Learning Rates for Training Neural
    Networks. WACV. arXiv:1506.01186.
    Smith, L. N., & Topin, N. (2019). Super-Convergence: Very Fast Training
    of Neural Networks Using Large Learning Rates. arXiv:1708.07120.
    Hu, S., et al. (2024). MiniCPM: Unveiling the Potential of Small
    Language Models with Scalable Training Strategies. arXiv:2404.06395.
    Hägele, A., et al. (2024). Scaling Laws and Compute-Optimal Training
    Beyond Fixed Training Durations. arXiv:2405.18392.
"""

import math

import numpy as np

# The functions the curves call on their namespace `xp`, besides `to_float`.
FUNCTIONS = ("where", "cos", "power", "minimum", "maximum", "sqrt", "floor_divide", "mod")


def namespace(name, module, to_float, doc):
    """A namespace for the curves: `module`'s `FUNCTIONS`, and `to_float`."""
    members = {f: staticmethod(getattr(module, f)) for f in FUNCTIONS}
    return type(name, (), {**members, "to_float": staticmethod(to_float), "__doc__": doc})


NumpyOps = namespace(
    "NumpyOps",
    np,
    lambda x: np.asarray(x, dtype=np.float64),
    "The host namespace: NumPy in float64.",
)


def triangle(step, step_size_up, step_size_down, xp=NumpyOps):
    """Triangle wave rising over `step_size_up` steps, falling over the rest.

    Args:
        step: 0-based integer step(s).
        step_size_up: steps from the bottom of a cycle to its peak.
        step_size_down: steps from the peak back to the bottom.
        xp: array namespace.

    Returns:
        `(cycle, height)`: the 1-based cycle number (integer) and the height
        of the wave in [0, 1] as a float.
    """
    period = step_size_up + step_size_down
    cycle = xp.floor_divide(step, period) + 1
    position = xp.mod(step, period)
    rising = xp.to_float(position) / step_size_up
    falling = xp.to_float(period - position) / step_size_down
    return cycle, xp.where(position <= step_size_up, rising, falling)


def triangular_scale(x):
    """Scale of the `triangular` mode: 1 at every cycle."""
    return 1.0


def triangular2_scale(x):
    """Scale of the `triangular2` mode: the amplitude halves each cycle.

    Written as `2 ** (1 - x)` so that late cycles underflow quietly to 0
    instead of overflowing `2 ** (x - 1)` (a NumPy RuntimeWarning).
    """
    return 2.0 ** (1.0 - x)


def cyclic(
    step, bottom, peak, step_size_up, step_size_down, scale_fn, scale_mode="cycle", xp=NumpyOps
):
    """Cyclical value: `bottom + (peak - bottom) * triangle * scale`.

    `peak` may lie below `bottom`, which gives the inverse cycle used for
    momentum. `scale_fn` receives the cycle number (`scale_mode="cycle"`) or
    the step (`scale_mode="iterations"`) as a float.
    """
    cycle, height = triangle(step, step_size_up, step_size_down, xp)
    x = cycle if scale_mode == "cycle" else step
    return bottom + (peak - bottom) * height * scale_fn(xp.to_float(x))


def anneal_cos(start, end, pct, xp=NumpyOps):
    """Cosine from `start` at pct=0 to `end` at pct=1."""
    return end + (start - end) / 2.0 * (xp.cos(math.pi * pct) + 1.0)


def anneal_linear(start, end, pct, xp=NumpyOps):
    """Straight line from `start` at pct=0 to `end` at pct=1."""
    return (end - start) * pct + start


ANNEALS = {"cos": anneal_cos, "linear": anneal_linear}


def piecewise(step, ends, values, anneal, xp=NumpyOps):
    """Anneal between `values` over phases that end at the steps `ends`.

    Phase i runs from `ends[i-1]` (0 for the first) to `ends[i]` and goes from
    `values[i]` to `values[i+1]`; a step belongs to the first phase whose end
    it does not pass, and steps past the last end stay in the last phase. A
    phase of zero length jumps straight to its end value.
    """
    x = xp.to_float(step)
    starts = [0.0] + list(ends[:-1])
    result = None
    for i in reversed(range(len(ends))):
        length = ends[i] - starts[i]
        pct = (x - starts[i]) / length if length > 0 else 1.0 + 0.0 * x
        value = anneal(values[i], values[i + 1], pct, xp)
        result = value if result is None else xp.where(x <= ends[i], value, result)
    return result


# The momentum range the one-cycle and warmup-stable-decay schedules (and
# their callbacks) default to, PyTorch OneCycleLR's: BASE_MOMENTUM at the
# peak learning rate, MAX_MOMENTUM where the rate is low. The suggestions
# take BASE_MOMENTUM as the momentum `OneCycle` holds at its peak.
BASE_MOMENTUM = 0.85
MAX_MOMENTUM = 0.95
# The cyclical schedules' (CyclicLR's), PyTorch CyclicLR's.
CYCLIC_BASE_MOMENTUM = 0.8
CYCLIC_MAX_MOMENTUM = 0.9


def one_cycle_phases(total_steps, pct_start, three_phase):
    """Phase end steps of a one-cycle policy (the last one is total_steps - 1)."""
    first = float(pct_start * total_steps) - 1.0
    if three_phase:
        return [first, float(2 * pct_start * total_steps) - 2.0, total_steps - 1.0]
    return [first, total_steps - 1.0]


def one_cycle(
    step, total_steps, start, peak, end, pct_start=0.3, anneal="cos", three_phase=False, xp=NumpyOps
):
    """One-cycle value at `step`: `start` up to `peak`, then down to `end`.

    With `three_phase`, the value first comes back to `start` symmetrically
    and only then anneals to `end`. Steps at or past `total_steps` hold the
    value of the last step, `end`.
    """
    ends = one_cycle_phases(total_steps, pct_start, three_phase)
    values = [start, peak, start, end] if three_phase else [start, peak, end]
    step = xp.minimum(step, total_steps - 1)
    return piecewise(step, ends, values, ANNEALS[anneal], xp)


def range_test(step, start, end, num_steps, step_mode="exp", xp=NumpyOps):
    """Learning rate of a range test at `step`, from `start` to `end` inclusive.

    `"exp"` spaces the rates evenly in log space, `"linear"` evenly; step
    `num_steps - 1` is `end` and later steps hold it.
    """
    pct = xp.to_float(xp.minimum(step, num_steps - 1)) / max(num_steps - 1, 1)
    if step_mode == "exp":
        return start * xp.power(end / start, pct)
    return start + (end - start) * pct


# Warm-up and cooldown shapes of the warmup-stable-decay schedule: progress
# p in [0, 1] -> height in [0, 1], rising (warm-up) or falling (cooldown).
WARMUPS = {
    "linear": lambda p, xp: p,
    "cosine": lambda p, xp: 0.5 * (1.0 - xp.cos(math.pi * p)),
    "1-sqrt": lambda p, xp: 1.0 - xp.sqrt(1.0 - p),
}
DECAYS = {
    "linear": lambda p, xp: 1.0 - p,
    "cosine": lambda p, xp: 0.5 * (1.0 + xp.cos(math.pi * p)),
    "1-sqrt": lambda p, xp: 1.0 - xp.sqrt(p),
}


def warmup_stable_decay(
    step,
    warmup_steps,
    decay_start,
    decay_steps,
    low,
    high,
    warmup_type="linear",
    decay_type="1-sqrt",
    xp=NumpyOps,
):
    """Warmup-stable-decay value at `step`: `low` up to `high`, held, back to `low`.

    Steps before `warmup_steps` rise as `low + (high - low) * shape(step /
    warmup_steps)`; steps from there to `decay_start` hold `high`; the
    `decay_steps` steps from `decay_start` fall as `low + (high - low) *
    shape((step - decay_start) / decay_steps)`, and later steps hold `low`
    (first reached one step after the cooldown's last). With `decay_start`
    None the value holds `high` after the warm-up. This is transformers'
    `get_wsd_schedule` multiplier with low = `min_lr_ratio`, high = 1.
    """
    x = xp.to_float(step)
    span = high - low
    rising = xp.minimum(x / max(1, warmup_steps), 1.0)
    value = xp.where(
        x < warmup_steps, WARMUPS[warmup_type](rising, xp) * span + low, high + 0.0 * x
    )
    if decay_start is None:
        return value
    falling = xp.minimum(xp.maximum((x - decay_start) / max(1, decay_steps), 0.0), 1.0)
    cooling = DECAYS[decay_type](falling, xp) * span + low
    value = xp.where(
        x < decay_start, value, xp.where(x < decay_start + decay_steps, cooling, low + 0.0 * x)
    )
    return value
