"""`predict`: new rows get the training encoding, the saved normalization and the best model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import trainwell as tw
from trainwell.checkpoint import load_checkpoint, unprefixed
from trainwell.cli import main
from trainwell.data.sources import load_source
from trainwell.errors import DataError
from trainwell.predict import load_run, predict

QUICK = {"train.epochs": 3, "model.hidden": [16], "stopping.enabled": False}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(0)
    n = 150
    colour = rng.choice(["red", "green", "blue"], n)
    a = rng.normal(size=n) * 10 + 50
    b = rng.normal(size=n)
    label = np.where((colour == "red") ^ (b > 0), "pos", "neg")
    frame = pd.DataFrame({"a": a, "colour": colour, "b": b, "label": label})
    frame.to_csv(tmp / "train.csv", index=False)
    run = tw.fit(out=tmp / "run", quiet=True, **QUICK, **{"data.source": str(tmp / "train.csv"),
                                                          "data.target": "label", "data.normalize": "zca_whiten"})
    new = frame.drop(columns="label").iloc[:20].copy()
    new.to_csv(tmp / "new.csv", index=False)
    return run, tmp, new


def test_predictions_equal_the_trained_model_on_the_same_rows(csv_run):
    run, tmp, new = csv_run
    frame = predict(run.path, tmp / "new.csv")
    assert list(frame.columns) == ["prediction", "prob_neg", "prob_pos"]
    # The oracle: the in-memory model of the run on the dataset's first rows, normalized in memory.
    prepared = run.extras["data"]
    with torch.no_grad():
        x = prepared.normalizer.transform(torch.from_numpy(load_source(run.recipe.data, run.recipe.seed).x[:20]))
        p1 = torch.sigmoid(run.model.eval()(x)).squeeze(1).numpy()
    np.testing.assert_allclose(frame["prob_pos"].to_numpy(), p1, atol=1e-5)
    np.testing.assert_allclose(frame[["prob_neg", "prob_pos"]].sum(axis=1), 1.0, atol=1e-6)
    assert set(frame["prediction"]) <= {"neg", "pos"}
    assert (frame["prediction"] == np.where(frame["prob_pos"] > 0.5, "pos", "neg")).all()


def test_saved_whitening_is_the_training_one(csv_run):
    run, _, _ = csv_run
    tensors, _ = load_checkpoint(run.path / "checkpoints" / "best.safetensors")
    saved = unprefixed("normalizer", tensors)
    torch.testing.assert_close(saved["matrix"], run.extras["data"].normalizer.matrix)
    _, _, normalizer, _, schema = load_run(run.path)
    torch.testing.assert_close(normalizer.mean, run.extras["data"].normalizer.mean)
    assert schema["feature_names"] == ["a", "colour=blue", "colour=green", "colour=red", "b"]


def test_cli_writes_a_csv(csv_run, capsys):
    run, tmp, _ = csv_run
    assert main(["predict", str(run.path), str(tmp / "new.csv"), "--out", str(tmp / "p.csv")]) == 0
    out = pd.read_csv(tmp / "p.csv")
    pd.testing.assert_frame_equal(out, predict(run.path, tmp / "new.csv"), check_dtype=False)
    assert main(["predict", str(run.path), str(tmp / "absent.csv")]) == 2
    assert "absent.csv: file not found" in capsys.readouterr().err


def test_missing_column_is_named(csv_run):
    run, tmp, new = csv_run
    new.drop(columns="b").to_csv(tmp / "nob.csv", index=False)
    with pytest.raises(DataError, match=r"nob.csv: missing feature columns \['b'\]"):
        predict(run.path, tmp / "nob.csv")


def test_multiclass_npz_and_regression(tmp_path):
    run = tw.fit(out=tmp_path / "iris", quiet=True, **QUICK, **{"data.source": "iris"})
    from sklearn.datasets import load_iris

    x = load_iris().data[:10]
    np.savez(tmp_path / "rows.npz", x=x)
    frame = predict(run.path, tmp_path / "rows.npz")
    assert list(frame.columns) == ["prediction", "prob_0", "prob_1", "prob_2"]
    with torch.no_grad():
        norm = run.extras["data"].normalizer
        expected = torch.softmax(run.model.eval()(norm.transform(torch.tensor(x, dtype=torch.float32))), 1)
    np.testing.assert_allclose(frame[["prob_0", "prob_1", "prob_2"]].to_numpy(), expected.numpy(), atol=1e-5)
    reg = tw.fit(out=tmp_path / "reg", quiet=True, **QUICK, **{"data.source": "diabetes"})
    from sklearn.datasets import load_diabetes

    np.save(tmp_path / "d.npy", load_diabetes().data[:5])
    out = predict(reg.path, tmp_path / "d.npy")
    assert list(out.columns) == ["prediction"] and len(out) == 5
