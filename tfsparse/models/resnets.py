"""Residual networks for CIFAR-sized images (He et al., 2016)."""

import keras
from keras import layers

from tfsparse.models._common import check_image_shape, gate_for


def _conv_bn(x, filters, strides, name, relu=True):
    x = layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def resnet20(input_shape=(32, 32, 3), num_classes=10, gate_factory=None):
    """ResNet-20 for CIFAR: 3 stages x 3 basic blocks, 16/32/64 filters
    (0.27M weights). See `resnet32` for the layers and arguments."""
    return _cifar_resnet(3, "resnet20", input_shape, num_classes, gate_factory)


def resnet32(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """ResNet-32 for CIFAR: 3 stages x 5 basic blocks, 16/32/64 filters.

    `stem` (Conv-BN-ReLU, 16 filters), then blocks `s{stage}b{block}` of
    `_conv1` (Conv-BN-ReLU) -> `_conv2` (Conv-BN) -> `_add` with the shortcut
    -> `_relu`. The first block of stages 2 and 3 halves the resolution and
    uses a 1x1 Conv-BN projection shortcut (`_proj`, He et al.'s option B,
    as in Torch-Pruning's CIFAR ResNets), which keeps the model made of plain
    Keras layers. Global average pooling (`pool`) -> `logits`.

    `tfsparse.sparsify` gates every channel group: the inside of each block
    (the output of `_conv1`) and each stage's residual stream (the stem or
    projection, and every `_conv2` that adds into it), whose one gate is
    called before every layer that reads the stream. `gate_factory` places
    hand-made gates inside the blocks only: a stream needs one gate shared by
    all of its readers.

    Args:
        input_shape: image shape `(H, W, C)`.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"input"` and with `"s{stage}b{block}_conv1"` for each block;
            the gate follows that conv's BN + ReLU.

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.

    References:
        - He et al., "Deep Residual Learning for Image Recognition", 2016.
    """
    return _cifar_resnet(5, "resnet32", input_shape, num_classes, gate_factory)


def resnet56(input_shape=(32, 32, 3), num_classes=10, gate_factory=None):
    """ResNet-56 for CIFAR: 3 stages x 9 basic blocks, 16/32/64 filters
    (0.86M weights). See `resnet32` for the layers and arguments."""
    return _cifar_resnet(9, "resnet56", input_shape, num_classes, gate_factory)


def _cifar_resnet(blocks, name, input_shape, num_classes, gate_factory):
    check_image_shape(input_shape, name, 4)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    gate = gate_for(gate_factory, "input")
    if gate is not None:
        x = gate(x)
    x = _conv_bn(x, 16, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, blocks + 1):
            name_ = f"s{stage}b{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = _conv_bn(x, filters, strides, f"{name_}_conv1")
            gate = gate_for(gate_factory, f"{name_}_conv1")
            if gate is not None:
                y = gate(y)
            y = _conv_bn(y, filters, 1, f"{name_}_conv2", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(
                    filters,
                    1,
                    strides=strides,
                    use_bias=False,
                    kernel_initializer="he_normal",
                    name=f"{name_}_proj",
                )(shortcut)
                shortcut = layers.BatchNormalization(name=f"{name_}_proj_bn")(shortcut)
            x = layers.Add(name=f"{name_}_add")([shortcut, y])
            x = layers.ReLU(name=f"{name_}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
