"""Where `sparsify` puts gates, and that it keeps the trained function."""

import keras
import numpy as np
import pytest

import tfsparse
from tfsparse import models
from tfsparse.gates import HardConcreteGate, NPNGate, gates_of
from tfsparse.layers import SparseConv2D, SparseDense
from tfsparse.schedules import K_DETERMINISTIC


def _convnet():
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(6, 3, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(20, activation="relu", name="fc1"),
            keras.layers.Dense(4, name="logits"),
        ]
    )


def _branches(merge="add"):
    inputs = keras.Input((10,), name="features")
    left = keras.layers.Dense(8, activation="relu", name="left")(inputs)
    right = keras.layers.Dense(6, activation="relu", name="right")(inputs)
    if merge == "concat":
        merged = keras.layers.Concatenate(name="concat")([left, right])
        return keras.Model(inputs, keras.layers.Dense(3, name="logits")(merged))
    left = keras.layers.Dense(3, name="left_logits")(left)
    right = keras.layers.Dense(3, name="right_logits")(right)
    return keras.Model(inputs, keras.layers.Add(name="sum")([left, right]))


def _inbound(model, layer_name):
    return model.get_layer(layer_name)._inbound_nodes[0].input_tensors[0]._keras_history[0]


def test_unit_gates_follow_hidden_layers_and_features():
    sparse = tfsparse.sparsify(_convnet(), "hard_concrete", dataset_size=100, lam=0.1)
    names = [g.name for g in gates_of(sparse)]
    assert names == ["conv1_gate", "flatten_gate", "fc1_gate"]
    # After the conv's BN + ReLU chain, not between conv and BN.
    assert _inbound(sparse, "conv1_gate").name == "relu1"
    assert _inbound(sparse, "flatten_gate").name == "flatten"
    groups = {g.name: g.group_size for g in gates_of(sparse)}
    assert groups == {"conv1_gate": 3 * 3 * 1 + 1, "flatten_gate": 20, "fc1_gate": 5 * 5 * 6 + 1}


def test_flat_input_gets_an_input_gate_and_branches_each_a_gate():
    sparse = tfsparse.sparsify(_branches(), "npn", dataset_size=100)
    names = sorted(g.name for g in gates_of(sparse))
    # The logits layers feed a sum: their channels cannot be removed.
    assert names == ["input_0_gate", "left_gate", "right_gate"]
    assert gates_of(sparse)[0].group_size == 8 + 6  # rows in both first layers


def test_features_take_no_gate_where_a_reader_cannot_take_one():
    # The input also enters a Concatenate (not a Dense kernel): a gate on its
    # features would change that branch too, so none is placed; nor with
    # gate_features=False on the plain branches.
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    both = keras.layers.Concatenate()([hidden, inputs])
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(both))
    sparse = tfsparse.sparsify(model, "npn", dataset_size=100)
    assert [g.name for g in gates_of(sparse)] == ["hidden_gate"]
    plain = tfsparse.sparsify(_branches(), "npn", dataset_size=100, gate_features=False)
    assert sorted(g.name for g in gates_of(plain)) == ["left_gate", "right_gate"]


def test_layers_feeding_a_concatenate_are_gated_at_their_offsets():
    sparse = tfsparse.sparsify(_branches("concat"), "npn", dataset_size=100)
    assert sorted(g.name for g in gates_of(sparse)) == ["input_0_gate", "left_gate", "right_gate"]
    # Both gates act on the concatenation, before the layer that reads it.
    calls = [
        (n.operation.name, n.arguments.kwargs.get("offset", 0))
        for n in sparse.get_layer("logits")._inbound_nodes[0].parent_nodes
    ]
    assert calls == [("right_gate", 8)]
    assert sparse.get_layer("left_gate").units == 8


def test_weights_are_copied_and_deterministic_npn_keeps_the_function():
    model = _convnet()
    x = np.random.default_rng(0).normal(size=(5, 12, 12, 1)).astype("float32")
    sparse = tfsparse.sparsify(model, "npn", dataset_size=100, k=K_DETERMINISTIC)
    np.testing.assert_allclose(
        sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )
    assert isinstance(sparse, tfsparse.SparseModel)
    # The original is untouched.
    assert not any(isinstance(layer, NPNGate) for layer in model.layers)


@pytest.mark.parametrize(
    "method, settings",
    [
        ("hard_concrete", dict(level="weight")),
        ("targeted_dropout", dict(level="weight")),
        ("targeted_dropout", dict(level="unit")),
    ],
)
def test_kernel_gate_methods_replace_hidden_layers(method, settings):
    model = _convnet()
    sparse = tfsparse.sparsify(model, method, dataset_size=100, **settings)
    assert isinstance(sparse.get_layer("conv1"), SparseConv2D)
    assert isinstance(sparse.get_layer("fc1"), SparseDense)
    assert isinstance(sparse.get_layer("logits"), keras.layers.Dense)
    np.testing.assert_array_equal(
        sparse.get_layer("fc1").kernel.numpy(), model.get_layer("fc1").kernel.numpy()
    )
    with_classifier = tfsparse.sparsify(
        model, method, dataset_size=100, include_classifier=True, **settings
    )
    assert isinstance(with_classifier.get_layer("logits"), SparseDense)


def test_sparsified_model_round_trips_through_keras_file(tmp_path):
    sparse = tfsparse.sparsify(_convnet(), "hard_concrete", dataset_size=100, seed=0)
    x = np.random.default_rng(1).normal(size=(3, 12, 12, 1)).astype("float32")
    path = tmp_path / "sparse.keras"
    sparse.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, tfsparse.SparseModel)
    assert isinstance(reloaded.get_layer("conv1_gate"), HardConcreteGate)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), sparse.predict(x, verbose=0))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: tfsparse.sparsify(m, "magnitude", dataset_size=10), "method"),
        (lambda m: tfsparse.sparsify(m, "npn"), "dataset_size"),
        (lambda m: tfsparse.sparsify(m, "npn", dataset_size=0), "dataset_size"),
        (lambda m: tfsparse.sparsify(m, "npn", dataset_size=10, lamda=1.0), "lamda"),
        (lambda m: tfsparse.sparsify(m, "npn", dataset_size=10, level="weight"), "level"),
        (lambda m: tfsparse.sparsify(m, "hard_concrete", dataset_size=10, level="layer"), "level"),
    ],
)
def test_bad_arguments_name_the_parameter(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(_convnet())


def test_subclassed_model_is_refused_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        tfsparse.sparsify(net, "npn", dataset_size=10)


def test_group_by_flops_weighs_conv_channels_by_output_positions():
    sparse = tfsparse.sparsify(_convnet(), "npn", dataset_size=100, group_by="flops")
    groups = {g.name: g.group_size for g in gates_of(sparse)}
    assert groups["conv1_gate"] == (3 * 3 * 1 + 1) * 10 * 10
    assert groups["fc1_gate"] == 5 * 5 * 6 + 1
    with pytest.raises(ValueError, match="group_by"):
        tfsparse.sparsify(_convnet(), "npn", dataset_size=100, group_by="latency")


def test_a_gate_called_twice_draws_one_mask_and_one_penalty_per_pass():
    inputs = keras.Input((6,))
    gate = HardConcreteGate(lam=1.0, dataset_size=10, per_example=True, name="shared")
    a = gate(inputs)
    b = gate(keras.layers.Identity()(inputs))
    model = keras.Model(inputs, [a, b])
    x = np.ones((4, 6), "float32")
    first, second = model(x, training=True)
    np.testing.assert_array_equal(first, second)
    assert len(model.losses) == 1
    again, _ = model(x, training=True)
    assert np.any(np.asarray(again) != np.asarray(first))  # a new pass, a new mask


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.resnet20((16, 16, 3), 10),
        lambda: _branches("concat"),
    ],
    ids=["resnet20", "concat"],
)
def test_shared_and_offset_gates_round_trip_through_keras_file(build, tmp_path):
    dense = build()
    sparse = tfsparse.sparsify(dense, "npn", dataset_size=100, seed=0, verbose=0)
    for gate in gates_of(sparse):
        gate.phi.assign(np.random.default_rng(0).uniform(-0.3, 0.5, gate.mask_shape))
    shape = dense.inputs[0].shape[1:]
    x = np.random.default_rng(1).normal(size=(3,) + tuple(shape)).astype("float32")
    path = tmp_path / "sparse.keras"
    sparse.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), sparse.predict(x, verbose=0))
    assert [len(g._inbound_nodes) for g in gates_of(reloaded)] == [
        len(g._inbound_nodes) for g in gates_of(sparse)
    ]


def test_a_list_lam_gives_each_gate_its_own_penalty_weight():
    """The L0 paper's per-layer λ ("L0-sep"): one entry per gate, in the order
    sparsify places them; a list of the wrong length names the gates."""
    lenet5 = models.get("lenet5_caffe")(input_shape=(28, 28, 1), num_classes=10)
    for method in ("hard_concrete", "npn"):
        sparse = tfsparse.sparsify(
            lenet5, method, dataset_size=100, lam=[10.0, 0.5, 0.1, 2.0], verbose=0
        )
        assert [(g.name, g.lam) for g in tfsparse.gates.base.gates_of(sparse)] == [
            ("conv1_gate", 10.0),
            ("conv2_gate", 0.5),
            ("flatten_gate", 0.1),
            ("fc1_gate", 2.0),
        ]
    with pytest.raises(ValueError, match="4 gates were placed: conv1_gate"):
        tfsparse.sparsify(lenet5, "hard_concrete", dataset_size=100, lam=[1.0] * 5, verbose=0)
    with pytest.raises(ValueError, match="`lam` has 3 entries, one per gate"):
        tfsparse.sparsify(lenet5, "hard_concrete", dataset_size=100, lam=[1.0] * 3, verbose=0)


def test_kernel_gates_name_every_layer_they_leave_ungated(capsys):
    dense = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, dilation_rate=2, name="dilated"),
            keras.layers.Conv2D(4, 3, bias_regularizer="l2", name="regularized"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="relu", name="hidden"),
            keras.layers.Dense(3),
        ]
    )
    sparse = tfsparse.sparsify(dense, "targeted_dropout")
    printed = capsys.readouterr().out
    assert "dilated (it is a grouped or dilated Conv2D)" in printed
    assert "regularized (its bias_regularizer would be lost)" in printed
    assert isinstance(sparse.get_layer("hidden"), SparseDense)
    kept = sparse.get_layer("regularized")
    assert type(kept) is keras.layers.Conv2D and kept.bias_regularizer is not None
    # Where no layer can take a kernel gate, the error says why for each.
    only_dilated = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, dilation_rate=2, name="d1")]
        + [keras.layers.Conv2D(2, 3, name="out")]
    )
    with pytest.raises(ValueError, match="'d1': it is a grouped or dilated Conv2D"):
        tfsparse.sparsify(only_dilated, "targeted_dropout", verbose=0)
