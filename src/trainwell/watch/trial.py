"""`trainwell doctor RUN_DIR --try`: prove the prescription. Re-run the run's recipe with the first
finding's overrides (same seed, hence the same split) for a short budget, and compare the monitored
validation value before and after.

"Before" is the run itself when the budget is its own number of epochs; with a shorter budget the
recipe is re-run unchanged for that budget as well, so both sides train equally long. The value
compared is the one the run returns: the best epoch's when early stopping restores it, else the
last epoch's. A NaN or infinite value counts as the worst possible.

Both sides are measured with the same ruler. The validation loss is the training criterion
evaluated on the validation split, so a remedy that changes the criterion (label smoothing, class
weights: `loss.*`) or the space the loss is computed in (`data.target_normalize`) changes what
`val_loss` measures: a smoothed cross-entropy has a floor above zero, a standardized target's
squared error is ~1e4 times smaller than the raw one's. For such a remedy the monitored `val_loss`
is replaced by the same quantity computed the same way on both sides: the plain log-loss of the
predicted probabilities (`val_nll`) for a classifier, the squared error in the target's units
(`val_mse`) for a regression.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import fit
from ..custom import class_name
from ..data.sources import CUSTOM_SOURCE
from ..errors import TrainwellError
from ..recipe import load_recipe
from .doctor import diagnose, load_evidence, set_flags
from .evidence import Evidence, number


@dataclass
class TryResult:
    rule: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    monitor: str = ""
    mode: str = "min"
    compared: str = ""
    before: float = float("nan")
    after: float = float("nan")
    epochs: int = 0
    note: str = ""

    @property
    def confirmed(self) -> bool:
        if not self.overrides:
            return False
        b, a = _worst_if_bad(self.before, self.mode), _worst_if_bad(self.after, self.mode)
        return a < b if self.mode == "min" else a > b

    def summary(self) -> str:
        if not self.overrides:
            return f"nothing to try: {self.note}"
        verdict = "confirmed" if self.confirmed else "not confirmed"
        column = self.compared or self.monitor
        why = (f" (in place of {self.monitor}, which the remedy measures differently)"
               if column != self.monitor else "")
        return (f"{self.rule}: {set_flags(self.overrides)} for {self.epochs} epochs: {column} "
                f"{self.before:.4g} -> {self.after:.4g}{why} ({verdict})"
                + (f"; {self.note}" if self.note else ""))


def _worst_if_bad(v: float, mode: str) -> float:
    if math.isfinite(v):
        return v
    return math.inf if mode == "min" else -math.inf


def monitored(history: list[dict[str, Any]], monitor: str, mode: str, best: bool, column: str | None = None) -> float:
    """`column` (default: the monitored value) of the model a run returns: at its best epoch by the
    monitored value (restore_best), or at its last epoch."""

    column = column or monitor
    if not history:
        return float("nan")
    if not best:
        return number(history[-1].get(column))
    scores = [number(r.get(monitor)) for r in history]
    finite = [i for i, v in enumerate(scores) if math.isfinite(v)]
    if not finite:
        return float("nan")
    pick = (min if mode == "min" else max)(finite, key=lambda i: scores[i])
    return number(history[pick].get(column))


RULER_CHANGES = ("loss.", "data.target_normalize")


def compared_column(monitor: str, task: str, overrides: dict[str, Any]) -> tuple[str, str]:
    """(column, mode) that measures both sides alike: the monitored column, unless it is the loss and
    the remedy changes how the loss is computed (see the module's docstring)."""
    if monitor != "val_loss" or not any(k.startswith(RULER_CHANGES) for k in overrides):
        return monitor, ""
    return ("val_mse" if task == "regression" else "val_nll"), "min"


def first_prescription(ev: Evidence):
    """The first finding at warning or severe level (the root cause), or None."""
    return next((f for f in diagnose(ev) if f.cause is None and f.severity in ("warning", "severe")), None)


def check_rerunnable(run_dir: str | Path, data: Any = None, model: Any = None) -> None:
    """--try re-runs the run's recipe: one line saying what to do instead when the run trained a
    module or data passed from Python and they are not given again (checked before anything is
    written)."""
    ev = load_evidence(Path(run_dir))
    recipe = load_recipe(ev.recipe)
    if model is None and recipe.model.kind == "custom":
        raise TrainwellError(f"doctor --try: {run_dir} trained a module passed from Python ({recipe.model.module}, "
                             f"{recipe.model.parameters} parameters), which the command line cannot rebuild; try "
                             "the remedy in Python: trainwell.watch.trial.try_remedy(RUN_DIR, "
                             f"model={class_name(recipe.model)}()" + (", data=(x, y))" if data is None and
                                                                      _in_memory(ev, recipe) else ")"))
    if data is None and _in_memory(ev, recipe):
        raise TrainwellError(f"doctor --try: {run_dir} was trained on in-memory data (fit(data=...)); "
                             "re-run it from Python with trainwell.watch.trial.try_remedy(run_dir, data=(x, y))")


def _in_memory(ev: Evidence, recipe) -> bool:
    return recipe.data.source == CUSTOM_SOURCE or (ev.facts.get("data") or {}).get("name") == "data"


def try_remedy(run_dir: str | Path, epochs: int | None = None, out: str | Path | None = None,
               data: Any = None, model: Any = None) -> TryResult:
    """The first remedy tried: the recipe re-run with its overrides (a module passed as `model` is
    copied for each re-run, so each starts from the same weights)."""
    run_dir = Path(run_dir)
    check_rerunnable(run_dir, data, model)
    ev = load_evidence(run_dir)
    recipe = load_recipe(ev.recipe)
    monitor, mode = recipe.stopping.monitor, recipe.stopping.mode
    first = first_prescription(ev)
    if first is None:
        return TryResult(None, monitor=monitor, mode=mode, note="the doctor has no warning or severe finding")
    if not first.overrides:
        return TryResult(first.rule, monitor=monitor, mode=mode,
                         note=f"the first finding ({first.rule}) has no recipe change to try: {first.remedy}")
    own = recipe.train.epochs
    budget = epochs or own
    best = recipe.stopping.restore_best
    kw: dict[str, Any] = {"quiet": True, "force": True, "data": data, "train.epochs": budget,
                          "watch.report": False}
    column, column_mode = compared_column(monitor, ev.task, first.overrides)
    # A remedy that averages (an ensemble, SWA, EMA) returns another model than the network whose epochs
    # the history records: both sides are then read from metrics.json's val, the returned model's.
    returned = "train.average.kind" in first.overrides and column.startswith("val_")

    def value(history, metrics, restored: bool) -> float:
        if returned:
            return number((metrics.get("val") or {}).get(column[len("val_"):]))
        return monitored(history, monitor, mode, restored, column)

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = Path(out) if out is not None else Path(tmp)
        if budget == own:
            before = value(ev.history, ev.metrics, best)
        else:
            again = fit(recipe, out=base / "before", model=copy.deepcopy(model), **kw)
            before = value(again.history, again.metrics, best)
        try:
            after_run = fit(recipe, out=base / "after", model=copy.deepcopy(model), **{**kw, **first.overrides})
            after = value(after_run.history, after_run.metrics, bool(first.overrides.get("stopping.restore_best", best)))
        except TrainwellError as exc:
            return TryResult(first.rule, first.overrides, monitor, column_mode or mode, column, before, float("nan"),
                             budget, note=f"the re-run failed: {exc}")
    if returned:
        return TryResult(first.rule, first.overrides, monitor, column_mode or mode, column, before, after, budget,
                         note="of the model each run returns (metrics.json val), the averaged one after")
    return TryResult(first.rule, first.overrides, monitor, column_mode or mode, column, before, after, budget)
