"""Transformers: head gates on `MultiHeadAttention`, feed-forward unit gates,
and compaction to a plain `MultiHeadAttention` with fewer heads."""

import keras
import numpy as np
import pytest

import tfsparse
from tests.helpers.costs import flops_fraction
from tfsparse import _graph, models
from tfsparse.gates import (
    BetaBernoulliGate,
    DependentBetaBernoulliGate,
    HardConcreteGate,
    NPNGate,
    TargetedDropoutGate,
    gates_of,
)
from tfsparse.layers import GatedMultiHeadAttention

FAMILIES = {
    "hard_concrete": lambda: HardConcreteGate(lam=1.0, dataset_size=10, units=4),
    "npn": lambda: NPNGate(lam=1.0, dataset_size=10, units=4),
    "bb": lambda: BetaBernoulliGate(dataset_size=10, units=4),
}


def _attention_model(gate):
    inputs = keras.Input((6, 8))
    layer = GatedMultiHeadAttention(num_heads=4, key_dim=3, head_gate=gate, name="attention")
    return keras.Model(inputs, layer(inputs, inputs))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_gate_trains_saves_and_is_deterministic(family, tmp_path):
    model = _attention_model(FAMILIES[family]())
    x = np.random.default_rng(0).normal(size=(4, 6, 8)).astype("float32")
    model.compile("adam", "mse", jit_compile=True)
    model.fit(x, np.zeros_like(x), epochs=2, verbose=0)
    model(x, training=True)
    assert len(model.losses) == 1  # the head gate's penalty
    np.testing.assert_array_equal(model(x), model(x))
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(reloaded(x), model(x))


def test_head_gate_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _attention_model(FAMILIES["npn"]())
        x = np.ones((2, 6, 8), "float32")
        model.compile("adam", "mse")
        model.fit(x, np.zeros_like(x), verbose=0)
        assert model(x).dtype == "float16"
        assert model.get_layer("attention").head_gate.compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_closed_head_contributes_nothing():
    model = _attention_model(HardConcreteGate(units=4))
    gate = model.get_layer("attention").head_gate
    gate.log_alpha.assign(np.array([4.6, -4.6, 4.6, 4.6]))
    x = np.random.default_rng(1).normal(size=(2, 6, 8)).astype("float32")
    before = np.asarray(model(x))
    value = model.get_layer("attention").value_dense
    kernel = value.kernel.numpy().copy()
    kernel[:, 1, :] = 123.0  # only the closed head's values change
    value.kernel.assign(kernel)
    np.testing.assert_allclose(np.asarray(model(x)), before, atol=1e-6)


# ------------------------------------------------ sparsify → compact → export
def _set_gates(sparse, seed=0):
    """Closes about half of each gate's units; the others keep multipliers."""
    rng = np.random.default_rng(seed)
    for gate in gates_of(sparse):
        n = gate.mask_shape[0]
        closed = rng.permutation(n)[: n // 2]
        if isinstance(gate, HardConcreteGate):
            values = rng.choice([4.6, 0.5], n)
            values[closed] = -4.6
            gate.log_alpha.assign(values)
        elif isinstance(gate, NPNGate):
            values = rng.uniform(0.05, 0.5, n)
            values[closed] = -1.0
            gate.phi.assign(values)
        elif isinstance(gate, BetaBernoulliGate):
            values = rng.uniform(-1.0, 2.0, n)
            values[closed] = -30.0
            gate.a_raw.assign(values)


TRANSFORMERS = {
    "vit": (lambda: models.vit((16, 16, 1), 10, dim=32, depth=2, mlp_dim=48), (16, 16, 1)),
    "text_encoder": (
        lambda: models.text_encoder((20,), 2, vocab_size=100, dim=32, mlp_dim=48),
        (20,),
    ),
}


@pytest.mark.parametrize("method", ["hard_concrete", "npn", "bb", "dbb"])
@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformers_sparsify_train_compact_export(name, method, tmp_path):
    build, shape = TRANSFORMERS[name]
    dense = build()
    rng = np.random.default_rng(0)
    text = name == "text_encoder"
    x = rng.integers(0, 100, (8,) + shape) if text else rng.normal(size=(8,) + shape)
    y = rng.integers(0, int(dense.outputs[0].shape[-1]), 8)
    sparse = tfsparse.sparsify(dense, method, dataset_size=8, verbose=0)
    kinds = {type(g).__name__ for g in gates_of(sparse)}
    assert len(gates_of(sparse)) == 4  # heads and feed-forward units of both blocks
    if method == "dbb":  # heads read several inputs: static BB; feed-forward: DBB
        assert kinds == {"BetaBernoulliGate", "DependentBetaBernoulliGate"}
    # Eager steps: tracing a transformer's train step costs more than two steps.
    sparse.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
    )
    sparse.fit(x, y, batch_size=4, epochs=1, verbose=0)
    _set_gates(sparse)
    small = tfsparse.compact(sparse)
    x = x if text else x.astype("float32")
    expected, got = np.asarray(sparse(x, training=False)), np.asarray(small(x))
    assert np.max(np.abs(expected - got)) <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    heads = [
        layer.num_heads
        for layer in small.layers
        if isinstance(layer, keras.layers.MultiHeadAttention)
    ]
    assert heads == [2, 2]
    assert type(small.get_layer("block1_attention")) is keras.layers.MultiHeadAttention
    assert small.get_layer("block1_fc1").units == 24
    if method == "hard_concrete":
        report = tfsparse.export(small, tmp_path / "export", test_data=x, latency_runs=3)
        assert report["tflite"]["parity"]["ok"]


def test_targeted_dropout_prunes_feed_forward_units_of_a_transformer():
    dense = models.vit((16, 16, 1), 10, dim=32, depth=2, mlp_dim=48)
    sparse = tfsparse.sparsify(dense, "targeted_dropout", level="unit", alpha=0.5, gamma=0.5)
    gated = [layer.name for layer in sparse.layers if hasattr(layer, "kernel_gate")]
    assert gated == ["patch_embed", "block1_fc1", "block1_fc2", "block2_fc1", "block2_fc2"]
    tfsparse.prune_by_magnitude(sparse, 0.5, level="unit")
    small = tfsparse.compact(sparse)
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(small(x)), np.asarray(sparse(x, training=False)), atol=1e-5
    )
    assert small.get_layer("block1_fc1").units == 24


def test_hardening_targeted_dropout_leaves_whole_the_units_no_compaction_removes():
    # The patch embedding and fc2 write the stream that LayerNormalization
    # reads: their units cannot go, so hardening must not zero them (it did:
    # a ViT lost γ of its stream's channels, and its accuracy, for nothing).
    dense = models.vit((16, 16, 1), 10, dim=32, depth=2, mlp_dim=48)
    sparse = tfsparse.sparsify(dense, "targeted_dropout", target_flops=0.8, verbose=0)
    stream_writers = ["patch_embed", "block1_fc2", "block2_fc2"]
    before = {name: sparse.get_layer(name).kernel.numpy() for name in stream_writers}
    gates = [g for g in gates_of(sparse) if isinstance(g, TargetedDropoutGate)]
    TargetedDropoutGate.prepare_hardening(sparse, gates)
    for name in stream_writers:
        np.testing.assert_array_equal(sparse.get_layer(name).kernel.numpy(), before[name])
    small = tfsparse.compact(sparse)
    assert 0 < small.get_layer("block1_fc1").units < 48
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(small(x)), np.asarray(sparse(x, training=False)), atol=1e-5
    )
    fraction = flops_fraction(small, dense)
    assert abs(fraction - 0.8) < 0.02, fraction


def test_summary_counts_attention_per_head_with_the_sequence_length():
    dense = models.text_encoder((20,), 2, vocab_size=100, dim=32, heads=4, mlp_dim=48)
    sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=8, verbose=0)
    gate = sparse.get_layer("block1_attention").head_gate
    gate.log_alpha.assign(np.array([4.6, 4.6, 4.6, -4.6]))
    row = next(
        r
        for r in tfsparse.summary(sparse, print_fn=None)["layers"]
        if r["name"] == "block1_attention"
    )
    t, d, k = 20, 32, 8  # tokens, channels, head size
    per_head = 3 * t * d * k + 2 * t * t * k + t * k * d
    assert (row["units_kept"], row["units_total"]) == (3, 4)
    assert row["flops_total"] == 4 * per_head
    assert row["flops_kept"] == 3 * per_head
    small = tfsparse.compact(sparse)
    same = next(
        r
        for r in tfsparse.summary(small, print_fn=None)["layers"]
        if r["name"] == "block1_attention"
    )
    assert same["flops_kept"] == same["flops_total"] == 3 * per_head


def test_all_heads_closed_leave_the_residual_alone():
    dense = models.vit((16, 16, 1), 10, dim=32, depth=2, mlp_dim=48)
    sparse = tfsparse.sparsify(dense, "hard_concrete", dataset_size=8, verbose=0)
    sparse.get_layer("block2_attention").head_gate.log_alpha.assign(np.full(4, -4.6))
    small = tfsparse.compact(sparse)
    x = np.random.default_rng(0).normal(size=(3, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(small(x)), np.asarray(sparse(x, training=False)), atol=1e-5
    )
    assert isinstance(small.get_layer("block2_attention"), keras.layers.Rescaling)
    assert (
        tfsparse.summary(small, print_fn=None)["total"]["flops_kept"]
        < tfsparse.summary(dense, print_fn=None)["total"]["flops_total"]
    )


def test_dependent_beta_bernoulli_is_refused_as_a_head_gate_by_compaction():
    model = _attention_model(DependentBetaBernoulliGate(units=4, freeze_bb=False))
    with pytest.raises(ValueError, match="attention"):
        tfsparse.compact(model)


def _keras_hub_model(normalize_first, mask_zero=False):
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(100, 32, mask_zero=mask_zero)(inputs)
    for i in (1, 2):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=48, num_heads=4, normalize_first=normalize_first, name=f"enc{i}"
        )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


@pytest.mark.parametrize("normalize_first, method", [(False, "hard_concrete"), (True, "npn")])
def test_keras_hub_transformer_encoders_are_replayed_gated_and_compacted(
    normalize_first, method, tmp_path
):
    # keras-hub's encoder is one layer: tfsparse replays it as its parts (same
    # weights, same outputs) and gates their heads and feed-forward units.
    dense = _keras_hub_model(normalize_first)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 100, (8, 12)), rng.integers(0, 2, 8)
    sparse = tfsparse.sparsify(dense, method, dataset_size=8, verbose=0)
    assert [g.name for g in gates_of(sparse)] == [
        "enc1_attention_heads_gate",
        "enc1_fc1_gate",
        "enc2_attention_heads_gate",
        "enc2_fc1_gate",
    ]
    # The replayed network computes what the original does, bit for bit.
    np.testing.assert_array_equal(np.asarray(_graph.flattened(dense)(x)), np.asarray(dense(x)))
    sparse.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
    )
    sparse.fit(x, y, batch_size=4, epochs=1, verbose=0)
    _set_gates(sparse)
    small = tfsparse.compact(sparse)
    expected, got = np.asarray(sparse(x, training=False)), np.asarray(small(x))
    assert np.max(np.abs(expected - got)) <= 1e-5 * max(1.0, float(np.abs(expected).max()))
    assert [small.get_layer(f"enc{i}_attention").num_heads for i in (1, 2)] == [2, 2]
    assert small.get_layer("enc1_fc1").units == 24
    if method == "hard_concrete":
        report = tfsparse.export(small, tmp_path / "export", test_data=x, latency_runs=3)
        assert report["tflite"]["parity"]["ok"]


def test_a_masked_keras_hub_encoder_is_refused_by_name():
    dense = _keras_hub_model(False, mask_zero=True)
    with pytest.raises(ValueError, match="'enc1' reads the Keras mask of 'embedding"):
        tfsparse.sparsify(dense, "hard_concrete", dataset_size=8, verbose=0)
