"""The LeNets of the sparsity papers and a small VGG."""

import keras
from keras import layers

from tfsparse.models._common import append_gate, check_image_shape

# --- multilayer perceptrons -------------------------------------------------


def _mlp(name, hidden, input_shape, num_classes, gate_factory):
    stack = [keras.Input(shape=tuple(input_shape)), layers.Flatten(name="flatten")]
    # Input gate after Flatten: one gate per input feature (feature selection).
    append_gate(stack, gate_factory, "input")
    for i, units in enumerate(hidden, start=1):
        stack.append(layers.Dense(units, activation="relu", name=f"fc{i}"))
        append_gate(stack, gate_factory, f"fc{i}")
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name=name)


def lenet_300_100(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """LeNet-300-100: a multilayer perceptron with hidden layers of 300 and 100.

    Layers: `flatten` -> `fc1` (Dense 300, ReLU) -> `fc2` (Dense 100, ReLU) ->
    `logits`. 266,610 parameters on 28x28x1 inputs with 10 classes.

    Args:
        input_shape: shape of one example, `(H, W, C)` (any rank works).
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"input"`, `"fc1"` and `"fc2"` (see the module docstring).

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.

    Examples:
        >>> model = lenet_300_100()
        >>> model.count_params()
    266610

    References:
        - LeCun et al., "Gradient-based learning applied to document
          recognition", 1998.
    """
    return _mlp("lenet_300_100", (300, 100), input_shape, num_classes, gate_factory)


def lenet_500_300(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """LeNet-500-300: a multilayer perceptron with hidden layers of 500 and 300.

    Layers: `flatten` -> `fc1` (Dense 500, ReLU) -> `fc2` (Dense 300, ReLU) ->
    `logits`. Used by the Beta-Bernoulli dropout paper.

    Args:
        input_shape: shape of one example, `(H, W, C)` (any rank works).
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"input"`, `"fc1"` and `"fc2"`.

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.
    """
    return _mlp("lenet_500_300", (500, 300), input_shape, num_classes, gate_factory)


# --- convolutional networks -------------------------------------------------


def lenet5_caffe(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """LeNet-5-Caffe: two 5x5 convolutions (20, 50 filters) and a 500-unit layer.

    Layers: `conv1` (20 5x5 valid, ReLU) -> `pool1` -> `conv2` (50 5x5 valid,
    ReLU) -> `pool2` -> `flatten` -> `fc1` (Dense 500, ReLU) -> `logits`.
    431,080 parameters on 28x28x1 inputs with 10 classes. Needs images of at
    least 16x16.

    Args:
        input_shape: image shape `(H, W, C)`.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"input"` (applied to the image), `"conv1"`, `"conv2"` and
            `"fc1"`. Conv gates act on the channel axis, before pooling.

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.

    Examples:
        >>> lenet5_caffe().count_params()
    431080

    References:
        - The `lenet_train_test.prototxt` example network of Caffe.
    """
    check_image_shape(input_shape, "lenet5_caffe", 16)
    stack = [keras.Input(shape=tuple(input_shape))]
    append_gate(stack, gate_factory, "input")
    for i, filters in enumerate((20, 50), start=1):
        stack.append(layers.Conv2D(filters, 5, activation="relu", name=f"conv{i}"))
        append_gate(stack, gate_factory, f"conv{i}")
        stack.append(layers.MaxPooling2D(2, name=f"pool{i}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.append(layers.Dense(500, activation="relu", name="fc1"))
    append_gate(stack, gate_factory, "fc1")
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name="lenet5_caffe")


# (filters per conv) per block; each block ends with a 2x2 max-pool.
_VGG_BLOCKS = ((32, 32), (64, 64), (128, 128))
_VGG_FC = 256


def vgg_like(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """A small VGG-style network for CIFAR-sized images.

    Three blocks of two Conv-BN-ReLU layers (32, 64, 128 filters, 3x3, same
    padding), each followed by a 2x2 max-pool, then `flatten` -> `fc1`
    (Dense 256 -> BN -> ReLU) -> `logits`. Layer names: `conv{b}_{i}` (with
    `_bn` and `_relu` suffixes for its BatchNorm and ReLU), `pool{b}`, `fc1`.
    Needs images of at least 8x8.

    Args:
        input_shape: image shape `(H, W, C)`.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"input"`, every `"conv{b}_{i}"` and `"fc1"`; the gate follows
            the layer's BN + ReLU.

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.

    References:
        - Simonyan & Zisserman, "Very Deep Convolutional Networks for
          Large-Scale Image Recognition", 2015 (scaled down here).
    """
    check_image_shape(input_shape, "vgg_like", 2 ** len(_VGG_BLOCKS))
    stack = [keras.Input(shape=tuple(input_shape))]
    append_gate(stack, gate_factory, "input")
    for b, block in enumerate(_VGG_BLOCKS, start=1):
        for i, filters in enumerate(block, start=1):
            name = f"conv{b}_{i}"
            # No bias: the BatchNorm that follows has its own shift.
            stack.append(layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name))
            stack.append(layers.BatchNormalization(name=f"{name}_bn"))
            stack.append(layers.ReLU(name=f"{name}_relu"))
            append_gate(stack, gate_factory, name)
        stack.append(layers.MaxPooling2D(2, name=f"pool{b}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.append(layers.Dense(_VGG_FC, use_bias=False, name="fc1"))
    stack.append(layers.BatchNormalization(name="fc1_bn"))
    stack.append(layers.ReLU(name="fc1_relu"))
    append_gate(stack, gate_factory, "fc1")
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name="vgg_like")


def mnist_convnet(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """The Keras tutorial's MNIST convnet ("Simple MNIST convnet", keras.io).

    Layers: `conv1` (32 3x3 valid, ReLU) -> `pool1` -> `conv2` (64 3x3
    valid, ReLU) -> `pool2` -> `flatten` -> `dropout` (0.5) -> `logits`
    (no softmax). 34,826 parameters on 28x28x1 inputs with 10 classes.

    Args:
        input_shape: image shape `(H, W, C)`, at least 10x10.
        num_classes: number of output logits.
        gate_factory: optional `gate_factory(name) -> Layer | None`, called
            with `"conv1"` and `"conv2"` (after each convolution's ReLU).

    Returns:
        An uncompiled `keras.Sequential` that outputs logits.

    References:
        - F. Chollet, "Simple MNIST convnet", https://keras.io/examples/vision/mnist_convnet/
    """
    check_image_shape(input_shape, "mnist_convnet", 10)
    stack = [keras.Input(shape=tuple(input_shape))]
    for i, filters in enumerate((32, 64), start=1):
        stack.append(layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}"))
        append_gate(stack, gate_factory, f"conv{i}")
        stack.append(layers.MaxPooling2D(2, name=f"pool{i}"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dropout(0.5, name="dropout"),
        layers.Dense(num_classes, name="logits"),
    ]
    return keras.Sequential(stack, name="mnist_convnet")
