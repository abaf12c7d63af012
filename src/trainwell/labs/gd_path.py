"""gd-path: plain gradient descent on f(x) = x² (seed 000), one path per learning rate.

x_{t+1} = x_t - lr * 2 x_t = (1 - 2 lr) x_t, so the factor |1 - 2 lr| decides everything: below 1
the path converges (monotonically for lr <= 0.5, jumping across the minimum above), exactly 1
(lr = 1.0) it jumps between +x0 and -x0 forever, above 1 it diverges. The paths are computed by
torch.optim.SGD on a float64 parameter, not by the formula; the formula is what the test checks.
A second figure shows the zig-zag of gradient descent on an ill-conditioned 2-D quadratic
f = (x² + K·y²)/2, whose factors per step are 1 - lr along x and 1 - K·lr along y.

Every sentence of the captions is made from the table's numbers (see `captions`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TrainwellError
from ..figures import plt
from .page import Figure, LabResult
from .params import Param

PARAMS = {
    "lrs": Param("floats", [0.1, 0.2, 0.9, 1.0, 1.1], "learning rates on f(x) = x², one panel each (at most 8)",
                 low=0, low_open=True, high=100),
    "x0": Param("float", 10.0, "starting point on f(x) = x²", low=-1e6, high=1e6),
    "steps": Param("int", 10, "gradient-descent steps on f(x) = x²", low=1, high=1000),
    "curvature": Param("float", 20.0, "K of the 2-D quadratic (x² + K·y²)/2: its condition number", low=1,
                       low_open=True, high=1e4),
    "lrs-2d": Param("floats", [0.03, 0.09], "learning rates on the 2-D quadratic (at most 5)", low=0,
                    low_open=True, high=100),
    "steps-2d": Param("int", 30, "steps on the 2-D quadratic", low=1, high=1000),
}
START_2D = (-9.0, 1.5)
PROBLEM_1D, PROBLEM_2D = "f = x²", "f = (x² + K·y²)/2"


def check_params(p: dict) -> None:
    if p["x0"] == 0:
        raise TrainwellError("lab gd-path: --x0 got 0, the minimum itself; expected a non-zero start")
    if len(p["lrs"]) > 8:
        raise TrainwellError(f"lab gd-path: --lrs got {len(p['lrs'])} rates, expected at most 8 (one panel each)")
    if len(p["lrs-2d"]) > 5:
        raise TrainwellError(f"lab gd-path: --lrs-2d got {len(p['lrs-2d'])} rates, expected at most 5 (lines)")


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
        if not torch.isfinite(p).all():
            break
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


def per_step(path: np.ndarray) -> float:
    """The measured factor by which |x| changes per step: (|x_T| / |x_0|)^(1/T)."""
    t = len(path) - 1
    return float((abs(path[-1]) / abs(path[0])) ** (1 / t)) if t and np.isfinite(path[-1]) else float("inf")


def _square(x):
    return (x ** 2).sum()


def _fmt(v: float) -> str:
    return f"{v:g}"


# ---- captions: every statement is computed from the table's rows ------------------------------------------

def _motion(row: dict) -> str:
    """What one path on f = x² does, from its verdict and its measured factor per step."""
    v, k = row["verdict"], row["|x| × per step"]
    if v == "diverges":
        return f"jumps further out each step (×{k:.3g})"
    if v == "oscillates":
        return "jumps between ±x0 forever (×1)"
    if v == "stalls":
        return "does not move"
    if k == 0:
        return "lands on the minimum in one step"
    if v == "converges (zig-zag)":
        return f"jumps across the minimum but closes in (×{k:.3g} per step)"
    return f"slides down one side (×{k:.3g} per step)"


def captions(rows: list[dict], p: dict) -> dict[str, str]:
    one = [r for r in rows if r["problem"] == PROBLEM_1D]
    two = [r for r in rows if r["problem"] == PROBLEM_2D]
    paths = (f"Each panel: the {p['steps']} steps of gradient descent on f(x) = x² from x0 = {_fmt(p['x0'])} for one "
             "learning rate, drawn on the curve. " + "; ".join(f"lr {_fmt(r['lr'])} {_motion(r)}" for r in one) + ".")
    groups: dict[float, list[float]] = {}
    for r in one:
        groups.setdefault(round(abs(r["x factor"]), 9), []).append(r["lr"])
    same = [f"lr {' and '.join(map(_fmt, lrs))} coincide: |1 − 2·lr| = {k:g} for each" for k, lrs in groups.items()
            if len(lrs) > 1]
    flat = [_fmt(r["lr"]) for r in one if abs(abs(r["x factor"]) - 1) < 1e-12]
    rising = [_fmt(r["lr"]) for r in one if abs(r["x factor"]) > 1 + 1e-12]
    falling = [_fmt(r["lr"]) for r in one if abs(r["x factor"]) < 1 - 1e-12]
    distance = ("Distance to the minimum per step (log scale): straight lines of slope log|1 − 2·lr|"
                + (f" ({'; '.join(same)})" if same else "")
                + (f", falling for lr {', '.join(falling)}" if falling else "")
                + (f", flat for lr {', '.join(flat)}" if flat else "")
                + (f", rising for lr {', '.join(rising)}" if rising else "") + ".")
    bits = []
    for r in two:
        bounce = ("bounces across the valley (y changes sign every step)" if r["y factor"] < 0
                  else "does not bounce")
        along = f"shrinks x by ×{r['|x| × per step']:.2f} per step"
        bits.append(f"lr {_fmt(r['lr'])} {bounce} and {along}")
    zig = (f"Gradient descent on the ill-conditioned quadratic (x² + {_fmt(p['curvature'])}·y²)/2 for "
           f"{p['steps-2d']} steps from {START_2D}; y changes by the factor 1 − {_fmt(p['curvature'])}·lr per "
           f"step (stable below lr = 2/{_fmt(p['curvature'])} = {2 / p['curvature']:.3g}), x by 1 − lr. "
           + "; ".join(bits) + ".")
    finite = [r for r in two if np.isfinite(r["|x| × per step"])]
    if len(finite) >= 2:
        slow, fast = max(finite, key=lambda r: r["|x| × per step"]), min(finite, key=lambda r: r["|x| × per step"])
        if slow["lr"] < fast["lr"]:
            zig += (f" The smaller rate is slower along x, not as fast: after {p['steps-2d']} steps x is at "
                    f"×{slow['|x_T|/|x_0|']:.2g} of its start with lr {_fmt(slow['lr'])}, ×{fast['|x_T|/|x_0|']:.2g} "
                    f"with lr {_fmt(fast['lr'])}.")
    return {"gd_paths": paths, "gd_distance": distance, "gd_zigzag": zig}


# ---- figures ---------------------------------------------------------------------------------------------

def _paths_figure(paths: dict[float, np.ndarray], verdicts: dict[float, str], p: dict):
    n = len(paths)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.95 * cols, 3.0 * rows + 0.5), squeeze=False)
    x0 = p["x0"]
    for ax, (lr, path) in zip(axes.flat, paths.items()):
        finite = path[np.isfinite(path)]
        reach = max(1.25 * abs(x0), 1.05 * float(np.abs(finite).max()))
        xs = np.linspace(-reach, reach, 400)
        ax.plot(xs, xs ** 2, color="#555", lw=1, label="f(x) = x²")
        ax.plot(path, path ** 2, "--", color="red", lw=0.8)
        ax.scatter(path, path ** 2, c=np.arange(len(path)), cmap="autumn", s=18, zorder=3, label="x_t")
        ax.scatter([path[0]], [path[0] ** 2], marker="s", color="black", s=28, zorder=4, label=f"x0 = {x0:g}")
        ax.set_title(f"lr = {lr:g}: {verdicts[lr]}", fontsize=11)
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("f(x)")
    axes[0][0].legend(fontsize=9, loc="upper center")
    fig.suptitle(f"Gradient descent on f(x) = x² from x0 = {x0:g}, {p['steps']} steps (colour: early red → late "
                 "yellow)", fontsize=12)
    fig.tight_layout()
    return fig


def _distance_figure(paths: dict[float, np.ndarray], verdicts: dict[float, str], p: dict):
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    # lr and 1 - lr give the same |x_t| (0.1 and 0.9): distinct line styles keep both visible.
    styles = ("-", "-", "--", "-.", ":", "-", "--", "-.")
    for (lr, path), ls, mk in zip(paths.items(), styles, "osD^vP*X"):
        ax.plot(np.arange(len(path)), np.abs(path), ls=ls, marker=mk, ms=4, label=f"lr {lr:g}: {verdicts[lr]}")
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("|x_t − x*|  (log scale)")
    ax.set_title(f"Distance to the minimum: |x_t| = |1 − 2·lr|^t · {abs(p['x0']):g}", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    return fig


def _zigzag_figure(paths2d: dict[float, np.ndarray], p: dict):
    k = p["curvature"]
    fig, ax = plt.subplots(figsize=(9.0, 4.4))
    ymax = max(2.2, 1.1 * max(float(np.abs(q[np.isfinite(q[:, 1]), 1]).max()) for q in paths2d.values()))
    ymax = min(ymax, 20.0)
    gx, gy = np.meshgrid(np.linspace(-10, 2, 300), np.linspace(-ymax, ymax, 200))
    ax.contour(gx, gy, 0.5 * (gx ** 2 + k * gy ** 2), levels=np.geomspace(0.05, 0.5 * (100 + k * ymax ** 2), 14),
               colors="#bbb", linewidths=0.7)
    for lr, path in paths2d.items():
        ax.plot(path[:, 0], path[:, 1], marker="o", ms=3, lw=1,
                label=f"lr {lr:g}: y ×{1 - k * lr:+.2f}, x ×{1 - lr:.2f} per step")
    ax.plot([0], [0], marker="*", color="black", ms=10, label="minimum")
    ax.set_xlim(-10, 2)
    ax.set_ylim(-ymax, ymax)
    ax.set_xlabel("x (curvature 1)")
    ax.set_ylabel(f"y (curvature {k:g})")
    ax.set_title(f"f = (x² + {k:g}·y²)/2, {p['steps-2d']} steps: near lr = 2/{k:g} the path zig-zags in y",
                 fontsize=11)
    ax.legend(fontsize=9, loc="upper right")
    return fig


def run(options) -> LabResult:
    p = options.params
    k = p["curvature"]
    x0, steps = p["x0"], p["steps"]

    def quad2d(q):
        return 0.5 * (q[0] ** 2 + k * q[1] ** 2)

    paths = {lr: descend(_square, [x0], lr, steps)[:, 0] for lr in p["lrs"]}
    verdicts = {lr: verdict(q) for lr, q in paths.items()}
    paths2d = {lr: descend(quad2d, list(START_2D), lr, p["steps-2d"]) for lr in p["lrs-2d"]}
    columns = ["problem", "lr", "x factor", "y factor", "verdict", "x_T", "f(x_T)", "|x_T|/|x_0|", "|x| × per step"]
    rows = [[PROBLEM_1D, lr, 1 - 2 * lr, None, verdicts[lr], float(q[-1]), float(q[-1] ** 2),
             float(abs(q[-1]) / abs(x0)), per_step(q)] for lr, q in paths.items()]
    rows += [[PROBLEM_2D, lr, 1 - lr, 1 - k * lr, f"{verdict(q[:, 1])} in y", float(q[-1, 0]),
              float(quad2d(q[-1])), float(abs(q[-1, 0]) / abs(q[0, 0])), per_step(q[:, 0])]
             for lr, q in paths2d.items()]
    records = [dict(zip(columns, r)) for r in rows]
    caption = captions(records, p)
    notes = [f"lr {_fmt(r['lr'])}: {r['verdict']}" for r in records if r["problem"] == PROBLEM_1D]
    notes += [f"2-D quadratic, lr {_fmt(r['lr'])}: {r['verdict']}, x ×{r['|x| × per step']:.3g} per step"
              for r in records if r["problem"] == PROBLEM_2D]
    figures = [Figure("gd_paths", caption["gd_paths"], _paths_figure(paths, verdicts, p)),
               Figure("gd_distance", caption["gd_distance"], _distance_figure(paths, verdicts, p)),
               Figure("gd_zigzag", caption["gd_zigzag"], _zigzag_figure(paths2d, p))]
    return LabResult(
        lab="gd-path", title=f"gradient descent path on f(x) = x² from x0 = {_fmt(x0)}, {steps} steps",
        summary=("Gradient descent x ← x − lr·f'(x) on f(x) = x² multiplies x by (1 − 2·lr) each step. "
                 "The learning rate alone decides whether the path converges, oscillates or diverges "
                 "(seed 000, section 5). On an ill-conditioned quadratic the steep direction limits the rate, "
                 "and the flat direction pays for it."),
        columns=columns, rows=rows, figures=figures,
        settings={"lrs": ", ".join(map(_fmt, p["lrs"])), "x0": x0, "steps": steps,
                  "2-D curvatures": f"1, {k:g}", "2-D lrs": ", ".join(map(_fmt, p["lrs-2d"])),
                  "2-D steps": p["steps-2d"], "2-D start": str(START_2D)},
        notes=notes,
        series={"paths": {str(lr): q.tolist() for lr, q in paths.items()},
                "paths_2d": {str(lr): q.tolist() for lr, q in paths2d.items()}})
