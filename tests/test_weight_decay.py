"""Weight decay under the gates: ½·wd·Σ P(input kept)·P(output kept)·w²."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfsparse
from tfsparse.gates import gates_of

WD = 0.3


def _mlp(regularizer=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(
        3, activation="relu", kernel_regularizer=regularizer, name="hidden"
    )(inputs)
    logits = keras.layers.Dense(2, kernel_regularizer=regularizer, name="logits")(hidden)
    return keras.Model(inputs, logits)


def _gated(regularizer=None, weight_decay=WD):
    sparse = tfsparse.sparsify(_mlp(regularizer), "hard_concrete", dataset_size=100)
    features, hidden = gates_of(sparse)
    # Distinct open probabilities, so that a row or column charged with the
    # wrong gate shows.
    features.log_alpha.assign([-2.0, -0.5, 0.5, 2.0])
    hidden.log_alpha.assign([-1.0, 0.0, 1.5])
    sparse.decay_weights_under_gates(weight_decay)
    return sparse, features, hidden


def _conv_net(filters, *hidden_units):
    """Conv2D(filters) → Flatten → Dense(hidden_units…, relu) → Dense(2)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(filters, 3, activation="relu", name="conv"),
            keras.layers.Flatten(name="flatten"),
            *(
                keras.layers.Dense(units, activation="relu", name="hidden")
                for units in hidden_units
            ),
            keras.layers.Dense(2, name="logits"),
        ]
    )


def _closed_form(sparse, features, hidden):
    p_in = keras.ops.convert_to_numpy(features.open_probability())
    p_hidden = keras.ops.convert_to_numpy(hidden.open_probability())
    w1 = sparse.get_layer("hidden").kernel.numpy()
    w2 = sparse.get_layer("logits").kernel.numpy()
    # The classifier's outputs have no gate: its columns are always kept.
    charged = np.sum(p_in[:, None] * w1**2 * p_hidden[None, :]) + np.sum(p_hidden[:, None] * w2**2)
    return 0.5 * WD * charged


def test_each_weight_counts_with_the_chance_both_its_channels_are_kept():
    sparse, features, hidden = _gated()
    np.testing.assert_allclose(
        float(sparse.gated_weight_decay()), _closed_form(sparse, features, hidden), rtol=1e-5
    )


def test_a_hardened_gate_counts_its_frozen_mask():
    sparse, features, hidden = _gated()
    for gate in (features, hidden):
        gate.harden()
    kept_in = features.hard_mask.numpy() > 0
    kept_hidden = hidden.hard_mask.numpy() > 0
    w1 = sparse.get_layer("hidden").kernel.numpy()
    w2 = sparse.get_layer("logits").kernel.numpy()
    expected = 0.5 * WD * (np.sum(w1[kept_in][:, kept_hidden] ** 2) + np.sum(w2[kept_hidden] ** 2))
    np.testing.assert_allclose(float(sparse.gated_weight_decay()), expected, rtol=1e-5)


def test_the_term_pulls_on_the_gates_and_the_weights():
    sparse, features, hidden = _gated()
    variables = [features.log_alpha, hidden.log_alpha, sparse.get_layer("hidden").kernel]
    with tf.GradientTape() as tape:
        term = sparse.gated_weight_decay()
    for gradient in tape.gradient(term, variables):
        # Every gate's units and every kernel weight get a pull.
        assert np.all(np.abs(gradient.numpy()) > 0)


def test_it_replaces_the_kernels_l2_and_survives_saving(tmp_path):
    sparse, features, hidden = _gated(keras.regularizers.L2(WD / 2))
    assert all(layer.kernel_regularizer is None for layer in sparse.gated_weight_decay.layers)
    assert not [v for v in sparse.trainable_weights if v.regularizer is not None]
    path = str(tmp_path / "m.keras")
    sparse.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.gated_weight_decay.weight_decay == WD
    assert not [v for v in loaded.trainable_weights if v.regularizer is not None]
    loaded_gates = gates_of(loaded)
    np.testing.assert_allclose(
        float(loaded.gated_weight_decay()), _closed_form(loaded, *loaded_gates), rtol=1e-5
    )


def test_fit_and_evaluate_add_it_to_the_loss():
    sparse, features, hidden = _gated()
    # Hardened gates: deterministic masks and no L0 penalty, so the logged
    # loss is the data loss plus the term; SGD at rate 0 leaves the weights.
    for gate in (features, hidden):
        gate.harden()
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(8, 4)
    y = np.zeros((8, 2), "float32")

    def logged_loss():
        sparse.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        return sparse.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False).history["loss"][
            0
        ]

    with_term = logged_loss()
    evaluated = sparse.evaluate(x, y, batch_size=8, verbose=0)
    term = float(sparse.gated_weight_decay())
    sparse.gated_weight_decay = None
    np.testing.assert_allclose(with_term - logged_loss(), term, rtol=1e-4)
    # evaluate counts it as it counted the kernels' L2.
    np.testing.assert_allclose(
        evaluated - sparse.evaluate(x, y, batch_size=8, verbose=0), term, rtol=1e-4
    )


def test_bad_weight_decay_is_refused():
    sparse = tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=100)
    for bad in (-1.0, 0.0):
        with pytest.raises(ValueError, match="weight_decay"):
            sparse.decay_weights_under_gates(bad)


@pytest.mark.parametrize(
    "regularizer", [keras.regularizers.L1(0.01), keras.regularizers.L2(WD)], ids=["l1", "l2_other"]
)
def test_a_regularizer_it_cannot_stand_in_for_is_an_error(regularizer):
    sparse = tfsparse.sparsify(_mlp(regularizer), "hard_concrete", dataset_size=100)
    with pytest.raises(ValueError, match="kernel_regularizer"):
        sparse.decay_weights_under_gates(WD)
    # Nothing was taken off on the way.
    assert sparse.get_layer("hidden").kernel_regularizer is not None


def test_gates_on_single_weights_are_refused():
    sparse = tfsparse.sparsify(_mlp(), "hard_concrete", dataset_size=100, level="weight")
    with pytest.raises(ValueError, match="unit gates"):
        sparse.decay_weights_under_gates(WD)


def test_a_convolution_counts_every_tap_and_a_flattened_channel_both_its_gates():
    dense = _conv_net(3)
    sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=100)
    channels, features = gates_of(sparse)
    channels.log_alpha.assign([-1.0, 0.5, 2.0])
    features.log_alpha.assign(np.linspace(-2.0, 2.0, 48, dtype="float32"))
    sparse.decay_weights_under_gates(WD)
    p_channel = keras.ops.convert_to_numpy(channels.open_probability())
    p_feature = keras.ops.convert_to_numpy(features.open_probability())
    conv = sparse.get_layer("conv").kernel.numpy()  # [3, 3, 2, 3]
    logits = sparse.get_layer("logits").kernel.numpy()  # [48, 2]
    # Flat feature f of the 4x4x3 output carries channel f mod 3.
    p_rows = p_feature * p_channel[np.arange(48) % 3]
    expected = 0.5 * WD * (np.sum(conv**2 * p_channel) + np.sum(p_rows[:, None] * logits**2))
    np.testing.assert_allclose(float(sparse.gated_weight_decay()), expected, rtol=1e-5)


def test_it_covers_an_application_it_was_not_written_for():
    # MobileNetV2 inside a model with a new head: every Conv2D and the head's
    # Dense are covered, the depthwise convolutions are not; with every gate
    # open the term is the plain L2 of the covered kernels.
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False
    )
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(pooled))
    sparse = tfsparse.sparsify(model, "hard_concrete", dataset_size=1000)
    for gate in gates_of(sparse):
        gate.log_alpha.assign(np.full(gate.log_alpha.shape, 50.0, "float32"))  # clipped: open
    sparse.decay_weights_under_gates(WD)
    covered = sparse.gated_weight_decay.layers
    kinds = sorted({type(layer).__name__ for layer in covered})
    assert kinds == ["Conv2D", "Dense"]
    conv2d = [layer for layer in sparse.layers if type(layer).__name__ == "Conv2D"]
    assert len(covered) == len(conv2d) + 1
    plain = sum(0.5 * WD * float(np.sum(layer.kernel.numpy() ** 2)) for layer in covered)
    np.testing.assert_allclose(float(sparse.gated_weight_decay()), plain, rtol=1e-5)

    # Hardened at random and compacted (the application inlined), the plain
    # L2 left on the compact kernels is the term.
    _check_compact_decay(sparse, model)


def _check_compact_decay(sparse, dense):
    """Closes about a third of every gate's units at random, hardens, compacts
    and checks that the compact model's L2 losses are the term: after
    hardening the term charges exactly the weights compaction keeps, so a
    row or column kept or dropped wrongly, or a kernel left without its L2,
    shows. Returns the compact model."""
    rng = np.random.default_rng(0)
    for gate in gates_of(sparse):
        closed = rng.random(gate.log_alpha.shape) < 0.3
        gate.log_alpha.assign(np.where(closed, -8.0, 8.0).astype("float32"))
        gate.harden()
    small = tfsparse.compact(sparse)
    assert small.count_params() < dense.count_params()
    charged = sum(float(keras.ops.convert_to_numpy(loss)) for loss in small.losses)
    np.testing.assert_allclose(charged, float(sparse.gated_weight_decay()), rtol=1e-5)
    return small


def test_compaction_keeps_the_decay_as_the_plain_l2_of_what_is_left():
    dense = _conv_net(4, 5)
    sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=100)
    sparse.decay_weights_under_gates(WD)
    small = _check_compact_decay(sparse, dense)
    kernels = [layer for layer in small.layers if hasattr(layer, "kernel")]
    assert {type(layer.kernel_regularizer) for layer in kernels} == {keras.regularizers.L2}
    # The sparse model keeps its term alone: no L2 came back on its kernels.
    assert all(layer.kernel_regularizer is None for layer in sparse.gated_weight_decay.layers)
