"""`tfsparse.summary`: hand-counted units, weights and FLOPs."""

import keras
import numpy as np
import pytest
from keras import ops

from tfsparse.compact import compact
from tfsparse.gates import HardConcreteGate
from tfsparse.layers import SparseDense
from tfsparse.models import lenet_300_100
from tfsparse.summary import summary

OPEN, CLOSED = 4.6, -4.6  # hard-concrete log α giving masks 1 and 0


def _gated_lenet(kept=(266, 88, 33)):
    gates = {}

    def factory(name):
        gates[name] = HardConcreteGate(name=f"{name}_gate")
        return gates[name]

    model = lenet_300_100(gate_factory=factory)
    for name, k in zip(("input", "fc1", "fc2"), kept):
        values = np.full(gates[name].mask_shape, CLOSED)
        values[:k] = OPEN
        gates[name].log_alpha.assign(values)
    return model


def _by_name(result):
    return {row["name"]: row for row in result["layers"]}


def test_lenet_300_100_counts_by_hand():
    lines = []
    result = summary(_gated_lenet(), print_fn=lines.append)
    assert result["units_total"] == [784, 300, 100]
    assert result["units_kept"] == [266, 88, 33]
    rows = _by_name(result)
    assert (rows["fc1"]["units_kept"], rows["fc1"]["units_total"]) == (88, 300)
    assert rows["fc1"]["weights_total"] == 784 * 300 + 300
    assert rows["fc1"]["weights_kept"] == 266 * 88 + 88
    assert rows["fc1"]["flops_kept"] == 266 * 88
    assert rows["fc2"]["weights_kept"] == 88 * 33 + 33
    assert rows["logits"]["weights_kept"] == 33 * 10 + 10
    assert rows["logits"]["flops_total"] == 100 * 10
    total = result["total"]
    assert total["weights_total"] == 266_610
    assert total["weights_kept"] == 266 * 88 + 88 + 88 * 33 + 33 + 33 * 10 + 10
    assert total["flops_kept"] == 266 * 88 + 88 * 33 + 33 * 10
    assert result["gate_params"] > 0
    assert any("784-300-100 → 266-88-33" in line for line in lines)
    assert any(line.startswith("fc1 (Dense)") for line in lines)


def test_compacted_model_has_the_same_kept_figures():
    model = _gated_lenet()
    before = summary(model, print_fn=None)
    after = summary(compact(model), print_fn=None)
    for key in ("weights_kept", "flops_kept"):
        assert after["total"][key] == before["total"][key]
    assert after["total"]["weights_total"] == after["total"]["weights_kept"]
    take = [row for row in after["layers"] if row["type"] == "TakeFeatures"]
    assert (take[0]["units_kept"], take[0]["units_total"]) == (266, 784)


def test_exact_zero_weights_and_weight_gates_are_not_counted():
    model = _gated_lenet()
    logits = model.get_layer("logits")
    kernel = logits.kernel.numpy()
    kernel[:5, :] = 0  # five of the 33 kept rows
    kernel[50:, :] = 0  # rows of closed units: already gone
    logits.kernel.assign(kernel)
    rows = _by_name(summary(model, print_fn=None))
    assert rows["logits"]["weights_kept"] == 28 * 10 + 10
    # fc2's units 0..4 now feed nothing: their columns go too.
    assert rows["fc2"]["units_kept"] == 28

    inputs = keras.Input((20,))
    gate = HardConcreteGate(structure="weight", name="w_gate")
    hidden = SparseDense(8, kernel_gate=gate, name="sparse")(inputs)
    weight_model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    mask = np.random.default_rng(0).choice([CLOSED, OPEN], size=(20, 8))
    gate.log_alpha.assign(mask)
    rows = _by_name(summary(weight_model, print_fn=None))
    open_weights = int(np.sum(mask == OPEN))
    assert rows["sparse"]["weights_kept"] == open_weights + 8
    assert rows["sparse"]["flops_kept"] == open_weights


def test_flops_of_conv_pooling_batchnorm_and_depthwise_by_hand():
    model = keras.Sequential([
        keras.Input((9, 9, 2)),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv"),  # → 5x5x4
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.MaxPooling2D(2, name="pool"),  # → 2x2x4
        keras.layers.DepthwiseConv2D(2, name="depthwise"),  # → 1x1x4
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, name="logits"),
    ])
    rows = _by_name(summary(model, print_fn=None))
    assert rows["conv"]["flops_total"] == 3 * 3 * 2 * 4 * 5 * 5
    assert rows["conv"]["weights_total"] == 3 * 3 * 2 * 4 + 4
    assert rows["bn"]["flops_total"] == 5 * 5 * 4
    assert rows["bn"]["weights_total"] == 4 * 4
    assert rows["pool"]["flops_total"] == 2 * 2 * (2 * 2 * 4)
    assert rows["depthwise"]["flops_total"] == 2 * 2 * 4
    assert rows["depthwise"]["weights_total"] == 2 * 2 * 4 + 4
    assert rows["gap"]["flops_total"] == 4
    assert rows["logits"]["flops_total"] == 12


def test_a_closed_channel_leaves_producer_bn_pooling_and_consumer():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)  # → 4x4x4
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = HardConcreteGate(name="gate")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)  # → 2x2x4
    x = keras.layers.Conv2D(5, 1, name="conv2")(x)
    model = keras.Model(inputs, keras.layers.Flatten()(x))
    model.get_layer("gate").log_alpha.assign(np.array([OPEN, CLOSED, OPEN, OPEN]))
    result = summary(model, print_fn=None)
    rows = _by_name(result)
    assert rows["conv1"]["weights_kept"] == 3 * 3 * 3 + 3
    assert rows["conv1"]["flops_kept"] == 3 * 3 * 3 * 16
    assert rows["bn"]["weights_kept"] == 3 * 4
    assert rows["pool"]["flops_kept"] == 4 * 4 * 3
    assert rows["conv2"]["weights_kept"] == 3 * 5 + 5
    assert rows["conv2"]["flops_kept"] == 3 * 5 * 4
    after = summary(compact(model), print_fn=None)
    assert after["total"]["flops_kept"] == result["total"]["flops_kept"]
    assert after["total"]["weights_kept"] == result["total"]["weights_kept"]


class _ToyDependentGate(HardConcreteGate):
    """Static mask × 1[x > threshold] per example (stands in for DBB)."""

    input_dependent = True

    def inference_mask(self, inputs):
        thresholds = np.linspace(-0.2, 0.4, self.mask_shape[0]).astype("float32")
        return self.mask() * ops.cast(inputs > thresholds, inputs.dtype)


def test_input_dependent_gates_report_active_units_per_example():
    inputs = keras.Input((4,))
    gated = _ToyDependentGate(name="dep")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(gated))
    model.get_layer("dep").log_alpha.assign(np.array([OPEN, OPEN, OPEN, CLOSED]))
    x = np.array([[1.0] * 4, [0.1] * 4, [-1.0] * 4], "float32")
    lines = []
    result = summary(model, x=x, print_fn=lines.append)
    (gate,) = result["gates"]
    assert gate["input_dependent"] and gate["units_kept"] == 3
    # Thresholds -0.2, 0, 0.2, 0.4 (unit 3 closed): 3, 2 and 0 units on.
    assert gate["avg_active_units"] == pytest.approx(5 / 3)
    assert any("per example" in line for line in lines)


def test_input_shape_builds_a_sequential_and_is_checked():
    model = keras.Sequential([keras.layers.Dense(4, name="a"), keras.layers.Dense(2)])
    result = summary(model, input_shape=(3,), print_fn=None)
    assert _by_name(result)["a"]["weights_total"] == 3 * 4 + 4
    with pytest.raises(ValueError, match="input_shape"):
        summary(model, input_shape=(5,), print_fn=None)


def test_dbb_active_units_agree_with_the_gate():
    beta_bernoulli = pytest.importorskip("tfsparse.gates.beta_bernoulli")
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    gate = beta_bernoulli.DependentBetaBernoulliGate(name="dbb")
    x = keras.layers.GlobalAveragePooling2D()(gate(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    rng = np.random.default_rng(0)
    gate.a_raw.assign(np.array([-30.0, 1.0, 0.5, 2.0, -30.0, 1.5, 0.0, 1.0]))
    gate.beta.assign(rng.uniform(-0.3, 0.6, 8))
    x = rng.uniform(0, 1, (16, 6, 6, 1)).astype("float32")
    result = summary(model, x=x, print_fn=None)
    (row,) = result["gates"]
    assert row["units_kept"] == 6
    conv_out = keras.Model(inputs, model.get_layer("conv").output)(x)
    expected = float(ops.convert_to_numpy(gate.expected_active(conv_out)))
    assert row["avg_active_units"] == pytest.approx(expected)
    assert row["avg_active_units"] < 6
