"""Classification metrics against scikit-learn and a hand-written expected calibration error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

import trainwell as tw
from trainwell import metrics as M
from trainwell.predict import predict


def hand_ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: 15 equal-width confidence bins, sum of |accuracy - confidence| weighted by bin size."""
    conf, pred = probs.max(1), probs.argmax(1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


def _case(seed: int, n: int, c: int, sharp: float):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])      # every class present
    logits = rng.normal(size=(n, c)) * sharp + 1.5 * np.eye(c)[y]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return y, probs.astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.integers(12, 300), st.integers(2, 6), st.floats(0.2, 4.0))
def test_metrics_equal_sklearn_and_the_hand_ece(seed, n, c, sharp):
    y, probs = _case(seed, n, c, sharp)
    task = "binary" if c == 2 else "multiclass"
    yt, pt = torch.from_numpy(y), torch.from_numpy(probs)
    pred = pt.argmax(1)
    got = M.compute(M.build_metrics(task, c), pred, yt, pt)
    p = probs.argmax(1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0), abs=1e-5)
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-5)
    assert got["nll"] == pytest.approx(skm.log_loss(y, probs.astype(np.float64) / probs.sum(1, keepdims=True),
                                                    labels=list(range(c))), rel=1e-4, abs=1e-5)
    assert got["ece"] == pytest.approx(hand_ece(probs, y), abs=1e-5)
    if task == "binary":
        assert got["precision_pos"] == pytest.approx(skm.precision_score(y, p, zero_division=0), abs=1e-5)
        assert got["recall_pos"] == pytest.approx(skm.recall_score(y, p), abs=1e-5)
        assert got["auroc_pos"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-5)
    else:
        assert "auroc_pos" not in got and "precision_pos" not in got


def test_binary_f1_is_macro_not_the_positive_class():
    # 3% positives; a classifier that finds half of them: positive-class F1 0.4, macro ~0.69.
    y = np.zeros(200, dtype=int)
    y[:6] = 1
    p = y.copy()
    p[:3] = 0
    p[10:12] = 1
    got = M.compute(M.build_metrics("binary", 2), torch.from_numpy(p), torch.from_numpy(y))
    assert skm.f1_score(y, p) == pytest.approx(0.5454, abs=1e-3)
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-6)
    assert got["f1"] > skm.f1_score(y, p)


def test_probabilities_from_each_head():
    logit = torch.tensor([[0.3], [-2.0]])
    torch.testing.assert_close(M.probabilities(logit, "binary", "bce_with_logits")[:, 1], torch.sigmoid(logit[:, 0]))
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    torch.testing.assert_close(M.probabilities(logits, "multiclass", "cross_entropy"), torch.softmax(logits, 1))
    torch.testing.assert_close(M.probabilities(torch.log_softmax(logits, 1), "multiclass", "nll"),
                               torch.softmax(logits, 1))
    assert M.probabilities(logits, "multiclass", "hinge") is None
    assert M.probabilities(logits, "regression", "mse") is None


def test_a_run_reports_the_metrics_of_its_own_predictions(tmp_path):
    """metrics.json's test figures are sklearn's on predict()'s probabilities of the test rows."""
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    np.save(tmp_path / "x.npy", x)
    run = tw.fit(out=tmp_path / "run", quiet=True, **{"data.source": "breast_cancer", "train.epochs": 3,
                                                      "model.hidden": [16], "stopping.enabled": False})
    frame = predict(run.path, tmp_path / "x.npy")
    test = run.extras["data"].indices["test"]
    y = run.extras["data"].dataset.y[test]
    probs = frame[["prob_0", "prob_1"]].to_numpy()[test]
    got = run.metrics["test"]
    assert got["auroc_pos"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]), abs=1e-5)
    assert got["f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"), abs=1e-5)
    assert got["nll"] == pytest.approx(skm.log_loss(y, probs), rel=1e-4)
    assert got["ece"] == pytest.approx(hand_ece(probs, y), abs=1e-5)
    assert {"val_nll", "val_ece", "val_auroc_pos", "train_balanced_accuracy"} <= set(run.history[-1])
    # the training split too, from the final eval-mode pass (metrics.json "train")
    train = run.extras["data"].indices["train"]
    yt, pt = run.extras["data"].dataset.y[train], frame[["prob_0", "prob_1"]].to_numpy()[train]
    tr = run.metrics["train"]
    assert tr["nll"] == pytest.approx(skm.log_loss(yt, pt), rel=1e-4)
    assert tr["auroc_pos"] == pytest.approx(skm.roc_auc_score(yt, pt[:, 1]), abs=1e-5)
    # ECE on the very tensors the run evaluated (a row on a bin edge may fall either side after predict's
    # own normalization of the raw rows)
    run.model.eval()
    with torch.no_grad():
        p1 = torch.sigmoid(run.model(run.extras["data"].train.x)[:, 0]).double().numpy()
    assert tr["ece"] == pytest.approx(hand_ece(np.stack([1 - p1, p1], 1), yt), abs=1e-6)
    assert tr["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yt, pt.argmax(1)), abs=1e-5)
    # The report's reliability diagram is of the same rows: its bins give the same ECE.
    cal = run.metrics["calibration"]
    assert cal["split"] == "test" and sum(b["rows"] for b in cal["bins"]) == len(test)
    assert cal["ece"] == pytest.approx(got["ece"], abs=1e-5)
    assert 'id="fig-reliability"' in (run.path / "report.html").read_text()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(3, 200), st.integers(2, 7))
def test_label_metrics_with_missing_classes_equal_sklearn(seed, n, c):
    """Macro F1 runs over the classes among the targets or the predictions (sklearn's labels); balanced
    accuracy, the mean recall, over the targets' classes only (a class never in the targets has no recall)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))
    task = "binary" if c == 2 else "multiclass"
    got = M.compute(M.build_metrics(task, c), torch.from_numpy(p), torch.from_numpy(y))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert got["f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0), abs=1e-5)
    with warnings.catch_warnings():        # sklearn warns of predicted classes that are not in y_true
        warnings.simplefilter("ignore")
        assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-5)


def test_balanced_accuracy_leaves_out_a_class_only_predicted():
    # targets 0, 0, 1, 1; predictions 0, 2, 1, 1: recalls 1/2 (class 0) and 2/2 (class 1); class 2 has no
    # rows to recall. Mean over the targets' classes: 0.75 (counting class 2 as 0 would give 0.5).
    got = M.compute(M.build_metrics("multiclass", 3), torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert got["balanced_accuracy"] == pytest.approx(0.75)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 200), st.integers(1, 3), st.floats(0.0, 3.0),
       st.sampled_from([0.0, 300.0, 2000.0, 1e5]))
def test_regression_metrics_equal_sklearn(seed, n, outputs, noise, offset):
    """Targets far from zero too (kelvin, years, prices): R2 about the column's mean, not a one-pass
    float32 variance (which gave 0.99 for sklearn's 0.91 around 1e4)."""
    rng = np.random.default_rng(seed)
    y = (offset + rng.normal(size=(n, outputs))).astype(np.float32)
    p = (y + noise * rng.normal(size=y.shape)).astype(np.float32)
    yt, pt = torch.from_numpy(y), torch.from_numpy(p)
    if outputs == 1:
        yt, pt = yt.squeeze(1), pt.squeeze(1)
    got = M.compute(M.build_metrics("regression", 0), pt, yt)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-4, abs=1e-6)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-4, abs=1e-6)
    assert got["r2"] == pytest.approx(skm.r2_score(y.astype(np.float64), p.astype(np.float64)), rel=1e-3, abs=1e-4)


def test_auroc_counts_ties_half_and_is_nan_without_both_classes():
    y = torch.tensor([0, 0, 1, 1])
    assert M.auroc(torch.tensor([0.1, 0.5, 0.5, 0.9]), y) == pytest.approx(0.875)     # 3.5 of 4 pairs
    assert M.auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert np.isnan(M.auroc(torch.tensor([0.3, 0.6]), torch.tensor([1, 1])))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(4, 300), st.integers(2, 6))
def test_auroc_with_many_ties_equals_sklearn(seed, n, levels):
    """Scores on a few levels (a model that outputs the same probability for many rows): every tie
    counted half, as roc_auc_score's trapezoids do."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([[0, 1], rng.integers(0, 2, n - 2)])
    scores = (rng.integers(0, levels, n) + y * rng.integers(0, 2, n)) / levels
    assert M.auroc(torch.from_numpy(scores), torch.from_numpy(y)) == pytest.approx(skm.roc_auc_score(y, scores),
                                                                                 abs=1e-9)


def test_r2_of_a_constant_target_follows_sklearn():
    y = np.full(30, 0.1, dtype=np.float32)
    for p, want in ((y.copy(), 1.0), (y + np.linspace(-0.01, 0.01, 30, dtype=np.float32), 0.0)):
        got = M.regression_metrics(torch.from_numpy(p), torch.from_numpy(y))["r2"]
        assert got == skm.r2_score(y.astype(np.float64), p.astype(np.float64)) == want   # fitted exactly: 1, else 0


def test_ece_and_the_reliability_bins_at_the_bin_edges():
    # confidences exactly on edges k/15 (and 1.0, which closes the last bin)
    conf = np.array([1 / 15, 2 / 15, 0.5, 14 / 15, 1.0, 1.0], dtype=np.float32)
    probs = np.stack([conf, 1 - conf], 1)
    y = np.array([0, 1, 0, 0, 0, 1])
    got = M.compute(M.build_metrics("binary", 2), torch.from_numpy(probs.argmax(1)), torch.from_numpy(y),
                    torch.from_numpy(probs))
    assert got["ece"] == pytest.approx(hand_ece(probs, y), abs=1e-7)
    rel = M.reliability(torch.from_numpy(probs), torch.from_numpy(y))
    assert rel["ece"] == pytest.approx(got["ece"], abs=1e-12) and sum(b["rows"] for b in rel["bins"]) == 6
