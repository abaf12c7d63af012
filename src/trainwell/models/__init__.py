"""Model builders: a registry from `model.kind` to a builder(section, in_shape, out_features)."""

from .cnn import build_cnn
from .layers import DropConnectLinear
from .mlp import activation_layer, build_mlp

MODELS = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(section, in_shape: tuple[int, ...], out_features: int):
    return MODELS[section.kind](section, in_shape, out_features)


__all__ = ["MODELS", "DropConnectLinear", "activation_layer", "build_cnn", "build_model", "build_mlp"]
