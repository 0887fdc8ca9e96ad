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
per example (from the gate's per-example inference mask).
"""

import keras
import numpy as np
from keras import ops

from tfsparse.compact import (BN, GATE, LINEAR, PASS, TAKE, ChannelAnalysis,
                              gate_multiplier)
from tfsparse.gates.base import Gate

COLUMNS = ("Layer (type)", "Units kept/total", "Weights kept/total", "FLOPs kept/total")
WINDOW_POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D,
                keras.layers.MaxPooling3D, keras.layers.AveragePooling1D,
                keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
GLOBAL_POOLS = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
                keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)


def summary(model, input_shape=None, print_fn=print, x=None):
    """Prints and returns the units, weights and FLOPs that survive per layer.

    Args:
        model: a Sequential or Functional model, gated (`tfsparse.sparsify`)
            or compacted (`tfsparse.compact`) or plain.
        input_shape: shape of one example, without the batch axis; only needed
            for a Sequential model that is not built yet.
        print_fn: called with each line of the table; `None` prints nothing.
        x: optional batch of inputs. For input-dependent gates (DBB) the
            summary then also gives the average number of units active per
            example.

    Returns:
        A dict:
        - `"layers"`: one dict per layer call, with `name`, `type`,
          `units_kept`/`units_total` (None where a layer has no units),
          `weights_kept`/`weights_total`, `flops_kept`/`flops_total`;
        - `"total"`: the sums of the weights and FLOPs columns, and
          `weights_fraction` / `flops_fraction` (kept / total);
        - `"gates"`: one dict per unit gate in graph order (`name`, `type`,
          `units_kept`, `units_total`, `input_dependent` and, with `x`,
          `avg_active_units`);
        - `"units_kept"`, `"units_total"`: the gates' lists, e.g.
          [266, 88, 33] and [784, 300, 100] for a trained LeNet-300-100;
        - `"gate_params"`: number of variables held by the gates.

    Example:

    >>> figures = tfsparse.summary(sparse)
    >>> figures["units_kept"], figures["total"]["flops_kept"]
    """
    _ensure_built(model, input_shape)
    try:
        analysis = ChannelAnalysis(model, strict=False)
    except TypeError as error:
        raise TypeError(f"tfsparse.summary needs a Sequential or Functional model: "
                        f"{error}") from None
    rows = [_row(analysis, node) for node in analysis.nodes]
    gates = [_gate_row(node) for node in analysis.nodes if analysis.kind[id(node)] == GATE]
    if x is not None:
        _add_active_per_example(analysis, gates, x)
    result = {
        "layers": rows,
        "total": _totals(rows),
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
        raise ValueError(f"input_shape {input_shape} does not match the model's input "
                         f"shape {tuple(inputs[0].shape[1:])}.")


# --------------------------------------------------------------------- rows
def _row(analysis, node):
    op = node.operation
    row = dict(name=op.name, type=type(op).__name__, units_kept=None, units_total=None,
               weights_kept=0, weights_total=0, flops_kept=0, flops_total=0)
    kind = analysis.kind[id(node)]
    if kind == LINEAR:
        row.update(_linear_figures(analysis, node))
    elif kind == BN:
        row.update(_bn_figures(analysis, node))
    elif kind == GATE:
        gate = _gate_row(node)
        row.update(units_kept=gate["units_kept"], units_total=gate["units_total"])
    elif kind == TAKE:
        row.update(units_kept=len(op.indices), units_total=analysis.width(
            node.input_tensors[0]))
    elif kind == PASS:
        row.update(_pool_figures(analysis, node))
    elif isinstance(op, keras.layers.DepthwiseConv2D):
        row.update(_depthwise_figures(node))
    else:
        row.update(weights_kept=op.count_params(), weights_total=op.count_params())
    return row


def _positions(tensor):
    """Number of positions (all axes but batch and channels) of a tensor."""
    return int(np.prod([d for d in tensor.shape[1:-1]], dtype=np.int64))


def _linear_figures(analysis, node):
    (x,), (y,), op = node.input_tensors, node.outputs, node.operation
    kernel, bias = analysis.kernel(op)
    rows = np.flatnonzero(analysis.live[id(x)] & ~analysis.zero[id(x)])
    cols = analysis.kept_columns(node)
    kept = int(np.count_nonzero(np.take(kernel, rows, axis=-2)[..., cols]))
    positions = _positions(y)
    n_bias = 0 if bias is None else 1
    return dict(units_kept=len(cols), units_total=kernel.shape[-1],
                weights_kept=kept + n_bias * len(cols),
                weights_total=kernel.size + n_bias * kernel.shape[-1],
                flops_kept=kept * positions, flops_total=kernel.size * positions)


def _bn_figures(analysis, node):
    (y,), op = node.outputs, node.operation
    total = analysis.width(y)
    kept = int(np.count_nonzero(analysis.live[id(y)]))
    per_channel = op.count_params() // total
    positions = _positions(y)
    return dict(units_kept=kept, units_total=total, weights_kept=kept * per_channel,
                weights_total=total * per_channel, flops_kept=kept * positions,
                flops_total=total * positions)


def _pool_figures(analysis, node):
    (x,), (y,), op = node.input_tensors, node.outputs, node.operation
    channels = analysis.width(y)
    kept = int(np.count_nonzero(analysis.live[id(y)]))
    if isinstance(op, WINDOW_POOLS):
        per_channel = int(np.prod(op.pool_size)) * _positions(y)
    elif isinstance(op, GLOBAL_POOLS):
        per_channel = _positions(x)
    else:  # Dropout and the like
        per_channel = 0
    return dict(flops_kept=kept * per_channel, flops_total=channels * per_channel)


def _depthwise_figures(node):
    (y,), op = node.outputs, node.operation
    kernel = np.asarray(ops.convert_to_numpy(op.kernel))
    n_bias = 0 if op.bias is None else int(np.prod(op.bias.shape))
    kept = int(np.count_nonzero(kernel))
    positions = _positions(y)
    return dict(weights_kept=kept + n_bias, weights_total=kernel.size + n_bias,
                flops_kept=kept * positions, flops_total=kernel.size * positions)


def _gate_row(node):
    gate = node.operation
    _, kept = gate_multiplier(gate)
    return dict(name=gate.name, type=type(gate).__name__, units_kept=int(kept.sum()),
                units_total=int(kept.size), input_dependent=bool(gate.input_dependent))


def _gate_params(analysis):
    seen = {}
    for layer in analysis.model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, Gate):
            seen[id(layer)] = layer.count_params()
    return int(sum(seen.values()))


def _totals(rows):
    total = {key: int(sum(r[key] for r in rows))
             for key in ("weights_kept", "weights_total", "flops_kept", "flops_total")}
    total["weights_fraction"] = _fraction(total["weights_kept"], total["weights_total"])
    total["flops_fraction"] = _fraction(total["flops_kept"], total["flops_total"])
    return total


def _fraction(kept, total):
    return float(kept) / total if total else 1.0


# -------------------------------------------------- input-dependent gates
def _add_active_per_example(analysis, gates, x):
    """Average active units per example of each input-dependent gate."""
    nodes = [node for node in analysis.nodes if analysis.kind[id(node)] == GATE
             and node.operation.input_dependent]
    if not nodes:
        return
    graph = analysis.graph
    probe = keras.Model(graph.inputs, [node.input_tensors[0] for node in nodes])
    values = probe.predict(x, verbose=0, batch_size=256)
    values = values if isinstance(values, (list, tuple)) else [values]
    by_name = {g["name"]: g for g in gates}
    for node, value in zip(nodes, values):
        gate = node.operation
        mask = np.asarray(ops.convert_to_numpy(gate.inference_mask(
            ops.convert_to_tensor(value))))
        by_name[gate.name]["avg_active_units"] = _active_per_example(mask, len(value))


def _active_per_example(mask, batch):
    channels = mask.shape[-1]
    if mask.ndim <= 1 or mask.shape[0] != batch:
        return float(np.count_nonzero(mask.reshape(-1, channels).any(axis=0)))
    active = (mask.reshape(batch, -1, channels) != 0).any(axis=1)
    return float(active.sum(axis=1).mean())


# -------------------------------------------------------------------- table
def _fmt_pair(kept, total):
    return "-" if total in (None, 0) else f"{kept:,}/{total:,}"


def _table(name, result):
    lines = [[f"{r['name']} ({r['type']})", _fmt_pair(r["units_kept"], r["units_total"]),
              _fmt_pair(r["weights_kept"], r["weights_total"]),
              _fmt_pair(r["flops_kept"], r["flops_total"])] for r in result["layers"]]
    total = result["total"]
    footer = ["Total", "", _fmt_pair(total["weights_kept"], total["weights_total"]),
              _fmt_pair(total["flops_kept"], total["flops_total"])]
    widths = [max(len(str(c)) for c in column)
              for column in zip(COLUMNS, footer, *lines)]
    rule = "-" * (sum(widths) + 3 * (len(widths) - 1))

    def fmt(cells):
        return "   ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                          for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f'Sparsity summary: "{name}"', rule, fmt(COLUMNS), rule.replace("-", "=")]
    out += [fmt(line) for line in lines]
    out += [rule, fmt(footer),
            f"Weights kept: {total['weights_fraction']:.2%}   "
            f"FLOPs kept: {total['flops_fraction']:.2%}"]
    if result["gates"]:
        out.append("Units per gate: " + "-".join(map(str, result["units_total"])) + " → "
                   + "-".join(map(str, result["units_kept"])))
        for gate in result["gates"]:
            if "avg_active_units" in gate:
                out.append(f"  {gate['name']}: {gate['avg_active_units']:.1f} units "
                           "active per example on average")
    if result["gate_params"]:
        out.append(f"Gate variables (not network weights): {result['gate_params']:,}")
    out.append(rule)
    return out
