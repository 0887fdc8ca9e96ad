"""SparseModel's train step: gate learning-rate multipliers, parameter averaging."""

import keras
import numpy as np

from tfsparse.gates import HardConcreteGate
from tfsparse.sparse_model import SparseModel


def _model(multiplier, optimizer=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    gated = HardConcreteGate(
        lam=1.0, dataset_size=10, seed=0, lr_multiplier=multiplier, name="gate"
    )(hidden)
    model = SparseModel(inputs=inputs, outputs=keras.layers.Dense(2)(gated))
    model.compile(
        optimizer or keras.optimizers.SGD(0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
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


class _Values(keras.callbacks.Callback):
    """Each step's value of some variables, before any averaging replaces them."""

    def __init__(self, variables):
        super().__init__()
        self.variables, self.steps = variables, []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([v.numpy().copy() for v in self.variables])


def test_parameter_averaging_covers_the_gates_and_ends_in_the_model():
    # Keras' `use_ema` on the weights' optimizer: the gates (trained by their
    # own optimizers, here at 10x) are averaged too, and `fit` ends with
    # every trainable variable replaced by its average.
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.arange(32) % 2
    momentum = 0.8
    model = _model(10.0, keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=momentum))
    gate, hidden = model.get_layer("gate"), model.get_layer("hidden")
    values = _Values([gate.log_alpha, hidden.kernel])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[values])
    average = values.steps[0]
    for step in values.steps[1:]:
        average = [momentum * a + (1 - momentum) * v for a, v in zip(average, step)]
    # The average is not the last step's value: the check below can fail.
    assert not np.allclose(values.steps[-1][0], average[0])
    np.testing.assert_allclose(gate.log_alpha.numpy(), average[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hidden.kernel.numpy(), average[1], rtol=1e-5, atol=1e-6)


def test_a_loaded_model_is_compiled_with_every_optimizers_state(tmp_path):
    # Keras does not compile a loaded model whose `compile` is overridden;
    # SparseModel saves its compile arguments (gate optimizer too) and the
    # optimizers' variables load back into the recompiled model.
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = np.arange(16) % 2
    model = _model(5.0, keras.optimizers.Adam(0.01))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.compiled and loaded.boosted_gate_optimizers
    for before, after in zip(
        [model.optimizer, *model.boosted_gate_optimizers],
        [loaded.optimizer, *loaded.boosted_gate_optimizers],
    ):
        assert int(after.iterations.numpy()) == 2
        for a, b in zip(before.variables, after.variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) == 4
