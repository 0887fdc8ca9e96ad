"""MobileNetV2's block table and channel rounding, with no imports: the
Keras network (`tfsparse.models.mobilenet_v2`) and its PyTorch twin in
`bench/torch_side/models.py` (an environment without TensorFlow, which loads
this file by path) build from the same numbers."""

# (expansion t, output channels c, blocks n, stride of the first block s). The
# ImageNet network's strides, with the stem's and the 24-channel stage's set to
# 1 for 32x32 inputs (the final feature map is 4x4 instead of 1x1).
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LAST = 1280


def divisible(channels, divisor=8):
    """`channels` rounded to a multiple of `divisor`, never 10 % below it."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded
