"""MobileNetV2 for small images (the CIFAR variant of the inverted-residual network)."""

import keras
from keras import layers

from tfsparse.models._common import check_image_shape, gate_for
from tfsparse.models.mobilenet_spec import BLOCKS, LAST, divisible


def _conv_bn(x, filters, kernel, strides, name, relu6=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if relu6 else x


def mobilenet_v2(input_shape=(32, 32, 3), num_classes=10, gate_factory=None, width=1.0):
    """MobileNetV2 (Sandler et al., 2018) for 32x32 images.

    `stem` (3x3 Conv-BN-ReLU6, stride 1), then 17 inverted-residual blocks
    `b{i}`: `_expand` (1x1 Conv-BN-ReLU6, t times the input channels; absent
    when t = 1) -> `_depthwise` (3x3 DepthwiseConv-BN-ReLU6) -> `_project`
    (1x1 Conv-BN), with an `_add` of the block's input when the shape allows;
    then `last` (1x1 Conv-BN-ReLU6, 1280 channels), global average pooling,
    dropout 0.2 and `logits`. 2.24M weights at width 1.0, 0.70M at 0.5.

    `tfsparse.sparsify` gates each block's expanded channels (removed from
    the expansion, the depthwise convolution and the projection's rows) and
    each stage's bottleneck stream.

    Args:
        input_shape: image shape `(H, W, C)`, at least 8x8.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"b{i}_expand"` for each block: the gate goes after the
            depthwise convolution's ReLU6, where the projection reads the
            expanded channels.
        width: width multiplier α (channels × α, rounded to multiples of 8;
            the last layer keeps 1280 below α = 1).

    Returns:
        An uncompiled functional `keras.Model` that outputs logits.

    References:
        - Sandler et al., "MobileNetV2: Inverted Residuals and Linear
          Bottlenecks", CVPR 2018.
    """
    check_image_shape(input_shape, "mobilenet_v2", 8)
    inputs = keras.Input(shape=tuple(input_shape))
    x = _conv_bn(inputs, divisible(32 * width), 3, 1, "stem")
    index = 0
    for expansion, channels, blocks, first_stride in BLOCKS:
        out = divisible(channels * width)
        for i in range(blocks):
            name = f"b{index}"
            strides = first_stride if i == 0 else 1
            y = x
            if expansion != 1:
                y = _conv_bn(y, int(x.shape[-1]) * expansion, 1, 1, f"{name}_expand")
            y = layers.DepthwiseConv2D(
                3, strides=strides, padding="same", use_bias=False, name=f"{name}_depthwise"
            )(y)
            y = layers.BatchNormalization(name=f"{name}_depthwise_bn")(y)
            y = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
            gate = gate_for(gate_factory, f"{name}_expand")
            if gate is not None:
                y = gate(y)
            y = _conv_bn(y, out, 1, 1, f"{name}_project", relu6=False)
            if strides == 1 and int(x.shape[-1]) == out:
                y = layers.Add(name=f"{name}_add")([x, y])
            x = y
            index += 1
    x = _conv_bn(x, divisible(LAST * max(1.0, width)), 1, 1, "last")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def mobilenet_v2_050(input_shape=(32, 32, 3), num_classes=10, gate_factory=None):
    """MobileNetV2 at width 0.5 (0.70M weights, 1280 last channels): `mobilenet_v2`
    with `width=0.5`, by name for `train.py --model` and the benchmarks."""
    return mobilenet_v2(input_shape, num_classes, gate_factory, width=0.5)
