"""One copy of the rows: the training, validation and test rows in one array, each split a slice of it.

`arrange` puts the rows of the three splits one after the other (each split in the source's row
order, as indexing the source by its indices would give them), in the loaded array's own memory
when trainwell loaded it; the normalizer is then fitted on the training slice and applied in place,
a block of rows at a time, so the features exist once, as the run trains on them.
"""

from __future__ import annotations

import numpy as np
import torch

from .split import Splits

# Rows moved or normalized at a time: no temporary is as large as the data.
ROW_BLOCK = 4096


def split_order(splits: Splits) -> np.ndarray:
    """Source row indices in the arranged order: train, then validation, then test."""
    return np.concatenate([splits.train, splits.val, splits.test]).astype(np.int64, copy=False)


def arrange(x: np.ndarray, splits: Splits, in_place: bool) -> np.ndarray:
    """`x[split_order(splits)]`. With `in_place` (the caller owns `x` and will not read it again), written
    over x's own first rows: the validation and test rows are set aside, the training rows, in increasing
    source order, move forward (row k comes from row train[k] >= k, which is not yet overwritten), and the
    set-aside rows follow them. Without, or for an array it cannot write, one new array."""
    order = split_order(splits)
    train = splits.train
    movable = (in_place and x.flags.c_contiguous and x.flags.writeable and len(order) <= len(x)
               and bool(np.all(np.diff(train) > 0)) and (len(train) == 0 or train[0] >= 0))
    if not movable:
        return x[order]
    rest = x[order[len(train):]]
    for i in range(0, len(train), ROW_BLOCK):
        block = train[i:i + ROW_BLOCK]
        x[i:i + len(block)] = x[block]      # (the right side is gathered before it is written)
    x[len(train):len(order)] = rest
    return x[:len(order)]


def normalize_in_place(normalizer, x: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
    """Apply `normalizer.transform` to the rows of `x` in place: elementwise normalizers a block of rows at
    a time (the same values as transforming the whole), the others one split (`bounds`) at a time, as
    they were fitted and always applied."""
    elementwise = getattr(normalizer, "elementwise", False)
    for start, stop in bounds if not elementwise else [(0, len(x))]:
        step = ROW_BLOCK if elementwise else max(stop - start, 1)
        for i in range(start, stop, step):
            block = x[i:min(i + step, stop)]
            out = normalizer.transform(block)
            if out is not block:
                block.copy_(out)


def split_bounds(splits: Splits) -> list[tuple[int, int]]:
    """(start, stop) of the training, validation and test rows in the arranged array."""
    a, b = len(splits.train), len(splits.train) + len(splits.val)
    return [(0, a), (a, b), (b, b + len(splits.test))]


def shape_only(x: np.ndarray) -> np.ndarray:
    """A row-less array of x's row shape and dtype (what remains of the source's rows once arranged)."""
    return np.empty((0, *x.shape[1:]), dtype=x.dtype)
