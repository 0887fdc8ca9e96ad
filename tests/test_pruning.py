"""Post-hoc magnitude pruning (`tfsparse.pruning`)."""

import math

import keras
import numpy as np
import pytest

from tfsparse.gates.targeted_dropout import TargetedDropoutGate
from tfsparse.layers import SparseConv2D, SparseDense
from tfsparse.pruning import magnitude_sparsity, prunable_layers, prune_by_magnitude


def _plain_model():
    """Conv (27 rows, 6 filters) → Dense (216 rows, 20 units) → classifier."""
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(20, activation="relu", name="fc")(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(h))


def _td_model(structure="weight"):
    inputs = keras.Input((8, 8, 3))
    h = SparseConv2D(
        6,
        3,
        activation="relu",
        name="conv",
        kernel_gate=TargetedDropoutGate(0.5, 0.5, structure=structure, seed=1),
    )(inputs)
    h = keras.layers.Flatten()(h)
    h = SparseDense(
        20,
        activation="relu",
        name="fc",
        kernel_gate=TargetedDropoutGate(0.5, 0.5, structure=structure, seed=2),
    )(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(h))


def _matrix(layer):
    kernel = np.asarray(layer.kernel)
    return kernel.reshape(-1, kernel.shape[-1])


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 5, n)


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("builder", [_plain_model, _td_model])
def test_weight_pruning_zeroes_the_smallest_fraction_of_each_column(builder, rate):
    model = builder()
    before = {name: _matrix(model.get_layer(name)) for name in ("conv", "fc", "logits")}
    assert prune_by_magnitude(model, rate) is model
    for name in ("conv", "fc"):
        old, new = before[name], _matrix(model.get_layer(name))
        rows = old.shape[0]
        count = math.floor(rate * rows + 1e-9)
        smallest = np.argsort(np.argsort(np.abs(old), axis=0), axis=0) < count
        np.testing.assert_array_equal(new == 0, smallest)
        np.testing.assert_array_equal(new[~smallest], old[~smallest])
        assert magnitude_sparsity(model)[name] == pytest.approx(count / rows)
    np.testing.assert_array_equal(_matrix(model.get_layer("logits")), before["logits"])


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.9])
def test_unit_pruning_zeroes_whole_columns_and_their_biases(rate):
    model = _plain_model()
    for name in ("conv", "fc"):
        model.get_layer(name).bias.assign(np.ones(model.get_layer(name).bias.shape))
    before = {name: _matrix(model.get_layer(name)) for name in ("conv", "fc")}
    prune_by_magnitude(model, rate, level="unit")
    for name in ("conv", "fc"):
        layer, old = model.get_layer(name), before[name]
        units = old.shape[1]
        ranks = np.argsort(np.argsort(np.linalg.norm(old, axis=0)))
        weakest = ranks < math.floor(rate * units)
        new = _matrix(layer)
        assert (new[:, weakest] == 0).all() and (new[:, ~weakest] == old[:, ~weakest]).all()
        np.testing.assert_array_equal(np.asarray(layer.bias) == 0, weakest)


def test_classifier_is_untouched_unless_included():
    model = _plain_model()
    assert [layer.name for layer in prunable_layers(model)] == ["conv", "fc"]
    logits = _matrix(model.get_layer("logits")).copy()
    prune_by_magnitude(model, 0.5)
    np.testing.assert_array_equal(_matrix(model.get_layer("logits")), logits)
    prune_by_magnitude(model, 0.5, include_classifier=True)
    assert (_matrix(model.get_layer("logits")) == 0).sum() == 10 * 5


def test_sequential_mlp_and_magnitude_sparsity():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.layers.Dense(8, name="a"),
            keras.layers.Dense(4, name="b"),
            keras.layers.Dense(2, name="c"),
        ]
    )
    prune_by_magnitude(model, 0.5)
    assert magnitude_sparsity(model) == {"a": 0.5, "b": 0.5, "c": 0.0}


def test_pruning_again_is_cumulative():
    model, reference = _plain_model(), _plain_model()
    reference.set_weights(model.get_weights())
    prune_by_magnitude(model, 0.5)
    prune_by_magnitude(model, 0.75)
    prune_by_magnitude(reference, 0.75)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_saved_before_pruning_restore_the_model():
    model = _td_model()
    x, _ = _data()
    saved, out = model.get_weights(), model.predict(x, verbose=0)
    prune_by_magnitude(model, 0.9)
    assert not np.allclose(model.predict(x, verbose=0), out)
    model.set_weights(saved)
    np.testing.assert_array_equal(model.predict(x, verbose=0), out)


@pytest.mark.parametrize("level", ["weight", "unit"])
def test_targeted_dropout_keep_mask_keeps_pruned_weights_at_zero(level):
    model = _td_model(structure=level)
    prune_by_magnitude(model, 0.5, level=level)
    for name in ("conv", "fc"):
        gate = model.get_layer(name).kernel_gate
        keep = np.asarray(gate.keep)
        expected = (_matrix(model.get_layer(name)) != 0).reshape(
            model.get_layer(name).kernel.shape
        )
        if level == "unit":
            expected = expected.any(axis=tuple(range(expected.ndim - 1)))
        np.testing.assert_array_equal(keep == 1, expected)
    pruned = magnitude_sparsity(model)
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    # The effective kernels (kernel × keep) keep at least their pruned zeros.
    after = magnitude_sparsity(model)
    for name in ("conv", "fc"):
        assert after[name] >= pruned[name] - 1e-9


def test_unit_gate_counts_pruned_units_as_inactive():
    model = _td_model(structure="unit")
    prune_by_magnitude(model, 0.5, level="unit")
    assert int(model.get_layer("fc").kernel_gate.active().numpy().sum()) == 10
    assert int(model.get_layer("conv").kernel_gate.active().numpy().sum()) == 3


def test_hardened_gate_mask_is_pruned_too():
    model = _td_model()
    gate = model.get_layer("fc").kernel_gate
    gate.harden()
    prune_by_magnitude(model, 0.5)
    np.testing.assert_array_equal(np.asarray(gate.hard_mask), np.asarray(gate.keep))
    assert np.asarray(gate.keep).mean() == 0.5


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"rate": -0.1}, ValueError, "rate"),
        ({"rate": 1.5}, ValueError, "rate"),
        ({"rate": float("nan")}, ValueError, "rate"),
        ({"rate": "half"}, TypeError, "rate"),
        ({"rate": 0.5, "level": "channel"}, ValueError, "level"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        prune_by_magnitude(_plain_model(), **kwargs)


def test_unbuilt_layer_is_refused():
    model = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        prune_by_magnitude(model, 0.5, include_classifier=True)
