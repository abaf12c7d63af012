"""The CNN builder: [conv -> norm -> activation -> pool] per entry of `model.channels`, then
global average pooling -> dropout -> linear head.

Convolutions use "same" padding (odd kernels), so only pooling shrinks the image; the last
block is not pooled because global average pooling follows. Layers are named (conv1, norm1,
act1, pool1, ..., gap, flatten, drop, head) for probes and fine-tuning.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .layers import Dropout
from .mlp import activation_layer


def build_cnn(section, in_shape: tuple[int, ...], out_features: int) -> nn.Sequential:
    if len(in_shape) != 3:
        raise ValueError(f"model.kind: cnn needs images (N, C, H, W), the data has rows of shape "
                         f"{tuple(in_shape)}; use model.kind = \"mlp\" or an image source")
    channels, side = in_shape[0], min(in_shape[1:])
    n_pools = len(section.channels) - 1 if section.pool != "none" else 0
    if side < 2**n_pools:
        raise ValueError(f"model.channels: {len(section.channels)} blocks pool a {side}-pixel image "
                         f"{n_pools} times; use fewer blocks, larger images or model.pool = \"none\"")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(section.channels, start=1):
        # A bias before batch norm is cancelled by its mean subtraction; drop it.
        layers[f"conv{i}"] = nn.Conv2d(channels, width, section.kernel_size, padding=section.kernel_size // 2,
                                       bias=section.norm != "batch")
        if section.norm == "batch":
            layers[f"norm{i}"] = nn.BatchNorm2d(width)
        layers[f"act{i}"] = activation_layer(section.activation, section.negative_slope)
        if section.pool != "none" and i < len(section.channels):
            layers[f"pool{i}"] = nn.MaxPool2d(2) if section.pool == "max" else nn.AvgPool2d(2)
        channels = width
    layers["gap"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    if section.dropout > 0:
        layers["drop"] = Dropout(section.dropout)
    layers["head"] = nn.Linear(channels, out_features)
    return nn.Sequential(layers)
