"""Every schedule kind x warmup (x plateau settings), end to end through `fit`: the LR of every
optimizer step equals torch's schedulers composed the torch way, SequentialLR([LinearLR, X]).

The reference is built here from torch.optim.lr_scheduler only; trainwell's LR is read by a
global optimizer-step hook (what the optimizer really used). Per-epoch kinds (step, multistep,
exponential) are torch's StepLR / MultiStepLR stepped once per optimizer step with their epoch
counts multiplied by the steps per epoch: the same as stepping them once per epoch, and it lets
SequentialLR hand over at a warmup that ends inside an epoch. reduce_on_plateau is torch's
ReduceLROnPlateau fed the run's own monitored history, after the warmup's LinearLR.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from helpers import TINY, combinations, step_lrs

import trainwell as tw

S = torch.optim.lr_scheduler
BASE_LR, EPOCHS = 0.1, 8

KINDS = {
    "constant": {},
    "step": {"schedule.step_size": 3, "schedule.gamma": 0.5},
    "multistep": {"schedule.milestones": [2, 5], "schedule.gamma": 0.3},
    "exponential": {"schedule.gamma": 0.8},
    "polynomial": {"schedule.power": 2.0},
    "cosine": {"schedule.eta_min": 0.002},
    "cosine_restarts": {"schedule.cycle_epochs": 2, "schedule.cycle_mult": 2, "schedule.eta_min": 0.001},
    "one_cycle": {},
    "one_cycle_max": {"schedule.max_lr": 0.4, "schedule.anneal": "linear", "schedule.pct_start": 0.4},
    "reduce_on_plateau": {"schedule.patience": 0, "schedule.threshold": 0.15, "schedule.factor": 0.5},
    "reduce_on_plateau_cool": {"schedule.patience": 1, "schedule.cooldown": 1, "schedule.threshold": 0.02,
                               "schedule.threshold_mode": "abs", "schedule.factor": 0.3},
    "reduce_on_plateau_max": {"schedule.monitor": "val_accuracy", "schedule.patience": 0,
                              "schedule.threshold": 0.5, "schedule.factor": 0.5},
}
WARMUPS = [0.0, 1.5, 2.0]          # none; one ending inside an epoch; one on an epoch boundary


def recipe(kind: str, warmup: float) -> dict:
    return {**TINY, "optimizer.kind": "sgd", "optimizer.lr": BASE_LR, "train.epochs": EPOCHS,
            "stopping.enabled": False, "schedule.kind": kind.split("_max")[0].split("_cool")[0],
            "schedule.warmup_epochs": warmup, "schedule.warmup_start_factor": 0.05, **KINDS[kind]}


def main_scheduler(opt, kind: str, o: dict, spe: int, rest: int):
    if kind == "constant" or kind.startswith("reduce_on_plateau"):
        return S.ConstantLR(opt, factor=1.0, total_iters=0)
    if kind == "step":
        return S.StepLR(opt, o["schedule.step_size"] * spe, o["schedule.gamma"])
    if kind == "multistep":
        return S.MultiStepLR(opt, [m * spe for m in o["schedule.milestones"]], o["schedule.gamma"])
    if kind == "exponential":       # ExponentialLR stepped once per epoch
        return S.StepLR(opt, spe, o["schedule.gamma"])
    if kind == "polynomial":
        return S.PolynomialLR(opt, total_iters=rest, power=o["schedule.power"])
    if kind == "cosine":
        return S.CosineAnnealingLR(opt, T_max=rest, eta_min=o["schedule.eta_min"])
    if kind == "cosine_restarts":
        return S.CosineAnnealingWarmRestarts(opt, T_0=o["schedule.cycle_epochs"] * spe,
                                             T_mult=o["schedule.cycle_mult"], eta_min=o["schedule.eta_min"])
    if kind.startswith("one_cycle"):
        return S.OneCycleLR(opt, max_lr=o.get("schedule.max_lr", BASE_LR), total_steps=rest,
                            pct_start=o.get("schedule.pct_start", 0.3),
                            anneal_strategy=o.get("schedule.anneal", "cos"), cycle_momentum=False)
    raise AssertionError(kind)


def torch_lrs(kind: str, o: dict, spe: int, monitored: list[float]) -> tuple[list[float], list[float]]:
    """(the LR of each step, the LR after each epoch's last step, before the epoch-end plateau
    decision) under torch's schedulers; `monitored`: the run's value per epoch."""
    total = spe * EPOCHS
    w = round(o["schedule.warmup_epochs"] * spe)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    plateau = kind.startswith("reduce_on_plateau")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # SequentialLR's step(0) hand-over warns in some versions
        main = main_scheduler(opt, kind, o, spe, total - w)
        sched = main
        if w:
            warm = S.LinearLR(opt, start_factor=o["schedule.warmup_start_factor"], end_factor=1.0, total_iters=w)
            sched = warm if plateau else S.SequentialLR(opt, [warm, main], milestones=[w])
        rop = None
        if plateau:
            mode = "max" if o.get("schedule.monitor") == "val_accuracy" else "min"
            rop = S.ReduceLROnPlateau(opt, mode=mode, factor=o["schedule.factor"], patience=o["schedule.patience"],
                                      threshold=o["schedule.threshold"],
                                      threshold_mode=o.get("schedule.threshold_mode", "rel"),
                                      cooldown=o.get("schedule.cooldown", 0))
        out, epoch_end = [], []
        for step in range(total):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if step + 1 < total and (not plateau or step + 1 <= w):
                sched.step()
            if (step + 1) % spe == 0:
                epoch_end.append(opt.param_groups[0]["lr"])
                if rop is not None:
                    rop.step(monitored[(step + 1) // spe - 1])
    return out, epoch_end


def check(kind: str, warmup: float) -> None:
    o = recipe(kind, warmup)
    with step_lrs() as ours:
        run = tw.fit(None, out=False, quiet=True, **o)
    assert len(ours) % EPOCHS == 0
    spe = len(ours) // EPOCHS
    column = o.get("schedule.monitor", "val_loss")
    monitored = [row[column] for row in run.history]
    ref, epoch_end = torch_lrs(kind, o, spe, monitored)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-12), [
        (k, a, b) for k, (a, b) in enumerate(zip(ours, ref)) if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)]
    # The history's `lr` column: the LR after the epoch's last step, before a plateau reduction at
    # its end (the next epoch starts from the reduced one). The last epoch's is not a step's LR.
    assert [row["lr"] for row in run.history[:-1]] == pytest.approx(epoch_end[:-1], rel=1e-6)


@pytest.mark.parametrize("kind, warmup", combinations({"kind": list(KINDS), "warmup": WARMUPS}, fast=8))
def test_step_lr_equals_torch_schedulers(kind, warmup):
    check(kind, warmup)


def test_one_cycle_warmup_ramps_into_the_cycle_without_a_drop():
    """The README's combination (issue 18, defect 1): the LR never falls when the warmup hands over."""
    o = recipe("one_cycle", 1.0)
    with step_lrs() as ours:
        tw.fit(None, out=False, quiet=True, **o)
    spe = len(ours) // EPOCHS
    start = BASE_LR / 25                      # max_lr / div_factor, where the cycle starts
    assert ours[spe] == pytest.approx(start)
    assert all(a < b for a, b in zip(ours[:spe + 1], ours[1:spe + 1]))   # rising through the hand-over
    assert 0.99 * BASE_LR < max(ours) <= BASE_LR
