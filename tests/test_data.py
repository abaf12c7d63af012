"""Sources, splits and normalization."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwell.data.normalize import MinMax, Standardize
from trainwell.data.sources import BUNDLED, SYNTHETIC, infer_task, load_source
from trainwell.data.split import make_splits
from trainwell.errors import DataError
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe


@given(st.integers(30, 400), st.integers(2, 5), st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_splits_are_disjoint_complete_seeded_and_stratified(n, classes, seed):
    labels = np.arange(n) % classes
    s = make_splits(n, (0.6, 0.2, 0.2), seed, labels)
    allidx = np.concatenate([s.train, s.val, s.test])
    assert sorted(allidx.tolist()) == list(range(n))
    again = make_splits(n, (0.6, 0.2, 0.2), seed, labels)
    assert np.array_equal(s.train, again.train) and np.array_equal(s.test, again.test)
    for c in range(classes):
        per_class = (labels == c).sum()
        # each class is cut in the same proportion, up to rounding of one row per cut
        assert abs((labels[s.train] == c).sum() - 0.6 * per_class) <= 1.0
        assert abs((labels[s.test] == c).sum() - 0.2 * per_class) <= 1.5


def test_different_seeds_give_different_splits():
    a, b = make_splits(100, (0.6, 0.2, 0.2), 0), make_splits(100, (0.6, 0.2, 0.2), 1)
    assert not np.array_equal(a.train, b.train)


@pytest.mark.parametrize("name", sorted(BUNDLED) + list(SYNTHETIC))
def test_every_source_loads(name):
    ds = load_source(load_recipe(None, {"data.source": name, "data.n_samples": 100}).data, 0)
    assert ds.x.dtype == np.float32 and len(ds.x) == len(ds.y)
    expected = {"diabetes": "regression", "polynomial": "regression", "digits": "multiclass", "iris": "multiclass",
                "wine": "multiclass", "breast_cancer": "binary", "moons": "binary", "circles": "binary",
                "spirals": "binary", "teacher": "binary", "shapes": "multiclass"}[name]
    assert ds.task == expected


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_equal_scikit_learns_loaders(name):
    """Read from scikit-learn's files without importing it: the same arrays, bit for bit, dtypes and
    feature names as `sklearn.datasets.load_NAME()` (so split files made before still match)."""
    from sklearn import datasets

    x, y, names = BUNDLED[name]()
    bunch = getattr(datasets, f"load_{name}")()
    assert x.dtype == bunch.data.dtype and np.array_equal(x, bunch.data)
    assert y.dtype == bunch.target.dtype and np.array_equal(y, bunch.target)
    assert names == tuple(str(n) for n in bunch.feature_names)


def test_synthetic_sources_are_seeded():
    d = load_recipe(None, {"data.source": "spirals", "data.classes": 3}).data
    a, b, c = load_source(d, 0), load_source(d, 0), load_source(d, 1)
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)
    assert sorted(set(a.y.tolist())) == [0, 1, 2]


def test_task_inference():
    assert infer_task(np.array([0, 1, 1, 0])) == "binary"
    assert infer_task(np.array([0.0, 2.0, 1.0])) == "multiclass"
    assert infer_task(np.array([0.5, 2.0, 1.0])) == "regression"
    assert infer_task(np.array(["a", "b", "c"])) == "multiclass"


def test_normalization_uses_training_statistics_only():
    r = load_recipe(None, {"data.source": "wine"})
    p = prepare_data(r)
    assert torch.allclose(p.train.x.mean(0), torch.zeros(p.train.x.shape[1]), atol=1e-5)
    assert torch.allclose(p.train.x.std(0, unbiased=False), torch.ones(p.train.x.shape[1]), atol=1e-4)
    assert not torch.allclose(p.val.x.mean(0), torch.zeros(p.val.x.shape[1]), atol=1e-3)
    raw = torch.from_numpy(load_source(r.data, 0).x)[torch.from_numpy(p.indices["val"])]
    expected = (raw - raw.new_tensor(load_source(r.data, 0).x[p.indices["train"]].mean(0))) / p.normalizer.std
    assert torch.allclose(p.val.x, expected, atol=1e-4)


def test_minmax_and_constant_features():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    m = MinMax().fit(x)
    assert torch.allclose(m.transform(x), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]))
    s = Standardize().fit(x)
    assert torch.isfinite(s.transform(x)).all()
    s2 = Standardize()
    s2.load_state_dict(s.state_dict())
    assert torch.equal(s2.transform(x), s.transform(x))


def test_csv_and_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    csv = tmp_path / "d.csv"
    lines = ["a,label,b,c"] + [f"{r[0]},{t},{r[1]},{r[2]}" for r, t in zip(x, y)]
    csv.write_text("\n".join(lines) + "\n")
    ds = load_source(load_recipe(None, {"data.source": str(csv), "data.target": "label"}).data, 0)
    assert ds.task == "binary" and ds.x.shape == (60, 3) and ds.feature_names == ("a", "b", "c")
    np.testing.assert_allclose(ds.x[:, 0], x[:, 0], rtol=1e-6)
    with pytest.raises(DataError, match="data.target: column 'nope' not in d.csv"):
        load_source(load_recipe(None, {"data.source": str(csv), "data.target": "nope"}).data, 0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=x, y=y)
    ds = load_source(load_recipe(None, {"data.source": str(npz)}).data, 0)
    assert np.array_equal(ds.x, x) and ds.task == "binary"
    with pytest.raises(DataError, match="must hold arrays 'x' and 'target'"):
        load_source(load_recipe(None, {"data.source": str(npz), "data.target": "target"}).data, 0)


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(DataError, match="data.source: file .* not found"):
        load_source(load_recipe(None, {"data.source": str(tmp_path / "x.csv")}).data, 0)
    with pytest.raises(DataError, match=r"data.source: got 'digitz' \(did you mean 'digits'\?\); expected one of digits"):
        load_source(load_recipe(None, {"data.source": "digitz"}).data, 0)
