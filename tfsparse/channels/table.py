"""The one table of layer handlers, keyed by layer class.

A new layer type is one entry here (and a handler class if none fits). For
each call node, the first handler of the layer's class that accepts the
node's configuration is used (a subclass that does not override `call` is
treated as its base class: every gate family is a `Gate`); anything else is
opaque: it needs its input channels unchanged, and channel groups end at it.
"""

import keras
from keras.src.ops import nn as nn_ops
from keras.src.ops import numpy as np_ops

from tfsparse.channels.affine import BatchNormHandler, DepthwiseHandler
from tfsparse.channels.attention import AttentionHandler
from tfsparse.channels.base import Handler
from tfsparse.channels.elementwise import (
    ActivationLayerHandler,
    MergeHandler,
    RawElementwiseHandler,
)
from tfsparse.channels.gate import GateHandler
from tfsparse.channels.linear import GroupedConvHandler, LinearHandler, SeparableConvHandler
from tfsparse.channels.maps import (
    ConcatenateHandler,
    FlattenHandler,
    PassThroughHandler,
    PermuteHandler,
    PoolingHandler,
    ReshapeHandler,
    TakeFeaturesHandler,
)
from tfsparse.gates.base import Gate
from tfsparse.layers import GatedMultiHeadAttention, SparseConv2D, SparseDense, TakeFeatures

L = keras.layers
OPAQUE = Handler()
_PASS = PassThroughHandler()
_ACTIVATION = ActivationLayerHandler()
_SUM = MergeHandler()
_PRODUCT = MergeHandler(product=True)
_LINEAR = LinearHandler()
_DEPTHWISE = DepthwiseHandler()

TABLE = {
    Gate: [GateHandler()],
    TakeFeatures: [TakeFeaturesHandler()],
    # Layers that end channel groups.
    L.Dense: [_LINEAR],
    SparseDense: [_LINEAR],
    SparseConv2D: [_LINEAR],
    L.Conv1D: [_DEPTHWISE, GroupedConvHandler(), _LINEAR],
    L.Conv2D: [_DEPTHWISE, GroupedConvHandler(), _LINEAR],
    L.Conv3D: [_DEPTHWISE, GroupedConvHandler(), _LINEAR],
    L.MultiHeadAttention: [AttentionHandler()],
    GatedMultiHeadAttention: [AttentionHandler()],
    L.SeparableConv1D: [SeparableConvHandler()],
    L.SeparableConv2D: [SeparableConvHandler()],
    # Per-channel layers with weights.
    L.DepthwiseConv1D: [_DEPTHWISE],
    L.DepthwiseConv2D: [_DEPTHWISE],
    L.BatchNormalization: [BatchNormHandler()],
    # Element-wise layers.
    L.Activation: [_ACTIVATION],
    L.ReLU: [_ACTIVATION],
    L.LeakyReLU: [_ACTIVATION],
    L.ELU: [_ACTIVATION],
    L.PReLU: [_ACTIVATION],
    L.Rescaling: [_ACTIVATION],
    L.Add: [_SUM],
    L.Subtract: [_SUM],
    L.Average: [_SUM],
    L.Maximum: [_SUM],
    L.Minimum: [_SUM],
    L.Multiply: [_PRODUCT],
    # Channel maps.
    L.Concatenate: [ConcatenateHandler(), _SUM],
    L.Flatten: [FlattenHandler()],
    L.Reshape: [ReshapeHandler()],
    L.Permute: [PermuteHandler()],
    L.GlobalAveragePooling1D: [PoolingHandler(global_pool=True)],
    L.GlobalAveragePooling2D: [PoolingHandler(global_pool=True)],
    L.GlobalAveragePooling3D: [PoolingHandler(global_pool=True)],
    L.GlobalMaxPooling1D: [PoolingHandler(global_pool=True)],
    L.GlobalMaxPooling2D: [PoolingHandler(global_pool=True)],
    L.GlobalMaxPooling3D: [PoolingHandler(global_pool=True)],
    L.MaxPooling1D: [PoolingHandler(global_pool=False)],
    L.MaxPooling2D: [PoolingHandler(global_pool=False)],
    L.MaxPooling3D: [PoolingHandler(global_pool=False)],
    L.AveragePooling1D: [PoolingHandler(global_pool=False)],
    L.AveragePooling2D: [PoolingHandler(global_pool=False)],
    L.AveragePooling3D: [PoolingHandler(global_pool=False)],
}
# Identity at inference, or moving values without mixing channels.
for _cls in (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.Identity,
    L.ActivityRegularization,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
):
    TABLE[_cls] = [_PASS]

# `keras.ops` calls on Keras tensors (how some keras.applications are built).
for _op in (np_ops.Add, np_ops.Subtract, np_ops.Maximum, np_ops.Minimum):
    TABLE[_op] = [_SUM, RawElementwiseHandler(homogeneous=True, scalar_must_be="zero")]
TABLE[np_ops.Multiply] = [_PRODUCT, RawElementwiseHandler(homogeneous=True)]
TABLE[np_ops.TrueDivide] = [RawElementwiseHandler(homogeneous=True, scalar_must_be="tensor_first")]
TABLE[np_ops.Divide] = TABLE[np_ops.TrueDivide]
for _op in (nn_ops.Relu, nn_ops.LeakyRelu, np_ops.Absolute, np_ops.Negative):
    TABLE[_op] = [RawElementwiseHandler(homogeneous=True)]
for _name in (
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "Silu",
    "HardSilu",
    "Gelu",
    "Elu",
    "Selu",
    "Softplus",
    "Softsign",
    "Celu",
    "LogSigmoid",
    "HardTanh",
    "TanhShrink",
    "SparsePlus",
    "Squareplus",
    "SparseSigmoid",
    "HardShrink",
    "SoftShrink",
):
    TABLE[getattr(nn_ops, _name)] = [RawElementwiseHandler()]
for _op in (np_ops.Square, np_ops.Sqrt, np_ops.Exp, np_ops.Tanh, np_ops.Clip, np_ops.Power):
    TABLE[_op] = [RawElementwiseHandler()]


def handler_for(node, width, shared=False):
    """The handler of one call node (`width(t)`: channels of a tensor, or
    None). A layer called at several places is opaque (its weights cannot
    shrink for one call only), except a gate."""
    op = node.operation
    if shared and not isinstance(op, Gate):
        return OPAQUE
    own = type(op)
    for cls in own.__mro__:
        candidates = TABLE.get(cls)
        # A subclass is its base's kind only if it computes the same thing.
        if candidates is not None and (cls is own or own.call is cls.call):
            return next((h for h in candidates if h.accepts(node, width)), OPAQUE)
    return OPAQUE
