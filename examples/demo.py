"""keras_clr demo: range test, then one-cycle training, offline.

Data: scikit-learn's handwritten digits (8x8 images, 10 classes), which ship
with scikit-learn, so nothing is downloaded.

Steps:
1. `find_lr` runs the learning-rate range test on a fresh MLP and restores
   it; its plot and CSV are saved.
2. `OneCycle` trains the model with the suggested peak learning rate and
   SGD momentum cycled inversely.
3. The schedule preview, the training curves and the per-step learning rate
   and momentum are saved; the test accuracy is printed.

Run: `make demo` (or `python examples/demo.py --output DIR`).
"""

import argparse
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_clr  # noqa: E402


def load_data(seed):
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    return train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )


def build_model():
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def plot_history(history, path):
    fig, (acc_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    acc_ax.plot(epochs, history["accuracy"], label="train accuracy")
    acc_ax.plot(epochs, history["val_accuracy"], label="test accuracy")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend()
    acc_ax.grid(alpha=0.3)
    lr_ax.plot(epochs, history["learning_rate"], label="learning rate (end of epoch)")
    lr_ax.set_xlabel("epoch")
    lr_ax.set_ylabel("learning rate")
    twin = lr_ax.twinx()
    twin.plot(epochs, history["momentum"], color="tab:orange", linestyle="--", label="momentum")
    twin.set_ylabel("momentum")
    lr_ax.set_title("values in force, from History")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="keras_clr_demo_output")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    x_train, x_test, y_train, y_test = load_data(args.seed)
    model = build_model()

    result = keras_clr.find_lr(
        model, x_train, y_train, batch_size=args.batch_size, num_steps=200, verbose=0
    )
    print(repr(result))
    ax = result.plot()
    ax.figure.savefig(out / "range_test.png", dpi=110)
    plt.close(ax.figure)
    result.to_csv(out / "range_test.csv")
    max_lr = result.suggest()
    if max_lr is None:
        max_lr = 0.1
        print(f"No suggestion ({result.explain()}); using max_lr={max_lr}")

    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    one_cycle = keras_clr.OneCycle(max_lr, total_steps=args.epochs * steps_per_epoch)
    ax = one_cycle.plot()
    ax.figure.savefig(out / "schedule.png", dpi=110)
    plt.close(ax.figure)
    one_cycle.to_frame().to_csv(out / "schedule_per_step.csv", index=False)

    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        callbacks=[one_cycle],
        verbose=2,
    )
    plot_history(history.history, out / "training_curves.png")
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"OneCycle with max_lr={max_lr:.3g}: test accuracy {accuracy:.4f}")
    for name in (
        "range_test.png",
        "range_test.csv",
        "schedule.png",
        "schedule_per_step.csv",
        "training_curves.png",
    ):
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
