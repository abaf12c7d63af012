"""Whitening (seed 001, "Data normalization").

Whitening centres the data, rotates it into the eigenbasis of the training covariance and
divides each direction by sqrt(eigenvalue + eps): the result has (nearly) identity covariance.
PCA whitening stays in the eigenbasis; ZCA rotates back (W = U diag(1/sqrt(S + eps)) U^T),
which among all whitening transforms keeps the data closest to the input. Images are flattened
for the covariance and reshaped back. Statistics come from the training split only and are
tensors (`state_dict`) saved with the run.
"""

from __future__ import annotations

import torch


def whitening(x: torch.Tensor, eps: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, W) such that (x - mean) @ W is whitened; x is (N, D). kind: "pca" or "zca"."""
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / len(x)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    # eigh sorts ascending; PCA's convention puts the largest-variance direction first.
    eigvals, eigvecs = eigvals.flip(0).clamp(min=0), eigvecs.flip(1)
    w = eigvecs / torch.sqrt(eigvals + eps)
    if kind == "zca":
        w = w @ eigvecs.T
    return mean, w


def pca_whiten(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x (N, D) projected on its covariance eigenvectors, each scaled to unit variance."""
    mean, w = whitening(x, eps, "pca")
    return ((x.double() - mean) @ w).to(x.dtype)


def zca_whiten(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PCA whitening rotated back into the input's coordinates."""
    mean, w = whitening(x, eps, "zca")
    return ((x.double() - mean) @ w).to(x.dtype)


class Whiten:
    """Normalizer adapter: whitening fitted on the training split, applied to any split."""

    kind = "pca"

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps
        self.mean = self.matrix = None

    def fit(self, x: torch.Tensor) -> Whiten:
        mean, w = whitening(x.reshape(len(x), -1), self.eps, self.kind)
        self.mean, self.matrix = mean.float(), w.float()
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1)
        return ((flat - self.mean) @ self.matrix).reshape(x.shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "matrix": self.matrix}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.matrix = state["mean"], state["matrix"]


class PCAWhiten(Whiten):
    name = "pca_whiten"
    kind = "pca"


class ZCAWhiten(Whiten):
    name = "zca_whiten"
    kind = "zca"
