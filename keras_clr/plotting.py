"""Every matplotlib drawing in keras_clr. Each function draws on the Axes it
is given (or a new figure), returns the Axes and never calls `plt.show()`."""


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(7, 4))
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
    ax.plot(frame["step"], frame["learning_rate"], color="tab:blue",
            label="learning rate")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate", color="tab:blue")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if frame["momentum"].notna().any():
        twin = ax.twinx()
        twin.plot(frame["step"], frame["momentum"], color="tab:orange",
                  linestyle="--", label="momentum")
        twin.set_ylabel("momentum", color="tab:orange")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax
