"""Regression target scaling (`data.target_normalize`), fitted on the training split only.

The network learns scaled targets z = (y - shift) / scale, one shift and scale per output column
(standard: mean and standard deviation; minmax: minimum and range). Its last module is a
`TargetScale` that maps z back to y = z * scale + shift, so everything that reads the network's
output (metrics, predict, ensembles, averaged weights) sees the target's own units, and the
statistics are saved with the weights. The loss compares the two in the scaled space
(`scaled_loss`), so its size does not depend on the target's units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MODULE_NAME = "target_scale"


class TargetScale(nn.Module):
    """y = z * scale + shift, per output column (buffers, saved with the weights, never trained)."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor, kind: str = "standard") -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("shift", shift.detach().float().reshape(-1).clone())
        self.register_buffer("scale", scale.detach().float().reshape(-1).clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.shift

    def to_scaled(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse map, y -> z (targets and outputs, in the loss)."""
        return (y - self.shift) / self.scale

    def extra_repr(self) -> str:
        return f"kind={self.kind}, outputs={len(self.shift)}"

    def describe(self) -> dict:
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}


def resolve(kind: str, task: str) -> str:
    """The scaling a run uses: auto is standard for regression and none otherwise."""
    if kind == "auto":
        return "standard" if task == "regression" else "none"
    return kind


def fit_target_scale(kind: str, y_train: torch.Tensor) -> TargetScale | None:
    """A TargetScale fitted on the training targets (N,) or (N, T), or None for `none`."""
    if kind == "none":
        return None
    y = y_train.double().reshape(len(y_train), -1)
    if kind == "standard":
        shift, spread = y.mean(0), y.std(0, unbiased=False)
    elif kind == "minmax":
        shift = y.amin(0)
        spread = y.amax(0) - shift
    else:
        raise ValueError(f"data.target_normalize: got {kind!r}; expected auto, standard, minmax or none")
    spread = torch.where(spread > 1e-12, spread, torch.ones_like(spread))  # a constant column maps to 0
    return TargetScale(shift, spread, kind)


def scale_from_schema(saved: dict) -> TargetScale:
    """A TargetScale of the shape data.json describes (its values come with the weights)."""
    return TargetScale(torch.tensor(saved["shift"]), torch.tensor(saved["scale"]), saved["kind"])


def attach(model: nn.Module, scale: TargetScale, custom: bool) -> nn.Module:
    """`model` followed by `scale`: appended to the recipe's models (a Sequential: the weight names stay);
    a user's own module is wrapped (as `net`, next to `target_scale`) and left as it was given."""
    if not custom and isinstance(model, nn.Sequential):
        model.add_module(MODULE_NAME, scale)
        return model
    return ScaledOutput(model, scale)


class ScaledOutput(nn.Module):
    """A user's own module whose output is mapped back to the target's units."""

    def __init__(self, net: nn.Module, scale: TargetScale) -> None:
        super().__init__()
        self.net = net
        self.target_scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_scale(self.net(x))


def find(model: nn.Module) -> TargetScale | None:
    """The model's TargetScale, if it has one."""
    return next((m for m in model.modules() if isinstance(m, TargetScale)), None)


def scaled_loss(loss_fn: Callable, scale: TargetScale | None) -> Callable:
    """`loss_fn` applied to outputs and targets mapped into the scaled space (unchanged for None)."""
    if scale is None:
        return loss_fn

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_fn(scale.to_scaled(out), scale.to_scaled(target))
    return loss
