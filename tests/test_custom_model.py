"""Custom models and data recorded honestly: model.kind = "custom" with the class's import path and parameter
count (recipe.toml, metrics.json, report), data.source = "custom" with shapes, dtypes and sha256; the CLI
gives a one-line hint and exit 2; `tw.load(RUN_DIR, model=Net())` returns the trained model, usable by
`tw.predict`."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import trainwell as tw
from trainwell.cli import main

QUICK = {"train.epochs": 3, "watch.probes": False, "optimizer.lr": 0.01}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).squeeze(1)


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))                       # float64, as a user would pass it
    y = (x[:, 0] > 0.5).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    torch.manual_seed(0)
    x, y = _data()
    path = tmp_path_factory.mktemp("custom") / "run"
    run = tw.fit(out=path, quiet=True, model=Net(), data=(x, y), **QUICK)
    return run, x, y


def test_the_run_records_a_custom_module_and_arrays(custom_run):
    run, x, y = custom_run
    recipe = tomllib.loads((run.path / "recipe.toml").read_text())
    expected_params = 4 * 16 + 16 + 16 * 3 + 3
    assert recipe["model"] == {"kind": "custom", "module": f"{__name__}.Net", "parameters": expected_params}
    assert recipe["data"]["source"] == "custom"
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["network"] == {"kind": "custom", "module": f"{__name__}.Net", "parameters": expected_params}
    arrays = json.loads((run.path / "data.json").read_text())["preparation"]["arrays"]
    h = hashlib.sha256()                              # the sha256 by hand: shape, dtype, bytes of x then y
    for a in (x, y):
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert arrays == {"x": {"shape": [150, 4], "dtype": "float64"}, "y": {"shape": [150], "dtype": "int64"},
                      "sha256": h.hexdigest()}
    page = (run.path / "report.html").read_text()
    assert f"{__name__}.Net" in page and f"{expected_params} trainable parameters" in page
    assert "hidden" not in (run.path / "recipe.toml").read_text()       # no MLP keys claimed for it
    assert "data passed from Python" in page


def test_a_recipe_run_records_its_kind_and_parameters(tmp_path):
    run = tw.fit(out=False, quiet=True, **{"data.source": "iris", "model.hidden": [8], **QUICK})
    # fc1 without bias (batch norm follows), batch norm's weight and bias, the head with bias.
    assert run.metrics["network"] == {"kind": "mlp", "parameters": 4 * 8 + 2 * 8 + 8 * 3 + 3}


def test_load_returns_the_trained_model_with_its_preprocessing(custom_run):
    run, x, _ = custom_run
    loaded = tw.load(run.path, model=Net())
    rows = torch.from_numpy(x[:20].astype(np.float32))
    expected = run.model.eval()(run.extras["data"].normalizer.transform(rows))      # the returned model by hand
    torch.testing.assert_close(loaded(rows), expected.detach())
    table = tw.predict(loaded, x[:20].astype(np.float32))
    probs = torch.softmax(expected, 1).detach().numpy()
    np.testing.assert_allclose(table[[f"prob_{c}" for c in loaded.classes]].to_numpy(), probs, rtol=1e-5, atol=1e-6)
    assert list(table["prediction"]) == [loaded.classes[k] for k in probs.argmax(1)]


def test_load_without_the_module_or_with_another_one_is_one_clear_error(custom_run):
    run, _, _ = custom_run
    with pytest.raises(tw.RecipeError, match=r"model.kind: 'custom'.*tw.load\(RUN_DIR, model=Net\(\)\)"):
        tw.load(run.path)
    with pytest.raises(tw.DataError, match=r"does not fit the run's weights.*test_custom_model.Net"):
        tw.load(run.path, model=Regressor())


@pytest.mark.parametrize("command", ["fit", "predict", "resume"])
def test_the_cli_on_a_custom_run_gives_a_one_line_hint_and_exit_2(custom_run, command, capsys, tmp_path):
    run, x, _ = custom_run
    rows = tmp_path / "rows.npy"
    np.save(rows, x[:3].astype(np.float32))
    argv = {"fit": ["fit", str(run.path / "recipe.toml"), "--out", str(tmp_path / "again")],
            "predict": ["predict", str(run.path), str(rows)], "resume": ["resume", str(run.path)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tw.load(RUN_DIR, model=Net())" in err[0], err
    assert not (tmp_path / "again").exists()


def test_custom_data_alone_is_refused_by_the_cli_with_a_hint(tmp_path, capsys):
    x, y = _data(60)
    run = tw.fit(out=tmp_path / "run", quiet=True, data=(x, y), **{"model.hidden": [8], **QUICK})
    assert tomllib.loads((run.path / "recipe.toml").read_text())["model"]["kind"] == "mlp"
    assert main(["fit", str(run.path / "recipe.toml"), "--out", str(tmp_path / "again")]) == 2
    assert "data.source: 'custom' means the data was passed from Python" in capsys.readouterr().err
    # The recipe's own network needs no module to load; predict reads arrays like the training rows.
    table = tw.predict(tw.load(run.path), torch.from_numpy(x[:5].astype(np.float32)))
    assert len(table) == 5


def test_load_refuses_a_module_for_a_run_of_the_recipes_network(tmp_path):
    """A recipe-built run is rebuilt by tw.load (with its log-softmax head under loss nll); a module given
    in its place, even one with the very weights' names, is refused: with nll it would give wrong
    probabilities, silently (checked here: its softmax is not the run's)."""
    x, y = _data(60)
    run = tw.fit(out=tmp_path / "run", quiet=True, data=(x, y),
                 **{"model.hidden": [8], "model.norm": "none", "loss.kind": "nll", **QUICK})
    rows = torch.from_numpy(x[:5].astype(np.float32))
    with torch.inference_mode():
        expected = run.model.eval()(run.extras["data"].normalizer.transform(rows)).exp()    # log-probabilities
    table = tw.predict(tw.load(run.path), rows)
    np.testing.assert_allclose(table[[f"prob_{c}" for c in run.metrics["classes"]]].to_numpy(), expected.numpy(),
                               rtol=1e-5, atol=1e-7)
    same_names = copy.deepcopy(run.model)
    del same_names.log_softmax                      # what a user would write: the MLP without the head
    with pytest.raises(tw.DataError, match=r"^model: .*model.kind = 'mlp'.*leave model= out"):
        tw.load(run.path, model=same_names)
    assert "`load-module-for-recipe-network`" in (Path(__file__).parents[1] / "docs" / "errors.md").read_text()


def test_a_custom_regression_module_round_trips_through_load(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (500 + 80 * x[:, 0] - 30 * x[:, 2]).astype(np.float32)
    torch.manual_seed(0)
    run = tw.fit(out=tmp_path / "run", quiet=True, model=Regressor(), data=(x, y), **{**QUICK, "train.epochs": 60, "optimizer.lr": 0.1,
                                                                                 "stopping.enabled": False})
    loaded = tw.load(run.path, model=Regressor())
    out = tw.predict(loaded, x[:10])["prediction"].to_numpy()
    by_hand = run.model.eval()(run.extras["data"].normalizer.transform(torch.from_numpy(x[:10]))).detach().numpy()
    np.testing.assert_allclose(out, by_hand, rtol=1e-5)
    assert run.metrics["test"]["r2"] > 0.9
    resumed = tw.resume(run.path, model=Regressor(), data=(x, y), **{"train.epochs": 61})
    assert resumed.metrics["network"]["kind"] == "custom" and len(resumed.history) == 61


def test_doctor_try_reruns_a_custom_module_from_python_on_copies(tmp_path):
    """--try needs the module back; given it, each re-run trains a copy from the same weights, and the
    module passed stays as it was."""
    from trainwell.watch.trial import try_remedy

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 4)) * [1, 1, 1000, 1] + [0, 0, 5000, 0]).astype(np.float32)    # unnormalized
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    run = tw.fit(out=tmp_path / "run", quiet=True, model=Net(), data=(x, y),
                 **{**QUICK, "data.normalize": "none", "watch.probes": True})
    assert any(f.rule == "unnormalized_inputs" for f in run.extras["findings"])
    assert main(["doctor", str(tmp_path / "run"), "--try"]) == 2
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = try_remedy(tmp_path / "run", epochs=2, model=net, data=(x, y))
    assert result.rule == "unnormalized_inputs" and result.overrides == {"data.normalize": "standard"}
    assert np.isfinite(result.before) and np.isfinite(result.after)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
