"""Seeded train/validation/test split, stratified for classification."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class Splits:
    train: np.ndarray    # row indices into the dataset
    val: np.ndarray
    test: np.ndarray


def _cut(idx: np.ndarray, frac: float, labels: np.ndarray | None, rng: np.random.Generator):
    """Split `idx` into (first, rest) with `frac` of the rows in `first`, per class when labelled."""
    if frac <= 0 or len(idx) == 0:
        return idx[:0], idx
    if frac >= 1:
        return idx, idx[:0]
    groups = [idx] if labels is None else [idx[labels[idx] == c] for c in np.unique(labels[idx])]
    first, rest = [], []
    for g in groups:
        g = rng.permutation(g)
        k = int(round(frac * len(g)))
        first.append(g[:k])
        rest.append(g[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def make_splits(n: int, fractions: tuple[float, float, float], seed: int,
                labels: np.ndarray | None = None) -> Splits:
    """Indices of the three splits. With labels, each class is divided in the same proportions."""
    rng = np.random.default_rng([seed, 0x5B117])
    train_f, val_f, test_f = fractions
    idx = np.arange(n)
    train, rest = _cut(idx, train_f, labels, rng)
    val, test = _cut(rest, val_f / (val_f + test_f) if val_f + test_f > 0 else 0.0, labels, rng)
    if len(train) == 0:
        raise DataError(f"data.split: the training split of {n} rows is empty; raise its fraction")
    for name, part, frac in (("validation", val, val_f), ("test", test, test_f)):
        if frac > 0 and len(part) == 0:
            raise DataError(f"data.split: the {name} split of {n} rows is empty; raise its fraction")
    return Splits(train, val, test)
