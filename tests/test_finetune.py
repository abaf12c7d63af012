"""Fine-tuning from another run: name+shape matching, head re-initialized, frozen layers stay put,
and on a related task with few rows it beats training from scratch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import trainwell as tw
from trainwell.errors import CheckpointError, RecipeError

COMMON = {"model.hidden": [64], "model.dropout": 0.0, "train.epochs": 60, "optimizer.kind": "adam",
          "optimizer.lr": 3e-3, "stopping.patience": 20}


def task(n: int, head: np.ndarray, seed: int):
    """Labels from a fixed hidden layer of 6 tanh units; tasks differ only by their head."""
    x = np.random.default_rng(seed).normal(size=(n, 20))
    w1 = np.random.default_rng(100).normal(size=(20, 6)) / np.sqrt(20)
    return x, (np.tanh(3 * x @ w1) @ head).argmax(1)


HEADS = np.random.default_rng(7).normal(size=(6, 11))
HEAD_A, HEAD_B = HEADS[:, :8], HEADS[:, 8:]        # 8 classes to pre-train on, 3 to fine-tune on


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    warnings.simplefilter("ignore")
    out = tmp_path_factory.mktemp("ft") / "pre"
    return tw.fit(data=task(3000, HEAD_A, 1), out=out, quiet=True, **COMMON, **{"data.split": [0.8, 0.1, 0.1]})


def test_beats_training_from_scratch_on_few_rows(pretrained):
    xb, yb = task(1100, HEAD_B, 2)
    few = {**COMMON, "data.split": [0.06, 0.04, 0.9]}          # 66 training rows, 990 test rows
    scratch, tuned = [], []
    for seed in range(3):
        scratch.append(tw.fit(data=(xb, yb), out=False, quiet=True, seed=seed, **few).metrics["test"]["accuracy"])
        run = tw.fit(data=(xb, yb), out=False, quiet=True, seed=seed, **few, **{"init.from": str(pretrained.path)})
        tuned.append(run.metrics["test"]["accuracy"])
    assert np.mean(tuned) > np.mean(scratch) + 0.03, (tuned, scratch)


def test_matching_report_and_reinitialized_head(pretrained):
    xb, yb = task(300, HEAD_B, 3)
    run = tw.fit(data=(xb, yb), out=False, quiet=True, **{**COMMON, "train.epochs": 1},
                 **{"init.from": str(pretrained.path), "init.freeze": ["fc1", "norm1"]})
    report = run.metrics["finetune"]
    assert report["mismatched"] == [{"name": "head.weight", "from": [8, 64], "here": [3, 64]},
                                    {"name": "head.bias", "from": [8], "here": [3]}]
    assert report["frozen"] == ["fc1", "norm1"] and report["missing"] == [] and report["unused"] == []
    assert "fc1.weight" in report["loaded"] and "norm1.running_mean" in report["loaded"]
    before = pretrained.model.state_dict()
    after = run.model.state_dict()
    # Frozen layers (weights and batch-norm statistics) are exactly the pre-trained ones after training.
    for name in ("fc1.weight", "norm1.weight", "norm1.bias", "norm1.running_mean", "norm1.running_var"):
        torch.testing.assert_close(after[name], before[name])


def test_freeze_first_k_and_unfrozen_layers_train(pretrained):
    xb, yb = task(300, HEAD_A, 4)
    run = tw.fit(data=(xb, yb), out=False, quiet=True, **{**COMMON, "model.hidden": [64], "train.epochs": 2},
                 **{"init.from": str(pretrained.path), "init.freeze": 1})
    assert run.metrics["finetune"]["frozen"] == ["fc1", "norm1", "act1"]
    assert run.metrics["finetune"]["mismatched"] == []
    assert not torch.equal(run.model.state_dict()["head.weight"], pretrained.model.state_dict()["head.weight"])
    assert not any(p.requires_grad for p in run.model.fc1.parameters())


def test_errors(pretrained, tmp_path):
    xb, yb = task(100, HEAD_B, 5)
    with pytest.raises(RecipeError, match=r"init.freeze: got \['fc9'\], no such layer; layers: fc1, norm1, act1, "
                       r"head"):
        tw.fit(data=(xb, yb), out=False, quiet=True, **COMMON,
               **{"init.from": str(pretrained.path), "init.freeze": ["fc9"]})
    with pytest.raises(RecipeError, match=r"init.freeze: got 2, the model has 2 weighted layers \(fc1, head\); "
                       r"freeze at most 1 so something trains"):
        tw.fit(data=(xb, yb), out=False, quiet=True, **COMMON, **{"init.from": str(pretrained.path), "init.freeze": 2})
    with pytest.raises(CheckpointError, match=r"init.from: '.*nowhere' holds no checkpoint"):
        tw.fit(data=(xb, yb), out=False, quiet=True, **{"init.from": str(tmp_path / "nowhere")})
    with pytest.raises(CheckpointError, match=r"no layer of .* matches this model by name and shape"):
        tw.fit(data=(xb, yb), out=False, quiet=True, **{"init.from": str(pretrained.path), "model.hidden": [7]})
    with pytest.raises(RecipeError, match=r"init.freeze: only applies when fine-tuning; set init.from"):
        tw.load_recipe(None, {"init.freeze": 1})
