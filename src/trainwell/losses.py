"""Losses and weight penalties.

Every loss takes the model's raw outputs and targets that are either hard labels (int64, N) or
soft class probabilities (float, N x C, as made by mixup/cutmix); cross-entropy handles both
and composes with label smoothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CLASSIFICATION = ("cross_entropy", "nll", "bce_with_logits", "hinge")
REGRESSION = ("mse", "mae", "huber")


def resolve_kind(kind: str, task: str) -> str:
    if kind != "auto":
        return kind
    return {"binary": "bce_with_logits", "multiclass": "cross_entropy", "regression": "mse"}[task]


def output_size(kind: str, task: str, n_outputs: int) -> int:
    """Width of the model's head: one logit for binary BCE, one per class otherwise."""
    if task == "binary" and kind == "bce_with_logits":
        return 1
    return n_outputs


def _soft(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    return target if target.is_floating_point() else F.one_hot(target, n_classes).float()


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target, label_smoothing=label_smoothing)
    return loss


def nll() -> LossFn:
    # The model's head ends in log_softmax (see `head_activation`), so outputs are log-probabilities.
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            return -(target * out).sum(1).mean()
        return F.nll_loss(out, target)
    return loss


def bce_with_logits(label_smoothing: float = 0.0) -> LossFn:
    """Binary cross-entropy on one logit. Smoothing moves the target toward 1/2 exactly as
    cross-entropy's smoothing over two classes does: y -> (1 - eps) * y + eps / 2."""
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2 and out.shape[1] == 1:     # soft two-class target -> P(class 1)
            target = target[:, 1]
        target = target.float()
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(out.squeeze(1), target)
    return loss


def hinge(margin: float = 1.0) -> LossFn:
    """Multi-class hinge (Weston-Watkins): mean over rows of sum_{j != y} max(0, m - s_y + s_j) / C."""
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            target = target.argmax(1)
        return F.multi_margin_loss(out, target, margin=margin)
    return loss


def _regression(fn: Callable[..., torch.Tensor], **kw) -> LossFn:
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(out.reshape(target.shape), target, **kw)
    return loss


def build_loss(section, task: str) -> LossFn:
    kind = resolve_kind(section.kind, task)
    if task == "regression" and kind in CLASSIFICATION:
        raise ValueError(f"loss.kind: {kind!r} needs class labels, but the task is regression; use auto or "
                         f"one of {', '.join(sorted(REGRESSION))}")
    if task != "regression" and kind in REGRESSION:
        raise ValueError(f"loss.kind: {kind!r} is a regression loss, but the task is {task}; use auto or one of "
                         f"{', '.join(sorted(CLASSIFICATION))}")
    if kind == "bce_with_logits" and task != "binary":
        raise ValueError(f"loss.kind: bce_with_logits needs a binary task, got {task}")
    return {
        "cross_entropy": lambda: cross_entropy(section.label_smoothing),
        "nll": nll,
        "bce_with_logits": lambda: bce_with_logits(section.label_smoothing),
        "hinge": lambda: hinge(section.margin),
        "mse": lambda: _regression(F.mse_loss),
        "mae": lambda: _regression(F.l1_loss),
        "huber": lambda: _regression(F.huber_loss, delta=section.delta),
    }[kind]()


class LogSoftmaxHead(nn.Module):
    """Turns logits into log-probabilities for the nll loss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(x, dim=1)


# ------------------------------------------------------------------------------------ penalties
def l2_penalty(params: Iterable[torch.Tensor], lam: float) -> torch.Tensor:
    """lambda/2 * sum ||w||^2: its gradient is lambda * w (seed 000, 7.1)."""
    params = list(params)
    return 0.5 * lam * torch.stack([p.pow(2).sum() for p in params]).sum()


def l1_penalty(params: Iterable[torch.Tensor], lam: float) -> torch.Tensor:
    """lambda * sum |w|: its gradient is lambda * sign(w)."""
    params = list(params)
    return lam * torch.stack([p.abs().sum() for p in params]).sum()
