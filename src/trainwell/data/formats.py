"""Local file formats: every reader returns (features, targets, feature names) from disk.

Tables (CSV, TSV, Parquet) keep numeric columns and one-hot encode string columns (or reject
them; with data.categorical = "auto" a column of many levels becomes codes for an entity embedding); arrays come from NPY/NPZ; images from MNIST's IDX format, CIFAR-10/100's binary format
(fixed-size records, never the pickled python version) or a folder with one sub-folder per
class. Images are returned as float32 (N, C, H, W) in [0, 1]. Nothing is downloaded.
"""

from __future__ import annotations

import difflib
import gzip
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .checks import check_label_range, emit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CIFAR_PIXELS = 3 * 32 * 32
# Bytes before the pixels of one record: the label (CIFAR-10) or coarse + fine labels (CIFAR-100).
CIFAR_LABEL_BYTES = {"cifar10": 1, "cifar100": 2}
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ------------------------------------------------------------------------------------- tables
def _read_frame(path: Path, fmt: str):
    import pandas as pd

    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",")
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        detail = " ".join(str(exc).split())     # pandas' parser messages end in a newline
        raise DataError(f"{path}: cannot read as {fmt.upper()} ({exc.__class__.__name__}: {detail})") from None


def _is_numeric(column) -> bool:
    return column.dtype.kind in "biuf"


def feature_columns(frame, categorical: str, max_categories: int, path: Path
                    ) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Names of the encoded features: numeric columns as they are, one-hot string columns as `col=level`,
    and (data.categorical = "auto") a string column of more than data.max_categories levels as `col`,
    holding its level's code for an entity embedding; with those columns' levels, in code order."""
    names: list[str] = []
    embedded: dict[str, list[str]] = {}
    for col in frame.columns:
        column = frame[col]
        if _is_numeric(column):
            names.append(str(col))
            continue
        if categorical == "error":
            raise DataError(f"{path}: column {col!r} holds strings; encode it as numbers, drop it, or set "
                            "data.categorical = \"onehot\" or \"auto\"")
        levels = sorted({str(v) for v in column.dropna()})
        if len(levels) <= max_categories:
            names += [f"{col}={level}" for level in levels]
            continue
        present = column.dropna()
        if categorical == "auto" and not (len(frame) >= 20 and present.nunique() == len(present)):
            names.append(str(col))
            embedded[str(col)] = levels
            continue
        why = "a distinct string in every row: an identifier, not a category" if categorical == "auto" else \
            f"more than data.max_categories = {max_categories}"
        raise DataError(f"{path}: column {col!r} has {len(levels)} distinct strings ({why}); drop it with "
                        f"data.drop = [\"{col}\"]" + ("" if categorical == "auto" else
                        ", raise data.max_categories, or set data.categorical = \"auto\" (entity embeddings)"))
    return tuple(names), embedded


def embedding_codes(column, levels: list[str]) -> np.ndarray:
    """A string column as entity-embedding codes: 1..K for the training levels (in order), 0 for a missing
    value or a level unseen in training."""
    index = {level: k for k, level in enumerate(levels, start=1)}
    return np.array([0 if v is None or (isinstance(v, float) and np.isnan(v)) else index.get(str(v), 0)
                     for v in column.tolist()], dtype=np.float32)


def encode_features(frame, names: tuple[str, ...], path: Path | str,
                    embedded: dict[str, list[str]] | None = None) -> np.ndarray:
    """The float32 matrix of `names` from `frame`; a `col=level` name is that level's 0/1 indicator, a
    column of `embedded` its level's code (`embedding_codes`).

    Used for training and for prediction, so new rows get exactly the training columns (a level
    unseen in training, or a missing value, encodes as all zeros, or code 0)."""
    embedded = embedded or {}
    out = np.empty((len(frame), len(names)), dtype=np.float32)
    missing = []
    for j, name in enumerate(names):
        col, sep, level = name.partition("=")
        if name in embedded and name in frame.columns:
            out[:, j] = embedding_codes(frame[name], embedded[name])
        elif name in frame.columns and _is_numeric(frame[name]):
            out[:, j] = frame[name].to_numpy(dtype=np.float32, na_value=np.nan)
        elif name in frame.columns:
            raise DataError(f"{path}: column {name!r} must be numeric, got strings such as "
                            f"{str(frame[name].dropna().iloc[0])!r}")
        elif sep and col in frame.columns:
            out[:, j] = (frame[col].astype(str) == level).to_numpy(dtype=np.float32)
        else:
            missing.append(col if sep else name)
    if missing:
        raise DataError(f"{path}: missing feature columns {sorted(set(missing))}")
    return out


def onehot_levels(names: tuple[str, ...]) -> dict[str, list[str]]:
    """The one-hot encoded columns among feature `names` (`col=level`), with their levels in order."""
    levels: dict[str, list[str]] = {}
    for name in names:
        col, sep, level = name.partition("=")
        if sep:
            levels.setdefault(col, []).append(level)
    return levels


def unseen_categories(frame, names: tuple[str, ...], embedded: dict[str, list[str]] | None = None
                      ) -> dict[str, dict]:
    """Per string column of `frame`: the values not among the training levels (they encode like a missing
    value) and the missing ones; only columns with some."""
    out = {}
    for col, levels in {**onehot_levels(names), **(embedded or {})}.items():
        if col not in frame.columns:
            continue
        column = frame[col]
        present = column.dropna().astype(str)
        unseen = present[~present.isin(levels)]
        if len(unseen) or column.isna().any():
            out[col] = {"unseen": int(len(unseen)), "examples": sorted(set(unseen))[:3],
                        "missing": int(column.isna().sum())}
    return out


def encoding_record(frame, names: tuple[str, ...], embedded: dict[str, list[str]]) -> list[dict]:
    """What was done to each string column of the training `frame`: its encoding, levels, and where its
    missing values went."""
    out = [{"column": col, "encoding": "onehot", "levels": len(levels), "categories": levels[:20],
            "missing": int(frame[col].isna().sum()), "missing_as": "all-zero indicators"}
           for col, levels in onehot_levels(names).items()]
    out += [{"column": col, "encoding": "embedding", "levels": len(levels), "categories": levels[:20],
             "dim": embedding_dim(len(levels)), "missing": int(frame[col].isna().sum()),
             "missing_as": "code 0 (shared with unseen levels)"} for col, levels in embedded.items()]
    return out


def embedding_dim(levels: int) -> int:
    """Width of a column's entity embedding: min(50, round(1.6 * (levels + 1) ** 0.56)), the +1 for code 0
    (missing or unseen); a rule of thumb that grows slower than the levels."""
    return int(min(50, round(1.6 * (levels + 1) ** 0.56)))


ID_NAMES = ("id", "index", "rownames", "unnamed: 0", "row", "row_id")


def _known(names: tuple[str, ...], columns: list[str], key: str, path: Path) -> None:
    for name in names:
        if name not in columns:
            close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"{key}: {name!r} is not a feature column of {path.name}{hint}; columns: "
                            + ", ".join(columns))


def choose_columns(frame, section, path: Path, target: str):
    """The feature columns data.features names (in that order), or all but data.drop."""
    columns = [str(c) for c in frame.columns]
    if isinstance(section.features, tuple):
        _known(section.features, columns, "data.features", path)
        return frame[list(section.features)]
    _known(section.drop, columns, "data.drop", path)
    kept = frame.drop(columns=list(section.drop))
    if kept.shape[1] == 0:
        raise DataError(f"data.drop: leaves no feature column in {path.name} (target {target!r})")
    return kept


def id_like_columns(frame) -> list[str]:
    """Columns that look like row identifiers: named like one (id, index, rownames, Unnamed: 0), or
    with a distinct value in every row (of at least 20 rows) that are strings, or integers that number
    the rows (a consecutive range, in any order). Unique measurements are not identifiers: floats, or
    integers with gaps (a country's population). Strings: object or pandas' string dtype (kind "O")."""
    found = []
    for col in frame.columns:
        column = frame[col]
        named = str(col).strip().lower() in ID_NAMES
        unique = len(frame) >= 20 and column.notna().all() and column.nunique() == len(frame)
        numbers = unique and column.dtype.kind in "iu" and int(column.max()) - int(column.min()) == len(frame) - 1
        if named or numbers or (unique and column.dtype.kind == "O"):
            found.append(str(col))
    return found


def read_table(path: Path, section, fmt: str):
    frame = _read_frame(path, fmt)
    if frame.shape[1] < 2:
        raise DataError(f"{path}: needs at least one feature column and a target column")
    target = section.target or frame.columns[-1]
    if target not in frame.columns:
        raise DataError(f"data.target: column {target!r} not in {path.name}; columns: "
                        + ", ".join(map(str, frame.columns)))
    y = frame.pop(target).to_numpy()
    if y.dtype == object:
        y = y.astype(str)
    columns = [str(c) for c in frame.columns]
    frame = choose_columns(frame, section, path, target)
    names, embedded = feature_columns(frame, section.categorical, section.max_categories, path)
    for col in id_like_columns(frame):      # after the columns that stop the run (an identifier of strings)
        emit([f"{path.name}: column {col!r} looks like a row ID (one distinct value per row); it is used as a "
              f"feature, leave it out with data.drop = [\"{col}\"]"])
    record = {"dropped": [c for c in columns if c not in frame.columns],
              "encoded": encoding_record(frame, names, embedded)}
    if embedded:
        record["embedded"] = embedded
    return encode_features(frame, names, path, embedded), y, names, record


# ------------------------------------------------------------------------------------- arrays
def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:     # numpy's own message for a foreign file talks of unpickling it
        if f.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not an NPY file (no NPY header); check data.source and data.format")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NPY ({exc.__class__.__name__}: {exc})") from None


def _npy_labels_path(path: Path, target: str) -> Path:
    """An NPY source's labels file: `data.target` as given, else next to the features file."""
    labels = Path(target)
    return path.parent / target if not labels.is_file() and (path.parent / target).is_file() else labels


def read_npy(path: Path, section, fmt: str = "npy"):
    """An NPY array of features; labels in the file `data.target` names, else its last column."""
    x = _load_npy(path)
    target = section.target
    if target is not None and target.endswith(".npy"):
        labels = _npy_labels_path(path, target)
        if not labels.is_file():
            raise DataError(f"data.target: labels file {target!r} not found")
        return x, _load_npy(labels), ()
    if x.ndim != 2 or x.shape[1] < 2:
        raise DataError(f"{path}: got an array of shape {x.shape}; without a labels file (data.target = "
                        "\"labels.npy\") an NPY source must be 2-D with the target in a column")
    try:
        col = int(target) if target is not None else x.shape[1] - 1
    except ValueError:
        raise DataError(f"data.target: got {target!r}; for an NPY source give a column index or a labels "
                        ".npy file") from None
    if not -x.shape[1] <= col < x.shape[1]:
        raise DataError(f"data.target: column {col} out of range for {x.shape[1]} columns")
    return np.delete(x, col, axis=1), x[:, col], ()


def read_npz(path: Path, section, fmt: str = "npz"):
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an NPZ file (a zip of .npy arrays); check data.source and data.format")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            keys = list(arrays.keys())
            ykey = section.target or "y"
            if "x" not in keys or ykey not in keys:
                raise DataError(f"{path}: an NPZ file must hold arrays 'x' and {ykey!r}; found {keys}")
            return arrays["x"], arrays[ykey], ()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NPZ ({exc.__class__.__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------- IDX
def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt gzip file ({exc})") from None
    return data


def read_idx_array(path: Path) -> np.ndarray:
    """One IDX file (raw or gzip): magic 0 0 <dtype> <ndim>, big-endian uint32 dims, then the data."""
    data = _raw_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 0
    offset = 4 + 4 * ndim
    if len(data) - offset != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says {dims} but the file holds {len(data) - offset} data bytes")
    return np.frombuffer(data, dtype, count, offset).reshape(dims)


def idx_labels_path(images: Path) -> Path:
    """The labels file next to an images file, by MNIST's naming (train-images-idx3 -> train-labels-idx1)."""
    name = images.name.replace("images-idx3", "labels-idx1").replace("images", "labels")
    return images.with_name(name)


def _idx_labels(path: Path, section) -> Path:
    return Path(section.target) if section.target else idx_labels_path(path)


def read_idx(path: Path, section, fmt: str = "idx"):
    images = read_idx_array(path)
    labels_path = _idx_labels(path, section)
    if labels_path == path or not labels_path.is_file():
        raise DataError(f"data.target: IDX labels file {str(labels_path)!r} not found; name it with "
                        "data.target")
    labels = read_idx_array(labels_path)
    if images.ndim not in (3, 4) or labels.ndim != 1:
        raise DataError(f"{path}: expected images (N, H, W) and labels (N,), got {images.shape} and "
                        f"{labels.shape}")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return x, labels.astype(np.int64), ()


# -------------------------------------------------------------------------------------- CIFAR
def cifar_kind(path: Path) -> str:
    """cifar10 or cifar100 from the record size (3073 or 3074 bytes); ambiguous sizes need data.format."""
    size = path.stat().st_size
    kinds = [k for k, b in CIFAR_LABEL_BYTES.items() if size and size % (b + CIFAR_PIXELS) == 0]
    if len(kinds) != 1:
        raise DataError(f"{path}: {size} bytes is {'not' if not kinds else 'ambiguously'} a whole number of "
                        "CIFAR records (3073 bytes for CIFAR-10, 3074 for CIFAR-100); set data.format")
    return kinds[0]


def read_cifar(path: Path, section, fmt: str):
    head = CIFAR_LABEL_BYTES[fmt]
    data = np.frombuffer(path.read_bytes(), np.uint8)
    if data.size == 0 or data.size % (head + CIFAR_PIXELS):
        raise DataError(f"{path}: {data.size} bytes is not a whole number of {fmt} records "
                        f"({head + CIFAR_PIXELS} bytes each)")
    records = data.reshape(-1, head + CIFAR_PIXELS)
    level = section.target or "fine"
    if fmt == "cifar100" and level not in ("fine", "coarse"):
        raise DataError(f"data.target: got {level!r}; a CIFAR-100 source has labels \"fine\" or \"coarse\"")
    labels = records[:, 0 if fmt == "cifar10" or level == "coarse" else 1].astype(np.int64)
    n_classes = 10 if fmt == "cifar10" else (20 if level == "coarse" else 100)
    check_label_range(labels, n_classes, str(path))
    x = records[:, head:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return x, labels, ()


# ------------------------------------------------------------------------------- image folder
def _load_image(file: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{file}: cannot read as an image ({exc})") from None


def read_image_folder(path: Path, section, fmt: str = "image_folder"):
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{path}: an image folder needs one sub-folder per class (at least 2), found "
                        f"{len(classes)}")
    mode = "RGB" if section.channels == 3 else "L"
    images, labels = [], []
    for folder in classes:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            images.append(_load_image(file, mode, section.image_size))
            labels.append(folder.name)
    sizes = {im.shape[:2] for im in images}
    if len(sizes) > 1:
        raise DataError(f"{path}: images have different sizes {sorted(sizes)[:4]}; set data.image_size to "
                        "resize them to one size")
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x), np.array(labels), ()


# ------------------------------------------------------------------------------------ dispatch
FORMAT_READERS = {"csv": read_table, "tsv": read_table, "parquet": read_table, "npy": read_npy,
                  "npz": read_npz, "idx": read_idx, "cifar10": read_cifar, "cifar100": read_cifar,
                  "image_folder": read_image_folder}
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy",
            ".npz": "npz", ".idx": "idx"}


def detect_format(path: Path) -> str | None:
    """The format of a path from its name (and a .bin file's size); None when it cannot tell."""
    if path.is_dir():
        return "image_folder"
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if "idx1-ubyte" in name or "idx3-ubyte" in name or "-ubyte" in name:
        return "idx"
    if suffix == ".bin" and path.is_file():
        return cifar_kind(path)
    return None


def labels_file(path: Path, section) -> Path | None:
    """The second file a source's targets are read from (an NPY source's `data.target` labels file, an
    IDX images file's labels file), or None when the targets are in the source itself."""
    fmt = section.format if section.format != "auto" else detect_format(path)
    if fmt == "npy" and section.target is not None and section.target.endswith(".npy"):
        return _npy_labels_path(path, section.target)
    if fmt == "idx":
        return _idx_labels(path, section)
    return None


def read_path(path: Path, section) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict]:
    """Read a local file or folder as (x, y, feature names, what was done to the columns), by
    data.format or its name. A table's record names the columns left out and how each string column
    was encoded (see `encoding_record`); other formats give an empty one."""
    if not path.exists():
        raise DataError(f"data.source: file {str(path)!r} not found")
    fmt = section.format if section.format != "auto" else detect_format(path)
    if fmt is None:
        raise DataError(f"data.source: cannot tell the format of {str(path)!r}; name it .csv/.tsv/.parquet/"
                        ".npy/.npz/-idx3-ubyte[.gz]/.bin, or set data.format")
    if (fmt == "image_folder") != path.is_dir():
        raise DataError(f"data.source: {str(path)!r} is {'a folder' if path.is_dir() else 'a file'}, but "
                        f"data.format {fmt!r} needs {'a folder' if fmt == 'image_folder' else 'a file'}")
    x, y, names, *record = FORMAT_READERS[fmt](path, section, fmt)
    return x, y, names, (record[0] if record else {})
