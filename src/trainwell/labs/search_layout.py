"""search-layout: grid vs random search when one hyperparameter matters and one does not
(Bergstra & Bengio 2012, figure 1).

The objective stands in for a validation error over two hyperparameters scaled to [0, 1]:

    error(x, y) = g(x) + h(y),   g(x) = 1 - exp(-((x - x*) / WIDTH)²)   (important: 0 .. 1)
                                 h(y) = SMALL · (y - y*)²               (unimportant: 0 .. SMALL)

with the optimum (x*, y*) drawn afresh for every repeat (seeded). Both layouts get the same
budget of TRIALS = 9 evaluations. A 3 × 3 grid tries only 3 values of x (each three times, with
different y that barely matter); 9 random points try 9 different values of x. Over many repeats
the best random trial lands closer to x* — the reason random search beats grid search when few
hyperparameters matter.
"""

from __future__ import annotations

import numpy as np

from ..figures import plt
from .page import Figure, LabResult, png

SIDE = 3
TRIALS = SIDE * SIDE
WIDTH, SMALL = 0.08, 0.05


def optimum(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.0, 1.0))


def error(x, y, opt: tuple[float, float]):
    return 1.0 - np.exp(-(((x - opt[0]) / WIDTH) ** 2)) + SMALL * (y - opt[1]) ** 2


def grid_layout() -> np.ndarray:
    """Cell centres of a SIDE × SIDE grid: (TRIALS, 2)."""
    ticks = (np.arange(SIDE) + 0.5) / SIDE
    return np.array([(a, b) for a in ticks for b in ticks])


def random_layout(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=(TRIALS, 2))


def best(points: np.ndarray, opt: tuple[float, float]) -> dict[str, float]:
    errs = error(points[:, 0], points[:, 1], opt)
    i = int(np.argmin(errs))
    return {"x": float(points[i, 0]), "y": float(points[i, 1]), "error": float(errs[i]),
            "x_miss": abs(float(points[i, 0]) - opt[0])}


def repeat(seed: int) -> dict:
    """One repeat: a fresh optimum, the grid and a random layout, and each layout's best trial."""
    rng = np.random.default_rng(seed)
    opt = optimum(rng)
    layouts = {"grid": grid_layout(), "random": random_layout(rng)}
    return {"optimum": opt, "points": layouts, "best": {k: best(p, opt) for k, p in layouts.items()}}


def _layouts_figure(rep: dict) -> bytes:
    opt = rep["optimum"]
    fig = plt.figure(figsize=(11, 5.6))
    outer = fig.add_gridspec(1, 2, wspace=0.25)
    xs = np.linspace(0, 1, 400)
    for k, (name, pts) in enumerate(rep["points"].items()):
        gs = outer[k].subgridspec(2, 2, width_ratios=(1, 4), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
        main = fig.add_subplot(gs[1, 1])
        top = fig.add_subplot(gs[0, 1], sharex=main)
        left = fig.add_subplot(gs[1, 0], sharey=main)
        gx, gy = np.meshgrid(xs, xs)
        main.contourf(gx, gy, error(gx, gy, opt), levels=20, cmap="Greys_r", alpha=0.5)
        main.scatter(pts[:, 0], pts[:, 1], s=40, color="#1f77b4", edgecolors="black", zorder=3, label="trials")
        b = rep["best"][name]
        main.scatter([b["x"]], [b["y"]], s=140, facecolors="none", edgecolors="red", lw=2, zorder=4,
                     label="best trial")
        main.plot(*opt, "r*", ms=12, label="optimum")
        main.set_xlabel("x: important hyperparameter")
        main.tick_params(labelleft=False)
        main.set_xlim(0, 1)
        main.set_ylim(0, 1)
        main.legend(fontsize=7, loc="lower right", framealpha=0.85)
        top.plot(xs, 1 - np.exp(-(((xs - opt[0]) / WIDTH) ** 2)), color="black")
        for x in np.unique(np.round(pts[:, 0], 9)):
            top.axvline(x, color="#1f77b4", lw=1)
        top.set_title(f"{name}: {len(np.unique(np.round(pts[:, 0], 9)))} distinct x values, best x misses x* by "
                      f"{b['x_miss']:.3f}", fontsize=9)
        top.set_ylabel("g(x)", fontsize=8)
        top.tick_params(labelbottom=False, labelsize=7)
        left.plot(SMALL * (xs - opt[1]) ** 2, xs, color="black", lw=2)
        left.text(0.5, 0.5, f"h(y) ≤ {SMALL:g}:\nnearly flat", fontsize=7, ha="center", va="center",
                  transform=left.transAxes, color="#555", bbox={"facecolor": "white", "edgecolor": "none"})
        for y in np.unique(np.round(pts[:, 1], 9)):
            left.axhline(y, color="#1f77b4", lw=1)
        left.set_xlim(0, 1)         # same scale as g(x): h(y) hardly moves
        left.set_xticks([0, 0.5])   # a tick at 1 would collide with the main panel's 0
        left.set_xlabel("h(y)", fontsize=8)
        left.set_ylabel("y: unimportant hyperparameter")
        left.tick_params(labelsize=7)
    fig.suptitle(f"Grid vs random search, {TRIALS} trials each: error(x, y) = g(x) + h(y), shaded (dark = low); "
                 "the margins show g and h on the same scale with the values each layout tried", fontsize=10)
    return png(fig)


def _spread_figure(reps: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    data = [[r["best"][k]["x_miss"] for r in reps] for k in ("grid", "random")]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)           # horizontal jitter only, so the dots do not hide each other
    for k, d in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(d)), d, s=10, alpha=0.5)
    ax.set_xticks([1, 2], ["grid", "random"])
    ax.set_ylabel("|x of best trial − x*|")
    ax.set_title(f"How far the best trial's x is from x*, over {len(reps)} repeats "
                 f"(medians {np.median(data[0]):.3f} vs {np.median(data[1]):.3f})", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return png(fig)


def run(options) -> LabResult:
    n = options.seeds or (20 if options.quick else 200)
    reps = [repeat(options.seed + k) for k in range(n)]
    rows = []
    for name in ("grid", "random"):
        miss = np.array([r["best"][name]["x_miss"] for r in reps])
        err = np.array([r["best"][name]["error"] for r in reps])
        other = "random" if name == "grid" else "grid"
        wins = np.mean([r["best"][name]["error"] < r["best"][other]["error"] for r in reps])
        distinct = np.mean([len(np.unique(np.round(r["points"][name][:, 0], 9))) for r in reps])
        rows.append([name, TRIALS, float(distinct), float(np.median(miss)), float(miss.mean()),
                     float(np.median(err)), float(wins)])
    return LabResult(
        lab="search-layout", title="grid vs random search layout",
        summary=(f"Both layouts spend {TRIALS} trials on error(x, y) = g(x) + h(y), where only x matters much. The grid "
                 f"tries {SIDE} values of x, random search {TRIALS}; over {n} repeats with a fresh optimum each time, "
                 "random search's best trial is usually closer to the best x (Bergstra & Bengio 2012)."),
        columns=["layout", "trials", "distinct x values", "median |x_best − x*|", "mean |x_best − x*|",
                 "median best error", "share of repeats it wins"],
        rows=rows,
        figures=[Figure("search_layouts", "The two layouts for one repeat: trials on the error surface, the best "
                        "trial circled, the optimum starred; above, g(x) with the x values tried; left, h(y) on the "
                        "same scale (nearly flat).", _layouts_figure(reps[0])),
                 Figure("search_spread", "Distance of the best trial's x from the optimum, per layout, over all "
                        "repeats (box: quartiles).", _spread_figure(reps))],
        settings={"repeats": n, "trials per layout": TRIALS, "g width": WIDTH, "h amplitude": SMALL},
        notes=[f"random search's best x is closer to x* in {np.mean([r['best']['random']['x_miss'] < r['best']['grid']['x_miss'] for r in reps]):.0%} of the repeats"],
        series={"repeats": [{"optimum": r["optimum"], "best": r["best"]} for r in reps]})
