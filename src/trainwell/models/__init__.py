"""Model builders: a registry from `model.kind` to a builder(section, in_shape, out_features)."""

from ..custom import refuse
from .cnn import build_cnn
from .layers import DropConnectLinear
from .mlp import activation_layer, build_mlp

MODELS = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(section, in_shape: tuple[int, ...], out_features: int):
    if section.kind == "custom":    # a module passed from Python, recorded by its run: nothing to build (custom.py)
        return refuse(section)
    return MODELS[section.kind](section, in_shape, out_features)


__all__ = ["MODELS", "DropConnectLinear", "activation_layer", "build_cnn", "build_model", "build_mlp"]
