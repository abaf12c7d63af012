"""trainwell: train PyTorch networks well.

    import trainwell as tw
    run = tw.fit("recipe.toml", **{"optimizer.lr": 3e-3})
    run.history, run.metrics, run.model, run.path
    run.history_df(), run.plot(), run.report()          # in a notebook: a DataFrame, a Figure, the report
    tw.lab("init", depth=20, gain=5/3), tw.lr_find("recipe.toml"), tw.doctor(run)
    model = tw.load(run.path)            # the trained model with its preprocessing (model=Net() for your own module)
    tw.predict(model, "new.csv")         # or tw.predict(RUN_DIR, rows): a DataFrame of predictions

Names are imported on first use, so `trainwell recipe` or `--help` do not pay for torch.
"""

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "fit": "api", "Run": "api", "resume": "resuming", "load": "predict", "predict": "predict",
    "Recipe": "recipe", "load_recipe": "recipe",
    "TrainwellError": "errors", "RecipeError": "errors", "DataError": "errors", "CheckpointError": "errors",
    "TestSplitLocked": "errors", "RecipeDeprecation": "errors", "search": "search.run", "fit_protocol": "search.protocol",
    "lab": "notebook", "lr_find": "notebook", "doctor": "notebook",
}

__all__ = ["CheckpointError", "DataError", "Recipe", "RecipeDeprecation", "RecipeError", "Run", "TestSplitLocked",
           "TrainwellError", "__version__", "doctor", "fit", "fit_protocol", "lab", "load", "load_recipe", "lr_find",
           "predict", "resume", "search"]

if TYPE_CHECKING:
    from .api import Run, fit
    from .errors import (
        CheckpointError,
        DataError,
        RecipeDeprecation,
        RecipeError,
        TestSplitLocked,
        TrainwellError,
    )
    from .notebook import doctor, lab, lr_find
    from .predict import load, predict
    from .recipe import Recipe, load_recipe
    from .resuming import resume
    from .search.protocol import fit_protocol
    from .search.run import search


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


class _Package(ModuleType):
    """`import trainwell.search.<module>` binds the subpackage to the attribute `search` of this
    package; the public name `trainwell.search` is the search function, so that binding is skipped
    (the subpackage stays importable by its dotted name through sys.modules)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
