"""regularization: one net that overfits a small training set, without and with each regularizer.

Seed 002 ("Regularization", "Effect of L2 weight regularization on validation loss"): a wide
MLP trained with trainwell's own `fit` on a small noisy training split (two interleaved moons
with noise 0.35, 60 training rows) fits the noise: its validation loss bottoms out after a few
dozen epochs and climbs while the training loss keeps falling. Each
variant changes the recipe in one place (`Recipe.replace` with the keys below); every variant uses
the same seed, so the split, the initialization and the batch order are shared.

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

from ..figures import plt
from ..recipe import load_recipe
from .page import Figure, LabResult, png

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


def train_variant(recipe) -> dict[str, Any]:
    from ..api import fit

    run = fit(recipe, out=False, quiet=True)
    data = run.extras["data"]
    task = run.metrics["task"]
    train_ce, train_acc = measure(run.model, data.train, task)
    val_ce, val_acc = measure(run.model, data.val, task)
    return {"history": run.history, "train_ce": train_ce, "val_ce": val_ce, "train_acc": train_acc,
            "val_acc": val_acc, "stopped": run.metrics["stopped_epoch"], "best": run.metrics["best_epoch"],
            "boundary": boundary(run.model, data) if task != "regression" and data.dataset.x.shape[1:] == (2,)
            else None}


@torch.no_grad()
def boundary(model, data, n: int = 120) -> dict[str, Any]:
    """Predicted probability of class 1 on a grid over the raw 2-D inputs, and the training points."""
    x = data.dataset.x
    lo, hi = x.min(0) - 0.3, x.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    grid = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1).astype(x.dtype))
    model.eval()
    out = model(data.normalizer.transform(grid))
    p1 = (torch.sigmoid(out[:, 0]) if out.shape[1] == 1 else torch.softmax(out, 1)[:, 1]).reshape(n, n).numpy()
    train = data.indices["train"]
    return {"gx": gx, "gy": gy, "p1": p1, "x": x[train], "y": data.dataset.y[train]}


def _curves(results: dict[str, dict]) -> bytes:
    n = len(results)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.1 * cols, 2.9 * rows), sharey=True, squeeze=False)
    top = max(max(r["val_loss"] for r in res["history"][1:]) for res in results.values())
    for ax, (name, res) in zip(axes.flat, results.items()):
        h = res["history"]
        epochs = [r["epoch"] for r in h]
        ax.plot(epochs, [r["train_loss"] for r in h], color="#1f77b4", label="train loss")
        ax.plot(epochs, [r["val_loss"] for r in h], color="#ff7f0e", label="validation loss")
        if name == "early stopping":
            ax.axvline(res["best"], color="green", ls="--", lw=1, label=f"best epoch {res['best']}")
        ax.set_title(f"{name}: gap {res['val_ce'] - res['train_ce']:.3f}", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(top=top * 1.5)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (log scale)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Train and validation loss per epoch as recorded by fit (a technique's own loss terms included); "
                 "title: final validation − training cross-entropy", fontsize=10)
    fig.tight_layout()
    return png(fig)


def _boundaries(results: dict[str, dict]) -> bytes | None:
    drawn = {n: r["boundary"] for n, r in results.items() if r["boundary"] is not None}
    if not drawn:
        return None
    cols = 4
    rows = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, b) in zip(axes.flat, drawn.items()):
        ax.contourf(b["gx"], b["gy"], b["p1"], levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(b["gx"], b["gy"], b["p1"], levels=[0.5], colors="black", linewidths=1.2)
        ax.scatter(b["x"][:, 0], b["x"][:, 1], c=b["y"], cmap="bwr", s=9, edgecolors="black", linewidths=0.3)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(drawn):]:
        ax.axis("off")
    fig.suptitle("Decision boundary (black, p = 0.5) and predicted probability of class 1 over the inputs; dots: "
                 "the training rows. Without regularization the boundary bends around single noisy rows.",
                 fontsize=10)
    fig.tight_layout()
    return png(fig)


def _val_overlay(results: dict[str, dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(9.5, 4.4))
    for k, (name, res) in enumerate(results.items()):
        h = res["history"]
        ax.plot([r["epoch"] for r in h], [r["val_loss"] for r in h], lw=2.2 if name == "none" else 1.1,
                color="black" if name == "none" else plt.get_cmap("tab10")(k % 10),
                ls="-" if k < 10 else "--", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (log scale)")
    ax.set_yscale("log")
    ax.set_title("Validation loss per epoch, every variant (black: no regularization)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))   # outside: the curves fill the axes
    return png(fig)


def _gaps(results: dict[str, dict]) -> bytes:
    names = list(results)
    panels = [("gap", [results[n]["val_ce"] - results[n]["train_ce"] for n in names],
               "validation − training loss", "Generalization gap (smaller: less overfitting)"),
              ("val", [results[n]["val_ce"] for n in names], "validation loss", "Validation loss (lower: better)")]
    if all(results[n]["val_acc"] is not None for n in names):
        panels.append(("acc", [results[n]["val_acc"] for n in names], "validation accuracy",
                       "Validation accuracy (higher: better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), sharey=True)
    colours = ["black" if n == "none" else "#1f77b4" for n in names]
    for ax, (key, values, xlabel, title) in zip(axes, panels):
        ax.barh(names, values, color=colours)
        ax.axvline(values[0], color="black", ls=":", lw=1)
        if key == "acc":       # accuracies differ in the second decimal: zoom in, the axis says where
            ax.set_xlim(min(values) - 0.02, min(1.0, max(values) + 0.01))
        ax.set_xlabel(f"{xlabel} (final model, eval mode)", fontsize=9)
        ax.set_title(title + "; dotted: no regularization", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].invert_yaxis()
    fig.tight_layout()
    return png(fig)


def run(options) -> LabResult:
    base = load_recipe(options.recipe, {**({} if options.recipe else BASE), **(QUICK if options.quick else {}),
                                         "seed": options.seed, **options.overrides})
    results = {}
    for name, change in VARIANTS.items():
        if "mixup" in name and base.data.task == "regression":
            continue          # mixup mixes class labels: classification only
        results[name] = train_variant(base.replace(**change))
    rows = [[name, ", ".join(f"{k}={v}" for k, v in VARIANTS[name].items()) or "—", r["train_ce"], r["val_ce"],
             r["val_ce"] - r["train_ce"], r["train_acc"], r["val_acc"], len(r["history"])]
            for name, r in results.items()]
    none_gap = rows[0][4]
    notes = [f"{r[0]}: gap {r[4]:.3f} ({r[4] / none_gap:.0%} of the unregularized {none_gap:.3f}), "
             f"validation accuracy {r[6]:.3f}" for r in rows[1:]]
    figures = [
        Figure("regularization_curves", "One panel per variant: training (blue) and validation (orange) loss per "
               "epoch. Without regularization the training loss keeps falling towards 0 while the validation loss "
               "levels off far above it; each regularizer narrows that distance in its own way.",
               _curves(results)),
        Figure("regularization_val_loss", "The validation loss of every variant on one axis (the lectures' 'effect "
               "of L2 regularization on validation loss' figure, for every technique).", _val_overlay(results)),
        Figure("regularization_gaps", "Per variant: the final gap between validation and training loss, the "
               "validation loss and the validation accuracy, all measured the same way (plain cross-entropy of the "
               "final model in eval mode).",
               _gaps(results)),
    ]
    drawn = _boundaries(results)
    if drawn is not None:
        figures.insert(1, Figure("regularization_boundaries", "The decision boundary each variant learned from the "
                                 "same 60 noisy training rows.", drawn))
    return LabResult(
        lab="regularization", title="regularization: one overfitting net, each regularizer",
        summary=(f"A {list(base.model.hidden)} MLP (no normalization, no dropout, constant LR) trained by trainwell's "
                 f"fit for {base.train.epochs} epochs on {base.data.source} with {base.data.split[0]:.0%} of the rows "
                 "for training, then the same run with one regularizer switched on (seed 002). The gap is the "
                 "validation minus the training cross-entropy of the final model."),
        columns=["variant", "recipe change", "train CE", "val CE", "gap", "train acc", "val acc", "epochs"],
        rows=rows, figures=figures,
        settings={"seed": options.seed, "epochs": base.train.epochs, "hidden": str(list(base.model.hidden)),
                  "data": base.data.source, "split": str(list(base.data.split))},
        notes=notes,
        series={name: {"train_loss": [h["train_loss"] for h in r["history"]],
                       "val_loss": [h["val_loss"] for h in r["history"]]} for name, r in results.items()})


def gap(result: LabResult, variant: str) -> float:
    return dict(zip(result.column("variant"), result.column("gap")))[variant]


