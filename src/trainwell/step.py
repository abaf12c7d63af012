"""The one training step, shared by the loop, the LR range test and the overfit-one-batch check.

    augment -> forward -> loss (under the precision's autocast; the forward compiled when
    train.compile) -> + penalties -> backward (÷ accumulate; × the loss scale for "16-mixed")
    when the batch closes an accumulation group:
        unscale the gradients ("16-mixed") -> pre-clip gradient norm
        -> transforms (clip by value, clip by norm, decoupled decay) -> optimizer step -> zero_grad

Nothing here synchronises with the host unless `careful` (a NaN-guard replay, which checks each
batch's loss and each step's gradient norm and skips the first non-finite one), and with the
float16 gradient scaler, which reads whether the unscaled gradients overflowed at every step (as
torch's scaler does itself): such a step is the scaler's to skip (`skipped = "overflow"`), the
NaN guard is not involved. The caller owns the LR and the counters.
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
    skipped: str | None = None        # careful mode: "batch" (non-finite loss) or "step" (non-finite norm);
    #                                   "overflow": float16 gradients overflowed, the scaler skipped the step


def train_step(setup, xb: torch.Tensor, yb: torch.Tensor, *, close: bool = True,
               careful: bool = False, scale: float = 1.0) -> StepResult:
    """One batch forward and backward; and, when `close`, the optimizer step of its group.

    `scale` multiplies what is differentiated (loss + penalties): a data-parallel worker's share of
    the batch's rows times the worker count, so that DDP's average is the whole batch's gradient."""
    if setup.augment is not None:     # the caller's metrics still compare with the hard labels
        xb, yb = setup.augment(xb, yb)
    with setup.precision.autocast():
        out = (setup.forward or setup.model)(xb)
        loss = setup.loss_fn(out.float() if setup.precision.mixed else out, yb)
    if careful and not all_finite([loss]):
        return StepResult(out, loss, skipped="batch")
    total = loss
    for penalty in setup.penalties:
        total = total + penalty()
    if scale != 1.0:
        total = total * scale
    accumulate = setup.settings.accumulate
    total = total / accumulate if accumulate > 1 else total
    (setup.scaler.scale(total) if setup.scaler is not None else total).backward()
    if not close:
        return StepResult(out, loss)
    norm, skipped = close_group(setup, careful=careful)
    return StepResult(out, loss, norm, skipped)


def close_group(setup, *, careful: bool = False) -> tuple[torch.Tensor | None, str | None]:
    """The optimizer step of an accumulation group: (pre-clip norm, None), or (None, why it was skipped):
    "step" (careful mode, non-finite gradients) or "overflow" (the float16 scaler skipped it)."""
    norm = optimizer_step(setup, careful=careful)
    if norm is None:
        return None, "step"
    if setup.scaler is not None and not all_finite([norm]):
        return None, "overflow"
    return norm, None


def optimizer_step(setup, *, careful: bool = False) -> torch.Tensor | None:
    """Transforms and the optimizer step on the accumulated gradients; returns the pre-clip norm, or
    None when `careful` found it non-finite (the gradients are then dropped, nothing is stepped).

    With the float16 scaler the gradients are unscaled first; when they overflowed, the scaler
    skips the step (no transform runs either) and lowers its scale, and the non-finite norm is
    returned for the caller to see."""
    scaler = setup.scaler
    if scaler is not None:
        scaler.unscale_(setup.optimizer)
    norm = torch.nn.utils.get_total_norm([p.grad for p in setup.params if p.grad is not None])
    if scaler is not None and not all_finite([norm]):      # the scaler's own check, one read per step
        scaler.step(setup.optimizer)                        # skipped: it saw the overflow in unscale_
        scaler.update()
        setup.optimizer.zero_grad(set_to_none=True)
        return norm.detach()
    if careful and not all_finite([norm]):
        setup.optimizer.zero_grad(set_to_none=True)
        return None
    current = norm
    for transform in setup.transforms:
        current = transform(setup.params, current)
    if scaler is not None:
        scaler.step(setup.optimizer)
        scaler.update()
    else:
        setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)
    return norm.detach()
