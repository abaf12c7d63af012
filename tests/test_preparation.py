"""What was done to the data: imputation, encoding, dropped columns and target scaling are recorded in
data.json and facts.json, shown in the report's data table and said once at fit; predict counts unseen
categories and imputed values per column."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import trainwell as tw
from trainwell.data.checks import DataWarning
from trainwell.predict import predict

QUICK = {"train.epochs": 2, "model.hidden": [8], "watch.probes": False, "watch.doctor": False}


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({"rownames": np.arange(n), "age": rng.normal(40, 10, n).round(1),
                          "city": rng.choice(["Oslo", "Bergen", "Tromso"], n),
                          "fare": rng.normal(10, 3, n)})
    frame.loc[[3, 7, 11], "age"] = np.nan
    frame.loc[[5, 9], "city"] = np.nan
    frame.loc[20, "fare"] = np.inf
    frame["label"] = (frame["fare"].clip(upper=30) + rng.normal(0, 1, n) > 10).astype(int)
    path = tmp_path / "people.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _fit(path, tmp_path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tw.fit(out=tmp_path / "run", quiet=True, **QUICK,
                     **{"data.source": str(path), "data.nonfinite": "impute", "data.drop": ["rownames"], **kw})
    return run, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_imputation_and_encoding_are_recorded_said_and_shown(table, tmp_path):
    path, frame = table
    run, said = _fit(path, tmp_path)
    train = run.extras["data"].indices["train"]
    # The hand count of every column's missing values, and its training-split mean (finite values only).
    expected = {}
    for col in ("age", "fare"):
        values = frame[col].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        kept = values[train][np.isfinite(values[train])]
        expected[col] = (int(bad.sum()), kept.mean())
    facts = json.loads((run.path / "facts.json").read_text())
    prep = facts["data"]["preparation"]
    assert json.loads((run.path / "data.json").read_text())["preparation"] == prep
    assert prep["dropped"] == ["rownames"]
    got = {r["feature"]: (r["values"], r["with"]) for r in prep["imputed"]}
    assert set(got) == {"age", "fare"}
    for col, (count, mean) in expected.items():
        assert got[col][0] == count and got[col][1] == pytest.approx(mean, rel=1e-5)
    (city,) = prep["encoded"]
    assert city == {"column": "city", "encoding": "onehot", "levels": 3, "categories": ["Bergen", "Oslo", "Tromso"],
                    "missing": 2, "missing_as": "all-zero indicators"}
    assert "target" not in prep                       # a classification run: no target scaling
    imputed = [s for s in said if s.startswith("imputed 4 values (missing or infinite)")]
    assert len(imputed) == 1 and "age 3" in imputed[0] and "fare 1" in imputed[0]
    assert sum(s.startswith("encoded 1 string column") and "city onehot (3 levels; 2 missing" in s
               for s in said) == 1
    assert set(said) <= set(run.metrics["data_warnings"]) | {s for s in said if "row ID" in s}
    page = (run.path / "report.html").read_text()
    assert "imputed: age" in page and "encoded: city" in page and "columns left out" in page


def test_predict_counts_unseen_categories_and_imputed_values(table, tmp_path):
    path, frame = table
    run, _ = _fit(path, tmp_path)
    new = frame.drop(columns=["label"]).head(6).copy()
    new.loc[0, "city"] = "Paris"
    new.loc[1, "city"] = "Rome"
    new.loc[2, "city"] = np.nan
    new.loc[[0, 4], "age"] = np.nan
    new["age"] = new["age"].astype(float)
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict(run.path, new_path)
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(out) == 6
    unseen = [s for s in said if "unseen in training" in s]
    assert len(unseen) == 1 and "2 values of categories" in unseen[0] and "city 2 ('Paris', 'Rome')" in unseen[0]
    missing_city = int(new["city"].isna().sum())        # row 2, and row 5 (missing in the source too)
    assert missing_city == 2
    assert any(f"{missing_city} values missing in string columns" in s and f"city {missing_city}" in s for s in said)
    expected_nan = int(new["age"].isna().sum())
    assert any(s.startswith(f"{new_path}: imputed {expected_nan} ") and f"age {expected_nan}" in s for s in said)
    # Clean rows of known categories: nothing to say.
    clean = frame.drop(columns=["label"]).iloc[[0, 1, 2, 4]]
    assert clean.notna().all().all()
    clean.to_csv(new_path, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict(run.path, new_path)
    assert not [w for w in caught if issubclass(w.category, DataWarning)]


def test_a_regression_run_records_its_target_scaling(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["price"] = 1000 + 300 * x[:, 0]
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    run = tw.fit(out=tmp_path / "run", quiet=True, **QUICK, **{"data.source": str(path)})
    prep = json.loads((run.path / "facts.json").read_text())["data"]["preparation"]
    train = frame["price"].to_numpy()[run.extras["data"].indices["train"]]
    assert prep["target"]["kind"] == "standard"
    assert prep["target"]["shift"] == [pytest.approx(train.mean(), rel=1e-5)]
    assert prep["target"]["scale"] == [pytest.approx(train.std(), rel=1e-4)]
    assert prep["encoded"] == [] and prep["dropped"] == [] and "imputed" not in prep
    assert "target scaling" in (run.path / "report.html").read_text()
