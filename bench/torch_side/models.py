"""tfsparse's ResNet-20, MobileNetV2 and small ViT written again in PyTorch,
layer for layer.

Same layers, channels, strides and order as `tfsparse.models.resnet20`,
`tfsparse.models.mobilenet_v2` and `tfsparse.models.vit` (so the
multiply-adds are equal, which
`bench/torch_side/pruning.py` checks against the count tfsparse sends), and
Keras' batch-normalization constants (epsilon 1e-3, moving average 0.99).
One difference the frameworks impose: Keras' "same" padding of a stride-2
convolution pads the bottom and right only, PyTorch's symmetric padding of 1
pads both sides; the output sizes and costs are the same.

Modules whose cost is not a convolution's, a linear layer's or a
normalization's (the attention products, the mean over tokens) say it
themselves: `multiply_adds(inputs, output)` per example, read by
`pruning.multiply_adds`.
"""

import importlib.util
import os

import torch
from torch import nn

BN = {"eps": 1e-3, "momentum": 0.01}  # Keras' epsilon; torch's momentum is 1 - Keras' 0.99


def _conv_bn(cin, cout, kernel, stride, groups=1, act=None):
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, **BN),
    ]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride, act=nn.ReLU())
        self.conv2 = _conv_bn(cout, cout, 3, 1)
        self.proj = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.relu(shortcut + self.conv2(self.conv1(x)))


class CifarResNet(nn.Module):
    def __init__(self, blocks, in_channels, num_classes):
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 3, 1, act=nn.ReLU())
        stages, cin = [], 16
        for stage, filters in enumerate((16, 32, 64), start=1):
            for block in range(blocks):
                stride = 2 if stage > 1 and block == 0 else 1
                stages.append(BasicBlock(cin, filters, stride))
                cin = filters
        self.blocks = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.logits = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.logits(self.pool(self.blocks(self.stem(x))).flatten(1))


def resnet20(in_channels=1, num_classes=10):
    return CifarResNet(3, in_channels, num_classes)


def _mobilenet_spec():
    """tfsparse's MobileNetV2 table, loaded by path (importing `tfsparse`
    would import TensorFlow, which this environment does not have)."""
    path = os.path.join(
        os.path.dirname(os.path.abspath(__file__)),
        "..",
        "..",
        "tfsparse",
        "models",
        "mobilenet_spec.py",
    )
    spec = importlib.util.spec_from_file_location("mobilenet_spec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPEC = _mobilenet_spec()


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [_conv_bn(cin, hidden, 1, 1, act=nn.ReLU6())]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()),
            _conv_bn(hidden, cout, 1, 1),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, in_channels, num_classes, width):
        super().__init__()
        cin = SPEC.divisible(32 * width)
        blocks = [_conv_bn(in_channels, cin, 3, 1, act=nn.ReLU6())]
        for expansion, channels, n, first_stride in SPEC.BLOCKS:
            cout = SPEC.divisible(channels * width)
            for i in range(n):
                blocks.append(
                    InvertedResidual(cin, cout, expansion, first_stride if i == 0 else 1)
                )
                cin = cout
        last = SPEC.divisible(SPEC.LAST * max(1.0, width))
        blocks.append(_conv_bn(cin, last, 1, 1, act=nn.ReLU6()))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.logits = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.logits(self.dropout(self.pool(self.features(x)).flatten(1)))


def mobilenet_v2(in_channels=1, num_classes=10, width=0.5):
    return MobileNetV2(in_channels, num_classes, width)


class Attention(nn.Module):
    """Self-attention as Keras' `MultiHeadAttention(heads, dim // heads)` with
    query = key = value computes it. The query, key and value projections are
    one `qkv` layer here (the same weights and multiply-adds), laid out
    (3, heads, head width) as Torch-Pruning's attention pruning expects; it
    narrows the heads, so the width is read from `qkv` at each call."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, -1))

    def multiply_adds(self, inputs, output):
        """The two products over tokens (scores and weighted values), as
        tfsparse counts them; the projections count as linear layers."""
        tokens = inputs[0].shape[1]
        return tokens * tokens * 2 * self.qkv.out_features // 3


class EncoderBlock(nn.Module):
    """Pre-norm block: x + attention(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TokenMean(nn.Module):
    """Keras' GlobalAveragePooling1D: the mean over tokens."""

    def forward(self, x):
        return x.mean(1)

    def multiply_adds(self, inputs, output):
        return inputs[0][0].numel()


class ViT(nn.Module):
    def __init__(self, in_channels, num_classes, image, patch, dim, depth, heads, mlp_dim):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.position = nn.Parameter(torch.randn(1, (image // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pool = TokenMean()
        self.logits = nn.Linear(dim, num_classes)

    def forward(self, x):
        # NCHW → (batch, patches, dim) in row-major patch order, as Keras'
        # Reshape of its NHWC convolution output.
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.position
        return self.logits(self.pool(self.norm(self.blocks(x))))


def vit(in_channels=1, num_classes=10, image=28):
    """`tfsparse.models.vit` at its defaults: 4x4 patches, width 64, 4 blocks
    of 4 heads, feed-forward 128."""
    return ViT(in_channels, num_classes, image, patch=4, dim=64, depth=4, heads=4, mlp_dim=128)


MODELS = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2, "vit": vit}
