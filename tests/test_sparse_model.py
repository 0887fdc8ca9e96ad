"""SparseModel's train step: gate learning-rate multipliers."""

import keras
import numpy as np

from tfsparse.gates import HardConcreteGate
from tfsparse.sparse_model import SparseModel


def _model(multiplier):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    gated = HardConcreteGate(
        lam=1.0, dataset_size=10, seed=0, lr_multiplier=multiplier, name="gate"
    )(hidden)
    model = SparseModel(inputs=inputs, outputs=keras.layers.Dense(2)(gated))
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_gate_update_is_scaled_and_weights_are_not():
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    y = np.arange(8) % 2
    moves = {}
    for multiplier in (1.0, 5.0):
        model = _model(multiplier)
        gate, hidden = model.get_layer("gate"), model.get_layer("hidden")
        before = gate.log_alpha.numpy().copy(), hidden.kernel.numpy().copy()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        moves[multiplier] = (gate.log_alpha.numpy() - before[0], hidden.kernel.numpy() - before[1])
    np.testing.assert_allclose(moves[5.0][0], 5.0 * moves[1.0][0], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(moves[5.0][1], moves[1.0][1], rtol=1e-4, atol=1e-7)
    assert np.abs(moves[1.0][0]).max() > 0
