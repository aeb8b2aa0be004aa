"""Every matplotlib drawing in keras_clr. Each function draws on the Axes it
is given (or a new figure), returns the Axes and never calls `plt.show()`."""


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    # A layout engine, so that a saved figure clips none of its labels.
    _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    return ax


def plot_schedule(frame, title=None, ax=None):
    """Learning rate against step, momentum on a twin axis.

    Args:
        frame: a DataFrame with `step`, `learning_rate` and `momentum` columns
            (`momentum` all NaN when it is not scheduled).
        title: the Axes title.
        ax: Axes to draw on, or None for a new figure.

    Returns:
        The Axes holding the learning rate.
    """
    ax = _axes(ax)
    ax.plot(frame["step"], frame["learning_rate"], color="tab:blue", label="learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if frame["momentum"].notna().any():
        twin = ax.twinx()
        twin.plot(
            frame["step"], frame["momentum"], color="tab:orange", linestyle="--", label="momentum"
        )
        twin.set_ylabel("momentum", color="tab:orange")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


_MARKERS = (  # suggestion method -> (label, marker, colour)
    ("one_cycle", "default", "*", "tab:red"),
    ("valley", "valley", "o", "tab:orange"),
    ("slide", "slide", "D", "tab:olive"),
    ("steep", "steep", "v", "tab:purple"),
    ("minimum", "minimum", "s", "tab:brown"),
)


def _robust_ylim(curves, mode, raw=None):
    """y-limits showing the valley: the divergence tail is cut at the larger
    of the curves' early level and their 80% quantile; the other end reaches
    the lowest curve value or the raw losses' 2% quantile. Mirrored for mode
    "max", where the tail falls."""
    import numpy as np

    sign = -1.0 if mode == "max" else 1.0
    finite = [sign * c[np.isfinite(c)] for c in curves]
    finite = [c for c in finite if c.size]
    if not finite:
        return None
    early = max(np.median(c[: max(1, c.size // 10)]) for c in finite)
    everything = np.concatenate(finite)
    low, high = everything.min(), everything.max()
    high = min(high, max(early, np.quantile(everything, 0.8)))
    if raw is not None and np.isfinite(raw).any():
        low = min(low, np.quantile(sign * raw[np.isfinite(raw)], 0.02))
    big = np.finfo(np.float64).max  # losses near it must not overflow the limits
    with np.errstate(over="ignore", invalid="ignore"):
        pad = 0.05 * high - 0.05 * low or 0.05 * abs(high) or 1.0
        low, high = np.clip([low - pad, high + pad], -big, big)
    if not low < high:
        return None
    return (low, high) if sign > 0 else (-high, -low)


def plot_range_test(result, ax=None, suggest=True, show_raw=True):
    """The LR range test: loss against learning rate on a log axis.

    Draws the smoothed curve over the faint raw one, the band of repeats if
    any, markers for the default, valley, steep and minimum suggestions that
    exist, and a shaded span for `suggest_range()`. The y-limits cut the
    divergence tail so the valley stays visible.

    Args:
        result: an `LRFinderResult`.
        ax: Axes to draw on, or None for a new figure.
        suggest: draw the suggestions.
        show_raw: draw the raw (unsmoothed) losses.

    Returns:
        The Axes.
    """
    import warnings

    import numpy as np

    ax = _axes(ax)
    lrs, smoothed = result.lrs, result.smoothed_losses
    run, planned = len(lrs), result.num_steps
    if show_raw:
        ax.plot(lrs, result.losses, color="tab:blue", alpha=0.25, linewidth=1, label="raw")
    if result.loss_band is not None:
        ax.fill_between(
            lrs,
            *result.loss_band,
            color="tab:blue",
            alpha=0.15,
            linewidth=0,
            label="band of repeats",
        )
    ax.plot(
        lrs,
        smoothed,
        color="tab:blue",
        linewidth=2,
        label="smoothed",
        marker="o" if run == 1 else None,
    )  # one point draws no line
    finite = np.isfinite(smoothed)
    if suggest and finite.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            span = result.suggest_range()
        if span is not None:
            ax.axvspan(
                *span,
                color="tab:green",
                alpha=0.12,
                label=f"CyclicLR range: {span[0]:.1e} to {span[1]:.1e}",
            )
        found = result.suggestions()
        log_lrs = np.log(lrs[finite])
        for method, label, marker, colour in _MARKERS:
            lr = found[method]
            if lr is not None:
                y = np.interp(np.log(lr), log_lrs, smoothed[finite])
                ax.plot(
                    [lr],
                    [y],
                    linestyle="none",
                    marker=marker,
                    color=colour,
                    markersize=12 if method == "one_cycle" else 8,
                    label=f"{label}: {lr:.1e}",
                )
    if run:
        ax.set_xscale("log")
    limits = _robust_ylim(
        [smoothed] + list(result.loss_band or ()),
        result.mode,
        raw=result.losses if show_raw else None,
    )
    if limits is not None:
        ax.set_ylim(*limits)
        _note_clipped(ax, result.losses if show_raw else smoothed, limits, result.monitor)
    else:
        ax.text(
            0.5,
            0.5,
            f"no finite {result.monitor} recorded",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    if run and (run == 1 or not finite.any()):
        # Around the rates tested, not matplotlib's default decade.
        ax.set_xlim(lrs.min() / 10**0.5, lrs.max() * 10**0.5)
    if run > 1 and np.any(np.diff(result.steps) > 1):
        steps = f"{run} points over {int(result.steps[-1]) + 1} of {planned} steps"
    else:
        steps = (
            f"{run} step{'s' if run != 1 else ''}"
            if run == planned
            else f"{run} of {planned} steps"
        )
    ax.set_title(f"LR range test: {steps}, stopped: {result.stop_reason}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(result.monitor)
    if finite.any():
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def _note_clipped(ax, values, limits, name):
    """Says in the plot when drawn values leave its y-range."""
    import numpy as np

    finite = values[np.isfinite(values)]
    low, high = limits
    above, below = finite[finite > high], finite[finite < low]
    notes = []
    if above.size:
        notes.append(f"{above.size} {name} value(s) above the plot (up to {above.max():.3g})")
    if below.size:
        notes.append(f"{below.size} below it (down to {below.min():.3g})")
    if notes:
        ax.text(
            0.01,
            0.99,
            "; ".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize="x-small",
            color="0.35",
        )


def plot_weight_decays(results, ax=None, best=None):
    """Smoothed range-test curves of a weight-decay sweep on one Axes.

    Args:
        results: a non-empty dict weight decay -> `LRFinderResult`.
        ax: Axes to draw on, or None for a new figure.
        best: the weight decay whose curve to draw bolder and label
            "(best)", or None.

    Returns:
        The Axes.

    Raises:
        ValueError: if `results` is empty or not a dict.
    """
    import matplotlib

    if not isinstance(results, dict) or not results:
        raise ValueError(
            "Argument `results` must be a non-empty dict weight decay -> "
            f"LRFinderResult. Received: results={results!r}"
        )
    ax = _axes(ax)
    colours = matplotlib.colormaps["viridis"]
    ordered = sorted(results.items(), key=lambda item: float(item[0]))
    for i, (weight_decay, result) in enumerate(ordered):
        chosen = best is not None and float(weight_decay) == float(best)
        # viridis up to green (its yellow end is faint on white); the best's
        # bold curve beneath the others, which stay visible where they meet it
        ax.plot(
            result.lrs,
            result.smoothed_losses,
            color=colours(0.8 * i / max(1, len(ordered) - 1)),
            linewidth=3 if chosen else 1.5,
            zorder=1.9 if chosen else 2,
            label=f"weight decay {float(weight_decay):g}{' (best)' if chosen else ''}",
        )
    if any(len(result.lrs) for _, result in ordered):
        ax.set_xscale("log")
    first = ordered[0][1]
    limits = _robust_ylim([r.smoothed_losses for _, r in ordered], first.mode)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_title("LR range test by weight decay")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"{first.monitor} (smoothed)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_max_lr_search(search, ax=None):
    """A `MaxLRSearch`: the range test's curve, and each probe's final loss
    at its `max_lr` on a twin axis, the chosen one marked.

    Returns:
        The Axes of the range test.
    """
    ax = _axes(ax)
    if search.range_test is not None and len(search.range_test.lrs):
        plot_range_test(search.range_test, ax=ax, suggest=False)
    twin = ax.twinx()
    rows = sorted(search.candidates, key=lambda row: row["max_lr"])
    rates = [row["max_lr"] for row in rows]
    losses = [row["loss"] for row in rows]
    twin.plot(
        rates,
        losses,
        color="tab:red",
        marker="o",
        linestyle=":",
        label="loss after each OneCycle probe",
    )
    if search.max_lr is not None:
        chosen = [row["loss"] for row in rows if row["max_lr"] == search.max_lr]
        twin.plot(
            [search.max_lr],
            chosen,
            color="tab:red",
            marker="*",
            markersize=16,
            linestyle="none",
            label=f"max_lr {search.max_lr:.2e}",
        )
    twin.set_ylabel("loss after a probe", color="tab:red")
    twin.legend(loc="center left", fontsize="small")
    ax.set_xscale("log")
    ax.set_title(
        f"tune_max_lr: {search.steps_used} steps, "
        f"max_lr {'none' if search.max_lr is None else f'{search.max_lr:.2e}'} "
        f"for {search.total_steps} steps"
    )
    return ax


def plot_max_lr_race(race, ax=None):
    """A `MaxLRRace`: each candidate's validation loss against the epoch,
    a cross where one was dropped, the winner's line thicker.

    Returns:
        The Axes.
    """
    ax = _axes(ax)
    for rate in race.candidates:
        curve = race.val_loss[rate]
        if not curve:
            continue
        epochs = range(1, len(curve) + 1)
        winner = rate == race.winner
        (line,) = ax.plot(
            epochs,
            curve,
            marker="o",
            markersize=3,
            linewidth=2.5 if winner else 1.0,
            label=f"max_lr {rate:.2e}" + (" (winner)" if winner else ""),
        )
        if rate in race.dropped:
            ax.plot(
                [len(curve)],
                [curve[-1]],
                marker="x",
                markersize=9,
                color=line.get_color(),
                linestyle="none",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_yscale(
        "log"
        if all(
            v > 0 for c in race.val_loss.values() for v in c if v == v and abs(v) != float("inf")
        )
        else "linear"
    )
    ax.legend(fontsize="small")
    ax.set_title(
        f"max_lr race: winner {race.winner:.2e}, {race.compute:.2f} trainings of compute"
        if race.winner is not None
        else "max_lr race"
    )
    return ax
