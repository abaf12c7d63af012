"""lr-range: the LR range test (Smith 2017), and the `trainwell fit --find-lr` behind it.

The recipe's Setup (build.py: model, data, loss, optimizer, penalties, clipping, augmentation)
takes STEPS steps of the run's own `train_step` with the learning rate growing exponentially from
START_LR to END_LR (one step per `train.accumulate` batches, reshuffling when the training split
runs out), so the LR it suggests is measured on the step that will train. While running, the batch loss is smoothed by a bias-corrected exponential
average and the test stops when that exceeds DIVERGE × its best value or turns non-finite. The
exponential average lags behind the growing LR (by ~1/(1-BETA) steps, a good part of a decade),
so the curve that is drawn and read is a centred moving average of the batch losses instead.
Four rules read a learning rate off it, each within the part before the stop:

    steepest   where the smoothed loss falls fastest per decade of LR
    valley     2/3 of the way (in log LR) along the longest stretch over which the loss keeps falling
    min/10     a tenth of the LR at the lowest smoothed loss
    min        the LR at the lowest smoothed loss

`fit --find-lr` uses the rule measured to land nearest the best constant rate for the optimizer
family (`default_rule`; benchmarks/lr_rules.py, docs/conformance.md): steepest for plain SGD, min
for SGD with momentum and the adaptive methods.

Everything is seeded by the recipe's seed (initialization, batch order, dropout) and the global
RNG state is left as it was, so a run that follows (`fit --find-lr`) is the same as without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..build import build
from ..errors import TrainwellError
from ..loop import Callback
from ..prepare import prepare_data
from ..recipe import Recipe, load_recipe
from ..rundir import atomic_write_bytes, write_json
from ..step import train_step
from .page import Figure, LabResult, png

RULES = ("steepest", "valley", "min/10", "min")
START_LR, END_LR, STEPS, QUICK_STEPS, BETA, DIVERGE, WINDOW = 1e-6, 10.0, 150, 80, 0.9, 4.0, 9
SKIP_START = 5          # the first smoothed points still carry the initialization's noise


@dataclass
class RangeTest:
    lrs: np.ndarray             # LR of each step taken
    losses: np.ndarray          # raw batch losses
    smooth: np.ndarray          # centred moving average of the batch losses (WINDOW steps)
    stop_reason: str
    diverged_lr: float | None   # LR of the step that stopped the test (None: reached END_LR)
    suggestions: dict[str, float]

    def record(self, rule: str | None = None) -> dict[str, Any]:
        return {"rule": rule, "lr": self.suggestions.get(rule) if rule else None, "suggestions": self.suggestions,
                "stop_reason": self.stop_reason, "diverged_lr": self.diverged_lr,
                "settings": {"start_lr": START_LR, "end_lr": END_LR, "beta": BETA, "diverge": DIVERGE,
                             "window": WINDOW},
                "lrs": self.lrs.tolist(), "losses": self.losses.tolist(), "smooth": self.smooth.tolist()}


def range_test(recipe: Recipe, steps: int = STEPS) -> RangeTest:
    """Run the LR range test on the recipe's model and data, seeded by recipe.seed."""

    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        device = torch.device("cpu")
        setup = build(recipe, prepare_data(recipe, None, device), device)
        train, bs, acc = setup.train, min(recipe.train.batch_size, len(setup.train)), recipe.train.accumulate
        perm, at = torch.randperm(len(train), generator=setup.shuffle), 0
        lrs, losses = [], []
        avg, best, reason, diverged = 0.0, math.inf, f"reached end_lr {END_LR:g}", None
        setup.model.train()
        for i in range(steps):
            lr = START_LR * (END_LR / START_LR) ** (i / (steps - 1))
            for g in setup.optimizer.param_groups:
                g["lr"] = lr
            batch_losses = []
            for k in range(acc):
                if at + bs > len(train):
                    perm, at = torch.randperm(len(train), generator=setup.shuffle), 0
                idx = perm[at:at + bs]
                at += bs
                batch_losses.append(train_step(setup, train.x[idx], train.y[idx], close=k == acc - 1).loss)
            value = float(torch.stack(batch_losses).detach().mean())
            avg = BETA * avg + (1 - BETA) * value
            s = avg / (1 - BETA ** (i + 1))
            if not math.isfinite(s) or s > DIVERGE * best:
                reason = ("loss not finite" if not math.isfinite(s) else
                          f"smoothed loss {s:.3g} > {DIVERGE:g} × best {best:.3g}") + f" at lr {lr:.3g}"
                diverged = lr
                break
            best = min(best, s)
            lrs.append(lr)
            losses.append(value)
    lrs_a, losses_a = np.array(lrs), np.array(losses)
    smooth = centred_average(losses_a, WINDOW)
    return RangeTest(lrs_a, losses_a, smooth, reason, diverged, suggest(lrs_a, smooth))


def centred_average(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of y over a window centred on each point (narrower at the ends): no lag."""
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    lo = np.maximum(np.arange(len(y)) - half, 0)
    hi = np.minimum(np.arange(len(y)) + half + 1, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def _longest_fall(y: np.ndarray) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence of y (O(n²), n ~ 100)."""
    n = len(y)
    length, prev = [1] * n, [-1] * n
    for j in range(n):
        for i in range(j):
            if y[i] > y[j] and length[i] + 1 > length[j]:
                length[j], prev[j] = length[i] + 1, i
    last = int(np.argmax(length))
    first = last
    while prev[first] != -1:
        first = prev[first]
    return first, last


def suggest(lrs: np.ndarray, smooth: np.ndarray) -> dict[str, float]:
    """The three rules' learning rates, read off the curve before the stop."""
    if len(lrs) < SKIP_START + 3:
        return {}
    lo = SKIP_START
    log_lr = np.log10(lrs)
    slope = np.gradient(smooth, log_lr)
    first, last = _longest_fall(smooth[lo:])
    valley = lo + first + (2 * (last - first)) // 3
    lowest = float(lrs[lo + int(np.argmin(smooth[lo:]))])
    return {"steepest": float(lrs[lo + int(np.argmin(slope[lo:]))]),
            "valley": float(lrs[valley]),
            "min/10": lowest / 10,
            "min": lowest}


def default_rule(optimizer) -> str:
    """The rule `fit --find-lr` uses for an optimizer section. Measured (benchmarks/lr_rules.py: digits
    and spirals, 2 seeds, against the best of 16 constant rates): for plain SGD `steepest` landed
    within 3x of the best rate most often, for SGD with momentum and Adam `min` did; valley and min/10
    sat 5-500x below it. The adaptive methods not measured (AdaGrad, RMSprop, Adadelta) take Adam's."""
    if optimizer.kind == "sgd" and optimizer.momentum == 0:
        return "steepest"
    return "min"


def figure(tests: dict[int, RangeTest], main_seed: int) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    main = tests[main_seed]
    for seed, t in tests.items():
        if seed != main_seed:
            ax.plot(t.lrs, t.smooth, color="#999", lw=0.8, alpha=0.7)
    ax.plot(main.lrs, main.losses, color="#1f77b4", lw=0.6, alpha=0.35, label="batch loss")
    ax.plot(main.lrs, main.smooth, color="#1f77b4", lw=2, label=f"smoothed loss (seed {main_seed})")
    if len(tests) > 1:
        ax.plot([], [], color="#999", lw=0.8, label="smoothed loss, other seeds")
    for (rule, lr), colour in zip(main.suggestions.items(), ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e")):
        ax.axvline(lr, color=colour, ls="--", lw=1.2, label=f"{rule}: {lr:.2g}")
    if main.diverged_lr:
        ax.axvline(main.diverged_lr, color="black", ls=":", lw=1, label=f"stopped (diverging) at {main.diverged_lr:.2g}")
    ax.set_xscale("log")
    top = float(np.quantile(main.smooth, 0.98)) if len(main.smooth) else 1.0
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test: loss while the LR grows exponentially, one step per batch", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    return png(fig)


def _spread_figure(tests: dict[int, RangeTest]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k, rule in enumerate(RULES):
        vals = [t.suggestions[rule] for t in tests.values() if rule in t.suggestions]
        # spread the dots sideways so seeds with the same suggestion stay visible
        ax.scatter(k + np.linspace(-0.12, 0.12, len(vals)), vals, s=30, alpha=0.8)
        if vals:
            ax.text(k + 0.18, float(np.median(vals)), f"max/min ×{max(vals) / min(vals):.2g}", fontsize=8,
                    va="center")
    ax.set_xticks(range(len(RULES)), RULES)
    ax.set_xlim(-0.5, len(RULES) - 0.2)
    ax.set_yscale("log")
    ax.set_ylabel("suggested LR (log scale)")
    ax.set_title(f"Suggestions over {len(tests)} seeds (one dot per seed)", fontsize=10)
    ax.grid(alpha=0.3, which="both", axis="y")
    return png(fig)


def run(options) -> LabResult:
    base = load_recipe(options.recipe, options.overrides)
    n_seeds = options.seeds or (3 if options.quick else 5)
    steps = QUICK_STEPS if options.quick else STEPS
    seeds = [options.seed + k for k in range(n_seeds)]
    tests = {s: range_test(base.replace(seed=s), steps) for s in seeds}
    main = tests[options.seed]
    rows = []
    for rule in RULES:
        vals = np.array([t.suggestions[rule] for t in tests.values() if rule in t.suggestions])
        rows.append([rule, main.suggestions.get(rule), float(vals.min()), float(np.median(vals)), float(vals.max()),
                     float(vals.max() / vals.min()), float(np.exp(np.log(vals).std()))])
    return LabResult(
        lab="lr-range", title="LR range test",
        summary=(f"The recipe's model and data train for up to {steps} steps with the LR growing from {START_LR:g} "
                 f"to {END_LR:g}; the smoothed loss against the LR, three rules' suggestions, and how much each "
                 f"suggestion moves over {n_seeds} seeds (seed 001, 'Choosing the right learning rate'). The same "
                 "seed gives the same curve and suggestions."),
        columns=["rule", f"lr (seed {options.seed})", "min over seeds", "median", "max", "max/min",
                 "geometric std"],
        rows=rows,
        figures=[Figure("lr_range", "Training loss (faint: per batch; bold: smoothed) against the LR on a log axis, "
                        "other seeds in grey; dashed lines: the three suggestions; dotted: where the test stopped "
                        "because the loss diverged.", figure(tests, options.seed)),
                 Figure("lr_range_spread", "Each rule's suggestion for every seed (log scale): the spread users of "
                        "LR finders see from run to run.", _spread_figure(tests))],
        settings={"steps": steps, "seeds": ", ".join(map(str, seeds)), "start_lr": START_LR, "end_lr": END_LR,
                  "stop: EMA beta": BETA, "stop: divergence factor": DIVERGE, "curve: centred window": WINDOW, "recipe": options.recipe or "(built-in)"},
        notes=[f"seed {s}: {t.stop_reason}" for s, t in tests.items()],
        series={str(s): t.record() for s, t in tests.items()})


def write_record(test: RangeTest, rule: str, run_dir: Path) -> None:
    """lr_find.json and lr_find.png in a run folder (what `fit --find-lr` chose, and why)."""

    write_json(run_dir / "lr_find.json", test.record(rule))
    atomic_write_bytes(run_dir / "lr_find.png", figure({0: test}, 0))


def find_lr(recipe: Recipe, rule: str = "auto"):
    """For `fit --find-lr`: (suggested lr, the test, a loop callback that records the test in the run
    folder, the rule used). `auto`: the optimizer family's default rule."""

    if rule == "auto":
        rule = default_rule(recipe.optimizer)
    test = range_test(recipe)
    if rule not in test.suggestions:
        raise TrainwellError(f"--find-lr: the range test stopped after {len(test.lrs)} steps ({test.stop_reason}), "
                             "too early to suggest a learning rate; set optimizer.lr by hand")

    class RecordRangeTest(Callback):
        def fit_start(self, trainer) -> None:
            if trainer.run_dir is not None:
                write_record(test, rule, Path(trainer.run_dir))

    return test.suggestions[rule], test, RecordRangeTest(), rule
