"""`compact`: turn a gated model into a smaller plain Keras model.

What happens to each gate (the same for every gate family: only
`isinstance(Gate)`, `mask()`, `active()`, `structure`, `input_dependent` and
`compacted_layer()` are used):

- A unit gate disappears. Its closed units are removed from every layer that
  produces them and every layer that reads them, along the whole channel
  group (`tfsparse.channels`): kernel columns and biases of the producers
  (every convolution that writes into a residual stream), the channels of the
  BatchNormalizations, depthwise convolutions, activations, pooling and
  merges in between, the offsets of concatenations, and the kernel rows of
  the consumers (through Flatten, every position of the channel). Its
  non-binary multiplier (hard-concrete's mask, NPN's π, BB's E[π]) is folded
  where that is exact: into the consumers' kernel rows, a depthwise kernel,
  or a BatchNormalization (γ·s, μ/s); it passes through layers that commute
  with a positive per-channel scale (ReLU, pooling, padding, sums whose
  inputs all carry it).
- Where units cannot be taken out of the producer (a network input, a
  Flatten, a layer that compaction does not know), the gate becomes a
  `tfsparse.layers.TakeFeatures` of the kept features.
- An input-dependent gate (DBB) loses what its static part prunes, its static
  multiplier is folded like any other, and `gate.compacted_layer(kept)` is
  inserted to apply the per-example part.
- `SparseDense`/`SparseConv2D` become `Dense`/`Conv2D` with kernel × mask
  (exact zeros where a weight gate is closed).
- A unit of a Dense/Conv layer whose kernel column and bias are exactly zero is
  removed when its activation maps 0 to 0 (and the consumers see an exact
  zero); kernel rows that are zero for every kept unit free their input.

Anything that would change the function raises a `ValueError` naming the
gates and layers: a gated channel that reaches a model output or a layer the
handler table does not know (it needs all of its channels); a non-binary
multiplier that would have to pass through a layer that does not commute with
scaling (tanh, sigmoid, ReLU6...) or a sum whose inputs carry different ones;
a BatchNormalization without γ/β that would have to absorb one.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfsparse import _graph
from tfsparse.channels import ChannelAnalysis
from tfsparse.gates.base import Gate, gates_of
from tfsparse.layers import TakeFeatures


def compact(model: keras.Model) -> keras.Model:
    """Returns a plain `keras.Model` that computes what `model` computes at
    inference, with every unit a gate closed removed.

    Args:
        model: a built Sequential or Functional model (a `tfsparse.SparseModel`
            from `tfsparse.sparsify`, or one built by hand with gate layers and
            `SparseDense`/`SparseConv2D`). Nested Sequential/Functional models
            are inlined.

    Returns:
        A new Functional `keras.Model` without tfsparse layers, except
        `tfsparse.layers.TakeFeatures` where a network input or a flattened
        tensor was gated, and the per-example layer of input-dependent gates.
        Its inference output equals the gated model's (up to float rounding
        of the folded multipliers). The weights are copies: `model` is left
        untouched. Weight decay under the gates
        (`SparseModel.decay_weights_under_gates`) becomes the plain L2 it
        stands for on the kernels it covered, so fine-tuning decays as
        training did.

    Raises:
        ValueError: the model cannot be compacted without changing its
            function (the message names the gates and layers involved).
        TypeError: `model` is a subclassed model.

    Examples:
        >>> small = tfsparse.compact(sparse)
        >>> tfsparse.summary(small)
    """
    analysis = ChannelAnalysis(model, strict=True)
    small = _Rebuild(analysis).model(f"{model.name}_compact")
    decay = getattr(model, "gated_weight_decay", None)
    if decay is not None:
        decay.plain_decay_on(small)
    return small


class _Rebuild:
    """Calls new layers in the order of the old nodes (each node's handler
    decides how); `carry[t]` lists the old channels of tensor t that the new
    tensor holds (ascending)."""

    def __init__(self, analysis):
        self.a = analysis
        self.carry = {}
        self.new = {}  # id(old tensor) → new tensor
        self.clones = {}  # id(old layer) → clone
        self.copies = []  # (new layer, weights) set after the graph exists
        self.names = {layer.name for layer in analysis.graph.layers}

    def model(self, name):
        graph = self.a.graph
        inputs = _graph.rebuild_inputs(graph)
        for old, new in zip(graph.inputs, inputs):
            self.put(old, new, None)
        for node in self.a.nodes:
            self.a.handler[id(node)].rebuild(self, node)
        outputs = [self._output(t) for t in graph.outputs]
        result = _graph.make_model(graph, inputs, outputs, name)
        for layer, weights in self.copies:
            layer.set_weights(weights)
        return result

    # ------------------------------------------------ primitives for handlers
    def put(self, old, new, carry):
        """Records `new` as the new tensor of `old`, holding the old channels
        `carry` (None: all of them, in order)."""
        self.new[id(old)] = new
        if self.a.tracked(old):
            self.carry[id(old)] = (
                np.arange(self.a.width(old)) if carry is None else np.asarray(carry, dtype=int)
            )

    def call(self, node, layer, overrides=None):
        """Calls `layer` with `node`'s arguments, mapped to the new tensors
        (`overrides`: id(old tensor) → tensor to pass instead)."""
        tensors = self.new if not overrides else {**self.new, **overrides}
        return _graph.call_like(node, layer, tensors)

    def clone(self, op):
        """A copy of `op` with its weights (one per layer: shared stays shared);
        stateless operations are reused."""
        if not isinstance(op, keras.layers.Layer):
            return op
        if id(op) not in self.clones:
            clone = op.__class__.from_config(op.get_config())
            self.clones[id(op)] = clone
            self.copies.append((clone, op.get_weights()))
        return self.clones[id(op)]

    def fresh(self, op, **updates):
        """A new layer from `op`'s configuration (with `updates`); the caller
        gives its weights with `set_weights`."""
        if id(op) in self.clones:
            raise ValueError(
                f"Layer {op.name!r} is called more than once; shared layers "
                "between a gate and its consumers cannot be compacted."
            )
        config = op.get_config()
        config.update(updates)
        self.clones[id(op)] = layer = op.__class__.from_config(config)
        return layer

    def set_weights(self, layer, weights):
        self.copies.append((layer, weights))

    def take(self, tensor, positions, name):
        """`tensor` restricted to the given channel positions."""
        return TakeFeatures([int(i) for i in positions], name=self._unique(name))(tensor)

    def unchanged(self, tensor):
        """Whether the new tensor equals the old one on every channel."""
        if not self.a.tracked(tensor):
            return True
        s = self.a.scale[id(tensor)]
        return len(self.carry[id(tensor)]) == len(s) and bool(np.all(s == 1))

    def refuse(self, tensors, where):
        tensors = tensors if isinstance(tensors, list) else [tensors]
        facts = [self.a.facts(t) for t in tensors]
        gates = sorted(set().union(*(f[2] for f in facts))) or ["(none)"]
        blocker = next((f[3] for f in facts if f[3]), None)
        detail = (
            f" (the multiplier cannot pass through {blocker!r}, which is not "
            "positively homogeneous, or whose inputs carry different multipliers)"
            if blocker
            else ""
        )
        raise ValueError(
            f"Cannot compact: the channels of gate(s) {gates} reach {where}{detail}. "
            "Gated channels can only reach layers that tfsparse.channels knows how to "
            "shrink (Dense/Conv consumers; BatchNormalization, depthwise convolutions, "
            "activations, pooling, padding, merges and concatenations in between), and a "
            "non-binary multiplier only layers it commutes with. Move or remove these "
            "gates, or harden them to binary masks."
        )

    @staticmethod
    def describe(op):
        extra = f", groups={op.groups}" if getattr(op, "groups", 1) != 1 else ""
        return f"layer {op.name!r} ({type(op).__name__}{extra})"

    @staticmethod
    def check_plain(op):
        """Refuses a tfsparse layer that compaction would have to copy as is."""
        if _holds_tfsparse(op):
            raise ValueError(
                f"Cannot compact {_Rebuild.describe(op)}: it is (or holds) a tfsparse "
                "layer that compaction cannot replace here (a weight gate used as a "
                "layer, a shared SparseDense/SparseConv2D, or a subclassed layer with "
                "gates inside). Build the model with its gates in the graph."
            )

    def _unique(self, name):
        candidate, i = name, 1
        while candidate in self.names:
            candidate, i = f"{name}_{i}", i + 1
        self.names.add(candidate)
        return candidate

    def _output(self, tensor):
        if not self.unchanged(tensor):
            self.refuse(tensor, "a model output")
        return self.new[id(tensor)]

    def per_example_layer(self, gate, x, kept, live):
        """`gate.compacted_layer(kept)`, told the multiplier its input carries
        (`input_scale`, new = old / s) when an upstream gate's is pending."""
        s = self.a.scale[id(x)][kept]
        if np.any(live & ~(np.isfinite(s) & (s > 0))):
            self.refuse(
                x,
                f"input-dependent gate {gate.name!r}, whose per-example "
                "mask needs its input channels",
            )
        carried = np.where(live & (s > 0), 1.0 / np.where(s > 0, s, 1.0), 1.0)
        indices = [int(i) for i in kept]
        if np.all(carried == 1):
            layer, carried = gate.compacted_layer(indices), None
        else:
            try:
                layer = gate.compacted_layer(indices, input_scale=carried.astype("float32"))
            except TypeError:
                self.refuse(
                    x,
                    f"input-dependent gate {gate.name!r}, whose "
                    "compacted_layer() takes no `input_scale`",
                )
        if layer is not None:
            _check_per_example_layer(gate, layer, kept, len(x.shape), carried)
        return layer


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
                "into the consumers' kernel rows)."
            )


def _holds_tfsparse(op):
    """A gate, or a layer with a gate inside (a gated kernel, a gated twin)."""
    return isinstance(op, Gate) or (isinstance(op, keras.layers.Layer) and bool(gates_of(op)))
