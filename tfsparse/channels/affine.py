"""Per-channel layers with weights: BatchNormalization and depthwise
convolutions. They keep each channel apart, so they lose the channels a group
loses, and their weights absorb a gate's multiplier exactly."""

import keras
import numpy as np

from tfsparse.channels.base import MapHandler, Term, as_numpy, figures, positions
from tfsparse.channels.elementwise import activation_at_zero, channelwise_activation

BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


class BatchNormHandler(MapHandler):
    """BN(s·x) is a BN of x with γ·s and μ/s; BN of a closed channel is the
    constant β − γμ/σ, kept as a channel with γ = 0."""

    def accepts(self, node, width):
        op, (x,) = node.operation, node.input_tensors
        return op.axis in (-1, len(x.shape) - 1) and super().accepts(node, width)

    def forward(self, a, node):
        (x,), (y,) = node.input_tensors, node.outputs
        s, _, origin, blocker = a.facts(x)
        bad = ~np.isfinite(s)
        a.set(
            y,
            np.where(bad, np.nan, 1.0),
            np.zeros(len(s), bool),
            origin if bad.any() else (),
            blocker,
        )

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry = r.carry[id(x)]
        params = {
            name: (
                None if getattr(op, name) is None else np.array(as_numpy(getattr(op, name)))[carry]
            )
            for name in BN_WEIGHTS
        }
        s, live = r.a.scale[id(x)][carry], r.a.live[id(x)][carry]
        fold = live & (s != 1)
        if np.any(~np.isfinite(s[fold])):
            r.refuse(x, r.describe(op))
        if fold.any():
            self._fold(r, op, params, s, fold, x)
        layer = r.fresh(op)
        r.put(y, r.call(node, layer), carry)
        r.set_weights(
            layer, [params[n].astype("float32") for n in BN_WEIGHTS if params[n] is not None]
        )

    @staticmethod
    def _fold(r, op, p, s, fold, x):
        """BN(s·x) as a BN of x, on the channels in `fold`."""
        positive, closed = fold & (s > 0), fold & (s == 0)
        sigma = np.sqrt(p["moving_variance"].astype("float64") + op.epsilon)
        if closed.any():
            if p["gamma"] is None or p["beta"] is None:
                r.refuse(x, r.describe(op) + " (closed units need its γ and β)")
            shift = p["beta"] - p["gamma"] * p["moving_mean"] / sigma
            p["beta"] = np.where(closed, shift, p["beta"])
            p["gamma"] = np.where(closed, 0.0, p["gamma"])
            p["moving_mean"] = np.where(closed, 0.0, p["moving_mean"])
        safe = np.where(positive, s, 1.0)
        p["moving_mean"] = p["moving_mean"] / safe
        if p["gamma"] is not None:
            p["gamma"] = p["gamma"] * safe
        else:
            variance = sigma**2 / safe**2 - op.epsilon
            if np.any(variance < 0):
                r.refuse(x, r.describe(op) + " (no γ to absorb the multiplier)")
            p["moving_variance"] = variance

    def cost(self, a, node):
        (y,), op = node.outputs, node.operation
        total = a.width(y)
        kept = int(np.count_nonzero(a.live[id(y)]))
        per_channel = op.count_params() // total
        n = positions(y)
        return figures(
            units_kept=kept,
            units_total=total,
            weights_kept=kept * per_channel,
            weights_total=total * per_channel,
            flops_kept=kept * n,
            flops_total=total * n,
        )

    def cost_terms(self, node):
        (y,), op = node.outputs, node.operation
        return [Term(positions(y), op.count_params() // int(y.shape[-1]), ((y, None),))]

    def expected_flops(self, a, node, row, p):
        (y,) = node.outputs
        return float(p(y)[a.live[id(y)]].sum()) * positions(y)

    def per_example_on(self, a, node, on):
        return None  # BN(0) ≠ 0


class DepthwiseHandler(MapHandler):
    """`DepthwiseConv1D/2D`, and `Conv` with `groups` = input channels (how
    ConvNeXt writes it): output channel c·d + k reads input channel c only
    (d the depth multiplier). The kernel absorbs a multiplier exactly; an
    input channel goes with all of its d outputs."""

    def accepts(self, node, width):
        op, (x,) = node.operation, node.input_tensors
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return False
        if not channelwise_activation(op) or width(x) is None:
            return False
        if not _is_depthwise_layer(op) and not 1 < op.groups == width(x):
            return False  # a grouped convolution with several channels per group
        return super().accepts(node, width)

    @staticmethod
    def multiplier(node):
        (x,), (y,) = node.input_tensors, node.outputs
        return int(y.shape[-1]) // int(x.shape[-1])

    def links(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        return [(x, np.arange(int(y.shape[-1])) // self.multiplier(node))]

    def unit_cost(self, node):
        """(weights, weights × positions) that one input channel owns (part
        of a gated group's penalty; BatchNormalization, folded into the
        convolution at deployment, is not)."""
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        per_channel = op.count_params() // int(x.shape[-1])
        return per_channel, per_channel * positions(y)

    def kernel(self, a, node):
        """(kernel [taps, C, d], bias [C·d] or None)."""
        op, (x,) = node.operation, node.input_tensors
        channels, d = a.width(x), self.multiplier(node)
        kernel = as_numpy(op.kernel)
        bias = None if op.bias is None else as_numpy(op.bias)
        return kernel.reshape(-1, channels, d), bias

    def forward(self, a, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        s, z, origin, blocker = a.facts(x)
        kernel, bias = self.kernel(a, node)
        d = kernel.shape[-1]
        silent = (np.all(kernel == 0, axis=0) | (z | (s == 0))[:, None]).reshape(-1)
        if bias is not None:
            silent &= bias == 0
        zero = silent & (activation_at_zero(op, len(silent)) == 0)
        bad = np.repeat(~np.isfinite(s), d)
        a.set(y, np.where(bad, np.nan, 1.0), zero, origin if bad.any() else (), blocker)

    def backward(self, a, node):
        (x,), (y,) = node.input_tensors, node.outputs
        d = self.multiplier(node)
        a.need(x, a.live[id(y)].reshape(-1, d).any(axis=1))

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry = r.carry[id(x)]
        kernel, bias = self.kernel(r.a, node)
        d = kernel.shape[-1]
        s, live = r.a.scale[id(x)][carry], r.a.live[id(x)][carry]
        if np.any(live & ~np.isfinite(s)):
            r.refuse(x, r.describe(op))
        folded = kernel[:, carry, :] * np.where(live, s, 0.0)[None, :, None]
        out_carry = (carry[:, None] * d + np.arange(d)[None, :]).reshape(-1)
        shape = op.kernel.shape
        if _is_depthwise_layer(op):
            layer = r.fresh(op)
            new_kernel = folded.reshape(tuple(shape[:-2]) + (len(carry), d))
        else:
            layer = r.fresh(op, filters=len(carry) * d, groups=len(carry))
            new_kernel = folded.reshape(tuple(shape[:-2]) + (1, len(carry) * d))
        weights = [new_kernel.astype(op.kernel.dtype)]
        if bias is not None:
            weights.append(bias[out_carry].astype(op.bias.dtype))
        r.put(y, r.call(node, layer), out_carry)
        r.set_weights(layer, weights)

    def cost(self, a, node):
        (y,) = node.outputs
        kernel, bias = self.kernel(a, node)
        out_live = a.live[id(y)].reshape(kernel.shape[1], -1)
        used = (kernel != 0) & out_live[None, :, :]
        n = positions(y)
        n_bias = 0 if bias is None else 1
        kept_out = int(out_live.sum())
        return figures(
            weights_kept=int(used.sum()) + n_bias * kept_out,
            weights_total=kernel.size + n_bias * kernel.shape[1] * kernel.shape[2],
            flops_kept=int(used.sum()) * n,
            flops_total=kernel.size * n,
        )

    def cost_terms(self, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        d = self.multiplier(node)
        taps = int(np.prod(op.kernel.shape)) // (int(x.shape[-1]) * d)
        bias = d if op.bias is not None else 0
        return [Term(taps * d * positions(y), taps * d + bias, ((x, None),))]

    def expected_flops(self, a, node, row, p):
        (x,), (y,) = node.input_tensors, node.outputs
        kernel, _ = self.kernel(a, node)
        counts = (kernel != 0).sum(axis=0)
        p_out = (p(y) * a.live[id(y)]).reshape(kernel.shape[1], kernel.shape[2])
        return float(np.sum(counts * p(x)[:, None] * p_out)) * positions(y)

    def per_example_on(self, a, node, on):
        value = on(node.input_tensors[0])
        kernel, bias = self.kernel(a, node)
        if value is None or bias is not None:
            return None
        return np.repeat(value, kernel.shape[-1], axis=1)


def _is_depthwise_layer(op):
    return isinstance(op, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D))
