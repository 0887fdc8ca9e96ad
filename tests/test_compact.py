"""`tfsparse.compact`: the compacted model computes what the gated one does."""

import keras
import numpy as np
import pytest
from keras import ops
from sklearn.datasets import load_digits

from tfsparse.compact import compact
from tfsparse.gates import (
    DependentBetaBernoulliGate,
    Gate,
    HardConcreteGate,
    NPNGate,
    beta_bernoulli,
)
from tfsparse.gates.targeted_dropout import TargetedDropoutGate
from tfsparse.layers import SparseConv2D, SparseDense, TakeFeatures

TOLERANCE = 1e-5


# ----------------------------------------------------------- gate families
def _hard_concrete(name):
    return HardConcreteGate(name=name)


def _npn(name):
    return NPNGate(name=name)


def _set_hard_concrete(gate, closed, rng):
    n = gate.mask_shape[0]
    # Mix of closed (mask 0), fully open (mask 1) and partly open gates.
    values = rng.choice([-4.6, 4.6, 0.3, 1.0], size=n, p=[0, 0.4, 0.3, 0.3])
    values[closed] = -4.6
    gate.log_alpha.assign(values.reshape(gate.mask_shape))


def _set_npn(gate, closed, rng):
    # π = σ(7·φ): φ < 0 closes the unit; open units keep a multiplier π < 1.
    values = rng.uniform(0.05, 0.6, size=gate.mask_shape[0])
    values[closed] = -rng.uniform(0.05, 0.6, size=int(np.sum(closed)))
    gate.phi.assign(values)


GATES = {"hard_concrete": (_hard_concrete, _set_hard_concrete), "npn": (_npn, _set_npn)}


def _set_bb(gate, closed, rng):
    # E[π] = a/(a+1) for b = 1: 0.24..0.68 for a_raw in (−1, 2), below the
    # 1e-3 threshold for a_raw = −30 (a = softplus(−10) ≈ 4.5e-5).
    n = gate.mask_shape[0]
    a_raw = rng.uniform(-1.0, 2.0, size=n)
    a_raw[closed] = -30.0
    gate.a_raw.assign(a_raw)
    if gate.input_dependent:  # DBB: per-example part from moving statistics
        gate.moving_mean.assign(rng.uniform(0.0, 0.1, n))
        gate.gamma.assign(rng.uniform(0.5, 2.0, n))
        gate.beta.assign(rng.uniform(0.2, 0.8, n))


if beta_bernoulli is not None:
    GATES["bb"] = (lambda name: beta_bernoulli.BetaBernoulliGate(name=name), _set_bb)


def _open_some(model, set_gate, seed=0):
    """Closes about a third of the units of every unit gate (never all)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, Gate) and layer.structure == "unit":
            n = layer.mask_shape[0]
            closed = rng.random(n) < 0.35
            closed[rng.integers(n)] = False
            set_gate(layer, closed, rng)


def _digits(n=64, flat=False):
    digits = load_digits()
    x = (digits.images[:n] / 16.0).astype("float32")[..., None]
    return x.reshape(n, -1) if flat else x


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, c),
                    rng.normal(0, 0.5, c),
                    rng.normal(0, 0.5, c),
                    rng.uniform(0.5, 2, c),
                ]
            )


def _assert_same_function(model, small, x):
    expected = ops.convert_to_numpy(model(x, training=False))
    got = ops.convert_to_numpy(small(x, training=False))
    assert expected.std() > 0  # a non-trivial function
    assert np.max(np.abs(expected - got)) <= TOLERANCE


def _assert_plain(small):
    for layer in small._flatten_layers(include_self=False, recursive=True):
        module = type(layer).__module__
        assert not module.startswith("tfsparse") or isinstance(layer, TakeFeatures), layer


# ------------------------------------------------------------------ models
def _mlp(gate):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = gate("flatten_gate")(x)
    x = keras.layers.Dense(24, activation="relu", name="fc1")(x)
    x = gate("fc1_gate")(x)
    x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    x = gate("fc2_gate")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _convnet(gate):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = gate("conv1_gate")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = gate("conv2_gate")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = gate("flatten_gate")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    x = gate("fc1_gate")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


@pytest.mark.parametrize("family", sorted(GATES))
@pytest.mark.parametrize("build", [_mlp, _convnet], ids=["mlp", "convnet"])
def test_unit_gates_compact_to_the_same_function(family, build):
    factory, set_gate = GATES[family]
    model = build(factory)
    _randomize_bn(model, np.random.default_rng(1))
    _open_some(model, set_gate)
    small = compact(model)
    _assert_same_function(model, small, _digits())
    _assert_plain(small)
    assert small.count_params() < model.count_params()
    # Each gate's closed units are gone from its producer.
    fc1 = model.get_layer("fc1_gate")
    assert small.get_layer("fc1").units == int(np.sum(ops.convert_to_numpy(fc1.active())))


def test_convnet_removes_channels_and_flattened_positions():
    model = _convnet(_hard_concrete)
    _open_some(model, _set_hard_concrete, seed=3)
    small = compact(model)
    kept = {
        name: int(np.sum(ops.convert_to_numpy(model.get_layer(name).active())))
        for name in ("conv1_gate", "conv2_gate", "flatten_gate")
    }
    assert small.get_layer("conv1").filters == kept["conv1_gate"]
    assert small.get_layer("bn1").gamma.shape == (kept["conv1_gate"],)
    # conv2 keeps the channels that are open and have a kept flattened position.
    flat_gate = ops.convert_to_numpy(model.get_layer("flatten_gate").active())
    conv2_open = ops.convert_to_numpy(model.get_layer("conv2_gate").active())
    used = flat_gate.reshape(-1, 6).any(axis=0) & conv2_open
    assert small.get_layer("conv2").filters == int(used.sum())
    take = [layer for layer in small.layers if isinstance(layer, TakeFeatures)]
    assert len(take) == 1
    assert len(take[0].indices) == int((flat_gate.reshape(-1, 6) & used).sum())


def test_sequential_reference_network_compacts():
    from tfsparse.models import lenet5_caffe

    model = lenet5_caffe(
        input_shape=(16, 16, 1), gate_factory=lambda name: HardConcreteGate(name=f"{name}_gate")
    )
    _open_some(model, _set_hard_concrete)
    x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 1)).astype("float32")
    small = compact(model)
    _assert_same_function(model, small, x)
    assert small.get_layer("conv2").filters < 50


# --------------------------------------------------------------- kernel gates
def _kernel_gated(gate):
    inputs = keras.Input((8, 8, 1))
    x = SparseConv2D(6, 3, activation="relu", kernel_gate=gate(), name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = SparseDense(16, activation="relu", kernel_gate=gate(), name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_weight_gates_become_exact_zeros():
    model = _kernel_gated(lambda: HardConcreteGate(structure="weight"))
    rng = np.random.default_rng(0)
    for name in ("conv1", "fc1"):
        gate = model.get_layer(name).kernel_gate
        gate.log_alpha.assign(rng.choice([-4.6, 0.5, 4.6], size=gate.mask_shape))
    small = compact(model)
    _assert_same_function(model, small, _digits())
    _assert_plain(small)
    assert isinstance(small.get_layer("fc1"), keras.layers.Dense)
    same_shape = 0
    for name in ("conv1", "fc1"):
        gate = model.get_layer(name).kernel_gate
        closed = ops.convert_to_numpy(gate.mask()) == 0
        kernel = small.get_layer(name).kernel.numpy()
        if kernel.shape == closed.shape:  # no whole row or column was removed
            assert np.all(kernel[closed] == 0)
            same_shape += 1
        assert np.mean(kernel == 0) >= np.mean(closed) - 1e-9
    assert same_shape > 0  # the weight-by-weight check ran


@pytest.mark.parametrize("gate", ["hard_concrete", "targeted_dropout"])
def test_unit_kernel_gates_remove_zero_columns(gate):
    def make():
        if gate == "hard_concrete":
            return HardConcreteGate(structure="unit")
        return TargetedDropoutGate(structure="unit")

    model = _kernel_gated(make)
    closed = {"conv1": [0, 3], "fc1": [1, 2, 5, 9]}
    for name, units in closed.items():
        kernel_gate = model.get_layer(name).kernel_gate
        n = kernel_gate.mask_shape[0]
        if gate == "hard_concrete":
            values = np.full(n, 0.4)  # mask ≈ 0.6: folded into the kernel
            values[units] = -4.6
            kernel_gate.log_alpha.assign(values)
        else:
            keep = np.ones(n)
            keep[units] = 0
            kernel_gate.keep.assign(keep)
    # A closed column's bias goes with it (the layer gates its bias too).
    fc1 = model.get_layer("fc1")
    bias = np.zeros(16)
    bias[9] = 0.5
    bias[10] = -0.2
    fc1.bias.assign(bias)
    small = compact(model)
    _assert_same_function(model, small, _digits())
    assert small.get_layer("conv1").filters == 6 - 2
    assert small.get_layer("fc1").units == 16 - 4


def test_zero_columns_of_plain_layers_are_removed_unless_bn_follows():
    inputs = keras.Input((64,))
    a = keras.layers.Dense(12, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(10, name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.ReLU(name="b_relu")(b))
    model = keras.Model(inputs, outputs)
    _randomize_bn(model, np.random.default_rng(2))
    for name, cols in (("a", [0, 4]), ("b", [1])):
        layer = model.get_layer(name)
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        kernel[:, cols] = 0
        bias[cols] = 0
        layer.set_weights([kernel, bias])
    small = compact(model)
    _assert_same_function(model, small, _digits(flat=True))
    assert small.get_layer("a").units == 10
    assert small.get_layer("b").units == 10  # BN(0) ≠ 0: the unit stays


# --------------------------------------------------------------- branches
def _two_branches(merge):
    inputs = keras.Input((64,), name="features")
    left = keras.layers.Dense(10, activation="relu", name="left")(inputs)
    left = HardConcreteGate(name="left_gate")(left)
    right = keras.layers.Dense(8, activation="relu", name="right")(inputs)
    right = HardConcreteGate(name="right_gate")(right)
    if merge == "concat":
        merged = keras.layers.Concatenate(name="concat")([left, right])
        outputs = keras.layers.Dense(3, name="logits")(merged)
    else:
        left = keras.layers.Dense(3, name="left_head")(left)
        right = keras.layers.Dense(3, name="right_head")(right)
        outputs = keras.layers.Add(name="add")([left, right])
    return keras.Model(inputs, outputs)


def test_branches_with_their_own_consumers_compact():
    model = _two_branches("heads")
    _open_some(model, _set_hard_concrete)
    small = compact(model)
    _assert_same_function(model, small, _digits(flat=True))
    assert small.get_layer("left").units < 10 or small.get_layer("right").units < 8


def test_gated_channels_reaching_a_concatenate_keep_their_offsets():
    model = _two_branches("concat")
    _open_some(model, _set_hard_concrete)
    small = compact(model)
    _assert_same_function(model, small, _digits(flat=True))
    kept = [
        int(np.sum(ops.convert_to_numpy(model.get_layer(g).active())))
        for g in ("left_gate", "right_gate")
    ]
    assert [small.get_layer("left").units, small.get_layer("right").units] == kept
    assert small.get_layer("logits").kernel.shape[0] == sum(kept) < 18


def test_gated_channels_reaching_a_model_output_are_refused():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(5, name="logits")(inputs)
    model = keras.Model(inputs, HardConcreteGate(name="out_gate")(x))
    _open_some(model, _set_hard_concrete)
    with pytest.raises(ValueError, match="out_gate.*model output"):
        compact(model)


def test_a_multiplier_through_tanh_is_refused_but_binary_masks_pass():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(10, name="fc1")(inputs)
    x = HardConcreteGate(name="gate")(x)
    x = keras.layers.Activation("tanh", name="squash")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    gate = model.get_layer("gate")
    gate.log_alpha.assign(np.array([-4.6, 4.6, 0.3] * 3 + [4.6]))
    with pytest.raises(ValueError, match="squash"):
        compact(model)
    gate.log_alpha.assign(np.array([-4.6, 4.6, 4.6] * 3 + [4.6]))  # masks 0 or 1
    small = compact(model)
    _assert_same_function(model, small, _digits(flat=True))
    assert small.get_layer("fc1").units == 7


def test_grouped_convolution_consumer_keeps_equal_groups():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = HardConcreteGate(name="gate")(x)
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    # Group 1 (channels 0-2) keeps one channel, group 2 (3-5) keeps two: the
    # compact layer needs two per group, so one closed channel stays (× 0).
    model.get_layer("gate").log_alpha.assign(np.array([-4.6, 4.6, -4.6, 0.3, 4.6, -4.6]))
    small = compact(model)
    _assert_same_function(model, small, _digits())
    assert small.get_layer("grouped").groups == 2
    assert small.get_layer("conv1").filters == 4
    assert small.get_layer("grouped").kernel.shape[-2] == 2


def test_batch_normalization_between_gate_and_consumer_is_folded():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = HardConcreteGate(name="gate")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    _randomize_bn(model, np.random.default_rng(4))
    model.get_layer("gate").log_alpha.assign(np.array([-4.6, 0.3, 4.6, 1.0, -4.6, 0.5]))
    small = compact(model)
    _assert_same_function(model, small, _digits())


def test_compacting_twice_and_the_original_is_untouched():
    model = _mlp(_hard_concrete)
    _open_some(model, _set_hard_concrete)
    before = [w.copy() for w in model.get_weights()]
    small = compact(model)
    again = compact(small)
    _assert_same_function(model, again, _digits())
    assert again.count_params() == small.count_params()
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_all_units_closed_keeps_a_zero_unit():
    model = _mlp(_hard_concrete)
    _open_some(model, _set_hard_concrete)
    gate = model.get_layer("fc2_gate")
    gate.log_alpha.assign(np.full(gate.mask_shape, -4.6))
    small = compact(model)
    x = _digits()
    np.testing.assert_allclose(small(x), model(x), atol=TOLERANCE)
    assert small.get_layer("fc2").units == 1


# ----------------------------------------------------- input-dependent gates
class _PerExample(keras.layers.Layer):
    """Test stand-in for DBB's compacted layer: x · 1[mean over space > t]."""

    def __init__(self, thresholds, **kwargs):
        super().__init__(**kwargs)
        self.thresholds = np.asarray(thresholds, "float32")

    def call(self, x):
        return x * _on(x, self.thresholds)


def _on(x, thresholds):
    axes = tuple(range(1, len(x.shape) - 1))
    mean = ops.mean(x, axis=axes, keepdims=True) if axes else x
    return ops.cast(mean > thresholds, x.dtype)


class _ToyDependentGate(HardConcreteGate):
    """Static hard-concrete mask × a per-example on/off from the input."""

    input_dependent = True

    def build_gate(self, mask_shape):
        super().build_gate(mask_shape)
        self.thresholds = np.linspace(-0.2, 0.4, mask_shape[0]).astype("float32")

    def inference_mask(self, inputs):
        return self.mask() * _on(inputs, self.thresholds)

    def compacted_layer(self, kept):
        return _PerExample(self.thresholds[kept], name=f"{self.name}_per_example")


def test_input_dependent_gate_keeps_its_per_example_layer():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = _ToyDependentGate(name="dep_gate")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    model.get_layer("dep_gate").log_alpha.assign(
        np.array([-4.6, 0.3, 4.6, 1.0, -4.6, 0.5, 4.6, 2.0])
    )
    small = compact(model)
    _assert_same_function(model, small, _digits())
    assert small.get_layer("conv1").filters == 6
    assert isinstance(small.get_layer("dep_gate_per_example"), _PerExample)


class _WrongPerExample(_ToyDependentGate):
    """Its compacted layer also applies the static multiplier (not the contract)."""

    def compacted_layer(self, kept):
        static = ops.convert_to_numpy(self.mask())[kept]
        layer = _PerExample(self.thresholds[kept], name=f"{self.name}_per_example")
        return keras.layers.Lambda(lambda x: layer(x) * static)


def test_a_per_example_layer_that_breaks_the_contract_is_refused():
    inputs = keras.Input((6,))
    gated = _WrongPerExample(name="dep_gate")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(gated))
    model.get_layer("dep_gate").log_alpha.assign(np.array([-4.6, 0.3, 4.6, 1.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match="dep_gate.*compacted_layer"):
        compact(model)


def test_dbb_gates_compact_with_their_per_example_layer():
    def factory(name):
        return DependentBetaBernoulliGate(name=name)

    model = _convnet(factory)
    _randomize_bn(model, np.random.default_rng(1))
    _open_some(model, _set_bb)
    small = compact(model)
    _assert_same_function(model, small, _digits())
    _assert_plain_except_per_example(small)


def _assert_plain_except_per_example(small):
    for layer in small._flatten_layers(include_self=False, recursive=True):
        assert not isinstance(layer, (Gate, SparseDense, SparseConv2D)), layer
