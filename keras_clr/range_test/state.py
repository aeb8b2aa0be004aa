"""Snapshot and restore of a model's and optimizer's variables, bit for bit.

The range test copies every variable to host memory when it begins (one
aligned copy per variable, read through DLPack where the backend allows) and
writes the copies back when it ends, whatever ends it.
"""

import keras
import numpy as np

from keras_clr import _backend
from keras_clr import _keras_internals


def build_optimizer(model):
    """Creates the optimizer's slots now, as its first update would, so that
    the snapshot holds them (their initial values) and restores them."""
    if not model.optimizer.built and model.built:
        _keras_internals.build_optimizer(model)


def _state_variables(model):
    """Every variable a training step can change, each once."""
    groups = [model.variables, model.optimizer.variables, model.metrics_variables]
    seen, variables = set(), []
    for variable in (v for group in groups for v in group):
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def float_variables(model):
    """The floating-point variables a step updates and the next step reads:
    the model's (trainable and not, such as batch-norm statistics) and the
    optimizer's, each once, in that order."""
    seen, found = set(), []
    for variable in (
        *model.trainable_variables,
        *model.non_trainable_variables,
        *model.optimizer.variables,
    ):
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if id(variable) not in seen and "float" in dtype:
            seen.add(id(variable))
            found.append(variable)
    return found


def first_nonfinite(variables):
    """The path of the first of `variables` holding a NaN or an inf, or
    None: one reduction per variable on the device, then one host read."""
    if not variables:
        return None
    finite = keras.ops.convert_to_numpy(
        keras.ops.stack([keras.ops.all(keras.ops.isfinite(v.value)) for v in variables])
    )
    bad = np.flatnonzero(~finite.astype(bool))
    if not len(bad):
        return None
    variable = variables[bad[0]]
    return getattr(variable, "path", None) or variable.name


def snapshot(model):
    """Host copies of every model, optimizer and metric variable, one each."""
    return [
        (part, _host_copy(part)) for v in _state_variables(model) for part in _backend.replicas(v)
    ]


def _host_copy(part):
    """A NumPy copy of a variable's value, in memory of its own.

    On TensorFlow's CPU the value is read through DLPack, straight from the
    variable's buffer (`np.array` would make a second, transient copy).
    Elsewhere (other backends, GPU buffers, dtypes NumPy lacks) NumPy
    converts it. The copy is 64-byte aligned, so TensorFlow takes it back
    without copying it again when `restore` assigns it.
    """
    source = _backend.host_view(part)
    if source is None:
        source = np.asarray(part)
    copy = _aligned_empty(source.shape, source.dtype)
    np.copyto(copy, source)
    return copy


# Arrays from this size on get pages of their own (see `_aligned_empty`).
_OWN_PAGES = 2**20


def _aligned_empty(shape, dtype, alignment=64):
    """An uninitialised array whose data starts on an `alignment` boundary.

    Large ones are mapped pages of their own rather than heap memory: they
    do not take the heap's free memory that the training steps go on to
    use, and go back to the system as soon as they are released.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes >= _OWN_PAGES:
        import mmap

        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        pages = mmap.mmap(-1, nbytes, flags=flags) if flags else mmap.mmap(-1, nbytes)
        return np.frombuffer(pages, dtype=dtype).reshape(shape)
    buffer = np.empty(nbytes + alignment, dtype=np.uint8)
    offset = -buffer.ctypes.data % alignment
    return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def restore(saved):
    """Assigns the values of a `snapshot` back, bit for bit."""
    for variable, value in saved:
        variable.assign(value)
