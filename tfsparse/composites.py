"""Composite layers: one Keras layer that holds a whole block.

`keras_hub.layers.TransformerEncoder` is a single layer whose attention,
normalizations and feed-forward `Dense`s are attributes, so a graph that
contains it shows none of the heads or units inside. `tfsparse._graph.flattened`
replays every composite layer this module knows as the plain Keras layers it
is made of, with the same weights (copies; the model is not touched), and
`sparsify` then gates its heads and feed-forward units like any block.
keras-hub is optional: a layer is recognized by its class, never imported.
"""

import keras


def unroller(op):
    """`unroll(layer, args, kwargs, copy) -> output tensor` for a composite
    layer `op`, or None. `copy(sublayer, name)` returns the copy of a
    sublayer that the replayed graph calls (its weights are copied later)."""
    for matches, unroll in _UNROLLERS:
        if matches(op):
            return unroll
    return None


def _is_keras_hub_encoder(op):
    cls = type(op)
    return cls.__name__ == "TransformerEncoder" and cls.__module__.startswith("keras_hub.")


def _keras_hub_encoder(layer, args, kwargs, copy):
    """`keras_hub.layers.TransformerEncoder` (post- or pre-norm) as
    `{name}_attention` (MultiHeadAttention) → `_dropout1` → `_add1`, and
    `{name}_fc1` (Dense, activation) → `_fc2` → `_dropout2` → `_add2`, with
    `_norm1`/`_norm2` (LayerNormalization) before each branch
    (`normalize_first`) or after each sum: the computation of its `call`."""
    masks = [k for k in ("padding_mask", "attention_mask") if kwargs.get(k) is not None]
    if len(args) != 1 or masks or kwargs.get("return_attention_scores"):
        raise ValueError(
            f"tfsparse replays keras_hub TransformerEncoder {layer.name!r} only when it is "
            "called on one tensor without padding_mask, attention_mask or "
            f"return_attention_scores; got {len(args)} inputs and {masks or 'no masks'}."
        )
    (x,) = args
    name = layer.name
    pre_norm = layer.normalize_first
    norm1 = copy(layer._self_attention_layer_norm, f"{name}_norm1")
    norm2 = copy(layer._feedforward_layer_norm, f"{name}_norm2")

    residual = x
    x = norm1(x) if pre_norm else x
    attention = copy(layer._self_attention_layer, f"{name}_attention")
    x = attention(x, x)
    x = copy(layer._self_attention_dropout, f"{name}_dropout1")(x)
    x = keras.layers.Add(name=f"{name}_add1")([x, residual])
    x = x if pre_norm else norm1(x)

    residual = x
    x = norm2(x) if pre_norm else x
    x = copy(layer._feedforward_intermediate_dense, f"{name}_fc1")(x)
    x = copy(layer._feedforward_output_dense, f"{name}_fc2")(x)
    x = copy(layer._feedforward_dropout, f"{name}_dropout2")(x)
    x = keras.layers.Add(name=f"{name}_add2")([x, residual])
    return x if pre_norm else norm2(x)


_UNROLLERS = ((_is_keras_hub_encoder, _keras_hub_encoder),)
