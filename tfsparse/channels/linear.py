"""Layers that end channel groups: Dense and convolutions read input channels
through kernel rows (which a gate's closed units free, and into which its
multiplier folds) and produce new channels (kernel columns)."""

import keras
import numpy as np

from tfsparse.channels.base import LINEAR, Handler, Term, as_numpy, figures, positions
from tfsparse.channels.elementwise import activation_at_zero, channelwise_activation
from tfsparse.layers import SparseConv2D, SparseDense, _KernelGated

# A Dense/Conv2D's settings that SparseDense/SparseConv2D do not take: a
# layer with any of them keeps its kernel ungated rather than losing it.
_UNCARRIED_SETTINGS = (
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)


def _simple_io(node, width):
    """One input and one output with known channels, channels last."""
    if len(node.input_tensors) != 1 or len(node.outputs) != 1:
        return False
    if width(node.input_tensors[0]) is None or width(node.outputs[0]) is None:
        return False
    return getattr(node.operation, "data_format", "channels_last") == "channels_last"


class LinearHandler(Handler):
    """`Dense`, `Conv1D/2D/3D` (groups = 1), `SparseDense`, `SparseConv2D`."""

    role = LINEAR

    def accepts(self, node, width):
        return _simple_io(node, width) and getattr(node.operation, "groups", 1) == 1

    # --------------------------------------------------------- the kernel
    def dense_kernel(self, a, node):
        """(kernel as [taps, in, out], bias or None) applied at inference."""
        kernel, bias = a.kernel(node.operation)
        return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]), bias

    def unit_cost(self, node):
        """(weights, weights × positions) that one output unit owns: its kernel
        column and bias, once per output position (the penalty's group size,
        `group_by="params"` or `"flops"`)."""
        op, (y,) = node.operation, node.outputs
        owned = int(np.prod(op.kernel.shape[:-1])) + (1 if op.use_bias else 0)
        return owned, owned * positions(y)

    def feature_rows(self, node):
        """A Dense layer's units: each input feature meets one kernel row."""
        (x,), kernel = node.input_tensors, node.operation.kernel
        if len(x.shape) != 2 or len(kernel.shape) != 2:
            return None
        return int(kernel.shape[-1])

    def decayed_kernel(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        return node.operation.kernel, x, y

    # ---------------------------------------------------- forward / backward
    def forward(self, a, node):
        op, (y,) = node.operation, node.outputs
        n = a.width(y)
        kernel, bias = self.dense_kernel(a, node)
        zero = np.all(kernel == 0, axis=(0, 1))
        if bias is not None:
            zero &= bias == 0
        if channelwise_activation(op):
            zero &= activation_at_zero(op, n) == 0
        else:
            zero[:] = False
        a.set(y, np.ones(n), zero)

    def kept_columns(self, a, node):
        """Indices of the output units that are kept."""
        op, (y,) = node.operation, node.outputs
        if not channelwise_activation(op):
            return np.arange(a.width(y))
        return np.flatnonzero(a.live[id(y)])

    def needed_rows(self, a, node, cols=None):
        """Input channels that the kept columns read (bool per channel)."""
        (x,) = node.input_tensors
        kernel, _ = self.dense_kernel(a, node)
        cols = self.kept_columns(a, node) if cols is None else cols
        used = np.any(kernel[:, :, cols] != 0, axis=(0, 2))
        return ~a.zero[id(x)] & used

    def backward(self, a, node):
        a.need(node.input_tensors[0], self.needed_rows(a, node))

    # --------------------------------------------------------------- rebuild
    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry, cols = r.carry[id(x)], self.kept_columns(r.a, node)
        dummy = len(cols) == 0
        cols = np.arange(1) if dummy else cols
        kernel, bias = r.a.kernel(op)
        rows_scale = self.row_scale(r, node, carry)
        kernel = np.take(kernel, carry, axis=-2)[..., cols] * rows_scale[:, None]
        bias = None if bias is None else bias[cols].copy()
        if dummy:
            kernel[...] = 0
            bias = None if bias is None else bias * 0
        layer = self.twin(op, len(cols))
        r.put(y, r.call(node, layer), cols)
        weights = [kernel.astype(op.kernel.dtype)]
        if bias is not None:
            weights.append(bias.astype(op.bias.dtype))
        r.set_weights(layer, weights)

    def row_scale(self, r, node, carry):
        """Folded multiplier per carried input channel (0 where unused)."""
        (x,) = node.input_tensors
        s = r.a.scale[id(x)][carry]
        needed = self.needed_rows(r.a, node)[carry]
        if np.any(needed & ~np.isfinite(s)):
            r.refuse(x, r.describe(node.operation))
        return np.where(needed, s, 0.0)

    @staticmethod
    def twin(op, units, **updates):
        """A plain Dense/Conv with `op`'s configuration and `units` outputs."""
        if isinstance(op, SparseDense):
            config, cls = keras.layers.Dense(1).get_config(), keras.layers.Dense
        elif isinstance(op, SparseConv2D):
            config = keras.layers.Conv2D(1, op.kernel_size).get_config()
            config.update(
                kernel_size=op.kernel_size,
                strides=op.strides,
                padding=op.padding,
                data_format="channels_last",
            )
            cls = keras.layers.Conv2D
        else:
            config, cls = op.get_config(), type(op)
        if isinstance(op, _KernelGated):
            config.update(
                name=op.name,
                activation=keras.activations.serialize(op.activation),
                use_bias=op.use_bias,
                kernel_initializer=keras.initializers.serialize(op.kernel_initializer),
                bias_initializer=keras.initializers.serialize(op.bias_initializer),
                kernel_regularizer=keras.regularizers.serialize(op.kernel_regularizer),
                dtype=op.dtype_policy.name,
            )
        config["units" if issubclass(cls, keras.layers.Dense) else "filters"] = units
        config.update(updates)
        return cls.from_config(config)

    # ------------------------------------------------------------------ cost
    def cost(self, a, node):
        (x,), (y,) = node.input_tensors, node.outputs
        kernel, bias = self.dense_kernel(a, node)
        rows = np.flatnonzero(a.live[id(x)] & ~a.zero[id(x)])
        cols = self.kept_columns(a, node)
        kept = int(np.count_nonzero(kernel[:, rows][:, :, cols]))
        total = int(np.prod(node.operation.kernel.shape))
        n = positions(y)
        n_bias = 0 if bias is None else 1
        return figures(
            units_kept=len(cols),
            units_total=kernel.shape[-1],
            weights_kept=kept + n_bias * len(cols),
            weights_total=total + n_bias * kernel.shape[-1],
            flops_kept=kept * n,
            flops_total=total * n,
        )

    def cost_terms(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        taps = int(np.prod(op.kernel.shape[:-2]))
        terms = [Term(taps * positions(y), taps, ((x, None), (y, None)))]
        if getattr(op, "bias", None) is not None:
            terms.append(Term(0, 1, ((y, None),)))
        return terms

    def expected_flops(self, a, node, row, p):
        (x,), (y,) = node.input_tensors, node.outputs
        kernel, _ = self.dense_kernel(a, node)
        rows = np.flatnonzero(a.live[id(x)] & ~a.zero[id(x)])
        cols = self.kept_columns(a, node)
        weighted = _weighted_nonzeros(kernel, rows, cols, p(x)[rows], p(y)[cols])
        return weighted * positions(y)

    # ------------------------------------------------------- kernel gates
    @staticmethod
    def no_kernel_twin(op):
        """Why `op` has no kernel-gated twin (None where it has one): only
        `Dense` and ungrouped, undilated channels-last `Conv2D` do, and only
        without settings the twin does not carry."""
        if type(op) is keras.layers.Conv2D:
            if op.groups != 1 or tuple(op.dilation_rate) != (1, 1):
                return "it is a grouped or dilated Conv2D"
            if op.data_format != "channels_last":
                return "it is a channels-first Conv2D"
        elif type(op) is not keras.layers.Dense:
            return f"{type(op).__name__} has no kernel-gated twin (Dense and Conv2D have)"
        lost = [name for name in _UNCARRIED_SETTINGS if getattr(op, name, None) is not None]
        if lost:
            return f"its {', '.join(lost)} would be lost"
        return None

    @staticmethod
    def kernel_gated(op, make_gate):
        """`op` as a SparseDense/SparseConv2D whose kernel passes through the
        gate `make_gate()` returns, or None where `no_kernel_twin(op)` says
        why none exists."""
        if LinearHandler.no_kernel_twin(op) is not None:
            return None
        dense = type(op) is keras.layers.Dense
        common = dict(
            activation=op.activation,
            use_bias=op.use_bias,
            kernel_initializer=op.kernel_initializer,
            bias_initializer=op.bias_initializer,
            kernel_regularizer=op.kernel_regularizer,
            kernel_gate=make_gate(),
            name=op.name,
        )
        if dense:
            return SparseDense(op.units, **common)
        return SparseConv2D(
            op.filters, op.kernel_size, strides=op.strides, padding=op.padding, **common
        )


class GroupedConvHandler(LinearHandler):
    """A convolution with `groups` > 1 and several channels per group: output
    group k reads input group k. Keras needs equal groups, so each kept group
    keeps as many inputs and outputs as the largest needs (the extra ones are
    multiplied by 0), and a group without kept outputs goes whole."""

    def decayed_kernel(self, node):
        # Each output reads only its group's inputs: not one [inputs, outputs].
        del node
        return None

    def accepts(self, node, width):
        op, (x,) = node.operation, node.input_tensors
        return _simple_io(node, width) and 1 < op.groups != width(x)

    def dense_kernel(self, a, node):
        op = node.operation
        kernel, bias = a.kernel(op)
        taps = int(np.prod(kernel.shape[:-2]))
        per_in, out = kernel.shape[-2], kernel.shape[-1]
        g, per_out = op.groups, out // op.groups
        dense = np.zeros((taps, per_in * g, out), kernel.dtype)
        flat = kernel.reshape(taps, per_in, out)
        for k in range(g):
            dense[:, k * per_in : (k + 1) * per_in, k * per_out : (k + 1) * per_out] = flat[
                :, :, k * per_out : (k + 1) * per_out
            ]
        return dense, bias

    def _plan(self, a, node):
        """(kept groups, kept columns, this layer's input rows), equal per group."""
        op, (x,) = node.operation, node.input_tensors
        g, width_in, width_out = op.groups, a.width(x), a.width(node.outputs[0])
        per_in, per_out = width_in // g, width_out // g
        live_cols = LinearHandler.kept_columns(self, a, node)
        by_group = [live_cols[live_cols // per_out == k] for k in range(g)]
        groups = [k for k in range(g) if len(by_group[k])] or [0]
        n_cols = max(1, max(len(by_group[k]) for k in groups))
        rows = LinearHandler.needed_rows(self, a, node, live_cols)
        n_rows = max(1, max(int(rows[k * per_in : (k + 1) * per_in].sum()) for k in groups))
        cols, in_rows = [], []
        for k in groups:
            cols.append(_pad(by_group[k], np.arange(k * per_out, (k + 1) * per_out), n_cols))
            chosen = np.flatnonzero(rows[k * per_in : (k + 1) * per_in]) + k * per_in
            in_rows.append(_pad(chosen, np.arange(k * per_in, (k + 1) * per_in), n_rows))
        return groups, np.concatenate(cols), np.concatenate(in_rows)

    def kept_columns(self, a, node):
        return self._plan(a, node)[1]

    def backward(self, a, node):
        (x,) = node.input_tensors
        need = np.zeros(a.width(x), bool)
        need[self._plan(a, node)[2]] = True
        a.need(x, need)

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        groups, cols, rows = self._plan(r.a, node)
        carry = r.carry[id(x)]
        pos = np.searchsorted(carry, rows)
        source = r.new[id(x)]
        if len(pos) != len(carry) or np.any(pos != np.arange(len(carry))):
            source = r.take(source, pos, f"{op.name}_take")
        dense, bias = self.dense_kernel(r.a, node)
        s = r.a.scale[id(x)][rows]
        needed = LinearHandler.needed_rows(
            self, r.a, node, LinearHandler.kept_columns(self, r.a, node)
        )[rows]
        if np.any(needed & ~np.isfinite(s)):
            r.refuse(x, r.describe(op))
        scaled = dense[:, rows][:, :, cols] * np.where(needed, s, 0.0)[None, :, None]
        n_in, n_out = len(rows) // len(groups), len(cols) // len(groups)
        blocks = [
            scaled[:, i * n_in : (i + 1) * n_in, i * n_out : (i + 1) * n_out]
            for i in range(len(groups))
        ]
        kernel = np.concatenate(blocks, axis=-1).reshape(
            tuple(op.kernel.shape[:-2]) + (n_in, len(cols))
        )
        layer = self.twin(op, len(cols), groups=len(groups))
        r.put(y, r.call(node, layer, {id(x): source}), cols)
        weights = [kernel.astype(op.kernel.dtype)]
        if bias is not None:
            weights.append(bias[cols].astype(op.bias.dtype))
        r.set_weights(layer, weights)

    def cost_terms(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        taps = int(np.prod(op.kernel.shape[:-2]))
        per_in, per_out = int(x.shape[-1]) // op.groups, int(y.shape[-1]) // op.groups
        terms = [
            Term(
                taps * positions(y),
                taps,
                (
                    (x, np.arange(k * per_in, (k + 1) * per_in)),
                    (y, np.arange(k * per_out, (k + 1) * per_out)),
                ),
            )
            for k in range(op.groups)
        ]
        if op.bias is not None:
            terms.append(Term(0, 1, ((y, None),)))
        return terms


class SeparableConvHandler(LinearHandler):
    """`SeparableConv1D/2D`: a depthwise half (input channel c → d channels)
    then a pointwise half that ends the group. A closed input channel frees
    its depthwise slice and d pointwise rows; the multiplier folds into the
    depthwise kernel."""

    def decayed_kernel(self, node):
        # Two kernels, depthwise then pointwise: not one [inputs, outputs].
        del node
        return None

    def accepts(self, node, width):
        return _simple_io(node, width)

    def kernels(self, a, node):
        op, (x,) = node.operation, node.input_tensors
        channels = a.width(x)
        depthwise = as_numpy(op.depthwise_kernel)
        pointwise = as_numpy(op.pointwise_kernel)
        d = depthwise.shape[-1]
        bias = None if op.bias is None else as_numpy(op.bias)
        return (
            depthwise.reshape(-1, channels, d),
            pointwise.reshape(channels, d, pointwise.shape[-1]),
            bias,
        )

    def dense_kernel(self, a, node):
        depthwise, pointwise, bias = self.kernels(a, node)
        # Connectivity only (which input reaches which output): [1, in, out].
        reach = (np.any(depthwise != 0, axis=0)[:, :, None] & (pointwise != 0)).any(axis=1)
        return reach[None].astype("float32"), bias

    def unit_cost(self, node):
        op, (x,), (y,) = node.operation, node.input_tensors, node.outputs
        owned = int(x.shape[-1]) * op.depth_multiplier + (1 if op.use_bias else 0)
        return owned, owned * positions(y)

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry, cols = r.carry[id(x)], self.kept_columns(r.a, node)
        dummy = len(cols) == 0
        cols = np.arange(1) if dummy else cols
        depthwise, pointwise, bias = self.kernels(r.a, node)
        scale = self.row_scale(r, node, carry)
        new_depthwise = depthwise[:, carry, :] * scale[None, :, None]
        new_pointwise = pointwise[carry][:, :, cols] * (0.0 if dummy else 1.0)
        layer = self.twin(op, len(cols))
        r.put(y, r.call(node, layer), cols)
        weights = [
            new_depthwise.reshape(
                tuple(op.depthwise_kernel.shape[:-2]) + (len(carry), depthwise.shape[-1])
            ),
            new_pointwise.reshape(tuple(op.pointwise_kernel.shape[:-2]) + (-1, len(cols))),
        ]
        if bias is not None:
            weights.append(bias[cols] * (0.0 if dummy else 1.0))
        r.set_weights(layer, [w.astype("float32") for w in weights])

    def cost_terms(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        d, n = op.depth_multiplier, positions(y)
        taps = int(np.prod(op.depthwise_kernel.shape[:-2]))
        terms = [
            Term(taps * d * n, taps * d, ((x, None),)),
            Term(d * n, d, ((x, None), (y, None))),
        ]
        if op.bias is not None:
            terms.append(Term(0, 1, ((y, None),)))
        return terms

    def cost(self, a, node):
        (x,), (y,) = node.input_tensors, node.outputs
        depthwise, pointwise, bias = self.kernels(a, node)
        rows = np.flatnonzero(a.live[id(x)] & ~a.zero[id(x)])
        cols = self.kept_columns(a, node)
        kept_dw = int(np.count_nonzero(depthwise[:, rows]))
        kept_pw = int(np.count_nonzero(pointwise[rows][:, :, cols]))
        n = positions(y)
        n_bias = 0 if bias is None else 1
        return figures(
            units_kept=len(cols),
            units_total=pointwise.shape[-1],
            weights_kept=kept_dw + kept_pw + n_bias * len(cols),
            weights_total=depthwise.size + pointwise.size + n_bias * pointwise.shape[-1],
            flops_kept=(kept_dw + kept_pw) * n,
            flops_total=(depthwise.size + pointwise.size) * n,
        )


def _pad(chosen, candidates, count):
    """`chosen` plus the first other `candidates`, up to `count`, sorted."""
    extra = [c for c in candidates if c not in set(chosen.tolist())]
    return np.sort(np.concatenate([chosen, extra[: count - len(chosen)]]).astype(int))


def _weighted_nonzeros(kernel, rows, cols, p_in, p_out, block=1 << 22):
    """Σ p_in(i) · p_out(j) over the non-zero kernel entries in `rows` ×
    `cols` (over every tap of a [taps, in, out] kernel), a block of rows at a
    time so that a large kernel is never copied whole."""
    step = max(1, block // max(1, kernel.shape[0] * len(cols)))
    total = 0.0
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        used = (kernel[:, part][..., cols] != 0).astype("float64")
        total += float(np.einsum("kic,i,c->", used, p_in[start : start + step], p_out))
    return total
