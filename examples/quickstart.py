"""Quickstart: the learning-rate range test, then one-cycle training.

On scikit-learn's handwritten digits (8x8 images, 10 classes, shipped with
scikit-learn, so nothing is downloaded), with a small MLP:

1. `keras_clr.find_lr` runs the range test and puts the model back as it was;
2. `keras_clr.OneCycle` trains it with the suggested peak learning rate.

Run: python examples/quickstart.py --output DIR
Writes DIR/range_test.png and DIR/training.png.
"""

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
    args, out = example_args(__doc__, "quickstart", epochs=10)

    x_train, x_test, y_train, y_test = digits_split(seed=0)
    model = small_mlp()

    # 1. The range test; the model is restored afterwards.
    result = keras_clr.find_lr(model, x_train, y_train, batch_size=args.batch_size, verbose=0)
    print(result)
    ax = result.plot()
    ax.figure.savefig(out / "range_test.png", dpi=110, bbox_inches="tight")
    max_lr = result.suggest() or 0.1  # None (with a warning) if the curve has no descent

    # 2. One cycle at the suggested peak; SGD momentum cycles 0.95 -> 0.85 -> 0.95.
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[keras_clr.OneCycle(max_lr)],
    )
    h = history.history
    print(
        f"OneCycle(max_lr={max_lr:.3g}), {args.epochs} epochs: "
        f"test accuracy {h['val_accuracy'][-1]:.4f}"
    )

    fig, (acc_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = range(1, len(h["loss"]) + 1)
    acc_ax.plot(epochs, h["accuracy"], label="train")
    acc_ax.plot(epochs, h["val_accuracy"], label="test")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    acc_ax.legend()
    lr_ax.plot(epochs, h["learning_rate"], "o-")
    lr_ax.set(
        xlabel="epoch", ylabel="learning rate", title="learning rate at the end of each epoch"
    )
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=110)
    print(f"wrote {out / 'range_test.png'} and {out / 'training.png'}")


if __name__ == "__main__":
    main()
