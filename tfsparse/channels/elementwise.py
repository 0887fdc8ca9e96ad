"""Element-wise layers and operations: activations (a function of each value
alone) and merges (a function of the values at the same place in several
tensors: residual sums, squeeze-and-excitation products)."""

import keras
import numpy as np

from tfsparse.channels.base import MapHandler, as_numpy

# Activation functions that act on each value alone.
ELEMENTWISE = {
    "relu",
    "linear",
    "leaky_relu",
    "relu6",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "softplus",
    "softsign",
    "exponential",
    "mish",
    "hard_silu",
    "hard_swish",
    "celu",
    "log_sigmoid",
    "tanh_shrink",
    "hard_tanh",
    "soft_shrink",
    "hard_shrink",
    "sparse_plus",
    "squareplus",
    "sparse_sigmoid",
    "threshold",
}
# f(s·x) = s·f(x) for s > 0: a gate's multiplier passes through them.
HOMOGENEOUS = {"relu", "linear", "leaky_relu"}


def channelwise_activation(op):
    """Whether a layer's `activation` argument acts on each value alone."""
    return getattr(getattr(op, "activation", None), "__name__", "linear") in ELEMENTWISE


def activation_at_zero(op, n):
    """A layer's `activation` argument at 0, for each of n channels."""
    activation = getattr(op, "activation", None) or keras.activations.linear
    return as_numpy(activation(np.zeros((1, n), "float32")), "float64")[0]


def _scalar(value):
    return np.ndim(value) == 0 and not isinstance(value, (str, bytes))


def _constants_are_scalars(node):
    """Whether every argument of a raw operation that is not a Keras tensor
    is a scalar (a per-channel constant would have to be sliced)."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    tensors = {id(t) for t in node.input_tensors}
    values = keras.tree.flatten((args, kwargs))
    return all(id(v) in tensors or v is None or _scalar(v) for v in values)


class ElementwiseHandler(MapHandler):
    """An activation: output channel i is f(input channel i). A multiplier
    passes through f only if f is positively homogeneous; a closed channel
    stays exactly zero only if f(0) = 0."""

    def accepts(self, node, width):
        return (
            len(node.input_tensors) == 1
            and super().accepts(node, width)
            and width(node.input_tensors[0]) == width(node.outputs[0])
        )

    def homogeneous(self, node):
        raise NotImplementedError

    def at_zero(self, a, node):
        """f(0) for each channel."""
        (x,) = node.input_tensors
        shape = (1,) + tuple(1 if d is None else int(d) for d in x.shape[1:])
        zeros = np.zeros(shape, x.dtype if x.dtype != "float16" else "float32")
        args, kwargs = node.arguments.fill_in({id(x): zeros})
        value = as_numpy(node.operation(*args, **kwargs), "float64")
        return value.reshape(-1, a.width(x))[0]

    def forward(self, a, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, z, origin, blocker = a.facts(x)
        at_zero = self.at_zero(a, node) == 0
        passes = np.full(len(s), self.homogeneous(node))
        out = np.where(
            s == 1,
            1.0,
            np.where(s == 0, np.where(at_zero, 0.0, np.nan), np.where(passes, s, np.nan)),
        )
        new_nan = np.isnan(out) & ~np.isnan(s)
        a.set(y, out, z & at_zero, origin, node.operation.name if new_nan.any() else blocker)

    def per_example_on(self, a, node, on):
        value = on(node.input_tensors[0])
        if value is None:
            return None
        return value | (self.at_zero(a, node) != 0)[None, :]


class ActivationLayerHandler(ElementwiseHandler):
    """`Activation`, `ReLU`, `LeakyReLU`, `ELU`, `PReLU` and scalar `Rescaling`."""

    def accepts(self, node, width):
        op = node.operation
        if isinstance(op, keras.layers.Activation):
            if getattr(op.activation, "__name__", None) not in ELEMENTWISE:
                return False
        elif isinstance(op, keras.layers.Rescaling):
            if not (_scalar(op.scale) and _scalar(op.offset)):
                return False
        elif isinstance(op, keras.layers.PReLU):
            shared = tuple(op.shared_axes or ())
            if len(node.input_tensors[0].shape) - 1 in shared:
                return False
        return super().accepts(node, width)

    def homogeneous(self, node):
        op = node.operation
        if isinstance(op, keras.layers.ReLU):
            return op.max_value is None and float(op.threshold) == 0.0
        if isinstance(op, (keras.layers.LeakyReLU, keras.layers.PReLU)):
            return True
        if isinstance(op, keras.layers.Rescaling):
            return float(op.offset) == 0.0
        if isinstance(op, keras.layers.Activation):
            return op.activation.__name__ in HOMOGENEOUS
        return False

    def rebuild(self, r, node):
        op = node.operation
        if not isinstance(op, keras.layers.PReLU):
            return super().rebuild(r, node)
        (x,), (y,) = node.input_tensors, node.outputs
        carry = r.carry[id(x)]
        layer = r.fresh(op)
        r.put(y, r.call(node, layer), carry)
        r.set_weights(layer, [as_numpy(op.alpha)[..., carry]])


class RawElementwiseHandler(ElementwiseHandler):
    """`keras.ops` functions applied to one Keras tensor (and scalars), as
    `keras.applications` builds some activations (`relu6(x + 3) / 6`)."""

    def __init__(self, homogeneous=False, scalar_must_be=None):
        self._homogeneous = homogeneous
        # For ops homogeneous only with some constants (maximum with 0).
        self._scalar_must_be = scalar_must_be

    def accepts(self, node, width):
        return _constants_are_scalars(node) and super().accepts(node, width)

    def homogeneous(self, node):
        if not self._homogeneous:
            return False
        tensor = node.input_tensors[0]
        args = node.arguments.args
        if self._scalar_must_be == "tensor_first":  # x / c, not c / x
            return len(args) > 0 and args[0] is tensor
        if self._scalar_must_be == "zero":
            return all(float(v) == 0.0 for v in args if v is not tensor and _scalar(v))
        return True

    def rebuild(self, r, node):
        (x,), (y,) = node.input_tensors, node.outputs
        r.put(y, r.call(node, node.operation), r.carry[id(x)])


class MergeHandler(MapHandler):
    """Element-wise merge of tensors of the same channels (inputs with one
    channel broadcast and are read whole). Sums, averages, maxima and minima
    pass a multiplier common to all inputs; products multiply them."""

    def __init__(self, product=False):
        self.product = product

    def _split(self, node):
        width = int(node.outputs[0].shape[-1])
        linked = [x for x in node.input_tensors if x.shape[-1] == width]
        broadcast = [x for x in node.input_tensors if x.shape[-1] != width]
        return linked, broadcast

    def links(self, node):
        width = int(node.outputs[0].shape[-1])
        return [(x, np.arange(width)) for x in self._split(node)[0]]

    def accepts(self, node, width):
        if len(node.outputs) != 1 or width(node.outputs[0]) is None:
            return False
        if not isinstance(node.operation, keras.layers.Layer):
            if not _constants_are_scalars(node):
                return False
        linked, broadcast = self._split(node)
        return (
            len(node.input_tensors) >= 2
            and len(linked) >= 1
            and all(width(x) == 1 for x in broadcast)
            and all(width(x) is not None for x in linked)
        )

    def forward(self, a, node):
        linked, broadcast = self._split(node)
        facts = [a.facts(x) for x in linked]
        scales = np.stack([f[0] for f in facts])
        zeros = np.stack([f[1] for f in facts])
        origin = frozenset().union(*(f[2] for f in facts))
        blocker = next((f[3] for f in facts if f[3]), None)
        if self.product:
            scale, zero = np.prod(scales, axis=0), zeros.any(axis=0)
        else:
            same = np.all(scales == scales[0], axis=0)
            scale = np.where(same, scales[0], np.nan)
            if broadcast:  # s·x + y has no common factor unless s = 1
                scale = np.where(scale == 1, 1.0, np.nan)
            zero = zeros.all(axis=0)
            if np.any(np.isnan(scale) & ~np.isnan(scales).any(axis=0)):
                blocker = node.operation.name
        a.set(node.outputs[0], scale, zero, origin, blocker)

    def backward(self, a, node):
        live = a.live[id(node.outputs[0])]
        linked, broadcast = self._split(node)
        for x in linked:
            a.need(x, live)
        for x in broadcast:
            if a.tracked(x):
                a.need(x, np.full(a.width(x), bool(live.any())))

    def rebuild(self, r, node):
        (y,) = node.outputs
        linked, broadcast = self._split(node)
        for x in broadcast:
            if not r.unchanged(x):
                r.refuse(x, r.describe(node.operation) + " (it broadcasts this input)")
        target = np.flatnonzero(r.a.live[id(y)])
        if not len(target):
            target = r.carry[id(linked[0])][:1]
        overrides = {}
        for x in linked:
            carry = r.carry[id(x)]
            if len(carry) != len(target) or np.any(carry != target):
                pos = np.searchsorted(carry, target)
                if np.any(pos >= len(carry)) or np.any(
                    carry[np.minimum(pos, len(carry) - 1)] != target
                ):
                    raise ValueError(
                        f"Internal error: an input of {node.operation.name!r} "
                        "lost a channel its output needs."
                    )
                overrides[id(x)] = r.take(r.new[id(x)], pos, f"{node.operation.name}_take")
        op = node.operation
        layer = r.clone(op) if isinstance(op, keras.layers.Layer) else op
        r.put(y, r.call(node, layer, overrides), target)

    def per_example_on(self, a, node, on):
        values = [on(x) for x in self._split(node)[0]]
        known = [v for v in values if v is not None]
        if self.product:
            return np.logical_and.reduce(known) if known else None
        return None if len(known) < len(values) else np.logical_or.reduce(known)

    def per_example_need(self, a, node, need_out):
        linked, broadcast = self._split(node)
        result = {id(x): need_out for x in linked}
        result.update({id(x): None for x in broadcast if a.tracked(x)})
        return result
