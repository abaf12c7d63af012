"""The protocol, by the book: hyperparameters (and the epoch count) are chosen on the validation
split with the test split locked; the chosen recipe is then retrained on train+validation for the
chosen number of epochs (no early stopping: nothing is left to validate on) and the test split is
evaluated once, by that final run.

`trainwell fit --protocol RECIPE` does it for one recipe: a selection run (train, validate, test
locked) finds the best epoch, a final run retrains and tests. `trainwell search` does it for the
best trial of a study.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..api import fit
from ..errors import RecipeError
from ..recipe import Recipe
from ..rundir import METRICS, RECIPE, atomic_write_text, create_run_dir, write_json
from .space import apply_values

SELECT, FINAL = "select", "final"

# Trials run without the watch (per-layer probes, doctor, report): it costs time in every trial
# and the final run, which keeps the recipe's own watch settings, is the one worth explaining.
_QUIET_WATCH = {"watch.probes": False, "watch.doctor": False, "watch.report": False, "watch.tensorboard": False}


def _base(recipe: Recipe) -> dict[str, Any]:
    raw = recipe.to_dict()
    raw.pop("search", None)
    return raw


def trial_recipe(recipe: Recipe, values: dict[str, Any]) -> Recipe:
    """The recipe of one trial: the searched values set, no [search], the watch off."""
    return Recipe.from_dict(apply_values(Recipe, _base(recipe), {**values, **_QUIET_WATCH}))


def final_recipe(recipe: Recipe, values: dict[str, Any], epochs: int) -> Recipe:
    """The retrain: chosen values, train+validation rows, exactly `epochs` epochs, nothing monitored on
    validation. The same split seed keeps the test rows the same."""
    return Recipe.from_dict(apply_values(Recipe, _base(recipe), {
        **values, "data.train_on": "train+val", "train.epochs": epochs, "stopping.enabled": False,
        "stopping.monitor": "train_loss", "stopping.mode": None, "stopping.restore_best": False,
        "checkpoint.best": False}))


def check_protocol(recipe: Recipe) -> None:
    """Fail before any work when the recipe cannot be retrained on train+validation, or has no
    validation split to choose on."""

    if recipe.data.split[1] == 0 or recipe.data.train_on != "train":
        raise RecipeError(["data.split: choosing hyperparameters needs a validation split (a fraction > 0) "
                           "and data.train_on = \"train\""])
    final_recipe(recipe, {}, 1)


def retrain_and_test(recipe: Recipe, values: dict[str, Any], epochs: int, out: Path, quiet: bool = True):
    """The final run: the only fit whose test split is read."""

    return fit(final_recipe(recipe, values, epochs), out=out, quiet=quiet, force=True)


def fit_protocol(recipe: Recipe, out: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Selection run (test locked) -> best epoch -> retrain on train+validation -> test once."""

    check_protocol(recipe)
    name = recipe.name or f"{Path(recipe.data.source).stem}-{recipe.model.kind}-protocol"
    folder = create_run_dir(out, name)
    atomic_write_text(folder / RECIPE, recipe.to_toml())
    tic = time.perf_counter()
    select = fit(recipe, out=folder / SELECT, quiet=True, lock_test=True, force=True)
    epochs = int(select.metrics["best_epoch"])
    final = retrain_and_test(recipe, {}, epochs, folder / FINAL)
    metrics = {
        "test": final.metrics["test"], "val": select.metrics["val"], "best_epoch": epochs,
        "stopped_epoch": select.metrics["stopped_epoch"], "stop_reason": select.metrics["stop_reason"],
        "seed": recipe.seed,
        "protocol": {"selection": SELECT, "final": FINAL, "retrain_epochs": epochs,
                     "retrain_rows": final.metrics["rows"]["train"], "test_evaluations": 1,
                     "seconds": round(time.perf_counter() - tic, 2)},
    }
    write_json(folder / METRICS, metrics)
    if not quiet:
        print(f"selection: best epoch {epochs} of {select.metrics['stopped_epoch']} "
              f"({select.metrics['stop_reason']}), val {_fmt(select.metrics['val'])}")
        print(f"retrained on train+validation ({metrics['protocol']['retrain_rows']} rows) for {epochs} epochs")
        print(f"test  {_fmt(final.metrics['test'])}")
        print(f"run folder: {folder}")
    return {"path": folder, "metrics": metrics, "select": select, "final": final}


def _fmt(scores: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
