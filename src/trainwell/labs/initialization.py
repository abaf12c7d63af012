"""init: what the initial weights do to the signal in a deep network (seeds 001 and 002).

A deep MLP (10 layers of 500 units by default) built by trainwell's own builder and initialized by
its own [init] schemes is fed a batch of standard-normal inputs. Per layer we record the
activations (their histogram and std) and, after one backward pass of a cross-entropy loss on
random labels, the norm of each weight gradient. Five set-ups by default, as in the lectures:

    tanh + N(0, 0.01)   each layer multiplies the std by ~0.01·sqrt(500) ≈ 0.22: collapse to 0
    tanh + N(0, 1)      pre-activations of std ~sqrt(500): every unit saturated at ±1
    tanh + Xavier       std 1/sqrt(fan): the signal keeps its scale (shrinking slowly)
    ReLU + Xavier       ReLU halves the variance each layer: std × 0.71 per layer
    ReLU + He           He's factor 2 compensates: the std stays put

`--activations` and `--inits` replace them by every combination; `--depth`, `--width` and
`--gain` (Xavier's gain; 5/3 is tanh's recommended one) change the net. Every caption sentence is
computed from the table (see `captions`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainwellError
from ..figures import plt
from ..init import init_model_
from ..models.mlp import build_mlp
from ..recipe import InitSection, MLPSection
from ..seeding import stream
from .page import Figure, LabResult
from .params import Param

CLASSES = 10
ACTIVATIONS = {"tanh": "tanh", "relu": "ReLU", "sigmoid": "sigmoid"}
# init name -> (label, [init] keys; gain filled in for xavier)
INITS = {
    "normal0.01": ("N(0, 0.01)", {"weights": "normal", "std": 0.01}),
    "normal1": ("N(0, 1)", {"weights": "normal", "std": 1.0}),
    "xavier": ("Xavier", {"weights": "xavier_normal"}),
    "he": ("He", {"weights": "kaiming_normal", "mode": "fan_in"}),
}
LECTURE = (("tanh", "normal0.01"), ("tanh", "normal1"), ("tanh", "xavier"), ("relu", "xavier"), ("relu", "he"))

PARAMS = {
    "depth": Param("int", 10, "hidden layers", low=2, high=50),
    "width": Param("int", 500, "units per hidden layer (and inputs)", low=4, high=2000),
    "activations": Param("names", [], "activations; with --inits: every combination (default: the lectures' "
                         "five set-ups)", choices=tuple(ACTIVATIONS)),
    "inits": Param("names", [], "weight schemes: normal0.01 = N(0, 0.01), normal1 = N(0, 1), xavier, he",
                   choices=tuple(INITS)),
    "gain": Param("float", 1.0, "Xavier's gain (5/3 is tanh's recommended gain; He takes its gain from the "
                  "activation)", low=0, low_open=True, high=100),
}


def check_params(p: dict) -> None:
    n = len(setups(p))
    if n > 8:
        raise TrainwellError(f"lab init: --activations × --inits gives {n} set-ups, expected at most 8")


def setups(p: dict) -> list[tuple[str, str]]:
    """(activation, init name) pairs: the lecture's five, or every combination of the given ones."""
    if not p["activations"] and not p["inits"]:
        return list(LECTURE)
    acts = p["activations"] or ["tanh", "relu"]
    inits = p["inits"] or list(INITS)
    return [(a, i) for a in acts for i in inits]


def label(act: str, init: str, gain: float) -> str:
    name = INITS[init][0] + (f" (gain {gain:.3g})" if init == "xavier" and gain != 1 else "")
    return f"{ACTIVATIONS[act]}, {name}"


def probe(activation: str, init: dict, rows: int, seed: int, depth: int = 10, width: int = 500) -> dict:
    """Per-layer activations and weight-gradient norms of a freshly initialized deep MLP."""
    net = build_mlp(MLPSection(hidden=(width,) * depth, activation=activation, norm="none", dropout=0.0),
                    (width,), CLASSES)
    init_model_(net, InitSection(**init), stream(seed, "init"))
    data = stream(seed, "data")
    x = torch.randn(rows, width, generator=data)
    y = torch.randint(0, CLASSES, (rows,), generator=data)
    acts: list[torch.Tensor] = []
    hooks = [getattr(net, f"act{i}").register_forward_hook(lambda m, i, out: acts.append(out.detach()))
             for i in range(1, depth + 1)]
    try:
        F.cross_entropy(net(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    grads = [float(getattr(net, f"fc{i}").weight.grad.norm()) for i in range(1, depth + 1)]
    if activation == "tanh":
        slope = [float((1 - a ** 2).mean()) for a in acts]
    elif activation == "sigmoid":
        slope = [float((a * (1 - a)).mean()) for a in acts]
    else:
        slope = [float((a > 0).float().mean()) for a in acts]
    return {"acts": [a.flatten().numpy() for a in acts], "std": [float(a.std()) for a in acts],
            "mean": [float(a.mean()) for a in acts], "grad": grads, "slope": slope,
            "saturated": [float((a.abs() > 0.99).float().mean()) if activation == "tanh" else
                          float(((a < 0.01) | (a > 0.99)).float().mean()) for a in acts]
            if activation != "relu" else [0.0] * depth,
            "zero": [float((a == 0).float().mean()) for a in acts]}


# ---- captions: every statement is computed from the table's rows ------------------------------------------

def _shape(r: dict, depth: int) -> str:
    """What the histograms of one set-up do across the layers, from its std ratio and saturation."""
    if r[f"std L{depth}"] < 1e-3:
        return f"shrinks to a spike at 0 (std {r[f'std L{depth}']:.2g} at layer {depth})"
    if r["activation"] != "relu" and r[f"L{depth} saturated|zero"] > 0.5:
        return f"piles up at the ends ({r[f'L{depth} saturated|zero']:.0%} saturated at layer {depth})"
    k = r["std ratio"]
    if k < 0.5:
        return f"narrows layer after layer (std ×{k:.2g} from layer 1 to {depth})"
    if k > 2:
        return f"widens layer after layer (std ×{k:.2g} from layer 1 to {depth})"
    return f"keeps its spread (std ×{k:.2g} from layer 1 to {depth})"


def _grads(r: dict, depth: int) -> str:
    g1, gd, spread = r["grad L1"], r[f"grad L{depth}"], r["grad max/min"]
    tiny = ", all tiny: nothing would learn" if r["grad geo-mean"] < 1e-4 else ""
    if spread <= 2:
        return f"within ×{spread:.2g} across the layers ({g1:.2g} at layer 1, {gd:.2g} at layer {depth}{tiny})"
    towards = "towards the input" if g1 > gd else "towards the output"
    return (f"grows {towards}: ×{spread:.2g} between the smallest and the largest layer ({g1:.2g} at layer 1, "
            f"{gd:.2g} at layer {depth}{tiny})")


def captions(records: list[dict], p: dict) -> dict[str, str]:
    depth, width = p["depth"], p["width"]
    hist = (f"Rows: set-ups; columns: layers 1 to {depth}" + (" (every other layer shown)" if depth > 10 else "")
            + ". " + "; ".join(f"{r['setup']}: {_shape(r, depth)}" for r in records) + ".")
    std = ("Activation std per layer (log scale): flat is healthy; a straight falling line is a constant factor "
           "lost per layer. Per layer: " + "; ".join(f"{r['setup']} ×{r['std × per layer']:.2g}" for r in records))
    if any(r["activation"] == "relu" and r["init"] == "xavier" for r in records):
        std += f" (theory for ReLU + Xavier: ×1/√2 = {1 / math.sqrt(2):.2f})"
    std += "."
    grads = ("Norm of each layer's weight gradient after one backward pass (log scale): "
             + "; ".join(f"{r['setup']}: {_grads(r, depth)}" for r in records) + ".")
    by = {(r["activation"], r["init"]): r for r in records}
    if ("relu", "xavier") in by and ("relu", "he") in by:
        k = by[("relu", "he")]["grad geo-mean"] / by[("relu", "xavier")]["grad geo-mean"]
        grads += (f" ReLU with Xavier gives gradients ×{k:.2g} {'smaller' if k > 1 else 'larger'} than ReLU with He "
                  "(geometric mean over the layers).")
    for r in records:
        if r["activation"] == "tanh" and r["init"] == "normal1" and r["grad L1"] > r[f"grad L{depth}"]:
            grads += (f" The lecture says saturated tanh units give 'gradients at zero': that is each unit's own "
                      f"derivative 1 − a², here {r['mean slope']:.2g} on average at layer {depth}. The weight "
                      f"gradients still grow towards the input because N(0, 1) weights are √{width} ≈ "
                      f"{math.sqrt(width):.0f}× larger than Xavier's and the backward pass multiplies by them at "
                      f"every layer: the few unsaturated units carry a large gradient back. Training still stalls "
                      f"— the activations are stuck at ±1 — but not because the weight gradients are zero.")
    return {"init_histograms": hist, "init_std": std, "init_grads": grads}


# ---- figures ---------------------------------------------------------------------------------------------

def _histograms(results: dict[str, dict], acts: dict[str, str], depth: int):
    shown = list(range(depth)) if depth <= 10 else list(range(0, depth, 2)) + ([depth - 1] if depth % 2 == 0 else [])
    cols = len(shown)
    # At most ~11.5 inches wide: the figure fits a 1280-px page at its natural width (100 px per inch).
    fig, axes = plt.subplots(len(results), cols, figsize=(max(min(1.25, 10.3 / cols) * cols, 6) + 1.2,
                                                          1.45 * len(results) + 0.8), squeeze=False)
    for r, (lab, res) in enumerate(results.items()):
        relu = acts[lab] == "relu"
        lo = 0.0 if acts[lab] in ("relu", "sigmoid") else -1.0
        # Fixed range per row so a collapse shows as a spike at 0 instead of being auto-rescaled away.
        hi = float(np.quantile(res["acts"][0], 0.995)) * 1.5 if relu else 1.0
        for c, layer in enumerate(shown):
            a = res["acts"][layer]
            ax = axes[r][c]
            vals = a[a > 0] if relu else a      # ReLU's exact zeros would flatten the rest; their share is shown
            counts, edges = np.histogram(np.clip(vals, lo, hi), bins=40, range=(lo, hi))
            ax.stairs(counts, edges, fill=True, color="#2ca02c" if relu else "#1f77b4")
            ax.set_xlim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))     # the piles at ±1 stay visible
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"L{layer + 1}\nstd {res['std'][layer]:.1g}", fontsize=9, pad=2)
            if c == 0:
                ax.set_ylabel(lab.replace(", ", "\n", 1), fontsize=9, rotation=0, ha="right", va="center")
    fig.suptitle("Activation histograms per layer (x range fixed per row: tanh [−1, 1], sigmoid [0, 1], "
                 "ReLU [0, 1.5 × layer-1 99.5% quantile], zeros not drawn)", fontsize=11)
    fig.subplots_adjust(left=0.14, right=0.995, bottom=0.02, top=0.89, wspace=0.08, hspace=0.75)
    return fig


def _lines(results: dict[str, dict], acts: dict[str, str], key: str, ylabel: str, title: str, depth: int):
    fig, ax = plt.subplots(figsize=(8.0, 4.4))
    layers = np.arange(1, depth + 1)
    for lab, res in results.items():
        ax.plot(layers, np.maximum(res[key], 1e-30), marker="o", ms=4, label=lab,
                ls="--" if acts[lab] == "relu" else "-")
    ax.set_yscale("log")
    ax.set_xticks(layers if depth <= 20 else layers[::5])
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def run(options) -> LabResult:
    p = options.params
    depth, width, gain = p["depth"], p["width"], p["gain"]
    rows_in = 200 if options.quick else 1000
    pairs = setups(p)
    results, acts, inits = {}, {}, {}
    for act, init in pairs:
        lab = label(act, init, gain)
        keys = dict(INITS[init][1], **({"gain": gain} if init == "xavier" else {}))
        results[lab] = probe(act, keys, rows_in, options.seed, depth, width)
        acts[lab], inits[lab] = act, init
    columns = ["setup", "activation", "init", "std L1", f"std L{depth}", "std ratio", "std × per layer",
               f"L{depth} saturated|zero", "mean slope", "grad L1", f"grad L{depth}", "grad max/min", "grad geo-mean"]
    rows = []
    for lab, res in results.items():
        ratio = res["std"][-1] / res["std"][0]
        rows.append([lab, acts[lab], inits[lab], res["std"][0], res["std"][-1], ratio, ratio ** (1 / (depth - 1)),
                     res["zero"][-1] if acts[lab] == "relu" else res["saturated"][-1], res["slope"][-1],
                     res["grad"][0], res["grad"][-1], max(res["grad"]) / max(min(res["grad"]), 1e-300),
                     float(np.exp(np.mean(np.log(np.maximum(res["grad"], 1e-300)))))])
    records = [dict(zip(columns, r)) for r in rows]
    caption = captions(records, p)
    figures = [
        Figure("init_histograms", caption["init_histograms"], _histograms(results, acts, depth)),
        Figure("init_std", caption["init_std"], _lines(results, acts, "std", "activation std (log scale)",
                                                        f"Activation std per layer ({depth} × {width})", depth)),
        Figure("init_grads", caption["init_grads"],
               _lines(results, acts, "grad", "‖∂loss/∂W‖ (log scale)", f"Weight-gradient norm per layer "
                      f"({depth} × {width})", depth)),
    ]
    return LabResult(
        lab="init", title=f"initialization: activations and gradients through {depth} layers of {width}",
        summary=(f"A {depth}-layer MLP of {width} units per layer, no normalization, fed {rows_in} standard-normal "
                 "inputs. How the weights are drawn decides whether the signal dies out, saturates or keeps its "
                 "scale across the layers (seeds 001 and 002: Xavier for tanh, He for ReLU). 'mean slope' is the "
                 f"activation's own derivative averaged over the units of layer {depth} (tanh: 1 − a²; ReLU: the "
                 "share of active units)."),
        columns=columns, rows=rows, figures=figures,
        settings={"depth": depth, "width": width, "xavier gain": gain, "set-ups": "; ".join(results),
                  "input rows": rows_in},
        notes=[f"{r['setup']}: std ×{r['std ratio']:.3g} from layer 1 to layer {depth}, gradient spread "
               f"×{r['grad max/min']:.3g}" for r in records],
        series={lab: {k: res[k] for k in ("std", "mean", "grad", "saturated", "zero", "slope")}
                for lab, res in results.items()})
