"""Grappler's dependency optimizer can let a variable's update run before a
read that `tf.function`'s automatic control dependencies ordered before it.

TensorFlow only, no Keras and no tfsparse. The step below has the shape of
NPN's ARM step: a first pass whose gradient updates `w`, a second pass that
also reads `w` but only feeds the gradient of another variable `phi`, and one
`IdentityN` over both gradients (as a Keras optimizer's `apply_gradients`
makes). Automatic control dependencies put a control edge from the second
pass's read of `w` to `w`'s update. The dependency optimizer's transitive
reduction drops that edge as redundant, because a longer path
read → loss_b → grad_phi → IdentityN → velocity → update exists; the same
pass then bypasses the IdentityN, which removes that path too. The read and
the update end up unordered, and under the default inter-op parallelism the
second pass sometimes reads the updated `w`.

    python -m bench.grappler_read_order

prints the unordered (read, write) pairs before and after the dependency
optimizer, and how many of 200 steps read the updated weights, with the
dependency optimizer on and (in a child process) off. Measured with
TensorFlow 2.21 on the 2-core CPU machine: no pair as traced, 1 after the
optimizer; 8 and 15 of 200 steps stale with it (two runs), 0 of 200 without.
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
from tensorflow.python.grappler import tf_optimizer

OFF = rewriter_config_pb2.RewriterConfig.OFF
ON = rewriter_config_pb2.RewriterConfig.ON
OTHER_OPTIMIZERS = (
    "constant_folding",
    "layout_optimizer",
    "arithmetic_optimization",
    "remapping",
    "loop_optimization",
    "function_optimization",
    "shape_optimization",
    "memory_optimization",
    "common_subgraph_elimination",
    "pin_to_host_optimization",
    "implementation_selector",
    "auto_mixed_precision",
)
WRITES = ("AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp")
NO_DEPENDENCY_OPTIMIZATION = "NO_DEPENDENCY_OPTIMIZATION"


def dependency_optimized(graph):
    """The GraphDef of a `tf.function`'s graph after Grappler's dependency
    optimizer alone (what `fit` runs has it on by default)."""
    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(graph.as_graph_def())
    fetch = meta.collection_def["train_op"].node_list.value
    for tensor in graph.outputs:
        fetch.append(tensor.name)
    config = config_pb2.ConfigProto()
    rewrites = config.graph_options.rewrite_options
    rewrites.min_graph_nodes = -1
    for name in OTHER_OPTIMIZERS:
        setattr(rewrites, name, OFF)
    rewrites.dependency_optimization = ON
    rewrites.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    return tf_optimizer.OptimizeGraph(config, meta, graph_id=b"step")


def unordered_reads(graph_def):
    """(read, write) node-name pairs of the same resource variable with no
    path between them: the read may see the value before or after the write."""
    nodes = {node.name: node for node in graph_def.node}

    def ancestors(name):
        seen, stack = set(), [name]
        while stack:
            for source in nodes[stack.pop()].input:
                source = source.lstrip("^").split(":")[0]
                if source in nodes and source not in seen:
                    seen.add(source)
                    stack.append(source)
        return seen

    reads, writes = {}, {}
    for node in graph_def.node:
        handle = node.input[0].split(":")[0] if node.input else None
        if node.op == "ReadVariableOp":
            reads.setdefault(handle, []).append(node.name)
        elif node.op in WRITES:
            writes.setdefault(handle, []).append(node.name)
    pairs = []
    for handle, written in writes.items():
        for write in written:
            before_write = ancestors(write)
            pairs += [
                (read, write)
                for read in reads.get(handle, [])
                if read not in before_write and write not in ancestors(read)
            ]
    return pairs


def arm_shaped_step(slow_ops=200):
    """The two-pass step described above, and its variables. `slow_ops`
    independent matmuls delay the second pass, which widens the window."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(32, 64)).astype("float32"))
    w = tf.Variable(rng.normal(size=(64, 8)).astype("float32") * 0.1, name="w")
    phi = tf.Variable(tf.zeros(8), name="phi")
    velocity = tf.Variable(tf.zeros((64, 8)), name="velocity")

    def second_pass():
        return tf.reduce_sum(tf.tanh(x @ w * tf.sigmoid(phi)) ** 2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss_a = tf.reduce_sum(tf.tanh(x @ w) ** 2)
        grad_w = tape.gradient(loss_a, w)
        delay = x
        for _ in range(slow_ops):
            delay = tf.tanh(delay @ tf.eye(64))
        with tf.control_dependencies([delay]):
            loss_b = second_pass()
        grad_phi = tf.stop_gradient(loss_b - loss_a) * tf.ones(8)
        grad_w, grad_phi = tf.identity_n([grad_w, grad_phi])
        velocity.assign(0.9 * velocity - 0.01 * grad_w)
        w.assign_add(velocity)
        phi.assign_sub(0.01 * grad_phi)
        return loss_b

    return step, second_pass


def stale_steps(steps=200):
    """How many of `steps` calls had their second pass read the updated `w`."""
    step, second_pass = arm_shaped_step()
    stale = 0
    for _ in range(steps):
        expected = float(second_pass())  # eagerly, from the weights before the step
        seen = float(step())
        stale += abs(seen - expected) > 1e-4 * abs(expected)
    return stale


def main():
    if os.environ.get(NO_DEPENDENCY_OPTIMIZATION):
        tf.config.optimizer.set_experimental_options({"dependency_optimization": False})
        print(f"dependency optimizer off: {stale_steps()} of 200 steps read updated weights")
        return
    graph = arm_shaped_step()[0].get_concrete_function().graph
    print("TensorFlow", tf.__version__)
    print("unordered (read, write) pairs as traced:", unordered_reads(graph.as_graph_def()))
    print("after the dependency optimizer:", unordered_reads(dependency_optimized(graph)))
    print(f"dependency optimizer on: {stale_steps()} of 200 steps read updated weights")
    subprocess.run(
        [sys.executable, "-m", "bench.grappler_read_order"],
        check=True,
        env={**os.environ, NO_DEPENDENCY_OPTIMIZATION: "1"},
    )


if __name__ == "__main__":
    main()
