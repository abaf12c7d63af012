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

After training, `fit` calls this module's `conclude`: the test split evaluated once, the finisher's
outcome, the returned model's reliability diagram (`calibration`), all gathered into metrics.json.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .calibration import split_outputs, temperature_scale
from .checkpoint import prefixed, save_checkpoint
from .loop import Callback
from .metrics import probabilities, reliability
from .prepare import Prepared
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


def conclude(trainer, finisher: Finisher, prepared: Prepared, recipe,
             lock_test: bool) -> tuple[dict[str, Any], Prepared]:
    """metrics.json's contents, with the test split evaluated once (a locked run: not at all), and the
    data the later steps may see. The finisher decides the returned model: when it gives one, that
    model is the run's (metrics, facts, predict) and the plain model is reported next to it."""
    ds, setup = prepared.dataset, trainer.setup
    # A locked run's later steps see no test split at all (not even its rows, for the leakage check).
    seen = replace(prepared, test=None, indices={**prepared.indices, "test": prepared.indices["test"][:0]}) \
        if lock_test else prepared
    plain = evaluate_splits(trainer, seen, trainer.model)
    metrics: dict[str, Any] = {
        "test": plain["test"], "val": plain["val"],
        "best_epoch": trainer.best_epoch_number, "stopped_epoch": trainer.state.stopped_epoch,
        "stop_reason": trainer.state.stop_reason, "seed": recipe.seed,
        "task": ds.task, "loss": setup.loss_kind, "classes": list(ds.classes),
        "rows": {k: int(len(v)) for k, v in prepared.indices.items()},
        "device": str(setup.device), "precision": recipe.train.precision, "environment": environment(),
        "data_warnings": prepared.warnings, "network": network_record(recipe, setup.model),
    }
    if ds.target_scale is not None:     # metrics are in the target's units, the loss in the scaled space
        metrics["target_normalize"] = ds.target_scale.kind
    if lock_test:
        metrics["test_locked"] = True
    if setup.finetuned is not None:
        metrics["finetune"] = setup.finetuned
    if trainer.guard.events:
        metrics["nan_events"] = trainer.guard.events
    if setup.forward is not None:
        metrics["compile"] = setup.forward.report()
    outcome = finisher.conclude(trainer, seen, saver(trainer.run_dir, trainer.extra_tensors))
    if outcome.section is not None:
        metrics[outcome.section["kind"]] = outcome.section
        metrics["model"] = "plain"
    if outcome.model is not None:
        metrics["plain"] = plain
        metrics.update(model=outcome.section["kind"], val=outcome.section["val"], test=outcome.section["test"])
        trainer.model = outcome.model    # the doctor's facts (suspects, confusion) are about the returned model
    if recipe.calibrate == "temperature":     # T fitted on the validation split; the test metrics are the scaled model's
        before = calibration(trainer.model, seen, setup, setup.settings.eval_batch_size)
        trainer.model = temperature_scale(trainer, seen, metrics, lambda m: evaluate_splits(trainer, seen, m))
        metrics["temperature"]["reliability_before"] = before
    diagram = calibration(trainer.model, seen, setup, setup.settings.eval_batch_size)
    if diagram is not None:
        metrics["calibration"] = diagram
    metrics["weights"] = outcome.weights     # where predict finds the returned model
    return metrics, seen


def saver(run_dir: Path | None, saved: dict[str, torch.Tensor]) -> Save:
    """A finisher's `save(name, model, meta)`: the model with the data statistics, in checkpoints/."""
    def save(name: str, model: nn.Module, meta: dict[str, Any]) -> str | None:
        if run_dir is None:
            return None
        save_checkpoint(run_dir / CHECKPOINTS / name, {**prefixed("model", model.state_dict()), **saved}, meta)
        return f"{CHECKPOINTS}/{name}"
    return save


@torch.inference_mode()
def calibration(model: nn.Module, prepared: Prepared, setup, batch: int) -> dict | None:
    """The returned model's reliability diagram on the test split (else validation), for the report
    (evaluated under the run's precision, as its metrics are)."""
    task, loss_kind = setup.task, setup.loss_kind
    split = "test" if prepared.test is not None else "val"
    part = prepared.test if prepared.test is not None else prepared.val
    if task == "regression" or loss_kind == "hinge" or part is None or part.y.dim() != 1:
        return None
    probs = probabilities(split_outputs(model, part.x, setup, batch), task, loss_kind)
    if probs is None or not bool(torch.isfinite(probs).all()):
        return None
    return {"split": split, **reliability(probs.cpu(), part.y.cpu())}


def network_record(recipe, net: nn.Module) -> dict[str, Any]:
    """metrics.json's account of the network: the recipe's kind (or a custom module's import path) and the
    trainable parameter count of what was trained."""
    out: dict[str, Any] = {"kind": recipe.model.kind}
    if recipe.model.kind == "custom":
        out["module"] = recipe.model.module
    out["parameters"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return out


def environment() -> dict[str, str]:
    """metrics.json's versions of what ran the run."""
    return {"trainwell": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
