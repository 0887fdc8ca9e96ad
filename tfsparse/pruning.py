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

from tfsparse import _checks
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
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, PRUNABLE)
    ]
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
    0 and `tfsparse.compact` can take it out. Counts are floors, as in the
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
    for layer in layers:
        _check_layer(layer)
    for layer in layers:
        _prune_layer(layer, float(rate), level)
    return model


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
        keep = np.broadcast_to(column_keep, matrix.shape)
    kernel = np.asarray(layer.kernel).reshape(-1, units) * keep
    layer.kernel.assign(kernel.reshape(shape).astype(layer.kernel.dtype))
    if column_keep is not None and getattr(layer, "bias", None) is not None:
        layer.bias.assign(np.asarray(layer.bias) * column_keep)
    gate = getattr(layer, "kernel_gate", None)
    if gate is None:
        return
    if gate.structure == WEIGHT:
        gate.hold_pruned(keep.reshape(shape))
    elif column_keep is not None:
        gate.hold_pruned(column_keep)
    # else: a unit-level gate cannot hold single weights
