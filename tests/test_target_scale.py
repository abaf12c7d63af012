"""Regression target scaling: fitted on the training split, undone for every number a user reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trainwell as tw
from trainwell.checkpoint import load_checkpoint, unprefixed
from trainwell.data.target import fit_target_scale, scaled_loss
from trainwell.errors import RecipeError
from trainwell.models import build_model
from trainwell.predict import predict

QUICK = {"train.epochs": 3, "model.hidden": [16], "stopping.enabled": False, "train.batch_size": 32}


def _regression_rows(n=160, seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3 * x[:, 0] ** 2 + rng.normal(0, 0.1, n)) * scale + shift
    return x, y.astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 3), st.floats(-1e4, 1e4), st.floats(1.0, 1e4), st.integers(0, 10**6))
def test_standard_and_minmax_statistics_per_column(n, t, shift, spread, seed):
    y = np.random.default_rng(seed).normal(shift, spread, size=(n, t))
    ts = fit_target_scale("standard", torch.tensor(y))
    np.testing.assert_allclose(ts.shift.numpy(), y.mean(0), rtol=1e-5, atol=1e-3)
    std = y.std(0)
    np.testing.assert_allclose(ts.scale.numpy(), np.where(std > 1e-12, std, 1.0), rtol=1e-5)
    mm = fit_target_scale("minmax", torch.tensor(y))
    np.testing.assert_allclose(mm.shift.numpy(), y.min(0), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mm.scale.numpy(), np.where(np.ptp(y, 0) > 1e-12, np.ptp(y, 0), 1.0),
                               rtol=1e-5, atol=1e-3)
    # The output module is the exact inverse of the map the loss uses.
    yt = torch.tensor(y, dtype=torch.float32)
    torch.testing.assert_close(ts(ts.to_scaled(yt)), yt, rtol=1e-4, atol=1e-2)


def test_constant_column_maps_to_zero_and_none_is_none():
    ts = fit_target_scale("standard", torch.tensor([[3.0, 1.0], [3.0, 2.0]]))
    assert ts.scale[0] == 1 and ts.to_scaled(torch.tensor([[3.0, 1.5]]))[0, 0] == 0
    assert fit_target_scale("none", torch.zeros(4)) is None


def test_scaled_mse_is_the_mse_of_standardized_targets():
    ts = fit_target_scale("standard", torch.tensor([10.0, 20.0, 40.0]))
    loss = scaled_loss(lambda o, y: ((o.reshape(y.shape) - y) ** 2).mean(), ts)
    out, y = torch.tensor([[12.0], [18.0], [41.0]]), torch.tensor([10.0, 20.0, 40.0])
    m, s = y.mean(), y.std(unbiased=False)
    expected = ((((out.squeeze(1) - m) / s) - ((y - m) / s)) ** 2).mean()
    torch.testing.assert_close(loss(out, y), expected)


def test_predict_is_the_core_network_mapped_back_by_hand(tmp_path):
    x, y = _regression_rows(scale=300.0, shift=2000.0)
    np.save(tmp_path / "x.npy", x)
    run = tw.fit(out=tmp_path / "run", quiet=True, data=(x, y), **QUICK)
    train = run.extras["data"].indices["train"]
    mean, std = y[train].astype(np.float64).mean(), y[train].astype(np.float64).std()
    schema = json.loads((run.path / "data.json").read_text())
    assert schema["target_scale"]["kind"] == "standard"
    np.testing.assert_allclose(schema["target_scale"]["shift"], [mean], rtol=1e-5)
    np.testing.assert_allclose(schema["target_scale"]["scale"], [std], rtol=1e-5)
    # The oracle: the saved weights without the scaling module, mapped back with the hand statistics.
    tensors, _ = load_checkpoint(run.path / "checkpoints" / "best.safetensors")
    weights = unprefixed("model", tensors)
    core = build_model(run.recipe.model, (4,), 1)
    core.load_state_dict({k: v for k, v in weights.items() if not k.startswith("target_scale.")})
    core.eval()
    norm = run.extras["data"].normalizer
    with torch.no_grad():
        z = core(norm.transform(torch.from_numpy(x))).squeeze(1).double().numpy()
    frame = predict(run.path, tmp_path / "x.npy")
    np.testing.assert_allclose(frame["prediction"].to_numpy(), z * std + mean, rtol=1e-5, atol=1e-2)
    # metrics.json is in the target's units: the test mse is that of the predictions on the test rows.
    test = run.extras["data"].indices["test"]
    mse = float(np.mean((frame["prediction"].to_numpy()[test] - y[test]) ** 2))
    assert run.metrics["test"]["mse"] == pytest.approx(mse, rel=1e-4)


def test_units_do_not_change_what_is_learned(tmp_path):
    x, y = _regression_rows()
    a = tw.fit(out=False, quiet=True, data=(x, y), **QUICK)
    b = tw.fit(out=False, quiet=True, data=(x, y * 1000.0 + 5000.0), **QUICK)
    assert b.metrics["test"]["r2"] == pytest.approx(a.metrics["test"]["r2"], abs=2e-3)
    assert b.metrics["test"]["mae"] == pytest.approx(1000 * a.metrics["test"]["mae"], rel=5e-3)
    # The history's loss is in the scaled space: the same numbers for both units.
    assert b.history[-1]["train_loss"] == pytest.approx(a.history[-1]["train_loss"], rel=5e-3)


def test_multi_output_scales_each_column(tmp_path):
    x, y = _regression_rows()
    y2 = np.stack([y, 100 * y + 7], 1)
    run = tw.fit(out=False, quiet=True, data=(x, y2), **QUICK)
    ts = run.model.target_scale
    train = run.extras["data"].indices["train"]
    np.testing.assert_allclose(ts.shift.numpy(), y2[train].mean(0), rtol=1e-5)
    np.testing.assert_allclose(ts.scale.numpy(), y2[train].std(0), rtol=1e-5)


@pytest.mark.parametrize("extra", [{"train.ensemble.members": 2}, {"train.ema_decay": 0.9}])
def test_ensembles_and_averaged_models_predict_in_target_units(tmp_path, extra):
    x, y = _regression_rows(scale=50.0, shift=-300.0)
    np.save(tmp_path / "x.npy", x)
    # Trained to fit (10 epochs at lr 0.01: test r2 0.4-0.9 over seeds and initializations); 3 epochs at
    # 1e-3 left r2 anywhere in -1.3 .. 0.6, so its sign said nothing about the units.
    run = tw.fit(out=tmp_path / "run", quiet=True, data=(x, y),
                 **{**QUICK, "train.epochs": 10, "optimizer.lr": 0.01}, **extra)
    pred = predict(run.path, tmp_path / "x.npy")["prediction"].to_numpy()
    test = run.extras["data"].indices["test"]
    assert run.metrics["test"]["mse"] == pytest.approx(float(np.mean((pred[test] - y[test]) ** 2)), rel=1e-4)
    assert run.metrics["test"]["r2"] > 0      # raw targets around -300 would give r2 far below 0


def test_none_trains_on_raw_targets(tmp_path):
    x, y = _regression_rows()
    run = tw.fit(out=False, quiet=True, data=(x, y), **QUICK, **{"data.target_normalize": "none"})
    assert not any(k.startswith("target_scale") for k in run.model.state_dict())


def test_custom_module_is_wrapped_and_left_alone(tmp_path):
    x, y = _regression_rows(scale=100.0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    run = tw.fit(out=False, quiet=True, data=(x, y), model=net, **QUICK)
    assert len(net) == 3 and run.model.net is net
    with torch.no_grad():
        xt = run.extras["data"].normalizer.transform(torch.from_numpy(x[:5]))
        torch.testing.assert_close(run.model(xt), net(xt) * run.model.target_scale.scale + run.model.target_scale.shift)


def test_classification_refuses_an_explicit_target_scaling(tiny):
    # (the CLI's one line and exit 2: tests/test_bad_input.py, case target-normalize-classification)
    with pytest.raises(RecipeError, match="data.target_normalize: got 'standard', but the task is binary"):
        tw.fit(out=False, quiet=True, **tiny, **{"data.target_normalize": "standard"})


@pytest.mark.slow
def test_default_recipe_on_diabetes_beats_the_bar(tmp_path):
    run = tw.fit(out=False, quiet=True, **{"data.source": "diabetes"})
    assert run.metrics["test"]["r2"] >= 0.40
