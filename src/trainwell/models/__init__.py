"""Model builders: a registry from `model.kind` to a builder(section, in_shape, out_features)."""

from collections import OrderedDict

from torch import nn

from ..custom import refuse
from ..errors import RecipeError
from .cnn import build_cnn
from .embedding import EntityEmbeddings, embedding_columns
from .layers import DropConnectLinear
from .mlp import activation_layer, build_mlp

MODELS = {"mlp": build_mlp, "cnn": build_cnn}


def build_model(section, in_shape: tuple[int, ...], out_features: int, embedded=()):
    """The network of `section` for rows of `in_shape`; `embedded`: (feature index, levels, width) of the
    columns that enter through entity embeddings (an `embed` layer first, models/embedding.py)."""
    if section.kind == "custom":    # a module passed from Python, recorded by its run: nothing to build (custom.py)
        return refuse(section)
    if not embedded:
        return MODELS[section.kind](section, in_shape, out_features)
    if section.kind != "mlp" or len(in_shape) != 1:
        raise RecipeError([f"model.kind: got {section.kind!r}, but the data has entity-embedded string columns "
                           "(data.categorical = \"auto\"), which only the mlp takes; use model.kind = \"mlp\" or "
                           "data.categorical = \"onehot\""])
    embed = EntityEmbeddings(in_shape[0], list(embedded))
    net = MODELS["mlp"](section, (embed.out_features,), out_features)
    return nn.Sequential(OrderedDict([("embed", embed), *net.named_children()]))


__all__ = ["MODELS", "DropConnectLinear", "EntityEmbeddings", "embedding_columns", "activation_layer", "build_cnn", "build_model", "build_mlp"]
