"""Early stopping with Keras' semantics plus Lightning's threshold checks.

`update(epoch, value)` consumes one epoch's monitored value and returns `(should_stop, reason)`.
Keras semantics (keras.callbacks.EarlyStopping): epochs up to `start_from_epoch` are ignored;
an epoch improves when `value` beats the best by more than `min_delta`; `wait` counts epochs
since the last improvement and the run stops once `wait >= patience`; with a `baseline`, an
improvement only resets `wait` if it also beats the baseline. Lightning adds: stop at once on a
non-finite value (`check_finite`), on reaching `stopping_threshold`, or on passing
`divergence_threshold`. Epochs are numbered from 1.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any


class StopReason(StrEnum):
    FINISHED = "finished"                  # ran every epoch
    PATIENCE = "patience"                  # no improvement for `patience` epochs
    BASELINE = "baseline"                  # never beat the baseline within `patience` epochs
    NON_FINITE = "non_finite"              # monitored value (or loss) became NaN/inf
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"                      # a search's pruner judged the trial unpromising


class EarlyStopping:
    def __init__(self, *, monitor: str, mode: str, patience: int, min_delta: float = 0.0,
                 baseline: float | None = None, start_from_epoch: int = 0, check_finite: bool = True,
                 stopping_threshold: float | None = None, divergence_threshold: float | None = None,
                 stops: bool = True):
        if mode not in ("min", "max"):
            raise ValueError(f"stopping.mode: got {mode!r}, must be 'min' or 'max'")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.baseline, self.start_from_epoch = abs(min_delta), baseline, start_from_epoch
        self.check_finite = check_finite
        self.stops = stops             # False: a best-epoch monitor, which never stops the run
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self.best: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.improved = False          # whether the last update set a new best

    @classmethod
    def from_section(cls, s, stops: bool = True) -> EarlyStopping:
        return cls(monitor=s.monitor, mode=s.mode, patience=s.patience, min_delta=s.min_delta,
                   baseline=s.baseline, start_from_epoch=s.start_from_epoch, check_finite=s.check_finite,
                   stopping_threshold=s.stopping_threshold, divergence_threshold=s.divergence_threshold,
                   stops=stops)

    def after_epoch(self, epoch: int, row: dict[str, Any]) -> StopReason | None:
        """The loop's component event: epoch `epoch`'s history row, whose `monitor` column is consumed;
        the reason when it stops the run."""
        stop, reason = self.update(epoch, monitored(row, self.monitor, "stopping.monitor"))
        return reason if stop and self.stops else None

    def _beats(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        # An improvement must beat the reference by more than min_delta.
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def _reached(self, value: float, threshold: float | None, better: bool) -> bool:
        if threshold is None:
            return False
        if self.mode == "min":
            return value < threshold if better else value > threshold
        return value > threshold if better else value < threshold

    def update(self, epoch: int, value: float) -> tuple[bool, StopReason | None]:
        """Consume epoch `epoch`'s value; returns (should_stop, reason); `self.improved` says if it is the best."""
        self.improved = False
        if epoch <= self.start_from_epoch:
            return False, None
        if self.check_finite and not math.isfinite(value):
            return True, StopReason.NON_FINITE
        if self._reached(value, self.stopping_threshold, better=True):
            self._record_best(epoch, value)
            return True, StopReason.STOPPING_THRESHOLD
        if self._reached(value, self.divergence_threshold, better=False):
            return True, StopReason.DIVERGENCE_THRESHOLD
        self.wait += 1
        if self._beats(value, self.best):
            self._record_best(epoch, value)
            if self.baseline is None or self._beats(value, self.baseline):
                self.wait = 0
            return False, None
        if self.wait >= self.patience:
            beaten = self.baseline is None or (self.best is not None and self._beats(self.best, self.baseline))
            return True, StopReason.PATIENCE if beaten else StopReason.BASELINE
        return False, None

    def _record_best(self, epoch: int, value: float) -> None:
        self.best, self.best_epoch, self.improved = value, epoch, True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


def monitored(row: dict[str, Any], key: str, field_name: str) -> float:
    """The value of history column `key` in `row` (None: NaN); a column the row lacks names `field_name`."""
    if key not in row:
        raise KeyError(f"{field_name}: got {key!r}, not a history column; columns: {', '.join(row)}")
    value = row[key]
    return float("nan") if value is None else float(value)
