"""The small data sets shipped inside scikit-learn (digits, iris, wine, breast_cancer, diabetes), read
straight from the files scikit-learn installs, without importing scikit-learn: its import costs about
a second, which a run on a bundled set would otherwise pay before its first epoch.

Each loader returns what `sklearn.datasets.load_NAME(return_X_y=True)` returns (float64 features,
int or float64 targets, bit for bit; tests/test_data.py checks it against scikit-learn) and the
feature names of its Bunch.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import DataError

Loaded = tuple[np.ndarray, np.ndarray, tuple[str, ...]]


def data_dir() -> Path:
    """scikit-learn's `datasets/data` folder, found without importing scikit-learn (a top-level
    `find_spec` locates the package and runs none of it)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.source: the bundled sets are read from scikit-learn's files, and scikit-learn is "
                        "not installed (pip install scikit-learn)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _labelled_csv(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A CSV whose first line is `n_samples,n_features,class names...` and whose rows end with the
    integer class."""
    with open(data_dir() / name, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        head = next(rows)
        n, d = int(head[0]), int(head[1])
        x = np.empty((n, d))
        y = np.empty(n, dtype=int)
        for i, row in enumerate(rows):
            x[i] = np.asarray(row[:-1], dtype=np.float64)
            y[i] = int(row[-1])
    return x, y


def _gzip_table(name: str, delimiter: str | None = None) -> np.ndarray:
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as f:
        return np.loadtxt(f, delimiter=delimiter)


def digits() -> Loaded:
    data = _gzip_table("digits.csv.gz", ",")
    names = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    return data[:, :-1], data[:, -1].astype(int), names


def iris() -> Loaded:
    x, y = _labelled_csv("iris.csv")
    return x, y, ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")


def wine() -> Loaded:
    x, y = _labelled_csv("wine_data.csv")
    return x, y, ("alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols", "flavanoids",
                  "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue", "od280/od315_of_diluted_wines",
                  "proline")


def breast_cancer() -> Loaded:
    x, y = _labelled_csv("breast_cancer.csv")
    measures = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
                "concave points", "symmetry", "fractal dimension")
    names = tuple(f"mean {m}" for m in measures) + tuple(f"{m} error" for m in measures) \
        + tuple(f"worst {m}" for m in measures)
    return x, y, names


def diabetes() -> Loaded:
    """The scaled features: each column centred and divided by its standard deviation times sqrt(n)
    (so that its sum of squares is 1), as scikit-learn's default `scaled=True`."""
    x = _gzip_table("diabetes_data_raw.csv.gz")
    y = _gzip_table("diabetes_target.csv.gz")
    mean, std = x.mean(axis=0), x.std(axis=0)       # both of the raw columns, in scikit-learn's order
    x -= mean
    again = x.mean(axis=0)        # a second centring when the first left a mean measurably off zero
    if not np.allclose(again, 0):
        x -= again
    x /= std
    again = x.mean(axis=0)
    if not np.allclose(again, 0):
        x -= again
    x /= x.shape[0] ** 0.5
    return x, y, ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


LOADERS: dict[str, Callable[[], Loaded]] = {
    "digits": digits, "iris": iris, "wine": wine, "breast_cancer": breast_cancer, "diabetes": diabetes}
