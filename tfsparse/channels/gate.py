"""The handler of unit-gate calls: a multiplier to fold, units to remove."""

import numpy as np

from tfsparse import _graph
from tfsparse.channels.base import MapHandler, figures
from tfsparse.gates.base import UNIT


def coverage(node):
    """(offset, repeat) of a gate call: the channels its mask covers."""
    return _graph.node_kwarg(node, "offset", 0), _graph.node_kwarg(node, "repeat", 1)


def spread(node, values, fill):
    """A per-unit array of a gate call laid out over its input's channels."""
    (x,) = node.input_tensors
    offset, repeat = coverage(node)
    values = np.repeat(np.asarray(values), repeat)
    out = np.full(int(x.shape[-1]), fill, dtype=values.dtype)
    out[offset : offset + len(values)] = values
    return out


class GateHandler(MapHandler):
    """A unit gate disappears in compaction: its closed units are removed
    upstream and downstream, its multiplier is folded into later layers."""

    role = "gate"

    def accepts(self, node, width):
        return (
            node.operation.structure == UNIT
            and len(node.input_tensors) == 1
            and super().accepts(node, width)
        )

    def forward(self, a, node):
        (x,), (y,), gate = node.input_tensors, node.outputs, node.operation
        s, z, origin, blocker = a.facts(x)
        m, kept = a.gate(gate)
        a.set(
            y,
            s * spread(node, m, 1.0),
            z | ~spread(node, kept, True),
            origin | {gate.name},
            blocker,
        )

    def rebuild(self, r, node):
        (x,), (y,), gate = node.input_tensors, node.outputs, node.operation
        carry = r.carry[id(x)]
        keep = np.flatnonzero(r.a.live[id(y)][carry])
        keep = keep if len(keep) else np.arange(1)
        out = r.new[id(x)]
        if len(keep) != len(carry):
            out = r.take(out, keep, f"{gate.name}_take")
        kept = carry[keep]
        if gate.input_dependent:
            layer = r.per_example_layer(gate, x, kept, r.a.live[id(y)][kept])
            if layer is not None:
                out = layer(out)
        r.put(y, out, kept)

    def cost(self, a, node):
        _, kept = a.gate(node.operation)
        return figures(units_kept=int(kept.sum()), units_total=int(kept.size))

    def per_example_on(self, a, node, on):
        return on(node.input_tensors[0])
