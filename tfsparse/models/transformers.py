"""Small transformer encoders: a vision transformer for 28x28 / 32x32 images
and a text classifier, built from Keras' `MultiHeadAttention`."""

import keras
from keras import layers, ops

from tfsparse.models._common import check_image_shape, gate_for


@keras.saving.register_keras_serializable(package="tfsparse")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector per position to a `(batch, positions, channels)` input.

    Args:
        stddev: standard deviation of the initial vectors.
    """

    def __init__(self, stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=tuple(input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=self.stddev),
        )

    def call(self, inputs):
        return inputs + ops.cast(self.table, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


def _encoder_block(x, name, heads, mlp_dim, dropout, gate_factory):
    """Pre-norm block: x + MHA(LN(x)), then x + FFN(LN(x))."""
    dim = int(x.shape[-1])
    h = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    h = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, name=f"{name}_attention")(
        h, h
    )
    x = layers.Add(name=f"{name}_add1")([x, h])
    h = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    h = layers.Dense(mlp_dim, activation="gelu", name=f"{name}_fc1")(h)
    gate = gate_for(gate_factory, f"{name}_fc1")
    if gate is not None:
        h = gate(h)
    h = layers.Dropout(dropout, name=f"{name}_dropout")(h)
    h = layers.Dense(dim, name=f"{name}_fc2")(h)
    return layers.Add(name=f"{name}_add2")([x, h])


def _encoder(x, depth, heads, mlp_dim, dropout, gate_factory):
    x = PositionEmbedding(name="position")(x)
    for i in range(1, depth + 1):
        x = _encoder_block(x, f"block{i}", heads, mlp_dim, dropout, gate_factory)
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    return layers.GlobalAveragePooling1D(name="pool")(x)


def vit(
    input_shape=(28, 28, 1),
    num_classes=10,
    gate_factory=None,
    patch_size=4,
    dim=64,
    depth=4,
    heads=4,
    mlp_dim=128,
    dropout=0.0,
):
    """A small vision transformer (Dosovitskiy et al., 2021) for 28x28 / 32x32 images.

    `patch_embed` (a `patch_size` x `patch_size` convolution with the same
    stride) -> `tokens` (Reshape to (patches, dim)) -> `position` (learned
    embedding) -> `depth` pre-norm blocks `block{i}` (`_norm1` ->
    `_attention` (MultiHeadAttention, `heads` heads of dim/heads) -> `_add1`,
    `_norm2` -> `_fc1` (Dense `mlp_dim`, GELU) -> `_fc2` (Dense dim) ->
    `_add2`) -> `norm` -> `pool` (mean over patches) -> `logits`. At the
    defaults on 28x28x1: 49 patches, 0.14M weights.

    `tfsparse.sparsify` gates each attention layer's heads and each block's
    feed-forward units; the residual stream stays whole (every
    LayerNormalization reads all of its channels).

    Args:
        input_shape: image shape `(H, W, C)`, H and W multiples of `patch_size`.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"block{i}_fc1"`: the gate follows the feed-forward GELU.
        patch_size, dim, depth, heads, mlp_dim, dropout: the architecture.

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.

    References:
        - Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
          Image Recognition at Scale", ICLR 2021.
    """
    check_image_shape(input_shape, "vit", patch_size)
    height, width = input_shape[:2]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"vit needs image sides that are multiples of patch_size="
            f"{patch_size}; got input_shape {tuple(input_shape)}."
        )
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Conv2D(dim, patch_size, strides=patch_size, name="patch_embed")(inputs)
    x = layers.Reshape(((height // patch_size) * (width // patch_size), dim), name="tokens")(x)
    x = _encoder(x, depth, heads, mlp_dim, dropout, gate_factory)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="vit")


def text_encoder(
    input_shape=(64,),
    num_classes=2,
    gate_factory=None,
    vocab_size=2000,
    dim=64,
    depth=2,
    heads=4,
    mlp_dim=128,
    dropout=0.0,
):
    """A small transformer text classifier: token ids -> logits.

    `embed` (Embedding `vocab_size` x dim) -> `position` -> `depth` pre-norm
    blocks (as in `vit`) -> `norm` -> `pool` (mean over tokens) -> `logits`.

    Args:
        input_shape: `(sequence_length,)` of integer token ids.
        num_classes: number of output logits.
        gate_factory: as in `vit`.
        vocab_size, dim, depth, heads, mlp_dim, dropout: the architecture.

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.
    """
    if len(input_shape) != 1:
        raise ValueError(
            f"text_encoder expects input_shape (sequence_length,); got {tuple(input_shape)}."
        )
    inputs = keras.Input(shape=tuple(input_shape), dtype="int32")
    x = layers.Embedding(vocab_size, dim, name="embed")(inputs)
    x = _encoder(x, depth, heads, mlp_dim, dropout, gate_factory)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="text_encoder")
