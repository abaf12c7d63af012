"""A run given its own module or data from Python, recorded as such.

`tw.fit(recipe, model=Net(), data=(x, y))` records `model.kind = "custom"` with the class's import
path and parameter count (no MLP keys are claimed for it), and `data.source = "custom"` with the
arrays' shapes, dtypes and sha256 (in data.json, facts.json and the report). The CLI cannot rebuild
such a module: `trainwell fit RUN/recipe.toml`, `resume` and `predict` say in one line how to
load it in Python instead (`tw.load(RUN_DIR, model=Net())`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from .data.sources import CUSTOM_SOURCE
from .data.split import data_sha256
from .errors import RecipeError
from .recipe import CustomSection


def import_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def record(recipe, model: nn.Module | None, data: Any):
    """`recipe` as the run really was: a custom module's kind, import path and parameter count in place
    of the recipe's [model]; `data.source = "custom"` when the data was passed from Python."""
    require(recipe, model)
    update: dict[str, Any] = {}
    if model is not None:
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        update["model"] = CustomSection(module=import_path(model), parameters=count)
    if data is not None:
        update["data"] = recipe.data.model_copy(update={"source": CUSTOM_SOURCE})
    return recipe.model_copy(update=update) if update else recipe


def arrays_record(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """What identifies data passed as arrays: shapes, dtypes (as given) and the sha256 of both."""
    return {"x": {"shape": list(x.shape), "dtype": str(x.dtype)}, "y": {"shape": list(y.shape), "dtype": str(y.dtype)},
            "sha256": data_sha256(x, y)}


def class_name(section) -> str:
    return (section.module or "Net").rsplit(".", 1)[-1]


def hint(section) -> str:
    """One line: what the run trained and how to use it from Python."""
    name = class_name(section)
    return (f"model.kind: 'custom': this run trained a module passed from Python ({section.module or 'unknown'}, "
            f"{section.parameters} parameters), which the command line cannot rebuild; in Python, "
            f"tw.load(RUN_DIR, model={name}()) returns it trained (use it with tw.predict), and "
            f"tw.fit(RECIPE, model={name}()) or tw.resume(RUN_DIR, model={name}()) trains it")


def require(recipe, model: nn.Module | None) -> None:
    """A recipe recorded from a custom module needs that module back (one line saying how, else)."""
    if recipe.model.kind == "custom" and model is None:
        refuse(recipe.model)


def refuse(section, in_shape: tuple[int, ...] = (), out_features: int = 0) -> nn.Module:
    """The model builder of kind "custom": there is nothing to build from the recipe."""
    raise RecipeError([hint(section)])
