"""The report's figures, drawn on unmanaged matplotlib Figures (see figures.py) and returned as PNG bytes.

Each function takes the stored evidence (history rows, probe records, facts) and returns one
figure, or None when the run holds nothing to draw.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import MaxNLocator

from ..figures import fit_margins, plt, render
from .captions import CAPTIONS

if TYPE_CHECKING:
    from ..watch.evidence import Evidence

TRAIN, VAL = "#1f77b4", "#ff7f0e"


def _png(fig) -> bytes:
    """One draw at the figure's own size: no tight bounding box (a second draw) to keep its labels in."""
    return render(fig, "png", 100, trim=False)


def _laid_out(fig) -> bytes:
    """A report figure as PNG: its margins and gaps fitted to its text (figures.fit_margins), at
    about half the cost of matplotlib's constrained layout, which draws every artist to find them."""
    fit_margins(fig)
    return _png(fig)


def _subplots(*args, **kwargs):
    return plt.subplots(*args, **kwargs)


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


# Widest figure drawn at its own size: the report's column (max-width 1100 px) at 100 dpi, less a margin.
MAX_WIDTH_IN = 10.8


def _focus(ax, series: list[tuple[list[int], list[float]]]) -> None:
    """y-limits from the epochs that matter, with a margin. The range of the last three quarters of
    the epochs, widened by itself on each side, is the band; the leading epochs outside it (an epoch-1
    accuracy of 0.4 before 0.97 .. 0.995) are left off the axis, and the x label says which and how
    far, so the differences near 1.0 are not squashed. Nothing is left off otherwise."""
    epochs = sorted({e for x, _ in series for e in x})
    if len(epochs) < 4:
        return
    cutoff = epochs[max(1, len(epochs) // 4)]
    points = [(e, v) for x, y in series for e, v in zip(x, y)]
    settled = [v for e, v in points if e >= cutoff]
    lo, hi = min(settled), max(settled)
    band = (lo - (hi - lo), hi + (hi - lo))
    start = next(e for e in epochs if e >= cutoff or all(band[0] <= v <= band[1] for t, v in points if t == e))
    off, kept = [p for p in points if p[0] < start], [v for e, v in points if e >= start]
    if not off:
        return
    lo, hi = min(kept), max(kept)
    margin = 0.1 * (hi - lo) or 0.01 * max(abs(hi), 1e-3)
    ax.set_ylim(lo - margin, hi + margin)
    which = f"epoch {epochs[0]}" if start == epochs[1] else f"epochs {epochs[0]}-{max(e for e, _ in off)}"
    below, above = [v for _, v in off if v < lo], [v for _, v in off if v > hi]
    ends = ([f"lowest {min(below):.3g}"] if below else []) + ([f"highest {max(above):.3g}"] if above else [])
    ax.set_xlabel(f"epoch\n{which} off the axis:\n{', '.join(ends)}")


def curves(ev: Evidence) -> bytes | None:
    """Loss and each metric, train vs validation, with the best and stop epochs marked; at most four
    panels a row, so the labels keep their size on the page."""
    names = ["loss"] + [c[len("train_"):] for c in (ev.history[0] if ev.history else {})
                        if c.startswith("train_") and c != "train_loss"]
    names = [n for n in names if _series(ev, f"train_{n}")[0]]
    if not names:
        return None
    cols = len(names) if len(names) <= 4 else 3
    rows = -(-len(names) // cols)
    side = min(4.2, MAX_WIDTH_IN / cols)
    fig, axes = _subplots(rows, cols, figsize=(side * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.remove()
    for ax, name in zip(axes.flat, names):
        drawn = []
        for split, colour in (("train", TRAIN), ("val", VAL)):
            x, y = _series(ev, f"{split}_{name}")
            if x:
                ax.plot(x, y, color=colour, label=split, marker="." if len(x) < 30 else None)
                drawn.append((x, y))
        if name == "loss":
            _log_if_wide(ax, _series(ev, "train_loss")[1] + _series(ev, "val_loss")[1])
        ax.set_xlabel("epoch")
        if name != "loss":
            _focus(ax, drawn)
        _mark_epochs(ax, ev)
        scaled = ev.metrics.get("target_normalize")
        ax.set_title(f"loss (on {scaled}-scaled targets)" if name == "loss" and scaled else name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _laid_out(fig)


def lr_and_grad(ev: Evidence) -> bytes | None:
    x, lr = _series(ev, "lr")
    xg, g = _series(ev, "grad_norm")
    if not x and not xg:
        return None
    fig, (a, b) = _subplots(1, 2, figsize=(10, 3.0))
    a.plot(x, lr, color="purple")
    a.set_title("learning rate (end of epoch)")
    b.plot(xg, g, color="black")
    b.set_title("global gradient norm (mean per step, before clipping)")
    _log_if_wide(b, g)
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _laid_out(fig)


def layer_grad_norms(ev: Evidence) -> bytes | None:
    """Per-layer weight-gradient norm and update/weight ratio over the epochs (log scale)."""
    grads = ev.layer_series("weights", "grad_norm")
    ratios = ev.layer_series("weights", "update_ratio")
    if not grads:
        return None
    fig, (a, b) = _subplots(1, 2, figsize=(9.5, 3.3))
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
    return _laid_out(fig)


def activation_histograms(ev: Evidence, max_rows: int = 3) -> bytes | None:
    """Per-layer activation histograms (columns) at the first, a middle and the last epoch (rows)."""
    epochs = [e for e in ev.probes.get("epochs", []) if e.get("activations")]
    layers = [a["name"] for a in ev.probes.get("activations", [])]
    if not epochs or not layers:
        return None
    picks = sorted({0, len(epochs) // 2, len(epochs) - 1})[:max_rows]
    rows = [epochs[i] for i in picks]
    fig, axes = _subplots(len(rows), len(layers), figsize=(min(2.3 * len(layers) + 0.5, MAX_WIDTH_IN),
                                                              2.1 * len(rows)), squeeze=False)
    for r, rec in enumerate(rows):
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            stats = rec["activations"].get(layer)
            if stats and stats.get("hist"):
                h = stats["hist"]
                n = len(h["counts"])
                lo, hi = (h["lo"], h["hi"]) if h["hi"] > h["lo"] else (h["lo"] - 0.5, h["lo"] + 0.5)
                # one filled step outline per histogram: a single artist, where bars are one per bin
                ax.stairs(h["counts"], [lo + (hi - lo) * i / n for i in range(n + 1)], fill=True, color=TRAIN)
                rest = sorted(h["counts"])[-2] if n > 1 else 0
                if rest and max(h["counts"]) > 5 * rest:
                    # ReLU's spike at zero would flatten the rest of the histogram: clip it, say so.
                    ax.set_ylim(0, rest * 1.3)
                    ax.text(0.98, 0.9, f"peak {max(h['counts']) / sum(h['counts']):.0%} (clipped)", fontsize=7,
                            ha="right", transform=ax.transAxes)
                ax.set_title(f"{layer}\nmean {stats['mean']:.2f} std {stats['std']:.2f}", fontsize=8)
            ax.tick_params(labelsize=7.5)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"epoch {rec['epoch']}", fontsize=8)
    return _laid_out(fig)


def confusion(ev: Evidence) -> bytes | None:
    cm = ev.facts.get("confusion")
    if not cm:
        return None
    m = cm["matrix"]
    classes = ev.facts.get("data", {}).get("classes") or [str(i) for i in range(len(m))]
    n = len(m)
    size = min(1.8 + 0.35 * n, 5.5)
    fig, ax = _subplots(figsize=(size, size))
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
    sep = " " if size >= 3.4 else "\n"      # on a small matrix the title takes two lines, not more width
    ax.set_title(f"confusion matrix{sep}({cm['split']} split)")
    return _laid_out(fig)


def reliability(ev: Evidence) -> bytes | None:
    """Reliability diagram: accuracy against mean confidence per confidence bin (top label), with the
    rows per bin; a calibrated model sits on the diagonal."""
    cal = ev.metrics.get("calibration")
    if not cal or not cal.get("bins"):
        return None
    bins = cal["bins"]
    width = 1.0 / cal["n_bins"]
    fig, (a, b) = _subplots(1, 2, figsize=(8.4, 3.4))
    a.bar([r["low"] for r in bins], [r["accuracy"] for r in bins], width=width, align="edge", color=TRAIN,
          edgecolor="white", label="accuracy")
    a.plot([r["confidence"] for r in bins], [r["accuracy"] for r in bins], "o", color=VAL, ms=4,
           label="(mean confidence, accuracy)")
    a.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
    title = f"reliability ({cal['split']} split), ECE {cal['ece']:.3f}"
    scaled = ev.metrics.get("temperature") or {}
    before = scaled.get("reliability_before")
    if before and before.get("bins"):       # calibrate = "temperature": the model before scaling, for comparison
        a.plot([r["confidence"] for r in before["bins"]], [r["accuracy"] for r in before["bins"]], "x", color="black",
               ms=4, label="before temperature scaling")
        title = (f"reliability ({cal['split']} split), ECE {before['ece']:.3f} -> {cal['ece']:.3f}\n"
                 f"(temperature scaling, T = {scaled['temperature']:.3g})")
    a.set_xlim(0, 1)
    a.set_ylim(0, 1.03)
    a.set_xlabel("confidence of the predicted class")
    a.set_ylabel("accuracy")
    a.set_title(title)
    a.legend(fontsize=7, loc="center left")
    b.bar([r["low"] for r in bins], [r["rows"] for r in bins], width=width, align="edge", color="grey")
    b.set_xlim(0, 1)
    b.set_xlabel("confidence of the predicted class")
    b.set_ylabel("rows")
    b.set_title("rows per confidence bin")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return _laid_out(fig)


# key -> (caption, draw), in page order
FIGURES: dict[str, Any] = {key: (CAPTIONS[key], draw) for key, draw in (
    ("curves", curves), ("lr_grad", lr_and_grad), ("layer_grads", layer_grad_norms),
    ("activations", activation_histograms), ("confusion", confusion), ("reliability", reliability))}
