"""What differs between Keras's backends (TensorFlow, JAX, PyTorch), in one place.

Every `keras.backend.backend()` branch and every import of tensorflow, jax
or torch that keras_clr's domain code needs is here (tf.summary writing,
`keras_clr.tensorboard`, apart), so that the schedules, the train-step
hooks and the range test read the same on every backend. The uses of Keras's
own private API are in `keras_clr._keras_internals`.

Checked on Keras 3.15.1 with TensorFlow 2.21, JAX 0.8 and PyTorch 2.13.
"""

import contextlib
import numbers
import operator

import keras
import numpy as np
from keras import ops

from keras_clr import curves


def name():
    """The Keras backend: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def process_index():
    """This process's index among the processes of one training: on JAX
    `jax.process_index()` (0 until `jax.distributed.initialize` makes
    several), 0 on the other backends. The result writers write on 0 only."""
    if name() != "jax":
        return 0
    import jax

    return jax.process_index()


def fill(variable, value):
    """Sets every element of `variable` to `value` (a float; NaN too).

    On JAX with several processes the filled array is made on the devices,
    in the variable's own sharding: `jax.device_put` of a host array to a
    sharding over every process first checks that all the processes pass
    equal arrays, and NaN, never equal to itself, fails that check
    ("passed to device_put is not the same on each process"; JAX 0.10.2).
    """
    if name() == "jax":
        import jax

        if jax.process_count() > 1:
            import jax.numpy as jnp

            make = jax.jit(
                lambda: jnp.full(variable.shape, value, variable.dtype),
                out_shardings=variable.value.sharding,
            )
            variable.assign(make())
            return
    variable.assign(np.full(variable.shape, value, dtype=variable.dtype))


# -- graph arithmetic in 64 bits ----------------------------------------------


KerasOps = curves.namespace(
    "KerasOps",
    ops,
    lambda x: ops.cast(x, "float64"),
    "The graph namespace: `keras.ops`, with float64 arithmetic.",
)


class _JaxOps:
    """The graph namespace on JAX: jax.numpy, which (under `graph_precision`)
    keeps float64, where keras.ops would compute in float32."""

    @staticmethod
    def _jnp():
        import jax.numpy as jnp

        return jnp

    where = staticmethod(lambda c, x, y: _JaxOps._jnp().where(c, x, y))
    cos = staticmethod(lambda x: _JaxOps._jnp().cos(x))
    power = staticmethod(lambda x, y: _JaxOps._jnp().power(x, y))
    minimum = staticmethod(lambda x, y: _JaxOps._jnp().minimum(x, y))
    maximum = staticmethod(lambda x, y: _JaxOps._jnp().maximum(x, y))
    sqrt = staticmethod(lambda x: _JaxOps._jnp().sqrt(x))
    floor_divide = staticmethod(lambda x, y: _JaxOps._jnp().floor_divide(x, y))
    mod = staticmethod(lambda x, y: _JaxOps._jnp().mod(x, y))

    @staticmethod
    def to_float(x):
        return _JaxOps._jnp().asarray(x, dtype="float64")


class _TorchOps:
    """The graph namespace on PyTorch: torch in float64 and int64, where
    keras.ops would compute in float32 and int32. Python numbers stay
    numbers (no host-to-device copy per step)."""

    floor_divide = staticmethod(operator.floordiv)
    mod = staticmethod(operator.mod)
    power = staticmethod(operator.pow)

    @staticmethod
    def where(condition, x, y):
        import torch

        return torch.where(condition, x, y)

    @staticmethod
    def cos(x):
        import torch

        return torch.cos(x)

    @staticmethod
    def minimum(x, y):
        import torch

        if isinstance(y, numbers.Number):
            return torch.clamp(x, max=y)
        if isinstance(x, numbers.Number):
            return torch.clamp(y, max=x)
        return torch.minimum(x, y)

    @staticmethod
    def maximum(x, y):
        import torch

        if isinstance(y, numbers.Number):
            return torch.clamp(x, min=y)
        if isinstance(x, numbers.Number):
            return torch.clamp(y, min=x)
        return torch.maximum(x, y)

    @staticmethod
    def sqrt(x):
        import torch

        return torch.sqrt(x)

    @staticmethod
    def to_float(x):
        import torch

        return x.to(torch.float64) if isinstance(x, torch.Tensor) else float(x)


def graph_ops():
    """The namespace curves use on tensors of the current Keras backend."""
    return {"jax": _JaxOps, "torch": _TorchOps}.get(name(), KerasOps)


def graph_precision():
    """Context in which the graph namespace has float64 and int64: JAX's
    64-bit mode (off by default); elsewhere nothing to do."""
    if name() != "jax":
        return contextlib.nullcontext()
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def step_count(iterations):
    """The optimizer's update counter as a tensor to compute steps with:
    int64, or on JAX the counter's own dtype (int32 unless in 64-bit mode;
    the schedules widen it themselves)."""
    if name() == "jax":
        return ops.convert_to_tensor(iterations)
    return ops.cast(iterations, "int64")


# -- what a trace sees ---------------------------------------------------------


def trace_reads_variables():
    """Whether a traced train step reads a variable that is not part of the
    model's state at every call. JAX's does not: its step is a pure function
    of the training state, and any other variable is a constant of the trace."""
    return name() != "jax"


def traced_graph():
    """The TensorFlow graph being traced, or None (eager, other backends)."""
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.compat.v1.get_default_graph() if tf.inside_function() else None


def to_tf_tensor(value, dtype=None):
    """`value` as a TensorFlow tensor (for `__tf_tensor__`), cast to `dtype`."""
    import tensorflow as tf

    value = tf.convert_to_tensor(value)
    return value if dtype is None else tf.cast(value, dtype)


def device_table(values):
    """A float32 table for `gather`: on PyTorch copied to the device once,
    outside any compiled region; elsewhere the NumPy array itself."""
    return ops.convert_to_tensor(values) if name() == "torch" else values


def gather(table, index):
    """`table[index]` in the graph, `table` a NumPy array, a `device_table`
    or a variable, with the fewest ops the backend allows (tf.gather, not
    ops.take, which adds ops for negative indices)."""
    values = getattr(table, "value", table)  # a variable's tensor
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.gather(values, index)
    if name() == "torch" and values is table and not isinstance(table, np.ndarray):
        return table[index]  # a device table
    return ops.take(values, index)


def write_row(record, index, row):
    """In the traced step: `record[index] = row` for a 2-D float32 variable."""
    if name() == "tensorflow" and tf_strategy() is None:
        # One scatter into the variable: `slice_update` (XLA's
        # dynamic-update-slice, run outside XLA) and a whole-buffer assign
        # cost about 6% of a small model's step. (Mirrored variables have no
        # scatter in a replica's context.)
        import tensorflow as tf

        record.value.scatter_nd_update(tf.reshape(index, (1, 1)), ops.expand_dims(row, 0))
        return
    # JAX no longer converts a Variable passed to its primitives itself.
    current = record.value if name() == "jax" else record
    record.assign(ops.slice_update(current, ops.stack([index, 0]), ops.expand_dims(row, 0)))


# -- tf.distribute ---------------------------------------------------------------


def tf_strategy():
    """The tf.distribute strategy in force, or None (other backends too)."""
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def strategy_scope(model):
    """Where to create variables the train step uses: the scope of the
    model's tf.distribute strategy, so they are mirrored like its own."""
    if name() != "tensorflow" or tf_strategy() is not None:
        return contextlib.nullcontext()  # no strategy, or already in one
    return model.distribute_strategy.scope()


def replica_mean(value):
    """Inside a train step run per replica, the mean of `value` over the
    replicas (as Keras reduces the step's logs); elsewhere `value` itself."""
    strategy = tf_strategy()
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, value)


def replicas(variable):
    """The variable, or its per-replica copies under a tf.distribute strategy
    (whose metric variables may differ from replica to replica)."""
    copies = getattr(getattr(variable, "value", None), "values", None)
    return copies if isinstance(copies, tuple) else (variable,)


# -- host copies -------------------------------------------------------------------


def host_view(part):
    """A NumPy view of a TensorFlow CPU variable's buffer, read through
    DLPack with no copy, or None (other backends, GPU buffers, dtypes NumPy
    lacks): then NumPy converts the value."""
    if name() != "tensorflow":
        return None
    import tensorflow as tf

    value = tf.convert_to_tensor(part)
    if "CPU" not in value.device:
        return None
    try:
        return np.from_dlpack(_DLPackTensor(value))
    except (TypeError, ValueError, BufferError, RuntimeError):
        return None


class _DLPackTensor:
    """A TensorFlow CPU tensor as NumPy's `from_dlpack` wants it."""

    def __init__(self, tensor):
        self._tensor = tensor

    def __dlpack__(self, stream=None, **kwargs):
        import tensorflow as tf

        return tf.experimental.dlpack.to_dlpack(self._tensor)

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


# -- a float hyper-parameter read as a tensor --------------------------------------


def stand_in(value_fn, original, traced, torch_compiled=False):
    """What the optimizer reads for a scheduled float during a step.

    Traced backends (TensorFlow, JAX) get `traced(value_fn, original)`,
    evaluated in the graph. PyTorch runs the step eagerly and passes the
    attribute to `torch._foreach_*` kernels, which take only numbers and
    tensors: it gets this step's value as a 0-d tensor on the device (no
    host round trip) whose comparisons still use the float it replaces.
    """
    if name() != "torch":
        return traced(value_fn, original)
    value = ops.cast(value_fn(), "float32")
    if torch_compiled:
        # TorchDynamo cannot trace the subclass; a plain tensor's comparisons
        # give tensors, which torch.compile handles with a graph break.
        return value
    kind = _torch_scheduled_type()
    return kind._make_subclass(kind, value).attach(original)


_TORCH_TYPE = []
COMPARISONS = [
    ("eq", operator.eq),
    ("ne", operator.ne),
    ("lt", operator.lt),
    ("le", operator.le),
    ("gt", operator.gt),
    ("ge", operator.ge),
]


def compare_as_original(op):
    """A comparison method that compares the float a stand-in replaces."""
    return lambda self, other: op(self._original, other)


def _torch_scheduled_type():
    """A torch.Tensor subclass for `stand_in` (made once, on first use)."""
    if _TORCH_TYPE:
        return _TORCH_TYPE[0]
    import torch

    class ScheduledTensor(torch.Tensor):
        # Arithmetic gives plain tensors; comparisons and truth use the float.
        __torch_function__ = torch._C._disabled_torch_function_impl

        def attach(self, original):
            self._original = original
            return self

        def __bool__(self):
            return bool(self._original)

        __hash__ = torch.Tensor.__hash__

    for op_name, op in COMPARISONS:
        setattr(ScheduledTensor, f"__{op_name}__", compare_as_original(op))
    _TORCH_TYPE.append(ScheduledTensor)
    return ScheduledTensor
