"""Data checks at load time: problems that stop the run (errors) and ones a person should know
about (warnings, also recorded in metrics.json).

Errors: NaN/inf features (unless data.nonfinite = "impute"), non-finite regression targets,
labels outside the expected range. Warnings: a class absent from a split, constant features,
rows shared between training and validation/test (leakage), class imbalance.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from ..errors import DataError
from .rows import rows_per_read

# A largest/smallest class ratio above this is reported as imbalance.
IMBALANCE_RATIO = 3.0
LISTED = 5   # how many offending columns/classes a message names before "..."
ROW_BLOCK = 4096     # rows a check reads at a time, so that no temporary is as large as the data


class DataWarning(UserWarning):
    """Something in the data worth a look that does not stop the run."""


def _listed(items: list) -> str:
    head = ", ".join(map(str, items[:LISTED]))
    return head + (f", ... ({len(items)} in all)" if len(items) > LISTED else "")


def _feature_name(j: int, names: tuple[str, ...]) -> str:
    return repr(names[j]) if j < len(names) else str(j)


# --------------------------------------------------------------------------------------- errors
def check_label_range(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Class indices must lie in 0..n_classes-1."""
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        values = sorted({int(v) for v in labels[bad]})
        raise DataError(f"{where}: {int(bad.sum())} labels outside the expected range 0..{n_classes - 1} "
                        f"(values {_listed(values)}); the file is corrupt or not this format")


def check_targets(y: np.ndarray, task: str, where: str) -> None:
    if task == "regression" and not np.isfinite(y).all():
        rows = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(1))
        raise DataError(f"{where}: {len(rows)} targets are NaN or infinite (rows {_listed(rows.tolist())}); "
                        "drop those rows")


def nonfinite_features(x: np.ndarray, names: tuple[str, ...], where: str, policy: str) -> bool:
    """True when some features are NaN/inf and policy is impute; raises when policy is error."""
    flat = x.reshape(len(x), -1)
    if all(np.isfinite(flat[i:i + ROW_BLOCK]).all() for i in range(0, len(flat), ROW_BLOCK)):
        return False        # (checked a block of rows at a time: no mask as large as the data)
    finite = np.isfinite(flat)
    if policy == "impute":
        return True
    rows = np.flatnonzero(~finite.all(1))
    cols = np.flatnonzero(~finite.all(0))
    raise DataError(f"{where}: {len(rows)} rows have NaN or infinite features (rows {_listed(rows.tolist())}; "
                    f"features {_listed([_feature_name(j, names) for j in cols])}); clean them or set "
                    "data.nonfinite = \"impute\"")


# ------------------------------------------------------------------------------------ imputing
def fit_imputer(x_train: torch.Tensor) -> torch.Tensor:
    """Per-feature mean of the finite training values (0 for a feature with none)."""
    finite = torch.isfinite(x_train)
    total = torch.where(finite, x_train, torch.zeros_like(x_train)).double().sum(0)
    count = finite.sum(0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total)).float()


def impute(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, values.expand_as(x))


def impute_in_place(x: torch.Tensor, values: torch.Tensor) -> None:
    """`impute` written over `x`, a block of rows at a time."""
    for i in range(0, len(x), ROW_BLOCK):
        block = x[i:i + ROW_BLOCK]
        block.copy_(impute(block, values))


# ------------------------------------------------------------------------------------- warnings
def absent_classes(y: np.ndarray, classes: tuple[str, ...], splits: dict[str, np.ndarray]) -> list[str]:
    out = []
    for split, idx in splits.items():
        if len(idx) == 0:
            continue
        missing = sorted(set(range(len(classes))) - set(np.unique(y[idx]).tolist()))
        if missing:
            out.append(f"class {_listed([classes[c] for c in missing])} has no rows in the {split} split; "
                       + ("the model cannot learn it" if split == "train" else "its metrics will not cover it")
                       + " (give more rows of that class or change data.split)")
    return out


def constant_features(x_train, names: tuple[str, ...]) -> list[str]:
    """x_train: the training rows (an array, a tensor or data/rows.py's IndexedRows), read a block at a time."""
    flat = x_train.reshape(len(x_train), -1)
    varies = np.zeros(flat.shape[1], dtype=bool)
    first = np.asarray(flat[:1])
    step = ROW_BLOCK if isinstance(flat, np.ndarray) else rows_per_read(flat)
    for i in range(1, len(flat), step):             # compared with the first row, a block at a time
        varies |= (np.asarray(flat[i:i + step]) != first).any(0)
    const = np.flatnonzero(~varies) if len(flat) > 1 else np.array([], int)
    if len(const) == 0:
        return []
    return [f"{len(const)} of {flat.shape[1]} features are constant in the training split "
            f"({_listed([_feature_name(j, names) for j in const])}); they carry no information"]


def row_keys(x: np.ndarray) -> list[bytes]:
    """A 16-byte digest of each row's bytes: exact-duplicate detection without holding every row as bytes
    (an indexed or strided `x` is copied a block of rows at a time)."""
    flat = x.reshape(len(x), -1)
    keys = []
    for i in range(0, len(flat), ROW_BLOCK):
        block = np.ascontiguousarray(flat[i:i + ROW_BLOCK])
        keys.extend(hashlib.blake2b(row, digest_size=16).digest() for row in block)
    return keys


def shared_rows(keys: list[bytes], splits: dict[str, np.ndarray]) -> list[str]:
    """Exact duplicate feature rows between training and the evaluation splits: a leak (`keys`: every
    row's row_keys, in the source's order)."""
    train = {keys[i] for i in splits["train"]}
    out = []
    for split in ("val", "test"):
        idx = splits.get(split, np.array([], int))
        if len(idx) == 0:
            continue
        count = sum(keys[i] in train for i in idx)
        if count:
            out.append(f"leakage: {count} of {len(idx)} {split} rows are exact duplicates of training rows; "
                       f"the {split} score overstates generalization (deduplicate the data)")
    return out


def class_imbalance(y: np.ndarray, classes: tuple[str, ...]) -> list[str]:
    counts = np.bincount(y, minlength=len(classes))
    present = counts[counts > 0]
    if len(present) < 2 or present.max() <= IMBALANCE_RATIO * present.min():
        return []
    ratio = present.max() / present.min()
    shares = ", ".join(f"{classes[c]}: {counts[c]} ({counts[c] / counts.sum():.1%})"
                       for c in np.argsort(-counts)[:2 * LISTED])
    return [f"class imbalance in the training split: the largest class has {ratio:.1f}x the rows of the smallest "
            f"({shares}); judge by f1 (macro) and balanced_accuracy rather than accuracy, and consider "
            "loss.class_weight = \"balanced\" or train.sampler = \"balanced\""]


def split_warnings(ds, splits: dict[str, np.ndarray], keys: list[bytes], x_train) -> list[str]:
    """Every warning about a loaded, split dataset (ds: a sources.Dataset; keys: row_keys of every row;
    x_train: the training rows)."""
    found = constant_features(x_train, ds.feature_names) + shared_rows(keys, splits)
    if ds.task != "regression":
        # The ratio of the training split, as the doctor's class_imbalance rule counts it.
        found = class_imbalance(ds.y[splits["train"]], ds.classes) + absent_classes(ds.y, ds.classes, splits) + found
    return found


def emit(messages: list[str]) -> None:
    for msg in messages:
        warnings.warn(msg, DataWarning, stacklevel=3)
