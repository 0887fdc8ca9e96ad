"""`sparsify`: put a method's gates into an existing Keras model.

Placement:

- unit-gate methods (`hard_concrete`, `npn`, `bb`, `dbb`) put one gate on
  every *channel group* (`tfsparse.channels.ChannelGroups`): the channels of
  a Dense/Conv output together with every tensor that carries them (through
  BatchNormalization, activations, pooling, depthwise convolutions, residual
  sums, concatenations). The gate is called right before each layer that
  reads the group through its kernel rows (moved back through pooling,
  Flatten, Dropout and padding), so a closed unit disappears from every
  producer and consumer of the group. In a plain chain this is the output of
  each hidden `Dense`/`Conv` after its BatchNormalization/activation; a
  ResNet's residual stream is one group with one gate, called before every
  block that reads it. With `gate_features=True` a gate also selects the
  features that enter the first `Dense` layers (a `Flatten` output or a flat
  network input): the "784-300-100" and "20-50-800-500" unit counts of the
  papers.
- kernel-gate methods (`targeted_dropout`, `hard_concrete` with
  `level="weight"`) replace each hidden `Dense`/`Conv2D` by a
  `tfsparse.layers.SparseDense`/`SparseConv2D` whose kernel passes through
  the gate. Unit-level targeted dropout also gets a `ChannelKeepGate` on each
  channel group, where a unit gate would go: its hardening closes whole
  channels there (`Gate.group_keep_levels`).

Groups whose channels reach a model output (the classifier's) or a layer that
needs all of them (a LayerNormalization, a layer tfsparse does not know) are
left whole. Nested Sequential/Functional models are inlined. Trained weights
are copied; the original model is left untouched.
"""

from __future__ import annotations

import collections
import functools
import inspect
import re
from typing import Any

import keras

from tfsparse import _checks, _graph, defaults
from tfsparse import budget as budget_lib
from tfsparse.channels.groups import ChannelGroups
from tfsparse.channels.linear import LinearHandler
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, WEIGHT
from tfsparse.gates.channel_keep import ChannelKeepGate
from tfsparse.layers import SparseConv2D, SparseDense
from tfsparse.sparse_model import SparseModel

# The built-in methods (`tfsparse.gates.registry.methods()` also lists any
# family registered later).
METHODS = registry.methods()
BASE_ARGS = {"structure", "dataset_size", "group_size", "seed", "kwargs", "self", "units"}
# Accepted by every gate family (see Gate).
COMMON_SETTINGS = {"lr_multiplier"}


gate_class = registry.family
method_of = registry.method_of


def sparsify(
    model: keras.Model,
    method: str,
    *,
    dataset_size: int | None = None,
    target_flops: float | None = None,
    target_params: float | None = None,
    level: str | None = None,
    gate_features: bool = True,
    include_classifier: bool = False,
    group_by: str = "params",
    seed: int | None = None,
    verbose: int = 1,
    **settings: Any,
) -> SparseModel:
    """Returns a new `tfsparse.SparseModel`: `model` with `method`'s gates.

    Args:
        model: a built Sequential or Functional Keras model (nested
            Sequential/Functional models, e.g. a `keras.applications`
            network under a new head, are inlined).
        method: one of `"hard_concrete"`, `"npn"`, `"bb"`, `"dbb"`,
            `"targeted_dropout"`. `"dbb"` on a model that holds BB gates
            (a trained `sparsify(..., "bb")` model) replaces each BB gate by a
            DBB gate that starts from its posterior.
        dataset_size: number of training examples N; penalties are divided by
            it. Required by every method with a penalty.
        target_flops: a budget instead of a penalty weight: the fraction of
            the dense network's multiply-adds (0 < F ≤ 1) the compact model
            should keep (`tfsparse.budget`). For hard-concrete and NPN a
            Lagrangian on the expected cost replaces the L0 penalty (λ); BB
            and DBB keep their KL and add it; targeted dropout takes the
            fraction of units to drop from it (unit level). Train with a
            `SparsityScheduler`, which reaches the target by the end of the
            pruning stage and hardens there.
        target_params: the same for the number of weights.
        level: `"unit"` or `"weight"`. For `hard_concrete` (default "unit"),
            "weight" gates single kernel weights; for `targeted_dropout`
            (default "weight", "unit" under a budget) it picks weight- or
            unit-level dropout.
        gate_features: also gate the features entering the first Dense
            layers (network input or Flatten output).
        include_classifier: kernel-gate methods also gate the classifier.
        group_by: what a closed unit saves, the weight of its penalty:
            `"params"` (the papers: the kernel columns and biases that the
            unit owns in every layer that produces it, and its depthwise
            kernels) or `"flops"` (the same weights once per output position:
            a conv channel counts once per position, so a FLOPs budget prunes
            convolutions first).
        seed: base seed of the gates' random generators (gate i gets seed+i).
        verbose: 1 prints which channel groups were left whole and why (the
            classifier's aside) and, for kernel gates, which layers keep
            every weight and why; 2 also lists the gates; 0 prints nothing.
        **settings: the method's own settings, validated by its gate class;
            any left out is the library's recommendation
            (`tfsparse.defaults.RECOMMENDED`: e.g. hard-concrete λ = 0.05,
            gates learning 10× faster than the weights), not the gate
            class's paper default:
            `hard_concrete`: lam, init_drop_rate, temperature, per_example;
            `npn`: lam, k, k_plastic, mode, init_size (int, or list with one
            entry per hidden-unit gate), estimator;
            `bb`/`dbb`: see `tfsparse.gates.beta_bernoulli` and
            `tfsparse.gates.dependent_beta_bernoulli`;
            `targeted_dropout`: alpha, gamma, harden_fraction (`level` gives
            weight/unit); every method: lr_multiplier.
            hard-concrete's and NPN's `lam` may be a list, one λ per gate in
            the order the report lists them (the L0 paper's per-layer λ).

    Returns:
        A `tfsparse.SparseModel` (uncompiled) with the weights of `model`.

    Raises:
        TypeError: `model` is not a Sequential or Functional model.
        ValueError: a bad setting, or no gate can be placed in `model` (the
            message says why for each layer).

    Examples:
        >>> sparse = tfsparse.sparsify(model, "npn", dataset_size=60000, lam=0.1)
    """
    graph = _graph.flattened(model)
    family = registry.family(method)
    budget = budget_lib.check_target(target_flops, target_params)
    if level is None:  # a budget counts units, so it defaults to unit gates
        level = UNIT if budget is not None and UNIT in family.levels else family.levels[0]
    _checks.choice("level", level, (UNIT, WEIGHT))
    _checks.choice("group_by", group_by, ("params", "flops"))
    _checks.choice("verbose", verbose, (0, 1, 2))
    if level not in family.levels:
        raise ValueError(
            f"method={method!r} supports level="
            f"{' or '.join(repr(v) for v in family.levels)} only; got {level!r}."
        )
    _check_settings(method, family, settings)
    if budget is not None:
        settings = family.settings_under_budget(settings, level, budget[0])
    settings = defaults.with_recommended(
        method, settings, leave_out=family.budget_replaces if budget is not None else None
    )
    if family.needs_dataset_size:
        if dataset_size is None:
            raise ValueError(
                f"method={method!r} needs `dataset_size`, the number of "
                "training examples N (penalties are divided by it)."
            )
        _checks.number("dataset_size", dataset_size, low=1, integer=True)
    plan = _Plan(
        graph,
        method,
        family,
        level,
        dataset_size,
        gate_features,
        include_classifier,
        group_by,
        seed,
        settings,
    )
    plan.report(model.name, verbose)
    sparse = plan.build(model.name + "_sparse")
    if budget is not None:
        family.aim_at_budget(sparse, budget)
    return sparse


def _masks_whole_tensor(tensor, offset, repeat, units):
    """Whether a gate of `units` units, called on `tensor` at `offset` with
    each unit over `repeat` channels, masks every channel of it (an
    input-dependent gate must: its factor reads the whole input)."""
    return offset == 0 and repeat == 1 and units == tensor.shape[-1]


def check_settings(method: str, settings: dict[str, Any]) -> None:
    """Raises the error `sparsify(model, method, **settings)` would raise for
    an unknown setting, without a model (`RunConfig` checks its settings so,
    before any data is loaded)."""
    own = set(inspect.signature(sparsify).parameters) - {"model", "method", "settings"}
    _check_settings(method, registry.family(method), {k: settings[k] for k in set(settings) - own})


def _check_settings(method, gate_class, settings):
    accepted = set(inspect.signature(gate_class.__init__).parameters) - BASE_ARGS | COMMON_SETTINGS
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise TypeError(
            f"Unknown setting(s) {unknown} for method={method!r}; accepted: "
            f"{sorted(accepted)} (plus dataset_size, level, gate_features, "
            "include_classifier, group_by, seed, verbose)."
        )


class _Plan:
    """Decides where gates go, then rebuilds the graph with them."""

    def __init__(
        self,
        graph,
        method,
        gate_class,
        level,
        dataset_size,
        gate_features,
        include_classifier,
        group_by,
        seed,
        settings,
    ):
        self.graph = graph
        self.method = method
        self.gate_class = gate_class
        self.level = level
        self.dataset_size = dataset_size
        self.seed = seed
        self.group_by = group_by
        self.settings = dict(settings)
        self.kernel_gates = level in gate_class.kernel_levels
        self.groups = ChannelGroups(graph)
        self.users = self.groups.users
        self.include_classifier = include_classifier
        self.site_gates = collections.defaultdict(list)  # id(tensor) → [(gate, offset, repeat)]
        self.gated_edges = set()  # (id(tensor), id(reader node))
        self.replacements = {}  # id(op) → new layer that takes the op's place
        self.copies = []  # (new layer, old layer, how to copy)
        self.placed = []  # gate names, for the report
        self.channel_keeps = []  # ChannelKeepGates (unit-level kernel gates)
        self.kernel_left_out = {}  # layer name → why its kernel has no gate
        self._count = 0
        self._unit_gate_index = 0
        if gate_class.continues is not None and self._continue_previous_gates():
            if not self.placed:
                raise ValueError(
                    f"No {method!r} gate can continue this model's "
                    f"{gate_class.continues.method!r} gates: each is shared by several "
                    "inputs or masks part of its input, and a per-example gate reads "
                    "the whole of the one input it masks."
                )
            return
        if self.kernel_gates:
            self._place_kernel_gates()
            if level in gate_class.group_keep_levels:
                self._place_channel_keeps()
        else:
            self._place_unit_gates(gate_features)
        if not self.placed:
            raise ValueError(self._nothing_placed())
        for key in self.gate_class.per_gate_settings:
            values = self.settings.get(key)
            if isinstance(values, (list, tuple)) and len(values) != len(self.placed):
                raise ValueError(
                    f"`{key}` has {len(values)} entries, one per gate, but "
                    f"{len(self.placed)} gates were placed: {', '.join(self.placed)}."
                )
        for key in self.gate_class.per_hidden_gate_settings:
            values = self.settings.get(key)
            if isinstance(values, (list, tuple)) and len(values) != self._unit_gate_index:
                raise ValueError(
                    f"`{key}` has {len(values)} entries, one per hidden-unit gate, but "
                    f"the model has {self._unit_gate_index} hidden-unit gates."
                )

    # --------------------------------------------------------------- placing
    def _next_seed(self):
        self._count += 1
        return None if self.seed is None else self.seed + self._count - 1

    def _unit_gate(self, name, group_size, grows, units=None, several=False):
        """A unit gate; `grows`: hidden units, which NPN's expand mode grows
        (input features and attention heads all start open)."""
        settings = self.gate_class.site_settings(
            dict(self.settings), grows, self._unit_gate_index, site=len(self.placed)
        )
        if grows:
            self._unit_gate_index += 1
        self.placed.append(f"{name}_gate")
        make = self.gate_class.for_several_inputs if several else self.gate_class
        return make(
            dataset_size=self.dataset_size,
            group_size=group_size,
            seed=self._next_seed(),
            name=f"{name}_gate",
            units=units,
            **settings,
        )

    def _gate_edges(self, tensor, readers, gate, offset=0, repeat=1):
        self.site_gates[id(tensor)].append((gate, offset, repeat))
        self.gated_edges.update((id(tensor), id(node)) for node in readers)

    def _place_unit_gates(self, gate_features):
        first_producer = {id(g.producers[0]): g for g in self.groups.groups}
        calls = collections.Counter(id(n.operation) for n in _graph.nodes_in_order(self.graph))
        for node in _graph.nodes_in_order(self.graph):
            group = first_producer.get(id(node))
            handler = self.groups.handler[id(node)]
            if hasattr(handler, "gated_twin") and calls[id(node.operation)] == 1:
                self._gate_inside(node, handler)
            if group is not None:
                sites = list(group.sites.values())
                units = len(group.units)
                several = len(sites) > 1 or not _masks_whole_tensor(*sites[0][:3], units)
                gate = self._unit_gate(
                    group.name,
                    self._group_size(group),
                    True,
                    units=units,
                    several=several,
                )
                for tensor, offset, repeat, readers in sites:
                    self._gate_edges(tensor, readers, gate, offset, repeat)
            elif gate_features and handler.makes_flat_features:
                self._gate_features(node.operation.name, *node.outputs)
        if gate_features:
            for i, tensor in enumerate(self.graph.inputs):
                if len(tensor.shape) == 2:
                    self._gate_features(f"input_{i}", tensor)

    def _gate_features(self, name, tensor):
        """A gate on each feature of the flat `tensor`, if every layer that
        reads it can take one (its handler's `feature_rows`)."""
        readers = self.users.get(id(tensor), [])
        rows = [self.groups.handler[id(node)].feature_rows(node) for node in readers]
        if readers and None not in rows:
            self._gate_edges(tensor, readers, self._unit_gate(name, sum(rows), False))

    def _gate_inside(self, node, handler):
        """A gate on a layer's own units (an attention layer's heads): the
        layer is replaced by its gated twin."""
        op = node.operation
        weights, flops = handler.unit_cost(node)
        gate = self._unit_gate(
            f"{op.name}_heads",
            weights if self.group_by == "params" else flops,
            False,
            units=handler.inner_units(node),
            several=True,
        )
        twin = handler.gated_twin(op, gate)
        self.replacements[id(op)] = twin
        self.copies.append((twin, op, handler.copy_weights))

    def _group_size(self, group):
        index = 0 if self.group_by == "params" else 1
        handler = self.groups.handler
        return sum(
            handler[id(node)].unit_cost(node)[index] for node in group.producers + group.layers
        )

    def _place_kernel_gates(self):
        for node in _graph.nodes_in_order(self.graph):
            op = node.operation
            if id(op) in self.replacements or self.groups.handler[id(node)].role != "linear":
                continue
            if id(node) in self.groups.reaches_output and not self.include_classifier:
                continue
            twin = LinearHandler.kernel_gated(op, functools.partial(self._kernel_gate, op))
            if twin is None:
                self.kernel_left_out[op.name] = LinearHandler.no_kernel_twin(op)
            else:
                self.replacements[id(op)] = twin
                self.placed.append(twin.kernel_gate.name)

    def _place_channel_keeps(self):
        """A `ChannelKeepGate` on each channel group that a kernel-gated layer
        writes, called where a unit gate would be (before every reader)."""
        for group in self.groups.groups:
            if not any(id(node.operation) in self.replacements for node in group.producers):
                continue
            # A fixed seed: the gate draws nothing, and an unseeded generator
            # would take a seed from Python's `random` and shift later layers'.
            keep = ChannelKeepGate(units=len(group.units), seed=0, name=f"{group.name}_keep")
            self.channel_keeps.append(keep)
            for tensor, offset, repeat, readers in group.sites.values():
                self._gate_edges(tensor, readers, keep, offset, repeat)

    def _kernel_gate(self, op):
        return self.gate_class(
            structure=self.level,
            seed=self._next_seed(),
            name=f"{op.name}_kernel_gate",
            **self._kernel_settings(),
        )

    def _kernel_settings(self):
        settings = self.gate_class.one_site(self.settings, len(self.placed))
        if not self.gate_class.needs_dataset_size:
            return settings
        return {"dataset_size": self.dataset_size, **settings}

    def _continue_previous_gates(self):
        """Replaces the gates of the family this one continues (BB, for DBB)
        by gates that start from them; False where the model has none."""
        family = self.gate_class
        found = False
        calls = collections.Counter(id(n.operation) for n in _graph.nodes_in_order(self.graph))
        for node in _graph.nodes_in_order(self.graph):
            op = node.operation
            if type(op) is not family.continues:
                continue
            found = True
            if family.input_dependent and (
                calls[id(op)] > 1
                or not _masks_whole_tensor(
                    node.input_tensors[0],
                    _graph.node_kwarg(node, "offset", 0),
                    _graph.node_kwarg(node, "repeat", 1),
                    int(op.mask_shape[0]),
                )
            ):
                continue  # a per-example factor needs the one input it reads
            if id(op) in self.replacements:
                continue
            new = family.continuing(
                op, seed=self._next_seed(), name=f"{op.name}_{family.method}", **self.settings
            )
            self.replacements[id(op)] = new
            self.copies.append((new, op, lambda new, old: new.load_previous(old)))
            self.placed.append(new.name)
        if not found:
            self.settings = family.settings_from_scratch(self.settings)
        return found

    # ---------------------------------------------------------------- report
    def _nothing_placed(self):
        left = self.kernel_left_out if self.kernel_gates else self.groups.left_whole
        reasons = (
            "; ".join(f"{name!r}: {why}" for name, why in left.items())
            or "it has no Dense/Conv layer"
        )
        return (
            f"No {self.method!r} gate can be placed in this model. Channels can be "
            f"removed only where every layer that reads them can shrink. Left whole: "
            f"{reasons}."
        )

    def report(self, model_name, verbose):
        if verbose == 0:
            return
        classifier = "the channels reach a model output"
        whole = {name: why for name, why in self.groups.left_whole.items() if why != classifier}
        if verbose == 2:
            print(
                f"sparsify({model_name!r}, {self.method!r}): {len(self.placed)} gates: "
                + ", ".join(self.placed)
            )
        if whole and (not self.kernel_gates or self.channel_keeps):
            by_reason = collections.defaultdict(list)
            for name, why in whole.items():
                by_reason[re.sub(r" '[^']*'", "", why)].append(name)
            print(
                f"sparsify({model_name!r}): {len(self.placed)} gates; the outputs of "
                f"{len(whole)} layers keep all their channels: "
                + "; ".join(
                    f"{len(names)} because {why} ({', '.join(names[:2])}"
                    + (", ..." if len(names) > 2 else "")
                    + ")"
                    for why, names in by_reason.items()
                )
                + "."
            )

        if self.kernel_left_out:
            print(
                f"sparsify({model_name!r}): the kernels of {len(self.kernel_left_out)} "
                "layers keep every weight: "
                + "; ".join(f"{name} ({why})" for name, why in self.kernel_left_out.items())
                + "."
            )

    # -------------------------------------------------------------- building
    def _layer_for(self, op, clones):
        if id(op) in clones:
            return clones[id(op)]
        if id(op) in self.replacements:
            new = self.replacements[id(op)]
            if isinstance(new, (SparseDense, SparseConv2D)):
                self.copies.append((new, op, "kernel"))
        elif isinstance(op, keras.layers.Layer):
            new = op.__class__.from_config(op.get_config())
            self.copies.append((new, op, "all"))
        else:
            new = op  # a stateless keras.ops operation
        clones[id(op)] = new
        return new

    def build(self, name):
        inputs = _graph.rebuild_inputs(self.graph)
        tensors = {id(old): new for old, new in zip(self.graph.inputs, inputs)}
        gated, clones = {}, {}
        for node in _graph.nodes_in_order(self.graph):
            overrides = {}
            for tensor in node.input_tensors:
                if (id(tensor), id(node)) in self.gated_edges:
                    if id(tensor) not in gated:
                        gated[id(tensor)] = self._apply_gates(tensor, tensors[id(tensor)])
                    overrides[id(tensor)] = gated[id(tensor)]
            layer = self._layer_for(node.operation, clones)
            outputs = _graph.call_like(node, layer, collections.ChainMap(overrides, tensors))
            for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
                tensors[id(old)] = new
        outputs = [tensors[id(t)] for t in self.graph.outputs]
        model = _graph.make_model(self.graph, inputs, outputs, name, model_class=SparseModel)
        for new, old, how in self.copies:
            _copy_weights(new, old, how)
        return model

    def _apply_gates(self, tensor, value):
        for gate, offset, repeat in sorted(self.site_gates[id(tensor)], key=lambda g: g[1]):
            if (offset, repeat) == (0, 1) and gate.units in (None, tensor.shape[-1]):
                value = gate(value)
            else:
                value = gate(value, offset=offset, repeat=repeat)
        return value


def _copy_weights(new, old, how):
    if callable(how):
        how(new, old)
    elif how == "all":
        new.set_weights(old.get_weights())
    elif how == "kernel":
        new.kernel.assign(old.kernel)
        if old.use_bias:
            new.bias.assign(old.bias)
