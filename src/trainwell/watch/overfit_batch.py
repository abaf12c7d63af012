"""The overfit-one-batch check: before a long run, make sure the model can drive the loss on a
single small batch to almost zero. If it cannot, something is broken (a bug, a too-low learning
rate, a model without enough capacity) and a long run would only hide it.

Regularization is switched off for the check (dropout, L1/L2, weight decay, label smoothing,
augmentation): it exists to stop exactly this memorization. Everything else is the run's own:
the Setup from build.py and its `train_step` (clipping included), on the first batch that the
run's shuffled order would train on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..build import build
from ..metrics import predictions
from ..prepare import prepare_data
from ..recipe import Recipe
from ..seeding import seed_globals
from ..step import train_step

# Without regularization, a healthy model memorizes one batch: its loss falls by orders of magnitude.
PASS_LOSS = 0.05
PASS_FRACTION = 0.02


@dataclass(frozen=True)
class OverfitResult:
    rows: int
    steps: int
    initial_loss: float
    final_loss: float
    accuracy: float | None
    passed: bool
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unregularized(recipe: Recipe) -> Recipe:
    return recipe.replace(**{"model.dropout": 0.0, "regularization.l1": 0.0, "regularization.l2": 0.0,
                             "optimizer.weight_decay": 0.0, "loss.label_smoothing": 0.0, "train.accumulate": 1})


def overfit_batch(recipe: Recipe, steps: int = 200) -> OverfitResult:
    """Train on the first `train.batch_size` rows of the training split for `steps` steps."""

    recipe = _unregularized(recipe)
    seed_globals(recipe.seed)
    device = torch.device("cpu")
    prepared = prepare_data(recipe, None, device)
    ds = prepared.dataset
    setup = replace(build(recipe, prepared, device), augment=None)
    net, loss_fn = setup.model, setup.loss_fn
    n = min(recipe.train.batch_size, len(setup.train))
    order = torch.randperm(len(setup.train), generator=setup.shuffle)[:n]
    x, y = setup.train.x[order], setup.train.y[order]
    net.train()
    losses = [float(train_step(setup, x, y).loss.detach()) for _ in range(steps)]
    with torch.no_grad(), setup.precision.autocast():      # measured as trained (train.precision)
        out = net(x).float()
        final = float(loss_fn(out, y))
        acc = None if ds.task == "regression" else float((predictions(out, ds.task) == y).float().mean())
    initial = losses[0]
    passed = final < PASS_LOSS or final < PASS_FRACTION * initial
    if passed:
        verdict = (f"passed: the loss on one batch of {n} rows fell from {initial:.4g} to {final:.4g} in {steps} "
                   "steps; the model and the loop can learn")
    else:
        verdict = (f"FAILED: the loss on one batch of {n} rows only fell from {initial:.4g} to {final:.4g} in "
                   f"{steps} steps; check the learning rate (too low?), the model's capacity, the loss and "
                   "the labels before a long run")
    return OverfitResult(n, steps, initial, final, acc, passed, verdict)
