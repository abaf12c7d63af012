"""optimizers: torch.optim's optimizers walking 2-D test surfaces (seeds 001/002, "Improved SGD").

Each optimizer starts from the same point of each surface and takes the same number of steps.
Each is scored against its own objective: f for all but AdamW, whose decoupled weight decay λ
makes it minimize (approximately) f + λ/2·‖p‖², so its gap is measured to that objective's own
minimum. We record when the gap first falls below the surface's tolerance and from which step on
it stays there to the end ("settled"): touching the tolerance and bouncing back out is not
convergence.
The surfaces show one difficulty each:

    ill-conditioned quadratic  curvatures 1 and 25: plain SGD crawls along the flat direction,
                               momentum builds up speed there (the test: fewer steps than SGD)
    Rosenbrock                 a curved, nearly flat valley
    Beale                      flat plateaus and steep walls
    saddle                     f = x²/2 + y⁴/4 − y²/2 from next to the saddle point at the origin:
                               the gradient pointing away from it is tiny at first

Learning rates are per surface and family (SGD-like / adaptive), the same for every optimizer of
a family, so SGD and momentum are compared at the same LR (RMSProp takes a tenth, see below);
AdaDelta runs with torch's default lr = 1: its steps start at about sqrt(eps) = 1e-3 and grow
only as its own update history does, which is why it is slow on every surface here (within
1500 steps it reaches the tolerance on the saddle only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..figures import plt
from .page import Figure, LabResult
from .params import Param


@dataclass(frozen=True)
class Surface:
    name: str
    f: object                  # (x, y) tensors or arrays -> value; works for torch and numpy
    start: tuple[float, float]
    minimum: tuple[float, float]
    f_min: float
    box: tuple[float, float, float, float]      # xmin, xmax, ymin, ymax of the plot
    lr_sgd: float
    lr_adaptive: float
    lr_adadelta: float
    tol: float
    log_levels: bool


def _quadratic(x, y):
    return 0.5 * (x ** 2 + 25.0 * y ** 2)


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100.0 * (y - x ** 2) ** 2


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def _saddle(x, y):
    return 0.5 * x ** 2 + 0.25 * y ** 4 - 0.5 * y ** 2


SURFACES = (
    Surface("ill-conditioned quadratic", _quadratic, (-8.0, 1.0), (0.0, 0.0), 0.0, (-9, 3, -1.6, 1.6),
            lr_sgd=0.05, lr_adaptive=0.3, lr_adadelta=1.0, tol=1e-4, log_levels=True),
    Surface("Rosenbrock", _rosenbrock, (-1.5, 2.0), (1.0, 1.0), 0.0, (-2.0, 2.0, -1.0, 3.0),
            lr_sgd=1e-3, lr_adaptive=0.05, lr_adadelta=1.0, tol=1e-3, log_levels=True),
    Surface("Beale", _beale, (1.0, 1.6), (3.0, 0.5), 0.0, (-0.5, 4.0, -1.0, 2.0),
            lr_sgd=2e-3, lr_adaptive=0.05, lr_adadelta=1.0, tol=1e-3, log_levels=True),
    Surface("saddle", _saddle, (1.5, 1e-4), (0.0, 1.0), -0.25, (-1.7, 1.7, -1.5, 1.5),
            lr_sgd=0.1, lr_adaptive=0.05, lr_adadelta=1.0, tol=1e-3, log_levels=False),
)

# name -> (family, LR factor, factory(params, lr, weight decay)). RMSProp's running average of g² starts at 0
# with no bias correction, so its first steps are lr/sqrt(1 - alpha) = 10·lr: it gets a tenth of the family LR
# to start like Adam does.
OPTIMIZERS = {
    "SGD": ("sgd", 1.0, lambda p, lr, wd: torch.optim.SGD(p, lr=lr)),
    "momentum": ("sgd", 1.0, lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "Nesterov": ("sgd", 1.0, lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
    "AdaGrad": ("adaptive", 1.0, lambda p, lr, wd: torch.optim.Adagrad(p, lr=lr)),
    "RMSProp": ("adaptive", 0.1, lambda p, lr, wd: torch.optim.RMSprop(p, lr=lr)),
    "AdaDelta": ("adadelta", 1.0, lambda p, lr, wd: torch.optim.Adadelta(p, lr=lr)),
    "Adam": ("adaptive", 1.0, lambda p, lr, wd: torch.optim.Adam(p, lr=lr)),
    "AdamW": ("adaptive", 1.0, lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd)),
}
COLOURS = dict(zip(OPTIMIZERS, plt.get_cmap("tab10").colors))
DECAYED = ("AdamW",)

PARAMS = {
    "optimizers": Param("names", ["SGD", "momentum", "Nesterov", "RMSProp", "Adam"],
                        "optimizers to compare (at most 8; five by default so each panel stays readable)",
                        choices=tuple(OPTIMIZERS)),
    "lr-scale": Param("float", 1.0, "multiplies every learning rate (e.g. 3 or 0.3 to show how each method copes "
                      "with a worse LR)", low=0, low_open=True, high=1000),
    "steps": Param("int", 1500, "steps on each surface", low=10, high=20000, quick=150),
    "weight-decay": Param("float", 0.01, "AdamW's weight decay λ", low=0, high=10),
}


def lr_for(surface: Surface, name: str, scale: float = 1.0) -> float:
    family, factor, _ = OPTIMIZERS[name]
    lr = factor * {"sgd": surface.lr_sgd, "adaptive": surface.lr_adaptive, "adadelta": surface.lr_adadelta}[family]
    return lr * scale


def objective(surface: Surface, name: str, wd: float):
    """The function optimizer `name` minimizes on `surface`: f, or f + wd/2·‖p‖² for decoupled decay."""
    if name in DECAYED and wd > 0:
        return lambda x, y: surface.f(x, y) + 0.5 * wd * (x ** 2 + y ** 2)
    return surface.f


def objective_min(surface: Surface, name: str, wd: float) -> tuple[tuple[float, float], float]:
    """(argmin, min) of the objective of `name`: the surface's own for plain methods, else found by L-BFGS
    (float64) from the surface's minimum, which the small decay moves only a little."""
    if name not in DECAYED or wd == 0:
        return surface.minimum, surface.f_min
    f = objective(surface, name, wd)
    p = torch.tensor(surface.minimum, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v = f(p[0], p[1])
        v.backward()
        return v

    for _ in range(5):
        opt.step(closure)
    q = p.detach()
    return (float(q[0]), float(q[1])), float(f(q[0], q[1]))


@dataclass
class Walk:
    path: np.ndarray            # (steps + 1, 2), start included
    gaps: np.ndarray            # objective - its minimum, per point
    first: int | None           # first step with gap < tol
    settled: int | None         # the step from which the gap stays < tol to the end
    minimum: tuple[float, float]


def walk(surface: Surface, name: str, steps: int, lr: float | None = None, wd: float = 0.01) -> Walk:
    """The path of optimizer `name` on `surface` (float64), its gaps to its own objective's minimum, and when
    it first touched and when it settled within the surface's tolerance."""
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS[name][2]([p], lr_for(surface, name) if lr is None else lr, wd)
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        surface.f(p[0], p[1]).backward()
        opt.step()
        q = p.detach().clone()
        path.append(q)
        if not bool(torch.isfinite(q).all()) or float(q.abs().max()) > 1e6:
            break                  # diverged: keep the path so far
    arr = torch.stack(path).numpy()
    where, f_min = objective_min(surface, name, wd)
    f = objective(surface, name, wd)
    with np.errstate(all="ignore"):
        gaps = np.asarray(f(arr[:, 0], arr[:, 1]), dtype=float) - f_min
    ok = np.isfinite(gaps) & (gaps < surface.tol)
    first = int(np.argmax(ok)) if ok.any() else None
    settled = None
    if ok[-1] and len(arr) == steps + 1:
        bad = np.flatnonzero(~ok)
        settled = int(bad[-1] + 1) if len(bad) else 0
    return Walk(arr, gaps, first, settled, where)


def _grid(s: Surface, n: int = 240):
    gx, gy = np.meshgrid(np.linspace(s.box[0], s.box[1], n), np.linspace(s.box[2], s.box[3], n))
    return gx, gy, s.f(gx, gy)


def _label(r: dict) -> str:
    if r["settled at step"] is not None:
        return f"{r['optimizer']} (lr {r['lr']:g}): settled at {r['settled at step']}"
    if r["first below tol"] is not None:
        return f"{r['optimizer']} (lr {r['lr']:g}): touched at {r['first below tol']}, left again"
    return f"{r['optimizer']} (lr {r['lr']:g}): not reached"


def _contours(results: dict[str, dict[str, Walk]], records: list[dict], surfaces):
    fig, axes = plt.subplots(2, 2, figsize=(12, 12.5))
    by = {(r["surface"], r["optimizer"]): r for r in records}
    for ax, s in zip(axes.flat, surfaces):
        gx, gy, gz = _grid(s)
        if s.log_levels:
            levels = s.f_min + np.geomspace(max(s.tol, 1e-3), float(gz.max() - s.f_min), 18)
        else:
            levels = np.linspace(float(gz.min()), float(np.quantile(gz, 0.95)), 18)
        ax.contour(gx, gy, gz, levels=levels, colors="#bbb", linewidths=0.6, linestyles="solid")
        for name, w in results[s.name].items():
            ax.plot(w.path[:, 0], w.path[:, 1], color=COLOURS[name], lw=1.4, label=_label(by[(s.name, name)]))
            ax.plot(w.path[-1, 0], w.path[-1, 1], "o", color=COLOURS[name], ms=5)
        ax.plot(*s.start, "ks", ms=7)
        ax.plot(*s.minimum, "k*", ms=13)
        ax.set_xlim(s.box[0], s.box[1])
        ax.set_ylim(s.box[2], s.box[3])
        ax.set_title(f"{s.name}  (■ start, ★ minimum; tolerance {s.tol:g})", fontsize=11)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        # Below the panel: inside it the legend would hide the paths.
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def _gaps(results: dict[str, dict[str, Walk]], surfaces):
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    for ax, s in zip(axes.flat, surfaces):
        for name, w in results[s.name].items():
            gap = np.maximum(w.gaps, 1e-12)      # exact 0 has no log
            ax.plot(np.arange(len(gap)), gap, color=COLOURS[name], lw=1.2,
                    label=name + (" (to f + λ/2·‖p‖²)" if name in DECAYED else ""))
        ax.axhline(s.tol, color="black", ls=":", lw=1, label="tolerance")
        ax.set_yscale("log")
        ax.set_title(s.name, fontsize=11)
        ax.set_xlabel("step")
        ax.set_ylabel("gap to own minimum (log, floor 1e-12)")
        ax.grid(alpha=0.3)
    axes[0][1].legend(fontsize=9, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


# ---- captions: every statement is computed from the table's rows ------------------------------------------

def captions(records: list[dict], p: dict) -> tuple[dict[str, str], list[str]]:
    notes = []
    by_surface: dict[str, list[dict]] = {}
    for r in records:
        by_surface.setdefault(r["surface"], []).append(r)
    for surface, rs in by_surface.items():
        settled = sorted((r for r in rs if r["settled at step"] is not None), key=lambda r: r["settled at step"])
        bounced = [r for r in rs if r["settled at step"] is None and r["first below tol"] is not None]
        never = [r for r in rs if r["first below tol"] is None]
        bits = []
        if settled:
            bits.append("settled within the tolerance: " + ", ".join(
                f"{r['optimizer']} at step {r['settled at step']}" for r in settled))
        bits += [f"{r['optimizer']} touched it at step {r['first below tol']} but left again (final gap "
                 f"{r['final gap']:.2g})" for r in bounced]
        if never:
            bits.append("never reached it: " + ", ".join(r["optimizer"] for r in never))
        notes.append(f"{surface}: " + "; ".join(bits))
    sgd = {r["optimizer"]: r for r in records if r["surface"] == "ill-conditioned quadratic"}
    extra = ""
    if "SGD" in sgd and "momentum" in sgd and sgd["SGD"]["settled at step"] and sgd["momentum"]["settled at step"]:
        a, b = sgd["SGD"]["settled at step"], sgd["momentum"]["settled at step"]
        extra = (f" On the ill-conditioned quadratic at the same lr {sgd['SGD']['lr']:g}, momentum settles "
                 f"{'faster' if b < a else 'slower'} than plain SGD ({b} vs {a} steps).")
    decayed = [r for r in records if r["optimizer"] in DECAYED]
    wd_note = (f" AdamW is scored against f + λ/2·‖p‖² with λ = {p['weight-decay']:g}, the objective its decay "
               "pulls towards, so its star is not its target." if decayed else "")
    paths = (f"Paths of {len({r['optimizer'] for r in records})} optimizers on four surfaces from the same start "
             "(square) towards the minimum (star); each legend says when the method settled within the tolerance "
             "(stayed below it to the end), or that it touched it and left again, or never reached it." + extra
             + wd_note)
    gaps = ("Gap to each method's own minimum per step (log scale); the dotted line is the tolerance. A line that "
            "dips below it and comes back up has touched the tolerance without settling." + wd_note)
    return {"optimizer_paths": paths, "optimizer_gaps": gaps}, notes


def run(options) -> LabResult:
    p = options.params
    steps, scale, wd = p["steps"], p["lr-scale"], p["weight-decay"]
    names = p["optimizers"]
    results = {s.name: {name: walk(s, name, steps, lr_for(s, name, scale), wd) for name in names}
               for s in SURFACES}
    columns = ["surface", "optimizer", "lr", "objective", "first below tol", "settled at step", "final gap",
               "final distance to own min"]
    rows = []
    for s in SURFACES:
        for name, w in results[s.name].items():
            end = w.path[-1]
            rows.append([s.name, name, lr_for(s, name, scale),
                         f"f + {wd / 2:g}·‖p‖²" if name in DECAYED and wd > 0 else "f",
                         w.first, w.settled, float(w.gaps[-1]),
                         float(np.hypot(end[0] - w.minimum[0], end[1] - w.minimum[1]))])
    records = [dict(zip(columns, r)) for r in rows]
    caption, notes = captions(records, p)
    figures = [Figure("optimizer_paths", caption["optimizer_paths"], _contours(results, records, SURFACES)),
               Figure("optimizer_gaps", caption["optimizer_gaps"], _gaps(results, SURFACES))]
    scaled = f", every LR ×{scale:g}" if scale != 1 else ""
    return LabResult(
        lab="optimizers", title=f"optimizers on 2-D surfaces: {', '.join(names)}{scaled}",
        summary=(f"torch.optim's {', '.join(names)} take {steps} steps on four classic surfaces from the same start"
                 f"{scaled}. Within a family (SGD-like, adaptive) the learning rate is the same, so differences come "
                 "from the update rule. 'settled at step' is the step from which the gap to the method's own "
                 "minimum stays below the tolerance to the end; 'first below tol' only says it got there once."),
        columns=columns, rows=rows, figures=figures,
        settings={"optimizers": ", ".join(names), "steps": steps, "lr scale": scale, "AdamW weight decay": wd},
        notes=notes,
        series={s.name: {n: w.path.tolist() for n, w in results[s.name].items()} for s in SURFACES})
