"""lr-curves: loss per epoch for a too-low, a good, a too-high and a far-too-high learning rate
(seed 001, "Choosing the right learning rate", the figure after CS231n).

The rates come from the LR range test on the same recipe (see lr_range.py): the good one is its
valley rule, the too-low one that ÷ 30, the far-too-high one the LR at which the test's loss
diverged (× 100 of the good one if it never did) and the too-high one a third of that. `--lrs`
gives the rates instead. Each rate trains with trainwell's own `fit` on the same recipe and seed (same split,
initialization and batch order), constant LR, no early stopping. What each curve does is read off
its numbers (see `verdict`), and every caption sentence is computed from the table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..api import fit
from ..errors import TrainwellError
from ..figures import plt
from ..recipe import load_recipe
from .lr_range import QUICK_STEPS, STEPS, range_test
from .page import Figure, LabResult
from .params import Param

# The lab's set-up on top of the recipe: a plain run whose only difference between the curves is the LR.
SETUP: dict[str, Any] = {
    "schedule.kind": "constant", "schedule.warmup_epochs": 0, "stopping.enabled": False,
    "checkpoint.best": False, "checkpoint.last": False, "watch.probes": False, "watch.doctor": False,
    "watch.report": False, "train.device": "cpu",
}
LOW, HIGH = 1 / 30, 1 / 3      # too low: the good rate ÷ 30; too high: a third of the rate where the test diverged

PARAMS = {
    "lrs": Param("floats", [], "learning rates to train (default from the range test: its valley rate ÷30 and ×1, "
                 "the rate where its loss diverged ÷3 and ×1)",
                 low=0, low_open=True, high=1000),
    "epochs": Param("int", 20, "epochs per rate", low=2, high=500, quick=6),
}


def check_params(p: dict) -> None:
    if len(p["lrs"]) > 5:
        raise TrainwellError(f"lab lr-curves: --lrs got {len(p['lrs'])} rates, expected at most 5 (one line each)")


def verdict(losses: list[float], best_final: float, untrained: float) -> str:
    """What one curve does, from its numbers: diverges, unstable, plateaus high, too slow, or good.
    `untrained` is the loss of the untrained network (the range test's first steps)."""
    first, last = losses[0], losses[-1]
    if not all(math.isfinite(v) for v in losses) or last >= min(first, untrained):
        return "diverges"
    if max(losses) > 1.5 * untrained:
        return "unstable"
    if last <= 1.25 * best_final:
        return "good"
    falling = len(losses) >= 4 and last < 0.97 * losses[-4]
    return "too slow" if falling else "plateaus high"


def _describe(r: dict) -> str:
    v = r["verdict"]
    if v == "diverges":
        if not math.isfinite(r["final loss"]):
            return "diverges: the loss is not finite"
        return (f"diverges: the loss ends at {r['final loss']:.3g}, not below its first epoch's {r['first loss']:.3g} "
                f"or the untrained network's {r['untrained']:.3g}")
    if v == "unstable":
        return (f"unstable: the loss jumps to {r['max loss']:.3g}, above the untrained network's {r['untrained']:.3g}, "
                f"before coming down to {r['final loss']:.3g}")
    if v == "good":
        return f"good: final loss {r['final loss']:.3g}, within ×1.25 of the lowest"
    if v == "too slow":
        return (f"too slow: still falling at the end ({r['final loss']:.3g}, ×{r['× lowest final']:.2g} the lowest "
                "final loss)")
    return (f"plateaus high: stops improving at {r['final loss']:.3g} (×{r['× lowest final']:.2g} the lowest final "
            "loss)")


def captions(records: list[dict], suggested: float | None) -> str:
    src = (f"the range test's valley rate {suggested:.3g}" if suggested is not None else "the given rates")
    return ("Training loss per epoch for each learning rate (log scale), the same recipe and seed; good rate: "
            f"{src}. " + "; ".join(f"lr {r['lr']:.3g} {_describe(r)}" for r in records) + ".")


def _figure(curves: dict[float, list[float]], records: list[dict]):
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    colours = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd")     # one per rate, lowest first
    for r, colour in zip(sorted(records, key=lambda r: r["lr"]), colours):
        y = np.array(curves[r["lr"]], dtype=float)
        ax.plot(np.arange(1, len(y) + 1), np.where(np.isfinite(y), y, np.nan), marker="o", ms=3, lw=1.6,
                color=colour, label=f"lr {r['lr']:.3g} ({r['role']}): {r['verdict']}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (log scale)")
    ax.axhline(records[0]["untrained"], color="black", ls=":", lw=1, label="untrained network")
    ax.set_title("Loss per epoch for each learning rate (after the lecture's CS231n figure)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def run(options) -> LabResult:
    p = options.params
    base = load_recipe(options.recipe, {**SETUP, "seed": options.seed, "train.epochs": p["epochs"],
                                        **options.overrides})
    suggested = None
    test = range_test(base, steps=QUICK_STEPS if options.quick else STEPS)
    untrained = float(test.smooth[0])
    if p["lrs"]:
        lrs, roles = list(p["lrs"]), ["given"] * len(p["lrs"])
    else:
        suggested = test.suggestions.get("valley") or base.optimizer.lr
        blew = test.diverged_lr or 100 * suggested
        lrs = [suggested * LOW, suggested, blew * HIGH, blew]
        roles = ["valley ÷30", "valley", "diverged ÷3" if test.diverged_lr else "valley ×33",
                 "diverged" if test.diverged_lr else "valley ×100"]
    curves = {}
    for lr in lrs:
        run = fit(base.replace(**{"optimizer.lr": lr}), out=False, quiet=True)
        curves[lr] = [float(h["train_loss"]) if h.get("train_loss") is not None else float("nan")
                      for h in run.history]
    finals = [c[-1] for c in curves.values() if all(math.isfinite(v) for v in c) and c[-1] < min(c[0], untrained)]
    best_final = min(finals) if finals else float("nan")
    columns = ["lr", "role", "untrained", "first loss", "max loss", "min loss", "final loss", "× lowest final",
               "verdict"]
    rows = []
    for lr, role in zip(lrs, roles):
        c = curves[lr]
        finite = [v for v in c if math.isfinite(v)]
        rows.append([lr, role, untrained, c[0], max(finite) if finite else float("nan"),
                     min(finite) if finite else float("nan"), c[-1], c[-1] / best_final if finals else float("nan"),
                     verdict(c, best_final, untrained)])
    records = [dict(zip(columns, r)) for r in rows]
    caption = captions(records, suggested)
    return LabResult(
        lab="lr-curves", title=f"loss per epoch for {len(lrs)} learning rates, {p['epochs']} epochs",
        summary=("The lecture's figure: the loss of the same network over the epochs for a too-low, a good, a "
                 "too-high and a far-too-high learning rate. The good one comes from the LR range test on the same "
                 "recipe (valley rule); the curves are trained by fit with a constant LR and no early stopping, and "
                 "each verdict is read off its own numbers."),
        columns=columns, rows=rows, figures=[Figure("lr_curves", caption, _figure(curves, records))],
        settings={"recipe": options.recipe or "(built-in)", "epochs": p["epochs"], "seed": options.seed,
                  "lrs": ", ".join(f"{lr:.3g}" for lr in lrs),
                  "good rate": f"{suggested:.3g} (range test, valley)" if suggested is not None else "—"},
        notes=[f"lr {r['lr']:.3g} ({r['role']}): {_describe(r)}" for r in records],
        series={"curves": {f"{lr:.6g}": c for lr, c in curves.items()}})
