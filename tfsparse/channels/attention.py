"""Multi-head attention: it reads the query, key and value channels through
its projections (ending their groups), produces new output channels, and has
heads of its own, which a head gate (`tfsparse.layers.GatedMultiHeadAttention`)
removes whole."""

import keras
import numpy as np

from tfsparse.channels.base import LINEAR, Handler, Term, as_numpy, figures
from tfsparse.layers import GatedMultiHeadAttention

_PROJECTIONS = ("query_dense", "key_dense", "value_dense", "output_dense")


def _inputs(node):
    """(query, value, key) Keras tensors of an attention call (key may be value)."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    query = args[0] if args else kwargs["query"]
    value = args[1] if len(args) > 1 else kwargs["value"]
    key = args[2] if len(args) > 2 else kwargs.get("key")
    return query, value, value if key is None else key


class AttentionHandler(Handler):
    """`MultiHeadAttention` (and its head-gated twin) on [batch, sequence,
    channels] tensors, attending over the sequence axis."""

    role = LINEAR

    def accepts(self, node, width):
        op = node.operation
        if len(node.outputs) != 1 or op._use_gate or op._output_shape is not None:
            return False
        if op._attention_axes not in (None, (1,), [1]):
            return False
        if (
            isinstance(op, GatedMultiHeadAttention)
            and op.head_gate is not None
            and (op.head_gate.input_dependent)
        ):
            return False
        tensors = _inputs(node) + (node.outputs[0],)
        return all(len(t.shape) == 3 and width(t) is not None for t in tensors)

    # ------------------------------------------------------------- heads
    def heads(self, a, node):
        """(multiplier per head, kept heads) at inference."""
        op = node.operation
        gate = getattr(op, "head_gate", None)
        if gate is None:
            n = op.num_heads
            return np.ones(n), np.ones(n, bool)
        return a.gate(gate)

    @staticmethod
    def kernels(op):
        """{projection: (kernel, bias or None)} as NumPy arrays."""
        result = {}
        for name in _PROJECTIONS:
            layer = getattr(op, name)
            bias = getattr(layer, "bias", None)
            result[name] = (as_numpy(layer.kernel), None if bias is None else as_numpy(bias))
        return result

    def unit_cost(self, node):
        """(weights, multiply-adds per example) of one head."""
        op = node.operation
        query, value, key = _inputs(node)
        t_q, t_kv = int(query.shape[1]), int(value.shape[1])
        k, v = op.key_dim, op.value_dim or op.key_dim
        d_q, d_k, d_v = (int(t.shape[-1]) for t in (query, key, value))
        d_out = int(node.outputs[0].shape[-1])
        bias = 1 if op.use_bias else 0
        weights = (d_q + bias) * k + (d_k + bias) * k + (d_v + bias) * v + v * d_out
        flops = (
            t_q * d_q * k
            + t_kv * d_k * k
            + t_kv * d_v * v
            + t_q * t_kv * (k + v)
            + t_q * v * d_out
        )
        return weights, flops

    def cost_terms(self, node):
        """Per head, scaled by the head gate's units (the query, key and value
        channels come from a normalized stream, which is never gated)."""
        op = node.operation
        weights, flops = self.unit_cost(node)
        gate = getattr(op, "head_gate", None)
        heads = ((gate, None),) if gate is not None else ()
        scale = 1 if gate is not None else op.num_heads
        terms = [Term(flops * scale, weights * scale, heads)]
        if op.use_bias:
            terms.append(Term(0, int(node.outputs[0].shape[-1]), ()))
        return terms

    # ---------------------------------------------------- forward / backward
    def kept_columns(self, a, node):
        return np.flatnonzero(a.live[id(node.outputs[0])])

    def forward(self, a, node):
        (y,), op = node.outputs, node.operation
        kernel, bias = self.kernels(op)["output_dense"]
        zero = np.all(kernel == 0, axis=(0, 1))
        if bias is not None:
            zero &= bias == 0
        a.set(y, np.ones(a.width(y)), zero)

    def needed_rows(self, a, node):
        """{id(tensor): needed channels} for the query, key and value inputs."""
        _, kept = self.heads(a, node)
        kernels = self.kernels(node.operation)
        query, value, key = _inputs(node)
        needed = {}
        for tensor, name in ((query, "query_dense"), (key, "key_dense"), (value, "value_dense")):
            used = np.any(kernels[name][0][:, kept, :] != 0, axis=(1, 2))
            rows = used & ~a.zero[id(tensor)]
            needed[id(tensor)] = needed.get(id(tensor), False) | rows
        return needed

    def backward(self, a, node):
        rows = self.needed_rows(a, node)
        for tensor in node.input_tensors:
            if id(tensor) in rows:
                a.need(tensor, rows[id(tensor)])
            elif a.tracked(tensor):  # an attention mask: read whole
                a.need(tensor, True)

    # --------------------------------------------------------------- rebuild
    def rebuild(self, r, node):
        (y,), op = node.outputs, node.operation
        query, value, key = _inputs(node)
        projected = {id(query), id(value), id(key)}
        for tensor in node.input_tensors:
            if id(tensor) not in projected and not r.unchanged(tensor):
                r.refuse(tensor, r.describe(op))
        multiplier, kept = self.heads(r.a, node)
        heads = np.flatnonzero(kept)
        cols = self.kept_columns(r.a, node)
        cols = np.arange(1) if len(cols) == 0 else cols
        kernels = self.kernels(op)
        if not len(heads) and len(cols) == len(r.carry[id(query)]):
            return self._constant(r, node, kernels, cols)
        silent = len(heads) == 0
        heads = np.arange(1) if silent else heads
        rows = self.needed_rows(r.a, node)
        weights = []
        for tensor, name in ((query, "query_dense"), (key, "key_dense"), (value, "value_dense")):
            carry = r.carry[id(tensor)]
            s = r.a.scale[id(tensor)][carry]
            needed = rows[id(tensor)][carry]
            if np.any(needed & ~np.isfinite(s)):
                r.refuse(tensor, r.describe(op))
            kernel, bias = kernels[name]
            weights.append(kernel[carry][:, heads] * np.where(needed, s, 0.0)[:, None, None])
            if bias is not None:
                weights.append(bias[heads])
        kernel, bias = kernels["output_dense"]
        scale = 0.0 if silent else multiplier[heads][:, None, None]
        weights.append(kernel[heads][:, :, cols] * scale)
        if bias is not None:
            weights.append(bias[cols])
        config = op.get_config()
        config.pop("head_gate", None)
        config.update(num_heads=len(heads), name=op.name)
        if len(cols) != len(r.carry[id(query)]):
            config["output_shape"] = len(cols)
        layer = keras.layers.MultiHeadAttention.from_config(config)
        r.put(y, r.call(node, layer), cols)
        r.set_weights(layer, [w.astype("float32") for w in weights])

    @staticmethod
    def _constant(r, node, kernels, cols):
        """Every head closed: the attention outputs its output bias (or 0)
        whatever the input, so it becomes that constant (the residual sum
        around it keeps only the residual)."""
        (y,), op = node.outputs, node.operation
        bias = kernels["output_dense"][1]
        offset = [0.0] * len(cols) if bias is None else [float(b) for b in bias[cols]]
        layer = keras.layers.Rescaling(scale=0.0, offset=offset, name=op.name)
        query = _inputs(node)[0]
        r.put(y, layer(r.new[id(query)]), cols)

    # ----------------------------------------------------------- head gates
    @staticmethod
    def inner_gates(node):
        gate = getattr(node.operation, "head_gate", None)
        return [] if gate is None else [gate]

    @staticmethod
    def inner_units(node):
        """Units a gate inside the layer masks: its heads."""
        return node.operation.num_heads

    @staticmethod
    def gated_twin(op, gate):
        """`op` as a `GatedMultiHeadAttention` with `gate` on its heads."""
        config = op.get_config()
        config["head_gate"] = gate
        return GatedMultiHeadAttention.from_config(config)

    @staticmethod
    def copy_weights(new, old):
        """The projections of `old` into its twin `new` (both built)."""
        for name in _PROJECTIONS:
            getattr(new, name).set_weights(getattr(old, name).get_weights())

    # ------------------------------------------------------------------ cost
    def cost(self, a, node):
        op = node.operation
        _, kept = self.heads(a, node)
        query, value, key = _inputs(node)
        t_q, t_kv = int(query.shape[1]), int(value.shape[1])
        k, v = op.key_dim, op.value_dim or op.key_dim
        rows = self.needed_rows(a, node)
        live = {id(t): a.live[id(t)] & rows[id(t)] for t in (query, key, value)}
        d_q, d_k, d_v = (int(live[id(t)].sum()) for t in (query, key, value))
        cols = len(self.kept_columns(a, node))
        n, total = int(kept.sum()), int(kept.size)
        bias = 1 if op.use_bias else 0

        def count(heads, dq, dk, dv, out):
            weights = (
                (dq + bias) * heads * k
                + (dk + bias) * heads * k
                + (dv + bias) * heads * v
                + heads * v * out
                + bias * out
            )
            flops = heads * (
                t_q * dq * k + t_kv * dk * k + t_kv * dv * v + t_q * t_kv * (k + v) + t_q * v * out
            )
            return weights, flops

        widths = [int(t.shape[-1]) for t in (query, key, value, node.outputs[0])]
        weights_total, flops_total = count(total, *widths)
        weights_kept, flops_kept = count(n, d_q, d_k, d_v, cols) if n else (bias * cols, 0)
        return figures(
            units_kept=n,
            units_total=total,
            weights_kept=weights_kept,
            weights_total=weights_total,
            flops_kept=flops_kept,
            flops_total=flops_total,
        )
