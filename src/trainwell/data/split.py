"""Seeded train/validation/test split, stratified for classification."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .formats import labels_file
from .sources import BUNDLED, SYNTHETIC


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


# ------------------------------------------------------------------------------ reusable splits
SPLITS_FILE = "splits.npz"


def data_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of a dataset's features and targets as loaded (shapes and dtypes included)."""
    h = hashlib.sha256()
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a)         # the array's bytes, read where they are (no copy)
    return h.hexdigest()


def file_sha256(section) -> str | None:
    """sha256 of a file source's bytes (a CSV, Parquet, NPZ, ... file): the rows as they are in the
    file, whatever columns a recipe keeps or how it encodes them; followed by its labels file's bytes
    when the targets are read from a second file (an NPY source's `data.target`, an IDX labels file).
    None for anything else (`section`: the recipe's [data])."""
    source = section.source
    path = Path(source)
    if source in BUNDLED or source in SYNTHETIC or not path.is_file():
        return None
    labels = labels_file(path, section)
    h = hashlib.sha256()
    for name in (path, *([labels] if labels is not None else [])):
        with name.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def rows_sha256(section, x: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    """What identifies the rows a split file indexes: the source file's sha256 when the data is read
    from a file (so recipes that keep or encode its columns differently share splits; with its labels
    file, when it has one), else the loaded data's; and the loaded data's (what split files held
    before). `section`: the recipe's [data], None for data passed from Python."""
    loaded = data_sha256(x, y)
    return (file_sha256(section) if section is not None else None) or loaded, loaded


def splits_bytes(splits: Splits, n_rows: int, sha256: str) -> bytes:
    """The run folder's splits.npz: row indices (in the source's row order) of each split, the number
    of rows and the sha256 of the data they index (of the source file, with its labels file, when the data
    is read from a file: `rows_sha256`)."""
    buf = io.BytesIO()
    np.savez(buf, train=splits.train.astype(np.int64), val=splits.val.astype(np.int64),
             test=splits.test.astype(np.int64), rows=np.int64(n_rows), sha256=np.array(sha256))
    return buf.getvalue()


def read_split_file(path: str | Path, n_rows: int, sha256: str, *also: str) -> Splits:
    """data.split_file: the splits of another run, refused unless made from the same data: the same
    row count and the same sha256 (of the source file; a split file written before file hashes, or of
    data that is not one file, holds the sha256 of the loaded data, given in `also`)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLITS_FILE
    if not path.is_file():
        raise DataError(f"data.split_file: {str(path)!r} not found; give a run folder's {SPLITS_FILE}")
    try:
        with np.load(path, allow_pickle=False) as f:
            parts = {k: np.asarray(f[k]) for k in ("train", "val", "test", "rows", "sha256")}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"data.split_file: {path} is not a trainwell {SPLITS_FILE} "
                        f"({type(exc).__name__}: {exc})") from None
    rows, saved = int(parts["rows"]), str(parts["sha256"])
    if rows != n_rows:
        raise DataError(f"data.split_file: {path} was made from data of {rows} rows, this data has {n_rows}; "
                        "a split file only fits the data it was made from")
    if saved not in (sha256, *also):
        raise DataError(f"data.split_file: {path} was made from other data (sha256 {saved[:12]}..., this data "
                        f"{sha256[:12]}...); a split file only fits the data it was made from")
    splits = Splits(*(np.sort(parts[k].astype(np.int64).reshape(-1)) for k in ("train", "val", "test")))
    _check_indices(path, splits, rows)
    return splits


def _check_indices(path: Path, splits: Splits, rows: int) -> None:
    """Each row index of a split file within the data, in one split at most, once (a file written by
    hand, or damaged, could index past the data, wrap around with a negative index or leak a row)."""
    where = {"train": splits.train, "val": splits.val, "test": splits.test}
    for name, idx in where.items():
        outside = idx[(idx < 0) | (idx >= rows)]
        if len(outside):
            raise DataError(f"data.split_file: {path} holds {name} row {int(outside[0])}, outside the data's rows "
                            f"0..{rows - 1}; a split file indexes the rows of the data it was made from")
        twice = idx[1:][np.diff(idx) == 0]
        if len(twice):
            raise DataError(f"data.split_file: {path} holds {name} row {int(twice[0])} twice; each row belongs "
                            "to one split, once")
    names = list(where)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.intersect1d(where[a], where[b])
            if len(both):
                raise DataError(f"data.split_file: {path} holds row {int(both[0])} in both {a} and {b} "
                                f"({len(both)} rows in both); each row belongs to one split, once")
