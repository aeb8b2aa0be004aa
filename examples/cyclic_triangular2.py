"""CyclicLR in "triangular2" mode, with bounds from the range test.

`result.suggest_range()` reads (base_lr, max_lr) off the range-test curve
(Smith 2017, section 3.3: from where the loss starts to fall to where it
stops falling or turns ragged). `CyclicLR(mode="triangular2")` then cycles
between them, halving the height of each cycle; momentum cycles inversely.
Data: scikit-learn's digits (offline).

Run: python examples/cyclic_triangular2.py --output DIR
Writes DIR/cyclic_triangular2.png (range test, schedule, accuracy).
"""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt  # noqa: E402

import keras_clr  # noqa: E402
from digits_task import digits_split  # noqa: E402
from digits_task import example_args  # noqa: E402
from digits_task import small_mlp  # noqa: E402


def main():
    args, out = example_args(
        __doc__,
        "cyclic_triangular2",
        epochs=12,
        extra=[("--epochs-per-half-cycle", dict(type=int, default=2))],
    )

    x_train, x_test, y_train, y_test = digits_split(seed=0)
    model = small_mlp()

    result = keras_clr.find_lr(model, x_train, y_train, batch_size=args.batch_size, verbose=0)
    base_lr, max_lr = result.suggest_range() or (1e-3, 1e-1)  # None if no descent
    print(result.explain("range"))

    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    step_size_up = args.epochs_per_half_cycle * steps_per_epoch  # Smith: 2-10 epochs
    clr = keras_clr.CyclicLR(base_lr, max_lr, step_size_up=step_size_up, mode="triangular2")
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[clr],
    )
    h = history.history
    print(
        f"CyclicLR({base_lr:.2g}, {max_lr:.2g}, step_size_up={step_size_up}, "
        f"mode='triangular2'): test accuracy {h['val_accuracy'][-1]:.4f}"
    )

    fig, (range_ax, schedule_ax, acc_ax) = plt.subplots(1, 3, figsize=(17, 4))
    result.plot(ax=range_ax)  # the green span is suggest_range()
    clr.plot(total_steps=args.epochs * steps_per_epoch, ax=schedule_ax)
    schedule_ax.set_title("CyclicLR, mode='triangular2'")
    epochs = range(1, len(h["loss"]) + 1)
    acc_ax.plot(epochs, h["accuracy"], label="train")
    acc_ax.plot(epochs, h["val_accuracy"], label="test")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    acc_ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cyclic_triangular2.png", dpi=110)
    print(f"wrote {out / 'cyclic_triangular2.png'}")


if __name__ == "__main__":
    main()
