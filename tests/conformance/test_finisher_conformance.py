"""Every finisher (none, SWA, EMA, snapshots, ensemble) x fine-tuning x stopping.restore_best:

- `predict` on a run folder equals the model `fit` returned (the weights the run scored), applied
  by hand here (softmax of its outputs; the runs use data.normalize = "none" so no statistics sit
  between the two);
- with fine-tuning, every parameter and buffer of the frozen layers is bitwise the source run's
  (read straight from its safetensors file), in the returned model, in every member/snapshot, and
  in the checkpoint files predict reads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import QUIET, combinations
from safetensors.torch import load_file

import trainwell as tw
from trainwell.predict import predict

BASE = {"data.source": "moons", "data.n_samples": 160, "data.normalize": "none", "model.hidden": [16, 8],
        "train.batch_size": 16, "train.epochs": 6, "optimizer.lr": 0.3, "stopping.enabled": False, "seed": 1,
        **QUIET}
FINISHERS = {
    "none": {},
    "swa": {"train.swa.start_epoch": 3},
    "ema": {"train.ema_decay": 0.8},
    "snapshots": {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 2, "train.snapshots": 2},
    "ensemble": {"train.ensemble.members": 2},
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished run to fine-tune from (different seed and data size, same architecture)."""
    out = tmp_path_factory.mktemp("source") / "run"
    tw.fit(None, out=out, quiet=True, **{**BASE, "seed": 7, "data.n_samples": 200})
    return out


def probabilities(model, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a returned model, by the formula: softmax over its outputs, or for one
    binary logit z, (1 - sigmoid z, sigmoid z)."""
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x))
    if out.shape[1] == 1:
        p = torch.sigmoid(out)
        return torch.cat([1 - p, p], 1).numpy()
    return torch.softmax(out, 1).numpy()


def frozen_names(state_keys, frozen_layers):
    """Keys of a state dict that belong to a frozen layer (also inside members / averaged wrappers)."""
    out = []
    for key in state_keys:
        parts = key.split(".")
        for i in range(len(parts)):
            tail = ".".join(parts[i:])
            if any(tail.startswith(layer + ".") for layer in frozen_layers):
                out.append((key, tail))
                break
    return out


def assert_frozen(state: dict, reference: dict, frozen_layers: list[str], where: str) -> None:
    pairs = frozen_names(state, frozen_layers)
    assert pairs, f"{where}: no frozen tensor found"
    for key, tail in pairs:
        assert torch.equal(state[key].cpu(), reference[f"model.{tail}"]), f"{where}: {key} changed"


@pytest.mark.parametrize("finisher, finetune, restore_best",
                         combinations({"finisher": list(FINISHERS), "finetune": [False, True],
                                       "restore_best": [True, False]}, fast=5))
def test_predict_serves_the_returned_model_and_frozen_layers_stay_frozen(
        tmp_path, source, finisher, finetune, restore_best):
    overrides = {**BASE, **FINISHERS[finisher], "stopping.restore_best": restore_best}
    if finetune:
        overrides.update({"init.from": str(source), "init.freeze": 1})
    run = tw.fit(None, out=tmp_path / "run", quiet=True, **overrides)
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32) * 2
    expected = probabilities(run.model, x)
    frame = predict(run.path, x)
    got = frame[[c for c in frame.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    if finetune:
        layers = run.metrics["finetune"]["frozen"]
        ref = load_file(source / "checkpoints" / "best.safetensors")
        assert any(isinstance(m, torch.nn.BatchNorm1d) for n, m in run.model.named_modules()
                   if any(n.endswith(layer) for layer in layers)), "the frozen layers hold a batch norm"
        assert_frozen(run.model.state_dict(), ref, layers, "the returned model")
        for path in sorted((run.path / "checkpoints").glob("*.safetensors")):
            tensors = load_file(path)
            if path.name == "last.safetensors":
                tensors = {k: v for k, v in tensors.items() if k.startswith(("model.", "best."))}
            assert_frozen(tensors, ref, layers, path.name)


def test_restore_best_false_serves_the_last_epoch(tmp_path):
    """Issue 18 defect 4: with restore_best = false, predict served best.safetensors while the run
    scored the last epoch's weights. Here the best epoch is not the last, so the two differ."""
    run = tw.fit(None, out=tmp_path / "run", quiet=True, **{**BASE, "stopping.restore_best": False})
    assert run.metrics["best_epoch"] != run.metrics["stopped_epoch"]
    x = np.random.default_rng(1).normal(size=(40, 2)).astype(np.float32)
    expected = probabilities(run.model, x)
    got = predict(run.path, x).filter(like="prob_").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
