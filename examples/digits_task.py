"""The small offline task the example scripts share: scikit-learn's
handwritten digits (8x8 images, 10 classes, shipped with scikit-learn, so
nothing is downloaded) and a small MLP for them."""

import argparse
import pathlib

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits_split(seed=0):
    """(x_train, x_test, y_train, y_test): pixels scaled to [0, 1]."""
    digits = load_digits()
    return train_test_split(
        digits.data.astype("float32") / 16.0, digits.target, test_size=0.25, random_state=seed
    )


def small_mlp(optimizer=None, hidden=64):
    """A compiled 64-`hidden`-10 MLP (SGD with momentum 0.9 by default)."""
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer or keras.optimizers.SGD(momentum=0.9),
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def example_args(doc, name, epochs, extra=()):
    """Parses an example's command line (--output, --epochs, --batch-size and
    `extra` (flag, kwargs) pairs), makes the output folder and seeds Keras.

    Returns:
        (args, output folder as a pathlib.Path).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--output", default=f"outputs/{name}")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=32)
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args()
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    return args, out
