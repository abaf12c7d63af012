"""Pinned histories: a recipe and seed give these exact numbers.

Recorded on main before the one-engine refactor (build / train_step / Trainer) began, with one
torch thread (tests/conftest.py); re-recorded when the builders' dropout began to draw its CPU
masks with torch.rand (issue 13), and the earlier record is still checked with torch's nn.Dropout
swapped in. When the default weight initialization became PyTorch's own (`init.weights = "pytorch"`,
issue 13), the three recipes kept their records with `init.weights = "kaiming_normal"` named in
them, and the new default was pinned apart (`default_init`). Any change to the order of random
draws, the step, the LR owners or the evaluation shows up here as a changed number. Timing
(`seconds`) is left out.

- default: the built-in recipe (digits, MLP 256-128, batch norm, dropout, Adam, cosine) as it was when
  recorded (He initialization), 3 epochs; default_init: the built-in recipe as it is now, 3 epochs;
- step_parts: every part of the training step at once: accumulation, clip by value and by norm,
  L1 + L2 penalties, decoupled weight decay (adamw), noise + mixup augmentation, warmup, EMA;
- lr_owners: every owner of the learning rate at once: reduce_on_plateau (with its min_lr floor)
  and the SWA phase's annealed rate, on SGD.
"""

import json
from pathlib import Path

import pytest

import trainwell

HE = {"init.weights": "kaiming_normal"}      # the default when the first three were recorded
CASES = {
    "default": {"train.epochs": 3, **HE},
    "step_parts": {"train.epochs": 3, **HE, "model.hidden": [32], "train.accumulate": 2, "train.clip_norm": 2.0,
                   "train.clip_value": 1.0, "regularization.l1": 1e-5, "regularization.l2": 1e-4,
                   "optimizer.kind": "adamw", "optimizer.weight_decay": 0.01, "data.augment.noise_std": 0.05,
                   "data.augment.mixup_alpha": 0.2, "schedule.warmup_epochs": 1.0, "train.ema_decay": 0.9},
    "lr_owners": {"train.epochs": 6, **HE, "model.hidden": [32], "optimizer.kind": "sgd", "optimizer.lr": 0.05,
                  "schedule.kind": "reduce_on_plateau", "schedule.monitor": "train_accuracy",
                  "schedule.patience": 0, "schedule.factor": 0.5, "schedule.threshold": 0.5,
                  "schedule.min_lr": 0.02, "train.swa.start_epoch": 5, "train.swa.lr": 0.01},
    "default_init": {"train.epochs": 3},
}

# Per case: the history rows (without `seconds`) and the test metrics of the returned model, with the
# builders' own CPU dropout mask (models/layers.py Dropout) and, recorded before it, with torch's nn.Dropout.
PINS = json.loads((Path(__file__).parent / "pinned_history.json").read_text())
PINNED, PINNED_TORCH_DROPOUT = PINS["trainwell_dropout"], PINS["torch_dropout"]


@pytest.mark.parametrize("name", list(CASES))
def test_a_recipe_and_seed_give_the_pinned_history(name):
    _check(name, PINNED[name])


@pytest.mark.parametrize("name", list(PINNED_TORCH_DROPOUT))
def test_with_torch_dropout_the_history_recorded_before_is_reproduced(name, monkeypatch):
    from torch import nn

    from trainwell.models import mlp

    monkeypatch.setattr(mlp, "Dropout", nn.Dropout)
    _check(name, PINNED_TORCH_DROPOUT[name])


def _check(name, pinned):
    run = trainwell.fit(out=False, quiet=True, **CASES[name])
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in run.history]
    rows, test = pinned["history"], pinned["test"]
    assert len(history) == len(rows)
    for got, want in zip(history, rows):       # columns added later (new metrics) are not pinned
        assert {k: got.get(k) for k in want} == want, f"epoch {want['epoch']}: " + ", ".join(
            f"{k} {got.get(k)!r} != {v!r}" for k, v in want.items() if got.get(k) != v)
    assert {k: run.metrics["test"].get(k) for k in test} == test
