"""regularization: one net that overfits a small training set, without and with each regularizer.

Seed 002 ("Regularization", "Effect of L2 weight regularization on validation loss"): a wide
MLP trained with trainwell's own `fit` on a small noisy training split (two interleaved moons
with noise 0.35, 60 training rows) fits the noise: its validation loss bottoms out after a few
dozen epochs and climbs while the training loss keeps falling. Each
variant changes the recipe in one place (`Recipe.replace` with the keys below); every variant uses
the same seed, so the split, the initialization and the batch order are shared.

The baseline ("none") is always the recipe with every regularizer switched off, whatever the
recipe or `--set` say; `--set` of a regularizer's key (e.g. regularization.l2=0.1) sets that
variant's strength instead. `--variants` picks the variants, `--sweep l2=1e-4:1e-1` replaces them by
one regularizer at several strengths, and `--seeds N` repeats every run over N seeds (mean ± std,
every seed's dot). Every caption sentence is computed from the table (see `captions`).

The gap is measured once, after training, with the same yardstick for every variant: plain
cross-entropy and accuracy of the final model (the restored best epoch for early stopping) in
eval mode on the training and the validation split. (The history's losses include what each
technique adds: dropout noise, label smoothing, penalties.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..api import fit
from ..data.sources import load_source
from ..errors import TrainwellError
from ..figures import plt
from ..recipe import load_recipe
from .page import Figure, LabResult
from .params import Param

# The overfitting baseline: wide, no normalization, no dropout, constant LR, no early stopping.
BASE: dict[str, Any] = {
    "data.source": "moons", "data.n_samples": 300, "data.noise": 0.35, "data.split": [0.2, 0.4, 0.4],
    "loss.kind": "cross_entropy",
    "model.kind": "mlp", "model.hidden": [256, 256], "model.norm": "none", "model.dropout": 0.0,
    "model.dropconnect": 0.0, "optimizer.kind": "adam", "optimizer.lr": 3e-3, "schedule.kind": "constant",
    "train.epochs": 150, "train.batch_size": 16, "train.device": "cpu",
    "stopping.enabled": False, "stopping.restore_best": False,
    "checkpoint.best": False, "checkpoint.last": False,
    "watch.probes": False, "watch.doctor": False, "watch.report": False,
}
QUICK = {"train.epochs": 60}

VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "L2 penalty": {"regularization.l2": 0.01},
    "weight decay": {"optimizer.kind": "adamw", "optimizer.weight_decay": 0.5},
    "L1 penalty": {"regularization.l1": 1e-4},
    "dropout": {"model.dropout": 0.5},
    "DropConnect": {"model.dropconnect": 0.5},
    "batch norm": {"model.norm": "batch"},
    "label smoothing": {"loss.label_smoothing": 0.1},
    "early stopping": {"stopping.enabled": True, "stopping.patience": 20, "stopping.restore_best": True},
    "noise augmentation": {"data.augment.noise_std": 0.5},
    "mixup": {"data.augment.mixup_alpha": 0.4},
}


@torch.no_grad()
def measure(model, split, task: str) -> tuple[float, float | None]:
    """(plain loss, accuracy) of `model` in eval mode on a whole split: cross-entropy for classes
    (binary: one logit), mean squared error and no accuracy for regression."""
    was = model.training
    model.eval()
    out = model(split.x)
    model.train(was)
    if task == "regression":
        return float(F.mse_loss(out.reshape(split.y.shape), split.y)), None
    if out.shape[-1] == 1:
        logit = out.squeeze(-1)
        return (float(F.binary_cross_entropy_with_logits(logit, split.y.float())),
                float(((logit > 0).long() == split.y).float().mean()))
    return float(F.cross_entropy(out, split.y)), float((out.argmax(1) == split.y).float().mean())


# Everything a variant may switch on, off: the baseline. (optimizer.kind stays: adam and adamw differ only by
# decoupled decay, which weight_decay = 0 switches off.)
UNREGULARIZED: dict[str, Any] = {
    "regularization.l2": 0.0, "regularization.l1": 0.0, "optimizer.weight_decay": 0.0, "model.dropout": 0.0,
    "model.dropconnect": 0.0, "model.norm": "none", "loss.label_smoothing": 0.0, "stopping.enabled": False,
    "stopping.restore_best": False, "data.augment.noise_std": 0.0, "data.augment.mixup_alpha": 0.0,
}
# --sweep NAME=LO:HI -> (variant, recipe key, spacing, other changes it needs)
SWEEPS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "l2": ("L2 penalty", "regularization.l2", "log", {}),
    "l1": ("L1 penalty", "regularization.l1", "log", {}),
    "weight_decay": ("weight decay", "optimizer.weight_decay", "log", {"optimizer.kind": "adamw"}),
    "dropout": ("dropout", "model.dropout", "linear", {}),
    "dropconnect": ("DropConnect", "model.dropconnect", "linear", {}),
    "label_smoothing": ("label smoothing", "loss.label_smoothing", "linear", {}),
    "noise": ("noise augmentation", "data.augment.noise_std", "linear", {}),
    "mixup": ("mixup", "data.augment.mixup_alpha", "linear", {}),
}

PARAMS = {
    "variants": Param("names", [v for v in VARIANTS if v != "none"], "the regularizers to compare with the "
                      "unregularized baseline", choices=tuple(v for v in VARIANTS if v != "none")),
    "sweep": Param("text", "", "one regularizer at several strengths instead of the variants: NAME=LO:HI with "
                   f"NAME one of {', '.join(SWEEPS)} (log-spaced for l2, l1, weight_decay; linear otherwise), "
                   "e.g. l2=1e-4:1e-1 or dropout=0:0.7"),
    "points": Param("int", 5, "strengths in a --sweep", low=2, high=12),
}


def parse_sweep(text: str) -> str | None:
    """The swept regularizer of 'l2=1e-4:1e-1' ('l2'), checked; None for ''."""
    if not text:
        return None
    bad = TrainwellError(f"lab regularization: --sweep got {text!r}, expected NAME=LO:HI with NAME one of "
                         f"{', '.join(SWEEPS)}, e.g. l2=1e-4:1e-1 or dropout=0:0.7")
    name, _, span = text.partition("=")
    lo_text, _, hi_text = span.partition(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise bad from None
    if name not in SWEEPS or not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi <= lo:
        raise bad
    if SWEEPS[name][2] == "log" and lo <= 0:
        raise TrainwellError(f"lab regularization: --sweep {text}: {name} is swept on a log scale, LO must be > 0")
    return name


def sweep_values(name: str, text: str, points: int) -> list[float]:
    lo, hi = (float(v) for v in text.partition("=")[2].split(":"))
    values = np.geomspace(lo, hi, points) if SWEEPS[name][2] == "log" else np.linspace(lo, hi, points)
    return [float(f"{v:.4g}") for v in values]


def check_params(p: dict) -> None:
    parse_sweep(p["sweep"])


def plan(base, p: dict, overrides: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """name -> recipe changes for the baseline and each variant (or each strength of a sweep); and the
    --set keys that only set a regularizer's strength (not applied to the baseline)."""
    strengths = {k: v for k, v in overrides.items() if k in UNREGULARIZED or k in {"optimizer.kind"}}
    runs: dict[str, dict[str, Any]] = {"none": dict(UNREGULARIZED)}
    sweep = parse_sweep(p["sweep"])
    if sweep is not None:
        name = sweep
        label, key, _, extra = SWEEPS[name]
        for v in sweep_values(name, p["sweep"], p["points"]):
            runs[f"{label} {v:g}"] = {**UNREGULARIZED, **extra, key: v}
        return runs, list(strengths)
    used = set()
    for name in p["variants"]:
        change = {k: strengths.get(k, v) for k, v in VARIANTS[name].items()}
        used |= set(change) & set(strengths)
        runs[name] = {**UNREGULARIZED, **change}
    unused = [k for k in strengths if k not in used and k != "optimizer.kind"]
    if unused:
        owners = [n for n, c in VARIANTS.items() if unused[0] in c]
        raise TrainwellError(f"lab regularization: --set {unused[0]} sets the strength of the variant "
                             f"{owners[0] if owners else '(none)'!r}, which --variants leaves out"
                             if owners else f"lab regularization: --set {unused[0]}: no variant uses this key; the "
                             "baseline always has it off")
    return runs, list(strengths)


def train_variant(recipe, draw: bool = True) -> dict[str, Any]:
    run = fit(recipe, out=False, quiet=True)
    data = run.extras["data"]
    task = run.metrics["task"]
    train_ce, train_acc = measure(run.model, data.train, task)
    val_ce, val_acc = measure(run.model, data.val, task)
    classes = len(data.dataset.classes) if task != "regression" else None
    return {"history": run.history, "train_ce": train_ce, "val_ce": val_ce, "train_acc": train_acc,
            "val_acc": val_acc, "stopped": run.metrics["stopped_epoch"], "best": run.metrics["best_epoch"],
            "classes": classes, "val_rows": len(data.val.y),
            "boundary": boundary(run.model, data, load_source(run.recipe.data, run.recipe.seed).x)
            if draw and task != "regression" and data.dataset.x.shape[1:] == (2,) else None}


@torch.no_grad()
def boundary(model, data, x: np.ndarray, n: int = 120) -> dict[str, Any]:
    """Predicted probability of class 1 on a grid over the raw 2-D inputs `x` (the rows as loaded: the run
    holds them normalized), and the training points."""
    lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(x.dtype))
    model.eval()
    out = model(data.normalizer.transform(grid))
    p1 = (torch.sigmoid(out[:, 0]) if out.shape[1] == 1 else torch.softmax(out, 1)[:, 1]).reshape(n, n).numpy()
    train = data.indices["train"]
    return {"gx": gx, "gy": gy, "p1": p1, "x": x[train], "y": data.dataset.y[train]}


def _curves(results: dict[str, dict], label: dict[str, str]):
    n = len(results)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.7 * rows + 0.5), sharey=True, squeeze=False)
    top = max(max(r["val_loss"] for r in res["history"][1:]) for res in results.values())
    for ax, (name, res) in zip(axes.flat, results.items()):
        h = res["history"]
        epochs = [r["epoch"] for r in h]
        ax.plot(epochs, [r["train_loss"] for r in h], color="#1f77b4", label="train loss")
        ax.plot(epochs, [r["val_loss"] for r in h], color="#ff7f0e", label="validation loss")
        if name == "early stopping":
            ax.axvline(res["best"], color="green", ls="--", lw=1, label=f"best epoch {res['best']}")
        ax.set_title(f"{label[name]}\ngap {res['val_ce'] - res['train_ce']:.3f}", fontsize=10)
        ax.set_yscale("log")
        ax.set_ylim(top=top * 1.5)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("epoch", fontsize=9)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (log scale)")
    axes[0][0].legend(fontsize=9)
    fig.suptitle("Train and validation loss per epoch as recorded by fit (first seed; a technique's own loss terms "
                 "included)", fontsize=11)
    fig.tight_layout()
    return fig


def _boundaries(results: dict[str, dict], label: dict[str, str]):
    drawn = {n: r["boundary"] for n, r in results.items() if r["boundary"] is not None}
    if not drawn:
        return None
    cols = min(len(drawn), 4)
    rows = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows + 0.5), squeeze=False)
    for ax, (name, b) in zip(axes.flat, drawn.items()):
        ax.contourf(b["gx"], b["gy"], b["p1"], levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(b["gx"], b["gy"], b["p1"], levels=[0.5], colors="black", linewidths=1.2)
        ax.scatter(b["x"][:, 0], b["x"][:, 1], c=b["y"], cmap="bwr", s=9, edgecolors="black", linewidths=0.3)
        ax.set_title(label[name], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(drawn):]:
        ax.axis("off")
    fig.suptitle("Decision boundary (black, p = 0.5) and predicted probability of class 1 (first seed); dots: the "
                 "training rows", fontsize=11)
    fig.tight_layout()
    return fig


def _val_overlay(results: dict[str, dict], shown: list[str], label: dict[str, str]):
    fig, ax = plt.subplots(figsize=(9.5, 4.4))
    for k, name in enumerate(shown):
        h = results[name]["history"]
        ax.plot([r["epoch"] for r in h], [r["val_loss"] for r in h], lw=2.2 if name == "none" else 1.3,
                color="black" if name == "none" else plt.get_cmap("tab10")(k % 10), label=label[name])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (log scale)")
    ax.set_yscale("log")
    ax.set_title("Validation loss per epoch (first seed; black: no regularization)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))   # outside: the curves fill the axes
    return fig


def _bars(per_seed: dict[str, dict[str, list[float]]], label: dict[str, str], chance: float | None, n_seeds: int):
    names = list(per_seed)
    panels = [("gap", "validation − training loss", "Generalization gap (smaller: less overfitting)"),
              ("val_ce", "validation loss", "Validation loss (lower: better)")]
    if chance is not None:
        panels.append(("val_acc", "validation accuracy", "Validation accuracy (higher: better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 0.42 * len(names) + 1.6),
                             sharey=True)
    ys = np.arange(len(names))
    for ax, (key, xlabel, title) in zip(np.atleast_1d(axes), panels):
        values = [np.asarray(per_seed[n][key], dtype=float) for n in names]
        means = [float(v.mean()) for v in values]
        stds = [float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in values]
        colours = ["black" if n == "none" else "#1f77b4" for n in names]
        ax.barh(ys, means, xerr=stds if n_seeds > 1 else None, color=colours, alpha=0.35, capsize=3)
        for y, v in zip(ys, values):
            ax.scatter(v, np.full(len(v), y), s=16, color="black", zorder=3)
        ax.axvline(means[0], color="black", ls=":", lw=1)
        if key == "val_acc":      # from chance level: a difference shows without exaggerating it
            ax.set_xlim(chance, 1.0)
        ax.set_xlabel(f"{xlabel} (final model, eval mode)", fontsize=10)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    axes = np.atleast_1d(axes)
    axes[0].set_yticks(ys, [label[n] for n in names])
    axes[0].invert_yaxis()
    spread = f"bars: mean ± std over {n_seeds} seeds, dots: each seed" if n_seeds > 1 else "one seed (--seeds N)"
    fig.suptitle(f"Per variant ({spread}); dotted: no regularization", fontsize=11)
    fig.tight_layout()
    return fig


def _sweep(per_seed: dict[str, dict[str, list[float]]], strengths: dict[str, float], key: str, log: bool,
           chance: float | None):
    panels = [("val_ce", "validation loss"), ("gap", "validation − training loss")]
    if chance is not None:
        panels.append(("val_acc", "validation accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    names = [n for n in per_seed if n != "none"]
    xs = np.array([strengths[n] for n in names])
    for ax, (k, ylabel) in zip(np.atleast_1d(axes), panels):
        vals = [np.asarray(per_seed[n][k], dtype=float) for n in names]
        means = np.array([v.mean() for v in vals])
        stds = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals])
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color="#1f77b4", label="mean ± std")
        for x, v in zip(xs, vals):
            ax.scatter(np.full(len(v), x), v, s=12, color="black", zorder=3)
        ax.axhline(float(np.mean(per_seed["none"][k])), color="black", ls=":", lw=1, label="no regularization")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    np.atleast_1d(axes)[0].legend(fontsize=9)
    fig.suptitle(f"Sweep of {key}: mean ± std over the seeds, dots: each seed", fontsize=11)
    fig.tight_layout()
    return fig


# ---- captions: every statement is computed from the table's rows and the baseline's history ---------------

def baseline_course(history: list[dict]) -> dict[str, Any]:
    """What the unregularized validation loss does: its minimum, where, and its last value."""
    val = [r["val_loss"] for r in history]
    best = int(np.argmin(val))
    return {"train_first": history[0]["train_loss"], "train_last": history[-1]["train_loss"],
            "val_min": val[best], "val_min_epoch": history[best]["epoch"], "val_last": val[-1],
            "epochs": history[-1]["epoch"]}


def captions(records: list[dict], course: dict[str, Any], n_seeds: int, val_rows: int) -> dict[str, str]:
    rise = course["val_last"] / course["val_min"] - 1
    if rise > 0.05:
        how = (f"reaches its minimum {course['val_min']:.3g} at epoch {course['val_min_epoch']} and then climbs to "
               f"{course['val_last']:.3g} by epoch {course['epochs']} (+{rise:.0%})")
    elif course["val_min_epoch"] >= course["epochs"] - 1:
        how = f"is still falling at the last epoch ({course['val_last']:.3g})"
    else:
        how = (f"reaches {course['val_min']:.3g} at epoch {course['val_min_epoch']} and stays within {rise:.0%} of it "
               f"to the end")
    base = records[0]
    narrower = [r["variant"] for r in records[1:] if r["gap"] < base["gap"]]
    wider = [r["variant"] for r in records[1:] if r["gap"] >= base["gap"]]
    curves = (f"One panel per variant: training (blue) and validation (orange) loss per epoch, first seed. Without "
              f"regularization the training loss falls from {course['train_first']:.3g} to {course['train_last']:.3g} "
              f"while the validation loss {how}. Final gap (mean over seeds) {base['gap']:.3f} without regularization"
              + (f"; narrower with {', '.join(narrower)}" if narrower else "")
              + (f"; not narrower with {', '.join(wider)}" if wider else "") + ".")
    if n_seeds > 1 and base["val acc"] is not None:
        def clear(r):       # better than the baseline by more than the two spreads together
            return r["val acc"] - base["val acc"] > (r["val acc std"] or 0) + (base["val acc std"] or 0)
        better = [r["variant"] for r in records[1:] if clear(r)]
        within = [r["variant"] for r in records[1:] if not clear(r)]
        bars = (f"Per variant, mean ± std over {n_seeds} seeds and every seed's dot: final gap, validation loss and "
                f"accuracy (plain cross-entropy of the final model in eval mode, {val_rows} validation rows: one row "
                f"is {1 / val_rows:.3f} of accuracy). Accuracy above the baseline's {base['val acc']:.3f} by more "
                "than both spreads together: " + (", ".join(better) if better else "none")
                + ("; within the seed-to-seed spread: " + ", ".join(within) if within else "") + ".")
    else:
        bars = ("Per variant: final gap, validation loss and accuracy of the final model in eval mode, one seed: with "
                f"{val_rows} validation rows one row is {1 / val_rows:.3f} of accuracy, and seeds move it by more — "
                "repeat with --seeds 5 before trusting a ranking.")
    return {"regularization_curves": curves, "regularization_gaps": bars}


def run(options) -> LabResult:
    p = options.params
    recipe_keys = {k: v for k, v in options.overrides.items()}
    raw = {**({} if options.recipe else BASE), **(QUICK if options.quick else {}), "seed": options.seed}
    base = load_recipe(options.recipe, {**raw, **{k: v for k, v in recipe_keys.items()
                                                    if k not in UNREGULARIZED and k != "optimizer.kind"}})
    runs, strength_keys = plan(base, p, recipe_keys)
    if base.data.task == "regression":
        runs = {n: c for n, c in runs.items() if "mixup" not in n}     # mixup mixes class labels
    n_seeds = options.seeds or (1 if options.quick else 3)
    seeds = [options.seed + k for k in range(n_seeds)]
    recipes = {name: [base.replace(**{**change, "seed": s}) for s in seeds] for name, change in runs.items()}
    results = {name: [train_variant(r, draw=(k == 0)) for k, r in enumerate(rs)] for name, rs in recipes.items()}
    first = {name: rs[0] for name, rs in results.items()}
    other = {k: v for k, v in recipe_keys.items() if k not in strength_keys}
    label = {name: name for name in runs}
    if other:
        label["none"] = "none (" + ", ".join(f"{k}={v}" for k, v in other.items()) + ")"
    per_seed = {name: {"train_ce": [r["train_ce"] for r in rs], "val_ce": [r["val_ce"] for r in rs],
                       "gap": [r["val_ce"] - r["train_ce"] for r in rs], "train_acc": [r["train_acc"] for r in rs],
                       "val_acc": [r["val_acc"] for r in rs], "epochs": [len(r["history"]) for r in rs]}
                for name, rs in results.items()}

    def mean(v):
        return None if v[0] is None else float(np.mean(v))

    def std(v):
        return None if v[0] is None or len(v) < 2 else float(np.std(v, ddof=1))

    columns = ["variant", "recipe change", "seeds", "train CE", "val CE", "val CE std", "gap", "gap std",
               "train acc", "val acc", "val acc std", "epochs"]
    rows = []
    for name, s in per_seed.items():
        change = {k: v for k, v in runs[name].items() if UNREGULARIZED.get(k, object()) != v}
        text = ("every regularizer off" + "".join(f"; --set {k}={v}" for k, v in other.items()) if name == "none"
                else ", ".join(f"{k}={v}" for k, v in change.items()))
        rows.append([name, text, n_seeds, mean(s["train_ce"]), mean(s["val_ce"]), std(s["val_ce"]), mean(s["gap"]),
                     std(s["gap"]), mean(s["train_acc"]), mean(s["val_acc"]), std(s["val_acc"]), mean(s["epochs"])])
    records = [dict(zip(columns, r)) for r in rows]
    val_rows = first["none"]["val_rows"]
    course = baseline_course(first["none"]["history"])
    caption = captions(records, course, n_seeds, val_rows)
    classes = first["none"]["classes"]
    chance = None if classes is None else 1.0 / classes
    best = sorted((r for r in records[1:]), key=lambda r: r["val CE"])[:4]
    shown = ["none"] + [r["variant"] for r in best]
    figures = [
        Figure("regularization_curves", caption["regularization_curves"], _curves(first, label)),
        Figure("regularization_val_loss", "The validation loss of the unregularized net (black) and of the "
               f"{len(shown) - 1} variants with the lowest final validation loss, mean over the seeds "
               f"({', '.join(shown[1:])}); curves of the first seed: the lectures' 'effect of L2 regularization on validation loss' figure, for the techniques "
               "that helped most.", _val_overlay(first, shown, label)),
        Figure("regularization_gaps", caption["regularization_gaps"], _bars(per_seed, label, chance, n_seeds)),
    ]
    sweep = parse_sweep(p["sweep"])
    if sweep is not None:
        name = sweep
        key = SWEEPS[name][1]
        strengths = {n: runs[n][key] for n in runs if n != "none"}
        low = min((r for r in records[1:]), key=lambda r: r["val CE"])
        figures.insert(0, Figure(
            "regularization_sweep", f"Validation loss, gap and accuracy against {key} (mean ± std over {n_seeds} "
            f"seed{'s' if n_seeds > 1 else ''}, dots: each seed; dotted: no regularization). The validation loss is "
            f"lowest at {key} = {strengths[low['variant']]:g} ({low['val CE']:.3g} against {records[0]['val CE']:.3g} "
            "without).", _sweep(per_seed, strengths, key, SWEEPS[name][2] == "log", chance)))
    drawn = _boundaries(first, label)
    if drawn is not None:
        figures.insert(1, Figure("regularization_boundaries", "The decision boundary each variant learned from the "
                                 f"same {len(first['none']['boundary']['y'])} noisy training rows (first seed).", drawn))
    title = ("regularization: one overfitting net, each regularizer" if sweep is None
             else f"regularization: {SWEEPS[sweep][1]} from {p['sweep'].partition('=')[2]}")
    return LabResult(
        lab="regularization", title=title + f" ({n_seeds} seed{'s' if n_seeds > 1 else ''})",
        summary=(f"A {list(base.model.hidden)} MLP (no normalization, no dropout, constant LR) trained by trainwell's "
                 f"fit for {base.train.epochs} epochs on {base.data.source} with {base.data.split[0]:.0%} of the rows "
                 "for training, with every regularizer off, then the same run with one regularizer switched on "
                 f"(seed 002), each for {n_seeds} seed{'s' if n_seeds > 1 else ''}. The gap is the validation minus "
                 "the training cross-entropy of the final model."),
        columns=columns, rows=rows, figures=figures,
        settings={"seeds": ", ".join(map(str, seeds)), "epochs": base.train.epochs,
                  "hidden": str(list(base.model.hidden)), "data": base.data.source, "split": str(list(base.data.split)),
                  "validation rows": val_rows, "variants": ", ".join(runs),
                  "--set (all runs)": ", ".join(f"{k}={v}" for k, v in other.items()) or "—",
                  "--set (a variant's strength)": ", ".join(f"{k}={recipe_keys[k]}" for k in strength_keys) or "—"},
        notes=[f"{r['variant']}: gap {r['gap']:.3f} ({r['gap'] / records[0]['gap']:.0%} of the unregularized "
               f"{records[0]['gap']:.3f}), validation accuracy {r['val acc']:.3f}"
               + (f" ± {r['val acc std']:.3f}" if r["val acc std"] is not None else "")
               for r in records[1:] if r["val acc"] is not None],
        series={"curves": {name: {"train_loss": [h["train_loss"] for h in r["history"]],
                                  "val_loss": [h["val_loss"] for h in r["history"]]} for name, r in first.items()},
                "per_seed": per_seed})


def gap(result: LabResult, variant: str) -> float:
    return dict(zip(result.column("variant"), result.column("gap")))[variant]
