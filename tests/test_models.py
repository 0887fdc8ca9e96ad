import keras
import numpy as np
import pytest

from tfsparse import models


def test_lenet_300_100_params():
    assert models.lenet_300_100((28, 28, 1), 10).count_params() == 266_610


def test_lenet5_caffe_params():
    assert models.lenet5_caffe((28, 28, 1), 10).count_params() == 431_080


def test_mnist_convnet_params():
    assert models.mnist_convnet((28, 28, 1), 10).count_params() == 34_826


def test_lenet_500_300_params():
    # 784*500+500 + 500*300+300 + 300*10+10
    assert models.lenet_500_300().count_params() == 545_810


@pytest.mark.parametrize(
    "name, weights",
    [
        ("resnet20", 272_474),
        ("resnet56", 855_770),
        ("mobilenet_v2", 2_236_682),
        ("mobilenet_v2_050", 700_490),
    ],
)
def test_cifar_networks_have_the_papers_sizes(name, weights):
    model = models.get(name)((32, 32, 3), 10)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == weights


def test_resnet32_params():
    model = models.resnet32((32, 32, 3), 10)
    assert model.count_params() == 469_370  # Includes BatchNorm moving statistics.
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 466_906  # ~0.46M, as in He et al. (projection shortcuts).
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 15
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 30 + 2  # stem, 15 blocks x 2, 2 projections


CASES = [
    (name, shape)
    for name in models.MODELS
    for shape in [(28, 28, 1), (8, 8, 1), (32, 32, 3)]
    if not (name in ("lenet5_caffe", "mnist_convnet") and shape == (8, 8, 1))
]


@pytest.mark.parametrize("name,shape", CASES)
def test_output_shape_logits(name, shape):
    model = models.get(name)(input_shape=shape, num_classes=7)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    y = model(x, training=False)
    assert tuple(y.shape) == (2, 7)
    assert model.layers[-1].name == "logits"
    # Logits, not probabilities: no softmax on the classifier.
    assert model.layers[-1].activation is keras.activations.linear


def test_lenet5_too_small_input():
    with pytest.raises(ValueError, match="16x16"):
        models.lenet5_caffe((8, 8, 1))


def test_get_unknown_lists_names():
    with pytest.raises(ValueError, match="lenet_300_100.*resnet32"):
        models.get("alexnet")


# --- gate_factory -----------------------------------------------------------

EXPECTED_GATES = {
    "lenet_300_100": ["input", "fc1", "fc2"],
    "lenet_500_300": ["input", "fc1", "fc2"],
    "lenet5_caffe": ["input", "conv1", "conv2", "fc1"],
    "mnist_convnet": ["conv1", "conv2"],
    "vgg_like": ["input", "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "fc1"],
    "resnet20": ["input"] + [f"s{s}b{b}_conv1" for s in (1, 2, 3) for b in range(1, 4)],
    "resnet32": ["input"] + [f"s{s}b{b}_conv1" for s in (1, 2, 3) for b in range(1, 6)],
    "resnet56": ["input"] + [f"s{s}b{b}_conv1" for s in (1, 2, 3) for b in range(1, 10)],
    "mobilenet_v2": [f"b{i}_expand" for i in range(17)],
    "mobilenet_v2_050": [f"b{i}_expand" for i in range(17)],
    "vit": [f"block{i}_fc1" for i in range(1, 5)],
}


def _dummy_factory(calls):
    def factory(name):
        calls.append(name)
        return keras.layers.Identity(name=f"{name}_gate")

    return factory


def _inbound(model, layer):
    """Name of the layer feeding `layer` (works for Sequential and Functional)."""
    node = model.get_layer(layer.name)._inbound_nodes[0]
    return node.input_tensors[0]._keras_history.operation.name


@pytest.mark.parametrize("name", list(models.MODELS))
def test_gate_factory_places(name):
    calls = []
    shape = (28, 28, 1) if name.startswith("lenet") else (32, 32, 3)
    plain = models.get(name)(shape, 10)
    gated = models.get(name)(shape, 10, gate_factory=_dummy_factory(calls))
    assert calls == EXPECTED_GATES[name]  # Never the classifier.
    gates = [layer for layer in gated.layers if layer.name.endswith("_gate")]
    assert [g.name for g in gates] == [f"{c}_gate" for c in calls]
    # Identity gates add no weights and change nothing.
    assert gated.count_params() == plain.count_params()

    for gate in gates:
        target = gate.name[: -len("_gate")]
        source = _inbound(gated, gate)
        if target == "input":
            expected = (
                "flatten"
                if name.startswith("lenet_")
                else gated.inputs[0]._keras_history.operation.name
            )
        elif name.startswith("mobilenet_v2"):
            expected = f"{target[: -len('_expand')]}_depthwise_relu"
        elif name in ("vgg_like", "resnet20", "resnet32", "resnet56"):
            expected = f"{target}_relu"  # After the block's BN + ReLU.
        else:
            expected = target  # After the layer (activation is inside it).
        assert source == expected, (gate.name, source, expected)


def test_gate_factory_none_means_no_gate():
    gated = models.lenet_300_100(gate_factory=lambda name: None)
    assert [layer.name for layer in gated.layers] == ["flatten", "fc1", "fc2", "logits"]


def test_gate_factory_must_return_layer():
    with pytest.raises(TypeError, match="keras.layers.Layer"):
        models.lenet_300_100(gate_factory=lambda name: "gate")


def test_gated_model_same_outputs_with_identity_gates():
    keras.utils.set_random_seed(1)
    plain = models.lenet5_caffe()
    gated = models.lenet5_caffe(
        gate_factory=lambda n: keras.layers.Activation("linear", name=f"{n}_g")
    )
    gated.set_weights(plain.get_weights())
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(plain(x), gated(x), rtol=1e-5, atol=1e-5)
