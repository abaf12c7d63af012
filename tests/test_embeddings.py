"""data.categorical = "auto": a string column of more levels than data.max_categories enters the network
through a learned entity embedding instead of stopping the run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import trainwell as tw
from trainwell.data.formats import embedding_codes, embedding_dim
from trainwell.data.sources import load_source
from trainwell.models import EntityEmbeddings
from trainwell.predict import predict
from trainwell.recipe import DataSection

QUICK = {"train.epochs": 40, "watch.probes": False, "watch.doctor": False, "watch.report": False,
         "stopping.enabled": False}


def _shops(n=1200, levels=80, seed=0):
    """Sales of shops in one of `levels` towns: a town effect (as large as the noise-free signal) plus a
    linear effect of one numeric feature; no town is named in every row."""
    rng = np.random.default_rng(seed)
    towns = np.array([f"town{k:02d}" for k in range(levels)])
    effect = rng.normal(0, 2.0, levels)
    town = rng.integers(0, levels, n)
    size = rng.normal(size=n)
    sales = 10 + effect[town] + 1.5 * size + rng.normal(0, 0.5, n)
    return pd.DataFrame({"town": towns[town], "size": size, "sales": sales})


def test_codes_follow_the_training_levels_and_unseen_or_missing_is_zero():
    column = pd.Series(["b", "a", None, "zz", "c", np.nan])
    np.testing.assert_array_equal(embedding_codes(column, ["a", "b", "c"]), [2, 1, 0, 0, 3, 0])
    assert [embedding_dim(k) for k in (1, 10, 60, 1000, 10**6)] == [2, 6, 16, 50, 50]


def test_auto_embeds_a_column_over_max_categories_and_onehots_the_rest(tmp_path):
    frame = _shops(200, levels=60)
    frame.insert(0, "colour", np.where(frame["size"] > 0, "red", "blue"))
    frame.to_csv(tmp_path / "s.csv", index=False)
    ds = load_source(DataSection(source=str(tmp_path / "s.csv")), 0)
    assert ds.feature_names == ("colour=blue", "colour=red", "town", "size")
    levels = sorted(frame["town"].unique())
    assert ds.preparation["embedded"] == {"town": levels}
    np.testing.assert_array_equal(ds.x[:, 2], [levels.index(t) + 1 for t in frame["town"]])
    (town,) = [r for r in ds.preparation["encoded"] if r["column"] == "town"]
    assert town["encoding"] == "embedding" and town["levels"] == len(levels) and town["dim"] == embedding_dim(len(levels))


def test_the_embedding_layer_looks_codes_up_and_passes_the_rest():
    torch.manual_seed(0)
    layer = EntityEmbeddings(4, [(1, 5, 3), (3, 2, 2)])
    x = torch.tensor([[0.5, 2.0, -1.0, 1.0], [1.5, 0.0, 2.0, 9.0]])       # 9: out of range -> code 2 (clamped)
    out = layer(x)
    assert layer.out_features == 2 + 3 + 2 and out.shape == (2, 7)
    expected_row0 = torch.cat([x[0, [0, 2]], layer.tables[0].weight[2], layer.tables[1].weight[1]])
    expected_row1 = torch.cat([x[1, [0, 2]], layer.tables[0].weight[0], layer.tables[1].weight[2]])
    torch.testing.assert_close(out, torch.stack([expected_row0, expected_row1]))


@pytest.fixture(scope="module")
def shops_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shops")
    _shops().to_csv(folder / "shops.csv", index=False)
    common = {**QUICK, "data.source": str(folder / "shops.csv"), "data.target": "sales"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedded = tw.fit(out=folder / "auto", quiet=True, **common)
        without = tw.fit(out=False, quiet=True, **{**common, "data.drop": ["town"]})
    return folder, embedded, without


def test_an_embedded_column_is_learned_and_helps(shops_runs):
    _, embedded, without = shops_runs
    assert embedded.model[0].__class__ is EntityEmbeddings
    # The town carries about as much of the variance as the rest: leaving it out loses it, the embedding
    # learns it (same rows: the same seed and row count).
    np.testing.assert_array_equal(embedded.extras["data"].indices["test"], without.extras["data"].indices["test"])
    assert embedded.metrics["test"]["r2"] > 0.85
    assert embedded.metrics["test"]["r2"] > without.metrics["test"]["r2"] + 0.3
    norm = embedded.extras["data"].normalizer              # the code column reaches the network as it is
    town = embedded.extras["data"].dataset.feature_names.index("town")
    assert float(norm.mean[town]) == 0.0 and float(norm.std[town]) == 1.0


def test_predict_rebuilds_the_embeddings_and_codes_unseen_towns_as_zero(shops_runs):
    folder, embedded, _ = shops_runs
    new = _shops(6, seed=5).drop(columns=["sales"])
    new.loc[0, "town"] = "Atlantis"
    new.to_csv(folder / "new.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict(embedded.path, folder / "new.csv")
    assert any("unseen in training" in str(w.message) and "town 1 ('Atlantis')" in str(w.message) for w in caught)
    levels = json.loads((embedded.path / "data.json").read_text())["preparation"]["embedded"]["town"]
    codes = [0] + [levels.index(t) + 1 for t in new["town"][1:]]
    x = torch.tensor(np.stack([new["size"].to_numpy(), codes], 1)[:, ::-1].copy(), dtype=torch.float32)
    by_hand = embedded.model.eval()(embedded.extras["data"].normalizer.transform(x)).detach().numpy()
    np.testing.assert_allclose(out["prediction"].to_numpy(), by_hand.reshape(-1), rtol=1e-5)


def test_whitening_or_a_cnn_with_embedded_columns_is_one_clear_error(tmp_path):
    _shops(300, levels=80).to_csv(tmp_path / "s.csv", index=False)
    common = {**QUICK, "train.epochs": 1, "data.source": str(tmp_path / "s.csv"), "data.target": "sales"}
    with pytest.raises(tw.RecipeError, match=r"data.normalize: got 'pca_whiten'.*entity-embedded"):
        tw.fit(out=False, quiet=True, **{**common, "data.normalize": "pca_whiten"})
    with pytest.raises(tw.RecipeError, match=r"model.kind: got 'cnn'.*only the mlp takes"):
        tw.fit(out=False, quiet=True, **{**common, "model.kind": "cnn"})
