"""The report's figures, drawn on unmanaged matplotlib Figures (see figures.py) and returned as PNG bytes.

Each function takes the stored evidence (history rows, probe records, facts) and returns one
figure, or None when the run holds nothing to draw.
"""

from __future__ import annotations

import math
from typing import Any

from ..figures import plt, render
from ..watch.doctor import Evidence

TRAIN, VAL = "#1f77b4", "#ff7f0e"


def _png(fig) -> bytes:
    return render(fig, "png", 100)


def _series(ev: Evidence, col: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], float(r[col])) for r in ev.history
           if r.get(col) is not None and isinstance(r.get(col), int | float) and math.isfinite(float(r[col]))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _log_if_wide(ax, values: list[float]) -> None:
    """Log scale only when the values span more than a decade (else the ticks are unreadable)."""
    if values and min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")


def _mark_epochs(ax, ev: Evidence) -> None:
    best, stop = ev.metrics.get("best_epoch"), ev.metrics.get("stopped_epoch")
    if best:
        ax.axvline(best, color="green", ls="--", lw=1, label=f"best epoch {best}")
    if stop and stop != best:
        ax.axvline(stop, color="grey", ls=":", lw=1, label=f"stop epoch {stop}")


def curves(ev: Evidence) -> bytes | None:
    """Loss and each metric, train vs validation, with the best and stop epochs marked."""
    names = ["loss"] + [c[len("train_"):] for c in (ev.history[0] if ev.history else {})
                        if c.startswith("train_") and c != "train_loss"]
    names = [n for n in names if _series(ev, f"train_{n}")[0]]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, colour in (("train", TRAIN), ("val", VAL)):
            x, y = _series(ev, f"{split}_{name}")
            if x:
                ax.plot(x, y, color=colour, label=split, marker="." if len(x) < 30 else None)
        if name == "loss":
            _log_if_wide(ax, _series(ev, "train_loss")[1] + _series(ev, "val_loss")[1])
        _mark_epochs(ax, ev)
        scaled = ev.metrics.get("target_normalize")
        ax.set_title(f"loss (on {scaled}-scaled targets)" if name == "loss" and scaled else name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def lr_and_grad(ev: Evidence) -> bytes | None:
    x, lr = _series(ev, "lr")
    xg, g = _series(ev, "grad_norm")
    if not x and not xg:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.0))
    a.plot(x, lr, color="purple")
    a.set_title("learning rate (end of epoch)")
    b.plot(xg, g, color="black")
    b.set_title("global gradient norm (mean per step, before clipping)")
    _log_if_wide(b, g)
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _png(fig)


def layer_grad_norms(ev: Evidence) -> bytes | None:
    """Per-layer weight-gradient norm and update/weight ratio over the epochs (log scale)."""
    grads = ev.layer_series("weights", "grad_norm")
    ratios = ev.layer_series("weights", "update_ratio")
    if not grads:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.3))
    for ax, series, title in ((a, grads, "weight-gradient norm per layer"),
                              (b, ratios, "update / weight ratio per layer")):
        drawn = [n for n, pts in series.items() if any(v > 0 for _, v in pts)]
        for name in drawn:
            pts = series[name]
            ax.plot([e for e, _ in pts], [max(v, 1e-12) for _, v in pts], label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if drawn:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "all zero", ha="center", va="center", transform=ax.transAxes)
    b.axhline(1e-3, color="grey", ls="--", lw=1)
    return _png(fig)


def activation_histograms(ev: Evidence, max_rows: int = 3) -> bytes | None:
    """Per-layer activation histograms (columns) at the first, a middle and the last epoch (rows)."""
    epochs = [e for e in ev.probes.get("epochs", []) if e.get("activations")]
    layers = [a["name"] for a in ev.probes.get("activations", [])]
    if not epochs or not layers:
        return None
    picks = sorted({0, len(epochs) // 2, len(epochs) - 1})[:max_rows]
    rows = [epochs[i] for i in picks]
    fig, axes = plt.subplots(len(rows), len(layers), figsize=(2.3 * len(layers) + 0.5, 1.9 * len(rows)),
                             squeeze=False)
    for r, rec in enumerate(rows):
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            stats = rec["activations"].get(layer)
            if stats and stats.get("hist"):
                h = stats["hist"]
                n = len(h["counts"])
                lo, hi = (h["lo"], h["hi"]) if h["hi"] > h["lo"] else (h["lo"] - 0.5, h["lo"] + 0.5)
                width = (hi - lo) / n
                ax.bar([lo + width * (i + 0.5) for i in range(n)], h["counts"], width=width, color=TRAIN)
                rest = sorted(h["counts"])[-2] if n > 1 else 0
                if rest and max(h["counts"]) > 5 * rest:
                    # ReLU's spike at zero would flatten the rest of the histogram: clip it, say so.
                    ax.set_ylim(0, rest * 1.3)
                    ax.text(0.98, 0.9, f"peak {max(h['counts']) / sum(h['counts']):.0%} (clipped)", fontsize=6,
                            ha="right", transform=ax.transAxes)
                ax.set_title(f"{layer}  mean {stats['mean']:.2f} std {stats['std']:.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"epoch {rec['epoch']}", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def confusion(ev: Evidence) -> bytes | None:
    cm = ev.facts.get("confusion")
    if not cm:
        return None
    m = cm["matrix"]
    classes = ev.facts.get("data", {}).get("classes") or [str(i) for i in range(len(m))]
    n = len(m)
    size = min(1.8 + 0.35 * n, 5.5)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    top = max(max(r) for r in m) or 1
    for i in range(n):
        for j in range(n):
            if m[i][j]:
                ax.text(j, i, m[i][j], ha="center", va="center", fontsize=8,
                        color="white" if m[i][j] > top / 2 else "black")
    ax.set_xticks(range(n), classes, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({cm['split']} split)")
    return _png(fig)


def reliability(ev: Evidence) -> bytes | None:
    """Reliability diagram: accuracy against mean confidence per confidence bin (top label), with the
    rows per bin; a calibrated model sits on the diagonal."""
    cal = ev.metrics.get("calibration")
    if not cal or not cal.get("bins"):
        return None
    bins = cal["bins"]
    width = 1.0 / cal["n_bins"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    a.bar([r["low"] for r in bins], [r["accuracy"] for r in bins], width=width, align="edge", color=TRAIN,
          edgecolor="white", label="accuracy")
    a.plot([r["confidence"] for r in bins], [r["accuracy"] for r in bins], "o", color=VAL, ms=4,
           label="(mean confidence, accuracy)")
    a.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    a.set_xlim(0, 1)
    a.set_ylim(0, 1.03)
    a.set_xlabel("confidence of the predicted class")
    a.set_ylabel("accuracy")
    a.set_title(f"reliability ({cal['split']} split), ECE {cal['ece']:.3f}")
    a.legend(fontsize=7, loc="center left")
    b.bar([r["low"] for r in bins], [r["rows"] for r in bins], width=width, align="edge", color="grey")
    b.set_xlim(0, 1)
    b.set_xlabel("confidence of the predicted class")
    b.set_ylabel("rows")
    b.set_title("rows per confidence bin")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


FIGURES: dict[str, Any] = {
    "curves": ("Loss and metrics, train vs validation", curves),
    "lr_grad": ("Learning rate and gradient norm", lr_and_grad),
    "layer_grads": ("Per-layer gradient norms and update ratios", layer_grad_norms),
    "activations": ("Per-layer activation histograms over training", activation_histograms),
    "confusion": ("Confusion matrix", confusion),
    "reliability": ("Reliability diagram (calibration)", reliability),
}
