"""`keras_clr.schedules` passed to an optimizer as its learning rate.

Without the callbacks: the schedule is the optimizer's `learning_rate`, as
with any Keras `LearningRateSchedule` (or TF-Addons' cyclical schedules,
whose arguments these take). The momentum stays fixed this way; use the
`OneCycle` / `CyclicLR` callbacks to cycle it too. The schedules are
registered, so a compiled model saves to `.keras` and loads back in safe mode
with its schedule and step count. Data: scikit-learn's digits (offline).

Run: python examples/schedule_as_optimizer_lr.py --output DIR
Writes DIR/schedules_preview.png and the saved models DIR/*.keras.
"""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_clr import schedules  # noqa: E402
from digits_task import digits_split  # noqa: E402
from digits_task import example_args  # noqa: E402


def main():
    args, out = example_args(__doc__, "schedule_as_optimizer_lr", epochs=8)

    x_train, x_test, y_train, y_test = digits_split(seed=0)
    total_steps = args.epochs * math.ceil(len(x_train) / args.batch_size)
    candidates = {
        "one_cycle": schedules.OneCycleLearningRate(0.1, total_steps=total_steps),
        "triangular2": schedules.Triangular2CyclicalLearningRate(
            initial_learning_rate=1e-3,
            maximal_learning_rate=0.1,
            step_size=max(1, total_steps // 6),
        ),
    }

    fig, ax = plt.subplots(figsize=(8, 4))
    steps = np.arange(total_steps)
    for name, schedule in candidates.items():
        ax.plot(steps, schedule(steps), label=type(schedule).__name__)  # host preview, float64

        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]
        )
        model.compile(
            keras.optimizers.SGD(learning_rate=schedule, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
        path = out / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # safe mode: no custom_objects needed
        step = int(loaded.optimizer.iterations)
        saved = loaded.optimizer.get_config()["learning_rate"]
        print(
            f"{name}: saved and loaded {saved['class_name']} at step {step}, "
            f"lr {float(loaded.optimizer.learning_rate):.3g} "
            f"(schedule({step}) = {schedule(step):.3g}), "
            f"test accuracy {loaded.evaluate(x_test, y_test, verbose=0)[1]:.4f}"
        )
        ax.plot([step], [schedule(step)], "ko")

    ax.set(
        xlabel="step",
        ylabel="learning rate",
        title="keras_clr.schedules as the optimizer's learning_rate (dot: step when saved)",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "schedules_preview.png", dpi=110)
    print(f"wrote {out / 'schedules_preview.png'}")


if __name__ == "__main__":
    main()
