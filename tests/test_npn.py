"""The claims of Neural Plasticity Networks, tested on the NPNGate."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsparse.gates import NPNGate
from tfsparse.schedules import K_DETERMINISTIC
from tfsparse.sparse_model import SparseModel


def _gated_mlp(k, estimator="arm", lam=0.0, units=6, seed=1):
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(units, activation="tanh", name="hidden")(inputs)
    gated = NPNGate(lam=lam, k=k, estimator=estimator, dataset_size=100, seed=seed, name="gate")(
        hidden
    )
    outputs = keras.layers.Dense(3, name="out")(gated)
    return SparseModel(inputs=inputs, outputs=outputs)


@pytest.mark.parametrize("estimator", ["arm", "hard_concrete"])
def test_k_zero_is_dropout_half(estimator):
    gate = NPNGate(k=0.0, estimator=estimator, seed=3)
    x = np.ones((4000, 50), "float32")
    gate.build(x.shape)
    gate.phi.assign(np.random.default_rng(0).normal(0, 5, 50).astype("float32"))
    np.testing.assert_array_equal(gate.probability().numpy(), 0.5)
    masks = np.stack([gate(x, training=True).numpy() for _ in range(20)])
    # 20·4000·50 Bernoulli(½) draws for ARM (per-batch draws: 20·50); the
    # bound is 5 standard errors of the smaller count.
    draws = 20 * 50 if estimator == "arm" else masks.size
    assert abs(masks.mean() - 0.5) < 5 * 0.5 / np.sqrt(draws)


@pytest.mark.parametrize("estimator", ["arm", "hard_concrete"])
def test_k_zero_gives_phi_no_gradient(estimator):
    model = _gated_mlp(k=0.0, estimator=estimator, lam=1.0)
    model.compile(
        keras.optimizers.Adam(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    before = model.get_layer("gate").phi.numpy().copy()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, np.arange(64) % 3, epochs=3, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.get_layer("gate").phi.numpy(), before)
    # ...while the weights did learn.
    assert model.get_layer("hidden").kernel.trainable


@pytest.mark.parametrize("estimator", ["arm", "hard_concrete"])
def test_large_k_is_ordinary_training(estimator):
    model = _gated_mlp(k=K_DETERMINISTIC, estimator=estimator)
    x = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
    np.testing.assert_allclose(
        model(x, training=True).numpy(), model(x, training=False).numpy(), atol=1e-6
    )


def test_arm_gradient_matches_exact_expectation():
    """ARM's φ-gradient, averaged over many steps, equals the finite-difference
    gradient of the exact expected loss E_z[f(z)] (2^units terms)."""
    k, units, lr, steps = 2.0, 3, 1e-4, 3000
    model = _gated_mlp(k=k, units=units)
    gate = model.get_layer("gate")
    gate.phi.assign(np.array([0.3, -0.2, 0.6], "float32"))
    for name in ("hidden", "out"):
        model.get_layer(name).trainable = False
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (np.arange(32) % 3).astype("int64")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def expected_loss(phi):
        hidden = model.get_layer("hidden")(x).numpy()
        pi = 1 / (1 + np.exp(-k * phi))
        total = 0.0
        for z in itertools.product([0.0, 1.0], repeat=units):
            z = np.array(z)
            p = np.prod(np.where(z > 0, pi, 1 - pi))
            logits = model.get_layer("out")(hidden * z)
            total += p * float(loss_fn(y, logits))
        return total

    phi0 = gate.phi.numpy().astype("float64")
    h = 1e-3
    exact = np.array(
        [
            (expected_loss(phi0 + h * e) - expected_loss(phi0 - h * e)) / (2 * h)
            for e in np.eye(units)
        ]
    )

    history = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: history.append(gate.phi.numpy().copy())
    )
    # Plain SGD on φ too, so that each step moves it by lr × the estimate.
    model.compile(keras.optimizers.SGD(lr), loss_fn, gate_optimizer=keras.optimizers.SGD(lr))
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps)
    model.fit(data, epochs=1, verbose=0, callbacks=[record])
    phis = np.concatenate([phi0[None], np.array(history)])
    per_step = -(np.diff(phis, axis=0)) / lr
    estimate = per_step.mean(axis=0)
    standard_error = per_step.std(axis=0) / np.sqrt(steps)
    # Within 4 standard errors (plus float32 rounding of tiny updates).
    assert np.all(np.abs(estimate - exact) < 4 * standard_error + 2e-3), (estimate, exact)
    assert np.all(np.abs(exact) > 1e-3)  # a meaningful, non-zero target


def test_hardened_gate_is_frozen():
    model = _gated_mlp(k=3.0, lam=1.0)
    gate = model.get_layer("gate")
    gate.phi.assign(np.array([1.0, -1.0, 0.2, -0.2, 2.0, 0.01], "float32"))
    gate.harden()
    frozen = gate.mask().numpy().copy()
    model.compile(
        keras.optimizers.Adam(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, np.arange(64) % 3, epochs=3, batch_size=16, verbose=0)
    np.testing.assert_array_equal(gate.mask().numpy(), frozen)
    np.testing.assert_array_equal(
        gate(x[:, :1].repeat(6, 1), training=True).numpy(),
        gate(x[:, :1].repeat(6, 1), training=False).numpy(),
    )
    assert float(gate.penalty()) == 0.0


def test_inference_rule_keeps_pi_above_half():
    gate = NPNGate(k=1.0)
    gate.build((None, 4))
    gate.phi.assign(np.array([2.0, 0.0, -0.1, -3.0], "float32"))
    pi = 1 / (1 + np.exp(-np.array([2.0, 0.0, -0.1, -3.0])))
    np.testing.assert_allclose(gate.mask().numpy(), np.where(pi >= 0.5, pi, 0), rtol=1e-6)
    np.testing.assert_array_equal(gate.active().numpy(), [True, True, False, False])


def test_expand_mode_initialisation_and_wake():
    gate = NPNGate(k=1.0, k_plastic=1.0, mode="expand", init_size=3, seed=0)
    gate.build((None, 10))
    assert int(np.sum(gate.active().numpy())) == 3
    assert gate.wake_next() == 1
    assert int(np.sum(gate.active().numpy())) == 4
    assert gate.wake_next(count=2) == 2
    assert int(np.sum(gate.active().numpy())) == 6
    # A woken gate that closed again blocks further growth.
    phi = gate.phi.numpy()
    phi[0] = -5.0
    gate.phi.assign(phi)
    assert gate.wake_next() == 0


def test_expand_takes_one_initial_size_per_hidden_unit_gate():
    import tfsparse

    dense = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(6, activation="relu"),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    sparse = tfsparse.sparsify(
        dense, "npn", dataset_size=10, mode="expand", init_size=[2, 3], verbose=0
    )
    gates = [(g.mode, g.init_size) for g in tfsparse.gates.gates_of(sparse)]
    # The input pixels start open and prune; the hidden layers grow from 2 and 3.
    assert gates == [("prune", None), ("expand", 2), ("expand", 3)]


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(lam=-1.0), "lam"),
        (dict(k=-0.5), "`k`"),
        (dict(mode="grow"), "mode"),
        (dict(estimator="reinforce"), "estimator"),
        (dict(mode="expand"), "init_size"),
        (dict(init_size=3), "init_size"),
        (dict(k_plastic=0.0), "k_plastic"),
    ],
)
def test_bad_settings_name_the_parameter(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        NPNGate(**bad)
