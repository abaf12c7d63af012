"""trainwell: train PyTorch networks well.

    import trainwell as tw
    run = tw.fit("recipe.toml", **{"optimizer.lr": 3e-3})
    run.history, run.metrics, run.model, run.path
"""

__version__ = "0.1.0"

from .api import Run, fit  # noqa: E402
from .errors import CheckpointError, DataError, RecipeError, TrainwellError  # noqa: E402
from .recipe import Recipe, load_recipe  # noqa: E402

__all__ = ["CheckpointError", "DataError", "Recipe", "RecipeError", "Run", "TrainwellError", "__version__",
           "fit", "load_recipe"]
