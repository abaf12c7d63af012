"""The doctor's baseline models, in torch (float64): what the data allows, measured in milliseconds and
without importing scikit-learn, scipy or pandas into every `fit`.

Each is the textbook model that scikit-learn also implements, with its defaults as the facts use them
(tests/test_baselines.py checks each against scikit-learn on several data sets):
- `ridge`: least squares with an L2 penalty `alpha * |w|^2` on the weights (not the intercept), solved
  exactly from the centred normal equations (or their dual form when there are more features than rows);
- `logistic`: L2-penalized logistic regression, `mean(cross-entropy) + |W|^2 / (2 C n)`, binary (one weight
  vector) or multinomial (one per class), minimized by L-BFGS from zero weights to a gradient of 1e-4;
- `knn_classify`: the majority class among the k nearest training rows (Euclidean; a tie goes to the
  smallest class);
- `knn_regress`: the inverse-distance-weighted mean target of the k nearest training rows (rows at
  distance 0, when there are any, share all the weight);
- `nearest_others`: the k nearest training rows of each training row, the row itself left out.

Queries are answered a block of rows at a time, so no distance matrix larger than QUERY_BLOCK rows
against the fitted rows exists at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..data.normalize import column_moments

QUERY_BLOCK = 256


class Standardizer:
    """Per-column mean and (population) standard deviation of the fitted rows; a constant column is
    only centred. Applied in place: to a copy the caller owns. The moments are `x.mean(0)` and
    `x.std(0, unbiased=False)`, bit for bit, taken a block of columns at a time (no temporary of x's size)."""

    def __init__(self, x: torch.Tensor):
        self.mean, self.std = column_moments(x)
        self.std[self.std < 1e-12] = 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.sub_(self.mean).div_(self.std)


def ridge(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (features, outputs), intercept (outputs,)) of ridge regression of y (rows[, outputs])
    on x (rows, features)."""
    y2 = y.reshape(len(y), -1)
    xm, ym = x.mean(0), y2.mean(0)
    xc, yc = x - xm, y2 - ym
    n, d = xc.shape
    if d <= n:
        w = torch.linalg.solve(xc.T @ xc + alpha * torch.eye(d, dtype=x.dtype), xc.T @ yc)
    else:                                   # the dual form: an n x n system
        w = xc.T @ torch.linalg.solve(xc @ xc.T + alpha * torch.eye(n, dtype=x.dtype), yc)
    return w, ym - xm @ w


def logistic(x: torch.Tensor, labels: torch.Tensor, n_classes: int, c: float = 1.0, max_iter: int = 200,
             tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (features, outputs), intercept (outputs,)) of L2-penalized logistic regression of the
    class indices `labels` (0 .. n_classes - 1). Two classes: one output, the log-odds of class 1;
    more: one output per class (their argmax is the prediction)."""
    n, d = x.shape
    outputs = 1 if n_classes == 2 else n_classes
    w = torch.zeros(d + 1, outputs, dtype=x.dtype, requires_grad=True)     # the last row: the intercept
    strength = 1.0 / (c * n)
    target = labels.to(x.dtype).reshape(-1, 1) if outputs == 1 else labels.long()
    opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, max_eval=max_iter * 2, tolerance_grad=tol,
                            tolerance_change=64 * torch.finfo(x.dtype).eps, history_size=10,
                            line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        opt.zero_grad()
        z = x @ w[:-1] + w[-1]
        if outputs == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, target)
        else:
            loss = torch.nn.functional.cross_entropy(z, target)
        loss = loss + 0.5 * strength * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    w = w.detach()
    return w[:-1], w[-1]


def linear_predict(weights: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w, b = weights
    return x @ w + b


def class_of(scores: torch.Tensor) -> torch.Tensor:
    """Class indices from `linear_predict` scores of `logistic`: log-odds > 0, or the largest score."""
    return (scores[:, 0] > 0).long() if scores.shape[1] == 1 else scores.argmax(1)


class _Distances:
    """Squared Euclidean distances from blocks of query rows to the rows of `ref`, written into one reused
    (QUERY_BLOCK, len(ref)) buffer: a new matrix per block would not fit where the last one was once the
    small results are placed there, and the process would grow by a matrix a block."""

    def __init__(self, ref: torch.Tensor):
        self.ref, self.ref_sq = ref, torch.einsum("ij,ij->i", ref, ref)
        self.buffer = torch.empty(QUERY_BLOCK, len(ref), dtype=ref.dtype)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        if len(q) > len(self.buffer):
            self.buffer = torch.empty(len(q), len(self.ref), dtype=self.ref.dtype)
        out = torch.matmul(q, self.ref.T, out=self.buffer[:len(q)])
        return out.mul_(-2).add_(self.ref_sq).add_(torch.einsum("ij,ij->i", q, q)[:, None]).clamp_(min=0)


def nearest(queries: Iterable[torch.Tensor], ref: torch.Tensor, k: int):
    """For each block of (at most QUERY_BLOCK) query rows: (distances, indices) of its k nearest rows of
    `ref`, nearest first."""
    distances = _Distances(ref)
    for q in queries:
        d2, idx = torch.topk(distances(q), min(k, len(ref)), dim=1, largest=False)
        yield d2.sqrt(), idx


def nearest_others(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (rows, k) of the k nearest other rows of `x` to each of its rows, nearest first."""
    distances = _Distances(x)
    out = []
    for i in range(0, len(x), QUERY_BLOCK):
        d2 = distances(x[i:i + QUERY_BLOCK])
        d2[torch.arange(len(d2)), torch.arange(i, i + len(d2))] = float("inf")     # not the row itself
        out.append(torch.topk(d2, min(k, len(x) - 1), dim=1, largest=False).indices)
    return torch.cat(out)


def knn_classify(idx: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The majority class index among the neighbours `idx` (rows, k) of each row; ties to the smallest."""
    votes = torch.zeros(len(idx), n_classes, dtype=torch.long)
    votes.scatter_add_(1, labels[idx], torch.ones_like(idx))
    return votes.argmax(1)


def knn_regress(dist: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The inverse-distance-weighted mean of the targets `y` (rows[, outputs]) of the neighbours, shaped
    (queries[, outputs]) like `y`."""
    zero = dist == 0
    w = torch.where(zero.any(1, keepdim=True), zero.to(dist.dtype), 1 / dist)
    y2 = y.reshape(len(y), -1)
    return ((w[:, :, None] * y2[idx]).sum(1) / w.sum(1, keepdim=True)).reshape(len(idx), *y.shape[1:])
