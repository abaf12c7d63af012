"""Split-level metrics, computed on the whole split, never averaged over batches.

Classification, from the predicted labels: accuracy, macro F1 (the mean of the per-class F1, for
binary tasks too), balanced accuracy (the mean per-class recall) and, for binary tasks, the
precision and recall of the positive class (class 1, the second of the sorted labels). Macro F1
runs over the classes that occur among the targets or the predictions; balanced accuracy over the
classes among the targets (a class that is only predicted has no recall), as scikit-learn's
`balanced_accuracy_score`. From the predicted
probabilities, on the evaluated splits (validation each epoch; train, validation and test once at
the end, in metrics.json): the log-loss `nll`, the expected
calibration error `ece` (15 equal-width bins of the top-label confidence, l1; the bins of the
report's reliability diagram) and, for binary tasks, `auroc_pos` (the area under the ROC curve,
ties counted half). Regression: mse, mae, r2 (the mean over output columns, in float64 about each
column's mean; 1 for a perfect fit, 0 for a wrong fit of a constant target). The training epochs'
running metrics are of the labels only (no per-step probabilities).

Plain tensor arithmetic on the metrics' device, from a confusion matrix: nothing to import
beyond torch, and the figures of the libraries that define them (tests/test_metrics_honest.py
checks them against scikit-learn).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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


class Metrics:
    """What a task's metrics need to know: the task and its number of classes."""

    def __init__(self, task: str, n_classes: int) -> None:
        self.task = task
        self.n_classes = max(n_classes, 2)

    def to(self, device: torch.device | str) -> Metrics:       # stateless: computed where the tensors are
        return self


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


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den in float32, 0 where den is 0."""
    num, den = num.float(), den.float()
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def _macro(per_class: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The mean of a per-class score over the classes marked `present`."""
    w = present.float()
    return (_ratio(w * per_class, w.sum().expand_as(w))).sum()


def label_metrics(preds: torch.Tensor, target: torch.Tensor, n_classes: int, binary: bool) -> dict[str, float]:
    n = max(n_classes, 2)
    preds, target = preds.long().reshape(-1), target.long().reshape(-1)
    counts = torch.bincount(target * n + preds, minlength=n * n).reshape(n, n)   # rows: true, columns: predicted
    tp = counts.diagonal()
    fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
    present = (tp + fp + fn) > 0
    out = {"accuracy": _ratio(tp.sum(), counts.sum()),
           "f1": _macro(_ratio(2.0 * tp, 2.0 * tp + fn + fp), present),
           "balanced_accuracy": _macro(_ratio(tp, tp + fn), tp + fn > 0)}
    if binary:
        out["precision_pos"] = _ratio(tp[1], tp[1] + fp[1])
        out["recall_pos"] = _ratio(tp[1], tp[1] + fn[1])
    return {k: float(v) for k, v in out.items()}


def regression_metrics(preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """In float64, R2 about each column's own mean (two passes): a target far from zero (a year, a
    temperature in kelvin) keeps its precision. A constant column scores 1 when fitted exactly, else 0."""
    preds, target = preds.double(), target.double()
    if preds.dim() == 1 and target.dim() == 2 and target.shape[1] == 1:
        target = target.squeeze(1)
    rows = target.shape[0]
    err, t = (preds - target).reshape(rows, -1), target.reshape(rows, -1)
    rss, tss = (err * err).sum(0), ((t - t.mean(0)) ** 2).sum(0)
    tiny = 1e-20 * (t * t).sum(0)                     # below this a sum of squares is rounding, not spread
    r2 = torch.where(tss > tiny, 1 - rss / torch.where(tss > tiny, tss, 1.0), (rss <= tiny).double())
    return {"mse": float((err * err).mean()), "mae": float(err.abs().mean()),
            "r2": float(r2.mean()) if rows >= 2 else math.nan}


def r2(preds: torch.Tensor, target: torch.Tensor) -> float:
    """`regression_metrics`' R2 alone (the doctor's baselines score with it)."""
    return regression_metrics(preds, target)["r2"]


def _confidence_bins(probs: torch.Tensor, target: torch.Tensor, bins: int):
    """Per equal-width bin of the top-label confidence (the last closed at 1): rows, sum of
    confidences, sum of hits (float64)."""
    conf, pred = probs.float().max(1)
    which = (conf * bins).long().clamp(max=bins - 1)
    zeros = torch.zeros(bins, dtype=torch.float64, device=probs.device)
    return (torch.bincount(which, minlength=bins).double(), zeros.index_add(0, which, conf.double()),
            zeros.index_add(0, which, (pred == target.long()).double()))


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE over equal-width confidence bins: the rows' share-weighted |accuracy - confidence|
    per bin, i.e. the sum over bins of |hits - confidences| over all rows."""
    count, conf_sum, hit_sum = _confidence_bins(probs, target, bins)
    return float((hit_sum - conf_sum).abs().sum() / count.sum()) if len(target) else math.nan


def auroc(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Area under the ROC curve of scores for class 1: the probability that a positive row scores
    above a negative one, ties counted half (Mann-Whitney). NaN when a class is missing."""
    y = target.long().reshape(-1) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    s = scores.double().reshape(-1)
    order = torch.argsort(s)
    sorted_s = s[order]
    # Average ranks (1-based) of tied scores.
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = (ends - (counts.double() - 1) / 2)[inverse]
    ranks = torch.empty_like(avg_rank).scatter_(0, order, avg_rank)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def compute(metrics: Metrics, preds: torch.Tensor, target: torch.Tensor,
            probs: torch.Tensor | None = None) -> dict[str, float]:
    """The label metrics of `preds`, plus the probability metrics when `probs` is given."""
    if metrics.task == "regression":
        return regression_metrics(preds, target)
    result = label_metrics(preds, target, metrics.n_classes, metrics.task == "binary")
    if probs is not None and target.dim() == 1:
        result["nll"] = log_loss(probs, target)
        result["ece"] = expected_calibration_error(probs, target)
        if metrics.task == "binary":
            result["auroc_pos"] = auroc(probs[:, 1], target)
    return {k: result[k] for k in _order(metrics.task, result)}


def _order(task: str, result: dict[str, float]) -> list[str]:
    return [k for k in metric_names(task, probabilities=True) if k in result]


def reliability(probs: torch.Tensor, target: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """The reliability diagram's numbers: per equal-width bin of top-label confidence, its rows, mean
    confidence and accuracy (empty bins left out); their weighted gap is the ECE."""
    count, conf_sum, hit_sum = _confidence_bins(probs, target, bins)
    rows = [{"bin": b, "low": b / bins, "high": (b + 1) / bins, "rows": int(count[b]),
             "confidence": float(conf_sum[b] / count[b]), "accuracy": float(hit_sum[b] / count[b])}
            for b in range(bins) if count[b]]
    return {"bins": rows, "n_bins": bins, "ece": expected_calibration_error(probs, target, bins)}
