"""The overfit-one-batch check: before a long run, make sure the model can drive the loss on a
single small batch to almost zero. If it cannot, something is broken (a bug, a too-low learning
rate, a model without enough capacity) and a long run would only hide it.

Regularization is switched off for the check (dropout, L1/L2, weight decay, label smoothing):
it exists to stop exactly this memorization.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..recipe import Recipe

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
                             "optimizer.weight_decay": 0.0, "loss.label_smoothing": 0.0})


def overfit_batch(recipe: Recipe, steps: int = 200) -> OverfitResult:
    """Train on the first `train.batch_size` rows of the training split for `steps` steps."""
    from ..api import build_network, build_run_loss, prepare_data
    from ..metrics import predictions
    from ..optim import build_optimizer

    recipe = _unregularized(recipe)
    torch.manual_seed(recipe.seed)
    prepared = prepare_data(recipe)
    ds = prepared.dataset
    net, _ = build_network(recipe, ds)
    loss_fn = build_run_loss(recipe, prepared, net)
    optimizer = build_optimizer(net, recipe.optimizer, torch.device("cpu"))
    n = min(recipe.train.batch_size, len(prepared.train))
    order = torch.randperm(len(prepared.train), generator=torch.Generator().manual_seed(recipe.seed))[:n]
    x, y = prepared.train.x[order], prepared.train.y[order]
    net.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(net(x), y)
        losses.append(float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = net(x)
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
