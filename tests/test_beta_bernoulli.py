"""Beta-Bernoulli dropout (BB) and dependent BB (DBB) gates."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special

import tfsparse
from tests.helpers.old_saves import edit_weights
from tfsparse.gates import gates_of
from tfsparse.gates.beta_bernoulli import (
    RAW_MAX,
    RAW_MIN,
    BetaBernoulliGate,
    kl_kumaraswamy_beta,
    kumaraswamy_sample,
    relaxed_bernoulli_sample,
)
from tfsparse.gates.dependent_beta_bernoulli import (
    PRIOR_VARIANCE,
    DependentBetaBernoulliGate,
    DynamicBetaBernoulliMask,
    kl_normal,
)

tfd = tfp.distributions


def _softplus_inverse(y):
    y = np.asarray(y, "float64")
    return y + np.log(-np.expm1(-y))


def softplus(x):
    return float(np.log1p(np.exp(x)))


def _set_bb(gate, a, b):
    gate.a_raw.assign(_softplus_inverse(a).astype("float32"))
    gate.b_raw.assign(_softplus_inverse(b).astype("float32"))


# ------------------------------------------------------- closed forms
A_GRID, B_GRID, ALPHA_GRID = (0.05, 1.0, 20.0), (0.2, 1.0, 10.0), (1e-4, 0.5, 2.0)
GRID = list(itertools.product(A_GRID, B_GRID, ALPHA_GRID))


def test_kl_matches_monte_carlo_from_tfp():
    """Closed form vs E_q[log q(π) − log p(π)], 1e5 float64 draws per cell.

    The estimator's variance is finite in every cell: with v = π^a ~
    Beta(1, b), log q − log p = log(ab/α) + (1 − α/a)·log v + (b−1)·log(1 − v),
    and both log v and −log(1 − v) ~ Exp(b) have finite variance. But for
    b < 1 the mass of π within 1e-16 of 1 is ≈ (1e-16/a)^b (≈ 1e-3 for
    b = 0.2), which float64 rounds to π = 1, where log q = +inf. So:
    cells with b ≥ 1 use TFP's `sample`/`log_prob` directly; cells with
    b = 0.2 draw π by its inverse CDF from u and evaluate the same log
    densities with log π and log(1 − π^a) = log1p(−u)/b taken from u
    (exact), after checking that these agree with TFP's `log_prob` wherever
    TFP can compute it accurately from π.
    """
    n = 100_000
    a, b, alpha = (np.array(v, "float64") for v in zip(*GRID))
    q = tfd.Kumaraswamy(a, b)
    p = tfd.Beta(alpha, np.ones_like(alpha))
    closed = kl_kumaraswamy_beta(a, b, alpha).numpy()

    pi = q.sample(n, seed=(1, 2))
    tfp_ratio = (q.log_prob(pi) - p.log_prob(pi)).numpy()

    u = np.random.default_rng(0).uniform(size=(n, len(GRID)))
    log1m_pia = np.log1p(-u) / b  # log(1 − π^a)
    log_pi = np.log(-np.expm1(log1m_pia)) / a
    u_ratio = np.log(a * b / alpha) + (a - 1) * log_pi + (b - 1) * log1m_pia - (alpha - 1) * log_pi
    pi_u = np.exp(log_pi)
    # Where π is neither 0 nor within 1e-6 of 1 in π^a, TFP computes the log
    # densities accurately from π itself.
    ok = (pi_u > 0) & (log1m_pia > np.log(1e-6))
    reference = (q.log_prob(pi_u) - p.log_prob(pi_u)).numpy()
    np.testing.assert_allclose(u_ratio[ok], reference[ok], rtol=1e-6, atol=1e-6)

    for i, (ai, bi, alphai) in enumerate(GRID):
        ratio = tfp_ratio[:, i] if bi >= 1 else u_ratio[:, i]
        assert np.isfinite(ratio).all(), (ai, bi, alphai)
        stderr = ratio.std() / np.sqrt(n)
        assert abs(ratio.mean() - closed[i]) < 3 * stderr, (ai, bi, alphai)
    assert (closed > 0).all()


def test_kl_is_nonnegative_and_float32_agrees():
    rng = np.random.default_rng(1)
    a = np.exp(rng.uniform(np.log(5e-5), np.log(1e3), 5000))
    b = np.exp(rng.uniform(np.log(5e-5), np.log(50.0), 5000))
    alpha = np.exp(rng.uniform(np.log(1e-6), np.log(10.0), 5000))
    kl64 = kl_kumaraswamy_beta(a, b, alpha).numpy()
    assert (kl64 >= -1e-9).all()
    # KL = 0 when q is the prior: Kumaraswamy(α, 1) = Beta(α, 1).
    np.testing.assert_allclose(kl_kumaraswamy_beta([0.3, 2.0], [1.0, 1.0], 0.3)[0], 0, atol=1e-12)
    kl32 = kl_kumaraswamy_beta(a.astype("float32"), b.astype("float32"), alpha).numpy()
    np.testing.assert_allclose(kl32, kl64, rtol=1e-4, atol=1e-3)


def test_normal_kl_and_prior_variance():
    loc = np.array([0.0, 1.0, -3.0, 10.0])
    scale = np.array([np.sqrt(5.0), 0.69, 2.0, 1e-3])
    expected = tfd.kl_divergence(
        tfd.Normal(loc, scale), tfd.Normal(0.0, np.sqrt(PRIOR_VARIANCE))
    ).numpy()
    np.testing.assert_allclose(kl_normal(loc, scale, PRIOR_VARIANCE).numpy(), expected, rtol=1e-10)
    assert PRIOR_VARIANCE == 5.0 and kl_normal(0.0, np.sqrt(5.0), 5.0).numpy() == 0.0


def test_kumaraswamy_mean_matches_beta_function():
    a = np.array([0.05, 0.3, 1.0, 4.0, 20.0, 1e3], "float64")
    b = np.array([0.2, 1.0, 10.0, 0.5, 50.0, 3.0], "float64")
    expected = b * np.exp(special.betaln(1 + 1 / a, b))
    np.testing.assert_allclose(tfd.Kumaraswamy(a, b).mean().numpy(), expected, rtol=1e-10)
    gate = BetaBernoulliGate()
    gate.build((None, 6))
    _set_bb(gate, a, b)
    np.testing.assert_allclose(gate.expected_pi().numpy(), expected, rtol=2e-4)


def test_samplers_follow_the_tfp_distributions():
    rng = np.random.default_rng(2)
    u = rng.uniform(size=20000).astype("float32")
    for a, b in [(0.3, 1.0), (5.0, 0.5), (1.0, 10.0)]:
        # Same values as TFP's inverse CDF where that one is accurate...
        np.testing.assert_allclose(
            kumaraswamy_sample(a, b, u[:50]).numpy(),
            tfd.Kumaraswamy(a, b).quantile(u[:50]).numpy(),
            rtol=2e-4,
            atol=1e-30,
        )
        # ...and the draws have the Kumaraswamy CDF (KS distance).
        draws = np.sort(kumaraswamy_sample(a, b, u).numpy().astype("float64"))
        cdf = tfd.Kumaraswamy(np.float64(a), np.float64(b)).cdf(draws).numpy()
        assert np.abs(cdf - np.arange(1, u.size + 1) / u.size).max() < 0.015
    temperature, probs = 0.5, np.float32(0.3)
    draws = np.sort(relaxed_bernoulli_sample(probs, temperature, u).numpy())
    reference = np.sort(
        tfd.RelaxedBernoulli(temperature, probs=probs).sample(u.size, seed=(3, 4)).numpy()
    )
    assert (
        np.abs(
            np.quantile(draws, np.linspace(0.05, 0.95, 19))
            - np.quantile(reference, np.linspace(0.05, 0.95, 19))
        ).max()
        < 0.02
    )


# ------------------------------------------------------- robustness
@pytest.mark.parametrize("dependent", [False, True])
def test_no_nan_at_extreme_parameters(dependent):
    """1,000 channels = 1,000 random initialisations over (and past) the
    clipped raw range, with extreme inputs and a tiny temperature."""
    c = 1000
    rng = np.random.default_rng(3)
    gate = (
        DependentBetaBernoulliGate(freeze_bb=False, seed=4)
        if dependent
        else BetaBernoulliGate(seed=4, alpha=2.0)
    )
    gate.build((None, 2, c))
    raw = rng.uniform(RAW_MIN - 5, RAW_MAX + 5, size=(2, c))
    raw[:, :4] = [[RAW_MIN, RAW_MAX, -1e4, 1e4], [RAW_MAX, RAW_MIN, 1e4, -1e4]]
    gate.a_raw.assign(raw[0].astype("float32"))
    gate.b_raw.assign(raw[1].astype("float32"))
    if dependent:
        gate.gamma.assign(rng.uniform(-100, 100, c).astype("float32"))
        gate.beta.assign(rng.uniform(-100, 100, c).astype("float32"))
        gate.sigma_raw.assign(rng.uniform(RAW_MIN - 5, RAW_MAX + 5, c).astype("float32"))
    x = np.concatenate([rng.normal(0, 1e4, (8, 1, c)), np.zeros((8, 1, c))], axis=1).astype(
        "float32"
    )
    for temperature in (0.1, 1e-3):
        gate.temperature.assign(temperature)
        for _ in range(3):
            with tf.GradientTape() as tape:
                y = gate(x, training=True)
                loss = tf.reduce_sum(tf.square(y) * 1e-8) + tf.add_n(gate.losses)
            gradients = tape.gradient(loss, gate.trainable_weights)
            assert np.isfinite(loss.numpy())
            for g in gradients:
                assert np.isfinite(g.numpy()).all()
    assert np.isfinite(gate(x).numpy()).all()


# --------------------------------------------------------- behaviour
def test_inference_is_deterministic_and_thresholded():
    gate = BetaBernoulliGate(seed=5)
    x = np.random.default_rng(4).normal(size=(16, 6)).astype("float32")
    gate.build(x.shape)
    # With b = 1, E[π] = a/(a+1): 4.5e-5 and 5e-4 (≤ 1e-3), 0.5, 0.9, 0.75, 0.99.
    _set_bb(gate, [softplus(RAW_MIN), 1.0, 9.0, 5e-4, 3.0, 99.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    mean = gate.expected_pi().numpy()
    first, second = gate(x).numpy(), gate(x).numpy()
    np.testing.assert_array_equal(first, second)
    mask = gate.mask().numpy()
    assert ((mask >= 0) & (mask <= 1)).all()
    np.testing.assert_array_equal(mask > 0, mean > 1e-3)
    np.testing.assert_array_equal(gate.active().numpy(), [False, True, True, False, True, True])
    np.testing.assert_array_equal(first[:, [0, 3]], 0.0)
    np.testing.assert_allclose(first[:, 1:3], x[:, 1:3] * mean[1:3], rtol=1e-6)
    # A larger threshold prunes more, still with exact zeros.
    strict = BetaBernoulliGate(threshold=0.8)
    strict.build(x.shape)
    strict.a_raw.assign(gate.a_raw.numpy())
    strict.b_raw.assign(gate.b_raw.numpy())
    np.testing.assert_array_equal(strict.active().numpy(), mean > 0.8)
    np.testing.assert_array_equal(strict(x).numpy()[:, mean <= 0.8], 0.0)


@pytest.mark.parametrize("cls", [BetaBernoulliGate, DependentBetaBernoulliGate])
def test_inference_graph_has_no_random_op(cls):
    gate = cls()
    gate.build((None, 4, 4, 6))
    graph = (
        tf.function(lambda t: gate(t)).get_concrete_function(tf.TensorSpec((None, 4, 4, 6))).graph
    )
    types = {op.type for op in graph.get_operations()}
    assert not [t for t in types if "Random" in t], types
    training = (
        tf.function(lambda t: gate(t, training=True))
        .get_concrete_function(tf.TensorSpec((None, 4, 4, 6)))
        .graph
    )
    assert [op for op in training.get_operations() if "Random" in op.type]


def test_training_masks_keep_the_expected_fraction():
    gate = BetaBernoulliGate(seed=6)
    x = np.ones((64, 200), "float32")
    gate.build(x.shape)
    _set_bb(gate, np.full(200, 9.0), np.full(200, 1.0))  # E[π] = a/(a+1) = 0.9
    np.testing.assert_allclose(gate.expected_pi().numpy(), 0.9, rtol=1e-5)
    masks = np.stack([gate(x, training=True).numpy() for _ in range(10)])
    assert ((masks >= 0) & (masks <= 1)).all()
    assert abs(masks.mean() - 0.9) < 0.02
    assert abs((masks > 0.5).mean() - 0.9) < 0.02
    # One π per step but one z per example: rows differ within a step.
    assert (masks[0] != masks[0][:1]).any()
    # The penalty is KL / N.
    gate(x, training=True)
    np.testing.assert_allclose(gate.losses[-1].numpy(), gate.bb_kl().numpy(), rtol=1e-6)


def test_kl_weight_and_temperature_are_scheduled():
    gate = BetaBernoulliGate(dataset_size=10, kl_weight=0.0)
    gate.build((None, 3))
    assert set(gate.scheduled) == {"temperature", "kl_weight"}
    assert gate.penalty().numpy() == 0.0
    gate.kl_weight.assign(0.5)
    np.testing.assert_allclose(gate.penalty().numpy(), 0.5 * gate.bb_kl().numpy() / 10, rtol=1e-6)


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (BetaBernoulliGate, dict(alpha=0.0), "alpha"),
        (BetaBernoulliGate, dict(a_raw_init=-20.0), "a_raw_init"),
        (BetaBernoulliGate, dict(b_raw_init=float("nan")), "b_raw_init"),
        (BetaBernoulliGate, dict(temperature=0.0), "temperature"),
        (BetaBernoulliGate, dict(threshold=1.0), "threshold"),
        (BetaBernoulliGate, dict(kl_weight=-1.0), "kl_weight"),
        (BetaBernoulliGate, dict(structure="weight"), "structure"),
        (DependentBetaBernoulliGate, dict(momentum=1.0), "momentum"),
        (DependentBetaBernoulliGate, dict(epsilon=0.0), "epsilon"),
        (DependentBetaBernoulliGate, dict(prior_variance=-5.0), "prior_variance"),
        (DependentBetaBernoulliGate, dict(sigma_raw_init=100.0), "sigma_raw_init"),
        (DependentBetaBernoulliGate, dict(beta_init=float("inf")), "beta_init"),
        (DynamicBetaBernoulliMask, dict(units=3, threshold=-1.0), "threshold"),
    ],
)
def test_arguments_are_validated(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


def test_freeze_bb_must_be_a_bool():
    with pytest.raises(TypeError, match="freeze_bb"):
        DependentBetaBernoulliGate(freeze_bb="yes")


def test_mixed_precision_computes_in_float32():
    gate = DependentBetaBernoulliGate(dtype="mixed_float16", freeze_bb=False, seed=7)
    x = np.random.default_rng(5).normal(size=(8, 5)).astype("float16")
    y = gate(x, training=True)
    assert y.dtype == tf.float16 and gate.a_raw.dtype == "float32"
    assert gate.losses[-1].dtype == tf.float32 and np.isfinite(gate.losses[-1].numpy())
    assert gate(x).dtype == tf.float16


# --------------------------------------------------------------- DBB
def test_dbb_masks_are_per_example_and_static_part_is_bb():
    rng = np.random.default_rng(6)
    gate = DependentBetaBernoulliGate(seed=8, beta_init=0.5)
    x = rng.normal(size=(32, 4, 4, 6)).astype("float32")
    for _ in range(5):
        gate(x, training=True)  # moves the moving statistics
    assert not np.allclose(gate.moving_mean.numpy(), 0.0)
    _set_bb(gate, np.full(6, 9.0), np.full(6, 1.0))
    gate.a_raw.assign(np.array([RAW_MIN] + [gate.a_raw.numpy()[0]] * 5, "float32"))
    z = gate.inference_mask(x).numpy()
    assert z.shape == (32, 1, 1, 6)
    np.testing.assert_array_equal(z, gate.inference_mask(x).numpy())
    assert ((z >= 0) & (z <= 1)).all()
    assert len({tuple(row) for row in z[:, 0, 0]}) > 1  # examples differ
    np.testing.assert_array_equal(z[..., 0], 0.0)  # statically pruned
    static = gate.mask().numpy()
    assert (z[:, 0, 0] <= static + 1e-7).all()
    np.testing.assert_array_equal(gate.active().numpy(), static > 0)
    expected = ((z[:, 0, 0] > 0).sum(axis=1)).mean()
    np.testing.assert_allclose(gate.expected_active(x).numpy(), expected)
    assert expected < 5  # some dynamic pruning
    train = gate(x, training=True).numpy() / np.where(x == 0, 1, x)
    assert len({tuple(np.round(row, 4)) for row in train[:, 0, 0]}) > 1


def test_dbb_from_bb_freezes_a_and_b():
    inputs = keras.Input((6,))
    bb = BetaBernoulliGate(a_raw_init=2.0, threshold=0.01, alpha=0.5, dataset_size=50, seed=9)
    bb(inputs)
    bb.a_raw.assign(np.linspace(-3, 3, 6).astype("float32"))
    dbb = DependentBetaBernoulliGate.from_bb(bb, seed=10)
    assert dbb.built and dbb.threshold == 0.01 and dbb.alpha == 0.5
    assert dbb.dataset_size == 50 and dbb.freeze_bb
    np.testing.assert_array_equal(dbb.a_raw.numpy(), bb.a_raw.numpy())
    np.testing.assert_array_equal(dbb.mask().numpy(), bb.mask().numpy())
    assert {w.name for w in dbb.trainable_weights} == {"gamma", "beta", "sigma_raw"}
    model = keras.Sequential([inputs, dbb, keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    x = np.random.default_rng(7).normal(size=(64, 6)).astype("float32")
    model.fit(x, x[:, :2], epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(dbb.a_raw.numpy(), bb.a_raw.numpy())
    np.testing.assert_array_equal(dbb.b_raw.numpy(), bb.b_raw.numpy())
    assert not np.allclose(dbb.beta.numpy(), 1.0)
    with tf.GradientTape() as tape:
        penalty = dbb.regularization()
    assert tape.gradient(penalty, dbb.a_raw) is None
    # load_bb_weights refuses a gate with other channels.
    other = BetaBernoulliGate()
    other.build((None, 5))
    with pytest.raises(ValueError, match="mask shape"):
        dbb.load_bb_weights(other)


def test_dbb_keeps_the_units_of_the_hardened_bb_gate_it_continues():
    """A budget's projection hardens BB with units closed that E[π] keeps
    (and may reopen one it drops): DBB continues that mask, in training,
    at inference and in the cost it reports, rather than E[π]'s rule."""
    inputs = keras.Input((6,))
    bb = BetaBernoulliGate(a_raw_init=3.0, dataset_size=50, seed=9)
    bb(inputs)
    bb.a_raw.assign([3.0, 3.0, -8.0, 3.0, 3.0, 3.0])  # unit 2: E[π] under the threshold
    bb.harden()
    projected = bb.hard_mask.numpy()
    projected[[0, 4]] = 0.0  # closed by the projection although E[π] keeps them
    projected[2] = 1.0  # reopened: passes at 1
    bb.hard_mask.assign(projected)
    dbb = DependentBetaBernoulliGate.from_bb(bb, seed=10)
    np.testing.assert_array_equal(dbb.mask().numpy(), projected)
    np.testing.assert_array_equal(dbb.active().numpy(), projected > 0)
    assert dbb.open_probability().numpy()[[0, 4]].tolist() == [0.0, 0.0]
    x = np.abs(np.random.default_rng(3).normal(size=(32, 6))).astype("float32") + 0.5
    trained = dbb(x, training=True).numpy()
    assert not trained[:, [0, 4]].any() and trained[:, 2].any()
    inferred = dbb(x).numpy()
    assert not inferred[:, [0, 4]].any() and inferred[:, 2].any()
    # A BB gate that was not hardened leaves E[π]'s rule in charge.
    fresh = BetaBernoulliGate(a_raw_init=3.0, dataset_size=50, seed=9)
    fresh(inputs)
    fresh.a_raw.assign(bb.a_raw)
    follower = DependentBetaBernoulliGate.from_bb(fresh, seed=10)
    np.testing.assert_array_equal(follower.mask().numpy(), fresh.mask().numpy())
    assert follower.active().numpy().tolist() == [True, True, False, True, True, True]


def test_a_dbb_gate_saved_before_it_kept_bb_hardened_masks_still_loads(tmp_path):
    """DBB gates saved before `bb_hard_mask` existed (the arch benchmark's
    BB→DBB runs) hold every other variable; they load, and follow E[π]."""
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    bb_model = tfsparse.sparsify(model, "bb", dataset_size=64, seed=0)
    dbb_model = tfsparse.sparsify(bb_model, "dbb", dataset_size=64)
    for gate in gates_of(dbb_model):
        gate.beta.assign(np.full(gate.mask_shape, 0.7, "float32"))
    dbb_model.save(tmp_path / "new.keras")
    gate = gates_of(dbb_model)[0]
    variables = gate._trainable_variables + gate._non_trainable_variables
    dropped = next(i for i, v in enumerate(variables) if v is gate.bb_hard_mask)

    def without_bb_hard_mask(weights):
        layers = [k for k in weights["layers"] if k.startswith("dependent_beta_bernoulli")]
        assert len(layers) == 2
        for layer in layers:
            own = weights["layers"][layer]["vars"]
            for index in range(dropped, len(variables) - 1):  # as saved without it
                del own[str(index)]
                own.copy(own[str(index + 1)], str(index))
            del own[str(len(variables) - 1)]

    edit_weights(tmp_path / "new.keras", tmp_path / "old.keras", without_bb_hard_mask)
    loaded = keras.models.load_model(tmp_path / "old.keras")
    for before, after in zip(gates_of(dbb_model), gates_of(loaded)):
        np.testing.assert_allclose(after.beta.numpy(), 0.7)
        assert (after.bb_hard_mask.numpy() < 0).all()
        np.testing.assert_array_equal(after.mask().numpy(), before.mask().numpy())


def test_sparsify_dbb_continues_from_a_bb_model():
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    bb_model = tfsparse.sparsify(model, "bb", dataset_size=64, a_raw_init=2.0, seed=0)
    x = np.random.default_rng(13).normal(size=(32, 6)).astype("float32")
    for gate in gates_of(bb_model):  # as if trained
        gate.a_raw.assign(np.random.default_rng(0).uniform(-3, 3, gate.a_raw.shape))
    dbb_model = tfsparse.sparsify(bb_model, "dbb", dataset_size=64)
    pairs = list(zip(gates_of(bb_model), gates_of(dbb_model)))
    assert pairs and all(
        isinstance(d, DependentBetaBernoulliGate) and d.freeze_bb for _, d in pairs
    )
    for bb, dbb in pairs:
        np.testing.assert_array_equal(dbb.a_raw.numpy(), bb.a_raw.numpy())
        np.testing.assert_array_equal(dbb.b_raw.numpy(), bb.b_raw.numpy())
    # Fresh moving statistics and β = 1: on non-negative inputs DBB = BB.
    xp = np.abs(x)
    np.testing.assert_allclose(
        dbb_model.predict(xp, verbose=0), bb_model.predict(xp, verbose=0), rtol=1e-6, atol=1e-6
    )


def _two_branches():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(4, activation="relu", name="b")(inputs)
    joined = keras.layers.Concatenate()([a, b])
    return keras.Model(inputs, keras.layers.Dense(3)(joined))


def test_dbb_gives_a_static_bb_gate_to_each_branch_of_a_concatenation():
    # Each branch's channels are part of the joined tensor (the first at
    # offset 0): a per-example factor, which reads its whole input, cannot
    # sit there.
    sparse = tfsparse.sparsify(_two_branches(), "dbb", dataset_size=10, verbose=0)
    kinds = {g.name: type(g) for g in gates_of(sparse)}
    assert kinds == {
        "input_0_gate": DependentBetaBernoulliGate,
        "a_gate": BetaBernoulliGate,
        "b_gate": BetaBernoulliGate,
    }
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    sparse.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sparse.fit(x, np.array([0, 1, 2, 0, 1]), epochs=1, verbose=0)
    np.testing.assert_allclose(tfsparse.compact(sparse)(x), sparse(x), atol=1e-6)
    # Continued from BB, the branches keep their BB gates.
    bb = tfsparse.sparsify(_two_branches(), "bb", dataset_size=10, verbose=0)
    continued = tfsparse.sparsify(bb, "dbb", dataset_size=10, verbose=0)
    assert [type(g) for g in gates_of(continued)] == [
        DependentBetaBernoulliGate,
        BetaBernoulliGate,
        BetaBernoulliGate,
    ]


def test_dbb_is_refused_where_no_bb_gate_can_be_continued():
    gate = BetaBernoulliGate(name="shared_gate")
    first, second = keras.Input((4,)), keras.Input((4,))
    joined = keras.layers.Concatenate()([gate(first), gate(second)])
    model = keras.Model([first, second], keras.layers.Dense(2)(joined))
    with pytest.raises(ValueError, match="No 'dbb' gate can continue"):
        tfsparse.sparsify(model, "dbb", dataset_size=10, verbose=0)


def _gated_mlp(gate, units=8):
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(units, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="out")(gate(hidden))
    return keras.Model(inputs, outputs)


def test_compacted_layer_reproduces_gated_inference():
    rng = np.random.default_rng(8)
    gate = DependentBetaBernoulliGate(seed=11, name="gate")
    model = _gated_mlp(gate)
    x = rng.normal(size=(40, 5)).astype("float32")
    for _ in range(20):
        model(x, training=True)  # moving statistics
    gate.beta.assign(rng.uniform(0.2, 1.2, 8).astype("float32"))
    gate.gamma.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    _set_bb(gate, np.array([0.2, 9.0, 2.0, 4.5e-5, 9.0, 1.0, 3e-5, 5.0]), np.ones(8))
    kept = np.flatnonzero(gate.active().numpy())
    assert 0 < len(kept) < 8
    hidden_layer, out_layer = model.get_layer("hidden"), model.get_layer("out")
    hidden = hidden_layer(x)
    gated = gate(hidden).numpy()
    static = gate.mask().numpy()[kept]
    kernel, bias = hidden_layer.kernel.numpy()[:, kept], hidden_layer.bias.numpy()[kept]
    out_kernel, out_bias = out_layer.kernel.numpy()[kept], out_layer.bias.numpy()

    # apply_static: the layer applies the whole mask.
    layer = gate.compacted_layer(kept, apply_static=True)
    np.testing.assert_allclose(
        layer(hidden.numpy()[:, kept]).numpy(), gated[:, kept], rtol=1e-6, atol=1e-7
    )
    assert (gated[:, kept] == 0).any() and (gated[:, kept] != 0).any()

    # E[π] folded into the producer (through the ReLU): the input carries it.
    inputs = keras.Input((5,))
    small_hidden = keras.layers.Dense(len(kept), activation="relu")
    small_out = keras.layers.Dense(3)
    dynamic = gate.compacted_layer(kept, input_scale=static)
    small = keras.Model(inputs, small_out(dynamic(small_hidden(inputs))))
    small_hidden.set_weights([kernel * static, bias * static])
    small_out.set_weights([out_kernel, out_bias])
    np.testing.assert_allclose(
        dynamic(small_hidden(x)).numpy(), gated[:, kept], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )

    # Default, what tfsparse.compact does: E[π] folded into the next layer's rows.
    layer = gate.compacted_layer(kept)
    out = layer(hidden.numpy()[:, kept]).numpy() @ (out_kernel * static[:, None]) + out_bias
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_compact_keeps_the_dynamic_layer_and_the_function():
    from tfsparse.compact import compact

    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(10, activation="relu"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    sparse = tfsparse.sparsify(
        model, "dbb", dataset_size=100, freeze_bb=False, beta_init=0.3, gate_features=False, seed=1
    )
    x = np.random.default_rng(14).uniform(size=(64, 6)).astype("float32")
    gates = gates_of(sparse)
    rng = np.random.default_rng(15)
    for gate in gates:
        raw = rng.uniform(-2, 3, gate.a_raw.shape).astype("float32")
        raw[::3] = RAW_MIN  # statically pruned
        gate.a_raw.assign(raw)
        channels = raw.shape[0]
        gate.beta.assign(rng.uniform(-0.5, 0.8, channels).astype("float32"))
        gate.moving_mean.assign(rng.uniform(0.0, 0.5, channels).astype("float32"))
        gate.moving_variance.assign(rng.uniform(0.05, 0.5, channels).astype("float32"))
    hidden = keras.Model(sparse.inputs[0], gates[0].input)(x)
    static = float(gates[0].active().numpy().sum())
    assert 0 < gates[0].expected_active(hidden).numpy() < static  # dynamic pruning
    small = compact(sparse)
    dynamic = [layer for layer in small.layers if isinstance(layer, DynamicBetaBernoulliMask)]
    assert [layer.units for layer in dynamic] == [int(g.active().numpy().sum()) for g in gates]
    np.testing.assert_allclose(
        small.predict(x, verbose=0), sparse.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


# ------------------------------------------------------ serialization
@pytest.mark.parametrize("cls", [BetaBernoulliGate, DependentBetaBernoulliGate])
def test_config_and_keras_file_round_trip(cls, tmp_path):
    settings = dict(
        alpha=0.01,
        a_raw_init=1.5,
        b_raw_init=0.3,
        temperature=0.2,
        threshold=0.05,
        kl_weight=0.5,
        dataset_size=64,
        group_size=6,
        seed=3,
        lr_multiplier=10.0,
    )
    if cls is DependentBetaBernoulliGate:
        settings.update(
            freeze_bb=False,
            gamma_init=0.9,
            beta_init=2.0,
            sigma_raw_init=-1.0,
            prior_variance=3.0,
            momentum=0.9,
            epsilon=1e-2,
        )
    gate = cls(name="gate", **settings)
    config = gate.get_config()
    for key, value in settings.items():
        assert config[key] == value, key
    assert cls.from_config(config).get_config() == config

    model = _gated_mlp(gate)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    x = np.random.default_rng(9).normal(size=(64, 5)).astype("float32")
    model.fit(x, x[:, :3], epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for old, new in zip(gate.weights, loaded.get_layer("gate").weights):
        np.testing.assert_array_equal(old.numpy(), new.numpy())

    if cls is DependentBetaBernoulliGate:
        kept = np.flatnonzero(gate.active().numpy())
        inputs = keras.Input((len(kept),))
        dynamic = gate.compacted_layer(kept, apply_static=True)
        small = keras.Model(inputs, dynamic(inputs))
        assert (
            DynamicBetaBernoulliMask.from_config(dynamic.get_config()).get_config()
            == dynamic.get_config()
        )
        small.save(tmp_path / "small.keras")
        reloaded = keras.models.load_model(tmp_path / "small.keras")
        h = np.abs(np.random.default_rng(12).normal(size=(16, len(kept)))).astype("float32")
        np.testing.assert_array_equal(reloaded.predict(h, verbose=0), small.predict(h, verbose=0))


def test_jit_compiled_fit():
    """One XLA-compiled model holds both gates (one compilation)."""
    inputs = keras.Input((5,))
    bb = BetaBernoulliGate(dataset_size=64, seed=12, name="bb")
    dbb = DependentBetaBernoulliGate(dataset_size=64, seed=13, freeze_bb=False, name="dbb")
    hidden = dbb(keras.layers.Dense(8, activation="relu")(bb(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(keras.optimizers.Adam(0.01), "mse", jit_compile=True)
    x = np.random.default_rng(10).normal(size=(64, 5)).astype("float32")
    history = model.fit(x, x[:, :3], epochs=2, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for gate in (bb, dbb):
        assert not np.allclose(gate.a_raw.numpy(), gate.a_raw_init)
    assert not np.allclose(dbb.moving_mean.numpy(), 0.0)


# ------------------------------------------------------------ learning
def test_bb_on_inputs_prunes_irrelevant_features():
    rng = np.random.default_rng(11)
    n = 512
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :4] @ np.array([1.0, -1.0, 1.5, -1.5])).astype("float32")[:, None]
    inputs = keras.Input((8,))
    gate = BetaBernoulliGate(dataset_size=n, seed=0, name="features")
    hidden = keras.layers.Dense(16, activation="relu")(gate(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(keras.optimizers.Adam(0.02), "mse")
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().shuffle(n, seed=0).batch(64)
    model.fit(data, steps_per_epoch=200, epochs=1, shuffle=False, verbose=0)
    mean = gate.expected_pi().numpy()
    assert mean[4:].max() < 0.6 * mean[:4].min(), mean
    assert mean[4:].mean() < 0.35 * mean[:4].mean(), mean
