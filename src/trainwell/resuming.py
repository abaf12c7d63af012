"""`trainwell resume RUN_DIR`: continue an interrupted run exactly where its last checkpoint left it.

The run folder's lock is held throughout, so a second process resuming the same run is refused.
The recipe resumed with is RUN_DIR/recipe.toml (perhaps edited) plus `--set` overrides. It may
differ from the recipe stored in the checkpoint only in the keys of MAY_CHANGE (docs/resume.md
says why each is safe); any other difference, or different training data, is refused with the
list of differences, because the saved state would not mean the same thing any more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import distributed as ddp
from .api import fit
from .callbacks import StopReason
from .checkpoint import MANIFEST, load_checkpoint, read_manifest
from .custom import require
from .errors import CheckpointError, RecipeError, RunDirError
from .recipe import Recipe, load_recipe, read_old_average_keys
from .rundir import CHECKPOINTS, LAST, METRICS, RECIPE, run_lock, sweep_temp_files

# Keys that do not change what a step computes or what the saved state means.
MAY_CHANGE = ("name", "train.epochs", "train.threads", "train.device", "train.compile", "checkpoint.every_steps",
              "checkpoint.every_minutes", "watch.")


def resume(run_dir: str | Path, *, quiet: bool = False, model=None, data: Any = None,
           callbacks: list | None = None, **overrides: Any):
    """Continue the run in `run_dir` from its last checkpoint; returns the finished `Run`.

    `overrides`: dotted keys among MAY_CHANGE, e.g. `resume(path, **{"train.epochs": 60})`.
    `model` / `data`: the same custom module / (x, y) arrays the run was started with, if any.
    A folder without a checkpoint yet (killed before its first save) starts from the beginning.
    Data parallel: rank 0 reads the folder and hands the recipe and checkpoint to the other workers."""
    run_dir = Path(run_dir)
    world = ddp.current()
    if world is not None and not world.main:
        recipe, state = ddp.broadcast_from_main(None)
        return fit(recipe, out=run_dir, quiet=True, model=model, data=data, callbacks=callbacks,
                   resume_state=state)
    if not (run_dir / RECIPE).is_file():
        raise RunDirError(f"{run_dir}: no {RECIPE}; not a trainwell run folder")
    with run_lock(run_dir):
        sweep_temp_files(run_dir)
        recipe = load_recipe(run_dir / RECIPE, overrides)
        require(recipe, model)            # a custom module's run: resumed from Python, with the module
        state = _last_state(run_dir)
        if state is not None:
            ddp.check_resume(state[1], world.size if world is not None else 1, run_dir)
            _check_same_run(state[1], recipe, run_dir)
            _reopen_if_extended(state[1], recipe, run_dir)
            if not quiet:
                cur = state[1].get("cursor")
                inside = f", batch {cur['batch']}" if cur else ""
                print(f"resuming {run_dir} at epoch {state[1]['epoch'] + 1}{inside} (step {state[1]['step']})")
        elif not quiet:
            print(f"{run_dir}: no checkpoint yet, starting the run from the beginning")
        if world is not None:
            ddp.broadcast_from_main((recipe, state))
        return fit(recipe, out=run_dir, quiet=quiet, model=model, data=data, callbacks=callbacks,
                   resume_state=state)


def check_workers(run_dir: str | Path, nproc: int, overrides: dict[str, Any]) -> Recipe:
    """Before launching `nproc` workers to resume `run_dir`: what `resume` refuses, refused here first
    (a checkpoint of another worker count, a changed recipe, a run that already ended); the recipe."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file():
        raise RunDirError(f"{run_dir}: no {RECIPE}; not a trainwell run folder")
    recipe = load_recipe(run_dir / RECIPE, overrides)
    state = _last_state(run_dir)
    if state is not None:
        ddp.check_resume(state[1], nproc, run_dir)
        _check_same_run(state[1], recipe, run_dir)
        _reopen_if_extended(state[1], recipe, run_dir)
    return recipe


def _last_state(run_dir: Path) -> tuple[dict, dict] | None:
    folder = run_dir / CHECKPOINTS
    path = folder / LAST
    # Not on disk and never written whole: no manifest entry, or one with only the digest of a first
    # write staged ("next"): the run was killed before or while its first checkpoint was renamed in.
    if not path.exists() and "sha256" not in read_manifest(folder).get(LAST, {}):
        if (run_dir / METRICS).exists():
            raise RunDirError(f"{run_dir}: a finished run without a last checkpoint (checkpoint.last = "
                              "false); nothing to resume")
        return None
    if not (folder / MANIFEST).exists():
        raise CheckpointError(f"{folder / MANIFEST}: missing; the checkpoint cannot be verified, so it is "
                              "not resumed")
    return load_checkpoint(path)


def recipe_differences(saved: dict[str, Any], current: Recipe) -> list[str]:
    """`key: saved -> current` for every key outside MAY_CHANGE that differs."""
    a, b = _flatten(_current_keys(saved)), _flatten(json.loads(json.dumps(current.to_dict())))
    lines = []
    for key in sorted(set(a) | set(b)):
        if any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE):
            continue
        if a.get(key, _ABSENT) != b.get(key, _ABSENT):
            lines.append(f"{key}: {_show(a.get(key, _ABSENT))} -> {_show(b.get(key, _ABSENT))}")
    return lines


def _current_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's recipe with keys renamed since it was written ([train.average]) in today's names."""
    raw, deprecated = read_old_average_keys(saved)
    if deprecated is None:
        return saved
    try:
        return json.loads(json.dumps(Recipe.from_dict(raw).to_dict()))
    except RecipeError:
        return saved


def _check_same_run(meta: dict[str, Any], recipe: Recipe, run_dir: Path) -> None:
    saved = meta.get("recipe")
    if saved is None:
        raise CheckpointError(f"{run_dir / CHECKPOINTS / LAST}: holds no recipe (written by an older "
                              "trainwell); it cannot be resumed safely")
    diffs = recipe_differences(saved, recipe)
    if diffs:
        raise RunDirError(f"{run_dir}: cannot resume, the recipe differs from the checkpoint's in "
                          f"{len(diffs)} key(s) that change the run: " + "; ".join(diffs)
                          + f". Only {', '.join(MAY_CHANGE)}* may change; start a new run with "
                          "`trainwell fit` instead")


def _reopen_if_extended(meta: dict[str, Any], recipe: Recipe, run_dir: Path) -> None:
    """A run that finished all its epochs continues when train.epochs was raised; one that ended
    otherwise (early stopping, NaN) and wrote its metrics has nothing left to do."""
    reason = meta["stop_reason"]
    if reason is None and meta["epoch"] >= meta["recipe"]["train"]["epochs"]:
        reason = StopReason.FINISHED.value         # its last epoch's checkpoint precedes the verdict
    if reason == StopReason.FINISHED.value and recipe.train.epochs > meta["epoch"]:
        meta["stop_reason"], meta["stopped_epoch"] = None, 0
    elif reason is not None and (run_dir / METRICS).exists():
        hint = " (raise train.epochs, e.g. --set train.epochs=N, to train longer)" \
            if reason == StopReason.FINISHED.value else ""
        ended = meta["stopped_epoch"] or meta["epoch"]
        raise RunDirError(f"{run_dir}: the run already ended at epoch {ended} ({reason}); nothing to resume{hint}")


_ABSENT = object()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(v: Any) -> str:
    return "(absent)" if v is _ABSENT else json.dumps(v)
