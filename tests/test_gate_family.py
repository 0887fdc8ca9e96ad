"""A new method is one gate class and one registry entry: a toy family,
defined here alone, goes through sparsify → fit → summary → compact → export,
with the shortest path's scheduler and a budget."""

import keras
import numpy as np
import pytest
from keras import ops

import tfsparse
from tests.helpers.costs import flops_fraction
from tfsparse import data, models
from tfsparse.gates import Gate, registry


class SigmoidGate(Gate):
    """A deterministic toy: mask = σ(s) while training, σ(s)·1[σ(s) > ½] at
    inference, penalty λ·Σσ(s)."""

    method = "toy_sigmoid"
    budget_replaces = "lam"
    recommended = {"lam": 0.05, "lr_multiplier": 10.0}

    def __init__(self, lam=0.1, **kwargs):
        super().__init__(**kwargs)
        self.lam = lam

    def build_gate(self, mask_shape):
        self.score = self.add_weight(
            name="score", shape=mask_shape, initializer=keras.initializers.Constant(0.5)
        )

    def sample_mask(self, inputs):
        return ops.sigmoid(self.score)

    def open_probability(self):
        return ops.sigmoid(self.score)

    def deterministic_mask(self):
        p = ops.sigmoid(self.score)
        return ops.where(p > 0.5, p, ops.zeros_like(p))

    def regularization(self):
        return self.lam * self.group_size * ops.sum(ops.sigmoid(self.score))

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}


@pytest.fixture
def toy_family():
    registry.register(SigmoidGate)
    yield SigmoidGate
    registry.unregister(SigmoidGate.method)


def _digits():
    splits = data.load("digits")
    return splits, models.lenet_300_100(splits.input_shape, 10)


def _fit(sparse, splits, epochs):
    sparse.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return sparse.fit(
        *splits.train,
        validation_data=splits.val,
        epochs=epochs,
        batch_size=64,
        verbose=0,
        callbacks=[tfsparse.SparsityScheduler()],
    )


def test_a_registered_toy_family_runs_the_whole_path(toy_family, tmp_path):
    splits, dense = _digits()
    sparse = tfsparse.sparsify(
        dense, "toy_sigmoid", dataset_size=len(splits.train[0]), seed=0, verbose=0
    )
    gates = tfsparse.gates.gates_of(sparse)
    assert gates and all(type(g) is SigmoidGate for g in gates)
    # The recommended settings were filled in from the class.
    assert all((g.lam, g.lr_multiplier) == (0.05, 10.0) for g in gates)
    history = _fit(sparse, splits, epochs=8)
    assert history.history["val_accuracy"][-1] > 0.7
    x = splits.test[0][:64]
    small = tfsparse.compact(sparse)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), sparse.predict(x, verbose=0), atol=1e-4
    )
    assert flops_fraction(small, dense) < 0.9  # the penalty closed units
    exported = tfsparse.export(small, tmp_path / "toy", test_data=splits.test, latency_runs=2)
    assert exported["tflite"]["parity"]["ok"] is True


def test_the_toy_family_reaches_a_budget_and_is_refused_once_unregistered(toy_family):
    splits, dense = _digits()
    sparse = tfsparse.sparsify(
        dense,
        "toy_sigmoid",
        dataset_size=len(splits.train[0]),
        target_flops=0.3,
        seed=0,
        verbose=0,
    )
    assert all(g.lam == 0.0 for g in tfsparse.gates.gates_of(sparse))  # the budget's
    _fit(sparse, splits, epochs=12)
    fraction = flops_fraction(tfsparse.compact(sparse), dense)
    assert fraction <= 0.3 and fraction > 0.25, fraction
    registry.unregister("toy_sigmoid")
    with pytest.raises(ValueError, match="`method` must be one of"):
        tfsparse.sparsify(dense, "toy_sigmoid", dataset_size=10)
    registry.register(SigmoidGate)  # for the fixture's teardown


def test_registering_is_checked():
    with pytest.raises(TypeError, match="Gate subclasses"):
        registry.register(keras.layers.Dense)

    class Nameless(Gate):
        pass

    with pytest.raises(ValueError, match="needs a `method` name"):
        registry.register(Nameless)

    class Impostor(Gate):
        method = "npn"

    with pytest.raises(ValueError, match="already registered to NPNGate"):
        registry.register(Impostor)
