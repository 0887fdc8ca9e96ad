"""Per-channel facts about every tensor of a model (used by compact and summary)."""

from collections import Counter

import numpy as np

from tfsparse import _graph
from tfsparse.channels import table
from tfsparse.channels.base import as_numpy
from tfsparse.layers import inference_bias, inference_kernel


class ChannelAnalysis:
    """Per-channel facts about every tensor of a Sequential/Functional model.

    For each tensor with a known channel (last) axis:

    - `scale[t]`: s such that old value = s × new value on each channel (the
      pending gate multiplier; 0 where the old value is exactly 0 while the new
      one need not be; NaN where no such s exists);
    - `zero[t]`: channels that are exactly 0 at inference;
    - `live[t]`: channels that something downstream needs.

    Facts are computed forward (scale, zero) then backward (live) by the
    handler of each call node (`tfsparse.channels.table`). Nested models are
    inlined first (`self.graph` is then a flattened copy).

    Args:
        model: a built Sequential or Functional model.
        strict: layers that compaction cannot shrink need all their input
            channels (compaction); with `strict=False` they need only the
            non-zero ones (the summary's count of what survives).
    """

    def __init__(self, model, strict=True):
        self.model = model
        self.graph = _graph.flattened(model)
        self.nodes = _graph.nodes_in_order(self.graph)
        uses = Counter(id(node.operation) for node in self.nodes)
        self.handler = {
            id(node): table.handler_for(node, self.width, shared=uses[id(node.operation)] > 1)
            for node in self.nodes
        }
        self.strict = strict
        self.scale, self.zero, self.origin, self.blocker, self.live = {}, {}, {}, {}, {}
        self._kernels = {}
        self._gates = {}
        self._forward()
        self._backward()

    # ------------------------------------------------------------- helpers
    @staticmethod
    def width(tensor):
        shape = tensor.shape
        return None if len(shape) < 2 or shape[-1] is None else int(shape[-1])

    def tracked(self, tensor):
        return id(tensor) in self.scale

    def kernel(self, op):
        """(kernel, bias) that `op` applies at inference, as NumPy arrays."""
        if id(op) not in self._kernels:
            self._kernels[id(op)] = (inference_kernel(op), inference_bias(op))
        return self._kernels[id(op)]

    def gate(self, gate):
        """(multiplier, kept) of a unit gate (see `gate_multiplier`), once per gate."""
        if id(gate) not in self._gates:
            self._gates[id(gate)] = gate_multiplier(gate)
        return self._gates[id(gate)]

    def set(self, tensor, scale, zero, origin=frozenset(), blocker=None):
        if self.width(tensor) is None:
            return
        self.scale[id(tensor)] = np.asarray(scale, dtype="float64")
        self.zero[id(tensor)] = np.asarray(zero, dtype=bool)
        self.origin[id(tensor)] = frozenset(origin)
        self.blocker[id(tensor)] = blocker

    def plain(self, tensor):
        n = self.width(tensor)
        if n is not None:
            self.set(tensor, np.ones(n), np.zeros(n, bool))

    def facts(self, tensor):
        key = id(tensor)
        return self.scale[key], self.zero[key], self.origin[key], self.blocker[key]

    def need(self, tensor, channels):
        self.live[id(tensor)] |= channels

    # ------------------------------------------------------------- passes
    def _forward(self):
        for tensor in self.graph.inputs:
            self.plain(tensor)
        for node in self.nodes:
            self.handler[id(node)].forward(self, node)

    def _backward(self):
        self.live = {key: np.zeros(len(s), bool) for key, s in self.scale.items()}
        for tensor in self.graph.outputs:
            if self.tracked(tensor):
                self.live[id(tensor)][:] = True
        for node in reversed(self.nodes):
            self.handler[id(node)].backward(self, node)


def gate_multiplier(gate):
    """(multiplier, kept) of a unit gate as NumPy arrays; the multiplier is 0
    where the gate is not active."""
    mask = as_numpy(gate.mask(), "float64").reshape(-1)
    kept = as_numpy(gate.active(), bool).reshape(-1)
    if np.any(mask[~kept] != 0):
        raise ValueError(
            f"Gate {gate.name!r}: mask() is non-zero on units that active() "
            "reports closed; its units cannot be removed."
        )
    if np.any(mask < 0) or not np.all(np.isfinite(mask)):
        raise ValueError(
            f"Gate {gate.name!r}: mask() has negative or non-finite values; "
            "only non-negative multipliers can be folded."
        )
    return np.where(kept, mask, 0.0), kept
