"""optimizers: torch.optim's optimizers walking 2-D test surfaces (seeds 001/002, "Improved SGD").

Each optimizer starts from the same point of each surface and takes the same number of steps;
we record the path and the first step at which f(p) - f* falls below the surface's tolerance.
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

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from .page import Figure, LabResult, png


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

# name -> (family, LR factor, factory(params, lr)). RMSProp's running average of g² starts at 0 with
# no bias correction, so its first steps are lr/sqrt(1 - alpha) = 10·lr: it gets a tenth of the
# family LR to start like Adam does.
OPTIMIZERS = {
    "SGD": ("sgd", 1.0, lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "momentum": ("sgd", 1.0, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "Nesterov": ("sgd", 1.0, lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True)),
    "AdaGrad": ("adaptive", 1.0, lambda p, lr: torch.optim.Adagrad(p, lr=lr)),
    "RMSProp": ("adaptive", 0.1, lambda p, lr: torch.optim.RMSprop(p, lr=lr)),
    "AdaDelta": ("adadelta", 1.0, lambda p, lr: torch.optim.Adadelta(p, lr=lr)),
    "Adam": ("adaptive", 1.0, lambda p, lr: torch.optim.Adam(p, lr=lr)),
    "AdamW": ("adaptive", 1.0, lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=0.01)),
}
COLOURS = dict(zip(OPTIMIZERS, plt.get_cmap("tab10").colors))


def lr_for(surface: Surface, name: str) -> float:
    family, factor, _ = OPTIMIZERS[name]
    return factor * {"sgd": surface.lr_sgd, "adaptive": surface.lr_adaptive, "adadelta": surface.lr_adadelta}[family]


def walk(surface: Surface, name: str, steps: int, lr: float | None = None) -> tuple[np.ndarray, int | None]:
    """The path of optimizer `name` on `surface` (float64, start included) and its steps to tolerance."""
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS[name][2]([p], lr_for(surface, name) if lr is None else lr)
    path, reached = [p.detach().clone()], None
    for step in range(1, steps + 1):
        opt.zero_grad()
        surface.f(p[0], p[1]).backward()
        opt.step()
        q = p.detach().clone()
        path.append(q)
        gap = float(surface.f(q[0], q[1])) - surface.f_min
        if reached is None and gap < surface.tol:
            reached = step
        if not math.isfinite(gap) or float(q.abs().max()) > 1e6:
            break                  # diverged: keep the path so far
    return torch.stack(path).numpy(), reached


def _grid(s: Surface, n: int = 240):
    gx, gy = np.meshgrid(np.linspace(s.box[0], s.box[1], n), np.linspace(s.box[2], s.box[3], n))
    return gx, gy, s.f(gx, gy)


def _contours(results: dict[str, dict[str, tuple[np.ndarray, int | None]]]) -> bytes:
    fig, axes = plt.subplots(2, 2, figsize=(12, 12))
    for ax, s in zip(axes.flat, SURFACES):
        gx, gy, gz = _grid(s)
        if s.log_levels:
            levels = s.f_min + np.geomspace(max(s.tol, 1e-3), float(gz.max() - s.f_min), 18)
        else:
            levels = np.linspace(float(gz.min()), float(np.quantile(gz, 0.95)), 18)
        ax.contour(gx, gy, gz, levels=levels, colors="#bbb", linewidths=0.6, linestyles="solid")
        for name, (path, reached) in results[s.name].items():
            ax.plot(path[:, 0], path[:, 1], color=COLOURS[name], lw=1.2,
                    label=f"{name} (lr {lr_for(s, name):g}): {reached if reached else 'not'}"
                          f"{' steps' if reached else ' reached'}")
            ax.plot(path[-1, 0], path[-1, 1], "o", color=COLOURS[name], ms=4)
        ax.plot(*s.start, "ks", ms=6)
        ax.plot(*s.minimum, "k*", ms=12)
        ax.set_xlim(s.box[0], s.box[1])
        ax.set_ylim(s.box[2], s.box[3])
        ax.set_title(f"{s.name}  (■ start, ★ minimum; steps to f − f* < {s.tol:g})", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        # Below the panel: inside it the legend would hide the paths.
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return png(fig)


def _gaps(results: dict[str, dict[str, tuple[np.ndarray, int | None]]]) -> bytes:
    fig, axes = plt.subplots(1, len(SURFACES), figsize=(4.2 * len(SURFACES), 3.6))
    for ax, s in zip(axes, SURFACES):
        for name, (path, _) in results[s.name].items():
            gap = np.maximum(s.f(path[:, 0], path[:, 1]) - s.f_min, 1e-12)   # exact 0 has no log
            ax.plot(np.arange(len(gap)), gap, color=COLOURS[name], lw=1.1, label=name)
        ax.axhline(s.tol, color="black", ls=":", lw=1, label="tolerance")
        ax.set_yscale("log")
        ax.set_title(s.name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("f(p) − f*  (log scale, floor 1e-12)")
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return png(fig)


def run(options) -> LabResult:
    steps = 150 if options.quick else 1500
    results = {s.name: {name: walk(s, name, steps) for name in OPTIMIZERS} for s in SURFACES}
    rows = []
    for s in SURFACES:
        for name, (path, reached) in results[s.name].items():
            end = path[-1]
            rows.append([s.name, name, lr_for(s, name), reached, float(s.f(end[0], end[1]) - s.f_min),
                         float(np.hypot(end[0] - s.minimum[0], end[1] - s.minimum[1]))])
    quad = {name: results[SURFACES[0].name][name][1] for name in ("SGD", "momentum")}
    notes = [f"ill-conditioned quadratic at lr {SURFACES[0].lr_sgd}: SGD needs {quad['SGD']} steps, "
             f"momentum {quad['momentum']}"]
    for s in SURFACES:
        done = sorted((r, n) for n, (_, r) in results[s.name].items() if r)
        if done:
            notes.append(f"{s.name}: fastest {done[0][1]} ({done[0][0]} steps); "
                         f"{len(OPTIMIZERS) - len(done)} of {len(OPTIMIZERS)} did not reach the tolerance")
    figures = [
        Figure("optimizer_paths", "Paths of the eight optimizers on four surfaces, from the same start (square) "
               "towards the minimum (star); the legend gives each LR and its steps to tolerance. Watch SGD crawl "
               "along flat valleys, momentum overshoot and curve back, the adaptive methods head more directly "
               "for the minimum, and everything leave the saddle at its own speed.", _contours(results)),
        Figure("optimizer_gaps", "f(p) − f* per step (log scale) for each optimizer and surface; the dotted line is "
               "the tolerance used for 'steps to tolerance'.", _gaps(results)),
    ]
    return LabResult(
        lab="optimizers", title="optimizers on 2-D surfaces",
        summary=("torch.optim's SGD, SGD with momentum (0.9), Nesterov, AdaGrad, RMSProp, AdaDelta, Adam and AdamW "
                 f"(weight decay 0.01) take {steps} steps on four classic surfaces from the same start. Within a "
                 "family the learning rate is the same, so differences come from the update rule."),
        columns=["surface", "optimizer", "lr", "steps to tolerance", "final f − f*", "final distance to min"],
        rows=rows, figures=figures, settings={"steps": steps},
        notes=notes,
        series={s.name: {n: p.tolist() for n, (p, _) in results[s.name].items()} for s in SURFACES})
