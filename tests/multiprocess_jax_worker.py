"""One process of tests/test_multiprocess_jax.py (not collected by pytest).

    python multiprocess_jax_worker.py OUT --process-id I --port P   # of two
    python multiprocess_jax_worker.py OUT                           # alone

Under KERAS_BACKEND=jax on host CPUs. With `--process-id` the process joins
a two-process JAX cluster whose coordinator listens on 127.0.0.1:P; either
way it trains under `keras.distribution.DataParallel` over every device of
the cluster, runs `find_lr`, a `OneCycle` fit and a `CyclicLR` fit, and
saves what it saw in OUT/result_<tag>.npz (tag p0, p1 or single). With
`--process-id` it also writes the range test's files into OUT/shared.

Keras 3.15 feeds the processes in one of two ways, and the worker tests both:

- A `tf.data.Dataset` under `DataParallel(auto_shard_dataset=True)` (the
  default): every process passes the same global dataset, batched by the
  global batch size; `Distribution.distribute_dataset` rebatches it to the
  per-process size and shards it, so process i trains on the i-th slice
  of each global batch.
- NumPy arrays (or any other data) only under `auto_shard_dataset=False`
  (with it on, `fit` raises "When using a multi-worker distribution with
  auto-sharding enabled, the data must be provided as a `tf.data.Dataset`
  instance"): each batch a process makes goes to
  `jax.make_array_from_process_local_data` as that process's share of the
  global batch. So each process passes its own rows and the per-process
  `batch_size`: global batch k is process 0's batch k followed by process
  1's.

The run alone trains on the global arrays (or the same dataset) with the
global batch size, over 4 host devices as the cluster has.
"""

import argparse
import os
import pathlib

SAMPLES, FEATURES, UNITS = 64, 8, 4
GLOBAL_BATCH = 16
NUM_PROCESSES = 2


def global_data():
    """The same global arrays in every process, from a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    y = (x @ rng.normal(size=(FEATURES, UNITS)) + 0.1).astype("float32")
    kernel = (0.1 * rng.normal(size=(FEATURES, UNITS))).astype("float32")
    return x, y, [kernel, np.zeros(UNITS, "float32")]


def local_share(x, y, process_id):
    """This process's rows of each global batch, in batch order."""
    import numpy as np

    local = GLOBAL_BATCH // NUM_PROCESSES
    rows = np.concatenate(
        [
            np.arange(start + process_id * local, start + (process_id + 1) * local)
            for start in range(0, SAMPLES, GLOBAL_BATCH)
        ]
    )
    return x[rows], y[rows], local


def bind_collectives_to_loopback():
    """The CPU collectives (Gloo over TCP) listen on 127.0.0.1 only.

    JAX makes them with the address its host name resolves to, which on a
    machine with a network is reachable from outside; the test is to use
    nothing but the loopback interface. Checked on JAX 0.10.2.
    """
    from jax._src import xla_bridge

    make = xla_bridge._jax.make_gloo_tcp_collectives

    def on_loopback(distributed_client, **kwargs):
        return make(distributed_client=distributed_client, hostname="127.0.0.1")

    xla_bridge._jax.make_gloo_tcp_collectives = on_loopback


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()

    import jax

    if args.process_id is not None:
        address = f"127.0.0.1:{args.port}"
        bind_collectives_to_loopback()
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=NUM_PROCESSES,
            process_id=args.process_id,
            coordinator_bind_address=address,
            initialization_timeout=60,
        )
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_clr

    keras.utils.set_random_seed(0)
    # Arrays, already split between the processes (see the module docstring).
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    )
    x, y, initial = global_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    batch_size = GLOBAL_BATCH
    if args.process_id is not None:
        x, y, batch_size = local_share(x, y, args.process_id)
    tag = "single" if args.process_id is None else f"p{args.process_id}"
    saved = {
        "process_index": jax.process_index(),
        "global_devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
    }

    def make_model():
        model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(UNITS)])
        model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
        return model

    def state_bytes(model):
        """Every model, optimizer and metric variable's bytes, end to end."""
        variables = model.variables + model.optimizer.variables + model.metrics_variables
        return np.frombuffer(
            b"".join(keras.ops.convert_to_numpy(v).tobytes() for v in variables), dtype=np.uint8
        )

    def state_values(model):
        """The model's and optimizer's variables as one float64 vector."""
        return np.concatenate(
            [
                keras.ops.convert_to_numpy(v).astype(np.float64).ravel()
                for v in model.variables + model.optimizer.variables
            ]
        )

    # The range test, from a trained state (momentum slots and counters not zero).
    model = make_model()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    before = state_bytes(model)
    result = keras_clr.find_lr(
        model,
        x,
        y,
        batch_size=batch_size,
        start_lr=1e-4,
        end_lr=1.0,
        num_steps=20,
        stop_factor=None,
        verbose=0,
        shuffle=False,
    )
    saved.update(
        find_before=before,
        find_after=state_bytes(model),
        find_lrs=result.lrs,
        find_losses=result.losses,
        find_stop=result.stop_reason,
    )

    # A global tf.data.Dataset, which Keras shards between the processes.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    model = make_model()
    # Keras does not know the length of the sharded dataset: steps_per_epoch
    # keeps it from warning that the data ran out.
    model.fit(dataset, epochs=1, steps_per_epoch=SAMPLES // GLOBAL_BATCH, shuffle=False, verbose=0)
    before = state_bytes(model)
    sharded = keras_clr.find_lr(
        model, dataset, start_lr=1e-4, end_lr=1.0, num_steps=20, stop_factor=None, verbose=0
    )
    saved.update(
        dataset_before=before,
        dataset_after=state_bytes(model),
        dataset_lrs=sharded.lrs,
        dataset_losses=sharded.losses,
    )
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    )

    if args.process_id is not None:
        # The same paths in both processes, and one named for each process.
        shared = args.out / "shared"
        shared.mkdir(exist_ok=True)
        for stem in ("range", f"range_p{args.process_id}"):
            result.to_csv(shared / f"{stem}.csv")
            result.to_json(shared / f"{stem}.json")
        saved["tensorboard_returns"] = [
            result.to_tensorboard(shared / name) for name in ("tb", f"tb_p{args.process_id}")
        ]

    # The schedules: what each step applied, as logged and as the optimizer holds it.
    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []

        def on_train_batch_end(self, batch, logs=None):
            applied = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            self.rows.append(
                [
                    float(logs["learning_rate"]),
                    float(logs["momentum"]),
                    float(applied),
                    float(logs["loss"]),
                ]
            )

    schedules = {
        "one_cycle": keras_clr.OneCycle(0.1, cycle_momentum=True),
        "cyclic": keras_clr.CyclicLR(
            0.01, 0.1, step_size_up=3, step_size_down=2, cycle_momentum=True
        ),
    }
    for name, callback in schedules.items():
        model, record = make_model(), Record()
        model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[callback, record],
        )
        saved[f"{name}_rows"] = np.array(record.rows)
        saved[f"{name}_state"] = state_bytes(model)
        saved[f"{name}_values"] = state_values(model)

    # OneCycle on the global dataset, sharded by Keras (README "Several hosts"):
    # its length is unknown once sharded, so it repeats with steps_per_epoch.
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
    model, record = make_model(), Record()
    model.fit(
        dataset.repeat(),
        epochs=2,
        steps_per_epoch=SAMPLES // GLOBAL_BATCH,
        verbose=0,
        callbacks=[keras_clr.OneCycle(0.1, cycle_momentum=True), record],
    )
    saved["one_cycle_dataset_rows"] = np.array(record.rows)
    saved["one_cycle_dataset_state"] = state_bytes(model)
    saved["one_cycle_dataset_values"] = state_values(model)

    np.savez(args.out / f"result_{tag}.npz", **saved)
    if args.process_id is not None:
        jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
