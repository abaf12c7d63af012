"""Prepared data: the recipe's (or the caller's) rows loaded, checked, split, imputed and normalized.

`prepare_data(recipe, data, device)` is the step before `build` for everything that trains (fit,
resume, the LR range test, the overfit check, the data preview): the split is seeded and
stratified, every statistic (imputation means, normalization, target scaling) is fitted on the
training split only, and the tensors are moved to the device. What a run folder keeps of it:
`data_schema` (data.json: how predict reads new rows) and `saved_statistics` (the fitted
statistics, in every checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from . import custom
from .checkpoint import prefixed
from .data import checks, preparation, rows, target
from .data.normalize import keep_columns, make_normalizer
from .data.sources import Dataset, load_source, make_dataset
from .data.split import Splits, make_splits, read_split_file, rows_sha256, splits_bytes
from .errors import DataError, RecipeError
from .loop import SplitTensors
from .recipe import Recipe
from .search.lock import LockedSplit


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
    sha256, loaded = rows_sha256(recipe.data if data is None else None, ds.x, ds.y)
    if recipe.data.split_file is not None:
        splits = read_split_file(recipe.data.split_file, len(ds.y), sha256, loaded)
    else:
        splits = make_splits(len(ds.y), recipe.data.split, recipe.seed, labels)
    split_file = splits_bytes(splits, len(ds.y), sha256)
    if recipe.data.train_on == "train+val":
        splits = Splits(np.sort(np.concatenate([splits.train, splits.val])), splits.val[:0], splits.test)
    indices = {"train": splits.train, "val": splits.val, "test": splits.test}
    keys = checks.row_keys(ds.x)                    # of the rows as loaded (leakage: here and in the facts)
    order = rows.split_order(splits)
    as_given = _used_as_given(recipe, ds.x, owned, needs_impute, device)
    if as_given:        # the caller's rows read through the split indices: no copy of them
        x_all = rows.IndexedRows(torch.from_numpy(ds.x), torch.from_numpy(order))
    else:
        x_all = torch.from_numpy(rows.arrange(ds.x, splits, in_place=owned))    # ds.x is not read after this
    y_all = torch.from_numpy(ds.y[order])
    bounds = rows.split_bounds(splits)
    train_rows = slice(*bounds[0])
    found_rows = checks.split_warnings(ds, indices, keys, rows.part(x_all, *bounds[0]))
    ds = replace(ds, x=rows.shape_only(ds.x), target_scale=_fit_target_scale(recipe, ds, y_all[train_rows]))
    impute_values = checks.fit_imputer(x_all[train_rows]) if needs_impute else None
    imputed = None
    if impute_values is not None:
        imputed = preparation.imputed_values(x_all, impute_values, ds.feature_names)
        checks.impute_in_place(x_all, impute_values)
    ds = replace(ds, preparation=preparation.complete(ds.preparation, imputed, ds.target_scale))
    try:
        normalizer = keep_columns(make_normalizer(recipe.data.normalize, recipe.data.whiten_eps).fit(
            rows.part(x_all, *bounds[0])), [ds.feature_names.index(c) for c in ds.preparation.get("embedded", {})])
    except ValueError as exc:
        raise RecipeError([str(exc)]) from None
    found = preparation.fit_warnings(ds.preparation) + found_rows     # (the rows' own: before imputing)
    if not as_given:
        rows.normalize_in_place(normalizer, x_all, bounds)
        x_all = x_all.to(device or torch.device("cpu"))
    y_all = y_all.to(device or torch.device("cpu"))

    def part(start: int, stop: int) -> SplitTensors | None:
        return SplitTensors(rows.part(x_all, start, stop), y_all[start:stop]) if stop > start else None

    train, val, test = (part(*b) for b in bounds)
    if lock_test and test is not None:
        test = LockedSplit(len(splits.test))
    return Prepared(ds, train, val, test, normalizer, indices, impute_values, found, split_file, keys)


def _used_as_given(recipe: Recipe, x: np.ndarray, owned: bool, needs_impute: bool, device) -> bool:
    """Whether the splits read the caller's array through their indices (data/rows.py IndexedRows) instead of
    a copy: rows passed from Python as float32, C-ordered and writable (torch shares such an array), that the
    run uses as they are (data.normalize = "none", nothing imputed) on the CPU. Every read gives the values a
    copy would hold; the caller's array is never written (the returned run's `extras["data"]` reads it: what
    the caller writes there later, it shows)."""
    return (not owned and recipe.data.normalize == "none" and not needs_impute
            and (device is None or torch.device(device).type == "cpu")
            and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable and x.ndim >= 2)


def _fit_target_scale(recipe: Recipe, ds: Dataset, y_train: torch.Tensor):
    """data.target_normalize fitted on the training targets (None when the run does not scale them)."""
    asked = recipe.data.target_normalize
    if ds.task != "regression":
        if asked not in ("auto", "none"):
            raise RecipeError([f"data.target_normalize: got {asked!r}, but the task is {ds.task}; it scales "
                               "regression targets only, use \"auto\" or \"none\""])
        return None
    return target.fit_target_scale(target.resolve(asked, ds.task), y_train)


def saved_statistics(prepared: Prepared) -> dict[str, torch.Tensor]:
    """What was fitted on the training split and travels with every checkpoint (normalizer, imputer)."""
    saved = prefixed("normalizer", prepared.normalizer.state_dict())
    if prepared.impute_values is not None:
        saved["impute.values"] = prepared.impute_values
    return saved


def data_schema(ds: Dataset, loss_kind: str) -> dict[str, Any]:
    """What prediction needs to read new rows like the training ones (stored as data.json)."""
    return {"input_shape": list(ds.x.shape[1:]), "feature_names": list(ds.feature_names), "task": ds.task,
            "classes": list(ds.classes), "n_outputs": ds.n_outputs, "loss": loss_kind,
            "target_scale": ds.target_scale.describe() if ds.target_scale is not None else None,
            "preparation": ds.preparation}
