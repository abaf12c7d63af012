"""The doctor's baselines (watch/baselines.py, in torch) against scikit-learn's models with the settings the
facts used before (Ridge(alpha=1), LogisticRegression(max_iter=200), KNeighbors*(k), NearestNeighbors):
same predictions on sklearn's bundled real data sets and on generated ones, and a default `fit` on an
NPZ that imports none of scikit-learn, scipy and pandas."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import datasets
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from sklearn.preprocessing import StandardScaler

from trainwell.watch import baselines as bl
from trainwell.watch import facts

CLASSIFICATION = {"iris": datasets.load_iris, "wine": datasets.load_wine,
                  "breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}


def _split(x, y, seed=0, train=0.7):
    p = np.random.default_rng(seed).permutation(len(x))
    n = int(train * len(x))
    scaler = StandardScaler().fit(x[p[:n]])
    return scaler.transform(x[p[:n]]), y[p[:n]], scaler.transform(x[p[n:]]), y[p[n:]]


def _t(a):
    return torch.as_tensor(np.ascontiguousarray(a))


@pytest.mark.parametrize("name", ["diabetes", "linnerud"])
def test_ridge_equals_sklearn_on_real_data(name):
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xt, yt, xv, _ = _split(x.astype(np.float64), y.astype(np.float64))
    ref = Ridge(alpha=1.0).fit(xt, yt)
    w, b = bl.ridge(_t(xt), _t(yt))
    np.testing.assert_allclose(bl.linear_predict((w, b), _t(xv)).numpy().reshape(ref.predict(xv).shape),
                               ref.predict(xv), rtol=1e-9, atol=1e-9 * np.abs(yt).max())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 60), d=st.integers(1, 80), outputs=st.integers(1, 3), alpha=st.sampled_from([1e-3, 1.0, 50.0]),
       seed=st.integers(0, 2**16))
def test_ridge_equals_sklearn_with_more_or_fewer_features_than_rows(n, d, outputs, alpha, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    y = x @ rng.normal(size=(d, outputs)) + rng.normal(size=(n, outputs)) + 3
    ref = Ridge(alpha=alpha).fit(x, y)
    w, b = bl.ridge(_t(x), _t(y), alpha)
    np.testing.assert_allclose(bl.linear_predict((w, b), _t(x)).numpy().reshape(n, -1), ref.predict(x).reshape(n, -1),
                               rtol=1e-6,
                               atol=1e-6 * (1 + np.abs(y).max()))


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_logistic_regression_predicts_like_sklearn_on_real_data(name):
    x, y = CLASSIFICATION[name](return_X_y=True)
    xt, yt, xv, yv = _split(x.astype(np.float64), y)
    classes, codes = np.unique(yt, return_inverse=True)
    weights = bl.logistic(_t(xt), _t(codes), len(classes))
    ours = classes[bl.class_of(bl.linear_predict(weights, _t(xv))).numpy()]
    # the converged optimum: the same decision on (almost) every row
    exact = LogisticRegression(max_iter=10_000, tol=1e-10).fit(xt, yt).predict(xv)
    assert (ours == exact).mean() >= 0.98
    # the model the facts used (200 iterations): the same validation accuracy within 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = LogisticRegression(max_iter=200).fit(xt, yt).predict(xv)
    assert abs((ours == yv).mean() - (before == yv).mean()) <= 0.01


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 200), d=st.integers(1, 12), n_classes=st.integers(2, 4), c=st.sampled_from([0.1, 1.0]),
       seed=st.integers(0, 2**16))
def test_logistic_regression_reaches_sklearns_optimum(n, d, n_classes, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, n_classes)) + rng.gumbel(size=(n, n_classes))).argmax(1)
    if len(np.unique(y)) < 2:
        return
    classes, codes = np.unique(y, return_inverse=True)
    ref = LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(x, y)
    w, b = bl.logistic(_t(x), _t(codes), len(classes), c=c)
    ref_scores = ref.decision_function(x).reshape(n, -1)
    ours = bl.linear_predict((w, b), _t(x)).numpy()
    # the same penalized objective, minimized to a gradient of 1e-4: the same scores to about 1e-3
    np.testing.assert_allclose(ours, ref_scores, atol=2e-3 * (1 + np.abs(ref_scores).max()))


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_knn_classifier_equals_sklearn_on_real_data(name):
    x, y = CLASSIFICATION[name](return_X_y=True)
    xt, yt, xv, _ = _split(x.astype(np.float64) + np.random.default_rng(1).normal(0, 1e-6, x.shape), y)  # no tied distances
    classes, codes = np.unique(yt, return_inverse=True)
    for k in (1, 4, 15):
        ref = KNeighborsClassifier(k).fit(xt, yt).predict(xv)
        idx = torch.cat([i for _, i in bl.nearest([_t(xv[:50]), _t(xv[50:])], _t(xt), k)])
        np.testing.assert_array_equal(classes[bl.knn_classify(idx, _t(codes), len(classes)).numpy()], ref)


def test_knn_vote_ties_go_to_the_smallest_class_like_sklearn():
    xt = np.array([[0.0], [1.0], [-1.0], [2.0]])
    yt = np.array([2, 0, 2, 0])
    xv = np.array([[0.4], [0.6]])
    ref = KNeighborsClassifier(2).fit(xt, yt).predict(xv)        # one neighbour of each class
    (_, idx), = bl.nearest([_t(xv)], _t(xt), 2)
    classes, codes = np.unique(yt, return_inverse=True)
    np.testing.assert_array_equal(classes[bl.knn_classify(idx, _t(codes), 2).numpy()], ref)
    assert list(ref) == [0, 0]


@pytest.mark.parametrize("name", ["diabetes", "linnerud"])
def test_knn_regressor_equals_sklearn_on_real_data(name):
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xt, yt, xv, _ = _split(x.astype(np.float64), y.astype(np.float64))
    k = 5
    ref = KNeighborsRegressor(k, weights="distance").fit(xt, yt).predict(xv)
    (dist, idx), = bl.nearest([_t(xv)], _t(xt), k)
    np.testing.assert_allclose(bl.knn_regress(dist, idx, _t(yt)).numpy().reshape(ref.shape), ref, rtol=1e-9)


def test_knn_regressor_gives_rows_at_distance_zero_all_the_weight_like_sklearn():
    xt = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    yt = np.array([1.0, 3.0, 10.0, 20.0])
    xv = np.array([[0.0, 0.0], [0.5, 0.5]])
    ref = KNeighborsRegressor(3, weights="distance").fit(xt, yt).predict(xv)
    (dist, idx), = bl.nearest([_t(xv)], _t(xt), 3)
    out = bl.knn_regress(dist, idx, _t(yt)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert out[0] == 2.0                                          # the mean of the two exact copies


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 700), d=st.integers(1, 20), k=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_nearest_other_rows_equal_sklearns_neighbours_without_the_row_itself(n, d, k, seed):
    x = np.random.default_rng(seed).normal(size=(n, d))
    k = min(k, n - 1)
    dist, ref = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    ours = bl.nearest_others(_t(x), k).numpy()
    assert (ref[:, 0] == np.arange(n)).all()                     # (no tied distances: sklearn's first is the row)
    np.testing.assert_array_equal(ours, ref[:, 1:])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 50), outputs=st.integers(1, 3), constant=st.booleans(), exact=st.booleans(),
       seed=st.integers(0, 2**16))
def test_r2_equals_sklearns_r2_score(n, outputs, constant, exact, seed):
    # the baselines' R2 is the metrics' (one definition in the project)
    from trainwell.metrics import r2

    rng = np.random.default_rng(seed)
    y = np.full((n, outputs), 2.5) if constant else rng.normal(size=(n, outputs))
    pred = y.copy() if exact else y + rng.normal(size=y.shape)
    assert r2(_t(pred), _t(y)) == pytest.approx(r2_score(y, pred), rel=1e-12, abs=1e-12)
    assert r2(_t(pred[:, 0]), _t(y[:, 0])) == pytest.approx(r2_score(y[:, 0], pred[:, 0]), rel=1e-12, abs=1e-12)


def _sklearn_baselines(xt, yt, xv, yv, task):
    """The facts' baselines as they were computed with scikit-learn (standardized on the training rows)."""
    scaler = StandardScaler().fit(xt)
    xt, xv = scaler.transform(xt), scaler.transform(xv)
    k = int(min(15, max(1, round(len(xt) ** 0.5 / 2))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "regression":
            return {"linear": r2_score(yv, Ridge(alpha=1.0).fit(xt, yt).predict(xv)),
                    "knn": r2_score(yv, KNeighborsRegressor(k, weights="distance").fit(xt, yt).predict(xv))}
        return {"linear": (LogisticRegression(max_iter=200).fit(xt, yt).predict(xv) == yv).mean(),
                "knn": (KNeighborsClassifier(k).fit(xt, yt).predict(xv) == yv).mean()}


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "iris", "diabetes"])
def test_the_facts_baselines_score_like_the_sklearn_models_they_replace(name):
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    task = "regression" if name == "diabetes" else "classification"
    p = np.random.default_rng(0).permutation(len(x))
    n = int(0.7 * len(x))
    x = x.astype(np.float32)
    ref = _sklearn_baselines(x[p[:n]].astype(np.float64), y[p[:n]], x[p[n:]].astype(np.float64), y[p[n:]], task)
    yt = torch.as_tensor(y, dtype=torch.float32 if task == "regression" else torch.long)
    out = facts.baselines(_t(x[p[:n]]), yt[p[:n]], _t(x[p[n:]]), yt[p[n:]], task)
    assert out["metric"] == ("r2" if task == "regression" else "accuracy")
    assert out["models"]["knn"] == pytest.approx(ref["knn"], abs=1e-9)
    assert out["models"]["linear"] == pytest.approx(ref["linear"], abs=0.01 if task != "regression" else 1e-9)
    assert out["val"] == max(out["models"].values())


def test_baselines_read_the_validation_rows_the_mask_keeps():
    x, y = datasets.load_wine(return_X_y=True)
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    keep = torch.arange(len(x) - 100) % 3 != 0
    net = y[100:][keep].numpy()             # a network that is always right
    whole = facts.baselines(x[:100], y[:100], x[100:][keep], y[100:][keep], "classification", net=net)
    masked = facts.baselines(x[:100], y[:100], x[100:], y[100:], "classification", keep=keep, net=net)
    assert masked == whole
    assert masked["versus_net"]["net"] == 1.0 and masked["versus_net"]["rows"] == int(keep.sum())


def test_feature_scales_moments_equal_the_float64_moments():
    x = torch.randn(1000, 7, dtype=torch.float32) * torch.tensor([1e-3, 1, 10, 100, 1e3, 0, 5]) + 50
    mean, std = facts.row_block_moments(x, size=64)
    torch.testing.assert_close(mean, x.double().mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, x.double().std(0, unbiased=False), rtol=1e-9, atol=1e-12)


def test_a_default_fit_on_an_npz_imports_neither_sklearn_nor_scipy_nor_pandas(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 20)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=(x[:, :3] @ rng.normal(size=(3, 3))).argmax(1))
    code = ("import sys, json\nfrom trainwell.cli import main\n"
            f"rc = main(['fit', '--quiet', '--set', 'data.source=\"{tmp_path / 'data.npz'}\"', '--set', 'train.epochs=2',"
            f" '--out', '{tmp_path / 'run'}'])\n"
            "print(json.dumps([rc, sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'pandas'})]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rc, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0
    assert heavy == []
    found = json.loads((tmp_path / "run" / "facts.json").read_text())
    assert set(found["baseline"]["models"]) == {"linear", "knn"}          # the baselines did run
    assert found["noise"]["checked"] > 0
    assert (tmp_path / "run" / "report.html").exists()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 400), d=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_the_standardizer_moments_are_the_whole_matrix_ones_bit_for_bit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) * 3 + torch.rand(d, generator=g) * 10).double()
    x[:, 0] = 2.5                               # a constant column: centred only
    s = bl.Standardizer(x)
    std = x.std(0, unbiased=False)
    assert torch.equal(s.mean, x.mean(0))
    assert torch.equal(s.std, torch.where(std < 1e-12, torch.ones_like(std), std))


@pytest.mark.parametrize("rows", [30, 2000, 4100])
def test_the_training_sample_is_the_standardized_float64_copy_of_its_rows(rows):
    x = torch.randn(rows, 37, generator=torch.Generator().manual_seed(rows)) * 4 + 1
    sample = facts.TrainingSample(x, seed=1)
    assert len(sample.rows) == min(rows, facts.BASELINE_ROWS)
    want = x[sample.rows].double()
    want = (want - want.mean(0)) / want.std(0, unbiased=False)
    assert torch.equal(sample.x, want)
