"""Learning-rate schedules as pure functions of the optimizer step.

`lr_factor(section, step, steps_per_epoch, total_steps)` gives the multiplier of the base LR
used for optimizer step `step` (0-based). Nothing is hidden in a counter: resuming restores one
integer. Units: step / multistep / exponential decay per *epoch* (piecewise constant within an
epoch, like stepping torch's schedulers once per epoch); cosine, cosine_restarts (cycle lengths
counted in epochs), polynomial and one_cycle change every *step*. A linear warmup of `warmup_epochs` runs first, from
`warmup_start_factor` times the schedule's starting value up to that value (as torch's
SequentialLR([LinearLR, schedule]) does), then the schedule starts from its own step 0 over the
remaining steps.

reduce_on_plateau depends on validation results, so it is a small stateful object (`Plateau`)
whose scale multiplies the factor.
"""

from __future__ import annotations

import math
from bisect import bisect_right

from .callbacks.early_stopping import monitored


def _main_factor(s, step: int, spe: int, total: int, base_lr: float) -> float:
    kind = s.kind
    epoch = step // spe
    if kind in ("constant", "reduce_on_plateau"):
        return 1.0
    if kind == "step":
        return s.gamma ** (epoch // s.step_size)
    if kind == "multistep":
        return s.gamma ** bisect_right(sorted(s.milestones), epoch)
    if kind == "exponential":
        return s.gamma ** epoch
    t = min(step, total) / max(total, 1)
    if kind == "polynomial":
        return (1.0 - t) ** s.power
    if kind == "cosine":
        floor = s.eta_min / base_lr
        return floor + (1.0 - floor) * (1 + math.cos(math.pi * t)) / 2
    if kind == "cosine_restarts":
        t_cur, t_i = _cycle_position(step, s.cycle_epochs * spe, s.cycle_mult)
        floor = s.eta_min / base_lr
        return floor + (1.0 - floor) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
    if kind == "one_cycle":
        peak = (s.max_lr or base_lr) / base_lr
        start = peak / s.div_factor
        end = start / s.final_div_factor
        up = float(s.pct_start * total) - 1
        down = float(total) - 1
        if step <= up:
            return _anneal(s.anneal, start, peak, step / up if up > 0 else 1.0)
        return _anneal(s.anneal, peak, end, (step - up) / (down - up) if down > up else 1.0)
    raise ValueError(f"unknown schedule {kind!r}")


def _cycle_position(step: int, first: int, mult: int) -> tuple[int, int]:
    """(steps into the current cycle, length of the current cycle) for cycles first, first*mult, ..."""
    if mult == 1:
        return step % first, first
    length = first
    while step >= length:            # a handful of iterations: cycle lengths grow geometrically
        step -= length
        length *= mult
    return step, length


def cycle_end_steps(section, steps_per_epoch: int, total_steps: int) -> list[int]:
    """Step counts at which a cosine_restarts cycle is complete (the LR is at eta_min), up to total_steps."""
    end = warmup_steps(section, steps_per_epoch)
    length, out = section.cycle_epochs * steps_per_epoch, []
    while end + length <= total_steps:
        end += length
        out.append(end)
        length *= section.cycle_mult
    return out


def _anneal(how: str, a: float, b: float, pct: float) -> float:
    pct = min(max(pct, 0.0), 1.0)
    if how == "cos":
        return b + (a - b) * (1 + math.cos(math.pi * pct)) / 2
    return a + (b - a) * pct


def warmup_steps(section, steps_per_epoch: int) -> int:
    return int(round(section.warmup_epochs * steps_per_epoch))


def lr_factor(section, step: int, steps_per_epoch: int, total_steps: int, base_lr: float = 1.0) -> float:
    """Multiplier of the base LR at optimizer step `step` (0-based)."""
    w = warmup_steps(section, steps_per_epoch)
    rest = max(total_steps - w, 1)
    if step < w:
        # Ramps up to where the schedule starts (1 for most; max_lr / div_factor for one_cycle), like
        # torch's SequentialLR([LinearLR, schedule]), so the LR never jumps when the warmup ends.
        f0 = section.warmup_start_factor
        return (f0 + (1.0 - f0) * step / w) * _main_factor(section, 0, steps_per_epoch, rest, base_lr)
    return _main_factor(section, step - w, steps_per_epoch, rest, base_lr)


class Plateau:
    """Reduce-on-plateau state, with PyTorch's semantics (threshold rel/abs, patience, cooldown)."""

    def __init__(self, section, base_lr: float = 1.0) -> None:
        self.s, self.base_lr = section, base_lr
        self.scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self.cooldown = 0

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        t, rel = self.s.threshold, self.s.threshold_mode == "rel"
        if self.s.mode == "min":
            return value < (self.best * (1 - t) if rel else self.best - t)
        return value > (self.best * (1 + t) if rel else self.best + t)

    def update(self, value: float, base_lr: float) -> bool:
        """Record one epoch's monitored value; returns True when the LR was reduced."""
        if self._better(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown > 0:
            self.cooldown -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.s.patience:
            floor = self.s.min_lr / base_lr
            new = max(self.scale * self.s.factor, floor)
            reduced = self.scale - new > 1e-12
            self.scale, self.cooldown, self.bad_epochs = new, self.s.cooldown, 0
            return reduced
        return False

    def after_epoch(self, epoch: int, row: dict) -> None:
        """The loop's component event: the epoch's history row; its schedule.monitor column is consumed
        (the first parameter group's base LR sets the min_lr floor)."""
        self.update(monitored(row, self.s.monitor, "schedule.monitor"), self.base_lr)

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs, "cooldown": self.cooldown}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best = state["scale"], state["best"]
        self.bad_epochs, self.cooldown = state["bad_epochs"], state["cooldown"]


def swa_lr(step: int, *, start_step: int, anneal_steps: int, lr_start: float, swa_lr: float,
           strategy: str) -> float:
    """LR of optimizer step `step` (0-based) in the SWA phase, as torch's SWALR stepped once per step:
    lr_start at start_step, then annealed (cos or linear) to swa_lr over anneal_steps steps, then kept."""
    t = 1.0 if anneal_steps == 0 else min(max((step - start_step) / anneal_steps, 0.0), 1.0)
    alpha = t if strategy == "linear" else (1 - math.cos(math.pi * t)) / 2
    return swa_lr * alpha + lr_start * (1 - alpha)
