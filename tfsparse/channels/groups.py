"""Channel groups: the channels that must be kept or removed together.

Every channel of every tensor is a node; a layer that moves channels without
mixing them (the handler table's maps: activations, BatchNormalization,
pooling, depthwise convolutions, residual sums, concatenations...) links each
output channel to the input channels it comes from. A connected component is
one *unit*: removing it means removing that channel from every tensor that
carries it. Units that appear together in the output of a Dense/Conv layer
form a *group*, which gets one gate.

A group can be removed only if every layer that reads it can shrink: Dense
and convolutions (which end groups) drop kernel rows, maps drop channels. A
group that reaches a model output or a layer the table does not know (a
LayerNormalization, whose statistics count every channel) is left whole, and
`reasons` says why.
"""

import collections

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tfsparse import _graph
from tfsparse.channels import table
from tfsparse.channels.base import LINEAR, MAP, OPAQUE
from tfsparse.channels.gate import coverage


class Group:
    """One gateable set of units.

    Attributes:
        units: component ids, in the channel order of the first producer.
        producers: Dense/Conv call nodes whose output columns are the units.
        layers: per-channel layers with weights in the group (BN, depthwise).
        sites: dict id(tensor) → (tensor, offset, repeat, consumer nodes):
            where the gate is called, and on which channels.
    """

    def __init__(self, units, first_producer):
        self.units = list(units)
        self.producers = [first_producer]
        self.layers = []
        self.sites = {}

    @property
    def name(self):
        return self.producers[0].operation.name


class ChannelGroups:
    """The channel groups of a Functional graph and where their gates go.

    Args:
        graph: a Functional model (nested models already inlined).

    Attributes:
        groups: the removable groups, in the order of their first producer.
        left_whole: dict producer name → why its channels cannot be removed.
        handler: dict id(node) → its handler.
        reaches_output: set of ids of Dense/Conv nodes whose output channels
            reach a model output (classifiers).
    """

    def __init__(self, graph):
        self.graph = graph
        self.nodes = _graph.nodes_in_order(graph)
        self.users = _graph.consumers(graph)
        uses = collections.Counter(id(n.operation) for n in self.nodes)
        self.handler = {
            id(n): table.handler_for(n, _width, shared=uses[id(n.operation)] > 1)
            for n in self.nodes
        }
        self._number_slots()
        self._link()
        self._block()
        self.left_whole = {}
        groups = self._find_groups()
        self._place(groups)
        self.groups = [g for g in groups if g.name not in self.left_whole and g.sites]
        self.reaches_output = {
            id(n)
            for n in self.nodes
            if self._role(n) == LINEAR
            and np.isin(self.comps(n.outputs[0]), self._output_comps).any()
        }

    # -------------------------------------------------------------- slots
    def _role(self, node):
        return self.handler[id(node)].role

    def _number_slots(self):
        self.base, total = {}, 0
        tensors = list(self.graph.inputs) + [t for n in self.nodes for t in n.outputs]
        for tensor in tensors:
            n = _width(tensor)
            if n is not None and id(tensor) not in self.base:
                self.base[id(tensor)] = total
                total += n
        self.size = total

    def _slots(self, tensor):
        start = self.base.get(id(tensor))
        if start is None:
            return np.zeros(0, int)
        return np.arange(start, start + _width(tensor))

    def _link(self):
        rows, cols = [], []
        for node in self.nodes:
            if self._role(node) not in (MAP, "gate"):
                continue
            out = self._slots(node.outputs[0])
            for tensor, src in self.handler[id(node)].links(node):
                ok = src >= 0
                rows.append(out[ok])
                cols.append(self._slots(tensor)[src[ok]])
        rows = np.concatenate(rows) if rows else np.zeros(0, int)
        cols = np.concatenate(cols) if cols else np.zeros(0, int)
        matrix = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.size, self.size))
        _, self.comp = connected_components(matrix, directed=False)

    def comps(self, tensor):
        return self.comp[self._slots(tensor)]

    def gate_units(self, node):
        """The unit (component) behind each mask value of a unit-gate call."""
        offset, repeat = coverage(node)
        units = int(node.operation.mask_shape[0])
        return self.comps(node.input_tensors[0])[offset + np.arange(units) * repeat]

    def _block(self):
        """Units that some reader needs whole."""
        blocked = set()
        for tensor in self.graph.outputs:
            blocked.update(self.comps(tensor).tolist())
        self._output_comps = np.array(sorted(blocked), dtype=int)
        self.blocker = {}
        for node in self.nodes:
            role = self._role(node)
            if role == OPAQUE:
                readers = node.input_tensors
            elif role in (MAP, "gate"):
                linked = {id(t) for t, _ in self.handler[id(node)].links(node)}
                readers = [t for t in node.input_tensors if id(t) not in linked]
            else:
                continue
            for tensor in readers:
                for comp in self.comps(tensor).tolist():
                    self.blocker.setdefault(comp, node.operation)
        for comp in self._output_comps.tolist():
            self.blocker.setdefault(comp, None)

    # ------------------------------------------------------------- groups
    def _find_groups(self):
        groups, owner = [], {}
        for node in self.nodes:
            if self._role(node) != LINEAR:
                continue
            comps = self.comps(node.outputs[0])
            name = node.operation.name
            reason = self._why_whole(comps)
            if reason:
                self.left_whole[name] = reason
                continue
            known = [owner[c] for c in comps.tolist() if c in owner]
            if not known:
                group = Group(comps, node)
                groups.append(group)
                for c in comps.tolist():
                    owner[c] = group
                continue
            group = known[0]
            if any(g is not group for g in known) or set(comps.tolist()) - set(group.units):
                self.left_whole[name] = "the channels overlap several channel groups only in part"
                continue
            group.producers.append(node)
        for node in self.nodes:
            handler = self.handler[id(node)]
            if self._role(node) == MAP and hasattr(handler, "unit_cost"):
                comps = self.comps(node.input_tensors[0])
                group = owner.get(comps[0]) if comps.size else None
                if group is not None:
                    group.layers.append(node)
        self._owner = owner
        return groups

    def _why_whole(self, comps):
        if len(set(comps.tolist())) != len(comps):
            return "two of the channels are merged into one"
        for comp in comps.tolist():
            if comp in self.blocker:
                op = self.blocker[comp]
                if op is None:
                    return "the channels reach a model output"
                return (
                    f"the channels reach a {type(op).__name__} {op.name!r}, which "
                    "needs all of them"
                )
        return None

    # -------------------------------------------------------------- sites
    def _place(self, groups):
        """Calls of each group's gate: before every layer that reads the group
        through its kernel rows, moved back through value-preserving layers
        (pooling, Flatten, Dropout, padding) to where the channels are plain."""
        unit_of = {id(g): {c: i for i, c in enumerate(g.units)} for g in groups}
        for node in self.nodes:
            if self._role(node) != LINEAR:
                continue
            inputs = {id(t): t for t in node.input_tensors}.values()
            for tensor in inputs:
                self._place_input(tensor, node, unit_of)

    def _place_input(self, tensor, node, unit_of):
        read = {
            id(self._owner[c]): self._owner[c]
            for c in set(self.comps(tensor).tolist())
            if c in self._owner
        }
        if not read:
            return
        tensor, reader = self.hoist(tensor, node)
        comps = self.comps(tensor)
        for group in read.values():
            site = _layout(comps, unit_of[id(group)])
            if site is None:
                self.left_whole.setdefault(
                    group.name,
                    (
                        "the channels are interleaved with others where "
                        f"{node.operation.name!r} reads them"
                    ),
                )
                continue
            offset, repeat = site
            entry = group.sites.setdefault(id(tensor), (tensor, offset, repeat, []))
            if reader not in entry[3]:
                entry[3].append(reader)

    def hoist(self, tensor, reader):
        """(tensor, node): the edge where a gate for `reader`'s input goes.
        When only Dense/Conv layers read `tensor`, the gate moves back through
        value-preserving single-input layers (pooling, Flatten, Dropout,
        padding) as long as each tensor on the way has one reader."""
        readers = self.users.get(id(tensor), [])
        if any(self._role(n) != LINEAR for n in readers):
            return tensor, reader
        while True:
            producer = _graph.producer_node(tensor)
            if producer is None or id(producer) not in self.handler:
                return tensor, reader
            if not getattr(self.handler[id(producer)], "value_preserving", False):
                return tensor, reader
            source = producer.input_tensors[0]
            if _width(source) is None or len(self.users.get(id(source), [])) != 1:
                return tensor, reader
            tensor, reader = source, producer


def _layout(comps, unit_of):
    """(offset, repeat) such that channel offset + u·repeat + r carries unit u
    and no other channel carries the group, or None."""
    mine = np.array([unit_of.get(c, -1) for c in comps.tolist()])
    where = np.flatnonzero(mine >= 0)
    units = len(set(unit_of.values()))
    if len(where) % units:
        return None
    repeat = len(where) // units
    offset = int(where[0])
    expected = offset + np.arange(units * repeat)
    if len(where) != len(expected) or np.any(where != expected):
        return None
    if np.any(mine[where] != np.repeat(np.arange(units), repeat)):
        return None
    return offset, repeat


def _width(tensor):
    shape = tensor.shape
    return None if len(shape) < 2 or shape[-1] is None else int(shape[-1])
