"""Split-level metrics with torchmetrics: computed on the whole split, never averaged over batches.

Classification: accuracy and macro F1. Regression: mse, mae, r2. The loss is recorded separately.
"""

from __future__ import annotations

import torch
import torchmetrics
from torchmetrics import classification as C
from torchmetrics import regression as R

CLASSIFICATION_METRICS = ("accuracy", "f1")
REGRESSION_METRICS = ("mse", "mae", "r2")


def metric_names(task: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def build_metrics(task: str, n_classes: int) -> torchmetrics.MetricCollection:
    if task == "regression":
        return torchmetrics.MetricCollection({"mse": R.MeanSquaredError(), "mae": R.MeanAbsoluteError(),
                                              "r2": R.R2Score()})
    if task == "binary":
        return torchmetrics.MetricCollection({"accuracy": C.BinaryAccuracy(), "f1": C.BinaryF1Score()})
    return torchmetrics.MetricCollection({
        "accuracy": C.MulticlassAccuracy(n_classes, average="micro"),
        "f1": C.MulticlassF1Score(n_classes, average="macro"),
    })


def predictions(out: torch.Tensor, task: str) -> torch.Tensor:
    """What the metrics consume: class indices, or the regression outputs."""
    if task == "regression":
        return out.squeeze(1) if out.dim() == 2 and out.shape[1] == 1 else out
    if out.shape[1] == 1:
        return (out.squeeze(1) > 0).long()
    return out.argmax(1)


def compute(metrics: torchmetrics.MetricCollection, preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    metrics.reset()
    result = metrics(preds, target)
    return {k: float(v) for k, v in result.items()}
