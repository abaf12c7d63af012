"""Pruning: a trial reports its validation metric every epoch; Optuna's pruner decides whether it
goes on. The decision is recorded as the run's stop reason ("pruned") like any other stop."""

from __future__ import annotations

import math
from typing import Any

import optuna

from ..callbacks import StopReason
from ..loop import Callback
from .space import SearchSection


def make_pruner(search: SearchSection, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=search.prune_startup,
                                           n_warmup_steps=search.min_epochs)
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.min_epochs,
                                                      reduction_factor=search.reduction_factor)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.min_epochs, max_resource=max(epochs, 1),
                                              reduction_factor=search.reduction_factor)
    return optuna.pruners.NopPruner()


class PruneCallback(Callback):
    """Reports `metric` at each epoch end (step = epoch) and stops the run when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def epoch_end(self, trainer, row: dict[str, Any]) -> StopReason | None:
        value = row.get(self.metric)
        if value is None or not math.isfinite(value):
            return None              # a non-finite run stops by itself, with its own reason
        epoch = row["epoch"]
        self.trial.report(float(value), epoch)
        if trainer.state.stop_reason is None and self.trial.should_prune():
            self.pruned_at = epoch
            return StopReason.PRUNED
        return None
