"""train.compile: the training forward pass through torch.compile, inside the one step.

The model is compiled lazily, at the first training batch of each shape (two per epoch at most:
the full batches and a last short one; shapes are static). The compiled module shares the
model's parameters, so checkpoints, the best weights and the returned model are the plain
module's. Evaluation and the probed steps (forward hooks armed) run the eager module: the same
weights, the same results within float tolerance.

Compile time (tracing, the forward's and the lazily compiled backward's code generation) is
measured by the compiler's own start/end callbacks and reported apart from the epochs: in
metrics.json ("compile") and on the progress bar.

Determinism: a compiled run is repeatable and a resume with the same setting is bitwise identical,
except that a probed step runs eagerly and a resume in the middle of an epoch probes its first
step: with the probes on, such a resume agrees with the uninterrupted run within float
tolerance. Random numbers in a compiled forward (dropout masks) are drawn by torch's own
operations from torch's generator, in the eager order (the compiler's `fallback_random`), so
compiled and eager runs with dropout draw the same masks and agree within float tolerance.

When the compiler cannot run (no C++ toolchain for the CPU backend, no Triton for CUDA) or
compilation fails, `fit` warns once and trains with the eager module from then on: never a
traceback, never a wrong result.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

# Random numbers (dropout masks) from torch's own generators, as in the eager forward, rather than the
# compiler's per-element counter-based stream: on the CPU that stream costs more than the eager masks.
OPTIONS = {"fallback_random": True}


class CompileWarning(UserWarning):
    """train.compile was asked for but the compiler failed: the run continues eagerly."""


_active: CompiledForward | None = None     # the compiled forward that ran last: compile events are its own
_started: list[float] = []


def _start(_args: Any) -> None:
    _started.append(time.perf_counter())


def _end(_args: Any) -> None:
    if _started:
        begun = _started.pop()
        if _active is not None:
            _active.seconds += time.perf_counter() - begun


def _install_callbacks() -> None:
    """Count compile seconds through dynamo's start/end callbacks (forward and lazy backward alike);
    torch._dynamo.reset() clears them, so they are put back after it."""
    from torch._dynamo.callback import callback_handler

    if _start not in callback_handler.start_callbacks:
        callback_handler.register_start_callback(_start)
        callback_handler.register_end_callback(_end)


def _hooked(model: nn.Module) -> bool:
    """Forward hooks armed anywhere in the model (the probes on a probed step)."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class CompiledForward:
    """Calls the compiled model; the eager one when hooks are armed or after a failed compilation."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.seconds = 0.0                 # compile time so far
        self.fallback: str | None = None   # why the run went back to the eager module
        try:
            import torch._dynamo

            # The compiler's caches are keyed by code (every model's forward is nn.Module's) and hold
            # a few entries each: a fresh start per Setup, so that trial after trial is compiled.
            torch._dynamo.reset()
            _install_callbacks()
            self._fn = torch.compile(model, dynamic=False, options=OPTIONS)
        except Exception as exc:           # noqa: BLE001 - any failure means: train eagerly
            self._fn = None
            self._give_up(exc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        global _active
        if self._fn is None or _hooked(self.model):
            return self.model(x)
        _active = self
        try:
            return self._fn(x)
        except Exception as exc:           # noqa: BLE001 - the eager module computes the same thing
            self._fn = None
            self._give_up(exc)
            return self.model(x)

    def _give_up(self, exc: BaseException) -> None:
        while getattr(exc, "inner_exception", None) is not None or exc.__cause__ is not None:
            exc = getattr(exc, "inner_exception", None) or exc.__cause__   # the compiler's own reason
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if len(first) > 200:
            first = first[:197] + "..."
        self.fallback = f"{type(exc).__name__}: {first}"
        warnings.warn(f"train.compile: the model could not be compiled ({self.fallback}); training continues "
                      "with the eager model", CompileWarning, stacklevel=3)

    def report(self) -> dict[str, Any]:
        """What metrics.json says about compilation."""
        return {"enabled": True, "compiled": self.fallback is None, "seconds": round(self.seconds, 3),
                "fallback": self.fallback}
