"""trainwell.sklearn: the estimators checked by scikit-learn's own estimator checks, and in the tools
practitioners use them with (Pipeline, ColumnTransformer, cross_val_score, GridSearchCV, clone, pickle)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification, make_regression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from trainwell.recipe import Recipe
from trainwell.sklearn import (
    EXPECTED_FAILED_CHECKS,
    EstimatorInputError,
    TrainwellClassifier,
    TrainwellRegressor,
    expected_failed_checks,
)

# Small and fast: the estimator checks fit a few hundred times.
FAST = {"train": {"epochs": 30, "batch_size": 32}, "model": {"hidden": [32]}, "optimizer": {"lr": 1e-2},
        "watch": {"probes": False, "doctor": False, "report": False}, "stopping": {"patience": 5}}


@parametrize_with_checks([TrainwellClassifier(FAST), TrainwellRegressor(FAST)],
                         expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_every_expected_failure_has_a_one_line_reason_and_is_documented():
    doc = (Path(__file__).parents[1] / "docs" / "sklearn.md").read_text()
    for name, reason in EXPECTED_FAILED_CHECKS.items():
        assert reason and "\n" not in reason
        assert f"`{name}`" in doc


def _blobs(n=400, seed=0):
    x, y = make_classification(n, 6, n_informative=4, n_redundant=0, n_classes=3, class_sep=2.0,
                               random_state=seed)
    return x.astype(np.float32), y


def test_recipe_keys_are_parameters_for_get_set_params_and_clone():
    clf = TrainwellClassifier(FAST, optimizer__lr=3e-3, model__hidden=(16, 8), seed=4)
    params = clf.get_params()
    assert params["optimizer__lr"] == 3e-3 and params["model__hidden"] == (16, 8) and params["seed"] == 4
    assert params["validation_fraction"] == 0.2 and params["recipe"] is FAST
    clf.set_params(optimizer__lr=1e-4, train__epochs=2)
    assert clf.get_params()["optimizer__lr"] == 1e-4 and clf.get_params()["train__epochs"] == 2
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    r = twin.resolved_recipe()
    assert (r.optimizer.lr, r.model.hidden, r.seed, r.train.epochs) == (1e-4, (16, 8), 4, 2)
    assert r.data.split == (0.8, 0.2, 0.0) and r.data.stratify


def test_recipe_as_path_dict_or_recipe_gives_the_same_run(tmp_path):
    x, y = _blobs(200)
    recipe = Recipe.from_dict(FAST)
    path = tmp_path / "r.toml"
    path.write_text(recipe.to_toml())
    probs = [TrainwellClassifier(r, train__epochs=3).fit(x, y).predict_proba(x) for r in (FAST, recipe, str(path))]
    assert np.array_equal(probs[0], probs[1]) and np.array_equal(probs[0], probs[2])


def test_clone_then_fit_equals_fit():
    x, y = _blobs()
    clf = TrainwellClassifier(FAST, seed=3, train__epochs=6).fit(x, y)
    twin = clone(clf).fit(x, y)
    assert [r["val_loss"] for r in twin.history_] == [r["val_loss"] for r in clf.history_]
    assert np.array_equal(twin.predict_proba(x), clf.predict_proba(x))
    other_seed = clone(clf).set_params(seed=4).fit(x, y)      # the control: the seed does change the numbers
    assert not np.array_equal(other_seed.predict_proba(x), clf.predict_proba(x))


def test_fitted_attributes_and_methods_agree():
    x, y = _blobs()
    labels = np.array(["ant", "bee", "cat"])[y]
    clf = TrainwellClassifier(FAST, train__epochs=8).fit(x, labels)
    assert list(clf.classes_) == ["ant", "bee", "cat"] and clf.n_features_in_ == 6
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    logits = clf.decision_function(x)
    np.testing.assert_allclose(proba, torch.softmax(torch.from_numpy(logits), 1).numpy(), rtol=1e-6)
    assert np.array_equal(clf.predict(x), clf.classes_[proba.argmax(1)])
    assert clf.score(x, labels) == pytest.approx(np.mean(clf.predict(x) == labels))
    assert clf.score(x, labels) > 0.85
    assert len(clf.history_) == clf.metrics_["stopped_epoch"] and 1 <= clf.best_epoch_ <= len(clf.history_)
    best = min(clf.history_, key=lambda r: r["val_loss"])
    assert best["epoch"] == clf.best_epoch_
    assert clf.metrics_["rows"] == {"train": 320, "val": 80, "test": 0}


def test_binary_decision_function_is_the_logit_of_the_second_class():
    x, y = make_classification(300, 5, random_state=1)
    clf = TrainwellClassifier(FAST, train__epochs=5).fit(x, y)
    d, p = clf.decision_function(x), clf.predict_proba(x)
    assert d.shape == (300,)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-d)), rtol=1e-6)


def test_regressor_one_and_several_targets():
    x, y = make_regression(300, 5, n_targets=2, noise=1.0, random_state=0)
    y = y + np.array([1000.0, -50.0])       # the target scaling maps back to the targets' units
    reg = TrainwellRegressor(FAST, train__epochs=40).fit(x, y)
    assert reg.predict(x).shape == (300, 2) and reg.score(x, y) > 0.9
    one = TrainwellRegressor(FAST, train__epochs=40).fit(x, y[:, 0])
    assert one.predict(x).shape == (300,)
    assert abs(one.predict(x).mean() - y[:, 0].mean()) < 0.1 * y[:, 0].std()


def test_dataframe_columns_are_feature_names_in():
    pd = pytest.importorskip("pandas")
    x, y = _blobs(200)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    clf = TrainwellClassifier(FAST, train__epochs=3).fit(frame, y)
    assert list(clf.feature_names_in_) == [f"f{i}" for i in range(6)]
    assert np.array_equal(clf.predict(frame), clf.predict(x.astype(np.float64)))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[frame.columns[::-1]])


def test_pickle_round_trip_keeps_weights_as_safetensors_bytes():
    x, y = _blobs(200)
    clf = TrainwellClassifier(FAST, train__epochs=4).fit(x, y)
    state = clf.__getstate__()
    packed = state["model_"]
    assert all(isinstance(b, bytes) for b in packed["weights"]) and isinstance(packed["statistics"], bytes)
    tensors = st_load(packed["weights"][0])
    own = clf.model_.net.state_dict()
    assert set(tensors) == set(own) and all(torch.equal(tensors[k], own[k].cpu()) for k in own)
    stats = st_load(packed["statistics"])
    assert torch.equal(stats["mean"], clf.model_.normalizer.mean.cpu())
    back = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(back.predict_proba(x), clf.predict_proba(x))
    assert back.get_params() == clf.get_params() and back.best_epoch_ == clf.best_epoch_


def test_pickle_of_an_ensemble_and_of_imputed_rows():
    x, y = _blobs(200)
    x[::7, 2] = np.nan
    clf = TrainwellClassifier(FAST, train__epochs=3, train__average={"kind": "ensemble", "members": 2},
                              data__nonfinite="impute").fit(x, y)
    back = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(back.predict_proba(x), clf.predict_proba(x))
    assert np.isfinite(clf.predict_proba(x)).all()


def test_run_folder_only_when_out_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _blobs(200)
    clf = TrainwellClassifier(FAST, train__epochs=2).fit(x, y)
    assert clf.run_dir_ is None and list(tmp_path.iterdir()) == []
    out = tmp_path / "run"
    clf = TrainwellClassifier(FAST, train__epochs=2, out=out).fit(x, y)
    assert clf.run_dir_ == out and (out / "metrics.json").is_file() and (out / "recipe.toml").is_file()


def test_validation_fraction_and_stratification():
    x, y = make_classification(400, 5, weights=[0.9, 0.1], random_state=0)
    clf = TrainwellClassifier(FAST, train__epochs=1, validation_fraction=0.25).fit(x, y)
    assert clf.metrics_["rows"]["val"] == 100
    assert clf.recipe_.data.stratify and clf.recipe_.data.split == (0.75, 0.25, 0.0)
    plain = TrainwellClassifier(FAST, train__epochs=1, stratify=False).fit(x, y)
    assert not plain.recipe_.data.stratify
    none = TrainwellClassifier(FAST, train__epochs=2, validation_fraction=0, stopping__enabled=False).fit(x, y)
    assert none.metrics_["rows"]["val"] == 0 and len(none.history_) == 2


def test_doctor_findings_stay_on_the_estimator():
    x, y = _blobs(300)
    # Far too small a learning rate for 3 epochs: the doctor says the model underfits.
    clf = TrainwellClassifier(FAST, train__epochs=3, optimizer__lr=1e-6, watch__doctor=True).fit(x, y)
    assert "underfitting" in [f.rule for f in clf.findings_]


def test_small_data_lowers_the_batch_with_a_warning():
    x, y = _blobs(40)          # classes of 13, 13 and 14 rows: 10 + 10 + 11 train (0.8 of each, rounded)
    with pytest.warns(UserWarning, match="train.batch_size: 64 is more than the 31 training rows"):
        clf = TrainwellClassifier({**FAST, "train": {"epochs": 1, "batch_size": 64}}).fit(x, y)
    assert clf.recipe_.train.batch_size == 31 and clf.metrics_["rows"]["train"] == 31


# Bad input from Python: one ValueError/TypeError naming the argument or key (docs/errors.md, "Estimators").
BAD = [
    ("estimator-unknown-key", dict(optimizer__lrr=0.1), EstimatorInputError, "optimizer.lrr: unknown key; did you mean optimizer.lr?"),
    ("estimator-bad-value", dict(train__epochs=0), EstimatorInputError, "train.epochs: got 0, must be >= 1"),
    ("estimator-own-data-key", dict(data__split=[0.5, 0.5, 0.0]), EstimatorInputError,
     "data__split: set by validation_fraction in TrainwellClassifier; leave it out"),
    ("estimator-validation-fraction", dict(validation_fraction=1.5), EstimatorInputError,
     "validation_fraction: got 1.5, expected a number in [0, 1)"),
    ("estimator-no-validation-rows", dict(validation_fraction=0), EstimatorInputError,
     "stopping.monitor: got 'val_loss', but data.split has no validation fraction"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_arguments_are_one_clear_error(case):
    _, params, error, message = case
    x, y = _blobs(100)
    with pytest.raises(error, match=re.escape(message)):
        TrainwellClassifier(FAST, **params).fit(x, y)


def test_sparse_and_sample_weight_are_refused_clearly():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    x, y = _blobs(100)
    with pytest.raises(TypeError, match="sparse input is not supported by TrainwellClassifier"):
        TrainwellClassifier(FAST).fit(scipy_sparse.csr_matrix(x), y)
    with pytest.raises(EstimatorInputError, match="sample_weight: TrainwellRegressor does not weight rows"):
        TrainwellRegressor(FAST).fit(x, y.astype(float), sample_weight=np.ones(len(y)))
    with pytest.raises(ValueError, match="only one class"):
        TrainwellClassifier(FAST).fit(x, np.zeros(len(y)))


def test_estimator_error_ids_are_in_the_docs():
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    ids = [c[0] for c in BAD] + ["estimator-sparse", "estimator-sample-weight", "estimator-one-class"]
    assert [i for i in ids if f"`{i}`" not in text] == []


def _mixed_frame(n=300, seed=0):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n)
    size = rng.normal(size=n)
    y = ((colour == "red") ^ (size > 0)).astype(int)      # needs both the string column and the number
    return pd.DataFrame({"colour": colour, "size": size, "noise": rng.normal(size=n)}), y


@pytest.mark.slow
def test_pipeline_with_column_transformer_in_cross_val_score_with_two_jobs():
    frame, y = _mixed_frame()
    pipe = Pipeline([("columns", ColumnTransformer([("onehot", OneHotEncoder(), ["colour"]),
                                                    ("scale", StandardScaler(), ["size", "noise"])])),
                     ("net", TrainwellClassifier(FAST, train__epochs=40, model__hidden=(32, 32)))])
    scores = cross_val_score(pipe, frame, y, cv=3, n_jobs=2)
    assert scores.min() > 0.85         # a linear model cannot do it from these columns (xor)
    pipe.fit(frame, y)
    assert pipe[-1].n_features_in_ == 5         # 3 one-hot columns and 2 scaled ones
    assert (pipe.predict(frame) == y).mean() > 0.9


@pytest.mark.slow
def test_grid_search_over_the_learning_rate_never_picks_a_rate_1000_times_too_small():
    x, y = _blobs(300, seed=2)
    grid = GridSearchCV(TrainwellClassifier(FAST, train__epochs=8, optimizer__kind="sgd", optimizer__momentum=0.9),
                        {"optimizer__lr": [3e-5, 3e-2]}, cv=3, n_jobs=2)
    grid.fit(x, y)
    assert grid.best_params_ == {"optimizer__lr": 3e-2}
    scores = dict(zip([p["optimizer__lr"] for p in grid.cv_results_["params"]], grid.cv_results_["mean_test_score"]))
    assert scores[3e-2] > scores[3e-5] + 0.2, scores
    assert grid.best_estimator_.recipe_.optimizer.lr == 3e-2
