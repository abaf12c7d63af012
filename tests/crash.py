"""A crash in the middle of a run, for resume tests: the n-th optimizer step raises `Crash`."""

from __future__ import annotations

from trainwell import step


class Crash(Exception):
    """Stands for the process dying in the middle of the run."""


def crash_at_step(monkeypatch, n: int) -> None:
    """Make the n-th call of `step.optimizer_step` (counted from now) raise `Crash` instead."""
    real, count = step.optimizer_step, [0]

    def counted(*args, **kw):
        count[0] += 1
        if count[0] == n:
            raise Crash
        return real(*args, **kw)
    monkeypatch.setattr(step, "optimizer_step", counted)
