"""`trainwell doctor RUN_DIR --try`: prove the prescription. Re-run the run's recipe with the first
finding's overrides (same seed, hence the same split) for a short budget, and compare the monitored
validation value before and after.

"Before" is the run itself when the budget is its own number of epochs; with a shorter budget the
recipe is re-run unchanged for that budget as well, so both sides train equally long. The value
compared is the one the run returns: the best epoch's when early stopping restores it, else the
last epoch's. A NaN or infinite value counts as the worst possible.

One seed alone cannot tell a remedy's effect from the seed's. When the run is short (its epochs
took under SPREAD_SECONDS), both sides are re-run with the next seed as well, on the same rows (the
run's splits.npz; a synthetic source's rows are drawn from the seed, so there they differ too): the
remedy is confirmed only when it helps on both seeds, and the verdict says when its change is
smaller than the seed-to-seed spread of the value itself. For a longer run the verdict is of one
seed, and says so.
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
from ..data.sources import CUSTOM_SOURCE, SYNTHETIC
from ..data.split import SPLITS_FILE
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
    again: tuple[float, float] = (float("nan"), float("nan"))   # (before, after) at the next seed
    again_note: str = ""            # which seed and rows, or why the second seed was not run

    @property
    def improved(self) -> bool:
        """Whether the remedy moved the value the right way on the run's own seed."""
        return bool(self.overrides) and _better(self.after, self.before, self.mode)

    @property
    def measured_twice(self) -> bool:
        return not all(math.isnan(v) for v in self.again)

    @property
    def confirmed(self) -> bool:
        """Improved on the run's seed, and on the next one when it was run."""
        return self.improved and (not self.measured_twice or _better(self.again[1], self.again[0], self.mode))

    @property
    def spread(self) -> float:
        """The seed-to-seed spread of the value itself: |before at the next seed - before| (NaN: one seed)."""
        return abs(self.again[0] - self.before)

    def summary(self) -> str:
        if not self.overrides:
            return f"nothing to try: {self.note}"
        column = self.compared or self.monitor
        why = (f" (in place of {self.monitor}, which the remedy measures differently)"
               if column != self.monitor else "")
        if self.measured_twice:
            b, a = self.again
            verdict = "confirmed on 2 seeds" if self.confirmed else "not confirmed" + (
                f": not at {self.again_note}" if self.improved else "")
            seeds = f"; at {self.again_note}: {b:.4g} -> {a:.4g}"
            if math.isfinite(self.spread) and abs(self.after - self.before) <= self.spread:
                seeds += (f"; the change is within the seed-to-seed spread of {column} "
                          f"({self.spread:.4g})")
        else:
            verdict = ("confirmed" if self.confirmed else "not confirmed") + (
                " on one seed" if self.again_note else "")
            seeds = f"; {self.again_note}" if self.again_note else ""
        return (f"{self.rule}: {set_flags(self.overrides)} for {self.epochs} epochs: {column} "
                f"{self.before:.4g} -> {self.after:.4g}{why} ({verdict}){seeds}"
                + (f"; {self.note}" if self.note else ""))


def _better(new: float, old: float, mode: str) -> bool:
    n, o = _worst_if_bad(new, mode), _worst_if_bad(old, mode)
    return n < o if mode == "min" else n > o


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
SPREAD_SECONDS = 60.0       # a run whose epochs took less is tried on the next seed too


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
        again, again_note = (float("nan"), float("nan")), ""
        seconds = sum(number(r.get("seconds")) for r in ev.history) * budget / max(len(ev.history), 1)
        if math.isfinite(seconds) and seconds < SPREAD_SECONDS:
            seed_kw = {**kw, "seed": recipe.seed + 1}
            same_rows = recipe.data.source not in SYNTHETIC and (run_dir / SPLITS_FILE).is_file()
            if same_rows:
                seed_kw["data.split_file"] = str(run_dir / SPLITS_FILE)
            try:
                sides = [fit(recipe, out=base / f"seed{recipe.seed + 1}-{side}", model=copy.deepcopy(model),
                             **{**seed_kw, **extra}) for side, extra in (("before", {}), ("after", first.overrides))]
            except TrainwellError as exc:       # the run's own seed is measured: its verdict stands, on one seed
                again_note = f"the second seed's re-run failed: {exc}"
            else:
                again = (value(sides[0].history, sides[0].metrics, best),
                         value(sides[1].history, sides[1].metrics,
                               bool(first.overrides.get("stopping.restore_best", best))))
                again_note = f"seed {recipe.seed + 1}" + (" (the same rows)" if same_rows else " (its own synthetic rows)")
        else:
            again_note = ("the second seed was not run: the run's " + (
                f"epochs take ~{seconds:.0f} s" if math.isfinite(seconds) else "epochs' times are not recorded"))
    note = "of the model each run returns (metrics.json val), the averaged one after" if returned else ""
    return TryResult(first.rule, first.overrides, monitor, column_mode or mode, column, before, after, budget,
                     note=note, again=again, again_note=again_note)
