"""Reference networks of the sparsity papers, as plain Keras models.

Every builder has the signature
`builder(input_shape=(28, 28, 1), num_classes=10, gate_factory=None)` and
returns an uncompiled model whose last layer, `"logits"`, outputs logits (no
softmax): train it with `SparseCategoricalCrossentropy(from_logits=True)`.

Gated variants are built by the same code through `gate_factory`, a callable
`gate_factory(name) -> keras.layers.Layer | None`. It is called with

- `"input"`: the returned layer is applied to the network input (right after
  `Flatten` for the MLPs, on the image for the conv nets);
- the name of each hidden `Dense` / `Conv2D` (e.g. `"fc1"`, `"conv2"`): the
  returned layer is applied to that layer's output after its activation (for
  `vgg_like` and `resnet32`, after the block's BatchNorm + ReLU).

It is never called for the classifier. Returning `None` leaves that place
ungated. The factory names the layers it returns; names must be unique.
"""

import keras
from keras import layers

# --- helpers ----------------------------------------------------------------


def _gate(gate_factory, name):
    """Returns the gate layer for `name`, or None."""
    if gate_factory is None:
        return None
    gate = gate_factory(name)
    if gate is not None and not isinstance(gate, layers.Layer):
        raise TypeError(
            f"gate_factory({name!r}) must return a keras.layers.Layer or None; "
            f"got {type(gate).__name__}."
        )
    return gate


def _with_gate(stack, gate_factory, name):
    """Appends the gate for `name` to a Sequential layer list, if any."""
    gate = _gate(gate_factory, name)
    if gate is not None:
        stack.append(gate)


def _check_image_shape(input_shape, builder, min_size):
    if len(input_shape) != 3:
        raise ValueError(
            f"{builder} expects input_shape (H, W, C); got {tuple(input_shape)}."
        )
    if min(input_shape[:2]) < min_size:
        raise ValueError(
            f"{builder} needs images of at least {min_size}x{min_size}; got "
            f"input_shape {tuple(input_shape)}."
        )


# --- multilayer perceptrons -------------------------------------------------


def _mlp(name, hidden, input_shape, num_classes, gate_factory):
    stack = [keras.Input(shape=tuple(input_shape)), layers.Flatten(name="flatten")]
    # Input gate after Flatten: one gate per input feature (feature selection).
    _with_gate(stack, gate_factory, "input")
    for i, units in enumerate(hidden, start=1):
        stack.append(layers.Dense(units, activation="relu", name=f"fc{i}"))
        _with_gate(stack, gate_factory, f"fc{i}")
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

    Example:

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

    Example:

    >>> lenet5_caffe().count_params()
    431080

    References:
        - The `lenet_train_test.prototxt` example network of Caffe.
    """
    _check_image_shape(input_shape, "lenet5_caffe", 16)
    stack = [keras.Input(shape=tuple(input_shape))]
    _with_gate(stack, gate_factory, "input")
    for i, filters in enumerate((20, 50), start=1):
        stack.append(layers.Conv2D(filters, 5, activation="relu", name=f"conv{i}"))
        _with_gate(stack, gate_factory, f"conv{i}")
        stack.append(layers.MaxPooling2D(2, name=f"pool{i}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.append(layers.Dense(500, activation="relu", name="fc1"))
    _with_gate(stack, gate_factory, "fc1")
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
    _check_image_shape(input_shape, "vgg_like", 2 ** len(_VGG_BLOCKS))
    stack = [keras.Input(shape=tuple(input_shape))]
    _with_gate(stack, gate_factory, "input")
    for b, block in enumerate(_VGG_BLOCKS, start=1):
        for i, filters in enumerate(block, start=1):
            name = f"conv{b}_{i}"
            # No bias: the BatchNorm that follows has its own shift.
            stack.append(
                layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)
            )
            stack.append(layers.BatchNormalization(name=f"{name}_bn"))
            stack.append(layers.ReLU(name=f"{name}_relu"))
            _with_gate(stack, gate_factory, name)
        stack.append(layers.MaxPooling2D(2, name=f"pool{b}"))
    stack.append(layers.Flatten(name="flatten"))
    stack.append(layers.Dense(_VGG_FC, use_bias=False, name="fc1"))
    stack.append(layers.BatchNormalization(name="fc1_bn"))
    stack.append(layers.ReLU(name="fc1_relu"))
    _with_gate(stack, gate_factory, "fc1")
    stack.append(layers.Dense(num_classes, name="logits"))
    return keras.Sequential(stack, name="vgg_like")


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


def resnet32(input_shape=(28, 28, 1), num_classes=10, gate_factory=None):
    """ResNet-32 for CIFAR: 3 stages x 5 basic blocks, 16/32/64 filters.

    `stem` (Conv-BN-ReLU, 16 filters), then blocks `s{stage}b{block}` of
    `_conv1` (Conv-BN-ReLU) -> `_conv2` (Conv-BN) -> `_add` with the shortcut
    -> `_relu`. The first block of stages 2 and 3 halves the resolution and
    uses a 1x1 Conv-BN projection shortcut (`_proj`), which keeps the model
    made of plain Keras layers. Global average pooling (`pool`) -> `logits`.

    Only the channels inside a block (the output of `_conv1`) are gated:
    the stem and `_conv2` feed the residual sum, whose width every block
    shares, so gating them could not remove channels.

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
    _check_image_shape(input_shape, "resnet32", 4)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    gate = _gate(gate_factory, "input")
    if gate is not None:
        x = gate(x)
    x = _conv_bn(x, 16, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 6):
            name = f"s{stage}b{block}"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            y = _conv_bn(x, filters, strides, f"{name}_conv1")
            gate = _gate(gate_factory, f"{name}_conv1")
            if gate is not None:
                y = gate(y)
            y = _conv_bn(y, filters, 1, f"{name}_conv2", relu=False)
            if strides != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(
                    filters,
                    1,
                    strides=strides,
                    use_bias=False,
                    kernel_initializer="he_normal",
                    name=f"{name}_proj",
                )(shortcut)
                shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
            x = layers.Add(name=f"{name}_add")([shortcut, y])
            x = layers.ReLU(name=f"{name}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet32")


MODELS = {
    "lenet_300_100": lenet_300_100,
    "lenet_500_300": lenet_500_300,
    "lenet5_caffe": lenet5_caffe,
    "vgg_like": vgg_like,
    "resnet32": resnet32,
}


def get(name):
    """Returns the model builder called `name`.

    Args:
        name: one of the keys of `MODELS`.

    Returns:
        The builder function.

    Raises:
        ValueError: `name` is not a known model.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"Unknown model {name!r}. Available: {', '.join(MODELS)}."
        ) from None
