"""schedules: the learning rate of every schedule kind of schedules.py over one run, in one figure.

Each curve is trainwell's own `lr_factor(section, step, ...)` times the base LR, step by step,
for a run of EPOCHS epochs of STEPS_PER_EPOCH optimizer steps; the sections are built by the
recipe with the keys below (everything else at its default). reduce_on_plateau reacts to a
validation loss, so it is fed a synthetic one (seeded) that improves, then slowly worsens.
"""

from __future__ import annotations

from typing import get_args

import numpy as np

from ..figures import plt
from ..recipe import Schedule, load_recipe
from ..schedules import Plateau, lr_factor
from .page import Figure, LabResult, png

BASE_LR, EPOCHS, STEPS_PER_EPOCH = 0.1, 30, 10
# curve label -> schedule keys. Every kind of the recipe's [schedule] union appears at least once
# (a test checks it), plus a warmup in front of cosine.
CURVES: dict[str, dict] = {
    "constant": {"kind": "constant"},
    "step": {"kind": "step", "step_size": 8, "gamma": 0.5},
    "multistep": {"kind": "multistep", "milestones": [10, 20], "gamma": 0.3},
    "exponential": {"kind": "exponential", "gamma": 0.9},
    "polynomial": {"kind": "polynomial", "power": 2.0},
    "cosine": {"kind": "cosine", "eta_min": 0.005},
    "cosine + warmup": {"kind": "cosine", "warmup_epochs": 3},
    "cosine_restarts": {"kind": "cosine_restarts", "cycle_epochs": 6, "cycle_mult": 2, "eta_min": 0.005},
    "one_cycle": {"kind": "one_cycle", "max_lr": 0.3},
    "reduce_on_plateau": {"kind": "reduce_on_plateau", "factor": 0.5, "patience": 3},
}


def schedule_kinds() -> set[str]:
    """Every `kind` the recipe's [schedule] section accepts."""
    union = get_args(Schedule)[0]
    return {k for cls in get_args(union) for k in get_args(cls.model_fields["kind"].annotation)}


def synthetic_val_loss(epochs: int, seed: int) -> np.ndarray:
    """A validation loss that falls quickly, bottoms out near epoch 10 and creeps up (overfitting)."""
    rng = np.random.default_rng(seed)
    e = np.arange(epochs)
    return 0.3 + 0.7 * np.exp(-e / 3.0) + 0.004 * np.maximum(e - 10, 0) + rng.normal(0.0, 0.003, epochs)


def curve(keys: dict, val_loss: np.ndarray) -> np.ndarray:
    """The LR of every optimizer step of the run, as the trainer sets it."""
    section = load_recipe(None, {"optimizer.lr": BASE_LR, **{f"schedule.{k}": v for k, v in keys.items()}}).schedule
    total = EPOCHS * STEPS_PER_EPOCH
    plateau = Plateau(section) if section.kind == "reduce_on_plateau" else None
    lrs = []
    for epoch in range(EPOCHS):
        for i in range(STEPS_PER_EPOCH):
            step = epoch * STEPS_PER_EPOCH + i
            scale = plateau.scale if plateau else 1.0
            lrs.append(BASE_LR * lr_factor(section, step, STEPS_PER_EPOCH, total, base_lr=BASE_LR) * scale)
        if plateau:                        # the plateau decides at the end of each epoch, on validation
            plateau.update(float(val_loss[epoch]), BASE_LR)
    return np.array(lrs)


def _figure(curves: dict[str, np.ndarray], val_loss: np.ndarray) -> bytes:
    n = len(curves)
    cols = 5
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(19, 3.3 * ((n + cols - 1) // cols)),
                             sharex=True, squeeze=False)
    epochs = np.arange(EPOCHS * STEPS_PER_EPOCH) / STEPS_PER_EPOCH
    for ax, (label, lrs) in zip(axes.flat, curves.items()):
        ax.plot(epochs, lrs, color="purple", lw=1.6)
        keys = ", ".join(f"{k}={v}" for k, v in CURVES[label].items() if k != "kind")
        ax.set_title(f"{label}" + (f"  ({keys})" if keys else ""), fontsize=9)
        ax.set_ylim(0, max(lrs.max(), BASE_LR) * 1.1)
        ax.grid(alpha=0.3)
        if label == "reduce_on_plateau":
            twin = ax.twinx()
            twin.plot(np.arange(1, EPOCHS + 1), val_loss, color="#ff7f0e", ls=":", marker=".", ms=3)
            twin.set_ylabel("synthetic val loss", color="#ff7f0e", fontsize=8)
            twin.tick_params(labelsize=7, colors="#ff7f0e")
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("learning rate")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(f"Learning rate per optimizer step, base lr {BASE_LR}, {EPOCHS} epochs × {STEPS_PER_EPOCH} steps "
                 "(step/multistep/exponential change per epoch; the others per step)", fontsize=11)
    fig.tight_layout()
    return png(fig)


def run(options) -> LabResult:
    val_loss = synthetic_val_loss(EPOCHS, options.seed)
    curves = {label: curve(keys, val_loss) for label, keys in CURVES.items()}
    total = EPOCHS * STEPS_PER_EPOCH
    marks = [0, total // 4, total // 2, 3 * total // 4, total - 1]
    rows = [[label, *(float(lrs[m]) for m in marks), float(lrs.min()), float(lrs.max())]
            for label, lrs in curves.items()]
    return LabResult(
        lab="schedules", title="learning-rate schedules",
        summary=("The learning rate that trainwell's trainer sets at every optimizer step for each schedule kind "
                 "(seed 001, 'Learning rate schedules'; schedules.py). Warmup ramps linearly from "
                 "warmup_start_factor × lr, then the schedule runs over the remaining steps."),
        columns=["schedule", *(f"step {m}" for m in marks), "min", "max"],
        rows=rows,
        figures=[Figure("schedules", "One panel per schedule: the LR over the run. reduce_on_plateau halves the LR "
                        "each time the (synthetic, dotted) validation loss has not improved for patience + 1 "
                        "epochs.", _figure(curves, val_loss))],
        settings={"base lr": BASE_LR, "epochs": EPOCHS, "steps per epoch": STEPS_PER_EPOCH,
                  **{f"keys of {label}": ", ".join(f"{k}={v}" for k, v in keys.items()) for label, keys in CURVES.items()}},
        series={"curves": {label: lrs.tolist() for label, lrs in curves.items()}, "val_loss": val_loss.tolist()})
