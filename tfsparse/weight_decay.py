"""Weight decay under the gates: an L2 penalty on the weights the gates keep.

A plain L2 penalty ½·wd·Σw² also charges a network for the weights its gates
remove, and it says nothing to the gates. The L0 paper combines the two as an
expectation over the gates (Louizos et al. 2018, "Combining the L0 norm with
other norms"): each weight's ½·wd·w² counts with the probability that it is
not zero. The weights then shrink only while they are likely to stay, and a
unit whose weights are large pays more to stay open, a pressure on the gates
that at the official MLP's settings outweighs λ's own.

In the official code each layer owns one gate per row (a Dense layer's
inputs) or per filter (a convolution's outputs), and its `_reg_w` charges
each weight with that gate alone. In tfsparse's gated networks a weight of a
Dense or Conv kernel is zero when either its input channel or its output
channel is closed (a unit's gate removes its column from the layer that
writes it and its rows from the layers that read it), so the expectation is
½·wd·Σ_ij P(input i kept)·P(output j kept)·‖w_ij‖², the gates taken as
independent. A hidden unit's gate is therefore charged for its incoming and
its outgoing weights, where the official MLP charges it for its outgoing row
only. The channels' probabilities are laid out by
`tfsparse.budget.CostModel` (a hardened gate counts with its frozen mask).
Layers whose kernel is not one [inputs, outputs] map (grouped, separable and
depthwise convolutions, attention) keep their own L2 regularizers, and so do
all layers where the gates are on single weights (`level="weight"`), which
this term does not see: it needs unit gates.
"""

import keras
from keras import ops

from tfsparse import _checks
from tfsparse.budget import CostModel


def plain_decay(weight_decay):
    """The plain penalty ½·weight_decay·Σw² as a Keras regularizer."""
    return keras.regularizers.L2(weight_decay / 2)


def set_kernel_regularizer(layer, regularizer):
    """Puts `regularizer` (None: none) on `layer`'s kernel: on the variable,
    so that it counts now, and on the layer, so that its config (and the
    copies `sparsify` and `compact` make from it) keeps it."""
    layer.kernel_regularizer = regularizer
    layer.kernel.regularizer = regularizer


class GatedWeightDecay:
    """½·wd·Σ P(kept)·w² over the Dense/Conv kernels of a gated model.

    Args:
        model: a flat gated model (what `tfsparse.sparsify` returns).
        weight_decay: wd > 0.
        cost: the model's `tfsparse.budget.CostModel`, if one is built.

    Attributes:
        layers: the layers whose kernels the term covers (each called once).
    """

    def __init__(self, model, weight_decay, cost=None):
        self.weight_decay = float(
            _checks.number("weight_decay", weight_decay, low=0, low_open=True)
        )
        # Only the layout of the channels' probabilities is read, which a
        # model's CostModel of either kind has (`SparseModel.cost_model`).
        self.cost = CostModel(model, "params") if cost is None else cost
        if not self.cost.gates:
            raise ValueError(
                f"Weight decay under the gates needs unit gates; {model.name!r} has none "
                "(gates on single weights, level='weight', keep a plain L2: "
                "kernel_regularizer=keras.regularizers.L2(weight_decay / 2))."
            )
        groups = self.cost.groups
        calls = {}
        for node in groups.nodes:
            calls.setdefault(id(node.operation), []).append(node)
        self.layers, self._kernels = [], []
        for node in groups.nodes:
            found = groups.handler[id(node)].decayed_kernel(node)
            # A shared layer's kernel would be charged once per call.
            if found is None or len(calls[id(node.operation)]) > 1:
                continue
            kernel, x, y = found
            self.layers.append(node.operation)
            self._kernels.append(
                (kernel, self.cost.channel_indices(x), self.cost.channel_indices(y))
            )

    def __call__(self):
        """The penalty (a float32 scalar, differentiable in weights and gates)."""
        p = self.cost.probabilities()
        total = ops.zeros((), "float32")
        for kernel, (in_primary, in_extra), (out_primary, out_extra) in self._kernels:
            w = ops.cast(kernel, "float32")
            squares = ops.sum(
                ops.reshape(ops.square(w), (-1, int(w.shape[-2]), int(w.shape[-1]))), axis=0
            )
            p_in = ops.take(p, in_primary) * ops.take(p, in_extra)
            p_out = ops.take(p, out_primary) * ops.take(p, out_extra)
            total = total + ops.sum(p_in[:, None] * squares * p_out[None, :])
        return 0.5 * self.weight_decay * total

    def remove_plain_decay(self):
        """Takes the covered layers' L2 kernel regularizers of this strength
        off (the term replaces them); the layers' configs lose them too, so a
        saved model does not charge the kernels twice when loaded. Another
        regularizer on a covered kernel is an error: the term cannot stand
        in for it, and keeping it would charge the kernel twice."""
        for layer in self.layers:
            regularizer = layer.kernel_regularizer
            if regularizer is not None and not self._is_own_decay(regularizer):
                raise ValueError(
                    f"Layer {layer.name!r} has kernel_regularizer {regularizer!r}; weight "
                    f"decay under the gates replaces only L2(l2={self.weight_decay / 2}) "
                    "(½·weight_decay·Σw²). Remove it or build the model without it."
                )
        for layer in self.layers:
            set_kernel_regularizer(layer, None)

    def plain_decay_on(self, copy):
        """Puts the plain L2 this term stands in for, L2(wd/2), on the
        covered layers' namesakes in `copy`, a model without gates such as
        `tfsparse.compact` builds. There every weight left is kept, so the
        expectation is the plain penalty over the kernels that remain."""
        for layer in self.layers:
            set_kernel_regularizer(copy.get_layer(layer.name), plain_decay(self.weight_decay))

    def _is_own_decay(self, regularizer):
        if type(regularizer) is not keras.regularizers.L2:
            return False
        return abs(float(regularizer.l2) - self.weight_decay / 2) <= 1e-9 * self.weight_decay
