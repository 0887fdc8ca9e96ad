"""Targeted dropout (Gomez et al., 2019): the TargetedDropoutGate's claims."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfsparse.callbacks import SparsityScheduler
from tfsparse.gates.targeted_dropout import TargetedDropoutGate, candidate_count
from tfsparse.layers import SparseConv2D, SparseDense, effective_kernel
from tfsparse.pruning import prune_by_magnitude
from tfsparse.schedules import targeted_dropout_ramp


def _kernel(shape, seed=0):
    """A kernel whose magnitudes are all distinct (a permutation of a grid)."""
    size = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    magnitudes = rng.permutation(np.arange(1, size + 1)) / size
    signs = rng.choice([-1.0, 1.0], size)
    return (magnitudes * signs).reshape(shape).astype("float32")


def _expected_weight_candidates(kernel, gamma):
    matrix = kernel.reshape(-1, kernel.shape[-1])
    ranks = np.argsort(np.argsort(np.abs(matrix), axis=0), axis=0)
    return ranks < math.floor(gamma * matrix.shape[0] + 1e-9)


def _expected_unit_candidates(kernel, gamma):
    norms = np.linalg.norm(kernel.reshape(-1, kernel.shape[-1]), axis=0)
    ranks = np.argsort(np.argsort(norms))
    return ranks < math.floor(gamma * norms.size + 1e-9)


def _gate(kernel, **kwargs):
    gate = TargetedDropoutGate(**kwargs)
    gate.build(kernel.shape)
    return gate


# ---------------------------------------------------------------- candidates
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 0.75, 0.29, 1.0])
def test_weight_candidates_are_the_smallest_per_column(gamma):
    kernel = _kernel((100, 7))
    gate = _gate(kernel, gamma=gamma)
    got = gate.candidates(kernel).numpy()
    np.testing.assert_array_equal(got, _expected_weight_candidates(kernel, gamma))
    # The count is the floor of γ·rows, as in the official code (29 for 0.29).
    assert (got.sum(axis=0) == candidate_count(gamma, 100)).all()
    assert candidate_count(gamma, 100) == math.floor(round(gamma * 100, 6))


@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_unit_candidates_are_the_weakest_columns(gamma):
    kernel = _kernel((30, 20), seed=1)
    kernel *= np.linspace(0.1, 2.0, 20)[np.random.default_rng(2).permutation(20)]
    gate = _gate(kernel, gamma=gamma, structure="unit")
    got = gate.candidates(kernel).numpy()
    assert got.shape == (20,)
    np.testing.assert_array_equal(got, _expected_unit_candidates(kernel, gamma))


@pytest.mark.parametrize("structure", ["weight", "unit"])
def test_conv_kernel_is_ranked_as_rows_by_output_channels(structure):
    kernel = _kernel((3, 3, 4, 6), seed=3)
    gate = _gate(kernel, alpha=1.0, gamma=0.5, structure=structure)
    dropped = gate(kernel, training=True).numpy() == 0
    if structure == "weight":
        expected = _expected_weight_candidates(kernel, 0.5).reshape(kernel.shape)
    else:
        expected = np.broadcast_to(_expected_unit_candidates(kernel, 0.5), kernel.shape)
    # α = 1 drops every candidate and nothing else.
    np.testing.assert_array_equal(dropped, expected)


# ------------------------------------------------------------------- dropout
def test_weight_level_drops_candidates_with_probability_alpha():
    alpha, gamma, draws = 0.3, 0.5, 200
    kernel = _kernel((40, 25), seed=4)
    gate = _gate(kernel, alpha=alpha, gamma=gamma, seed=5)
    candidates = _expected_weight_candidates(kernel, gamma)
    masks = np.stack([gate(kernel, training=True).numpy() != 0 for _ in range(draws)])
    assert masks[:, ~candidates].all(), "a non-candidate weight was dropped"
    n = draws * candidates.sum()
    rate = 1.0 - masks[:, candidates].mean()
    # Bound: 4 binomial standard errors of n independent Bernoulli(α) draws.
    assert abs(rate - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n), rate


def test_unit_level_drops_whole_candidate_columns_with_probability_alpha():
    alpha, gamma, draws = 0.6, 0.5, 400
    kernel = _kernel((12, 30), seed=6)
    gate = _gate(kernel, alpha=alpha, gamma=gamma, structure="unit", seed=7)
    candidates = _expected_unit_candidates(kernel, gamma)
    kept = np.stack([gate(kernel, training=True).numpy() != 0 for _ in range(draws)])
    # A column is kept or dropped whole.
    assert (kept.all(axis=1) | ~kept.any(axis=1)).all()
    columns = kept.all(axis=1)
    assert columns[:, ~candidates].all(), "a non-candidate unit was dropped"
    n = draws * candidates.sum()
    rate = 1.0 - columns[:, candidates].mean()
    assert abs(rate - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / n), rate


@pytest.mark.parametrize("structure", ["weight", "unit"])
def test_inference_applies_no_dropout_and_no_rescaling(structure):
    kernel = _kernel((16, 8), seed=8)
    gate = _gate(kernel, alpha=1.0, gamma=1.0, structure=structure)
    for _ in range(2):
        np.testing.assert_array_equal(gate(kernel, training=False).numpy(), kernel)
    # Training keeps survivors as they are (no 1/(1-α) scaling).
    gate.alpha.assign(0.5)
    out = gate(kernel, training=True).numpy()
    np.testing.assert_array_equal(out[out != 0], kernel[out != 0])


def test_keep_mask_holds_in_training_and_inference():
    kernel = _kernel((10, 4), seed=9)
    gate = _gate(kernel, alpha=0.0, gamma=0.5)
    keep = np.ones(kernel.shape, "float32")
    keep[0, :] = 0.0
    gate.keep.assign(keep)
    for training in (False, True):
        out = gate(kernel, training=training).numpy()
        np.testing.assert_array_equal(out, kernel * keep)
    assert gate.active().numpy().sum() == kernel.size - 4


def test_ranking_carries_no_gradient_but_the_kernel_does():
    kernel = tf.Variable(_kernel((20, 5), seed=10))
    gate = _gate(kernel, alpha=0.5, gamma=0.5, seed=11)
    with tf.GradientTape() as tape:
        out = gate(kernel, training=True)
        loss = tf.reduce_sum(out)
    grad = tape.gradient(loss, kernel).numpy()
    # d Σ(k·m)/dk = m: exactly the mask, nothing from the sort.
    np.testing.assert_array_equal(grad, (out.numpy() != 0).astype("float32"))
    assert gate.regularization().numpy() == 0.0


# -------------------------------------------------------------------- ramp
def _paper_gamma(gamma, t, half):
    # Official "piecewise" variants: 0.95γ over the first half, the last 5 % after.
    return 0.95 * gamma * min(1.0, t / half) + 0.05 * gamma * max(0.0, min(1.0, (t - half) / half))


@pytest.mark.parametrize("alpha,gamma", [(0.99, 0.99), (0.99, 0.90), (0.5, 0.5)])
def test_ramp_gives_the_papers_values(alpha, gamma):
    ramp = targeted_dropout_ramp(alpha, gamma, total_steps=40000)
    for t in (0, 10000, 20000, 30000, 40000, 55000):
        assert ramp["gamma"](t) == pytest.approx(_paper_gamma(gamma, t, 20000), abs=1e-12)
        assert ramp["alpha"](t) == pytest.approx(alpha * min(1.0, t / 40000), abs=1e-12)
    assert ramp["gamma"](20000) == pytest.approx(0.95 * gamma)
    # Pure functions of the step: order of calls does not matter.
    assert [ramp["gamma"](t) for t in (30000, 0, 30000)][0] == ramp["gamma"](30000)


def test_scheduler_ramps_the_gate_during_fit():
    model = _mlp(structure="weight", alpha=0.99, gamma=0.99)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    ramp = targeted_dropout_ramp(0.99, 0.99, total_steps=8)
    model.fit(
        x, y, epochs=2, batch_size=16, verbose=0, callbacks=[SparsityScheduler(schedules=ramp)]
    )
    gate = model.get_layer("fc1").kernel_gate
    # The last batch began at step 7 (64 examples / 16 = 4 steps per epoch).
    assert float(gate.gamma.numpy()) == pytest.approx(ramp["gamma"](7), rel=1e-6)
    assert float(gate.alpha.numpy()) == pytest.approx(ramp["alpha"](7), rel=1e-6)


# -------------------------------------------------- training and serialization
def _data(n=64, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")


def _mlp(structure, alpha=0.5, gamma=0.5, features=12):
    inputs = keras.Input((features,))
    h = SparseDense(
        16,
        activation="relu",
        name="fc1",
        kernel_gate=TargetedDropoutGate(alpha, gamma, structure=structure, seed=1),
    )(inputs)
    h = SparseDense(
        8,
        activation="relu",
        name="fc2",
        kernel_gate=TargetedDropoutGate(alpha, gamma, structure=structure, seed=2),
    )(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


@pytest.mark.parametrize("structure", ["weight", "unit"])
def test_training_works_under_xla(structure):
    model = _mlp(structure)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    before = model.get_layer("fc1").kernel.numpy().copy()
    x, y = _data()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(model.get_layer("fc1").kernel.numpy(), before)
    # Inference is deterministic.
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_conv_layer_trains_under_xla():
    inputs = keras.Input((8, 8, 2))
    h = SparseConv2D(
        4, 3, activation="relu", name="conv", kernel_gate=TargetedDropoutGate(0.5, 0.5, seed=3)
    )(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 2)).astype("float32")
    history = model.fit(x, np.arange(32) % 2, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_config_round_trip():
    gate = TargetedDropoutGate(alpha=0.3, gamma=0.7, structure="unit", seed=4, name="td")
    config = gate.get_config()
    for key in ("alpha", "gamma", "structure", "seed"):
        assert key in config
    clone = TargetedDropoutGate.from_config(config)
    assert clone.get_config() == config
    layer = SparseDense(5, kernel_gate=gate)
    clone_layer = SparseDense.from_config(layer.get_config())
    assert isinstance(clone_layer.kernel_gate, TargetedDropoutGate)
    assert clone_layer.kernel_gate.get_config() == config


@pytest.mark.parametrize("structure", ["weight", "unit"])
def test_keras_file_round_trip_gives_identical_outputs(tmp_path, structure):
    model = _mlp(structure)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    prune_by_magnitude(model, 0.5, level=structure)  # non-trivial keep masks
    path = str(tmp_path / "td.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for name in ("fc1", "fc2"):
        np.testing.assert_array_equal(
            loaded.get_layer(name).kernel_gate.keep.numpy(),
            model.get_layer(name).kernel_gate.keep.numpy(),
        )


# ------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"gamma": 2.0}, "gamma"),
        ({"structure": "channel"}, "structure"),
    ],
)
def test_bad_settings_name_the_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TargetedDropoutGate(**kwargs)


def test_gate_on_an_activation_is_refused():
    with pytest.raises(ValueError, match="kernel"):
        TargetedDropoutGate()(keras.Input((8,)))


# ------------------------------------------------------------ behaviour
def test_targeted_dropout_makes_the_mlp_robust_to_pruning():
    """Digits MLP 64-256-128-10, 15 epochs. Pruning 75 % of each hidden
    column (= γ) costs the network trained with targeted dropout (α = 0.66,
    γ = 0.75, the paper's "botk75_66") at most 2 points; the same network
    trained without dropout loses more than that one does. Seen on seeds 0-4:
    no dropout loses 1.7-4.5 points, targeted dropout gains 0.5-3.8 (it was
    trained mostly without those weights and uses no rescaling)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    (x_train, y_train), (x_test, y_test) = (x[:1400], y[:1400]), (x[1400:], y[1400:])

    def accuracies(targeted):
        keras.utils.set_random_seed(0)
        gate = (
            (lambda s: TargetedDropoutGate(alpha=0.66, gamma=0.75, seed=s))
            if targeted
            else (lambda s: None)
        )
        model = keras.Sequential(
            [
                keras.Input((64,)),
                SparseDense(256, activation="relu", kernel_gate=gate(1), name="fc1"),
                SparseDense(128, activation="relu", kernel_gate=gate(2), name="fc2"),
                keras.layers.Dense(10, name="logits"),
            ]
        )
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_train, y_train, epochs=15, batch_size=32, verbose=0)
        dense = model.evaluate(x_test, y_test, batch_size=512, verbose=0)[1]
        prune_by_magnitude(model, 0.75)
        return dense, model.evaluate(x_test, y_test, batch_size=512, verbose=0)[1]

    plain_dense, plain_pruned = accuracies(False)
    td_dense, td_pruned = accuracies(True)
    assert td_pruned >= td_dense - 0.02, (td_dense, td_pruned)
    assert plain_dense - plain_pruned > td_dense - td_pruned, (
        plain_dense,
        plain_pruned,
        td_dense,
        td_pruned,
    )
    assert td_pruned > 0.95


def _unit_level_resnet(target_flops):
    import tfsparse
    from tfsparse.models import resnets

    keras.utils.set_random_seed(0)
    dense = resnets.resnet20(input_shape=(16, 16, 1))
    sparse = tfsparse.sparsify(
        dense, "targeted_dropout", level="unit", target_flops=target_flops, seed=0, verbose=0
    )
    sparse.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return dense, sparse


def test_unit_level_hardening_removes_whole_channel_groups_of_a_resnet(tmp_path):
    """On ResNet-20 a zeroed kernel column is no zero channel (BatchNorm adds
    β − γμ/σ; the residual stream is written by several convolutions): the
    hardening closes the weakest channels of each group with its
    ChannelKeepGate and in every producer, so compaction removes them and
    stays exact, also after more training moved BatchNorm's β."""
    import tfsparse
    from tfsparse.gates.channel_keep import ChannelKeepGate

    dense, sparse = _unit_level_resnet(target_flops=0.4)
    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 1), dtype="float32")
    y = rng.integers(0, 10, 32)
    sparse.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[SparsityScheduler()])
    gamma = float(sparse.get_layer("stem").kernel_gate.gamma.numpy())
    keeps = [g for g in sparse.layers if isinstance(g, ChannelKeepGate)]
    assert len(keeps) == 12  # the three streams and the nine inner convolutions
    for keep in keeps:
        units = keep.mask_shape[0]
        assert int(np.sum(keep.mask().numpy() == 0)) == candidate_count(gamma, units)
    # The first stream: the stem and every block's second convolution lose
    # the channels the stream's gate closed.
    closed = sparse.get_layer("stem_keep").mask().numpy() == 0
    for name in ("stem", "s1b1_conv2", "s1b2_conv2", "s1b3_conv2"):
        kernel = effective_kernel(sparse.get_layer(name)).reshape(-1, 16)
        assert np.all(kernel[:, closed] == 0) and np.all(np.any(kernel[:, ~closed], axis=0))

    def compacted_flops():
        small = tfsparse.compact(sparse)
        np.testing.assert_allclose(
            small.predict(x, verbose=0), sparse.predict(x, verbose=0), rtol=1e-5, atol=1e-5
        )
        return (
            tfsparse.summary(small, print_fn=None)["total"]["flops_kept"]
            / tfsparse.summary(dense, print_fn=None)["total"]["flops_total"]
        )

    fraction = compacted_flops()
    assert abs(fraction - 0.4) < 0.05, fraction
    sparse.fit(x, y, epochs=1, batch_size=16, verbose=0)  # β moves, the channels stay closed
    assert compacted_flops() == fraction
    sparse.save(tmp_path / "td.keras")
    loaded = keras.saving.load_model(tmp_path / "td.keras")
    np.testing.assert_array_equal(
        loaded.get_layer("stem_keep").mask().numpy(), sparse.get_layer("stem_keep").mask().numpy()
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), sparse.predict(x, verbose=0), rtol=1e-6
    )
    # Pruning further after hardening closes more channels in the frozen masks.
    tfsparse.prune_by_magnitude(sparse, 0.5, level="unit")
    assert int(np.sum(sparse.get_layer("stem_keep").mask().numpy() == 0)) == 8
    assert compacted_flops() < fraction - 0.1


def test_group_pruning_of_a_plain_chain_is_the_per_layer_rule():
    """Where each channel group has one producer (an MLP), pruning by groups
    removes the paper's per-layer candidates: the ⌊γ·units⌋ weakest columns
    of each hidden layer, and the group's ChannelKeepGate closes those (also
    when the sparse model is nested in another)."""
    import tfsparse
    from tfsparse import models
    from tfsparse.pruning import prune_unit_groups

    keras.utils.set_random_seed(0)
    sparse = tfsparse.sparsify(
        models.lenet_300_100((64,), 10), "targeted_dropout", level="unit", verbose=0
    )
    hidden = [layer for layer in sparse.layers if isinstance(layer, SparseDense)]
    assert [layer.units for layer in hidden] == [300, 100]
    expected = [_expected_unit_candidates(layer.kernel.numpy(), 0.3) for layer in hidden]
    # Inside a model that wraps it, as a user adds preprocessing.
    outer = keras.Sequential([keras.Input((64,)), sparse])
    prune_unit_groups(outer, lambda layer: 0.3, hidden)
    for layer, pruned in zip(hidden, expected):
        assert pruned.sum() == candidate_count(0.3, layer.units)
        kernel = effective_kernel(layer)
        assert np.all(kernel[:, pruned] == 0) and np.all(np.any(kernel[:, ~pruned], axis=0))
        keep = sparse.get_layer(f"{layer.name}_keep").mask().numpy()
        np.testing.assert_array_equal(keep == 0, pruned)
