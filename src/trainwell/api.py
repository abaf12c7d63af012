"""`trainwell.fit`: load -> build -> run folder -> train -> conclude (test once, metrics, doctor).

Everything that can be wrong with the input (recipe, data, monitors) is checked before the run
folder is created, so a bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from . import __version__, custom
from . import distributed as ddp
from .averaging import finisher_for
from .build import build
from .checkpoint import prefixed, save_checkpoint
from .data import checks, preparation, rows, target
from .data.normalize import keep_columns, make_normalizer
from .data.sources import Dataset, load_source, make_dataset
from .data.split import SPLITS_FILE, Splits, data_sha256, make_splits, read_split_file, splits_bytes
from .ensemble import member_rows
from .errors import DataError, RecipeError
from .finetune import describe as describe_finetune
from .finish import Finisher, Save, evaluate_splits
from .loop import Callback, SplitTensors, Trainer
from .metrics import probabilities, reliability
from .notebook import RunViews
from .precision import PrecisionWarning
from .precision import notes as precision_notes
from .progress import ProgressBar
from .recipe import Recipe, load_recipe
from .rundir import (
    CHECKPOINTS,
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
from .search.lock import LockedSplit
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


@dataclass
class Prepared:
    """Data ready for the loop: normalized tensors per split, and what was fitted on train."""
    dataset: Dataset
    train: SplitTensors
    val: SplitTensors | None
    test: SplitTensors | None
    normalizer: Any
    indices: dict[str, np.ndarray]
    impute_values: torch.Tensor | None = None      # training-split column means (data.nonfinite = impute)
    warnings: list[str] = field(default_factory=list)
    split_file: bytes = b""                        # splits.npz of the run folder (data/split.py)
    row_keys: list[bytes] = field(default_factory=list)   # digest of every source row as loaded (leakage)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError(["train.device: got 'cuda', but no CUDA device is available; use \"auto\" or \"cpu\""])
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RecipeError(["train.device: got 'mps', but MPS is not available; use \"auto\" or \"cpu\""])
    return torch.device(name)


def _as_dataset(data: Any, task: str) -> tuple[Dataset, bool]:
    """The Dataset of data passed from Python, and whether its feature array is trainwell's own (a
    conversion made it) rather than the caller's."""
    if isinstance(data, Dataset):
        if data.task != "regression":
            checks.check_label_range(data.y, data.n_classes, "data")
        return data, False
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = (d.detach().cpu().numpy() if torch.is_tensor(d) else np.asarray(d) for d in data)
        ds = make_dataset(x, y, task, name="data")
        return replace(ds, preparation={"arrays": custom.arrays_record(x, y)}), not np.may_share_memory(ds.x, x)
    raise DataError("data: expected a trainwell Dataset or an (x, y) pair of arrays/tensors")


def prepare_data(recipe: Recipe, data: Any = None, device: torch.device | None = None, *,
                 lock_test: bool = False) -> Prepared:
    """Load, split (seeded, stratified), fit normalization on train only, move to the device.

    The rows are held once: arranged train | validation | test in one array (in the loaded array's own
    memory when trainwell loaded it; data/rows.py), imputed and normalized in place, each split a slice
    of it. The returned dataset keeps the rows' shape, not the rows (`dataset.x` has none).
    `data.train_on = "train+val"` trains on both splits (the validation split is then empty);
    `lock_test` replaces the test split by a LockedSplit that raises on any read (search trials).
    """
    if data is not None:
        ds, owned = _as_dataset(data, recipe.data.task)
    else:
        ds, owned = load_source(recipe.data, recipe.seed), True
    where = ds.name if data is not None else recipe.data.source     # name the file the user gave
    checks.check_targets(ds.y, ds.task, where)
    needs_impute = checks.nonfinite_features(ds.x, ds.feature_names, where, recipe.data.nonfinite)
    labels = ds.y if ds.task != "regression" and recipe.data.stratify else None
    sha256 = data_sha256(ds.x, ds.y)
    if recipe.data.split_file is not None:
        splits = read_split_file(recipe.data.split_file, len(ds.y), sha256)
    else:
        splits = make_splits(len(ds.y), recipe.data.split, recipe.seed, labels)
    split_file = splits_bytes(splits, len(ds.y), sha256)
    if recipe.data.train_on == "train+val":
        splits = Splits(np.sort(np.concatenate([splits.train, splits.val])), splits.val[:0], splits.test)
    indices = {"train": splits.train, "val": splits.val, "test": splits.test}
    keys = checks.row_keys(ds.x)                    # of the rows as loaded (leakage: here and in the facts)
    x_all = torch.from_numpy(rows.arrange(ds.x, splits, in_place=owned))    # ds.x is not read after this
    y_all = torch.from_numpy(ds.y[rows.split_order(splits)])
    bounds = rows.split_bounds(splits)
    train_rows = slice(*bounds[0])
    found_rows = checks.split_warnings(ds, indices, keys, x_all[train_rows].numpy())
    ds = replace(ds, x=rows.shape_only(ds.x), target_scale=_fit_target_scale(recipe, ds, y_all[train_rows]))
    impute_values = checks.fit_imputer(x_all[train_rows]) if needs_impute else None
    imputed = None
    if impute_values is not None:
        imputed = preparation.imputed_values(x_all, impute_values, ds.feature_names)
        checks.impute_in_place(x_all, impute_values)
    ds = replace(ds, preparation=preparation.complete(ds.preparation, imputed, ds.target_scale))
    try:
        normalizer = keep_columns(make_normalizer(recipe.data.normalize, recipe.data.whiten_eps).fit(
            x_all[train_rows]), [ds.feature_names.index(c) for c in ds.preparation.get("embedded", {})])
    except ValueError as exc:
        raise RecipeError([str(exc)]) from None
    found = preparation.fit_warnings(ds.preparation) + found_rows     # (the rows' own: before imputing)
    rows.normalize_in_place(normalizer, x_all, bounds)
    x_all, y_all = x_all.to(device or torch.device("cpu")), y_all.to(device or torch.device("cpu"))

    def part(start: int, stop: int) -> SplitTensors | None:
        return SplitTensors(x_all[start:stop], y_all[start:stop]) if stop > start else None

    train, val, test = (part(*b) for b in bounds)
    if lock_test and test is not None:
        test = LockedSplit(len(splits.test))
    return Prepared(ds, train, val, test, normalizer, indices, impute_values, found, split_file, keys)


def _fit_target_scale(recipe: Recipe, ds: Dataset, y_train: torch.Tensor):
    """data.target_normalize fitted on the training targets (None when the run does not scale them)."""
    asked = recipe.data.target_normalize
    if ds.task != "regression":
        if asked not in ("auto", "none"):
            raise RecipeError([f"data.target_normalize: got {asked!r}, but the task is {ds.task}; it scales "
                               "regression targets only, use \"auto\" or \"none\""])
        return None
    return target.fit_target_scale(target.resolve(asked, ds.task), y_train)


def environment() -> dict[str, str]:
    return {"trainwell": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


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
    setup = build(recipe, prepared, device, model=model, train=member_rows(recipe, 0, prepared.train))
    if world is not None:
        ddp.check_shares(setup, world, _sync_bn(recipe))
        ddp.seed_worker(setup, recipe.seed, world)
    run_dir = _open_run_dir(recipe, out, force, resume_state, "custom" if model is not None else None) \
        if main else None
    if main:
        _write_inputs(run_dir, recipe, prepared, setup.loss_kind)
        _warn(prepared, recipe, device)
    if setup.finetuned is not None and not quiet:
        print(describe_finetune(setup.finetuned))

    watch = WatchSession(recipe, run_dir)
    finisher = finisher_for(recipe, quiet)   # [train.average]: decides the returned model
    callbacks = [finisher, *(callbacks or []), *watch.callbacks()] if main else [finisher]  # probes...: rank 0's
    trainer = _trainer(setup, recipe, world, writes=out is not False, run_dir=run_dir, callbacks=callbacks,
                       extra_tensors=saved_statistics(prepared),
                       progress=ProgressBar() if ProgressBar.wanted(quiet) else None)
    with _lock_released_on_error(run_dir):
        if resume_state is not None:
            trainer.load_state_dict(*resume_state)
        state = trainer.fit()
    if world is not None:                   # rank 0 concludes alone: the test split, metrics, report
        ddp.finish()
        if not world.main:
            return Run(None, recipe, trainer.model, state.history, {}, {"trainer": trainer})

    metrics, seen = conclude(trainer, finisher, prepared, recipe, lock_test)
    if run_dir is not None:
        atomic_write_text(run_dir / HISTORY, history_csv(state.history))
        write_json(run_dir / METRICS, metrics)
    if not quiet:
        _print_summary(metrics, run_dir)
    findings = watch.finish(trainer, seen, metrics, quiet)
    if run_dir is not None:
        release_run_lock(run_dir)
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


def _write_inputs(run_dir: Path | None, recipe: Recipe, prepared: Prepared, loss_kind: str) -> None:
    """recipe.toml, data.json and splits.npz: what repeats the run and reads new rows like its own."""
    if run_dir is not None:
        atomic_write_text(run_dir / RECIPE, recipe.to_toml())
        write_json(run_dir / DATA_SCHEMA, data_schema(prepared.dataset, loss_kind))
        atomic_write_bytes(run_dir / SPLITS_FILE, prepared.split_file)


def _warn(prepared: Prepared, recipe: Recipe, device: torch.device) -> None:
    """What is worth a look in the data and in the precision on this device: warnings, the run goes on."""
    checks.emit(prepared.warnings)
    for note in precision_notes(recipe.train.precision, device):
        warnings.warn(note, PrecisionWarning, stacklevel=3)


def _trainer(setup, recipe: Recipe, world, *, writes: bool, **kwargs) -> Trainer:
    """The Trainer, or on a data-parallel worker the one that steps its share of each batch through DDP."""
    if world is None:
        return Trainer(setup, **kwargs)
    return ddp.DataParallelTrainer(setup, world=world, writes=writes, sync_bn=_sync_bn(recipe), **kwargs)


def _sync_bn(recipe: Recipe) -> bool:
    """model.sync_batchnorm; a custom module's batch norm is synchronized."""
    return getattr(recipe.model, "sync_batchnorm", True)


def saved_statistics(prepared: Prepared) -> dict[str, torch.Tensor]:
    """What was fitted on the training split and travels with every checkpoint (normalizer, imputer)."""
    saved = prefixed("normalizer", prepared.normalizer.state_dict())
    if prepared.impute_values is not None:
        saved["impute.values"] = prepared.impute_values
    return saved


@contextmanager
def _lock_released_on_error(run_dir: Path | None):
    """Ctrl-C or a failed write inside: the run folder is free again (and the error goes on)."""
    try:
        yield
    except BaseException:
        if run_dir is not None:
            release_run_lock(run_dir)
        raise


def _open_run_dir(recipe: Recipe, out, force: bool, resume_state, custom: str | None) -> Path | None:
    """The run folder, locked: a resumed one (resume() checked it and holds its lock: every acquire has
    its release in fit), a new one, or None for `out=False`."""
    if resume_state is not None:
        acquire_run_lock(Path(out))
        return Path(out)
    if out is False:
        return None
    return create_run_dir(out, run_name(recipe, custom), force=force)


def run_name(recipe: Recipe, custom: str | None = None) -> str:
    """The name in a default run folder's path (runs/<time>-<name>)."""
    return recipe.name or f"{Path(recipe.data.source).stem}-{custom or recipe.model.kind}"


def conclude(trainer: Trainer, finisher: Finisher, prepared: Prepared, recipe: Recipe,
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
    outcome = finisher.conclude(trainer, seen, _saver(trainer.run_dir, trainer.extra_tensors))
    if outcome.section is not None:
        metrics[outcome.section["kind"]] = outcome.section
        metrics["model"] = "plain"
    if outcome.model is not None:
        metrics["plain"] = plain
        metrics.update(model=outcome.section["kind"], val=outcome.section["val"], test=outcome.section["test"])
        trainer.model = outcome.model    # the doctor's facts (suspects, confusion) are about the returned model
    calibration = _calibration(trainer.model, seen, setup, setup.settings.eval_batch_size)
    if calibration is not None:
        metrics["calibration"] = calibration
    metrics["weights"] = outcome.weights     # where predict finds the returned model
    return metrics, seen


def _saver(run_dir: Path | None, saved: dict[str, torch.Tensor]) -> Save:
    """A finisher's `save(name, model, meta)`: the model with the data statistics, in checkpoints/."""
    def save(name: str, model: nn.Module, meta: dict[str, Any]) -> str | None:
        if run_dir is None:
            return None
        save_checkpoint(run_dir / CHECKPOINTS / name, {**prefixed("model", model.state_dict()), **saved}, meta)
        return f"{CHECKPOINTS}/{name}"
    return save


@torch.inference_mode()
def _calibration(model: nn.Module, prepared: Prepared, setup, batch: int) -> dict | None:
    """The returned model's reliability diagram on the test split (else validation), for the report
    (evaluated under the run's precision, as its metrics are)."""
    task, loss_kind = setup.task, setup.loss_kind
    split = "test" if prepared.test is not None else "val"
    part = prepared.test if prepared.test is not None else prepared.val
    if task == "regression" or loss_kind == "hinge" or part is None or part.y.dim() != 1:
        return None
    was = model.training
    model.eval()
    with setup.precision.autocast():
        out = torch.cat([model(part.x[i:i + batch]) for i in range(0, len(part), batch)]).float()
    model.train(was)
    probs = probabilities(out, task, loss_kind)
    if probs is None or not bool(torch.isfinite(probs).all()):
        return None
    return {"split": split, **reliability(probs.cpu(), part.y.cpu())}


def network_record(recipe: Recipe, net: nn.Module) -> dict[str, Any]:
    """metrics.json's account of the network: the recipe's kind (or a custom module's import path) and the
    trainable parameter count of what was trained."""
    out: dict[str, Any] = {"kind": recipe.model.kind}
    if recipe.model.kind == "custom":
        out["module"] = recipe.model.module
    out["parameters"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return out


def data_schema(ds: Dataset, loss_kind: str) -> dict[str, Any]:
    """What prediction needs to read new rows like the training ones (stored as data.json)."""
    return {"input_shape": list(ds.x.shape[1:]), "feature_names": list(ds.feature_names), "task": ds.task,
            "classes": list(ds.classes), "n_outputs": ds.n_outputs, "loss": loss_kind,
            "target_scale": ds.target_scale.describe() if ds.target_scale is not None else None,
            "preparation": ds.preparation}


def _print_summary(metrics: dict[str, Any], run_dir: Path | None) -> None:
    con = Console()
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
