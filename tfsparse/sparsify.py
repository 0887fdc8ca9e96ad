"""`sparsify`: put a method's gates into an existing Keras model.

Placement (the papers' own):

- unit-gate methods (`hard_concrete`, `npn`, `bb`, `dbb`) put a gate on the
  output channels of every hidden `Dense`/`Conv2D` (after the
  BatchNormalization/activation layers that directly follow it) and, with
  `gate_features=True`, on the features that enter the first `Dense` layers
  (a `Flatten` output or a flat network input): these are the "784-300-100"
  and "20-50-800-500" unit counts of the papers.
- kernel-gate methods (`targeted_dropout`, `hard_concrete` with
  `level="weight"`) replace each hidden `Dense`/`Conv2D` by a
  `tfsparse.layers.SparseDense`/`SparseConv2D` whose kernel passes through
  the gate.

The classifier (the last `Dense`/`Conv2D` before an output) is never gated
unless `include_classifier=True` for kernel-gate methods. Trained weights are
copied; the original model is left untouched.
"""

import inspect

import keras
import numpy as np

from tfsparse import _checks, _graph
from tfsparse.gates.base import UNIT, WEIGHT
from tfsparse.gates.hard_concrete import HardConcreteGate
from tfsparse.gates.npn import EXPAND, PRUNE, NPNGate
from tfsparse.layers import SparseConv2D, SparseDense
from tfsparse.sparse_model import SparseModel

METHODS = ("hard_concrete", "npn", "bb", "dbb", "targeted_dropout")
PRODUCERS = (keras.layers.Dense, keras.layers.Conv2D)
# Layers after a producer that the gate goes behind (channel-wise, 0 ↦ 0 or BN).
CHAIN = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
         keras.layers.LeakyReLU)
# Layers that mix the channels of several tensors (residual sums, concats).
MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
          keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum,
          keras.layers.Concatenate, keras.layers.Dot)
# Layers between a classifier and an output that do not mix channels.
TO_OUTPUT = (keras.layers.Activation, keras.layers.Softmax, keras.layers.Dropout,
             keras.layers.Flatten, keras.layers.Reshape)
BASE_ARGS = {"structure", "dataset_size", "group_size", "seed", "kwargs", "self"}
# Accepted by every gate family (see Gate).
COMMON_SETTINGS = {"lr_multiplier"}


def _gate_class(method):
    # Imported here so that each family's module is only loaded when used.
    if method == "hard_concrete":
        return HardConcreteGate
    if method == "npn":
        return NPNGate
    if method in ("bb", "dbb"):
        from tfsparse.gates import beta_bernoulli
        return (beta_bernoulli.BetaBernoulliGate if method == "bb"
                else beta_bernoulli.DependentBetaBernoulliGate)
    from tfsparse.gates.targeted_dropout import TargetedDropoutGate
    return TargetedDropoutGate


def sparsify(model, method, *, dataset_size=None, level=None, gate_features=True,
             include_classifier=False, group_by="params", seed=None, **settings):
    """Returns a new `tfsparse.SparseModel`: `model` with `method`'s gates.

    Args:
        model: a built Sequential or Functional Keras model.
        method: one of `"hard_concrete"`, `"npn"`, `"bb"`, `"dbb"`,
            `"targeted_dropout"`. `"dbb"` on a model that holds BB gates
            (a trained `sparsify(..., "bb")` model) replaces each BB gate by a
            DBB gate that starts from its posterior.
        dataset_size: number of training examples N; penalties are divided by
            it. Required by every method with a penalty.
        level: `"unit"` or `"weight"`. For `hard_concrete` (default "unit"),
            "weight" gates single kernel weights; for `targeted_dropout`
            (default "weight") it picks weight- or unit-level dropout.
        gate_features: also gate the features entering the first Dense
            layers (network input or Flatten output).
        include_classifier: kernel-gate methods also gate the classifier.
        group_by: what a closed unit saves, the weight of its penalty:
            `"params"` (the papers: its kernel column and bias) or `"flops"`
            (its multiply-adds per example: a conv channel counts once per
            output position, so a FLOPs budget prunes convolutions first).
        seed: base seed of the gates' random generators (gate i gets seed+i).
        **settings: the method's own settings, validated by its gate class:
            `hard_concrete`: lam, init_drop_rate, temperature;
            `npn`: lam, k, k_plastic, mode, init_size (int, or list with one
            entry per hidden-unit gate), estimator;
            `bb`/`dbb`: see `tfsparse.gates.beta_bernoulli`;
            `targeted_dropout`: alpha, gamma (`level` gives weight/unit).

    Returns:
        A `tfsparse.SparseModel` (uncompiled) with the weights of `model`.

    Example:

    >>> sparse = tfsparse.sparsify(model, "npn", dataset_size=60000, lam=0.1)
    """
    _checks.choice("method", method, METHODS)
    if level is None:
        level = WEIGHT if method == "targeted_dropout" else UNIT
    _checks.choice("level", level, (UNIT, WEIGHT))
    _checks.choice("group_by", group_by, ("params", "flops"))
    if method in ("npn", "bb", "dbb") and level != UNIT:
        raise ValueError(f"method={method!r} supports level='unit' only; got {level!r}.")
    gate_class = _gate_class(method)
    _check_settings(method, gate_class, settings)
    if method != "targeted_dropout":
        if dataset_size is None:
            raise ValueError(f"method={method!r} needs `dataset_size`, the number of "
                             "training examples N (penalties are divided by it).")
        _checks.number("dataset_size", dataset_size, low=1, integer=True)
    graph = _graph.functional_of(model)
    plan = _Plan(graph, method, gate_class, level, dataset_size, gate_features,
                 include_classifier, group_by, seed, settings)
    return plan.build(model.name + "_sparse")


def _check_settings(method, gate_class, settings):
    accepted = (set(inspect.signature(gate_class.__init__).parameters) - BASE_ARGS
                | COMMON_SETTINGS)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise TypeError(f"Unknown setting(s) {unknown} for method={method!r}; accepted: "
                        f"{sorted(accepted)} (plus dataset_size, level, gate_features, "
                        "include_classifier, group_by, seed).")


class _Plan:
    """Decides where gates go, then rebuilds the graph with them."""

    def __init__(self, graph, method, gate_class, level, dataset_size, gate_features,
                 include_classifier, group_by, seed, settings):
        self.graph = graph
        self.method = method
        self.gate_class = gate_class
        self.level = level
        self.dataset_size = dataset_size
        self.seed = seed
        self.group_by = group_by
        self.settings = dict(settings)
        self.kernel_gates = method == "targeted_dropout" or level == WEIGHT
        self.users = _graph.consumers(graph)
        self.classifiers = _classifiers(graph)
        self.include_classifier = include_classifier
        self.gates_after = {}   # id(op) → gate applied to that op's output
        self.input_gates = {}   # input index → gate
        self.replacements = {}  # id(op) → new layer that takes the op's place
        self.copies = []        # (new layer, old layer, how to copy)
        self._count = 0
        self._unit_gate_index = 0
        if method == "dbb" and self._replace_bb_gates():
            return
        if self.kernel_gates:
            self._place_kernel_gates()
        else:
            self._place_unit_gates(gate_features)

    # --------------------------------------------------------------- placing
    def _next_seed(self):
        self._count += 1
        return None if self.seed is None else self.seed + self._count - 1

    def _unit_gate(self, name, group_size, feature_gate):
        settings = dict(self.settings)
        if self.method == "npn" and settings.get("mode", PRUNE) == EXPAND:
            if feature_gate:
                # Input features are not grown: they all start open.
                settings["mode"], settings["init_size"] = PRUNE, None
            elif isinstance(settings.get("init_size"), (list, tuple)):
                sizes = settings["init_size"]
                if self._unit_gate_index >= len(sizes):
                    raise ValueError(f"`init_size` has {len(sizes)} entries but the model "
                                     "has more hidden-unit gates.")
                settings["init_size"] = sizes[self._unit_gate_index]
        if not feature_gate:
            self._unit_gate_index += 1
        return self.gate_class(dataset_size=self.dataset_size, group_size=group_size,
                               seed=self._next_seed(), name=f"{name}_gate", **settings)

    def _place_unit_gates(self, gate_features):
        for node in _graph.nodes_in_order(self.graph):
            op = node.operation
            if isinstance(op, PRODUCERS) and id(op) not in self.classifiers:
                end = self._chain_end(op)
                if any(isinstance(u, MERGES) for u in self.users.get(id(end), [])):
                    continue  # a residual sum: its channels cannot be removed
                group = _fan_in(op) * (_positions(op) if self.group_by == "flops" else 1)
                self.gates_after[id(end)] = self._unit_gate(op.name, group, False)
            elif gate_features and isinstance(op, keras.layers.Flatten):
                group = self._dense_rows(op)
                if group:
                    self.gates_after[id(op)] = self._unit_gate(op.name, group, True)
        if gate_features:
            for i, tensor in enumerate(self.graph.inputs):
                group = self._dense_rows(tensor._keras_history.operation)
                if group and len(tensor.shape) == 2:
                    self.input_gates[i] = self._unit_gate(f"input_{i}", group, True)

    def _dense_rows(self, op):
        """Units of the Dense layers fed by `op` (0 unless all its users are Dense)."""
        users = self.users.get(id(op), [])
        if users and all(isinstance(u, keras.layers.Dense) for u in users):
            return sum(u.units for u in users)
        return 0

    def _chain_end(self, op):
        while True:
            users = self.users.get(id(op), [])
            if len(users) != 1 or not isinstance(users[0], CHAIN):
                return op
            op = users[0]

    def _place_kernel_gates(self):
        structure = WEIGHT if self.method != "targeted_dropout" else self.level
        for node in _graph.nodes_in_order(self.graph):
            op = node.operation
            if not isinstance(op, PRODUCERS):
                continue
            if id(op) in self.classifiers and not self.include_classifier:
                continue
            gate = self.gate_class(structure=structure, seed=self._next_seed(),
                                   name=f"{op.name}_kernel_gate", **self._kernel_settings())
            self.replacements[id(op)] = _sparse_twin(op, gate)

    def _kernel_settings(self):
        if self.method == "targeted_dropout":
            return self.settings
        return {"dataset_size": self.dataset_size, **self.settings}

    def _replace_bb_gates(self):
        from tfsparse.gates.beta_bernoulli import BetaBernoulliGate
        found = False
        for node in _graph.nodes_in_order(self.graph):
            op = node.operation
            if isinstance(op, BetaBernoulliGate) and not isinstance(op, self.gate_class):
                dbb = self.gate_class.from_bb(op, seed=self._next_seed(),
                                              name=op.name + "_dbb", **self.settings)
                self.replacements[id(op)] = dbb
                self.copies.append((dbb, op, "bb"))
                found = True
        if not found:
            # DBB straight on a network: there is no trained BB to keep frozen.
            self.settings.setdefault("freeze_bb", False)
        return found

    # -------------------------------------------------------------- building
    def _layer_for(self, op):
        if id(op) in self.replacements:
            new = self.replacements[id(op)]
            if isinstance(new, (SparseDense, SparseConv2D)):
                self.copies.append((new, op, "kernel"))
            return new
        clone = op.__class__.from_config(op.get_config())
        self.copies.append((clone, op, "all"))
        return clone

    def build(self, name):
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
                  for t in self.graph.inputs]
        fed = [self.input_gates[i](x) if i in self.input_gates else x
               for i, x in enumerate(inputs)]

        def operation_fn(op):
            layer = self._layer_for(op)
            gate = self.gates_after.get(id(op))
            if gate is None:
                return layer
            return lambda *args, **kwargs: gate(layer(*args, **kwargs))

        outputs = self.graph._run_through_graph(fed, operation_fn=operation_fn)
        if len(inputs) == 1:  # a single tensor, as Keras expects for one input
            inputs = inputs[0]
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        model = SparseModel(inputs=inputs, outputs=outputs, name=name)
        for new, old, how in self.copies:
            _copy_weights(new, old, how)
        return model


def _copy_weights(new, old, how):
    if how == "all":
        new.set_weights(old.get_weights())
    elif how == "kernel":
        new.kernel.assign(old.kernel)
        if old.use_bias:
            new.bias.assign(old.bias)
    else:  # "bb": DBB continues from the BB posterior
        new.load_bb_weights(old)


def _sparse_twin(op, gate):
    """SparseDense/SparseConv2D with `op`'s configuration and `gate`."""
    common = dict(activation=op.activation, use_bias=op.use_bias,
                  kernel_initializer=op.kernel_initializer,
                  bias_initializer=op.bias_initializer,
                  kernel_regularizer=op.kernel_regularizer, kernel_gate=gate, name=op.name)
    if isinstance(op, keras.layers.Dense):
        return SparseDense(op.units, **common)
    if op.groups != 1 or tuple(op.dilation_rate) != (1, 1) or op.data_format != "channels_last":
        raise ValueError(f"Conv2D {op.name!r}: only groups=1, dilation_rate=1 and "
                         "channels_last are supported by kernel gates.")
    return SparseConv2D(op.filters, op.kernel_size, strides=op.strides, padding=op.padding,
                        **common)


def _positions(op):
    """Output positions per example (1 for Dense, H·W for Conv2D)."""
    return int(np.prod(op.output.shape[1:-1]))


def _fan_in(op):
    """Weights that one output unit of `op` owns: its kernel column and bias."""
    return int(np.prod(op.kernel.shape[:-1])) + (1 if op.use_bias else 0)


def _classifiers(graph):
    """ids of the Dense/Conv2D layers whose output reaches a model output
    through channel-preserving layers only."""
    found = set()
    for tensor in graph.outputs:
        op = tensor._keras_history.operation
        while isinstance(op, TO_OUTPUT) and not isinstance(op, PRODUCERS):
            node = op._inbound_nodes[0]
            op = _graph.producer_of(node)
            if op is None:
                break
        if isinstance(op, PRODUCERS):
            found.add(id(op))
    return found

