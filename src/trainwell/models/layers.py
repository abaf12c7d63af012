"""Layers the builders use beyond torch.nn: DropConnect (seed 002, "Drop Connect Regularization"),
and dropout with a cheaper mask on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropconnect_weight(weight: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each weight kept with probability 1-p and scaled by 1/(1-p), so its expectation is unchanged."""
    keep = torch.rand(weight.shape, generator=generator, device=weight.device) >= p
    return weight * keep / (1.0 - p)


class DropConnectLinear(nn.Linear):
    """A linear layer whose weights (not its outputs, as in dropout) are dropped while training.

    In eval mode it is exactly nn.Linear: the 1/(1-p) scaling at training time keeps the expected
    weight equal to the stored one, so nothing needs rescaling at test time. Subclassing nn.Linear
    keeps initialization, parameter groups and checkpoints treating it as a linear layer.
    """

    def __init__(self, in_features: int, out_features: int, p: float, bias: bool = True):
        if not 0 <= p < 1:
            raise ValueError(f"model.dropconnect: got {p}, must be in [0, 1)")
        super().__init__(in_features, out_features, bias=bias)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        return F.linear(x, dropconnect_weight(self.weight, self.p), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class Dropout(nn.Dropout):
    """nn.Dropout whose training mask on the CPU is drawn with torch.rand: each unit kept when a
    uniform draw in [0, 1) is >= p (probability 1 - p, to float32's 2**-24), kept units scaled by
    1 / (1 - p). The same distribution as torch's dropout, whose CPU mask draws a double per unit
    from a serial Bernoulli sampler: about 3x the cost of the whole mask here (on the seed-004 MLP,
    about a sixth of the step). Both draw from torch's global generator, so runs stay repeatable and
    resumable; the draws differ, so a run is a different sample than with nn.Dropout. Elsewhere
    (CUDA's fused dropout kernel is already cheap), in eval mode, or with `inplace`: nn.Dropout.

    A subclass, so whatever looks for nn.Dropout (the doctor, the report) still finds it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0, 1) or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand(x.shape, device=x.device).ge_(self.p)       # 1.0 where kept, else 0.0 (float32)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))
