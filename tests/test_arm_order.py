"""NPN's ARM step: no variable is updated before the antithetic pass has read
it, in the graph TensorFlow runs (after Grappler's dependency optimizer), and
two runs with the same seeds repeat bit for bit under default threading. The
same holds for a budget's multipliers, read by the forward pass."""

import keras
import numpy as np
import tensorflow as tf

import tfsparse
from bench.grappler_read_order import arm_shaped_step, dependency_optimized, unordered_reads
from tfsparse.gates import HardConcreteGate, NPNGate
from tfsparse.sparse_model import SparseModel


def _sgd():
    return keras.optimizers.SGD(0.1, momentum=0.9)


def _mixed_model():
    """An ARM gate next to a hard-concrete one: the gates' optimizer then
    links the hard-concrete update to φ's ARM gradient, and so to the
    antithetic pass, through its IdentityN (as one optimizer for every
    variable did for the weights before gates had their own)."""
    inputs = keras.Input((10,))
    gated = HardConcreteGate(lam=0.1, dataset_size=64, seed=0, name="input_gate")(inputs)
    hidden = keras.layers.Dense(12, activation="relu", name="hidden")(gated)
    hidden = keras.layers.BatchNormalization(name="norm")(hidden)
    hidden = NPNGate(lam=0.1, estimator="arm", dataset_size=64, seed=1, name="hidden_gate")(hidden)
    model = SparseModel(inputs=inputs, outputs=keras.layers.Dense(3, name="logits")(hidden))
    model.compile(
        _sgd(), keras.losses.SparseCategoricalCrossentropy(from_logits=True), gate_optimizer=_sgd()
    )
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def test_the_check_finds_what_the_dependency_optimizer_drops():
    # Guards the check below against passing vacuously: in TensorFlow's own
    # two-pass step the optimizer leaves one read unordered.
    graph = arm_shaped_step(slow_ops=2)[0].get_concrete_function().graph
    assert unordered_reads(graph.as_graph_def()) == []
    assert len(unordered_reads(dependency_optimized(graph))) == 1, (
        "TensorFlow's dependency optimizer no longer drops the order of "
        "bench/grappler_read_order.py: SparseModel's explicit order may be unneeded"
    )


def test_every_read_of_the_antithetic_pass_precedes_every_update():
    model = _mixed_model()
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # builds both optimizers
    step = tf.function(model.train_step)
    graph = step.get_concrete_function((tf.constant(x[:32]), tf.constant(y[:32]))).graph
    assert unordered_reads(graph.as_graph_def()) == []
    assert unordered_reads(dependency_optimized(graph)) == []


def test_two_runs_repeat_bit_for_bit():
    """Under TensorFlow's default inter-op threading (the suite sets none)."""
    assert tf.config.threading.get_inter_op_parallelism_threads() == 0
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        model = _mixed_model()
        x, y = _data(192)
        model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0)
        weights.append([w.numpy() for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_budgets_multipliers_are_read_before_their_update():
    # λ₁, λ₂ reach the loss only through the gates' gradients; the gates'
    # optimizer's IdentityN made their reads look ordered before the update
    # of λ, and the dependency optimizer dropped the order (4 pairs).
    inputs = keras.Input((10,))
    hidden = keras.layers.Dense(12, activation="relu", name="hidden")(inputs)
    dense = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    model = tfsparse.sparsify(
        dense, "hard_concrete", dataset_size=64, target_flops=0.3, seed=0, verbose=0
    )
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    step = tf.function(model.train_step)
    graph = step.get_concrete_function((tf.constant(x[:32]), tf.constant(y[:32]))).graph
    assert unordered_reads(dependency_optimized(graph)) == []
