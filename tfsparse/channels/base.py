"""The handler contract: what one kind of layer does to channels.

A handler answers, for one call node of its layer, every question that
`sparsify` (channel groups), `compact` (rebuilding with fewer channels) and
`summary` (what survives, what it costs) ask about a layer. Handlers are
stateless; the table in `tfsparse.channels.table` maps layer classes to them.

Channel facts (see `ChannelAnalysis`) are kept per tensor with a known last
axis:

- `scale`: s with old value = s × new value, per channel: the multiplier of a
  removed gate that is still to be folded into a later layer (0 where the old
  value is exactly 0; NaN where no such s exists);
- `zero`: channels that are exactly 0 at inference;
- `live`: channels that something downstream needs.

The base class is the *opaque* handler, used for every layer the table does
not know: it reads all of its input channels as they are, and its outputs are
new channels.
"""

import dataclasses

import numpy as np
from keras import ops

OPAQUE, MAP, LINEAR, GATE = "opaque", "map", "linear", "gate"


@dataclasses.dataclass(frozen=True)
class Term:
    """Part of a layer's cost as a function of which units are kept:
    `flops` × Π over `selections` of (Σ of p(c) over the selected units),
    and likewise `weights`. A selection is `(tensor, indices)` (channels of a
    tensor; `indices` None for all) or `(gate, indices)` (units a gate held
    inside the layer masks, such as attention heads). With every p 1 the
    terms add up to the layer's dense cost; `tfsparse.budget` evaluates them
    with the gates' open probabilities."""

    flops: float
    weights: float
    selections: tuple = ()


def positions(tensor):
    """Number of positions per example (every axis but batch and channels)."""
    return int(np.prod([d for d in tensor.shape[1:-1]], dtype=np.int64))


def as_numpy(value, dtype=None):
    return np.asarray(ops.convert_to_numpy(value), dtype=dtype)


def figures(
    units_kept=None, units_total=None, weights_kept=0, weights_total=0, flops_kept=0, flops_total=0
):
    """One summary row's numbers."""
    return dict(
        units_kept=units_kept,
        units_total=units_total,
        weights_kept=weights_kept,
        weights_total=weights_total,
        flops_kept=flops_kept,
        flops_total=flops_total,
    )


class Handler:
    """An opaque layer: needs every input channel unchanged, outputs new channels."""

    role = OPAQUE

    def accepts(self, node, width):
        """Whether this handler can treat `node` (its configuration and the
        widths of its tensors; `width(t)` is None for an untracked tensor).
        The table falls back to the opaque handler otherwise."""
        del node, width
        return True

    # ----------------------------------------------------------- grouping
    def links(self, node):
        """For channel-mapping layers: a list of (input tensor, src) where
        src[j] is the channel of that input that output channel j carries
        (-1 for none). None for layers that end channel groups."""
        del node
        return None

    # ---------------------------------------------------- forward / backward
    def forward(self, a, node):
        for tensor in node.outputs:
            a.plain(tensor)

    def backward(self, a, node):
        for tensor in node.input_tensors:
            if a.tracked(tensor):
                a.need(tensor, True if a.strict else ~a.zero[id(tensor)])

    # --------------------------------------------------------------- rebuild
    def rebuild(self, r, node):
        op = node.operation
        changed = [t for t in node.input_tensors if not r.unchanged(t)]
        if changed:
            r.refuse(changed, r.describe(op))
        r.check_plain(op)
        outputs = r.call(node, r.clone(op))
        for old, new in zip(node.outputs, _flat(outputs)):
            r.put(old, new, None)

    # ---------------------------------------------------- feature gates
    # `sparsify(gate_features=True)` gates the features of a flat tensor (the
    # network's input, or what a layer with `makes_flat_features` outputs)
    # where every reader can take them (`feature_rows` is not None).
    makes_flat_features = False

    def feature_rows(self, node):
        """Kernel rows that each feature of the layer's flat (2-D) input is
        multiplied into, the cost a feature gate switches off; None where a
        gate on single input features does not fit the layer."""
        del node
        return None

    def decayed_kernel(self, node):
        """(kernel variable, input tensor, output tensor) for a layer whose
        kernel is [taps..., inputs, outputs] over the channels of those
        tensors, the shape a weight decay under the gates reads; None for
        the others (their kernels keep a plain L2)."""
        del node
        return None

    @staticmethod
    def inner_gates(node):
        """Gates held inside the layer (an attention layer's head gate)."""
        del node
        return []

    # ------------------------------------------------------------------ cost
    def cost_terms(self, node):
        """The layer's cost as `Term`s (an opaque layer: its weights, no FLOPs)."""
        op = node.operation
        count = op.count_params() if hasattr(op, "count_params") else 0
        return [Term(0, count)] if count else []

    def cost(self, a, node):
        count = node.operation.count_params() if hasattr(node.operation, "count_params") else 0
        return figures(weights_kept=count, weights_total=count)

    # -------------------------------------------- per-example (DBB) activity
    def expected_flops(self, a, node, row, p):
        """Expected multiply-adds per example, given `p(t)`: the fraction of
        examples in which each channel of tensor t is on and needed."""
        del a, node, p
        return float(row["flops_kept"])

    def per_example_on(self, a, node, on):
        """Which channels of the output can be non-zero per example, given
        `on(t)` for the inputs (bool [batch, C] or None = every example)."""
        del a, node, on
        return None

    def per_example_need(self, a, node, need_out):
        """Per-example needs of the inputs, given the output's (None = every
        channel in every example). Default: every input channel."""
        del need_out
        return {id(t): None for t in node.input_tensors if a.tracked(t)}


def _flat(outputs):
    import keras

    return keras.tree.flatten(outputs)


class MapHandler(Handler):
    """A layer whose output channels each come from fixed input channels
    (pass-through, index maps, element-wise merges)."""

    role = MAP

    def links(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        return [(x, np.arange(int(y.shape[-1])))]

    def accepts(self, node, width):
        return (
            len(node.outputs) == 1
            and width(node.outputs[0]) is not None
            and all(width(t) is not None for t, _ in self.links(node))
        )

    def forward(self, a, node):
        """Value-preserving maps (pooling, padding, dropout...): the facts of
        the source channel, for every output channel."""
        ((x, src),) = self.links(node)
        s, z, origin, blocker = a.facts(x)
        a.set(node.outputs[0], s[src], z[src], origin, blocker)

    def backward(self, a, node):
        live = a.live[id(node.outputs[0])]
        for x, src in self.links(node):
            a.need(x, scatter(src, live, a.width(x)))

    def rebuild(self, r, node):
        """Layers without per-channel weights: the same layer on fewer channels."""
        (x,), (y,) = node.input_tensors, node.outputs
        r.put(y, r.call(node, r.clone(node.operation)), r.carry[id(x)])

    def cost(self, a, node):
        return figures()

    def cost_terms(self, node):
        return []

    def per_example_on(self, a, node, on):
        ((x, src),) = self.links(node)
        value = on(x)
        return None if value is None else value[:, src]

    def per_example_need(self, a, node, need_out):
        result = {}
        for x, src in self.links(node):
            if need_out is None:
                result[id(x)] = None
                continue
            need = np.zeros((need_out.shape[0], a.width(x)), bool)
            np.logical_or.at(need.T, src[src >= 0], need_out.T[src >= 0])
            result[id(x)] = need
        return result


def scatter(src, values, width):
    """Input channels that some needed output channel comes from."""
    result = np.zeros(width, bool)
    ok = src >= 0
    np.logical_or.at(result, src[ok], np.asarray(values, bool)[ok])
    return result
