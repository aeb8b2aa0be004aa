"""Writing a learning-rate range test to TensorBoard with `tf.summary`."""

import io
import os

from keras_clr import _backend


def write_range_test(result, log_dir, name="lr_finder"):
    """Write a range test's curves and plot as TensorBoard summaries.

    Scalars `{name}/lr`, `{name}/loss`, `{name}/smoothed_loss`, one
    `{name}/<metric>` per metric (and `{name}/loss_low`, `{name}/loss_high`
    for a band), each at the step of the test it was measured at
    (`result.steps`: 0, 1, 2, ..., or every `val_every`-th step for a
    validation monitor); and the figure of
    `keras_clr.plotting.plot_range_test` as the image `{name}/plot` at the
    last one.

    In a multi-process training (JAX after `jax.distributed.initialize`)
    only process 0 writes; the others check `name` and return `log_dir`
    without creating a file, so that one event file holds the summaries.

    Args:
        result: an `LRFinderResult`.
        log_dir: the directory for the event file.
        name: the tag prefix.

    Returns:
        `log_dir`, as a string.

    Raises:
        ValueError: if `name` is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Argument `name` must be a non-empty string. Received: name={name!r}")
    log_dir = os.fspath(log_dir)
    if _backend.process_index() != 0:
        return log_dir
    import tensorflow as tf
    from matplotlib.figure import Figure

    from keras_clr import plotting

    figure = Figure(figsize=(8, 4.5))
    plotting.plot_range_test(result, ax=figure.subplots())
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    image = tf.image.decode_png(png.getvalue(), channels=4)[tf.newaxis]

    series = {"lr": result.lrs, "loss": result.losses, "smoothed_loss": result.smoothed_losses}
    series.update(result.metrics)
    if result.loss_band is not None:
        series["loss_low"], series["loss_high"] = result.loss_band
    writer = tf.summary.create_file_writer(log_dir)
    try:
        with writer.as_default():
            for tag, values in series.items():
                for step, value in zip(result.steps.tolist(), values.tolist()):
                    tf.summary.scalar(f"{name}/{tag}", value, step=step)
            last = int(result.steps[-1]) if len(result.steps) else 0
            tf.summary.image(f"{name}/plot", image, step=last)
        writer.flush()
    finally:
        writer.close()
    return log_dir
