"""The MLP builder: [linear -> norm -> activation -> dropout] x depth -> linear head.

Layers are named (fc1, norm1, act1, drop1, ..., head) so that probes, fine-tuning and the
report can refer to them.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .layers import DropConnectLinear, Dropout


def activation_layer(name: str, negative_slope: float = 0.01) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    return {"relu": nn.ReLU, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "silu": nn.SiLU,
            "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}[name]()


def build_mlp(section, in_shape: tuple[int, ...], out_features: int) -> nn.Sequential:
    in_features = 1
    for d in in_shape:
        in_features *= d
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if len(in_shape) > 1:
        layers["flatten"] = nn.Flatten()
    width = in_features
    for i, h in enumerate(section.hidden, start=1):
        # A bias before batch norm is cancelled by its mean subtraction; drop it.
        bias = section.norm != "batch"
        layers[f"fc{i}"] = (DropConnectLinear(width, h, section.dropconnect, bias=bias) if section.dropconnect
                            else nn.Linear(width, h, bias=bias))
        if section.norm == "batch":
            layers[f"norm{i}"] = nn.BatchNorm1d(h)
        elif section.norm == "layer":
            layers[f"norm{i}"] = nn.LayerNorm(h)
        layers[f"act{i}"] = activation_layer(section.activation, section.negative_slope)
        if section.dropout > 0:
            layers[f"drop{i}"] = Dropout(section.dropout)
        width = h
    layers["head"] = nn.Linear(width, out_features)
    return nn.Sequential(layers)
