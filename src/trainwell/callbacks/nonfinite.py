"""The NaN/inf guard: what the loop does when training produced a non-finite loss, gradient or weight.

Detection costs no host synchronisation per step: the loop already sums the batch losses and
the pre-clip gradient norms on the device, and a NaN or inf anywhere makes those sums non-finite.
They (and the parameters) are read once at each checkpoint and at the end of each epoch. So a
divergence is noticed at the next such boundary, and the state saved at the previous one is the
last good state.

Policies (`watch.on_nan`):
- "stop": stop the run (reason `non_finite`); the last good checkpoint stays on disk and no
  checkpoint with non-finite weights is written.
- "rollback": restore the last good state, multiply the LR by `watch.nan_lr_factor`, and replay
  carefully: until the next good boundary each batch's loss and each step's gradient norm are
  checked (one host sync each), and the first non-finite one is skipped. A finite state can
  already be on its way to overflow: a second non-finite batch in the same replay rolls back
  again, one saved state further back (the loop keeps the last few good states in memory). At most `watch.nan_retries`
  rollbacks; then the run stops as with "stop". Every rollback and skip is an event recorded in
  metrics.json, and the history gains a `nan_rollbacks` column (rollbacks so far).
"""

from __future__ import annotations

from typing import Any

import torch

GOOD_STATES = 3       # rollback: good states kept in memory (each one model + optimizer state, serialized)


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one host sync for all of them).

    A tensor's minimum and maximum are both finite exactly when all its elements are (a NaN makes
    both NaN, an infinity is one of them); one reduction reads them, several times cheaper on the CPU
    than an elementwise isfinite then all. Integer and empty tensors are finite."""
    if any(t.is_complex() for t in tensors):
        return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
    ends = [torch.stack(torch.aminmax(t.detach())).double() for t in tensors if t.is_floating_point() and t.numel()]
    return not ends or bool(torch.isfinite(torch.cat(ends)).all())


class NonFiniteGuard:
    def __init__(self, policy: str = "stop", lr_factor: float = 0.5, retries: int = 3):
        if policy not in ("stop", "rollback"):
            raise ValueError(f"watch.on_nan: got {policy!r}, must be 'stop' or 'rollback'")
        self.policy, self.lr_factor, self.retries = policy, lr_factor, retries
        self.rollbacks = 0
        self.lr_scale = 1.0              # product of lr_factor over the rollbacks so far
        self.careful = False             # replaying after a rollback: check every batch
        self.consecutive = 0             # rollbacks since the last good boundary
        self.skipped = 0                 # batches skipped since the last rollback
        self.events: list[dict[str, Any]] = []
        self._good: list[bytes] = []     # the last good states themselves (not part of state_dict)

    @classmethod
    def from_section(cls, watch) -> NonFiniteGuard:
        return cls(watch.on_nan, watch.nan_lr_factor, watch.nan_retries)

    @property
    def keeps_snapshots(self) -> bool:
        """Rollback needs the last good state in memory (also when no run folder is written)."""
        return self.policy == "rollback"

    def remember(self, state: bytes) -> None:
        """A good state (serialized by the loop) to roll back to; the last GOOD_STATES are kept."""
        if self.keeps_snapshots:
            self._good = [*self._good[-(GOOD_STATES - 1):], state]

    @property
    def remembers(self) -> bool:
        return bool(self._good)

    def restore_point(self) -> bytes:
        """The state to roll back to: the last good one; when the replay from it failed too, it was
        finite but already diverging, so one further back."""
        if self.consecutive and len(self._good) > 1:
            self._good.pop()
        return self._good[-1]

    def decide(self) -> str:
        """After a non-finite boundary: "rollback" while retries remain under that policy, else "stop"."""
        if self.policy == "rollback" and self.rollbacks < self.retries:
            return "rollback"
        return "stop"

    def passed(self) -> None:
        """A boundary found everything finite: the replay (if any) is over."""
        self.careful, self.consecutive = False, 0

    def may_skip(self, action: str, **where: Any) -> bool:
        """In a replay, a non-finite batch or step: skip it if it is the first one, else roll back."""
        self.skipped += 1
        if self.skipped == 1:
            self.record(action, **where)
        return self.skipped == 1

    def rolled_back(self, **where: Any) -> None:
        self.skipped = 0
        self.rollbacks += 1
        self.consecutive += 1
        self.lr_scale *= self.lr_factor
        self.careful = True
        self.record("rollback", lr_scale=self.lr_scale, **where)

    def record(self, action: str, **details: Any) -> None:
        self.events.append({"action": action, **details})

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "careful": self.careful,
                "consecutive": self.consecutive, "skipped": self.skipped, "events": list(self.events)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks, self.lr_scale = state["rollbacks"], state["lr_scale"]
        self.careful, self.consecutive, self.skipped = state["careful"], state["consecutive"], state["skipped"]
        self.events = list(state["events"])
