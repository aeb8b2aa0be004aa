"""TensorBoard logging: the range test, then per-step learning rate and momentum.

`result.to_tensorboard` writes the range-test curve and plot as its own run;
`OneCycle` puts `learning_rate` and `momentum` into every step's logs, so
`keras.callbacks.TensorBoard(update_freq="batch")`, placed after it, records
them per step next to the usual per-epoch metrics. The script then reads the
event files back and prints which tags each run holds. Data: scikit-learn's
digits (offline).

Run: python examples/tensorboard_logging.py --output DIR
     tensorboard --logdir DIR/logs
Writes DIR/logs/{lr_finder,train,validation} and DIR/tensorboard_scalars.png
(the per-step learning rate and momentum, as read back from the logs).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402

import keras_clr  # noqa: E402
from digits_task import digits_split  # noqa: E402
from digits_task import example_args  # noqa: E402
from digits_task import small_mlp  # noqa: E402


def main():
    args, out = example_args(__doc__, "tensorboard_logging", epochs=5)
    log_dir = out / "logs"

    x_train, x_test, y_train, y_test = digits_split(seed=0)
    model = small_mlp()

    result = keras_clr.find_lr(model, x_train, y_train, batch_size=args.batch_size, verbose=0)
    result.to_tensorboard(log_dir / "lr_finder")
    callbacks = [
        keras_clr.OneCycle(result.suggest() or 0.1),
        keras.callbacks.TensorBoard(str(log_dir), update_freq="batch", write_graph=False),
    ]
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=callbacks,
    )

    # Read the event files back.
    runs = {}
    for run in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        events = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
        runs[run.name] = events
        print(f"{run.name}:")
        for tag in sorted(events.Tags()["tensors"]):
            plugin = events.SummaryMetadata(tag).plugin_data.plugin_name
            print(f"  {tag:28s} {plugin:8s} {len(events.Tensors(tag))} values")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, tag in zip(axes, ("batch_learning_rate", "batch_momentum")):
        records = runs["train"].Tensors(tag)
        ax.plot([r.step for r in records], [float(make_ndarray(r.tensor_proto)) for r in records])
        ax.set(xlabel="step", title=f"train/{tag}, read back from the event file")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "tensorboard_scalars.png", dpi=110)
    print(f"wrote {out / 'tensorboard_scalars.png'}; view with: tensorboard --logdir {log_dir}")


if __name__ == "__main__":
    main()
