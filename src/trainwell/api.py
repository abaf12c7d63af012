"""`trainwell.fit`: load -> build -> run folder -> train -> conclude (test once, metrics, doctor).

Everything that can be wrong with the input (recipe, data, monitors) is checked before the run
folder is created, so a bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from . import custom
from . import distributed as ddp
from .averaging import finisher_for
from .build import Setup, build, pick_device
from .data import checks
from .data.split import SPLITS_FILE
from .ensemble import member_rows
from .errors import RecipeError
from .finetune import describe as describe_finetune
from .finish import conclude
from .loop import Callback, Trainer
from .notebook import RunViews
from .precision import PrecisionWarning
from .precision import notes as precision_notes
from .prepare import Prepared, data_schema, prepare_data, saved_statistics
from .progress import ProgressBar
from .recipe import Recipe, load_recipe
from .rundir import (
    DATA_SCHEMA,
    HISTORY,
    METRICS,
    RECIPE,
    acquire_run_lock,
    atomic_write_bytes,
    atomic_write_text,
    create_run_dir,
    history_csv,
    release_run_lock,
    write_json,
)
from .seeding import seed_globals
from .watch.session import WatchSession


@dataclass(repr=False)      # the short repr of RunViews: the dataclass one printed every tensor
class Run(RunViews):
    """The result of `fit`: the run folder and what it holds, in memory (in a notebook: a short repr,
    an HTML summary, `history_df()`, `plot()` and `report()`, see notebook.py)."""
    path: Path | None
    recipe: Recipe
    model: nn.Module
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)


def rows_bytes(prepared) -> int:
    """The bytes of the splits' input rows (as the model reads them); a locked test split's are not read."""
    from .search.lock import LockedSplit

    return sum(part.x.shape.numel() * part.x.dtype.itemsize
               for part in (prepared.train, prepared.val, prepared.test)
               if part is not None and not isinstance(part, LockedSplit))


def fit(recipe: str | Path | Mapping[str, Any] | Recipe | None = None, *, out: str | Path | None = None,
        quiet: bool = False, model: nn.Module | None = None, data: Any = None, force: bool = False,
        callbacks: list[Callback] | None = None, resume_state: tuple | None = None, lock_test: bool = False,
        **overrides: Any) -> Run:
    """Train a network from a recipe and write its run folder.

    `recipe`: a TOML path, a dict, a Recipe, or None for the default recipe (digits).
    `overrides`: dotted keys, e.g. `fit(**{"optimizer.lr": 3e-3})`.
    `model`: your own nn.Module instead of the recipe's [model]; `data`: an (x, y) pair instead
    of `data.source`. `out`: the run folder (default runs/<time>-<name>); `quiet`: no output.
    `resume_state`: (tensors, meta) of a checkpoint to continue from; use `trainwell.resume`.
    `lock_test`: the test split is locked (reading it raises) and not evaluated: a search trial.
    """
    recipe = custom.record(load_recipe(recipe, overrides), model, data)    # model.kind, data.source = "custom"
    world = ddp.current()                 # None on one process; else this worker's rank (rank 0 writes)
    main = world is None or world.main
    quiet = quiet or not main
    device = _start(recipe, model is not None, world)
    prepared = prepare_data(recipe, data, device, lock_test=lock_test)
    setup = _build(recipe, prepared, device, model, world)
    run_dir = _open_run_dir(recipe, out, force, resume_state, model) if main else None
    with _run_lock(run_dir), ExitStack() as ends:     # the lock released, the watch closed, however the run ends
        if main:
            _before_training(run_dir, recipe, prepared, setup, quiet)
        watch, finisher = WatchSession(recipe, run_dir, rows_bytes(prepared)), finisher_for(recipe, quiet)
        ends.callback(watch.close)
        trainer = _trainer(setup, recipe, world, writes=out is not False, run_dir=run_dir,
                           callbacks=[finisher, *(callbacks or []), *watch.callbacks()] if main else [finisher],
                           extra_tensors=saved_statistics(prepared),
                           progress=ProgressBar() if ProgressBar.wanted(quiet) else None)
        if resume_state is not None:
            trainer.load_state_dict(*resume_state)
        state = trainer.fit()
        if not ddp.finish(world):    # rank 0 concludes alone: the test split, metrics, report
            return Run(None, recipe, trainer.model, state.history, {}, {"trainer": trainer})
        metrics, seen = conclude(trainer, finisher, prepared, recipe, lock_test)
        _record(run_dir, state.history, metrics, quiet)
        findings = watch.finish(trainer, seen, metrics, quiet)
    return Run(run_dir, recipe, trainer.model, state.history, metrics,
               {"trainer": trainer, "data": prepared, "findings": findings})


def _start(recipe: Recipe, custom: bool, world) -> torch.device:
    """Checks that need no data, the device and its threads, and the global generators seeded."""
    if world is not None:
        ddp.check_supported(recipe, world.size)
    if custom and recipe.train.average.kind == "ensemble":
        raise RecipeError(["train.average.kind: got \"ensemble\", but members are built from the recipe's "
                           "[model] and a custom module was passed; train the ensemble from [model] or choose "
                           "another kind"])
    device = pick_device(recipe.train.device)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_globals(recipe.seed)
    return device


def _build(recipe: Recipe, prepared: Prepared, device: torch.device, model: nn.Module | None, world) -> Setup:
    """The Setup (build.py); on a data-parallel worker, its share of each batch checked and its streams
    seeded for its rank. Still before the run folder: a refusal leaves nothing written."""
    setup = build(recipe, prepared, device, model=model, train=member_rows(recipe, 0, prepared.train))
    if world is not None:
        ddp.check_shares(setup, world, _sync_bn(recipe))
        ddp.seed_worker(setup, recipe.seed, world)
    return setup


def _before_training(run_dir: Path | None, recipe: Recipe, prepared: Prepared, setup: Setup, quiet: bool) -> None:
    """recipe.toml, data.json and splits.npz (what repeats the run and reads new rows like its own), then
    what is worth a look: the data's and the precision's warnings (the run goes on), the fine-tuning."""
    if run_dir is not None:
        atomic_write_text(run_dir / RECIPE, recipe.to_toml())
        write_json(run_dir / DATA_SCHEMA, data_schema(prepared.dataset, setup.loss_kind))
        atomic_write_bytes(run_dir / SPLITS_FILE, prepared.split_file)
    checks.emit(prepared.warnings)
    for note in precision_notes(recipe.train.precision, setup.device):
        warnings.warn(note, PrecisionWarning, stacklevel=3)
    if setup.finetuned is not None and not quiet:
        print(describe_finetune(setup.finetuned))


def _trainer(setup: Setup, recipe: Recipe, world, *, writes: bool, **kwargs) -> Trainer:
    """The Trainer, or on a data-parallel worker the one that steps its share of each batch through DDP."""
    if world is None:
        return Trainer(setup, **kwargs)
    return ddp.DataParallelTrainer(setup, world=world, writes=writes, sync_bn=_sync_bn(recipe), **kwargs)


def _sync_bn(recipe: Recipe) -> bool:
    """model.sync_batchnorm; a custom module's batch norm is synchronized."""
    return getattr(recipe.model, "sync_batchnorm", True)


def _record(run_dir: Path | None, history: list[dict[str, Any]], metrics: dict[str, Any], quiet: bool) -> None:
    """history.csv and metrics.json written, and the summary printed."""
    if run_dir is not None:
        atomic_write_text(run_dir / HISTORY, history_csv(history))
        write_json(run_dir / METRICS, metrics)
    if not quiet:
        _print_summary(metrics, run_dir)


@contextmanager
def _run_lock(run_dir: Path | None):
    """The run folder's lock (taken by `_open_run_dir`) is released when the block ends, by its return, an
    error (a failed write, the report) or Ctrl-C: the folder is free again in this process."""
    try:
        yield
    finally:
        if run_dir is not None:
            release_run_lock(run_dir)


def _open_run_dir(recipe: Recipe, out, force: bool, resume_state, model: nn.Module | None) -> Path | None:
    """The run folder, locked: a resumed one (resume() checked it and holds its lock: every acquire has
    its release in fit), a new one, or None for `out=False`."""
    if resume_state is not None:
        acquire_run_lock(Path(out))
        return Path(out)
    if out is False:
        return None
    return create_run_dir(out, run_name(recipe, "custom" if model is not None else None), force=force)


def run_name(recipe: Recipe, custom: str | None = None) -> str:
    """The name in a default run folder's path (runs/<time>-<name>)."""
    return recipe.name or f"{Path(recipe.data.source).stem}-{custom or recipe.model.kind}"


def _print_summary(metrics: dict[str, Any], run_dir: Path | None) -> None:
    # One line each, whatever the width: a metric's name is not parted from its value, nor the run folder's
    # path broken for a copy; a terminal folds a long line itself, and a log keeps it whole for grep.
    con = Console(soft_wrap=True)
    scaled = metrics.get("target_normalize")
    test = "  ".join(f"{k}{f' ({scaled} targets)' if scaled and k == 'loss' else ''} {v:.4f}"
                     for k, v in metrics["test"].items())
    con.print(f"stopped at epoch {metrics['stopped_epoch']} ({metrics['stop_reason']}), "
              f"best epoch {metrics['best_epoch']}")
    if test:
        con.print(f"[bold]test[/bold]  {test}" + (f"  ({metrics['model']} model)" if "plain" in metrics else ""))
    compare = [("plain model", metrics.get("plain")),
               ("mean member", metrics.get(metrics.get("model", ""), {}).get("mean_member"))]
    for name, figures in compare:
        if figures and figures["test"]:
            con.print(f"{name} test  " + "  ".join(f"{k} {v:.4f}" for k, v in figures["test"].items()))
    if run_dir is not None:
        con.print(f"run folder: {run_dir}")
