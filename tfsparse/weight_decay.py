"""Weight decay under the gates: an L2 penalty on the weights the gates keep.

A plain L2 penalty ½·wd·Σw² also charges a network for the weights its gates
remove, and it says nothing to the gates. The L0 paper combines the two as an
expectation over the gates (Louizos et al. 2018, "Combining the L0 norm with
other norms"; the official `L0Dense._reg_w` computes Σ_rows P(z ≠ 0)·
(½·wd·‖row‖² + λ)): each weight's ½·wd·w² counts with the probability that
it is kept. The weights then shrink only while they are likely to stay, and
a unit whose weights are large pays more to stay open, a pressure on the
gates that at the official MLP's settings outweighs λ's own.

In tfsparse's gated networks a weight of a Dense or Conv kernel is kept when
both its input channel and its output channel are (a unit's gate removes its
column from the layer that writes it and its rows from the layers that read
it), so the term is ½·wd·Σ_ij P(input i kept)·P(output j kept)·‖w_ij‖²,
with the channels' probabilities laid out by `tfsparse.budget.CostModel` (a
hardened gate counts with its frozen mask). Layers whose kernel is not one
[inputs, outputs] map (grouped, separable and depthwise convolutions,
attention) keep their own L2 regularizers.
"""

from keras import ops

from tfsparse import _checks
from tfsparse.budget import CostModel


class GatedWeightDecay:
    """½·wd·Σ P(kept)·w² over the Dense/Conv kernels of a gated model.

    Args:
        model: a flat gated model (what `tfsparse.sparsify` returns).
        weight_decay: wd ≥ 0.

    Attributes:
        layers: the layers whose kernels the term covers (each called once).
    """

    def __init__(self, model, weight_decay):
        self.weight_decay = float(_checks.number("weight_decay", weight_decay, low=0))
        self.cost = CostModel(model, "params")
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
        """Takes the covered layers' kernel regularizers off (the term
        replaces them); the layers' configs lose them too, so a saved model
        does not charge the kernels twice when loaded."""
        for layer in self.layers:
            layer.kernel_regularizer = None
            layer.kernel.regularizer = None
