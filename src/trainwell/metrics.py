"""Split-level metrics with torchmetrics: computed on the whole split, never averaged over batches.

Classification, from the predicted labels: accuracy, macro F1 (the mean of the per-class F1, for
binary tasks too), balanced accuracy (the mean per-class recall) and, for binary tasks, the
precision and recall of the positive class (class 1, the second of the sorted labels). From the
predicted probabilities, on the evaluated splits (validation, test): the log-loss `nll`, the
expected calibration error `ece` (15 equal-width bins of the top-label confidence, l1) and, for
binary tasks, `auroc_pos`. Regression: mse, mae, r2. The training loss is recorded separately.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics import classification as C
from torchmetrics import regression as R

LABEL_METRICS = ("accuracy", "f1", "balanced_accuracy")
BINARY_LABEL_METRICS = ("precision_pos", "recall_pos")
PROBABILITY_METRICS = ("nll", "ece")
BINARY_PROBABILITY_METRICS = ("auroc_pos",)
REGRESSION_METRICS = ("mse", "mae", "r2")
ECE_BINS = 15


def metric_names(task: str, probabilities: bool = False) -> tuple[str, ...]:
    """The metric columns of a task: of the training epochs (labels only) or, with `probabilities`,
    of an evaluated split."""
    if task == "regression":
        return REGRESSION_METRICS
    names = LABEL_METRICS + (BINARY_LABEL_METRICS if task == "binary" else ())
    if probabilities:
        names += PROBABILITY_METRICS + (BINARY_PROBABILITY_METRICS if task == "binary" else ())
    return names


class Metrics(torch.nn.Module):
    """The task's torchmetrics: `label` on predicted classes, `prob` on class probabilities."""

    def __init__(self, task: str, n_classes: int) -> None:
        super().__init__()
        self.task = task
        if task == "regression":
            self.label = torchmetrics.MetricCollection({"mse": R.MeanSquaredError(), "mae": R.MeanAbsoluteError(),
                                                        "r2": R.R2Score()})
            self.prob = None
            return
        n = max(n_classes, 2)
        label = {"accuracy": C.MulticlassAccuracy(n, average="micro"),
                 "f1": C.MulticlassF1Score(n, average="macro"),
                 "balanced_accuracy": C.MulticlassRecall(n, average="macro")}
        prob = {"ece": C.MulticlassCalibrationError(n, n_bins=ECE_BINS, norm="l1")}
        if task == "binary":
            label.update(precision_pos=C.BinaryPrecision(), recall_pos=C.BinaryRecall())
            prob["auroc_pos"] = C.BinaryAUROC()
        self.label = torchmetrics.MetricCollection(label)
        self.prob = torchmetrics.MetricCollection(prob)


def build_metrics(task: str, n_classes: int) -> Metrics:
    return Metrics(task, n_classes)


def predictions(out: torch.Tensor, task: str) -> torch.Tensor:
    """What the metrics consume: class indices, or the regression outputs."""
    if task == "regression":
        return out.squeeze(1) if out.dim() == 2 and out.shape[1] == 1 else out
    if out.shape[1] == 1:
        return (out.squeeze(1) > 0).long()
    return out.argmax(1)


def probabilities(out: torch.Tensor, task: str, loss_kind: str) -> torch.Tensor | None:
    """Class probabilities (N, C) from a classifier's outputs: sigmoid of a binary head's one logit,
    exp of the nll head's log-probabilities, softmax of logits. None for regression and for the
    hinge loss, whose scores are not probabilities."""
    if task == "regression" or loss_kind == "hinge":
        return None
    out = out.float()
    if out.shape[1] == 1:
        p = torch.sigmoid(out)
        return torch.cat([1 - p, p], 1)
    if loss_kind == "nll":
        return out.exp()
    return F.softmax(out, 1)


def log_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true class (probabilities clamped at eps)."""
    picked = probs.gather(1, target.long().reshape(-1, 1)).squeeze(1)
    return float(-picked.clamp_min(eps).log().mean())


def compute(metrics: Metrics, preds: torch.Tensor, target: torch.Tensor,
            probs: torch.Tensor | None = None) -> dict[str, float]:
    """The label metrics of `preds`, plus the probability metrics when `probs` is given."""
    metrics.label.reset()
    result = {k: float(v) for k, v in metrics.label(preds, target).items()}
    if probs is not None and metrics.prob is not None and target.dim() == 1:
        metrics.prob.reset()
        result["nll"] = log_loss(probs, target)
        result["ece"] = float(metrics.prob["ece"](probs, target))
        if "auroc_pos" in metrics.prob:
            result["auroc_pos"] = float(metrics.prob["auroc_pos"](probs[:, 1], target))
    return {k: result[k] for k in _order(metrics.task, result)}


def _order(task: str, result: dict[str, float]) -> list[str]:
    return [k for k in metric_names(task, probabilities=True) if k in result]


def reliability(probs: torch.Tensor, target: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """The reliability diagram's numbers: per equal-width bin of top-label confidence, its rows, mean
    confidence and accuracy (empty bins left out); their weighted gap is the ECE."""
    conf, pred = probs.max(1)
    which = (conf * bins).long().clamp(max=bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if n:
            rows.append({"bin": b, "low": b / bins, "high": (b + 1) / bins, "rows": n,
                         "confidence": float(conf[inside].mean()),
                         "accuracy": float((pred[inside] == target[inside]).float().mean())})
    total = len(target)
    ece = sum(r["rows"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows) if total else math.nan
    return {"bins": rows, "n_bins": bins, "ece": ece}
