"""Property-based checks of every gate at extreme parameter values: masks in
[0, 1], penalties finite and ≥ 0, inference deterministic."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tfsparse.gates import (
    BetaBernoulliGate,
    DependentBetaBernoulliGate,
    HardConcreteGate,
    NPNGate,
    TargetedDropoutGate,
)

UNITS = 6
values = st.lists(st.floats(-60.0, 60.0, allow_nan=False), min_size=UNITS, max_size=UNITS)
scales = st.sampled_from([1e-6, 1e-2, 1.0, 1e3, 1e6])


def _check(gate, x):
    train = gate(x, training=True).numpy()
    assert np.all(np.isfinite(train))
    mask = gate.mask().numpy()
    assert np.all((mask >= 0) & (mask <= 1))
    penalty = float(gate.penalty())
    assert np.isfinite(penalty) and penalty >= -1e-6
    # No sampling at inference: two calls agree up to float32 rounding (under
    # load, a BB gate's two calls once differed in the last bit).
    np.testing.assert_allclose(
        gate(x, training=False).numpy(), gate(x, training=False).numpy(), rtol=1e-5, atol=0
    )


def _x(scale):
    return (np.random.default_rng(0).normal(size=(8, UNITS)) * scale).astype("float32")


@settings(max_examples=25, deadline=None)
@given(values, scales, st.sampled_from([0.0, 1.0, 7.0, 5000.0]))
def test_npn(phi, scale, k):
    gate = NPNGate(k=k, lam=1.0, estimator="arm")
    gate.build((None, UNITS))
    gate.phi.assign(np.array(phi, "float32"))
    _check(gate, _x(scale))


@settings(max_examples=25, deadline=None)
@given(values, scales)
def test_hard_concrete(log_alpha, scale):
    gate = HardConcreteGate(lam=1.0)
    gate.build((None, UNITS))
    gate.log_alpha.assign(np.clip(np.array(log_alpha, "float32"), -4.6, 4.6))
    _check(gate, _x(scale))


@settings(max_examples=25, deadline=None)
@given(values, values, scales, st.booleans())
def test_beta_bernoulli(a_raw, b_raw, scale, dependent):
    gate = DependentBetaBernoulliGate(freeze_bb=False) if dependent else BetaBernoulliGate()
    gate.build((None, UNITS))
    gate.a_raw.assign(np.array(a_raw, "float32"))
    gate.b_raw.assign(np.array(b_raw, "float32"))
    _check(gate, _x(scale))


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), scales, st.sampled_from(["weight", "unit"]))
def test_targeted_dropout(alpha, gamma, scale, structure):
    gate = TargetedDropoutGate(alpha=alpha, gamma=gamma, structure=structure)
    kernel = _x(scale)
    gate.build(kernel.shape)
    _check(gate, kernel)
