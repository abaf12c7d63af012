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


def _on(weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if weight is None else weight.to(like.device, like.dtype)


def cross_entropy(label_smoothing: float = 0.0, weight: torch.Tensor | None = None) -> LossFn:
    """Cross-entropy; with class weights, torch's weighted mean (hard labels: divided by the summed
    weights of the batch's labels)."""
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target, weight=_on(weight, out), label_smoothing=label_smoothing)
    return loss


def nll(weight: torch.Tensor | None = None) -> LossFn:
    # The model's head ends in log_softmax (see `head_activation`), so outputs are log-probabilities.
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = _on(weight, out)
        if target.is_floating_point():
            return -(target * out * (1 if w is None else w)).sum(1).mean()
        return F.nll_loss(out, target, weight=w)
    return loss


def bce_with_logits(label_smoothing: float = 0.0, pos_weight: float | None = None) -> LossFn:
    """Binary cross-entropy on one logit. Smoothing moves the target toward 1/2 exactly as
    cross-entropy's smoothing over two classes does: y -> (1 - eps) * y + eps / 2. Class weights
    (w0, w1) enter as pos_weight = w1 / w0 (the positive rows' term multiplied by it)."""
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == 2 and out.shape[1] == 1:     # soft two-class target -> P(class 1)
            target = target[:, 1]
        target = target.float()
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / 2
        pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=out.dtype, device=out.device)
        return F.binary_cross_entropy_with_logits(out.squeeze(1), target, pos_weight=pw)
    return loss


def hinge(margin: float = 1.0, weight: torch.Tensor | None = None) -> LossFn:
    """Multi-class hinge (Weston-Watkins): mean over rows of sum_{j != y} max(0, m - s_y + s_j) / C."""
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():
            target = target.argmax(1)
        return F.multi_margin_loss(out, target, margin=margin, weight=_on(weight, out))
    return loss


def class_weights(spec, train_labels: torch.Tensor, n_classes: int) -> torch.Tensor | None:
    """loss.class_weight as a tensor of C weights: balanced = n / (C * count_c) on the training labels
    (0 for a class with no training rows), or the given list, checked against the number of classes."""
    if spec == "none":
        return None
    if spec == "balanced":
        counts = torch.bincount(train_labels.long().cpu(), minlength=n_classes).double()
        w = torch.where(counts > 0, len(train_labels) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))
        return w.float()
    if len(spec) != n_classes:
        raise ValueError(f"loss.class_weight: got {len(spec)} weights, the data has {n_classes} classes; give one "
                         "weight per class in the order of the sorted labels, or \"balanced\"")
    return torch.tensor(spec, dtype=torch.float32)


def _regression(fn: Callable[..., torch.Tensor], **kw) -> LossFn:
    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(out.reshape(target.shape), target, **kw)
    return loss


def build_loss(section, task: str, weight: torch.Tensor | None = None) -> LossFn:
    """The loss of `section` for the task; `weight`: per-class weights (see `class_weights`)."""
    kind = resolve_kind(section.kind, task)
    if task == "regression" and kind in CLASSIFICATION:
        raise ValueError(f"loss.kind: {kind!r} needs class labels, but the task is regression; use auto or "
                         f"one of {', '.join(sorted(REGRESSION))}")
    if task != "regression" and kind in REGRESSION:
        raise ValueError(f"loss.kind: {kind!r} is a regression loss, but the task is {task}; use auto or one of "
                         f"{', '.join(sorted(CLASSIFICATION))}")
    if kind == "bce_with_logits" and task != "binary":
        raise ValueError(f"loss.kind: bce_with_logits needs a binary task, got {task}")
    pos_weight = None if weight is None or kind != "bce_with_logits" else float(weight[1] / weight[0])
    return {
        "cross_entropy": lambda: cross_entropy(section.label_smoothing, weight),
        "nll": lambda: nll(weight),
        "bce_with_logits": lambda: bce_with_logits(section.label_smoothing, pos_weight),
        "hinge": lambda: hinge(section.margin, weight),
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
