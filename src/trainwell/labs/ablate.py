"""ablate RECIPE: the recipe as baseline, then one variant per technique switched off (or on).

Like the comparison tables of seed 003 (Mixup, Cutout, CutMix against a baseline): every variant
is trained with trainwell's own `fit` for the same seeds (recipe.seed, +1, +2, ...), so variant
and baseline share each seed's split, initialization and batch order, and the difference to the
baseline is taken seed by seed. A technique that the recipe uses is switched off; a technique from
the short "worth trying" list that it does not use is switched on with a common setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..api import fit
from ..data.sources import load_source
from ..figures import plt
from ..losses import resolve_kind
from ..recipe import Recipe, load_recipe
from .page import Figure, LabResult, png

# Switched off for speed only: none of these changes what is trained.
QUIET = {"watch.probes": False, "watch.doctor": False, "watch.report": False, "watch.tensorboard": False}


@dataclass(frozen=True)
class Technique:
    name: str
    used: Callable[[Recipe], bool]
    off: dict[str, Any]
    on: dict[str, Any] | None = None                 # None: only ever switched off
    applies: Callable[[Recipe], bool] = lambda r: True


def _cross_entropy(r: Recipe) -> bool:
    """Label smoothing needs the cross-entropy loss; `auto` picks it for multiclass data only."""

    task = r.data.task if r.data.task != "auto" else load_source(r.data, r.seed).task
    return resolve_kind(r.loss.kind, task) == "cross_entropy"


TECHNIQUES = (
    Technique("dropout", lambda r: r.model.dropout > 0, {"model.dropout": 0.0}, {"model.dropout": 0.2}),
    Technique("DropConnect", lambda r: getattr(r.model, "dropconnect", 0) > 0, {"model.dropconnect": 0.0},
              applies=lambda r: r.model.kind == "mlp"),
    Technique("batch norm", lambda r: r.model.norm == "batch", {"model.norm": "none"}, {"model.norm": "batch"}),
    Technique("layer norm", lambda r: r.model.norm == "layer", {"model.norm": "none"}),
    Technique("weight decay", lambda r: r.optimizer.weight_decay > 0, {"optimizer.weight_decay": 0.0},
              {"optimizer.weight_decay": 0.01}),
    Technique("L2 penalty", lambda r: r.regularization.l2 > 0, {"regularization.l2": 0.0}),
    Technique("L1 penalty", lambda r: r.regularization.l1 > 0, {"regularization.l1": 0.0}),
    Technique("label smoothing", lambda r: r.loss.label_smoothing > 0, {"loss.label_smoothing": 0.0},
              {"loss.label_smoothing": 0.1}, applies=_cross_entropy),
    Technique("early stopping", lambda r: r.stopping.enabled, {"stopping.enabled": False},
              {"stopping.enabled": True}),
    Technique("LR schedule", lambda r: r.schedule.kind != "constant", {"schedule.kind": "constant"},
              {"schedule.kind": "cosine"}),
    Technique("warmup", lambda r: r.schedule.warmup_epochs > 0, {"schedule.warmup_epochs": 0.0}),
    Technique("gradient clipping", lambda r: r.train.clip_norm is not None or r.train.clip_value is not None,
              {"train.clip_norm": None, "train.clip_value": None}),
    Technique("noise augmentation", lambda r: r.data.augment.noise_std > 0, {"data.augment.noise_std": 0.0}),
    Technique("mixup", lambda r: r.data.augment.mixup_alpha > 0, {"data.augment.mixup_alpha": 0.0}),
    Technique("cutmix", lambda r: r.data.augment.cutmix_alpha > 0, {"data.augment.cutmix_alpha": 0.0}),
    Technique("cutout", lambda r: r.data.augment.cutout_size > 0, {"data.augment.cutout_size": 0}),
    Technique("random crop", lambda r: r.data.augment.crop_padding > 0, {"data.augment.crop_padding": 0}),
    Technique("flips", lambda r: r.data.augment.hflip > 0 or r.data.augment.vflip > 0,
              {"data.augment.hflip": 0.0, "data.augment.vflip": 0.0}),
    Technique("EMA of weights", lambda r: r.train.average.kind == "ema", {"train.average": {"kind": "none"}}),
    Technique("SWA", lambda r: r.train.average.kind == "swa", {"train.average": {"kind": "none"}}),
)


def variants(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """name -> overrides: each applicable technique switched off if used, on if it has a default."""
    out: dict[str, dict[str, Any]] = {}
    for t in TECHNIQUES:
        if not t.applies(recipe):
            continue
        if t.used(recipe):
            out[f"− {t.name}"] = t.off
        elif t.on is not None:
            out[f"+ {t.name}"] = t.on
    return out


def _apply(recipe: Recipe, change: dict[str, Any]) -> Recipe:
    raw = recipe.to_dict()
    for key, value in change.items():
        if key == "schedule.kind":        # another kind: keep only the keys every schedule has (warmup)
            raw["schedule"] = {"kind": value, **{k: raw["schedule"][k] for k in ("warmup_epochs",
                                                                                 "warmup_start_factor")}}
            continue
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return Recipe.from_dict({k: v for k, v in raw.items() if v is not None})


def metric_name(task: str) -> str:
    return "r2" if task == "regression" else "accuracy"


def _fit(recipe: Recipe) -> dict[str, Any]:
    run = fit(recipe, out=False, quiet=True)
    m = metric_name(run.metrics["task"])
    return {"val": run.metrics["val"].get(m), "test": run.metrics["test"].get(m), "metric": m,
            "epochs": run.metrics["stopped_epoch"]}


def _figure(names: list[str], per_seed: dict[str, dict[str, list[float]]], metric: str) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.6), sharey=True)
    y = np.arange(len(names))
    for ax, split in zip(axes, ("val", "test")):
        base = np.array(per_seed[names[0]][split], dtype=float)
        for i, name in enumerate(names):
            d = np.array(per_seed[name][split], dtype=float) - base
            m = d.mean()
            colour = "black" if i == 0 else ("#2ca02c" if m > 1e-12 else "#d62728" if m < -1e-12 else "#777")
            ax.scatter(d, np.full(len(d), i), s=14, color=colour, alpha=0.5)
            ax.errorbar(d.mean(), i, xerr=d.std(ddof=1) if len(d) > 1 else 0, fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", lw=1)
        ax.set_xlabel(f"{split} {metric} − baseline (same seed)")
        ax.set_title(f"{split} split: difference to the baseline, mean ± std over seeds (dots: seeds)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y, names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return png(fig)


def _std(a: np.ndarray) -> float:
    """Sample standard deviation over the seeds (0 for a single seed)."""
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run(options) -> LabResult:
    overrides = dict(options.overrides)
    base = load_recipe(options.recipe, {**overrides, **QUIET})
    if options.quick:
        base = base.replace(**{"train.epochs": min(base.train.epochs, 5)})
    n = options.seeds or (2 if options.quick else 3)
    seeds = [base.seed + k for k in range(n)]
    changes = {"baseline": {}, **variants(base)}
    per_seed: dict[str, dict[str, list[float]]] = {}
    metric = "accuracy"
    for name, change in changes.items():
        recipe = _apply(base, change)
        fits = [_fit(recipe.replace(seed=s)) for s in seeds]
        metric = fits[0]["metric"]
        per_seed[name] = {"val": [f["val"] for f in fits], "test": [f["test"] for f in fits],
                          "epochs": [f["epochs"] for f in fits]}
    rows = []
    for name, change in changes.items():
        v, t = (np.array(per_seed[name][s], dtype=float) for s in ("val", "test"))
        bv, bt = (np.array(per_seed["baseline"][s], dtype=float) for s in ("val", "test"))
        rows.append([name, ", ".join(f"{k}={v_}" for k, v_ in change.items()) or "—",
                     float(v.mean()), _std(v), float(t.mean()), _std(t), float((v - bv).mean()), float((t - bt).mean())])
    names = list(changes)
    return LabResult(
        lab="ablate", title=f"ablation of {options.recipe or 'the built-in recipe'}",
        summary=(f"The recipe as baseline and {len(names) - 1} variants, each with one technique switched off (−) "
                 f"or on (+), every one trained for seeds {', '.join(map(str, seeds))}. The {metric} on the "
                 "validation and the test split, mean ± std over the seeds, and the mean per-seed difference to the "
                 "baseline (seed 003's comparison of Mixup, Cutout and CutMix, for any recipe)."),
        columns=["variant", "change", f"val {metric}", "val std", f"test {metric}", "test std", "Δ val", "Δ test"],
        rows=rows,
        figures=[Figure("ablation", "Each variant's difference to the baseline on the validation (left) and test "
                        "(right) split: mean ± std over the seeds, each seed a dot; green helps, red hurts, grey: no change.",
                        _figure(names, per_seed, metric))],
        settings={"recipe": options.recipe or "(built-in)", "seeds": ", ".join(map(str, seeds)),
                  "epochs": base.train.epochs, **{f"--set {k}": v for k, v in overrides.items()}},
        notes=[f"{r[0]}: Δ val {r[6]:+.4f}, Δ test {r[7]:+.4f}" for r in rows[1:]],
        series=per_seed)
