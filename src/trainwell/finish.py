"""The finisher interface: what a run returns, and where `predict` finds it.

`[train.average] kind` picks one finisher (averaging.FINISHERS): "none" (this module's
`Finisher`: the trainer's own network), "ema" and "swa" (averaging.WeightAveraging), "snapshots"
and "ensemble" (ensemble.py). Each is a loop callback (it may keep state, saved by name in every
checkpoint) and, after training, `conclude` returns an `Outcome`:

    model     the network the run returns and scores on the test split (None: the trainer's own)
    section   its metrics.json section (averaged epochs, members, why nothing was averaged, ...)
    weights   where that network's weights are in the run folder: the checkpoint files, the prefix
              of their tensors, and whether they are ensemble members; `fit` stores it in
              metrics.json as "weights" and `predict` loads exactly those
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .loop import Callback
from .rundir import BEST, CHECKPOINTS, LAST

Save = Callable[[str, nn.Module, dict[str, Any]], "str | None"]   # (file name, model, meta) -> its path or None


@dataclass
class Outcome:
    model: nn.Module | None           # None: the trainer's own network is the run's
    section: dict[str, Any] | None    # metrics.json section, stored under section["kind"]
    weights: dict[str, Any] | None    # {"files": [...], "tensors": prefix, "ensemble": bool}; None: not saved


def pointer(files: list[str | None], tensors: str = "model", ensemble: bool = False) -> dict[str, Any] | None:
    """The pointer to saved weights, or None when one of the files was not written (no run folder)."""
    if not files or any(f is None for f in files):
        return None
    return {"files": list(files), "tensors": tensors, "ensemble": ensemble}


def plain_weights(trainer) -> dict[str, Any] | None:
    """Where the trainer's own final network is saved: the best epoch's weights (best checkpoint, or
    the best weights held in the last one) when they were restored, else the last epoch's."""
    s = trainer.settings
    if trainer.run_dir is None:
        return None
    if s.restore_best and trainer.best_state is not None:
        if s.save_best:
            return pointer([f"{CHECKPOINTS}/{BEST}"])
        return pointer([f"{CHECKPOINTS}/{LAST}"], "best") if s.save_last else None
    return pointer([f"{CHECKPOINTS}/{LAST}"]) if s.save_last else None


def evaluate_splits(trainer, prepared, model: nn.Module) -> dict[str, dict[str, float]]:
    """{"val": ..., "test": ...} of one network, over the whole splits."""
    return {"val": trainer.evaluate(prepared.val, model) if prepared.val is not None else {},
            "test": trainer.evaluate(prepared.test, model) if prepared.test is not None else {}}


class Finisher(Callback):
    """`[train.average] kind = "none"`: the run returns the trainer's own network. The other kinds
    subclass it: `from_recipe` builds one, the loop events collect what it needs, `conclude` decides."""

    kind = "none"

    @classmethod
    def from_recipe(cls, recipe, quiet: bool = True) -> Finisher:
        return cls()

    def conclude(self, trainer, prepared, save: Save) -> Outcome:
        return Outcome(None, None, plain_weights(trainer))
