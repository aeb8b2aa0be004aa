"""Fine-tuning a keras.applications model: one rate against discriminative rates.

Needs Keras 3.15 or later (`keras.optimizers.MultiOptimizer`).

A `keras.applications.MobileNet` body (`weights=None`, so nothing is
downloaded; width 0.25, 32x32 inputs) is pre-trained here on scikit-learn's
handwritten digits 0-4 (8x8 images, upsampled), then fine-tuned on digits
5-9, a related task, from the same pre-trained weights in two ways:

1. one rate for every layer: `keras_clr.fit_one_cycle(max_lr="auto")`;
2. `keras_clr.fine_tune`: the new head alone for an epoch, then every layer
   with discriminative rates (the body at a hundredth of the head's, as
   fastai's `fine_tune` spreads them), each stage's rate tuned.

Both train for the same number of epochs in all.

Run: python examples/fine_tuning.py --output DIR
Writes DIR/fine_tuning.png.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_clr  # noqa: E402
from digits_task import digits_split  # noqa: E402
from digits_task import example_args  # noqa: E402


def images(x):
    """8x8 digits as 32x32x3 images, as MobileNet takes them."""
    x = x.reshape(-1, 8, 8, 1)
    return np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3)


def build(body_weights=None):
    """MobileNet body (a nested model: one group) and a new 5-class head."""
    body = keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None, pooling="avg"
    )
    for layer in body.layers:
        # Keras's BatchNormalization keeps 99% of its moving statistics a
        # step: after the few hundred steps here they would still be mostly
        # their initial values, and the model useless in inference.
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    if body_weights is not None:
        body.set_weights(body_weights)
    model = keras.Sequential([keras.Input((32, 32, 3)), body, keras.layers.Dense(5, name="head")])
    model.compile(
        keras.optimizers.SGD(momentum=0.9),
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def main():
    args, out = example_args(
        __doc__,
        "fine_tuning",
        epochs=4,
        extra=[
            ("--pretrain-epochs", {"type": int, "default": 6}),
            (
                "--budget-steps",
                {"type": int, "default": 400, "help": "tune_max_lr's steps for each rate it tunes"},
            ),
        ],
    )
    if not hasattr(keras.optimizers, "MultiOptimizer"):
        raise SystemExit(f"this example needs Keras 3.15 or later (keras {keras.__version__})")
    x_train, x_test, y_train, y_test = digits_split(seed=0)
    x_train, x_test = images(x_train), images(x_test)
    first, second = y_train < 5, y_train >= 5
    test = y_test >= 5

    # Pre-training on digits 0-4.
    pretrained = build()
    pretrained.fit(
        x_train[first],
        y_train[first],
        batch_size=args.batch_size,
        epochs=args.pretrain_epochs,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.05)],
    )
    body_weights = pretrained.layers[0].get_weights()
    data = (x_train[second], y_train[second] - 5)
    validation = (x_test[test], y_test[test] - 5)

    # 1. One rate for every layer.
    keras.utils.set_random_seed(1)
    one = build(body_weights)
    one_history = keras_clr.fit_one_cycle(
        one,
        *data,
        batch_size=args.batch_size,
        epochs=args.epochs,
        max_lr="auto",
        verbose=0,
        budget_steps=args.budget_steps,
        validation_data=validation,
    )
    one_rate = one_history.max_lr_search.max_lr
    print(
        f"one rate (max_lr {one_rate:.3g}), {args.epochs} epochs: test accuracy "
        f"{one_history.history['val_accuracy'][-1]:.4f}"
    )

    # 2. The head first, then discriminative rates.
    keras.utils.set_random_seed(1)
    tuned = build(body_weights)
    stages = keras_clr.fine_tune(
        tuned,
        *data,
        batch_size=args.batch_size,
        freeze_epochs=1,
        epochs=args.epochs - 1,
        max_lr="auto",
        verbose=0,
        budget_steps=args.budget_steps,
        validation_data=validation,
    )
    groups = [(sub.name, float(sub.learning_rate.numpy())) for sub in tuned.optimizer.optimizers]
    print(
        f"fine_tune (1 epoch of the head, {args.epochs - 1} of every layer): test "
        f"accuracy {stages.unfrozen.history['val_accuracy'][-1]:.4f}; the groups' rates "
        "at the end: " + ", ".join(f"{name} {rate:.3g}" for name, rate in groups)
    )

    fig, (acc_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    acc_ax.plot(
        range(1, args.epochs + 1), one_history.history["val_accuracy"], "o-", label="one rate"
    )
    tuned_acc = stages.frozen.history["val_accuracy"] + stages.unfrozen.history["val_accuracy"]
    acc_ax.plot(range(1, len(tuned_acc) + 1), tuned_acc, "o-", label="fine_tune")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="digits 5-9, fine-tuned")
    acc_ax.legend()
    keys = [k for k in stages.unfrozen.history if k.startswith("learning_rate_")]
    for key in keys:
        lr_ax.plot(stages.unfrozen.history[key], "o-", label=key)
    lr_ax.set(
        xlabel="epoch of stage 2",
        ylabel="learning rate",
        yscale="log",
        title="each group's rate at the end of each epoch",
    )
    lr_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fine_tuning.png", dpi=110)
    print(f"wrote {out / 'fine_tuning.png'}")


if __name__ == "__main__":
    main()
