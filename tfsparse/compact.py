"""`compact`: turn a gated model into a smaller plain Keras model.

What happens to each gate (the same for every gate family: only
`isinstance(Gate)`, `mask()`, `active()`, `structure`, `input_dependent` and
`compacted_layer()` are used):

- A unit gate disappears. Its closed units are removed from the layer that
  produces them (kernel columns, bias, the parameters of a BatchNormalization
  between that layer and the gate) and from every Dense/Conv layer that
  consumes them (kernel rows; through Activation/ReLU, pooling, Dropout and
  Flatten, with the channels-last index map (h, w, c) → (h·W + w)·C + c).
  Its non-binary multiplier (hard-concrete's mask, NPN's π, BB's E[π]) is
  folded into the consumers' kernel rows, which is exact because the layers in
  between commute with a positive per-channel scale (ReLU, linear, max/average
  pooling); a BatchNormalization in between absorbs it exactly (γ·s, μ/s).
- Where units cannot be taken out of the producer (a network input, a
  Flatten, a shared or unsupported layer), the gate becomes a
  `tfsparse.layers.TakeFeatures` of the kept features. The producer still
  loses the channels that no kept feature uses (e.g. a conv channel without a
  kept position after Flatten).
- An input-dependent gate (DBB) loses what its static part prunes, its static
  multiplier is folded like any other, and `gate.compacted_layer(kept)` is
  inserted to apply the per-example part.
- `SparseDense`/`SparseConv2D` become `Dense`/`Conv2D` with kernel × mask
  (exact zeros where a weight gate is closed).
- A unit of a Dense/Conv layer whose kernel column and bias are exactly zero is
  removed when its activation maps 0 to 0 (and the consumers see an exact
  zero); kernel rows that are zero for every kept unit free their input.

Everything is decided channel by channel from three facts computed on the
layer graph (see `ChannelAnalysis`): the multiplier that relates the old
tensor to the new one, which channels are exactly zero, and which channels are
needed downstream. Anything that would change the function raises a
`ValueError` naming the layers: a gated channel that reaches an `Add`,
`Concatenate`, a model output, a grouped convolution or any layer that mixes
channels; a non-binary multiplier that would have to pass through a layer that
does not commute with scaling (tanh, sigmoid, ReLU6...); a BatchNormalization
without γ/β that would have to absorb one.
"""

from collections import Counter

import keras
import numpy as np
from keras import ops

from tfsparse import _graph
from tfsparse.gates.base import UNIT, Gate
from tfsparse.layers import SparseConv2D, SparseDense, TakeFeatures, _KernelGated

# Kinds of call nodes.
GATE, LINEAR, BN, ACT, PASS, FLATTEN, TAKE, OTHER = (
    "gate", "linear", "bn", "act", "pass", "flatten", "take", "other")

CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
         keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
         keras.layers.AveragePooling3D, keras.layers.GlobalAveragePooling1D,
         keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D,
         keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
         keras.layers.GlobalMaxPooling3D)
# Identity at inference.
IDENTITIES = (keras.layers.Dropout, keras.layers.SpatialDropout1D,
              keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D,
              keras.layers.GaussianNoise, keras.layers.GaussianDropout,
              keras.layers.AlphaDropout, keras.layers.Identity,
              keras.layers.ActivityRegularization)
# Element-wise activations (f applied to each value on its own).
ELEMENTWISE = {"relu", "linear", "leaky_relu", "relu6", "elu", "selu", "gelu", "silu",
               "swish", "tanh", "sigmoid", "hard_sigmoid", "softplus", "softsign",
               "exponential", "mish", "hard_silu", "hard_swish", "celu", "log_sigmoid",
               "tanh_shrink", "hard_tanh", "soft_shrink", "hard_shrink", "sparse_plus",
               "squareplus", "sparse_sigmoid", "threshold"}
# f(s·x) = s·f(x) for s > 0.
HOMOGENEOUS = {"relu", "linear", "leaky_relu"}


def compact(model):
    """Returns a plain `keras.Model` that computes what `model` computes at
    inference, with every unit a gate closed removed.

    Args:
        model: a built Sequential or Functional model (a `tfsparse.SparseModel`
            from `tfsparse.sparsify`, or one built by hand with gate layers and
            `SparseDense`/`SparseConv2D`).

    Returns:
        A new Functional `keras.Model` without tfsparse layers, except
        `tfsparse.layers.TakeFeatures` where a network input or a flattened
        tensor was gated, and the per-example layer of input-dependent gates.
        Its inference output equals the gated model's (up to float rounding
        of the folded multipliers). The weights are copies: `model` is left
        untouched.

    Raises:
        ValueError: the model cannot be compacted without changing its
            function (the message names the gates and layers involved).
        TypeError: `model` is a subclassed model.

    Example:

    >>> small = tfsparse.compact(sparse)
    >>> tfsparse.summary(small)
    """
    analysis = ChannelAnalysis(model, strict=True)
    return _Rebuild(analysis).model(f"{model.name}_compact")


# ----------------------------------------------------------------- analysis
def layer_kind(op, node, shared=False):
    """How compaction treats one call `node` of layer `op`: one of GATE,
    LINEAR, BN, ACT, PASS, FLATTEN, TAKE, OTHER (OTHER needs all its input
    channels, unscaled)."""
    shape = node.input_tensors[0].shape if len(node.input_tensors) == 1 else None
    if shape is None:
        return OTHER
    if isinstance(op, Gate):
        return GATE if op.structure == UNIT else OTHER
    if shared:
        return OTHER
    if isinstance(op, (SparseDense, SparseConv2D, keras.layers.Dense)):
        return LINEAR
    if isinstance(op, CONVS):
        channels_last = op.data_format == "channels_last"
        return LINEAR if op.groups == 1 and channels_last else OTHER
    if isinstance(op, keras.layers.BatchNormalization):
        return BN if op.axis in (-1, len(shape) - 1) else OTHER
    if _activation_name(op) in ELEMENTWISE:
        return ACT
    if isinstance(op, POOLS):
        return PASS if op.data_format == "channels_last" else OTHER
    if isinstance(op, IDENTITIES):
        return PASS
    if isinstance(op, keras.layers.Flatten):
        known = all(d is not None for d in shape[1:])
        return FLATTEN if op.data_format == "channels_last" and known else OTHER
    if isinstance(op, TakeFeatures):
        return TAKE
    return OTHER


def _activation_name(op):
    """Name of an activation layer's function (None for other layers)."""
    if isinstance(op, keras.layers.Activation):
        return getattr(op.activation, "__name__", None)
    if isinstance(op, (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)):
        return "relu"  # element-wise; homogeneity is checked on the config
    return None


def _homogeneous(op):
    if isinstance(op, keras.layers.ReLU):
        return op.max_value is None and float(op.threshold) == 0.0
    if isinstance(op, keras.layers.LeakyReLU):
        return True
    if isinstance(op, keras.layers.ELU):
        return False
    return _activation_name(op) in HOMOGENEOUS


def _at_zero(fn, n):
    """f(0) for each of n channels of an element-wise function."""
    return np.asarray(ops.convert_to_numpy(fn(np.zeros((1, n), "float32"))))[0]


def effective_kernel(op):
    """The kernel that `op` applies at inference (kernel × gate mask)."""
    if isinstance(op, _KernelGated):
        return np.asarray(ops.convert_to_numpy(op.gated_kernel(training=False)))
    return np.asarray(ops.convert_to_numpy(op.kernel))


def bias_of(op):
    """The bias that `op` adds at inference (None without one)."""
    if op.bias is None:
        return None
    bias = op.gated_bias() if isinstance(op, _KernelGated) else op.bias
    return np.asarray(ops.convert_to_numpy(bias))


def channelwise_activation(op):
    """Whether a Dense/Conv activation acts on each unit alone."""
    return getattr(op.activation, "__name__", "linear") in ELEMENTWISE


def gate_multiplier(gate):
    """(multiplier, kept) of a unit gate as NumPy arrays; the multiplier is 0
    where the gate is not active."""
    mask = np.asarray(ops.convert_to_numpy(gate.mask()), dtype="float64").reshape(-1)
    kept = np.asarray(ops.convert_to_numpy(gate.active()), dtype=bool).reshape(-1)
    if np.any(mask[~kept] != 0):
        raise ValueError(f"Gate {gate.name!r}: mask() is non-zero on units that active() "
                         "reports closed; its units cannot be removed.")
    if np.any(mask < 0) or not np.all(np.isfinite(mask)):
        raise ValueError(f"Gate {gate.name!r}: mask() has negative or non-finite values; "
                         "only non-negative multipliers can be folded.")
    return np.where(kept, mask, 0.0), kept


class ChannelAnalysis:
    """Per-channel facts about every tensor of a Sequential/Functional model.

    For each tensor with a known channel (last) axis:

    - `scale[t]`: s such that old value = s × new value on each channel (the
      pending gate multiplier; 0 where the old value is exactly 0 while the new
      one need not be; NaN where no such s exists);
    - `zero[t]`: channels that are exactly 0 at inference;
    - `live[t]`: channels that something downstream needs.

    Args:
        model: a built Sequential or Functional model.
        strict: layers that compaction cannot shrink need all their input
            channels (compaction); with `strict=False` they need only the
            non-zero ones (the summary's count of what survives).
    """

    def __init__(self, model, strict=True):
        self.model = model
        self.graph = _graph.functional_of(model)
        self.nodes = _graph.nodes_in_order(self.graph)
        uses = Counter(id(node.operation) for node in self.nodes)
        self.kind = {id(node): layer_kind(node.operation, node, uses[id(node.operation)] > 1)
                     for node in self.nodes}
        self.strict = strict
        self.scale, self.zero, self.origin, self.blocker, self.live = {}, {}, {}, {}, {}
        self._kernels = {}
        self._forward()
        self._backward()

    # ------------------------------------------------------------- helpers
    @staticmethod
    def width(tensor):
        shape = tensor.shape
        return None if len(shape) == 0 or shape[-1] is None else int(shape[-1])

    def tracked(self, tensor):
        return id(tensor) in self.scale

    def kernel(self, op):
        if id(op) not in self._kernels:
            self._kernels[id(op)] = (effective_kernel(op), bias_of(op))
        return self._kernels[id(op)]

    def _set(self, tensor, scale, zero, origin=frozenset(), blocker=None):
        if self.width(tensor) is None:
            return
        self.scale[id(tensor)] = np.asarray(scale, dtype="float64")
        self.zero[id(tensor)] = np.asarray(zero, dtype=bool)
        self.origin[id(tensor)] = frozenset(origin)
        self.blocker[id(tensor)] = blocker

    def _plain(self, tensor):
        n = self.width(tensor)
        if n is not None:
            self._set(tensor, np.ones(n), np.zeros(n, bool))

    def facts(self, tensor):
        key = id(tensor)
        return self.scale[key], self.zero[key], self.origin[key], self.blocker[key]

    # ------------------------------------------------------ forward: s, zero
    def _forward(self):
        for tensor in self.graph.inputs:
            self._plain(tensor)
        for node in self.nodes:
            kind = self.kind[id(node)]
            if kind != OTHER and not all(self.tracked(t) for t in node.input_tensors):
                self.kind[id(node)] = kind = OTHER
            getattr(self, f"_fwd_{kind}")(node)

    def _fwd_gate(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, z, origin, blocker = self.facts(x)
        m, kept = gate_multiplier(node.operation)
        self._set(y, s * m, z | ~kept, origin | {node.operation.name}, blocker)

    def _fwd_linear(self, node):
        op, (y,) = node.operation, node.outputs
        n = self.width(y)
        kernel, bias = self.kernel(op)
        zero = np.all(kernel.reshape(-1, n) == 0, axis=0)
        if bias is not None:
            zero &= bias == 0
        if channelwise_activation(op):
            zero &= _at_zero(op.activation, n) == 0
        else:
            zero[:] = False
        self._set(y, np.ones(n), zero)

    def _fwd_bn(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, _, origin, blocker = self.facts(x)
        bad = ~np.isfinite(s)
        self._set(y, np.where(bad, np.nan, 1.0), np.zeros(len(s), bool),
                  origin if bad.any() else (), blocker)

    def _fwd_act(self, node):
        op, (x,), (y,) = node.operation, node.input_tensors, node.outputs
        s, z, origin, blocker = self.facts(x)
        at_zero = _at_zero(op, len(s)) == 0
        passes = np.full(len(s), _homogeneous(op))
        out = np.where(s == 1, 1.0,
                       np.where(s == 0, np.where(at_zero, 0.0, np.nan),
                                np.where(passes, s, np.nan)))
        new_nan = np.isnan(out) & ~np.isnan(s)
        self._set(y, out, z & at_zero, origin, op.name if new_nan.any() else blocker)

    def _fwd_pass(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        self._set(y, *self.facts(x))

    def _fwd_flatten(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, z, origin, blocker = self.facts(x)
        positions = self.width(y) // len(s)
        self._set(y, np.tile(s, positions), np.tile(z, positions), origin, blocker)

    def _fwd_take(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, z, origin, blocker = self.facts(x)
        idx = np.asarray(node.operation.indices)
        self._set(y, s[idx], z[idx], origin, blocker)

    def _fwd_other(self, node):
        for tensor in node.outputs:
            self._plain(tensor)

    # ------------------------------------------------------- backward: live
    def _backward(self):
        self.live = {key: np.zeros(len(s), bool) for key, s in self.scale.items()}
        for tensor in self.graph.outputs:
            if self.tracked(tensor):
                self.live[id(tensor)][:] = True
        for node in reversed(self.nodes):
            getattr(self, f"_bwd_{self.kind[id(node)]}")(node)

    def _need(self, tensor, channels):
        self.live[id(tensor)] |= channels

    def _bwd_pass(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        self._need(x, self.live[id(y)])

    _bwd_gate = _bwd_bn = _bwd_act = _bwd_pass

    def kept_columns(self, node):
        """Indices of the output units of a LINEAR node that are needed."""
        op, (y,) = node.operation, node.outputs
        if not channelwise_activation(op):
            return np.arange(self.width(y))
        return np.flatnonzero(self.live[id(y)])

    def _bwd_linear(self, node):
        (x,), op = node.input_tensors, node.operation
        kernel, _ = self.kernel(op)
        used = kernel[..., self.kept_columns(node)]
        rows = np.moveaxis(used, -2, 0).reshape(used.shape[-2], -1)
        self._need(x, ~self.zero[id(x)] & np.any(rows != 0, axis=1))

    def _bwd_flatten(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        self._need(x, self.live[id(y)].reshape(-1, self.width(x)).any(axis=0))

    def _bwd_take(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        needed = np.zeros(self.width(x), bool)
        np.logical_or.at(needed, np.asarray(node.operation.indices), self.live[id(y)])
        self._need(x, needed)

    def _bwd_other(self, node):
        for tensor in node.input_tensors:
            if self.tracked(tensor):
                self._need(tensor, True if self.strict else ~self.zero[id(tensor)])


# ------------------------------------------------------------------ rebuild
class _Rebuild:
    """Calls new layers in the order of the old nodes; `carry[t]` lists the
    old channels of tensor t that the new tensor holds (ascending)."""

    def __init__(self, analysis):
        self.a = analysis
        self.carry = {}
        self.new = {}          # id(old tensor) → new tensor
        self.clones = {}       # id(old layer) → clone
        self.copies = []       # (new layer, weights) set after the graph exists
        self.names = {layer.name for layer in analysis.model.layers}

    def model(self, name):
        graph = self.a.graph
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype,
                              name=t._keras_history.operation.name)
                  for t in graph.inputs]
        for old, new in zip(graph.inputs, inputs):
            self._put(old, new, None)
        for node in self.a.nodes:
            getattr(self, f"_build_{self.a.kind[id(node)]}")(node)
        outputs = [self._output(t) for t in graph.outputs]
        # A single input is passed as a tensor (Keras warns when a model built
        # on a one-element list is called with a tensor).
        inputs_struct = inputs[0] if len(inputs) == 1 else keras.tree.pack_sequence_as(
            graph._inputs_struct, inputs)
        result = keras.Model(inputs=inputs_struct,
                             outputs=keras.tree.pack_sequence_as(graph._outputs_struct,
                                                                 outputs),
                             name=name)
        for layer, weights in self.copies:
            layer.set_weights(weights)
        return result

    # ------------------------------------------------------------- helpers
    def _put(self, old, new, carry):
        self.new[id(old)] = new
        if self.a.tracked(old):
            self.carry[id(old)] = (np.arange(self.a.width(old)) if carry is None
                                   else np.asarray(carry, dtype=int))

    def _unique(self, name):
        candidate, i = name, 1
        while candidate in self.names:
            candidate, i = f"{name}_{i}", i + 1
        self.names.add(candidate)
        return candidate

    def _clone(self, op):
        if id(op) not in self.clones:
            if isinstance(op, keras.Model):
                clone = keras.models.clone_model(op)
            else:
                clone = op.__class__.from_config(op.get_config())
            self.clones[id(op)] = clone
            self.copies.append((clone, op.get_weights()))
        return self.clones[id(op)]

    def _call(self, node, layer):
        args, kwargs = node.arguments.fill_in(self.new)
        return layer(*args, **kwargs)

    def _refuse(self, tensors, where):
        tensors = tensors if isinstance(tensors, list) else [tensors]
        facts = [self.a.facts(t) for t in tensors]
        gates = sorted(set().union(*(f[2] for f in facts))) or ["(none)"]
        blocker = next((f[3] for f in facts if f[3]), None)
        detail = (f" (the multiplier cannot pass through {blocker!r}, which is not "
                  "positively homogeneous)" if blocker else "")
        raise ValueError(
            f"Cannot compact: the channels of gate(s) {gates} reach {where}{detail}. "
            "Only Dense/Conv consumers, through Activation/ReLU, pooling, Dropout, "
            "Flatten and BatchNormalization, can absorb a gate's closed units and "
            "multiplier. Move or remove these gates.")

    @staticmethod
    def _describe(op):
        extra = f", groups={op.groups}" if getattr(op, "groups", 1) != 1 else ""
        return f"layer {op.name!r} ({type(op).__name__}{extra})"

    def _unchanged(self, tensor):
        """Whether the new tensor equals the old one on every channel."""
        if not self.a.tracked(tensor):
            return True
        s = self.a.scale[id(tensor)]
        return len(self.carry[id(tensor)]) == len(s) and bool(np.all(s == 1))

    def _output(self, tensor):
        if not self._unchanged(tensor):
            self._refuse(tensor, "a model output")
        return self.new[id(tensor)]

    # -------------------------------------------------------------- builders
    def _build_gate(self, node):
        (x,), (y,), gate = node.input_tensors, node.outputs, node.operation
        carry = self.carry[id(x)]
        keep = np.flatnonzero(self.a.live[id(y)][carry])
        keep = keep if len(keep) else np.arange(1)
        out = self.new[id(x)]
        if len(keep) != len(carry):
            name = self._unique(f"{gate.name}_take")
            out = TakeFeatures([int(i) for i in keep], name=name)(out)
        kept = carry[keep]
        if gate.input_dependent:
            layer = self._per_example_layer(gate, x, kept, self.a.live[id(y)][kept])
            if layer is not None:
                out = layer(out)
        self._put(y, out, kept)

    def _per_example_layer(self, gate, x, kept, live):
        """`gate.compacted_layer(kept)`, told the multiplier its input carries
        (`input_scale`, new = old / s) when an upstream gate's is pending."""
        s = self.a.scale[id(x)][kept]
        if np.any(live & ~(np.isfinite(s) & (s > 0))):
            self._refuse(x, f"input-dependent gate {gate.name!r}, whose per-example "
                            "mask needs its input channels")
        carried = np.where(live & (s > 0), 1.0 / np.where(s > 0, s, 1.0), 1.0)
        indices = [int(i) for i in kept]
        if np.all(carried == 1):
            layer, carried = gate.compacted_layer(indices), None
        else:
            try:
                layer = gate.compacted_layer(indices, input_scale=carried.astype("float32"))
            except TypeError:
                self._refuse(x, f"input-dependent gate {gate.name!r}, whose "
                                "compacted_layer() takes no `input_scale`")
        if layer is not None:
            _check_per_example_layer(gate, layer, kept, len(x.shape), carried)
        return layer

    def _build_linear(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry, cols = self.carry[id(x)], self.a.kept_columns(node)
        dummy = len(cols) == 0
        cols = np.arange(1) if dummy else cols
        kernel, bias = self.a.kernel(op)
        rows_scale = self._row_scale(x, carry, op)
        kernel = np.take(kernel, carry, axis=-2)[..., cols] * rows_scale[:, None]
        bias = None if bias is None else bias[cols].copy()
        if dummy:
            kernel[...] = 0
            bias = None if bias is None else bias * 0
        layer = self._plain_twin(op, len(cols))
        self._put(y, layer(self.new[id(x)]), cols)
        weights = [kernel.astype(op.kernel.dtype)]
        if bias is not None:
            weights.append(bias.astype(op.bias.dtype))
        self.copies.append((layer, weights))

    def _row_scale(self, x, carry, op):
        """Folded multiplier per kept input channel (0 where not needed)."""
        s, live = self.a.scale[id(x)][carry], self.a.live[id(x)][carry]
        if np.any(live & ~np.isfinite(s)):
            self._refuse(x, self._describe(op))
        return np.where(live, s, 0.0)

    @staticmethod
    def _plain_twin(op, units):
        """Dense/Conv with `op`'s configuration and `units` outputs."""
        if isinstance(op, SparseDense):
            config = keras.layers.Dense(1).get_config()
            cls = keras.layers.Dense
        elif isinstance(op, SparseConv2D):
            config = keras.layers.Conv2D(1, op.kernel_size).get_config()
            config.update(kernel_size=op.kernel_size, strides=op.strides,
                          padding=op.padding, data_format="channels_last")
            cls = keras.layers.Conv2D
        else:
            config, cls = op.get_config(), type(op)
        if isinstance(op, _KernelGated):
            config.update(
                name=op.name, activation=keras.activations.serialize(op.activation),
                use_bias=op.use_bias,
                kernel_initializer=keras.initializers.serialize(op.kernel_initializer),
                bias_initializer=keras.initializers.serialize(op.bias_initializer),
                kernel_regularizer=keras.regularizers.serialize(op.kernel_regularizer),
                dtype=op.dtype_policy.name)
        config["units" if issubclass(cls, keras.layers.Dense) else "filters"] = units
        return cls.from_config(config)

    def _build_bn(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry = self.carry[id(x)]
        params = {name: (None if getattr(op, name) is None
                         else np.array(ops.convert_to_numpy(getattr(op, name)))[carry])
                  for name in ("gamma", "beta", "moving_mean", "moving_variance")}
        s, live = self.a.scale[id(x)][carry], self.a.live[id(x)][carry]
        fold = live & (s != 1)
        if np.any(~np.isfinite(s[fold])):
            self._refuse(x, self._describe(op))
        if fold.any():
            self._fold_bn(op, params, s, fold, x)
        layer = self._clone_fresh(op)
        self._put(y, self._call(node, layer), carry)
        weights = [params[name] for name in ("gamma", "beta", "moving_mean",
                                             "moving_variance") if params[name] is not None]
        self.copies.append((layer, [w.astype("float32") for w in weights]))

    def _fold_bn(self, op, p, s, fold, x):
        """BN(s·x) as a BN of x, on the channels in `fold`."""
        positive, closed = fold & (s > 0), fold & (s == 0)
        sigma = np.sqrt(p["moving_variance"].astype("float64") + op.epsilon)
        if closed.any():
            if p["gamma"] is None or p["beta"] is None:
                self._refuse(x, self._describe(op) + " (closed units need its γ and β)")
            shift = p["beta"] - p["gamma"] * p["moving_mean"] / sigma
            p["beta"] = np.where(closed, shift, p["beta"])
            p["gamma"] = np.where(closed, 0.0, p["gamma"])
            p["moving_mean"] = np.where(closed, 0.0, p["moving_mean"])
        safe = np.where(positive, s, 1.0)
        p["moving_mean"] = p["moving_mean"] / safe
        if p["gamma"] is not None:
            p["gamma"] = p["gamma"] * safe
        else:
            variance = sigma ** 2 / safe ** 2 - op.epsilon
            if np.any(variance < 0):
                self._refuse(x, self._describe(op) + " (no γ to absorb the multiplier)")
            p["moving_variance"] = variance

    def _clone_fresh(self, op):
        if id(op) in self.clones:
            raise ValueError(f"Layer {op.name!r} is called more than once; shared layers "
                             "between a gate and its consumers cannot be compacted.")
        clone = op.__class__.from_config(op.get_config())
        self.clones[id(op)] = clone
        return clone

    def _build_act(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        self._put(y, self._call(node, self._clone(node.operation)), self.carry[id(x)])

    _build_pass = _build_act

    def _build_flatten(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        carry, channels = self.carry[id(x)], self.a.width(x)
        positions = np.arange(self.a.width(y) // channels)
        flat = (positions[:, None] * channels + carry[None, :]).reshape(-1)
        self._put(y, self._call(node, self._clone(node.operation)), flat)

    def _build_take(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        wanted = np.flatnonzero(self.a.live[id(y)])
        wanted = wanted if len(wanted) else np.arange(1)
        carry = self.carry[id(x)]
        old = np.asarray(op.indices)[wanted]
        pos = np.searchsorted(carry, old)
        if np.any(pos >= len(carry)) or np.any(carry[np.minimum(pos, len(carry) - 1)] != old):
            raise ValueError(f"Internal error: TakeFeatures {op.name!r} reads a removed "
                             "channel.")
        layer = TakeFeatures([int(i) for i in pos], name=self._unique(op.name))
        self._put(y, layer(self.new[id(x)]), wanted)

    def _build_other(self, node):
        op = node.operation
        changed = [t for t in node.input_tensors if not self._unchanged(t)]
        if changed:
            self._refuse(changed, self._describe(op))
        if _holds_tfsparse(op):
            raise ValueError(
                f"Cannot compact {self._describe(op)}: it is (or holds) a tfsparse layer "
                "that compaction cannot replace here (a weight gate used as a layer, a "
                "shared SparseDense/SparseConv2D, or a nested model with gates). Build the "
                "model with its gates at the top level.")
        outputs = keras.tree.flatten(self._call(node, self._clone(op)))
        for old, new in zip(node.outputs, outputs):
            self._put(old, new, None)


def _check_per_example_layer(gate, layer, kept, rank, input_scale=None):
    """Checks the contract of `gate.compacted_layer(kept)` on random inputs:
    it takes the gate's input on the `kept` channels (times `input_scale`
    when given) and multiplies it by the per-example part of the mask only,
    `inference_mask / mask` (compaction folds the static `mask()` into the
    consumers)."""
    carried = np.ones(len(kept)) if input_scale is None else np.asarray(input_scale)
    static = np.asarray(ops.convert_to_numpy(gate.mask()), "float64").reshape(-1)[kept]
    compared = static > 0
    rng = np.random.default_rng(0)
    shape = (8,) + (1,) * (rank - 2) + (int(gate.mask_shape[-1]),)
    for scale in (0.1, 1.0, 10.0):
        full = rng.normal(0.0, scale, size=shape).astype("float32")
        full[:4] = np.abs(full[:4])
        mask = np.broadcast_to(ops.convert_to_numpy(gate.inference_mask(full)), shape)
        probe = (full[..., kept] * carried).astype("float32")
        expected = probe * mask[..., kept] / np.where(compared, static, 1.0)
        got = np.asarray(ops.convert_to_numpy(layer(probe)))
        error = np.abs(got - expected)[..., compared]
        if error.size and error.max() > 1e-5 * max(1.0, float(np.abs(expected).max())):
            raise ValueError(
                f"Cannot compact input-dependent gate {gate.name!r}: the layer returned "
                f"by its compacted_layer(kept) ({type(layer).__name__}) does not compute "
                "input × (inference_mask / mask) on the gate's input (times `input_scale` "
                "if given), which is what compaction needs (it folds the static mask() "
                "into the consumers' kernel rows).")


def _holds_tfsparse(op):
    if isinstance(op, (Gate, _KernelGated)):
        return True
    if isinstance(op, keras.Model):
        return any(isinstance(layer, (Gate, _KernelGated))
                   for layer in op._flatten_layers(include_self=False, recursive=True))
    return False
