"""Data checks at load: errors stop the run before a folder exists; warnings name the evidence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import trainwell as tw
from trainwell.data.checks import DataWarning, fit_imputer, impute
from trainwell.errors import DataError

QUICK = {"train.epochs": 1, "model.hidden": [8], "stopping.enabled": False}


def blobs(n=120, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(n, d)) + y[:, None], y


def fit_warnings(x, y, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tw.fit(data=(x, y), out=False, quiet=True, **{**QUICK, **kw})
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)], run


def test_clean_data_gives_no_warning():
    found, run = fit_warnings(*blobs())
    assert found == [] and run.metrics["data_warnings"] == []


def test_nonfinite_features_error_or_impute(tmp_path):
    x, y = blobs()
    x[5, 1] = np.nan
    x[9, 3] = np.inf
    with pytest.raises(DataError, match=r"data: 2 rows have NaN or infinite features \(rows 5, 9; features 1, "
                       r"3\); clean them or set data.nonfinite = \"impute\""):
        tw.fit(data=(x, y), out=tmp_path / "run", quiet=True, **QUICK)
    assert not (tmp_path / "run").exists()
    _, run = fit_warnings(x, y, **{"data.nonfinite": "impute"})
    assert np.isfinite(run.history[-1]["train_loss"])


def test_imputer_uses_finite_training_means():
    import torch

    train = torch.tensor([[1.0, float("nan")], [3.0, 4.0], [float("inf"), 6.0]])
    values = fit_imputer(train)
    torch.testing.assert_close(values, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(impute(train, values), torch.tensor([[1.0, 5.0], [3.0, 4.0], [2.0, 6.0]]))


def test_constant_features_warned():
    x, y = blobs()
    x[:, 2] = 7.0
    found, run = fit_warnings(x, y)
    assert found == ["1 of 4 features are constant in the training split (2); they carry no information"]
    assert run.metrics["data_warnings"] == found


def test_train_test_duplicates_warned_with_count():
    x, y = blobs(n=90)
    x, y = np.concatenate([x, x[:30]]), np.concatenate([y, y[:30]])  # 30 rows appear twice
    found, run = fit_warnings(x, y)
    leaks = [f for f in found if f.startswith("leakage")]
    idx = run.extras["data"].indices
    keys = {r.tobytes() for r in x[idx["train"]].astype(np.float32)}
    for split, label in (("val", "val"), ("test", "test")):
        count = sum(r.tobytes() in keys for r in x[idx[split]].astype(np.float32))
        if count:
            assert (f"leakage: {count} of {len(idx[split])} {label} rows are exact duplicates of training rows; "
                    f"the {label} score overstates generalization (deduplicate the data)") in leaks
    assert leaks


def test_class_imbalance_warned_with_ratios():
    x, y = blobs(n=200)
    y = np.where(np.arange(200) < 180, 0, 1)
    found, run = fit_warnings(x, y)
    n0, n1 = np.bincount(y[run.extras["data"].indices["train"]])       # the training split's counts
    assert (n0, n1) == (108, 12)
    assert (f"class imbalance in the training split: the largest class has {n0 / n1:.1f}x the rows of the smallest "
            f"(0: {n0} (90.0%), 1: {n1} (10.0%)); judge by f1 (macro) and balanced_accuracy rather than accuracy, "
            "and consider loss.class_weight = \"balanced\" or train.sampler = \"balanced\"") in found


def test_class_absent_from_a_split():
    x, y = blobs(n=60)
    y[0] = 3                                       # one row of class 3: only one split can hold it
    found, _ = fit_warnings(x, y)
    absent = [f for f in found if "has no rows in the" in f]
    assert any(f.startswith("class 3 has no rows in the val split; its metrics will not cover it") for f in absent)


def test_labels_outside_range_for_a_given_dataset():
    from trainwell.data.sources import Dataset

    x, y = blobs(n=30)
    ds = Dataset(x.astype(np.float32), np.where(y == 2, 5, y), "multiclass", "mine", ("a", "b", "c"))
    with pytest.raises(DataError, match=r"data: 10 labels outside the expected range 0..2 \(values 5\)"):
        tw.fit(data=ds, out=False, quiet=True, **QUICK)


def test_nonfinite_regression_targets():
    x = np.random.default_rng(0).normal(size=(40, 3))
    y = x.sum(1) + 0.5
    y[3] = np.nan
    with pytest.raises(DataError, match=r"data: 1 targets are NaN or infinite \(rows 3\); drop those rows"):
        tw.fit(data=(x, y), out=False, quiet=True, **QUICK, **{"data.task": "regression"})
