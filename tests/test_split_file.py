"""Reusable splits: every run folder holds splits.npz; data.split_file reuses its rows exactly."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import trainwell as tw
from trainwell.data.sources import load_source
from trainwell.errors import DataError

QUICK = {"data.source": "wine", "train.epochs": 1, "model.hidden": [8], "watch.doctor": False,
         "watch.report": False, "watch.probes": False}


def test_the_run_folder_holds_its_splits_and_another_recipe_reuses_them(tmp_path):
    first = tw.fit(out=tmp_path / "a", quiet=True, **QUICK)
    with np.load(tmp_path / "a" / "splits.npz") as f:
        saved = {k: f[k] for k in f.files}
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(saved[k], first.extras["data"].indices[k])
    ds = load_source(first.recipe.data, first.recipe.seed)     # the rows as loaded (the run holds them once,
    assert int(saved["rows"]) == len(ds.y) == 178                 # arranged by split: data/rows.py)
    h = hashlib.sha256()
    for a in (ds.x, ds.y):
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert str(saved["sha256"]) == h.hexdigest()
    # Another seed would split otherwise; with the split file it trains and tests on the same rows.
    other = tw.fit(out=False, quiet=True, **QUICK, seed=7, **{"data.split_file": str(tmp_path / "a")})
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(other.extras["data"].indices[k], saved[k])
    fresh = tw.fit(out=False, quiet=True, **QUICK, seed=7)
    assert not np.array_equal(fresh.extras["data"].indices["test"], saved["test"])
    # An sklearn baseline reads the same rows from the file: the test rows' labels match the run's.
    from sklearn.datasets import load_wine

    y = load_wine().target
    np.testing.assert_array_equal(y[saved["test"]], ds.y[saved["test"]])


def test_a_split_file_of_other_data_is_refused(tmp_path):
    tw.fit(out=tmp_path / "a", quiet=True, **QUICK)
    with pytest.raises(DataError, match="data.split_file: .* was made from data of 178 rows, this data has 150"):
        tw.fit(out=False, quiet=True, **{**QUICK, "data.source": "iris"},
               **{"data.split_file": str(tmp_path / "a" / "splits.npz")})
    with pytest.raises(DataError, match="data.split_file: .*not found"):
        tw.fit(out=False, quiet=True, **QUICK, **{"data.split_file": str(tmp_path / "nothing.npz")})


@pytest.mark.parametrize("change, message", [
    (lambda f: {**f, "test": np.concatenate([f["test"], f["train"][:20]])},
     r"holds row \d+ in both train and test \(20 rows in both\)"),
    (lambda f: {**f, "test": np.concatenate([f["test"], [-1]])}, r"holds test row -1, outside the data's rows 0..177"),
    (lambda f: {**f, "val": np.concatenate([f["val"], [178]])}, r"holds val row 178, outside the data's rows 0..177"),
    (lambda f: {**f, "train": np.concatenate([f["train"], f["train"][:5]])}, r"holds train row \d+ twice"),
])
def test_a_split_file_whose_indices_cannot_be_a_split_is_refused(tmp_path, change, message):
    """A split file written by hand or damaged (same row count and sha256): a row in two splits would leak
    silently (only a 'deduplicate the data' warning), a negative index wrapped round to another row, one
    past the end was a bare IndexError, a row twice trained twice as often. Each is one DataError line."""
    tw.fit(out=tmp_path / "a", quiet=True, **QUICK)
    with np.load(tmp_path / "a" / "splits.npz") as f:
        np.savez(tmp_path / "bad.npz", **change({k: f[k] for k in f.files}))
    with pytest.raises(DataError, match=r"^data.split_file: .*bad.npz " + message):
        tw.fit(out=False, quiet=True, **QUICK, **{"data.split_file": str(tmp_path / "bad.npz")})


def test_a_csv_split_is_identified_by_the_file_and_fits_recipes_that_encode_it_otherwise(tmp_path):
    import pandas as pd

    from trainwell.data.split import Splits, data_sha256, splits_bytes

    rng = np.random.default_rng(0)
    n = 80
    frame = pd.DataFrame({"rownames": np.arange(1, n + 1), "a": rng.normal(size=n), "b": rng.normal(size=n),
                          "colour": rng.choice(["red", "blue", "green"], n), "label": rng.integers(0, 2, n)})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    csv = {**QUICK, "data.source": str(path), "data.target": "label"}
    first = tw.fit(out=tmp_path / "a", quiet=True, **csv, **{"data.drop": ["rownames"]})
    with np.load(tmp_path / "a" / "splits.npz") as f:
        saved = {k: f[k] for k in f.files}
    assert str(saved["sha256"]) == hashlib.sha256(path.read_bytes()).hexdigest()     # the file's bytes
    # other columns, another encoding, another seed: the same rows of the same file
    other = tw.fit(out=False, quiet=True, **csv, seed=5, **{"data.features": ["a", "colour"],
                                                           "data.categorical": "onehot",
                                                           "data.split_file": str(tmp_path / "a")})
    assert other.extras["data"].dataset.x.shape[1] != first.extras["data"].dataset.x.shape[1]
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(other.extras["data"].indices[k], saved[k])
    # one value changed, same row count: other data
    frame.loc[3, "a"] += 1
    frame.to_csv(tmp_path / "t2.csv", index=False)
    with pytest.raises(DataError, match="data.split_file: .* was made from other data"):
        tw.fit(out=False, quiet=True, **{**csv, "data.source": str(tmp_path / "t2.csv")},
               **{"data.drop": ["rownames"], "data.split_file": str(tmp_path / "a")})
    # a split file written before file hashes (the loaded data's sha256) still fits its data
    ds = load_source(first.recipe.data, first.recipe.seed)      # the rows as loaded, in the file's order
    old = tmp_path / "old.npz"
    old.write_bytes(splits_bytes(Splits(saved["train"], saved["val"], saved["test"]), n, data_sha256(ds.x, ds.y)))
    again = tw.fit(out=False, quiet=True, **csv, **{"data.drop": ["rownames"], "data.split_file": str(old)})
    np.testing.assert_array_equal(again.extras["data"].indices["test"], saved["test"])


@pytest.mark.parametrize("kind", ["npy", "idx"])
def test_a_split_file_of_other_labels_in_a_labels_file_is_refused(tmp_path, kind):
    """An NPY source's labels file (data.target) and an IDX images file's labels file are part of the
    data a split file was made from: other labels in them (the features file unchanged) are other data."""
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    if kind == "npy":
        x = rng.normal(size=(60, 4)).astype(np.float32)
        source, labels = tmp_path / "x.npy", tmp_path / "y.npy"
        np.save(source, x)

        def write_labels(v):
            np.save(labels, v)
        extra = {"data.target": str(labels)}
    else:
        source, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
        images = rng.integers(0, 256, size=(60, 4, 4), dtype=np.uint8)
        source.write_bytes(b"\x00\x00\x08\x03" + np.array([60, 4, 4], ">u4").tobytes() + images.tobytes())

        def write_labels(v):
            labels.write_bytes(b"\x00\x00\x08\x01" + np.array([60], ">u4").tobytes() + v.astype(np.uint8).tobytes())
        extra = {"model.kind": "mlp"}
    write_labels(y)
    quick = {**QUICK, "data.source": str(source), **extra}
    tw.fit(out=tmp_path / "a", quiet=True, **quick)
    same = tw.fit(out=False, quiet=True, **quick, seed=3, **{"data.split_file": str(tmp_path / "a")})
    assert len(same.extras["data"].indices["test"])
    write_labels(y[::-1].copy())                 # the same rows of features, other labels
    with pytest.raises(DataError, match="data.split_file: .* was made from other data"):
        tw.fit(out=False, quiet=True, **quick, seed=3, **{"data.split_file": str(tmp_path / "a")})
