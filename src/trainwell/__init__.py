"""trainwell: train PyTorch networks well.

    import trainwell as tw
    run = tw.fit("recipe.toml", **{"optimizer.lr": 3e-3})
    run.history, run.metrics, run.model, run.path

Names are imported on first use, so `trainwell recipe` or `--help` do not pay for torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "api", "Run": "api", "resume": "resuming",
    "Recipe": "recipe", "load_recipe": "recipe",
    "TrainwellError": "errors", "RecipeError": "errors", "DataError": "errors", "CheckpointError": "errors",
}

__all__ = ["CheckpointError", "DataError", "Recipe", "RecipeError", "Run", "TrainwellError", "__version__",
           "fit", "load_recipe", "resume"]

if TYPE_CHECKING:
    from .api import Run, fit
    from .errors import CheckpointError, DataError, RecipeError, TrainwellError
    from .recipe import Recipe, load_recipe
    from .resuming import resume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
