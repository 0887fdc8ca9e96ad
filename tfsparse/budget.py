"""Budgets: a target cost instead of a penalty weight.

`sparsify(model, method, dataset_size=N, target_flops=F)` asks for a model
that keeps a fraction F of the dense multiply-adds (`target_params`: of the
weights). Two pieces make that happen:

- `CostModel`: the cost that `tfsparse.summary` counts, as a differentiable
  function of the gates' open probabilities (`Gate.open_probability()`): every
  layer's cost is a sum of `tfsparse.channels.base.Term`s, products of the
  expected numbers of kept input and output units (a convolution's
  multiply-adds are taps × positions × E[kept inputs] × E[kept outputs]).
  With every unit kept it is the dense count; with the gates' deterministic
  masks it is what the compact model costs.
- A Lagrangian (Wang et al. 2020, "Structured Pruning of Large Language
  Models"; CoFi, Xia et al. 2022): the loss gets λ₁·(c − t) + λ₂·max(c − t, 0)²,
  where c is the expected cost as a fraction of the dense cost and t the
  target, and the multipliers λ₁, λ₂ are trained by gradient *ascent*
  (`SparseModel.train_step` negates their gradients). The budget is an
  upper bound: while the model is over it λ₁ grows and pushes the gates
  closed; within it λ₁ is set back to 0 (dual restarts, Gallego-Posada et
  al. 2022), so no multiplier pulls closed units open, and the square
  counts only the excess. The term's value is the expected cost, but
  its pull on each unit is the unit's cost in the dense network
  (`CostModel.constraint`), as the L0 paper weighs a unit by the weights it
  carries: the expected cost's own gradient shifts as layers shrink (a unit's
  price is the kept width of its neighbours), which let NPN starve one layer
  and keep its neighbour whole. The target is lowered from 1 to t over a
  warm-up (the scheduler assigns it), and at hardening the units with the
  lowest keep scores (`Gate.keep_score`) are closed until the
  deterministic cost is within the target (`CostModel.project`), so the compact model meets it.

For hard-concrete and NPN the Lagrangian replaces the L0 penalty (λ is set
to 0); Beta-Bernoulli keeps its KL (its prior is the method) and the
Lagrangian adds the budget's pull; DBB's cost counts the per-example factor
of an average example. Targeted dropout has no learned gates: its γ is set
from the target directly (`uniform_drop_rate`).
"""

import numpy as np
from keras import ops

from tfsparse import _checks, _graph
from tfsparse.channels.base import GATE
from tfsparse.channels.groups import ChannelGroups
from tfsparse.gates import registry
from tfsparse.gates.base import UNIT, Gate

KINDS = ("flops", "params")


def check_target(target_flops, target_params):
    """(kind, fraction) of a budget, or None; errors name the argument."""
    if target_flops is not None and target_params is not None:
        raise ValueError("Give `target_flops` or `target_params`, not both.")
    for name, value in (("target_flops", target_flops), ("target_params", target_params)):
        if value is not None:
            _checks.number(name, value, low=0, high=1, low_open=True)
            return name[len("target_") :], float(value)
    return None


class CostModel:
    """The expected cost of a gated model (see the module docstring).

    Args:
        model: a Sequential or Functional model with unit gates (nested
            models are not supported: sparsify's models are flat).
        kind: `"flops"` (multiply-adds per example) or `"params"` (weights).

    Attributes:
        gates: the unit gates, in the order of the probability vector.
        dense: the cost with every unit kept.
    """

    def __init__(self, model, kind="flops"):
        self.kind = _checks.choice("kind", kind, KINDS)
        graph = _graph.functional_of(model)
        if _graph.has_nested_models(graph):
            raise ValueError(
                "A budget needs a flat model (tfsparse.sparsify returns one); "
                f"{model.name!r} holds nested models."
            )
        self.groups = ChannelGroups(graph)
        self._layout_gates()
        self._layout_channels()
        self._collect_terms()
        self.dense = float(self._evaluate_numpy(np.ones(self.size)))
        self._pull = self.dense_marginals() / self.dense

    # ------------------------------------------------------------ layout
    def _layout_gates(self):
        """Index 0 of the probability vector is the constant 1; each unit
        gate's units follow in graph order."""
        self.gates, self.start, position = [], {}, 1
        for node in self.groups.nodes:
            handler = self.groups.handler[id(node)]
            found = [node.operation] if handler.role == GATE else []
            for gate in found + list(handler.inner_gates(node)):
                if id(gate) not in self.start and gate.structure == UNIT:
                    self.gates.append(gate)
                    self.start[id(gate)] = position
                    position += int(gate.mask_shape[0])
        self.size = position

    def _layout_channels(self):
        """`source[t]`, `extra[t]`: for each channel of tensor t, the index of
        the probability that keeps it: its unit's gate (a gate that owns the
        channel group), and a feature gate it passed through (a gate over
        single features of a flattened tensor), 0 where none."""
        owner = {}
        self.extra = {}
        for node in self.groups.nodes:
            if self.groups.handler[id(node)].role != GATE:
                continue
            index = self._gate_indices(node)
            comps = self.groups.comps(node.input_tensors[0])
            covered = index > 0
            units = {}
            for comp, i in zip(comps[covered].tolist(), index[covered].tolist()):
                units.setdefault(comp, set()).add(i)
            if all(len(v) == 1 for v in units.values()) and len(units) == len(
                set(index[covered].tolist())
            ):
                owner.update({comp: i.pop() for comp, i in units.items()})
            else:
                self.extra[id(node.outputs[0])] = index
        self._propagate_extra()
        self.owner = owner

    def _gate_indices(self, node):
        """Per input channel of a gate call, the index of its unit (0 outside)."""
        from tfsparse.channels.gate import coverage

        (x,), gate = node.input_tensors, node.operation
        offset, repeat = coverage(node)
        units = int(gate.mask_shape[0])
        index = np.zeros(int(x.shape[-1]), int)
        index[offset : offset + units * repeat] = self.start[id(gate)] + np.repeat(
            np.arange(units), repeat
        )
        return index

    def _propagate_extra(self):
        for node in self.groups.nodes:
            handler = self.groups.handler[id(node)]
            if handler.role not in ("map", GATE) or len(node.outputs) != 1:
                continue
            links = handler.links(node)
            if len(links) != 1 or id(links[0][0]) not in self.extra:
                continue
            ((x, src),) = links
            out = np.where(src >= 0, self.extra[id(x)][np.maximum(src, 0)], 0)
            if id(node.outputs[0]) in self.extra:  # a second feature gate: keep both
                continue
            self.extra[id(node.outputs[0])] = out

    def channel_indices(self, tensor):
        """(primary, extra): for each channel of `tensor`, the indices in the
        probability vector whose product is the chance it is kept."""
        return self._indices((tensor, None))

    def _indices(self, selection):
        """(probability indices, extra indices) of one selection."""
        what, picked = selection
        if isinstance(what, Gate):
            units = np.arange(int(what.mask_shape[0]))
            primary = self.start[id(what)] + (units if picked is None else units[picked])
            return primary, np.zeros_like(primary)
        comps = self.groups.comps(what)
        primary = np.array([self.owner.get(c, 0) for c in comps.tolist()], dtype=int)
        extra = self.extra.get(id(what), np.zeros(len(comps), int))
        if picked is not None:
            primary, extra = primary[picked], extra[picked]
        return primary, extra

    # ------------------------------------------------------------- terms
    def _collect_terms(self):
        primary, extra, segments, coefficients, left, right = [], [], [], [], [], []
        count = 0
        for node in self.groups.nodes:
            for term in self.groups.handler[id(node)].cost_terms(node):
                ids = []
                for selection in term.selections:
                    p, e = self._indices(selection)
                    primary.append(p)
                    extra.append(e)
                    segments.append(np.full(len(p), count))
                    ids.append(count)
                    count += 1
                ids += [-1] * (2 - len(ids))
                left.append(ids[0])
                right.append(ids[1])
                coefficients.append(term.flops if self.kind == "flops" else term.weights)
        self.primary = np.concatenate(primary) if primary else np.zeros(0, int)
        self.extra_index = np.concatenate(extra) if extra else np.zeros(0, int)
        self.segments = np.concatenate(segments) if segments else np.zeros(0, int)
        self.selections = count
        # -1 (no selection) reads the appended constant 1.
        self.left = np.where(np.array(left, int) < 0, count, left)
        self.right = np.where(np.array(right, int) < 0, count, right)
        self.coefficients = np.array(coefficients, "float64")

    # -------------------------------------------------------- evaluation
    def probabilities(self):
        """The probability vector: 1, then every gate's open probabilities
        (a hardened gate's frozen mask: after the projection at hardening the
        gates' own probabilities no longer say what is kept)."""
        return ops.concatenate(
            [ops.ones((1,), "float32")]
            + [
                ops.reshape(
                    ops.where(
                        g.hardened > 0,
                        ops.cast(g.hard_mask > 0, "float32"),
                        ops.cast(g.open_probability(), "float32"),
                    ),
                    (-1,),
                )
                for g in self.gates
            ],
            axis=0,
        )

    def expected(self):
        """The expected cost (a float32 tensor, differentiable in the gates)."""
        return self._expected_of(self.probabilities())

    def _expected_of(self, p):
        kept = ops.take(p, self.primary) * ops.take(p, self.extra_index)
        sums = ops.segment_sum(kept, self.segments, num_segments=self.selections)
        sums = ops.concatenate([sums, ops.ones((1,), "float32")], axis=0)
        terms = ops.take(sums, self.left) * ops.take(sums, self.right)
        return ops.sum(ops.convert_to_tensor(self.coefficients, "float32") * terms)

    def dense_marginals(self):
        """∂c/∂p with every unit kept: what each unit costs in the dense
        network (index 0, the constant, is 0). The cost is a sum of products
        of sums linear in p (see `expected`), so at p = 1 each selection's
        derivative is its partner's size times the term's coefficient."""
        size = np.bincount(self.segments, minlength=self.selections).astype("float64")
        size = np.append(size, 1.0)
        per_selection = np.zeros(self.selections + 1)
        np.add.at(per_selection, self.left, self.coefficients * size[self.right])
        np.add.at(per_selection, self.right, self.coefficients * size[self.left])
        weight = per_selection[self.segments]
        marginals = np.bincount(self.primary, weights=weight, minlength=self.size)
        marginals += np.bincount(self.extra_index, weights=weight, minlength=self.size)
        marginals[0] = 0.0
        return marginals

    def constraint(self):
        """What the Lagrangian constrains: the expected cost as a fraction,
        whose gradient in the gates is each unit's dense cost
        (`dense_marginals`) in place of its own (see the module docstring)."""
        p = self.probabilities()
        cost = self._expected_of(p) / self.dense
        pull = ops.sum(ops.convert_to_tensor(self._pull, "float32") * p)
        return ops.stop_gradient(cost) + pull - ops.stop_gradient(pull)

    def _evaluate_numpy(self, p):
        kept = p[self.primary] * p[self.extra_index]
        sums = np.bincount(self.segments, weights=kept, minlength=self.selections)
        sums = np.append(sums, 1.0)
        return float(np.sum(self.coefficients * sums[self.left] * sums[self.right]))

    def deterministic(self):
        """(probability vector of the kept units, its cost as a fraction)."""
        p = self._per_unit(1.0, lambda gate: gate.active())
        return p, self._evaluate_numpy(p) / self.dense

    def _per_unit(self, constant, value_of):
        """A numpy vector laid out as the probability vector: `constant` at
        index 0, then `value_of(gate)` for every gate's units."""
        return np.concatenate(
            [[constant]]
            + [
                np.asarray(ops.convert_to_numpy(value_of(g)), "float64").reshape(-1)
                for g in self.gates
            ]
        )

    def project(self, target):
        """The units to keep so that the deterministic cost is as close to
        `target` (a fraction) as possible from below. Over the target, the
        kept units with the lowest `Gate.keep_score` are closed until it is
        met, never a gate's last kept unit (a gate closed whole cuts the
        network); then the closed units are reopened, highest score first,
        each one that still fits the target. A gate that training closed
        whole first gets its best unit back, for the same reason. Returns one
        bool array per gate."""
        kept, _ = self.deterministic()
        score = self._keep_scores()
        kept = self._reopen_closed_gates(kept, score)
        if self._fraction(kept) > target:
            kept = self._close_until_within(kept, score, target)
        return self._reopen_what_fits(kept, score, target)

    def _reopen_closed_gates(self, kept, score):
        """`kept` with the highest-scoring unit of every gate that keeps none."""
        kept = kept.copy()
        for gate in self.gates:
            units = self._units_of(gate)
            if not np.any(kept[units] > 0):
                kept[units[np.argmax(score[units])]] = 1.0
        return kept

    def _keep_scores(self):
        """Every gate's `keep_score`; the constant at index 0 is never closed."""
        return self._per_unit(np.inf, lambda gate: gate.keep_score())

    def _units_of(self, gate):
        """The indices of `gate`'s units in the probability vector."""
        return self.start[id(gate)] + np.arange(int(gate.mask_shape[0]))

    def _last_kept_units(self, kept, score):
        """Each gate's kept unit with the highest score (none where the gate
        keeps nothing already)."""
        last = []
        for gate in self.gates:
            units = self._units_of(gate)
            open_units = units[kept[units] > 0]
            if len(open_units):
                last.append(open_units[np.argmax(score[open_units])])
        return np.array(last, int)

    def _fraction(self, kept):
        return self._evaluate_numpy(kept) / self.dense

    def _close_until_within(self, kept, score, target):
        """Closes the fewest lowest-scoring units that bring the cost within
        `target` (the cost falls as units close: a bisection), leaving every
        gate its best kept unit."""
        order = np.setdiff1d(np.flatnonzero(kept[1:] > 0) + 1, self._last_kept_units(kept, score))
        order = order[np.argsort(score[order], kind="stable")]

        def closed(count):
            trial = kept.copy()
            trial[order[:count]] = 0.0
            return trial

        low, high = 0, len(order)
        while low < high:
            middle = (low + high) // 2
            low, high = (
                (low, middle) if self._fraction(closed(middle)) <= target else (middle + 1, high)
            )
        return closed(low)

    def _reopen_what_fits(self, kept, score, target):
        """Reopens closed units, highest keep score first, skipping any that
        would take the cost over `target`. Skipping (not stopping) matters when
        units differ in cost: with 4 of a first layer's 32 channels kept, one
        more of them adds a quarter of the next layer's cost, while that
        layer's own channels each add a few thousandths; stopping at the
        first misfit left a convnet 10-18 % under its budget."""
        kept = kept.copy()
        closed = np.flatnonzero(kept[1:] <= 0) + 1
        for index in closed[np.argsort(-score[closed], kind="stable")]:
            kept[index] = 1.0
            if self._fraction(kept) > target:
                kept[index] = 0.0
        return [kept[self._units_of(g)] > 0 for g in self.gates]


def uniform_drop_rate(model, target, kind, shrinkable, method):
    """The fraction γ of the units of every channel group that can shrink
    (the groups that a `shrinkable` gate covers) whose dropping keeps
    `target` of the dense cost: of the layers whose inputs and outputs both
    shrink the cost scales as (1 − γ)², of the others as 1 − γ. `method`
    (the caller's, e.g. targeted dropout's, which sets its γ from it) names
    itself in the errors."""
    groups = ChannelGroups(_graph.functional_of(model))
    owned = set()
    for node in groups.nodes:
        if isinstance(node.operation, shrinkable):
            owned.update(groups.gate_units(node).tolist())
    if not owned:
        raise ValueError(
            f"No channel group of the model can shrink, so no {method} rate "
            "meets a budget (a group is left whole where its channels reach a model "
            "output or a layer that needs all of them)."
        )
    fixed, linear, square = 0.0, 0.0, 0.0
    for node in groups.nodes:
        for term in groups.handler[id(node)].cost_terms(node):
            coefficient = term.flops if kind == "flops" else term.weights
            ends = [sel for sel in term.selections if not isinstance(sel[0], Gate)]
            shrunk = sum(bool(set(groups.comps(t).tolist()) & owned) for t, _ in ends)
            size = np.prod([len(groups.comps(t)) for t, _ in ends]) if ends else 1
            if shrunk == 0:
                fixed += coefficient * size
            elif shrunk == 1:
                linear += coefficient * size
            else:
                square += coefficient * size
    total = fixed + linear + square
    # With every shrinkable unit gone the cost is `fixed`: a target at or
    # below it has no rate (the bisection would end at γ = 1, every unit).
    if target <= fixed / total:
        cost = "FLOPs" if kind == "flops" else "weights"
        others = ", ".join(m for m in registry.methods() if m != method)
        raise ValueError(
            f"target_{kind}={target} is out of reach of unit-level {method} on "
            f"this model: the layers whose units it cannot remove (attention heads, and channels "
            f"that reach a layer needing all of them) cost {fixed / total:.3f} of the dense "
            f"{cost}. Pass a target above that, or a method whose gates reach them "
            f"({others})."
        )
    low, high = 0.0, 1.0
    for _ in range(50):  # bisection on the kept fraction k = 1 − γ
        k = (low + high) / 2
        if (fixed + linear * k + square * k * k) / total > target:
            high = k
        else:
            low = k
    return 1.0 - low
