"""One copy of the rows: the training, validation and test rows in one array, each split a slice of it.

`arrange` puts the rows of the three splits one after the other (each split in the source's row
order, as indexing the source by its indices would give them), in the loaded array's own memory
when trainwell loaded it; the normalizer is then fitted on the training slice and applied in place,
a block of rows at a time, so the features exist once, as the run trains on them.

Rows passed from Python that the run uses as given (no normalization, nothing imputed, on the CPU)
are not copied at all: each split is an `IndexedRows`, the caller's array read through the split's
indices, which gives every read the values a copy would hold, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .split import Splits

# Rows moved or normalized at a time: no temporary is as large as the data.
ROW_BLOCK = 4096
# Bytes of the caller's rows an IndexedRows reader gathers at a time (hashing, checks): a small block
# reused from the heap, not a large one mapped and unmapped each time.
READ_BYTES = 1 << 20


def rows_per_read(x) -> int:
    """Rows of `x` read at a time by a blockwise reader: about READ_BYTES of them."""
    return max(1, READ_BYTES // max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize))


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


class IndexedRows:
    """The rows `index` of the tensor `base`, in that order, without a copy of them: a split's `x` where the
    rows are the caller's own and used as given. `r[i:j]`, `r[idx]` (an index or mask tensor, an int),
    `r[rows, ...]` and `r.index_select(0, idx)` gather just the rows read, equal to the same read of
    `base[index]` bit for bit; `shape`, `dtype`, `device`, `len` are the split's. Any other use (a torch
    function, a tensor method) acts on the gathered split, a copy made for it."""

    __slots__ = ("base", "index")

    def __init__(self, base: torch.Tensor, index: torch.Tensor):
        self.base, self.index = base, index.to(device=base.device, dtype=torch.long)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.base.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def dim(self) -> int:
        return self.base.dim()

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"IndexedRows(shape={tuple(self.shape)}, dtype={self.dtype})"

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis:
                return self.gathered()[key]
            return self[key[0]][(slice(None), *key[1:])]
        if isinstance(key, int | np.integer):
            return self.base[int(self.index[key])]
        if isinstance(key, np.ndarray):
            key = torch.from_numpy(key)
        return self.base.index_select(0, self.index[key.to(self.index.device) if torch.is_tensor(key) else key])

    def index_select(self, dim: int, idx: torch.Tensor) -> torch.Tensor:
        if dim != 0:
            return self.gathered().index_select(dim, idx)
        return self.base.index_select(0, self.index[idx.to(self.index.device)])

    def reshape(self, *shape) -> IndexedRows | torch.Tensor:
        """Rows reshaped (the first size the row count): the same rows of `base` reshaped alike."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        if shape and shape[0] == len(self):
            return IndexedRows(self.base.reshape(len(self.base), *shape[1:]), self.index)
        return self.gathered().reshape(*shape)

    def cpu(self) -> IndexedRows:
        return self if self.device.type == "cpu" else IndexedRows(self.base.cpu(), self.index.cpu())

    def gathered(self) -> torch.Tensor:
        """The split as one tensor (a copy)."""
        return self.base.index_select(0, self.index)

    def __array__(self, dtype=None, copy=None):
        out = self.gathered().numpy()
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.gathered(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def plain(v):
            if isinstance(v, IndexedRows):
                return v.gathered()
            if isinstance(v, list | tuple):
                return type(v)(plain(a) for a in v)
            return v
        return func(*plain(tuple(args)), **{k: plain(v) for k, v in (kwargs or {}).items()})


def part(x: torch.Tensor | IndexedRows, start: int, stop: int) -> torch.Tensor | IndexedRows:
    """Rows start:stop of the arranged rows: a slice of the one array, or of the indices."""
    if isinstance(x, IndexedRows):
        return IndexedRows(x.base, x.index[start:stop])
    return x[start:stop]


def byte_blocks(x: torch.Tensor | IndexedRows):
    """The bytes of a split's rows in order (numpy arrays, C order): a tensor's own, once; an `IndexedRows`'
    a block of ROW_BLOCK rows at a time (no copy of the whole split)."""
    if isinstance(x, IndexedRows):
        step = rows_per_read(x)
        for i in range(0, len(x), step):
            yield x[i:i + step].cpu().numpy()
        return
    yield x.detach().cpu().contiguous().numpy()


def shape_only(x: np.ndarray) -> np.ndarray:
    """A row-less array of x's row shape and dtype (what remains of the source's rows once arranged)."""
    return np.empty((0, *x.shape[1:]), dtype=x.dtype)
