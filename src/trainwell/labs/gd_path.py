"""gd-path: plain gradient descent on f(x) = x² from x0 = 10 (seed 000), one path per learning rate.

x_{t+1} = x_t - lr * 2 x_t = (1 - 2 lr) x_t, so the factor |1 - 2 lr| decides everything: below 1
the path converges (monotonically for lr <= 0.5, jumping across the minimum above), exactly 1
(lr = 1.0) it jumps between +x0 and -x0 forever, above 1 it diverges. The paths are computed by
torch.optim.SGD on a float64 parameter, not by the formula; the formula is what the test checks.
A second figure shows the zig-zag of gradient descent on an ill-conditioned 2-D quadratic.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .page import Figure, LabResult, png

LRS = (0.1, 0.2, 0.9, 1.0, 1.1)
X0, STEPS = 10.0, 10
# Ill-conditioned quadratic f = (x² + K y²) / 2: curvatures 1 and K, GD stable for lr < 2/K.
K, LRS_2D, START_2D, STEPS_2D = 20.0, (0.03, 0.09), (-9.0, 1.5), 30


def descend(f, start, lr: float, steps: int) -> np.ndarray:
    """Points visited by torch.optim.SGD (no momentum) minimizing f from `start`, start included."""
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    path = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        f(p).backward()
        opt.step()
        path.append(p.detach().clone())
    return torch.stack(path).numpy()


def verdict(path: np.ndarray) -> str:
    """converges / oscillates (bounded, no progress) / diverges, from the distances to the minimum."""
    d = np.abs(path)
    crosses = bool(np.all(path[1:] * path[:-1] < 0))
    ratio = d[-1] / d[0]
    if not np.isfinite(ratio) or ratio > 1 + 1e-9:
        return "diverges"
    if ratio > 1 - 1e-9:
        return "oscillates" if crosses else "stalls"
    return "converges (zig-zag)" if crosses else "converges"


def _square(x):
    return (x ** 2).sum()


def _quad2d(p):
    return 0.5 * (p[0] ** 2 + K * p[1] ** 2)


def _paths_figure(paths: dict[float, np.ndarray], verdicts: dict[float, str]) -> bytes:
    fig, axes = plt.subplots(1, len(paths), figsize=(3.3 * len(paths), 3.2))
    for ax, (lr, path) in zip(axes, paths.items()):
        reach = max(1.25 * X0, 1.05 * float(np.abs(path).max()))
        xs = np.linspace(-reach, reach, 400)
        ax.plot(xs, xs ** 2, color="#555", lw=1, label="f(x) = x²")
        ax.plot(path, path ** 2, "--", color="red", lw=0.8)
        ax.scatter(path, path ** 2, c=np.arange(len(path)), cmap="autumn", s=18, zorder=3, label="x_t")
        ax.scatter([path[0]], [path[0] ** 2], marker="s", color="black", s=28, zorder=4, label="x_0 = 10")
        ax.set_title(f"lr = {lr}: {verdicts[lr]}", fontsize=10)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("f(x)")
    axes[0].legend(fontsize=7, loc="upper center")
    fig.suptitle(f"Gradient descent on f(x) = x² from x0 = {X0:g}, {STEPS} steps (colour: early red → late yellow)",
                 fontsize=11)
    fig.tight_layout()
    return png(fig)


def _distance_figure(paths: dict[float, np.ndarray], verdicts: dict[float, str]) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    # lr and 1 - lr give the same |x_t| (0.1 and 0.9): distinct line styles keep both visible.
    for (lr, path), ls, mk in zip(paths.items(), ("-", "-", "--", "-.", ":"), "osD^v"):
        ax.plot(np.arange(len(path)), np.abs(path), ls=ls, marker=mk, ms=4, label=f"lr {lr}: {verdicts[lr]}")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("|x_t - x*|  (log scale)")
    ax.set_title("Distance to the minimum: |x_t| = |1 - 2·lr|^t · |x_0|")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return png(fig)


def _zigzag_figure(paths2d: dict[float, np.ndarray]) -> bytes:
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    gx, gy = np.meshgrid(np.linspace(-10, 2, 300), np.linspace(-2.2, 2.2, 200))
    ax.contour(gx, gy, 0.5 * (gx ** 2 + K * gy ** 2), levels=np.geomspace(0.05, 80, 14), colors="#bbb",
               linewidths=0.7)
    for lr, path in paths2d.items():
        ax.plot(path[:, 0], path[:, 1], marker="o", ms=3, lw=1,
                label=f"lr {lr}: y-factor 1-{K:g}·lr = {1 - K * lr:+.2f}, x-factor {1 - lr:.2f}")
    ax.plot([0], [0], marker="*", color="black", ms=10, label="minimum")
    ax.set_xlabel("x (curvature 1)")
    ax.set_ylabel(f"y (curvature {K:g})")
    ax.set_title(f"Ill-conditioned f = (x² + {K:g}·y²)/2, {STEPS_2D} steps: near lr = 2/{K:g} the path zig-zags "
                 "in y while crawling in x", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return png(fig)


def run(options) -> LabResult:
    paths = {lr: descend(_square, [X0], lr, STEPS)[:, 0] for lr in LRS}
    verdicts = {lr: verdict(p) for lr, p in paths.items()}
    paths2d = {lr: descend(_quad2d, list(START_2D), lr, STEPS_2D) for lr in LRS_2D}
    rows = [[lr, 1 - 2 * lr, verdicts[lr], float(path[-1]), float(path[-1] ** 2), float(abs(path[-1]) / X0)]
            for lr, path in paths.items()]
    notes = [f"lr {lr}: {verdicts[lr]}" for lr in LRS]
    notes += [f"2-D quadratic, lr {lr}: {verdict(p[:, 1])} in y, distance to the minimum ×"
              f"{np.linalg.norm(p[-1]) / np.linalg.norm(p[0]):.3g} after {STEPS_2D} steps" for lr, p in paths2d.items()]
    figures = [
        Figure("gd_paths", "Each panel: the 10 steps of gradient descent on f(x) = x² for one learning rate, drawn "
               "on the curve. lr 0.1 and 0.2 slide down one side; 0.9 jumps across the minimum but closes in; "
               "1.0 jumps between ±10 forever; 1.1 jumps further out each step.",
               _paths_figure(paths, verdicts)),
        Figure("gd_distance", "Distance to the minimum per step (log scale): straight lines of slope "
               "log|1 − 2·lr| (lr 0.1 and 0.9 coincide: |1 − 2·lr| = 0.8 for both), flat for lr = 1.0, rising "
               "for lr = 1.1.", _distance_figure(paths, verdicts)),
        Figure("gd_zigzag", "Gradient descent on an ill-conditioned 2-D quadratic: with lr close to the stability "
               "limit 2/20 of the steep direction the path bounces across the valley while moving slowly "
               "along it; a smaller lr does not bounce but is as slow along x.", _zigzag_figure(paths2d)),
    ]
    return LabResult(
        lab="gd-path", title="gradient descent path on f(x) = x²",
        summary=("Gradient descent x ← x − lr·f'(x) on f(x) = x² multiplies x by (1 − 2·lr) each step. "
                 "The learning rate alone decides whether the path converges, oscillates or diverges "
                 "(seed 000, section 5)."),
        columns=["lr", "1 - 2·lr", "verdict", f"x_{STEPS}", f"f(x_{STEPS})", f"|x_{STEPS}|/|x_0|"],
        rows=rows, figures=figures,
        settings={"x0": X0, "steps": STEPS, "2-D curvatures": f"1, {K:g}", "2-D steps": STEPS_2D},
        notes=notes,
        series={"paths": {str(lr): p.tolist() for lr, p in paths.items()},
                "paths_2d": {str(lr): p.tolist() for lr, p in paths2d.items()}})
