"""Networks nobody here wrote: `keras.applications` and the layer patterns of
deployed CNNs (residual, concatenated, depthwise, squeeze-and-excitation,
1-D), through sparsify → training steps with a strong penalty → compact
(equal to the gated model, fewer multiply-adds) → export (TFLite on LiteRT)."""

import os

import keras
import numpy as np
import pytest

import tfsparse
from bench.applications import calibrate_batch_norm
from tests.helpers.costs import flops_fraction
from tfsparse import models
from tfsparse.gates import HardConcreteGate, NPNGate, gates_of

FULL_TESTS = os.environ.get("TFSPARSE_FULL_TESTS") == "1"
SIZE = 32
APPLICATIONS = (
    "MobileNetV2",
    "MobileNetV3Small",
    "ResNet50",
    "EfficientNetB0",
    "DenseNet121",
    "ConvNeXtTiny",
)
# Exporting takes 30-50 s per network on 2 cores: the suite exports
# MobileNetV3Small (its hard-swish is built from keras.ops);
# `python -m bench.applications --export` exports every network.
EXPORTED = {"MobileNetV3Small": "npn"}
# NPN trains with its hard-concrete estimator here: ARM's second forward pass
# doubles an eager step of a big network (ARM is tested in test_npn.py).
STRONG = {
    "hard_concrete": dict(lam=50.0, lr_multiplier=100.0),
    "npn": dict(lam=50.0, lr_multiplier=100.0, estimator="hard_concrete"),
}


def _application(name, **kwargs):
    if name == "MobileNetV2":
        kwargs["alpha"] = 0.35
    return getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3), **kwargs)


def _data(shape, n=4, classes=10, integers=False):
    rng = np.random.default_rng(0)
    x = (
        rng.integers(0, 50, (n,) + shape)
        if integers
        else rng.uniform(0, 1, (n,) + shape).astype("float32")
    )
    return x, rng.integers(0, classes, n)


def _gate_values(sparse):
    return [v.numpy().copy() for g in gates_of(sparse) for v in g.trainable_weights]


def _train_briefly(sparse, x, y):
    """One eager step (no graph to trace: the big networks stay fast) with a
    strong penalty; every gate variable moves, towards closing on average."""
    sparse.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    before = _gate_values(sparse)
    history = sparse.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = _gate_values(sparse)
    assert all(np.all(a != b) for a, b in zip(after, before))
    assert np.mean(np.concatenate([a - b for a, b in zip(after, before)])) < 0


def _close_half(sparse, seed=0):
    """Closes a random half of every gate's units (the others keep the
    multipliers training gave them, folded by compaction)."""
    rng = np.random.default_rng(seed)
    for gate in gates_of(sparse):
        n = gate.mask_shape[0]
        closed = rng.permutation(n)[: n // 2]
        if isinstance(gate, HardConcreteGate):
            gate.log_alpha.assign(_set(gate.log_alpha, closed, -4.6))
        elif isinstance(gate, NPNGate):
            gate.phi.assign(_set(gate.phi, closed, -1.0))


def _set(variable, where, value):
    values = np.array(keras.ops.convert_to_numpy(variable))  # a copy
    values[where] = value
    return values


def _compact_and_check(dense, sparse, x):
    small = tfsparse.compact(sparse)
    expected = np.asarray(sparse(x, training=False))
    got = np.asarray(small(x, training=False))
    scale = float(np.abs(expected).max())
    assert scale > 0 and np.max(np.abs(expected - got)) <= 1e-5 * scale
    before = tfsparse.summary(dense, print_fn=None)["total"]
    after = tfsparse.summary(small, print_fn=None)["total"]
    assert after["flops_kept"] < 0.6 * before["flops_total"]
    return small


def _export_and_check(small, x, path):
    report = tfsparse.export(small, path, test_data=x, latency_runs=3)
    assert report["tflite"]["parity"]["ok"], report["tflite"]["parity"]


def _whole_path(dense, method, x, y, tmp_path=None, **settings):
    sparse = tfsparse.sparsify(
        dense, method, dataset_size=len(x), verbose=0, **{**STRONG[method], **settings}
    )
    _train_briefly(sparse, x, y)
    _close_half(sparse)
    small = _compact_and_check(dense, sparse, x)
    if tmp_path is not None:
        _export_and_check(small, x, tmp_path / "export")
    return sparse, small


# ------------------------------------------------------- keras.applications
# `make test`: one family per network, alternating (the suite's time
# budget; the layer patterns below run both). `make test-full`
# (TFSPARSE_FULL_TESTS=1): both families on every network.
FAMILIES = ("hard_concrete", "npn")
CASES = (
    [(name, method) for name in APPLICATIONS for method in FAMILIES]
    if FULL_TESTS
    else [(name, FAMILIES[i % 2]) for i, name in enumerate(APPLICATIONS)]
)


@pytest.mark.parametrize("name, method", CASES)
def test_keras_applications(name, method, tmp_path):
    dense = _application(name, classes=10, classifier_activation=None)
    x, y = _data((SIZE, SIZE, 3))
    calibrate_batch_norm(dense, x * 255)  # outputs of order 1, not 1e-12
    exported = EXPORTED.get(name) == method
    _whole_path(dense, method, x * 255, y, tmp_path if exported else None)


@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetB0", "DenseNet121"])
def test_unit_level_targeted_dropout_compacts_to_its_budget(name):
    """Targeted dropout's hardening closes the weakest units of each channel
    group (depthwise, squeeze-and-excitation, concatenated and residual
    groups alike) after BatchNormalization: compaction is exact and keeps the
    budget's FLOPs. β is randomised so that a zeroed kernel column alone
    would leave a non-zero channel."""
    from tfsparse.gates import TargetedDropoutGate

    keras.utils.set_random_seed(0)
    dense = _application(name)
    x, _ = _data((SIZE, SIZE, 3))
    sparse = tfsparse.sparsify(
        dense, "targeted_dropout", level="unit", target_flops=0.3, verbose=0
    )
    rng = np.random.default_rng(0)
    for layer in sparse.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape).astype("float32"))
    gates = [g for g in gates_of(sparse) if isinstance(g, TargetedDropoutGate)]
    TargetedDropoutGate.prepare_hardening(sparse, gates)
    small = tfsparse.compact(sparse)
    expected = np.asarray(sparse(x * 255, training=False))
    got = np.asarray(small(x * 255, training=False))
    assert np.max(np.abs(expected - got)) <= 1e-5 * float(np.abs(expected).max())
    fraction = flops_fraction(small, dense)
    assert abs(fraction - 0.3) < 0.03, fraction


def test_application_inside_a_new_head_is_flattened_and_gated():
    base = _application("MobileNetV2", include_top=False, pooling="avg")
    dense = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), base, keras.layers.Dense(10, name="head")]
    )
    x, y = _data((SIZE, SIZE, 3))
    calibrate_batch_norm(dense, x)
    sparse, small = _whole_path(dense, "hard_concrete", x, y)
    inner = {layer.name for layer in base.layers}
    assert sum(g.name[: -len("_gate")] in inner for g in gates_of(sparse)) >= 17
    assert not any(isinstance(layer, keras.Model) for layer in small.layers)


# ------------------------------------------------------- layer patterns
def _inception():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    a = keras.layers.Conv2D(6, 1, activation="relu", name="a_1x1")(x)
    b = keras.layers.Conv2D(4, 1, activation="relu", name="b_reduce")(x)
    b = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b_3x3")(b)
    c = keras.layers.MaxPooling2D(3, 1, padding="same", name="c_pool")(x)
    c = keras.layers.Conv2D(4, 1, activation="relu", name="c_proj")(c)
    x = keras.layers.Concatenate(name="mixed")([a, b, c])
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _squeeze_excitation():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("swish", name="swish")(x)
    s = keras.layers.GlobalAveragePooling2D(name="squeeze")(x)
    s = keras.layers.Reshape((1, 1, 16), name="to_map")(s)
    s = keras.layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = keras.layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply(name="excite")([x, s])
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _text_conv1d():
    inputs = keras.Input((40,), dtype="int32")
    x = keras.layers.Embedding(50, 16, name="embed")(inputs)
    x = keras.layers.Conv1D(24, 5, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling1D(2, name="pool")(x)
    x = keras.layers.Conv1D(24, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalMaxPooling1D(name="gmp")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


PATTERNS = {
    "resnet20": (lambda: models.resnet20((SIZE, SIZE, 3), 10), (SIZE, SIZE, 3), False),
    "inception": (_inception, (16, 16, 3), False),
    "squeeze_excitation": (_squeeze_excitation, (16, 16, 3), False),
    "text_conv1d": (_text_conv1d, (40,), True),
}


@pytest.mark.parametrize("method", ["hard_concrete", "npn"])
@pytest.mark.parametrize("name", list(PATTERNS))
def test_layer_patterns(name, method, tmp_path):
    build, shape, integers = PATTERNS[name]
    dense = build()
    x, y = _data(shape, integers=integers, classes=int(dense.outputs[0].shape[-1]))
    _whole_path(dense, method, x, y, tmp_path)


def test_resnet_streams_share_one_gate_per_stage():
    sparse = tfsparse.sparsify(
        models.resnet20((SIZE, SIZE, 3), 10), "hard_concrete", dataset_size=10, verbose=0
    )
    stream = sparse.get_layer("stem_gate")
    # Called before every block of stage 1 and before stage 2's first block
    # (its conv1 and its projection read the same gated tensor).
    assert len(stream._inbound_nodes) == 4
    reader = sparse.get_layer("s2b1_proj")._inbound_nodes[0].input_tensors[0]
    assert reader._keras_history.operation is stream
    small = tfsparse.compact(_closed(sparse, "stem_gate", [0, 3, 7]))
    for layer in ("stem", "s1b1_conv2", "s1b2_conv2", "s1b3_conv2"):
        assert small.get_layer(layer).filters == 13
    assert small.get_layer("s1b2_conv1").kernel.shape[-2] == 13


def _closed(sparse, gate_name, units):
    gate = sparse.get_layer(gate_name)
    gate.log_alpha.assign(_set(np.full(gate.mask_shape, 4.6), units, -4.6))
    return sparse


def test_a_layer_normalization_keeps_its_group_whole_and_says_so(capsys):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    sparse = tfsparse.sparsify(dense, "npn", dataset_size=10)
    assert [g.name for g in gates_of(sparse)] == ["conv2_gate"]
    assert "LayerNormalization" in capsys.readouterr().out
    # Unit-level targeted dropout removes channels too, and says so as well.
    sparse = tfsparse.sparsify(dense, "targeted_dropout", level="unit")
    assert [g.name for g in gates_of(sparse)][-1] == "conv2_keep"
    assert "LayerNormalization" in capsys.readouterr().out


def test_no_removable_group_is_an_error_that_says_why():
    inputs = keras.Input((8,))
    x = keras.layers.Dense(6, name="hidden")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    dense = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    with pytest.raises(ValueError, match=r"No 'npn' gate.*'hidden'.*LayerNormalization"):
        tfsparse.sparsify(dense, "npn", dataset_size=10, gate_features=False)
