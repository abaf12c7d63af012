"""Columns: data.features / data.drop, and a warning for a column that looks like a row ID."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import trainwell as tw
from trainwell.data.checks import DataWarning
from trainwell.data.sources import load_source
from trainwell.errors import DataError, RecipeError

QUICK = {"train.epochs": 1, "model.hidden": [8], "watch.doctor": False, "watch.report": False,
         "watch.probes": False}


@pytest.fixture
def csv(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"rownames": np.arange(1, n + 1), "a": rng.normal(size=n), "b": rng.normal(size=n),
                          "colour": rng.choice(["red", "blue"], n)})
    frame["label"] = (frame["a"] > 0).astype(int)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def _fit(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tw.fit(out=False, quiet=True, **QUICK, **{"data.source": str(path), **kw})
    return run, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_an_id_column_warns_with_the_key_to_drop_it(csv):
    run, found = _fit(csv)
    assert "rownames" in run.extras["data"].dataset.feature_names
    assert any("column 'rownames' looks like a row ID" in f and 'data.drop = ["rownames"]' in f for f in found)
    run, found = _fit(csv, **{"data.drop": ["rownames"]})
    assert run.extras["data"].dataset.feature_names == ("a", "b", "colour=blue", "colour=red")
    assert not any("row ID" in f for f in found)


def test_features_choose_and_order_the_columns(csv):
    run, found = _fit(csv, **{"data.features": ["b", "a"]})
    ds = load_source(run.recipe.data, run.recipe.seed)      # the rows as loaded
    assert run.extras["data"].dataset.feature_names == ds.feature_names == ("b", "a")
    frame = pd.read_csv(csv)
    np.testing.assert_array_equal(ds.x, frame[["b", "a"]].to_numpy(dtype=np.float32))
    assert not any("row ID" in f for f in found)


def test_a_float_measurement_unique_per_row_is_not_an_id(csv):
    _, found = _fit(csv, **{"data.drop": ["rownames"]})     # a and b are unique floats: no warning
    assert found == [] or not any("row ID" in f for f in found)


def test_unknown_columns_and_both_keys_are_refused(csv):
    with pytest.raises(DataError, match=r"data.features: 'colur' is not a feature column of t.csv \(did you mean "
                                        r"'colour'\?\)"):
        _fit(csv, **{"data.features": ["a", "colur"]})
    with pytest.raises(DataError, match="data.drop: 'label' is not a feature column"):
        _fit(csv, **{"data.drop": ["label"]})
    with pytest.raises(RecipeError, match="data.drop: give data.features .* or data.drop"):
        _fit(csv, **{"data.features": ["a"], "data.drop": ["b"]})


def test_row_numbers_warn_but_unique_measurements_do_not(tmp_path):
    """A shuffled 0..n-1 column numbers the rows (an ID under any name); integers unique per row with
    gaps (a population) and floats are measurements."""
    rng = np.random.default_rng(1)
    n = 40
    frame = pd.DataFrame({"serial": rng.permutation(n) + 1000, "pop": rng.choice(10**7, n, replace=False) + 10**6,
                          "gdp": rng.normal(size=n), "code": [f"c{i}" for i in range(n)],
                          "y": rng.integers(0, 2, n)})
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    _, found = _fit(path, **{"data.drop": ["code"]})
    said = [f for f in found if "row ID" in f]
    assert len(said) == 1 and "'serial'" in said[0]
    _, found = _fit(path, **{"data.features": ["pop", "gdp", "code"]})
    assert [f for f in found if "row ID" in f] == [f for f in found if "'code' looks like a row ID" in f] != []
