"""Schedules against PyTorch's schedulers (the oracle) and hand-computed values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwell.recipe import load_recipe
from trainwell.schedules import Plateau, lr_factor

SPE, EPOCHS = 5, 12
TOTAL = SPE * EPOCHS


def ours(overrides, base=0.1):
    s = load_recipe(None, {"optimizer.lr": base, **overrides}).schedule
    return [base * lr_factor(s, step, SPE, TOTAL, base_lr=base) for step in range(TOTAL)]


def torch_lrs(make, per="epoch", base=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = make(opt)
    out = []
    for step in range(TOTAL):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if per == "step" or (step + 1) % SPE == 0:
            sched.step()
    return out


S = torch.optim.lr_scheduler


@pytest.mark.parametrize("overrides, make, per", [
    ({"schedule.kind": "step", "schedule.step_size": 3, "schedule.gamma": 0.5},
     lambda o: S.StepLR(o, 3, 0.5), "epoch"),
    ({"schedule.kind": "multistep", "schedule.milestones": [2, 7], "schedule.gamma": 0.3},
     lambda o: S.MultiStepLR(o, [2, 7], 0.3), "epoch"),
    ({"schedule.kind": "exponential", "schedule.gamma": 0.8}, lambda o: S.ExponentialLR(o, 0.8), "epoch"),
    ({"schedule.kind": "cosine", "schedule.eta_min": 0.001},
     lambda o: S.CosineAnnealingLR(o, TOTAL, eta_min=0.001), "step"),
    ({"schedule.kind": "polynomial", "schedule.power": 2.0},
     lambda o: S.PolynomialLR(o, total_iters=TOTAL, power=2.0), "step"),
    ({"schedule.kind": "one_cycle", "schedule.max_lr": 0.5},
     lambda o: S.OneCycleLR(o, max_lr=0.5, total_steps=TOTAL, cycle_momentum=False), "step"),
    ({"schedule.kind": "one_cycle", "schedule.anneal": "linear", "schedule.pct_start": 0.4},
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=TOTAL, pct_start=0.4, anneal_strategy="linear",
                            cycle_momentum=False), "step"),
    ({"schedule.kind": "constant"}, lambda o: S.ConstantLR(o, factor=1.0), "step"),
])
def test_schedule_matches_torch(overrides, make, per):
    assert ours(overrides) == pytest.approx(torch_lrs(make, per), rel=1e-9, abs=1e-12)


def test_linear_warmup_then_schedule_by_hand():
    s = load_recipe(None, {"schedule.kind": "step", "schedule.step_size": 1, "schedule.gamma": 0.5,
                           "schedule.warmup_epochs": 1, "schedule.warmup_start_factor": 0.2}).schedule
    got = [lr_factor(s, k, 4, 12) for k in range(12)]
    # warmup: 0.2 + 0.8 * k / 4 for k < 4 ; then step decay per epoch counted after warmup
    assert got == pytest.approx([0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5])


def test_warmup_composes_with_cosine_and_ends_at_eta_min():
    s = load_recipe(None, {"schedule.kind": "cosine", "schedule.warmup_epochs": 2}).schedule
    got = [lr_factor(s, k, 5, 50) for k in range(51)]
    assert got[9] < got[10] == pytest.approx(1.0)
    assert got[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(got[10:], got[11:]))


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40), st.integers(0, 4), st.integers(0, 3),
       st.sampled_from(["rel", "abs"]), st.sampled_from(["min", "max"]))
@settings(max_examples=60, deadline=None)
def test_plateau_matches_torch_reduce_on_plateau(values, patience, cooldown, threshold_mode, mode):
    base = 1.0
    s = load_recipe(None, {"schedule.kind": "reduce_on_plateau", "schedule.patience": patience,
                           "schedule.cooldown": cooldown, "schedule.factor": 0.5, "schedule.min_lr": 0.01,
                           "schedule.threshold": 0.1, "schedule.threshold_mode": threshold_mode,
                           "schedule.mode": mode}).schedule
    plateau = Plateau(s)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    ref = S.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=patience, threshold=0.1,
                              threshold_mode=threshold_mode, cooldown=cooldown, min_lr=0.01)
    for v in values:
        plateau.update(v, base)
        ref.step(v)
        assert max(base * plateau.scale, 0.01) == pytest.approx(opt.param_groups[0]["lr"])


def test_plateau_state_round_trips():
    s = load_recipe(None, {"schedule.kind": "reduce_on_plateau", "schedule.patience": 1}).schedule
    a = Plateau(s)
    for v in (1.0, 0.9, 0.95, 0.97):
        a.update(v, 1.0)
    b = Plateau(s)
    b.load_state_dict(a.state_dict())
    for v in (0.99, 0.98, 0.5, 0.6, 0.7):
        assert a.update(v, 1.0) == b.update(v, 1.0)
        assert a.scale == b.scale
    # by hand: reductions after 0.97 (2 bad epochs > patience 1), after 0.98, and after 0.7
    assert math.isclose(a.scale, 0.001)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.floats(0.0, 0.05), st.integers(1, 60))
@settings(max_examples=80, deadline=None)
def test_cosine_restarts_matches_torch_warm_restarts(cycle_epochs, mult, spe, eta_min, total):
    base = 0.1
    s = load_recipe(None, {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": cycle_epochs,
                           "schedule.cycle_mult": mult, "schedule.eta_min": eta_min}).schedule
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = S.CosineAnnealingWarmRestarts(opt, T_0=cycle_epochs * spe, T_mult=mult, eta_min=eta_min)
    for step in range(total):
        assert base * lr_factor(s, step, spe, total, base_lr=base) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


def test_cycle_ends_are_where_the_rate_restarts():
    from trainwell.schedules import cycle_end_steps

    s = load_recipe(None, {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 2,
                           "schedule.cycle_mult": 2, "schedule.warmup_epochs": 1}).schedule
    spe, total = 3, 3 * 16
    ends = cycle_end_steps(s, spe, total)
    assert ends == [3 + 6, 3 + 6 + 12, 3 + 6 + 12 + 24]      # warmup, then cycles of 2, 4, 8 epochs
    lrs = [lr_factor(s, k, spe, total) for k in range(total)]
    for end in ends[:-1]:
        assert lrs[end] == pytest.approx(1.0) and lrs[end - 1] < 0.1
