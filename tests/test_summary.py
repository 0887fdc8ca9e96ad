"""`tfsparse.summary`: hand-counted units, weights and FLOPs."""

import keras
import numpy as np
import pytest
from keras import ops

from tfsparse.compact import compact
from tfsparse.gates import DependentBetaBernoulliGate, HardConcreteGate
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
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv"),  # → 5x5x4
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.MaxPooling2D(2, name="pool"),  # → 2x2x4
            keras.layers.DepthwiseConv2D(2, name="depthwise"),  # → 1x1x4
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
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
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    gate = DependentBetaBernoulliGate(name="dbb")
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


# ------------------------------------------------ expected FLOPs per example
def _conv_bn_pool_depthwise(gate, depthwise=True):
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)  # → 4x4x4
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = gate(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)  # → 2x2x4
    if depthwise:  # (compaction cannot take a gate's channels through it)
        x = keras.layers.DepthwiseConv2D(2, name="depthwise")(x)  # → 1x1x4
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _hc_convnet():
    model = _conv_bn_pool_depthwise(HardConcreteGate(name="gate"))
    model.get_layer("gate").log_alpha.assign(np.array([OPEN, CLOSED, OPEN, OPEN]))
    return model


@pytest.mark.parametrize("build, shape", [(_gated_lenet, (28, 28, 1)), (_hc_convnet, (6, 6, 1))])
def test_expected_flops_equal_kept_flops_without_input_dependent_gates(build, shape):
    model = build()
    x = np.random.default_rng(0).uniform(0, 1, (5,) + shape).astype("float32")
    assert "flops_expected" not in summary(model, print_fn=None)["total"]
    lines = []
    result = summary(model, x=x, print_fn=lines.append)
    for row in result["layers"]:
        assert row["flops_expected"] == row["flops_kept"], row["name"]
    total = result["total"]
    assert total["flops_expected"] == total["flops_kept"]
    assert total["flops_expected_fraction"] == total["flops_fraction"]
    assert "FLOPs expected" in lines[2]
    assert any("FLOPs expected per example on x: " in line for line in lines)


def _dbb(name, **settings):
    return DependentBetaBernoulliGate(name=name, **settings)


def test_expected_flops_of_a_dbb_mlp_by_hand():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu", name="fc1")(inputs)
    gate = _dbb("dbb")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(gate(hidden)))
    # fc1: hidden_j = x_j + 0.01 Σ_{k≠j} x_k, every weight non-zero.
    model.get_layer("fc1").kernel.assign(np.eye(4) + 0.01 * (1 - np.eye(4)))
    out = model.get_layer("out")
    kernel = np.ones((4, 2), "float32")
    kernel[0, 1] = 0.0
    out.kernel.assign(kernel)
    # Static part: E[π] = 30/31 on units 0..2, unit 3 closed. Dynamic part:
    # d = clip(h/sqrt(1 + ε) − 0.5, 0, 1) > 0 iff hidden_j > 0.5 iff x_j = 1.
    gate.a_raw.assign(np.array([30.0, 30.0, 30.0, -30.0]))
    gate.gamma.assign(np.ones(4))
    gate.beta.assign(np.full(4, -0.5))
    gate.moving_mean.assign(np.zeros(4))
    gate.moving_variance.assign(np.ones(4))
    x = np.array(
        [
            [1, 1, 1, 0],  # units 0, 1, 2 on
            [1, 0, 0, 0],  # unit 0
            [0, 1, 0, 1],  # unit 1 (unit 3 is closed)
            [0, 0, 0, 0],
        ],  # none
        "float32",
    )
    lines = []
    result = summary(model, x=x, print_fn=lines.append)
    (gate_row,) = result["gates"]
    assert gate_row["units_kept"] == 3
    assert gate_row["avg_active_units"] == pytest.approx(5 / 4)
    rows = _by_name(result)
    p = np.array([2 / 4, 2 / 4, 1 / 4])  # units 0, 1, 2
    # fc1: 4 inputs (p = 1) × 3 kept units; out: 3 kept inputs × 2, one zero.
    assert rows["fc1"]["flops_kept"] == 12
    assert rows["fc1"]["flops_expected"] == pytest.approx(4 * p.sum())
    assert rows["out"]["flops_kept"] == 5
    assert rows["out"]["flops_expected"] == pytest.approx(p[0] + 2 * p[1] + 2 * p[2])
    total = result["total"]
    assert total["flops_expected"] == pytest.approx(5.0 + 2.0)
    assert total["flops_expected_fraction"] == pytest.approx(7.0 / (16 + 8))
    assert total["flops_kept"] == 17
    assert any(line.startswith("fc1 (Dense)") and line.endswith(" 5") for line in lines)


def _dbb_convnet(depthwise=True):
    gate = _dbb("dbb")
    model = _conv_bn_pool_depthwise(gate, depthwise)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0, 0.3, 4))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 4))
    bn.beta.assign(rng.normal(0, 0.3, 4))
    gate.a_raw.assign(np.array([2.0, -30.0, 1.0, 3.0]))  # unit 1 closed
    x = rng.uniform(0, 1, (16, 6, 6, 1)).astype("float32")
    # Statistics of the gate's pooled input on x: d = clip(z + β, 0, 1) with
    # z standardised, so each channel is on for a fair share of examples.
    gate_input = keras.Model(model.inputs[0], gate.input)(x)
    pooled = np.asarray(ops.convert_to_numpy(gate_input)).mean(axis=(1, 2))
    gate.moving_mean.assign(pooled.mean(axis=0))
    gate.moving_variance.assign(pooled.var(axis=0))
    gate.beta.assign(np.array([0.3, 0.3, -0.2, 0.6]))
    return model, x


def test_expected_flops_of_a_dbb_convnet_are_at_most_the_kept_flops():
    model, x = _dbb_convnet()
    result = summary(model, x=x, print_fn=None)
    rows = _by_name(result)
    for row in result["layers"]:
        assert row["flops_expected"] <= row["flops_kept"] + 1e-9, row["name"]
    (gate_row,) = result["gates"]
    active = gate_row["avg_active_units"]
    assert 0 < active < gate_row["units_kept"] == 3
    # The gate's channels reach conv1's columns (through ReLU and BN), the
    # pooling and the depthwise convolution; the logits see them through
    # the depthwise convolution, which they do not cross.
    for name in ("conv1", "bn", "pool", "depthwise"):
        assert rows[name]["flops_expected"] < rows[name]["flops_kept"], name
    assert rows["conv1"]["flops_expected"] == pytest.approx(3 * 3 * active * 16)
    assert rows["bn"]["flops_expected"] == pytest.approx(active * 16)
    assert rows["logits"]["flops_expected"] == rows["logits"]["flops_kept"]
    total = result["total"]
    assert total["flops_expected"] < total["flops_kept"]
    assert total["flops_expected_fraction"] < total["flops_fraction"]


def test_compacted_dbb_model_gives_the_same_expected_flops():
    model, x = _dbb_convnet(depthwise=False)
    before = summary(model, x=x, print_fn=None)
    after = summary(compact(model), x=x, print_fn=None)
    assert after["total"]["flops_kept"] == before["total"]["flops_kept"]
    assert 0 < before["total"]["flops_expected"] < before["total"]["flops_kept"]
    for name in ("conv1", "bn", "pool", "logits"):
        assert _by_name(after)[name]["flops_expected"] == pytest.approx(
            _by_name(before)[name]["flops_expected"]
        ), name
