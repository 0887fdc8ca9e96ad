"""Layers that move channels without mixing them: pass-through layers
(pooling, padding, dropout...), Flatten, Reshape, Permute, TakeFeatures and
Concatenate along the channel axis."""

import numpy as np

from tfsparse.channels.base import MapHandler, Term, figures, positions


def _channels_last(op):
    return getattr(op, "data_format", "channels_last") in (None, "channels_last")


class PassThroughHandler(MapHandler):
    """Output channel i is input channel i, and a per-channel scale passes
    through unchanged (identity at inference, zero padding, cropping,
    upsampling, max/average pooling: all commute with a positive scale)."""

    # A gate moved across it multiplies the same values (see ChannelGroups.hoist).
    value_preserving = True

    def accepts(self, node, width):
        return (
            len(node.input_tensors) == 1
            and _channels_last(node.operation)
            and super().accepts(node, width)
            and width(node.input_tensors[0]) == width(node.outputs[0])
        )


class PoolingHandler(PassThroughHandler):
    """Pass-through that costs one multiply-add per window element."""

    def __init__(self, global_pool):
        self.global_pool = global_pool

    def cost(self, a, node):
        (y,) = node.outputs
        channels = a.width(y)
        kept = int(np.count_nonzero(a.live[id(y)]))
        per_channel = self.flops_per_channel(node)
        return figures(flops_kept=kept * per_channel, flops_total=channels * per_channel)

    def cost_terms(self, node):
        return [Term(self.flops_per_channel(node), 0, ((node.outputs[0], None),))]

    def expected_flops(self, a, node, row, p):
        (y,) = node.outputs
        return float(p(y)[a.live[id(y)]].sum()) * self.flops_per_channel(node)

    def flops_per_channel(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        if self.global_pool:
            return positions(x)
        return int(np.prod(node.operation.pool_size)) * positions(y)


class FlattenHandler(MapHandler):
    """(h, w, c) → (h·W + w)·C + c: flat feature j carries channel j mod C."""

    # A gate moved across it multiplies the same values (see ChannelGroups.hoist).
    value_preserving = True
    makes_flat_features = True

    def accepts(self, node, width):
        (x,) = node.input_tensors
        known = all(d is not None for d in x.shape[1:])
        return known and _channels_last(node.operation) and super().accepts(node, width)

    def links(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        return [(x, np.arange(int(y.shape[-1])) % int(x.shape[-1]))]

    def rebuild(self, r, node):
        (x,), (y,) = node.input_tensors, node.outputs
        carry, channels = r.carry[id(x)], r.a.width(x)
        where = np.arange(r.a.width(y) // channels)
        flat = (where[:, None] * channels + carry[None, :]).reshape(-1)
        r.put(y, r.call(node, r.clone(node.operation)), flat)


class ReshapeHandler(MapHandler):
    """A reshape that keeps the channel axis last and whole (row-major order
    keeps every element's channel), or flattens to one axis (like Flatten)."""

    # A gate moved across it multiplies the same values (see ChannelGroups.hoist).
    value_preserving = True

    def accepts(self, node, width):
        (x,), (y,) = node.input_tensors, node.outputs
        if any(d is None for d in x.shape[1:]) or width(x) is None:
            return False
        flat = len(y.shape) == 2
        return (width(y) == width(x) or flat) and super().accepts(node, width)

    def links(self, node):
        (x,), (y,) = node.input_tensors, node.outputs
        return [(x, np.arange(int(y.shape[-1])) % int(x.shape[-1]))]

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        carry, channels = r.carry[id(x)], r.a.width(x)
        shape = list(op.target_shape)
        if r.a.width(y) == channels:
            shape[-1], out_carry = len(carry), carry
        else:
            where = np.arange(r.a.width(y) // channels)
            out_carry = (where[:, None] * channels + carry[None, :]).reshape(-1)
            shape[-1] = len(out_carry)
        layer = r.fresh(op, target_shape=tuple(shape))
        r.put(y, r.call(node, layer), out_carry)


class PermuteHandler(PassThroughHandler):
    """A permutation that leaves the channel axis last."""

    def accepts(self, node, width):
        dims = tuple(node.operation.dims)
        return dims[-1] == len(dims) and super().accepts(node, width)


class TakeFeaturesHandler(MapHandler):
    """`tfsparse.layers.TakeFeatures`: output j is input channel indices[j]."""

    def links(self, node):
        (x,) = node.input_tensors
        return [(x, np.asarray(node.operation.indices))]

    def rebuild(self, r, node):
        (x,), (y,), op = node.input_tensors, node.outputs, node.operation
        wanted = np.flatnonzero(r.a.live[id(y)])
        wanted = wanted if len(wanted) else np.arange(1)
        carry = r.carry[id(x)]
        old = np.asarray(op.indices)[wanted]
        pos = np.searchsorted(carry, old)
        if np.any(pos >= len(carry)) or np.any(carry[np.minimum(pos, len(carry) - 1)] != old):
            raise ValueError(f"Internal error: TakeFeatures {op.name!r} reads a removed channel.")
        r.put(y, r.take(r.new[id(x)], pos, op.name), wanted)

    def cost(self, a, node):
        return figures(
            units_kept=len(node.operation.indices), units_total=a.width(node.input_tensors[0])
        )


class ConcatenateHandler(MapHandler):
    """Concatenation along the channel axis: each input's channels at an offset."""

    def accepts(self, node, width):
        rank = len(node.outputs[0].shape)
        axis = node.operation.axis
        return axis in (-1, rank - 1) and super().accepts(node, width)

    def links(self, node):
        out, offset = [], 0
        total = int(node.outputs[0].shape[-1])
        for x in node.input_tensors:
            n = int(x.shape[-1])
            src = np.full(total, -1)
            src[offset : offset + n] = np.arange(n)
            out.append((x, src))
            offset += n
        return out

    def forward(self, a, node):
        parts = [a.facts(x) for x in node.input_tensors]
        a.set(
            node.outputs[0],
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            frozenset().union(*(p[2] for p in parts)),
            next((p[3] for p in parts if p[3]), None),
        )

    def rebuild(self, r, node):
        carries, offset = [], 0
        for x in node.input_tensors:
            carries.append(r.carry[id(x)] + offset)
            offset += r.a.width(x)
        r.put(node.outputs[0], r.call(node, r.clone(node.operation)), np.concatenate(carries))

    def per_example_on(self, a, node, on):
        values = [on(x) for x in node.input_tensors]
        if all(v is None for v in values):
            return None
        batch = next(v.shape[0] for v in values if v is not None)
        return np.concatenate(
            [
                np.ones((batch, a.width(x)), bool) if v is None else v
                for x, v in zip(node.input_tensors, values)
            ],
            axis=1,
        )
