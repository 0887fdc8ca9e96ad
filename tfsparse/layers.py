"""Layers with a gate inside: Dense and Conv2D layers whose kernel passes
through a gate, and multi-head attention whose heads do.

`SparseDense`/`SparseConv2D` subclass `keras.layers.Layer`, not
`Dense`/`Conv2D`: Keras' own save/load of those classes only knows `kernel`
and `bias`, so a subclass that adds a gate's variables would not reload from
a `.keras` file. `GatedMultiHeadAttention` can subclass Keras' layer: its
projections are sublayers, saved by path like the gate.
"""

import keras
import numpy as np
from keras import ops

from tfsparse._checks import number
from tfsparse.gates.base import UNIT, Gate


def effective_kernel(layer):
    """The kernel a layer computes with at inference, as a NumPy array: a
    gated layer's kernel times its gate's mask (`gated_kernel`), any other
    layer's `kernel`."""
    if getattr(layer, "kernel_gate", None) is not None:
        return np.asarray(ops.convert_to_numpy(layer.gated_kernel(training=False)))
    return np.asarray(ops.convert_to_numpy(layer.kernel))


def _gate_from(gate):
    if gate is None or isinstance(gate, Gate):
        return gate
    if isinstance(gate, dict):
        return keras.saving.deserialize_keras_object(gate)
    raise TypeError(
        "`kernel_gate` must be a tfsparse Gate instance, its serialized "
        f"config (dict) or None; got {type(gate).__name__}."
    )


class _KernelGated(keras.layers.Layer):
    """Shared part: a kernel, a bias, an activation and an optional gate."""

    def __init__(
        self,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        kernel_gate=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_gate = _gate_from(kernel_gate)

    def _build_kernel(self, kernel_shape, units):
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )
        # A gate restored from a .keras file arrives already built.
        if self.kernel_gate is not None and not self.kernel_gate.built:
            self.kernel_gate.build(kernel_shape)

    def gated_kernel(self, training=False):
        """The kernel multiplied by the gate's mask (sampled if training)."""
        if self.kernel_gate is None:
            return self.kernel
        # The gate computes in float32; the layer may compute in float16.
        return ops.cast(self.kernel_gate(self.kernel, training=training), self.compute_dtype)

    def gated_bias(self):
        """The bias at inference and in training. A unit that a unit-structured
        gate closed (or pruning marked) is removed whole, its bias too, so
        that it outputs activation(0) and `tfsparse.compact` can drop it."""
        if self.kernel_gate is None or self.kernel_gate.structure != UNIT:
            return self.bias
        return self.bias * ops.cast(self.kernel_gate.mask(), self.bias.dtype)

    def _finish(self, outputs):
        if self.use_bias:
            outputs = outputs + ops.cast(self.gated_bias(), outputs.dtype)
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            kernel_gate=(
                keras.saving.serialize_keras_object(self.kernel_gate)
                if self.kernel_gate is not None
                else None
            ),
        )
        return config


@keras.saving.register_keras_serializable(package="tfsparse")
class SparseDense(_KernelGated):
    """`Dense` whose kernel is multiplied by a weight or unit gate.

    Args:
        units: number of output units.
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer: as
            in `keras.layers.Dense`.
        kernel_gate: a `tfsparse.gates.Gate` applied to the kernel, viewed as
            [inputs, units]: a weight gate masks single weights, a unit gate
            masks whole columns (output units). `None` makes a plain Dense.

    Call arguments:
        inputs: a tensor of shape `(..., input_dim)`.
        training: whether the gate samples a training mask.

    Examples:
        >>> from tfsparse.gates import HardConcreteGate
        >>> layer = SparseDense(300, activation="relu",
        ...                     kernel_gate=HardConcreteGate(structure="weight"))
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(number("units", units, low=1, integer=True))

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                f"SparseDense {self.name!r} needs a known last input axis; got {input_shape}."
            )
        self._build_kernel((int(input_shape[-1]), self.units), self.units)

    def call(self, inputs, training=False):
        return self._finish(ops.matmul(inputs, self.gated_kernel(training)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


@keras.saving.register_keras_serializable(package="tfsparse")
class SparseConv2D(_KernelGated):
    """`Conv2D` (channels last) whose kernel is multiplied by a gate.

    The kernel [kh, kw, in, out] is the [kh·kw·in, out] matrix of the papers:
    a unit gate masks output channels, a weight gate single weights.

    Args:
        filters, kernel_size, strides, padding: as in `keras.layers.Conv2D`
            (`padding` is "valid" or "same").
        activation, use_bias, kernel_gate: as in `SparseDense`.
        kernel_initializer, bias_initializer, kernel_regularizer: as in
            `SparseDense`.

    Call arguments:
        inputs: a tensor of shape `(batch, height, width, channels)`.
        training: whether the gate samples a training mask.
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(number("filters", filters, low=1, integer=True))
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = _pair("strides", strides)
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'; got {padding!r}.")
        self.padding = padding

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"SparseConv2D {self.name!r} needs a 4-D input with known "
                f"channels; got {input_shape}."
            )
        shape = self.kernel_size + (int(input_shape[-1]), self.filters)
        self._build_kernel(shape, self.filters)

    def call(self, inputs, training=False):
        outputs = ops.conv(
            inputs,
            self.gated_kernel(training),
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
        )
        return self._finish(outputs)

    def compute_output_shape(self, input_shape):
        return keras.layers.Conv2D(
            self.filters, self.kernel_size, strides=self.strides, padding=self.padding
        ).compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
        )
        return config


def _pair(name, value):
    if isinstance(value, int):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and v >= 1 for v in value)
    ):
        raise ValueError(f"`{name}` must be a positive int or a pair of them; got {value!r}.")
    return tuple(value)


@keras.saving.register_keras_serializable(package="tfsparse")
class TakeFeatures(keras.layers.Layer):
    """Keeps the given indices of the last axis (`ops.take`).

    `tfsparse.compact` uses it where a gate pruned single features of a
    network input or of a flattened tensor: Keras has no gather layer, and a
    `Lambda` would not reload from a `.keras` file in safe mode.

    Args:
        indices: list of the indices to keep, in order.
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]
        if not self.indices or min(self.indices) < 0:
            raise ValueError(
                f"`indices` must be a non-empty list of non-negative ints; got {indices!r}."
            )

    def call(self, inputs):
        return ops.take(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        config = super().get_config()
        config["indices"] = self.indices
        return config


@keras.saving.register_keras_serializable(package="tfsparse")
class GatedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`MultiHeadAttention` whose heads pass through a unit gate.

    The gate multiplies each head's context (the attention-weighted values)
    before the output projection, so a closed head contributes nothing and
    `tfsparse.compact` rebuilds a plain `MultiHeadAttention` with the kept
    heads only. Everything else is Keras' layer, unchanged (the subclass
    overrides only `_compute_attention`, the documented extension point).

    Args:
        num_heads, key_dim, ...: as `keras.layers.MultiHeadAttention`.
        head_gate: a unit `tfsparse.gates.Gate` with one mask value per head
            (built with `units=num_heads`), its serialized config, or None.

    Examples:
        >>> attention = GatedMultiHeadAttention(
        ...     num_heads=4, key_dim=16,
        ...     head_gate=HardConcreteGate(lam=0.1, dataset_size=60000, units=4))
        >>> y = attention(x, x)
    """

    def __init__(self, num_heads, key_dim, head_gate=None, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.head_gate = _gate_from(head_gate)
        if self.head_gate is not None and self.head_gate.structure != UNIT:
            raise ValueError("`head_gate` must be a unit gate (structure='unit').")

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self.head_gate is not None and not self.head_gate.built:
            self.head_gate.build((None, self.num_heads))

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        **kwargs,
    ):
        context, scores = super()._compute_attention(
            query, key, value, attention_mask, training, return_attention_scores, **kwargs
        )
        if self.head_gate is not None:
            # context is [batch, ..., heads, size]: the gate masks the heads axis.
            heads_last = ops.swapaxes(context, -1, -2)
            context = ops.swapaxes(self.head_gate(heads_last, training=training), -1, -2)
        return context, scores

    def get_config(self):
        config = super().get_config()
        config["head_gate"] = (
            keras.saving.serialize_keras_object(self.head_gate)
            if self.head_gate is not None
            else None
        )
        return config


def inference_kernel(layer):
    """The kernel `layer` applies at inference, as a NumPy array: a
    kernel-gated layer's kernel times its gate's mask, else `layer.kernel`."""
    if isinstance(layer, _KernelGated):
        return np.asarray(ops.convert_to_numpy(layer.gated_kernel(training=False)))
    return np.asarray(ops.convert_to_numpy(layer.kernel))


def inference_bias(layer):
    """The bias `layer` adds at inference (None without one)."""
    if getattr(layer, "bias", None) is None:
        return None
    bias = layer.gated_bias() if isinstance(layer, _KernelGated) else layer.bias
    return np.asarray(ops.convert_to_numpy(bias))
