"""Data sources: scikit-learn's bundled sets, seeded synthetic generators, and local files.

Every source returns a `Dataset` of float32 features and targets; classification labels are
remapped to 0..C-1 with the original values kept as class names. Nothing is downloaded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .bundled import LOADERS
from .formats import FORMAT_READERS, SUFFIXES, read_path
from .shapes import shapes

# Integer targets with at most this many distinct values are taken as class labels.
MAX_AUTO_CLASSES = 50


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray                      # float32, shape (N, ...features)
    y: np.ndarray                      # int64 labels (N,) or float32 targets (N,) / (N, T)
    task: str                          # "binary" | "multiclass" | "regression"
    name: str
    classes: tuple[str, ...] = ()      # original label of class i (classification)
    feature_names: tuple[str, ...] = ()
    # Regression target scaling fitted on the training split (data/target.py), set by prepare_data.
    target_scale: Any = None
    # What was done to the data on the way in: columns left out, string columns encoded, values
    # imputed, target scaling (prepare.prepare_data completes it; recorded in data.json and facts.json).
    preparation: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        if self.task == "regression":
            return 1 if self.y.ndim == 1 else int(self.y.shape[1])
        return len(self.classes)


# ----------------------------------------------------------------------------------- bundled
# name -> () -> (x, y, feature names): scikit-learn's small sets, read from its files (bundled.py)
BUNDLED = LOADERS


# --------------------------------------------------------------------------------- synthetic
def spirals(n_samples: int, noise: float, classes: int, rng: np.random.Generator):
    """K interleaved spiral arms in 2-D (two spirals when classes = 2)."""
    per = np.full(classes, n_samples // classes)
    per[: n_samples % classes] += 1
    xs, ys = [], []
    for k, m in enumerate(per):
        r = np.linspace(0.05, 1.0, m)
        t = np.linspace(k * 2 * np.pi / classes, k * 2 * np.pi / classes + 3 * np.pi, m)
        t = t + rng.normal(0, noise, m)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(m, k))
    return np.concatenate(xs), np.concatenate(ys)


def moons(n_samples: int, noise: float, rng: np.random.Generator):
    from sklearn.datasets import make_moons

    return make_moons(n_samples, noise=noise, random_state=int(rng.integers(2**31)))


def circles(n_samples: int, noise: float, rng: np.random.Generator):
    from sklearn.datasets import make_circles

    return make_circles(n_samples, noise=noise, factor=0.5, random_state=int(rng.integers(2**31)))


def teacher(n_samples: int, noise: float, features: int, classes: int, rng: np.random.Generator):
    """Labels given by a random one-hidden-layer tanh network (a learnable, known-capacity task)."""
    x = rng.normal(size=(n_samples, features))
    w1 = rng.normal(size=(features, 32)) / np.sqrt(features)
    w2 = rng.normal(size=(32, classes)) / np.sqrt(32)
    logits = np.tanh(x @ w1) @ w2 + rng.normal(0, noise, (n_samples, classes))
    return x, logits.argmax(1)


def polynomial(n_samples: int, noise: float, features: int, rng: np.random.Generator, degree: int = 3):
    """y = a random cubic of the first feature plus a linear term of the rest, plus noise."""
    x = rng.uniform(-1, 1, size=(n_samples, features))
    coef = rng.normal(size=degree + 1)
    lin = rng.normal(size=features) / np.sqrt(features)
    y = sum(c * x[:, 0] ** p for p, c in enumerate(coef)) + x @ lin + rng.normal(0, noise, n_samples)
    return x, y.astype(np.float32)


# data.source of a run whose data was passed from Python as arrays, tensors or a Dataset.
CUSTOM_SOURCE = "custom"
SYNTHETIC = ("spirals", "moons", "circles", "teacher", "polynomial", "shapes")
# Side of the `shapes` images when data.image_size is not set.
SHAPES_SIZE = 16


def _synthetic(name: str, section, seed: int):
    rng = np.random.default_rng(seed)
    n, noise = section.n_samples, section.noise
    if name == "spirals":
        return spirals(n, noise, section.classes, rng)
    if name == "moons":
        return moons(n, noise, rng)
    if name == "circles":
        return circles(n, noise, rng)
    if name == "teacher":
        return teacher(n, noise, section.features, section.classes, rng)
    if name == "shapes":
        return shapes(n, noise, section.shape_kinds, section.image_size or SHAPES_SIZE, section.channels, rng)
    return polynomial(n, noise, section.features, rng)


# ------------------------------------------------------------------------------------- files
# Suffix -> reader(path, section, format); data/formats.py resolves folders, IDX and CIFAR names too.
READERS = {suffix: FORMAT_READERS[fmt] for suffix, fmt in SUFFIXES.items()}


# -------------------------------------------------------------------------------------- entry
def infer_task(y: np.ndarray) -> str:
    if y.dtype.kind in "OUSb":
        return "binary" if len(np.unique(y)) == 2 else "multiclass"
    if y.ndim == 1 and y.dtype.kind in "iu" or (y.ndim == 1 and np.all(np.mod(y, 1) == 0)):
        n = len(np.unique(y))
        if n <= MAX_AUTO_CLASSES:
            return "binary" if n == 2 else "multiclass"
    return "regression"


def make_dataset(x: np.ndarray, y: np.ndarray, task: str = "auto", name: str = "data",
                 feature_names: tuple[str, ...] = ()) -> Dataset:
    """A Dataset from arrays: checks shapes, infers the task, remaps labels to 0..C-1."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        x = x.reshape(len(x), -1)
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} feature rows but {len(y)} targets")
    if len(x) == 0:
        raise DataError(f"{name}: no rows")
    if x.dtype.kind not in "fiub":
        raise DataError(f"{name}: features must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)      # float32 rows as loaded are not copied
    task = infer_task(y) if task == "auto" else task
    if task == "regression":
        if y.dtype.kind not in "fiub":
            raise DataError(f"data.task: regression needs numeric targets, got dtype {y.dtype}")
        return Dataset(x, y.astype(np.float32), task, name, (), feature_names)
    if y.ndim != 1:
        raise DataError(f"{name}: class labels must be one value per row, got shape {y.shape}")
    odd = y[~np.isfinite(y) | (np.mod(np.nan_to_num(y), 1) != 0)] if y.dtype.kind == "f" else y[:0]
    if len(odd):    # a float class label would silently become a class of its own
        raise DataError(f"data.task: {task} needs integer or string class labels, {name} has {len(odd)} "
                        f"non-integer targets (e.g. {odd[0]:g}); set data.task = \"regression\" or fix the labels")
    values, labels = np.unique(y, return_inverse=True)
    if task == "binary" and len(values) != 2:
        raise DataError(f"data.task: binary needs exactly 2 classes, the targets have {len(values)}")
    classes = tuple(str(v.item() if hasattr(v, "item") else v) for v in values)
    if len(values) < 2:
        raise DataError(f"{name}: only one class ({classes[0]!r}) in the targets; classification needs at "
                        "least 2 (or set data.task = \"regression\")")
    return Dataset(x, labels.astype(np.int64), task, name, classes, feature_names)


def load_source(section, seed: int) -> Dataset:
    """Load `data.source` as a Dataset (section: the recipe's DataSection)."""
    source = section.source
    record: dict = {}
    if source == CUSTOM_SOURCE:
        raise DataError("data.source: 'custom' means the data was passed from Python (tw.fit(..., data=(x, y)); "
                        "data.json records its shape, dtype and sha256); pass it again that way, or set data.source "
                        "to a file")
    if source in BUNDLED:
        x, y, names = BUNDLED[source]()
    elif source in SYNTHETIC:
        x, y = _synthetic(source, section, seed)
        names = ()
    else:
        path = Path(source)
        if not path.exists() and path.suffix.lower() in READERS:
            raise DataError(f"data.source: file {source!r} not found")
        if not path.exists():
            names = list(BUNDLED) + list(SYNTHETIC)
            close = difflib.get_close_matches(source, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"data.source: got {source!r}{hint}; expected one of {', '.join(names)} or an "
                            f"existing {'/'.join(READERS)} file, IDX/CIFAR file or image folder")
        x, y, names, record = read_path(path, section)
    ds = make_dataset(x, y, section.task, name=Path(source).stem if source not in BUNDLED else source,
                      feature_names=names)
    return replace(ds, preparation=record)
