"""The one training step, shared by the loop, the LR range test and the overfit-one-batch check.

    augment -> forward -> loss + penalties -> backward (÷ accumulate)
    when the batch closes an accumulation group:
        pre-clip gradient norm -> transforms (clip by value, clip by norm, decoupled decay)
        -> optimizer step -> zero_grad

Nothing here synchronises with the host unless `careful` (a NaN-guard replay, which checks each
batch's loss and each step's gradient norm and skips the first non-finite one). The caller owns
the LR and the counters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .callbacks.nonfinite import all_finite


@dataclass
class StepResult:
    out: torch.Tensor                 # the model's outputs on the (augmented) batch
    loss: torch.Tensor                # the batch loss, without the penalties
    norm: torch.Tensor | None = None  # the pre-clip gradient norm when the optimizer stepped
    skipped: str | None = None        # careful mode: "batch" (non-finite loss) or "step" (non-finite norm)


def train_step(setup, xb: torch.Tensor, yb: torch.Tensor, *, close: bool = True,
               careful: bool = False, scale: float = 1.0) -> StepResult:
    """One batch forward and backward; and, when `close`, the optimizer step of its group.

    `scale` multiplies what is differentiated (loss + penalties): a data-parallel worker's share of
    the batch's rows times the worker count, so that DDP's average is the whole batch's gradient."""
    if setup.augment is not None:     # the caller's metrics still compare with the hard labels
        xb, yb = setup.augment(xb, yb)
    out = setup.model(xb)
    loss = setup.loss_fn(out, yb)
    if careful and not all_finite([loss]):
        return StepResult(out, loss, skipped="batch")
    total = loss
    for penalty in setup.penalties:
        total = total + penalty()
    if scale != 1.0:
        total = total * scale
    accumulate = setup.settings.accumulate
    (total / accumulate if accumulate > 1 else total).backward()
    if not close:
        return StepResult(out, loss)
    norm = optimizer_step(setup, careful=careful)
    return StepResult(out, loss, norm, None if norm is not None else "step")


def optimizer_step(setup, *, careful: bool = False) -> torch.Tensor | None:
    """Transforms and the optimizer step on the accumulated gradients; returns the pre-clip norm, or
    None when `careful` found it non-finite (the gradients are then dropped, nothing is stepped)."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in setup.params if p.grad is not None])
    if careful and not all_finite([norm]):
        setup.optimizer.zero_grad(set_to_none=True)
        return None
    current = norm
    for transform in setup.transforms:
        current = transform(setup.params, current)
    setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)
    return norm.detach()
