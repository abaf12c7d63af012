"""`[train.average]`: the finishers by kind, and weight averaging (SWA, EMA; torch.optim.swa_utils).

`FINISHERS` maps each `kind` to its finisher (finish.py's interface): none -> finish.Finisher,
ema / swa -> WeightAveraging, snapshots -> ensemble.Snapshots, ensemble -> ensemble.EnsembleRun.

SWA (Izmailov et al. 2018): from `train.average.start_epoch` on, the weights at the end of every
epoch are averaged with equal weights (`AveragedModel`). The learning rate of that phase anneals
to `train.average.lr` like `SWALR`: `schedules.swa_lr`, a pure function of the step that build.py's
`lr(step)` composes (the Trainer is the one owner of the LR). The running batch-norm statistics of the individual weights do
not belong to their average, so they are recomputed with one pass over the training rows
(`update_bn`).

EMA: after every optimizer step avg <- decay * avg + (1 - decay) * w, buffers included
(`get_ema_multi_avg_fn`, `use_buffers=True`): the batch-norm statistics are averaged with the
weights and need no extra pass.

Both are one finisher; `conclude` evaluates the averaged network next to the
plain one, saves it as checkpoints/averaged.safetensors, and hands it back as the run's model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from .ensemble import EnsembleRun, Snapshots
from .finish import Finisher, Outcome, Save, evaluate_splits, plain_weights, pointer
from .loop import has_batchnorm

AVERAGED = "averaged.safetensors"


def training_batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """The training rows in order, in batches; a last batch of one row is left out (batch norm
    cannot take its statistics from one row)."""
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    return [b for b in batches if len(b) > 1] or batches


class WeightAveraging(Finisher):
    """SWA or EMA of the trainer's model, kept in an AveragedModel beside it."""

    def __init__(self, average) -> None:
        self.kind = average.kind              # "ema" or "swa"
        self.decay = getattr(average, "decay", None)
        self.swa = average if average.kind == "swa" else None
        self.averaged: AveragedModel | None = None
        self.epochs: list[int] = []                 # SWA: the epochs whose end weights were averaged
        self._pending: dict[str, torch.Tensor] | None = None
        self.note: str | None = None

    @classmethod
    def from_recipe(cls, recipe, quiet: bool = True) -> WeightAveraging:
        return cls(recipe.train.average)

    # ------------------------------------------------------------------------------ loop events
    def fit_start(self, trainer) -> None:
        if self.averaged is None:
            if trainer.state.step > 0 and self._pending is None:
                self.note = (f"resumed at epoch {trainer.state.epoch} without the average's state: it holds the "
                             "weights from there on only")
            self.averaged = self._wrap(trainer.model)
            if self._pending is not None:
                self.averaged.load_state_dict(self._pending)
                self._pending = None

    def step_end(self, trainer) -> None:
        if self.kind == "ema":
            self.averaged.update_parameters(trainer.model)

    def epoch_end(self, trainer, row: dict[str, Any]) -> None:
        if self.kind != "swa":
            return
        epoch = trainer.state.epoch
        if epoch >= self.swa.start_epoch and math.isfinite(row["train_loss"]):
            self.averaged.update_parameters(trainer.model)
            self.epochs.append(epoch)

    def _wrap(self, model: nn.Module) -> AveragedModel:
        if self.kind == "ema":
            return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)
        return AveragedModel(model)

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint (runstate.py): a resume or a NaN rollback restores the average."""
        return {"average": self.averaged.state_dict() if self.averaged is not None else {},
                "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores the average; before `fit_start` it is kept until the model to wrap is known."""
        self.epochs = list(state["epochs"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["average"])
        else:
            self._pending = state["average"]

    # ------------------------------------------------------------------------------ the end
    def averaged_model(self, train_x: torch.Tensor, batch_size: int) -> nn.Module | None:
        """The averaged network (batch-norm statistics recomputed for SWA), or None when nothing was averaged."""
        if self.averaged is None or int(self.averaged.n_averaged) == 0:
            return None
        module = self.averaged.module
        if self.kind == "swa" and self.swa.update_bn and has_batchnorm(module):
            update_bn(training_batches(train_x, batch_size), module)
        module.eval()
        return module

    def conclude(self, trainer, prepared, save: Save) -> Outcome:
        """The averaged model (None when nothing was averaged) and its report section."""
        n = int(self.averaged.n_averaged) if self.averaged is not None else 0
        section: dict[str, Any] = {"kind": self.kind, "n_averaged": n}
        if self.note:
            section["note"] = self.note
        if self.kind == "ema":
            section["decay"] = self.decay
        else:
            section.update(start_epoch=self.swa.start_epoch, epochs=self.epochs, lr=self.swa.lr,
                           update_bn=self.swa.update_bn and has_batchnorm(trainer.model))
        model = self.averaged_model(prepared.train.x, trainer.settings.batch_size)
        if model is None:
            section["reason"] = (f"nothing averaged: training stopped at epoch {trainer.state.stopped_epoch} "
                                 f"({trainer.state.stop_reason}) before train.average.start_epoch = "
                                 f"{self.swa.start_epoch}; the plain model is the run's model")
            return Outcome(None, section, plain_weights(trainer))
        section.update(evaluate_splits(trainer, prepared, model))
        section["checkpoint"] = save(AVERAGED, model, {"kind": self.kind, "n_averaged": n})
        return Outcome(model, section, pointer([section["checkpoint"]]))


FINISHERS: dict[str, type[Finisher]] = {"none": Finisher, "ema": WeightAveraging, "swa": WeightAveraging,
                                        "snapshots": Snapshots, "ensemble": EnsembleRun}


def finisher_for(recipe, quiet: bool = True) -> Finisher:
    """The finisher of the recipe's `[train.average] kind`."""
    return FINISHERS[recipe.train.average.kind].from_recipe(recipe, quiet)
