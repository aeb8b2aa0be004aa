"""The data kinds and `fit` options the range test plans its steps on.

One dispatch over arrays (and dicts and lists of them), `tf.data`,
generators, `keras.utils.PyDataset` and torch DataLoaders: check them,
plan the epochs from the samples trained on, reorder arrays (with their
sample weights) for repeats, and build a model on its first batch.
"""

import math
import sys

import keras
import numpy as np

from keras_clr import _backend


def is_tf_dataset(data):
    """Whether `data` is a tf.data.Dataset (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def take_batches(data, steps, batch_size):
    """The first `steps` batches of validation data, kept for reuse."""
    if is_tf_dataset(data):
        return (data.take(steps).cache(),)
    if isinstance(data, (tuple, list)):
        count = steps * batch_size
        return tuple(part[:count] for part in data[:2])
    if isinstance(data, keras.utils.PyDataset):
        batches = [data[i] for i in range(min(steps, len(data)))]
        xs = np.concatenate([b[0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        return (xs, ys)
    raise ValueError(
        "Argument `validation_data` must be a tuple (x, y), a tf.data.Dataset "
        f"or a keras.utils.PyDataset. Received: validation_data={type(data).__name__}"
    )


def repeating(generator):
    """Replays a generator's batches once it runs out."""
    seen = []
    for batch in generator:
        seen.append(batch)
        yield batch
    if not seen:
        return
    while True:
        yield from seen


def is_torch_loader(data):
    """Whether `data` is a torch.utils.data.DataLoader (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(data, torch.utils.data.DataLoader)


def is_arrays(data):
    """Arrays as `fit` takes them: an array, or a dict, list or tuple of them."""
    if isinstance(data, dict):
        return bool(data) and all(is_arrays(v) for v in data.values())
    if isinstance(data, (list, tuple)):
        return bool(data) and all(is_arrays(v) for v in data)
    return (
        hasattr(data, "shape")
        and hasattr(data, "__len__")
        and len(data.shape) > 0
        and len(data) > 0
    )


def check_data(x):
    """ValueError unless `x` is data the range test can plan steps on."""
    if is_tf_dataset(x) and int(x.cardinality()) == 0:
        raise ValueError(
            "Argument `x` must hold at least one batch. Received: x=an empty tf.data.Dataset"
        )
    if (
        is_tf_dataset(x)
        or isinstance(x, keras.utils.PyDataset)
        or hasattr(x, "__next__")
        or is_torch_loader(x)
        or is_arrays(x)
    ):
        return
    raise ValueError(
        "Argument `x` must be training data as `fit` takes it: NumPy arrays (or "
        "a dict or list of them), a tf.data.Dataset, a keras.utils.PyDataset, a "
        "Python generator or, on the PyTorch backend, a torch DataLoader, with "
        f"at least one sample. Received: x={_describe(x)}"
    )


def _describe(x):
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)}" if shape is not None else type(x).__name__


def batches_per_epoch(x, batch_size, validation_split=0.0):
    """The batches of one epoch of `x` as `fit` trains on it (what
    `validation_split` leaves), or None where the data has no length."""
    if is_tf_dataset(x):
        count = int(x.cardinality())
        return count if count > 0 else None
    if isinstance(x, keras.utils.PyDataset) or is_torch_loader(x):
        return len(x)
    if not is_arrays(x):
        return None
    first = x[0] if isinstance(x, (list, tuple)) else x
    if isinstance(first, dict):
        first = next(iter(first.values()))
    # As Keras splits (`train_validation_split`): the first
    # floor(n x (1 - split)) samples train.
    trained = int(math.floor(len(first) * (1.0 - (validation_split or 0.0))))
    return math.ceil(trained / (batch_size or 32))


def fit_plan(model, x, batch_size, num_steps, validation_split=0.0):
    """(x, epochs, steps_per_epoch) that give at least `num_steps` steps of
    the data trained on (what `validation_split` leaves for training)."""
    if is_tf_dataset(x):
        return x.repeat(), 1, num_steps
    if hasattr(x, "__next__"):
        return repeating(x), 1, num_steps
    per_epoch = batches_per_epoch(x, batch_size, validation_split)
    return x, math.ceil(num_steps / max(per_epoch, 1)), None


def ensure_built(model, x, batch_size):
    """Builds a model that has no weights yet on one batch of `x`, so that
    its initial weights are in the snapshot; returns `x` (a generator is
    rewound by putting the batch it gave back in front)."""
    import itertools

    if model.built or x is None:
        return x
    if is_tf_dataset(x):
        batch = next(iter(x.take(1)))
    elif isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif is_torch_loader(x):
        batch = tuple(next(iter(x)))
    elif hasattr(x, "__next__"):
        batch = next(x)
        x = itertools.chain([batch], x)
    else:
        batch = (slice_samples(x, 0, batch_size or 32),)
    with _backend.strategy_scope(model):
        model(batch[0] if isinstance(batch, tuple) else batch, training=False)
    return x


def slice_samples(data, start, stop):
    """Samples `start:stop` of `data` (an array, or a dict, list or tuple of them)."""
    if isinstance(data, dict):
        return {k: v[start:stop] for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(v[start:stop] for v in data)
    return data[start:stop]


def reordered(x, y, seed, sample_weight=None, validation_split=None):
    """The same arrays, and their sample weights, in another order (each
    repeat of a test sees its own): (x, y, sample_weight). The samples
    `validation_split` holds out (the last ones) stay where they are."""
    first = x[0] if isinstance(x, (list, tuple)) else x
    if isinstance(first, dict):
        first = next(iter(first.values()))
    count = len(first)
    trained = int(math.floor(count * (1.0 - (validation_split or 0.0))))  # as Keras splits
    order = np.concatenate(
        [np.random.default_rng(seed).permutation(trained), np.arange(trained, count)]
    )
    return take(x, order), take(y, order), take(sample_weight, order)


def take(data, index):
    """`data` (an array, or a dict, list or tuple of them; or None) at `index`."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: np.asarray(v)[index] for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(np.asarray(v)[index] for v in data)
    return np.asarray(data)[index]
