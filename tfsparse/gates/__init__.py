"""Gate layers: every sparsity method in tfsparse is a family of gates
(one registered gate class; `tfsparse.gates.registry`)."""

from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, WEIGHT, Gate, gates_of

# Registration order is the order of `tfsparse.METHODS`.
from tfsparse.gates.beta_bernoulli import BetaBernoulliGate
from tfsparse.gates.channel_keep import ChannelKeepGate
from tfsparse.gates.dependent_beta_bernoulli import (
    DependentBetaBernoulliGate,
    DynamicBetaBernoulliMask,
)
from tfsparse.gates.hard_concrete import HardConcreteGate
from tfsparse.gates.npn import NPNGate
from tfsparse.gates.targeted_dropout import TargetedDropoutGate

__all__ = [
    "UNIT",
    "WEIGHT",
    "Gate",
    "gates_of",
    "HardConcreteGate",
    "NPNGate",
    "TargetedDropoutGate",
    "ChannelKeepGate",
    "BetaBernoulliGate",
    "DependentBetaBernoulliGate",
    "DynamicBetaBernoulliMask",
    "registry",
]
