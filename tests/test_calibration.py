"""calibrate = "temperature": the fit itself against known temperatures and an independent minimizer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from trainwell.calibration import TemperatureScaled, fit_temperature, scale_outputs
from trainwell.metrics import expected_calibration_error, probabilities


def _over_confident(t_true: float, n: int = 20000, classes: int = 5, seed: int = 0):
    """Labels drawn from softmax(z) (so z is calibrated), and a model that outputs z * t_true: over-confident
    by the factor t_true; temperature scaling should find T = t_true."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, classes, generator=g, dtype=torch.float64) * 2.0
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z * t_true, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5, 4.0])
def test_recovers_a_known_temperature(t_true):
    out, y = _over_confident(t_true)
    assert fit_temperature(out, y) == pytest.approx(t_true, rel=0.05)


def test_binary_one_logit_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20000, 1, generator=g, dtype=torch.float64) * 2.0
    y = torch.bernoulli(torch.sigmoid(z[:, 0]), generator=g).long()
    assert fit_temperature(z * 3.0, y) == pytest.approx(3.0, rel=0.05)


def test_matches_an_independent_one_dimensional_minimizer():
    out, y = _over_confident(2.0, n=3000, classes=4, seed=3)
    out = out + 0.3 * torch.randn_like(out)       # not exactly a scaled calibrated model

    def nll(t):
        return float(torch.nn.functional.cross_entropy(out / t, y))

    ref = minimize_scalar(nll, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-8}).x
    assert fit_temperature(out, y) == pytest.approx(ref, rel=1e-4)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.sampled_from([1, 2, 5]))
def test_every_row_right_keeps_t_at_one_as_no_temperature_minimizes_the_nll(seed, classes):
    """Every label with the strictly largest output: each row's NLL falls as T falls (checked on a grid),
    so there is no minimum to find; L-BFGS would stop wherever it ran out (T 0.04-0.06 seen). One wrong row
    brings a minimum back, found as the independent minimizer finds it."""
    g = torch.Generator().manual_seed(seed)
    n = 40
    y = torch.randint(0, max(classes, 2), (n,), generator=g)
    out = torch.randn(n, classes, generator=g, dtype=torch.float64)
    if classes == 1:
        out = (2 * y - 1).double().reshape(-1, 1) * (out.abs() + 0.1)
    else:
        out[torch.arange(n), y] = out.amax(1) + 0.1 + torch.rand(n, generator=g, dtype=torch.float64)

    def nll(o, t):
        if classes == 1:
            return float(torch.nn.functional.binary_cross_entropy_with_logits(o[:, 0] / t, y.double()))
        return float(torch.nn.functional.cross_entropy(o / t, y))

    grid = [nll(out, t) for t in (4.0, 1.0, 0.25, 0.0625, 0.01)]
    assert all(a > b for a, b in zip(grid, grid[1:]))
    assert fit_temperature(out, y) == 1.0
    wrong = out.clone()
    if classes == 1:
        wrong[0, 0] = -wrong[0, 0]
    else:
        wrong[0] = wrong[0].flip(0) if wrong[0].argmax() != classes - 1 - wrong[0].argmax() else wrong[0].roll(1)
    ref = minimize_scalar(lambda t: nll(wrong, t), bounds=(1e-3, 1e3), method="bounded", options={"xatol": 1e-10}).x
    if ref < 999:       # (a model worse than uniform wants T -> infinity; not this test's case)
        assert fit_temperature(wrong, y) == pytest.approx(ref, rel=1e-3)


def test_ece_falls_and_the_argmax_stays_on_the_over_confident_model():
    out, y = _over_confident(3.0)
    t = fit_temperature(out, y)
    before = probabilities(out.float(), "multiclass", "cross_entropy")
    after = probabilities(scale_outputs(out, t, "cross_entropy").float(), "multiclass", "cross_entropy")
    ece_before, ece_after = expected_calibration_error(before, y), expected_calibration_error(after, y)
    assert ece_before > 0.1 and ece_after < 0.02 and ece_after < ece_before / 5
    assert torch.equal(before.argmax(1), after.argmax(1))


@settings(max_examples=30, deadline=None)
@given(t=st.floats(0.05, 20), seed=st.integers(0, 10_000), loss=st.sampled_from(["cross_entropy", "nll"]))
def test_scaling_never_changes_the_predicted_class(t, seed, loss):
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(64, 6, generator=g, dtype=torch.float64) * 3
    if loss == "nll":
        out = torch.log_softmax(out, 1)
    scaled = scale_outputs(out, t, loss)
    assert torch.equal(scaled.argmax(1), out.argmax(1))
    if loss == "nll":        # still log-probabilities: exp sums to one, and equal to p^(1/T) renormalized
        p = out.exp() ** (1 / t)
        np.testing.assert_allclose(scaled.exp().numpy(), (p / p.sum(1, keepdim=True)).numpy(), rtol=1e-9, atol=1e-12)


def test_temperature_scaled_module_divides_the_outputs():
    net = torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    wrapped = TemperatureScaled(net, 2.0, "cross_entropy")
    assert torch.allclose(wrapped(x), net(x) / 2.0)


# ------------------------------------------------------------------------------ in a run
def _noisy_rows(n=900, seed=0):
    """Rows an unregularized MLP memorises (15% of the labels flipped): over-confident on new rows."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n, 10, n_informative=6, n_classes=3, flip_y=0.15, random_state=seed)
    return x.astype(np.float32), y


OVER_CONFIDENT = {"model.hidden": [128, 128], "model.dropout": 0.0, "model.norm": "none",
                  "schedule.kind": "constant", "stopping.enabled": False, "stopping.restore_best": False,
                  "train.epochs": 40, "data.stratify": False, "watch.probes": False, "calibrate": "temperature"}


def _fit(tmp_path, name, data, **extra):
    import trainwell as tw

    return tw.fit(out=tmp_path / name, quiet=True, data=data, **{**OVER_CONFIDENT, **extra})


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrated")
    return tmp, _fit(tmp, "run", _noisy_rows())


def test_a_run_fits_t_on_the_validation_split_of_its_returned_model(calibrated):
    _, run = calibrated
    section = run.metrics["temperature"]
    raw = run.model.net                      # the returned model is the scaled one; its network inside
    val = run.extras["data"].val
    with torch.inference_mode():
        raw.eval()
        out = raw(val.x).double()
    ref = minimize_scalar(lambda t: float(torch.nn.functional.cross_entropy(out / t, val.y)),
                          bounds=(0.05, 50), method="bounded", options={"xatol": 1e-8}).x
    assert section["temperature"] == pytest.approx(ref, rel=1e-3)
    assert section["temperature"] > 1.2          # the memorising MLP was over-confident
    assert section["fitted_on"] == "val"


def test_scaling_lowers_nll_and_ece_and_keeps_every_label_metric(calibrated):
    _, run = calibrated
    t, m = run.metrics["temperature"], run.metrics
    assert t["after"]["val"]["nll"] < t["before"]["val"]["nll"]
    assert t["after"]["test"]["ece"] < t["before"]["test"]["ece"]
    assert m["test"]["ece"] == t["after"]["test"]["ece"] and m["test"]["nll"] == t["after"]["test"]["nll"]
    plain = run.extras["trainer"].evaluate(run.extras["data"].test, run.model.net)
    for k in ("accuracy", "f1", "balanced_accuracy"):
        assert m["test"][k] == plain[k]
    assert plain["ece"] == t["before"]["test"]["ece"]


def test_the_test_split_never_moves_t(tmp_path, calibrated):
    _, run = calibrated
    x, y = _noisy_rows()
    test = run.extras["data"].indices["test"]
    other = y.copy()
    other[test] = (other[test] + 1) % 3            # every test label changed; the splits do not depend on it
    again = _fit(tmp_path, "other-test-labels", (x, other))
    assert np.array_equal(again.extras["data"].indices["test"], test)
    assert again.metrics["temperature"]["temperature"] == run.metrics["temperature"]["temperature"]
    assert again.metrics["test"]["accuracy"] != run.metrics["test"]["accuracy"]     # the control: test did change


def test_predict_and_load_use_the_stored_temperature(calibrated):
    import json

    import trainwell as tw

    folder, run = calibrated
    stored = json.loads((folder / "run" / "metrics.json").read_text())["temperature"]
    assert stored["temperature"] == run.metrics["temperature"]["temperature"]
    x, _ = _noisy_rows()
    frame = tw.predict(folder / "run", x[:50])
    loaded = tw.load(folder / "run")
    with torch.inference_mode():
        logits = loaded.net(loaded.normalizer.transform(torch.from_numpy(x[:50])))
    expect = torch.softmax(logits / stored["temperature"], 1).numpy()
    np.testing.assert_allclose(frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy(), expect,
                               rtol=1e-5, atol=1e-6)
    assert (frame["prediction"].astype(int).to_numpy() == expect.argmax(1)).all()


def test_report_shows_t_and_the_figures_before_and_after(calibrated):
    folder, run = calibrated
    html = (folder / "run" / "report.html").read_text()
    t = run.metrics["temperature"]
    assert "Temperature scaling" in html and f"{t['temperature']:.4g}" in html
    assert run.metrics["temperature"]["reliability_before"]["ece"] == pytest.approx(t["before"]["test"]["ece"])


def test_the_estimator_predict_proba_is_scaled():
    from trainwell.sklearn import TrainwellClassifier

    x, y = _noisy_rows(600, seed=1)
    over = {k.replace(".", "__"): v for k, v in OVER_CONFIDENT.items() if not k.startswith("data.")}
    clf = TrainwellClassifier(**{**over, "train__epochs": 25}).fit(x, y)
    t = clf.metrics_["temperature"]["temperature"]
    assert clf.temperature_ == t and t > 1
    with torch.inference_mode():
        raw = clf.model_.net(clf.model_.normalizer.transform(torch.from_numpy(x))).double()
    np.testing.assert_allclose(clf.decision_function(x), (raw / t).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(x), torch.softmax(raw / t, 1).numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(clf.predict(x), raw.argmax(1).numpy())
    back = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(back.predict_proba(x), clf.predict_proba(x))
