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

from tfsparse.models.lenets import (
    lenet5_caffe,
    lenet_300_100,
    lenet_500_300,
    mnist_convnet,
    vgg_like,
)
from tfsparse.models.mobilenets import mobilenet_v2, mobilenet_v2_050
from tfsparse.models.resnets import resnet20, resnet32, resnet56
from tfsparse.models.transformers import PositionEmbedding as PositionEmbedding
from tfsparse.models.transformers import text_encoder as text_encoder
from tfsparse.models.transformers import vit

# The image classifiers, by name (`train.py --model`); `text_encoder` reads
# token ids and is built directly.
MODELS = {
    "lenet_300_100": lenet_300_100,
    "lenet_500_300": lenet_500_300,
    "lenet5_caffe": lenet5_caffe,
    "mnist_convnet": mnist_convnet,
    "vgg_like": vgg_like,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_050": mobilenet_v2_050,
    "vit": vit,
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
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(MODELS)}.") from None
