"""`summary`: per-layer units, weights and FLOPs that survive the gates.

The same figures come out for a gated model and for its compacted version, so
the two tables can be compared line by line. What survives:

- a unit a gate closes is gone, and with it the producer's kernel column and
  bias (and the BatchNormalization parameters of that channel) and the
  consumers' kernel rows (through Flatten, every position of the channel);
- a weight that is exactly zero at inference is gone (a weight gate's closed
  mask, a pruned weight, a zero kernel entry);
- a Dense/Conv unit whose kernel column and bias are zero is gone when its
  activation maps 0 to 0.

Counting conventions:

- *Weights* are a layer's parameters as `count_params()` counts them: kernel
  and bias of Dense/Conv (kept: non-zero kernel entries in surviving rows and
  columns, plus the bias of each surviving unit), the four per-channel values
  of BatchNormalization (γ, β, moving mean and variance; kept: those of the
  surviving channels). Other layers with weights are counted as they are.
  The gates' own variables are not network weights: they are reported apart
  (`gate_params`) and vanish with `tfsparse.compact`.
- *FLOPs* are multiply-accumulates per example, at inference:
  Dense and Conv1D/2D/3D: one per (non-zero) kernel weight per output position
  (the output shape accounts for stride and padding; a Dense layer has one
  position per vector); DepthwiseConv2D: likewise with its depthwise kernel;
  Max/AveragePooling: one per window element per output element; global
  pooling: one per input element; BatchNormalization: one per element.
  Biases, activations, additions and gates count 0.

For input-dependent gates (DBB) the kept units are those of the static part;
given a batch `x`, `summary` also reports the average number of units active
per example (from the gate's per-example inference mask) and the *expected
FLOPs per example*, counted with the per-example active units on both sides
of each layer. (The BB authors' FLOPs script counts a DBB layer's outputs at
its static units, since its gate reads them; that count is higher.)

- p(c), for each channel c of each tensor, is the fraction of the examples of
  `x` for which channel c is non-zero after the input-dependent gate on that
  channel: channel c is on for an example when every input-dependent gate on
  it has a non-zero inference mask there (`gate.inference_mask(inputs)` on
  the gate's real input, read from a probe `keras.Model` on the intermediate
  tensors; for a spatial mask, any position counts). p is 1 for channels
  without an input-dependent gate; statically removed channels are left out
  of every count, as for the kept figures (p = 0).
- p follows the channel map of the kept figures (`ChannelAnalysis`): forward
  from a gate through activations that map 0 to 0, pooling, Dropout,
  TakeFeatures and Flatten (channel c → its positions), but not through
  BatchNormalization (BN(0) ≠ 0), Dense/Conv or other layers; and backward
  from a gate to the layer that produces its channels, through activations,
  BatchNormalization, pooling and Flatten: a channel is needed for an example
  when some consumer needs it there (Dense/Conv and other layers need every
  channel in every example). p(c) counts the examples where channel c is
  both on and needed.
- A linear layer (Dense, Conv, SparseDense, SparseConv2D, DepthwiseConv2D)
  costs, per output position, Σ p_in(i) · p_out(j) over its kept non-zero
  kernel weights w_ij (i its input channel, j its output channel); pooling
  and BatchNormalization cost their kept FLOPs per channel times p of that
  (output) channel. Other layers cost their kept FLOPs.
- Without input-dependent gates every p is 1 and the expected FLOPs are the
  kept FLOPs. A compacted DBB model (a `DynamicBetaBernoulliMask` where the
  gate was) gives the same figures as its gated model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from tfsparse import _graph
from tfsparse.channels import ChannelAnalysis
from tfsparse.channels.base import GATE
from tfsparse.gates.base import Gate

COLUMNS = ("Layer (type)", "Units kept/total", "Weights kept/total", "FLOPs kept/total")
EXPECTED_COLUMN = "FLOPs expected"  # with `x`: per example, input-dependent gates


def summary(
    model: keras.Model,
    input_shape: tuple[int | None, ...] | None = None,
    print_fn: Callable[[str], Any] | None = print,
    x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Prints and returns the units, weights and FLOPs that survive per layer.

    Args:
        model: a Sequential or Functional model, gated (`tfsparse.sparsify`)
            or compacted (`tfsparse.compact`) or plain.
        input_shape: shape of one example, without the batch axis; only needed
            for a Sequential model that is not built yet.
        print_fn: called with each line of the table; `None` prints nothing.
        x: optional batch of inputs (an array, or what `Model.predict`
            takes). The summary then also gives, for input-dependent gates
            (DBB), the average number of units active per example, and for
            every layer the expected FLOPs per example on `x` (see the module
            docstring; equal to the kept FLOPs without input-dependent
            gates).

    Returns:
        A dict:
        - `"layers"`: one dict per layer call, with `name`, `type`,
            `units_kept`/`units_total` (None where a layer has no units),
            `weights_kept`/`weights_total`, `flops_kept`/`flops_total` and,
            with `x`, `flops_expected` (a float);
        - `"total"`: the sums of the weights and FLOPs columns, and
            `weights_fraction` / `flops_fraction` (kept / total); with `x`
            also `flops_expected` and `flops_expected_fraction` (expected /
            total FLOPs);
        - `"gates"`: one dict per unit gate in graph order (`name`, `type`,
            `units_kept`, `units_total`, `input_dependent` and, with `x`,
            `avg_active_units`);
        - `"units_kept"`, `"units_total"`: the gates' lists, e.g.
            [266, 88, 33] and [784, 300, 100] for a trained LeNet-300-100;
        - `"gate_params"`: number of variables held by the gates.

    Examples:
        >>> figures = tfsparse.summary(sparse)
        >>> figures["units_kept"], figures["total"]["flops_kept"]
        >>> figures = tfsparse.summary(dbb_model, x=x_test[:1000])
        >>> 1 / figures["total"]["flops_expected_fraction"]   # FLOPs speed-up
    """
    _ensure_built(model, input_shape)
    try:
        analysis = ChannelAnalysis(model, strict=False)
    except TypeError as error:
        raise TypeError(
            f"tfsparse.summary needs a Sequential or Functional model: {error}"
        ) from None
    rows = [_row(analysis, node) for node in analysis.nodes]
    gates = list({id(gate): _gate_row(analysis, gate) for gate in _unit_gates(analysis)}.values())
    total = _totals(rows)
    if x is not None:
        _add_expected(analysis, rows, gates, total, x)
    result = {
        "layers": rows,
        "total": total,
        "gates": gates,
        "units_kept": [g["units_kept"] for g in gates],
        "units_total": [g["units_total"] for g in gates],
        "gate_params": _gate_params(analysis),
    }
    if print_fn is not None:
        for line in _table(model.name, result):
            print_fn(line)
    return result


def _ensure_built(model, input_shape):
    if input_shape is None:
        return
    input_shape = tuple(input_shape)
    if isinstance(model, keras.Sequential) and getattr(model, "_functional", None) is None:
        model.build((None,) + input_shape)
        return
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) == 1 and tuple(inputs[0].shape[1:]) != input_shape:
        raise ValueError(
            f"input_shape {input_shape} does not match the model's input "
            f"shape {tuple(inputs[0].shape[1:])}."
        )


# --------------------------------------------------------------------- rows
def _is_gate(analysis, node):
    return analysis.handler[id(node)].role == GATE


def _row(analysis, node):
    op = node.operation
    row = dict(name=op.name, type=type(op).__name__)
    row.update(analysis.handler[id(node)].cost(analysis, node))
    return row


def _unit_gates(analysis):
    """The unit gates of the model in graph order: gate calls, and the gates
    held inside layers (an attention layer's heads)."""
    for node in analysis.nodes:
        if _is_gate(analysis, node):
            yield node.operation
        yield from analysis.handler[id(node)].inner_gates(node)


def _gate_row(analysis, gate):
    _, kept = analysis.gate(gate)
    return dict(
        name=gate.name,
        type=type(gate).__name__,
        units_kept=int(kept.sum()),
        units_total=int(kept.size),
        input_dependent=bool(gate.input_dependent),
    )


def _gate_params(analysis):
    seen = {}
    for layer in _graph.all_layers(analysis.model):
        if isinstance(layer, Gate):
            seen[id(layer)] = layer.count_params()
    return int(sum(seen.values()))


def _totals(rows):
    total = {
        key: int(sum(r[key] for r in rows))
        for key in ("weights_kept", "weights_total", "flops_kept", "flops_total")
    }
    total["weights_fraction"] = _fraction(total["weights_kept"], total["weights_total"])
    total["flops_fraction"] = _fraction(total["flops_kept"], total["flops_total"])
    return total


def _fraction(kept, total):
    return float(kept) / total if total else 1.0


# -------------------------------------------------- input-dependent gates
def _add_expected(analysis, rows, gates, total, x):
    """Adds `avg_active_units` to the input-dependent gates and
    `flops_expected` to the rows and the total (see the module docstring)."""
    active, batch = _per_example_active(analysis, x)
    by_name = {g["name"]: g for g in gates}
    for node in analysis.nodes:
        if _is_gate(analysis, node) and id(node) in active:
            on = active[id(node)]
            by_name[node.operation.name]["avg_active_units"] = (
                float(on.sum(axis=1).mean()) if batch else 0.0
            )
    # Without input-dependent gates every channel is on in every example: any
    # batch size gives the same fractions.
    fractions = _ChannelFractions(analysis, active, batch if active else 1)
    for row, node in zip(rows, analysis.nodes):
        row["flops_expected"] = analysis.handler[id(node)].expected_flops(
            analysis, node, row, fractions
        )
    total["flops_expected"] = float(sum(r["flops_expected"] for r in rows))
    total["flops_expected_fraction"] = _fraction(total["flops_expected"], total["flops_total"])


def _per_example_layer(op):
    """Whether `op` is the per-example part of a compacted input-dependent
    gate (`Gate.compacted_layer`'s layers mark themselves and give
    `factor(inputs)`)."""
    return bool(getattr(op, "per_example_factor", False))


def _dependent_nodes(analysis):
    """Input-dependent gates, and compacted per-example DBB layers, whose
    input and output channels are tracked."""
    nodes = []
    for node in analysis.nodes:
        op = node.operation
        if _is_gate(analysis, node) and op.input_dependent:
            nodes.append(node)
        elif (
            _per_example_layer(op)
            and len(node.input_tensors) == 1
            and len(node.outputs) == 1
            and analysis.tracked(node.input_tensors[0])
            and analysis.tracked(node.outputs[0])
        ):
            nodes.append(node)
    return nodes


def _per_example_active(analysis, x):
    """({id(node): bool [B, C]}, B): which channels each input-dependent gate
    lets through for each example of `x` (mask non-zero at some position)."""
    nodes = _dependent_nodes(analysis)
    if not nodes:
        return {}, 0
    probe = keras.Model(analysis.graph.inputs, [node.input_tensors[0] for node in nodes])
    values = probe.predict(x, verbose=0, batch_size=256)
    values = values if isinstance(values, (list, tuple)) else [values]
    active = {}
    for node, value in zip(nodes, values):
        width = analysis.width(node.outputs[0])
        mask = _per_example_mask(node.operation, value)
        active[id(node)] = _active_matrix(mask, len(value), width)
    return active, len(values[0])


def _per_example_mask(op, value):
    if _per_example_layer(op):
        return np.asarray(ops.convert_to_numpy(op.factor(ops.convert_to_tensor(value))))
    return np.asarray(ops.convert_to_numpy(op.inference_mask(ops.convert_to_tensor(value))))


def _active_matrix(mask, batch, width):
    """A mask as bool [batch, width]: the channel is non-zero at some position
    (a mask without a batch axis holds for every example)."""
    mask = np.asarray(mask)
    if mask.ndim == 0:
        mask = mask.reshape(1)
    channels = mask.shape[-1]
    if mask.ndim <= 1 or mask.shape[0] != batch:
        on = (mask.reshape(-1, channels) != 0).any(axis=0)[None, :]
    else:
        on = (mask.reshape(batch, -1, channels) != 0).any(axis=1)
    return np.array(np.broadcast_to(on, (batch, width)))


def _and(a, b):
    """Logical and of two per-example activities (None: on everywhere)."""
    if a is None:
        return b
    return a if b is None else a & b


class _ChannelFractions:
    """p(c) per tracked tensor: the fraction of the examples for which
    channel c is on (non-zero after its input-dependent gates, forward) and
    needed (some consumer reads it, backward). Per-example activities are
    bool [B, C] arrays, None where a channel is on in every example."""

    def __init__(self, analysis, active, batch):
        self.a, self.active, self.batch = analysis, active, batch
        self.on, self.need = {}, {}
        self._forward()
        self._backward()

    def _width(self, tensor):
        return self.a.width(tensor)

    def _forward(self):
        a = self.a
        for node in a.nodes:
            if id(node) in self.active:
                (x,), (y,) = node.input_tensors, node.outputs
                self._set_on(y, _and(self.on.get(id(x)), self.active[id(node)]))
            elif len(node.outputs) == 1:
                on = a.handler[id(node)].per_example_on(a, node, self._on)
                self._set_on(node.outputs[0], on)

    def _on(self, tensor):
        return self.on.get(id(tensor))

    def _set_on(self, tensor, on):
        if on is not None and self.a.tracked(tensor):
            self.on[id(tensor)] = on

    def _backward(self):
        a = self.a
        for tensor in a.graph.outputs:
            if a.tracked(tensor):
                self.need[id(tensor)] = None
        for node in reversed(a.nodes):
            if id(node) in self.active:
                (x,), (y,) = node.input_tensors, node.outputs
                self._add_need(x, _and(self._needed(y), self.active[id(node)]))
                continue
            need_out = (
                self._needed(node.outputs[0])
                if (len(node.outputs) == 1 and a.tracked(node.outputs[0]))
                else None
            )
            needs = a.handler[id(node)].per_example_need(a, node, need_out)
            for tensor in node.input_tensors:
                if id(tensor) in needs:
                    self._add_need(tensor, needs[id(tensor)])

    def _needed(self, tensor):
        if id(tensor) in self.need:
            return self.need[id(tensor)]
        return np.zeros((self.batch, self._width(tensor)), bool)

    def _add_need(self, tensor, need):
        key = id(tensor)
        if key not in self.need:
            self.need[key] = None if need is None else np.array(need)
        elif self.need[key] is not None:
            self.need[key] = None if need is None else self.need[key] | need

    def __call__(self, tensor):
        """p per channel of a tracked `tensor`."""
        both = _and(self.on.get(id(tensor)), self._needed(tensor))
        if both is None:
            return np.ones(self._width(tensor))
        return both.mean(axis=0) if self.batch else np.zeros(self._width(tensor))


# -------------------------------------------------------------------- table
def _fmt_pair(kept, total):
    return "-" if total in (None, 0) else f"{kept:,}/{total:,}"


def _fmt_expected(expected, total):
    return "-" if not total else f"{expected:,.0f}"


def _table(name, result):
    expected = "flops_expected" in result["total"]
    columns = COLUMNS + (EXPECTED_COLUMN,) * expected
    lines = [
        [
            f"{r['name']} ({r['type']})",
            _fmt_pair(r["units_kept"], r["units_total"]),
            _fmt_pair(r["weights_kept"], r["weights_total"]),
            _fmt_pair(r["flops_kept"], r["flops_total"]),
        ]
        + ([_fmt_expected(r["flops_expected"], r["flops_total"])] if expected else [])
        for r in result["layers"]
    ]
    total = result["total"]
    footer = [
        "Total",
        "",
        _fmt_pair(total["weights_kept"], total["weights_total"]),
        _fmt_pair(total["flops_kept"], total["flops_total"]),
    ]
    if expected:
        footer.append(_fmt_expected(total["flops_expected"], total["flops_total"]))
    widths = [max(len(str(c)) for c in column) for column in zip(columns, footer, *lines)]
    rule = "-" * (sum(widths) + 3 * (len(widths) - 1))

    def fmt(cells):
        return "   ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [f'Sparsity summary: "{name}"', rule, fmt(columns), rule.replace("-", "=")]
    out += [fmt(line) for line in lines]
    out += [
        rule,
        fmt(footer),
        f"Weights kept: {total['weights_fraction']:.2%}   "
        f"FLOPs kept: {total['flops_fraction']:.2%}"
        + (
            f"   FLOPs expected per example on x: {total['flops_expected_fraction']:.2%}"
            if expected
            else ""
        ),
    ]
    if result["gates"]:
        out.append(
            "Units per gate: "
            + "-".join(map(str, result["units_total"]))
            + " → "
            + "-".join(map(str, result["units_kept"]))
        )
        for gate in result["gates"]:
            if "avg_active_units" in gate:
                out.append(
                    f"  {gate['name']}: {gate['avg_active_units']:.1f} units "
                    "active per example on average"
                )
    if result["gate_params"]:
        out.append(f"Gate variables (not network weights): {result['gate_params']:,}")
    out.append(rule)
    return out
