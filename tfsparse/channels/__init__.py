"""Channels: how every kind of layer moves, mixes and costs channels.

`ChannelAnalysis` computes per-channel facts (multipliers to fold, exact zeros,
what is needed) for `compact` and `summary`; `ChannelGroups` finds the sets of
channels that must be removed together, where `sparsify` puts one gate each.
Both read the one table of layer handlers in `tfsparse.channels.table`.
"""

from tfsparse.channels.analysis import ChannelAnalysis, gate_multiplier

__all__ = ["ChannelAnalysis", "gate_multiplier"]
