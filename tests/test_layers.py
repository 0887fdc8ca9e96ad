"""One parametrized test drives every layer class of tfsparse (larq-style):
build, train a step (also under XLA and mixed precision), serialize, and
check that inference is deterministic."""

import keras
import numpy as np
import pytest

from tfsparse import SparseModel
from tfsparse.gates import (
    BetaBernoulliGate,
    DependentBetaBernoulliGate,
    HardConcreteGate,
    NPNGate,
    TargetedDropoutGate,
    gates_of,
)
from tfsparse.layers import SparseConv2D, SparseDense, TakeFeatures

# name → function(inputs) applying the layer(s) under test to a 4-D tensor.
CASES = {
    "hard_concrete_per_example": lambda x: HardConcreteGate(
        lam=0.1, dataset_size=64, per_example=True, seed=1
    )(keras.layers.Conv2D(4, 3, activation="relu")(x)),
    "hard_concrete_per_batch": lambda x: HardConcreteGate(
        lam=0.1, dataset_size=64, per_example=False, seed=1
    )(keras.layers.Conv2D(4, 3, activation="relu")(x)),
    "npn_arm": lambda x: NPNGate(lam=0.1, dataset_size=64, seed=1)(
        keras.layers.Conv2D(4, 3, activation="relu")(x)
    ),
    "npn_hard_concrete": lambda x: NPNGate(estimator="hard_concrete", dataset_size=64, seed=1)(
        keras.layers.Conv2D(4, 3)(x)
    ),
    "bb": lambda x: BetaBernoulliGate(dataset_size=64, seed=1)(
        keras.layers.Conv2D(4, 3, activation="relu")(x)
    ),
    "dbb": lambda x: DependentBetaBernoulliGate(dataset_size=64, seed=1, freeze_bb=False)(
        keras.layers.Conv2D(4, 3, activation="relu")(x)
    ),
    "sparse_conv_weight_l0": lambda x: SparseConv2D(
        4,
        3,
        activation="relu",
        kernel_gate=HardConcreteGate(structure="weight", dataset_size=64, seed=1),
    )(x),
    "sparse_conv_td_unit": lambda x: SparseConv2D(
        4, 3, kernel_gate=TargetedDropoutGate(structure="unit", seed=1)
    )(x),
    "sparse_dense_td_weight": lambda x: keras.layers.Reshape((1, 1, 4))(
        SparseDense(4, activation="relu", kernel_gate=TargetedDropoutGate(seed=1))(
            keras.layers.Flatten()(x)
        )
    ),
    "sparse_dense_plain": lambda x: keras.layers.Reshape((1, 1, 4))(
        SparseDense(4)(keras.layers.Flatten()(x))
    ),
    "take_features": lambda x: keras.layers.Reshape((1, 1, 3))(
        TakeFeatures([0, 5, 7])(keras.layers.Flatten()(x))
    ),
}


def _model(case):
    inputs = keras.Input((6, 6, 1))
    hidden = CASES[case](inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(hidden))
    return SparseModel(inputs=inputs, outputs=outputs)


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(64, 6, 6, 1)).astype("float32"), np.arange(64) % 3


def _compile(model, jit=False):
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_trains_serializes_and_is_deterministic(case, tmp_path):
    x, y = _data()
    model = _compile(_model(case))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))

    for layer in model.layers:
        if layer.__module__.startswith("tfsparse"):
            clone = layer.__class__.from_config(layer.get_config())
            assert clone.get_config() == layer.get_config()
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), first)


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_trains_under_xla(case):
    x, y = _data()
    model = _compile(_model(case), jit=True)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_mixed_precision_keeps_gates_in_float32(case):
    x, y = _data()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _compile(_model(case))
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        for gate in gates_of(model):
            assert gate.compute_dtype == "float32"
            assert gate.penalty().dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("per_example", [True, False])
def test_hard_concrete_draws_per_example_or_per_batch(per_example):
    """`per_example=False` (the official code's default) shares one mask
    across the batch; the default draws one per example."""
    gate = HardConcreteGate(init_drop_rate=0.5, per_example=per_example, seed=3)
    mask = keras.ops.convert_to_numpy(gate(np.ones((16, 5, 5, 8), "float32"), training=True))
    first = mask[:1]
    assert np.all(mask == mask[:, :1, :1, :])  # one value per example and channel
    assert np.all(mask == first) == (not per_example)
