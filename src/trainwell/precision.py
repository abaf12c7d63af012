"""train.precision: which number format the forward pass and the loss compute in.

    "32"          float32 throughout (the default).
    "bf16-mixed"  the forward pass and the loss under autocast to bfloat16: matrix products and
                  convolutions run in bfloat16, reductions and the loss in float32. The weights
                  (the master copy), their gradients and the optimizer state stay float32.
                  bfloat16 has float32's range, so nothing is scaled.
    "16-mixed"    the same with float16, whose range is narrow: the loss is multiplied by a scale
                  before backward (a gradient scaler) and the gradients are divided by it before
                  anything reads them (the gradient norm, clipping, the NaN guard, the probes).
                  A step whose gradients overflowed is skipped and the scale halved; after
                  `growth_interval` good steps it doubles. The scale is part of the run's state
                  (saved in every checkpoint), so a resume stays bitwise identical.

Evaluation runs under the same autocast as training; its outputs are read as float32. On a CPU,
float16 is supported for checking a recipe meant for a GPU (the scaler included), but float16
matrix products are emulated there and slower than float32: `fit` says so in one warning line.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class PrecisionWarning(UserWarning):
    """A precision that runs on this device, but not fast."""


@dataclass(frozen=True)
class Precision:
    name: str = "32"
    device_type: str = "cpu"

    @property
    def mixed(self) -> bool:
        return self.name != "32"

    def autocast(self) -> AbstractContextManager:
        """The context the forward pass and the loss run in (training and evaluation alike)."""
        if not self.mixed:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    def scaler(self) -> torch.amp.GradScaler | None:
        """A fresh gradient scaler for "16-mixed"; None otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "16-mixed" else None


def problem(name: str, device: torch.device) -> str | None:
    """Why `device` cannot run precision `name` (one line naming the key), or None when it can."""
    if name == "32":
        return None
    kind = device.type
    if not torch.amp.autocast_mode.is_autocast_available(kind):
        return (f"train.precision: got {name!r}, but autocast is not available on the {kind} device; "
                "use \"32\"")
    if kind == "cuda" and name == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        return ("train.precision: got 'bf16-mixed', but this CUDA device has no bfloat16 support "
                f"({torch.cuda.get_device_name(device)}); use \"16-mixed\" or \"32\"")
    return None


def notes(name: str, device: torch.device) -> list[str]:
    """Warnings about a precision that runs but is slow on this device."""
    if name == "16-mixed" and device.type == "cpu":
        return ["train.precision = \"16-mixed\" on the CPU: float16 is emulated here and slower than float32 "
                "(supported to check a recipe meant for a GPU); \"bf16-mixed\" is the fast choice on a CPU "
                "with bfloat16 instructions"]
    return []


def inverse_scale(scaler: torch.amp.GradScaler | None) -> torch.Tensor | None:
    """1 / the current loss scale, on the device (no host synchronisation); None without a scaler or
    before its first step. What a gradient read during backward is multiplied by to be unscaled."""
    if scaler is None:
        return None
    scale = getattr(scaler, "_scale", None)      # created lazily at the scaler's first use
    return None if scale is None else scale.double().reciprocal().float()
