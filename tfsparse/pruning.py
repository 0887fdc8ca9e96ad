"""Post-hoc magnitude pruning, the evaluation of targeted dropout.

`prune_by_magnitude` sets the smallest weights (or the weakest units) of a
trained model to exact zeros, with the rule of the targeted-dropout paper and
its official code (for-ai/TD, `scripts/prune/prune.py`):

- weight level: the kernel is viewed as [rows, units] (a conv kernel
  [kh, kw, in, out] as [kh·kw·in, out]) and *each column* loses its
  ⌊rate·rows⌋ weights of smallest |w| (per column, not one threshold per
  layer or per network);
- unit level: the ⌊rate·units⌋ columns of smallest L2 norm are removed.

It works on plain Keras `Dense`/`Conv2D` layers (magnitude pruning as in the
TF Model Optimization Toolkit's one-shot baseline) and on
`tfsparse.layers.SparseDense`/`SparseConv2D`.
"""

from __future__ import annotations

import keras
import numpy as np

from tfsparse import _checks, _graph
from tfsparse.gates.base import UNIT, WEIGHT
from tfsparse.gates.targeted_dropout import candidate_count
from tfsparse.layers import SparseConv2D, SparseDense, effective_kernel

LEVELS = (WEIGHT, UNIT)
PRUNABLE = (keras.layers.Dense, keras.layers.Conv2D, SparseDense, SparseConv2D)


def prunable_layers(model, include_classifier=False):
    """The `Dense`/`Conv2D`/`SparseDense`/`SparseConv2D` layers of `model`
    (nested models included), in layer order.

    The classifier is the *last* of them in that order (the output layer of
    a Sequential or of a single-output Functional model); it is left out
    unless `include_classifier=True`.
    """
    if isinstance(model, PRUNABLE):
        return [model]
    layers = [layer for layer in _graph.all_layers(model) if isinstance(layer, PRUNABLE)]
    if layers and not include_classifier:
        layers = layers[:-1]
    return layers


def prune_by_magnitude(
    model: keras.Model, rate: float, level: str = WEIGHT, include_classifier: bool = False
) -> keras.Model:
    """Prunes `model` in place by weight magnitude and returns it.

    Weight level: in every column of every prunable kernel (viewed as
    [rows, units]; a conv kernel [kh, kw, in, out] as [kh·kw·in, out]), the
    ⌊rate·rows⌋ weights with the smallest |w| become exact zeros. Unit level:
    the ⌊rate·units⌋ columns with the smallest L2 norm become zero, and so do
    their biases, so that a unit whose activation maps 0 to 0 outputs exactly
    0 and `tfsparse.compact` can take it out (in a model where `sparsify`
    put ChannelKeepGates, unit-level targeted dropout's, the units are ranked
    per channel group instead: `prune_unit_groups`, so that a residual stream
    or a BatchNormalized layer loses whole channels). Counts are floors, as in the
    official code (`int(rate·n)`); ties are broken by position so the counts
    are exact. Zeros already in a kernel rank first, so pruning at 0.5 and then
    at 0.75 gives the same zeros as pruning at 0.75.

    Gated layers are ranked by their effective kernel (the kernel times the
    gate's inference mask). The gate of a `SparseDense`/`SparseConv2D` is
    told what was pruned (`Gate.hold_pruned`): a `TargetedDropoutGate` sets
    its `keep` mask (and its frozen `hard_mask`, if hardened) to 0 there, so
    the pruned weights stay zero if training continues; a unit-level gate
    cannot hold single weights, so weight-level pruning only zeroes its
    kernel.

    The model is changed *in place* (and returned for chaining): pruning is an
    evaluation step on a trained model, a copy would have to rebuild layers
    (Functional, Sequential and subclassed models alike) for no gain, and the
    weights are cheap to save. To sweep several rates, save and restore them
    (`keep` is among them):

    >>> weights = model.get_weights()
    >>> for rate in (0.5, 0.75, 0.9):
    ...     model.set_weights(weights)
    ...     prune_by_magnitude(model, rate)
    ...     print(rate, model.evaluate(x_test, y_test, verbose=0))

    Scope: every `Dense`, `Conv2D`, `SparseDense` and `SparseConv2D` layer
    except the classifier (the last one in layer order) unless
    `include_classifier=True`. The official code never prunes the classifier
    either (its `is_prunable_weight` skips variables named "logit"; it also
    skips names containing "fc", which spares LeNet's fully connected layers
    but not VGG's hidden dense layers: a naming accident, not a rule, so every
    hidden layer is pruned here). Biases are pruned only at unit level; the
    official code never touches them.

    Args:
        model: a built Keras model (or a single prunable layer).
        rate: fraction in [0, 1] of each column's weights (weight level) or of
            each layer's units (unit level) to remove.
        level: `"weight"` or `"unit"`.
        include_classifier: also prune the last prunable layer.

    Returns:
        `model` itself, pruned.

    References:
        - [Gomez et al., 2019. Learning Sparse Networks Using Targeted
          Dropout](https://arxiv.org/abs/1905.13678)
    """
    _checks.number("rate", rate, low=0, high=1)
    _checks.choice("level", level, LEVELS)
    if not isinstance(include_classifier, bool):
        raise TypeError(f"`include_classifier` must be a bool; got {include_classifier!r}.")
    layers = prunable_layers(model, include_classifier)
    if level == UNIT and _holders_of_channel_keeps(model):
        return prune_unit_groups(model, lambda layer: rate, layers)
    for layer in layers:
        _check_layer(layer)
    for layer in layers:
        _prune_layer(layer, float(rate), level)
    return model


def prune_unit_groups(
    model: keras.Model, rate_of, layers=None, removable_only: bool = False
) -> keras.Model:
    """Unit-level magnitude pruning of channel groups, in place: what
    hardening unit-level targeted dropout removes.

    Where `sparsify` put a `ChannelKeepGate` on a channel group (the channels
    of one or more layers together with every tensor that carries them:
    through BatchNormalization, depthwise convolutions, residual sums), the
    group loses its ⌊rate·units⌋ units of smallest L2 norm, the norm taken
    over the kernel columns of every pruned layer that writes the unit (for a
    group with one producer, the paper's per-layer rule). The gate closes
    them, so every layer that reads the group through its kernel sees 0 there
    and `tfsparse.compact` removes them; the producers' columns and biases
    are zeroed and held there by their gates. A layer whose channels belong
    to no such group (the classifier, channels a LayerNormalization reads) is
    pruned on its own, as `prune_by_magnitude` prunes every layer of a model
    without groups. `prune_by_magnitude(model, rate, level="unit")` comes
    here when `model` has ChannelKeepGates.

    Args:
        model: a model built by `tfsparse.sparsify` with unit-level kernel
            gates (or a model that holds one).
        rate_of: function of a layer → its fraction of units to remove; a
            group removes the largest fraction among its producers.
        layers: the layers to prune (default: `prunable_layers(model)`, every
            Dense/Conv layer but the classifier).
        removable_only: leave whole the layers whose units belong to no
            group, where the model has groups: `sparsify` found that no
            compaction removes those units (they reach a LayerNormalization,
            say), so zeroing them would cost accuracy and save nothing.
            Hardening passes True; a budget's rate prices them as kept.

    Returns:
        `model` itself, pruned.
    """
    layers = prunable_layers(model) if layers is None else list(layers)
    for layer in layers:
        _check_layer(layer)
    chosen = {id(layer) for layer in layers}
    grouped = set()
    holders = _holders_of_channel_keeps(model)
    for owner in holders:
        grouped |= _prune_groups(owner, rate_of, chosen)
    if removable_only and holders:
        return model
    for layer in layers:
        if id(layer) not in grouped:
            _prune_layer(layer, float(rate_of(layer)), UNIT)
    return model


def _prune_groups(owner, rate_of, chosen):
    """Closes the weakest units of each group `owner`'s ChannelKeepGates
    cover, ranked over the `chosen` layers that write them; returns the ids
    of the layers whose columns it zeroed."""
    from tfsparse.channels.groups import ChannelGroups
    from tfsparse.gates.channel_keep import ChannelKeepGate

    groups = ChannelGroups(_graph.functional_of(owner))
    producers = [node for node in groups.nodes if id(node.operation) in chosen]
    columns = {id(node): groups.comps(node.outputs[0]) for node in producers}
    energy = {}  # component → Σ of its squared column norms over the producers
    for node in producers:
        units = node.operation.kernel.shape[-1]
        norms = np.square(effective_kernel(node.operation).reshape(-1, units)).sum(axis=0)
        for comp, value in zip(columns[id(node)].tolist(), norms):
            energy[comp] = energy.get(comp, 0.0) + float(value)
    closed, covered = set(), set()
    for node in groups.nodes:
        gate = node.operation
        if not isinstance(gate, ChannelKeepGate):
            continue
        comps = groups.gate_units(node)
        units = len(comps)
        writers = [n for n in producers if np.isin(columns[id(n)], comps).any()]
        if not writers:
            continue  # no layer being pruned writes the group
        rate = max(float(rate_of(n.operation)) for n in writers)
        # A unit none of them writes cannot be ranked: it stays.
        norms = np.sqrt([energy.get(c, np.inf) for c in comps.tolist()])
        shut = np.zeros(units, bool)
        shut[np.argsort(norms, kind="stable")[: candidate_count(rate, units)]] = True
        gate.close(shut)
        closed.update(comps[shut].tolist())
        covered.update(comps.tolist())
    done = set()
    for node in producers:
        comps = columns[id(node)]
        if np.isin(comps, list(covered)).any():
            _zero_columns(node.operation, ~np.isin(comps, list(closed)))
            done.add(id(node.operation))
    return done


def _holders_of_channel_keeps(model):
    """`model` and the models inside it that hold ChannelKeepGates directly."""
    from tfsparse.gates.channel_keep import ChannelKeepGate

    if not isinstance(model, keras.Model):
        return []
    candidates = [model] + [
        layer for layer in _graph.all_layers(model) if isinstance(layer, keras.Model)
    ]
    return [m for m in candidates if any(isinstance(layer, ChannelKeepGate) for layer in m.layers)]


def magnitude_sparsity(model: keras.Model, include_classifier: bool = True) -> dict[str, float]:
    """Fraction of exactly-zero weights in each prunable layer's effective
    kernel (kernel × the gate's inference mask for gated layers).

    Returns:
        Dict layer name → fraction of zeros in [0, 1].
    """
    return {
        layer.name: float(np.mean(effective_kernel(layer) == 0))
        for layer in prunable_layers(model, include_classifier)
    }


# --------------------------------------------------------------------- helpers
def _check_layer(layer):
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built; call the model on data "
            "(or build it) before pruning."
        )
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.name!r} uses LoRA or quantization; magnitude "
            "pruning needs a plain float kernel."
        )


def _prune_layer(layer, rate, level):
    shape = tuple(layer.kernel.shape)
    units = shape[-1]
    matrix = effective_kernel(layer).reshape(-1, units)
    rows = matrix.shape[0]
    if level == WEIGHT:
        count = candidate_count(rate, rows)
        order = np.argsort(np.abs(matrix), axis=0, kind="stable")
        keep = np.ones(matrix.shape, dtype=bool)
        np.put_along_axis(keep, order[:count], False, axis=0)
        column_keep = None
    else:
        count = candidate_count(rate, units)
        order = np.argsort(np.linalg.norm(matrix, axis=0), kind="stable")
        column_keep = np.ones(units, dtype=bool)
        column_keep[order[:count]] = False
        _zero_columns(layer, column_keep)
        return
    kernel = np.asarray(layer.kernel).reshape(-1, units) * keep
    layer.kernel.assign(kernel.reshape(shape).astype(layer.kernel.dtype))
    gate = getattr(layer, "kernel_gate", None)
    if gate is not None and gate.structure == WEIGHT:
        gate.hold_pruned(keep.reshape(shape))
    # else: a unit-level gate cannot hold single weights


def _zero_columns(layer, column_keep):
    """Zeroes the kernel columns and biases of the units not in `column_keep`
    and tells the layer's gate (which holds them at zero)."""
    shape = tuple(layer.kernel.shape)
    kernel = np.asarray(layer.kernel).reshape(-1, shape[-1]) * column_keep
    layer.kernel.assign(kernel.reshape(shape).astype(layer.kernel.dtype))
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.asarray(layer.bias) * column_keep)
    gate = getattr(layer, "kernel_gate", None)
    if gate is not None:
        # `hold_pruned` takes the gate's mask shape.
        kept = np.broadcast_to(column_keep, kernel.shape).reshape(shape)
        gate.hold_pruned(column_keep if gate.structure == UNIT else kept)
