"""Which LR range test rule suggests a rate that trains well? Measured, not assumed.

For each optimizer family (SGD, SGD with momentum 0.9, Adam) and data set (digits; spirals, 1500
rows), trains the MLP (2 x 256, batch norm, dropout) for a few epochs at a grid of constant
learning rates (a third of a decade apart) over several seeds, and takes the rate with the best
mean validation accuracy after the last epoch (the lower mean validation loss among ties). Then
runs the LR range test with each seed and records every rule's suggestion and its ratio to that
best rate; a rule "lands" when the ratio is within 1/3..3.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lr_rules.py [--seeds 2] [--epochs 5] [--out FILE.json]
    .venv/bin/python benchmarks/lr_rules.py --summary FILE.json     # the table of a saved run

Every training is the library's `fit` (no run folder); every suggestion is `range_test`'s. The
table printed at the end is the one in docs/conformance.md ("The LR range test's default rule").
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import warnings

import numpy as np

from trainwell.api import fit
from trainwell.labs.lr_range import RULES, range_test, suggest
from trainwell.recipe import load_recipe

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False, "train.threads": 1}
OPTIMIZERS = {
    "sgd": {"optimizer.kind": "sgd", "optimizer.momentum": 0.0},
    "momentum": {"optimizer.kind": "sgd", "optimizer.momentum": 0.9},
    "adam": {"optimizer.kind": "adam"},
}
DATASETS = {"digits": {}, "spirals": {"data.n_samples": 1500}}
GRID = [float(10 ** (k / 3)) for k in range(-12, 4)]       # 1e-4 .. 10, a third of a decade apart


def base(opt: str, data: str, epochs: int, seed: int) -> dict:
    return {**QUIET, **OPTIMIZERS[opt], "data.source": data, **DATASETS[data], "model.hidden": [256, 256],
            "train.epochs": epochs, "train.batch_size": 64, "stopping.enabled": False,
            "stopping.restore_best": False, "seed": seed}


def validation(settings: dict, lr: float) -> tuple[float, float]:
    """(validation accuracy, validation loss) after training at the constant rate `lr`."""
    run = fit({}, out=False, quiet=True, **{**settings, "optimizer.lr": lr})
    acc, loss = run.metrics["val"].get("accuracy"), run.metrics["val"].get("loss")
    ok = acc is not None and loss is not None and math.isfinite(acc) and math.isfinite(loss)
    return (float(acc), float(loss)) if ok else (0.0, math.inf)


def summarize(cases: list[dict]) -> None:
    """Per rule and optimizer family: how often the suggestion lands within 3x of the best rate, how often
    within 3x of a rate within 1 point of the best accuracy, and the geometric mean factor it is off by.
    The suggestions are read again off each saved curve by the current rules."""
    for c in cases:
        c["suggestions"] = suggest(np.array(c["curve"]["lrs"]), np.array(c["curve"]["smooth"]))
    print("\nrule      " + "".join(f"{opt:>34s}" for opt in OPTIMIZERS))
    print("          " + "".join(f"{'best / near-best / factor off':>34s}" for _ in OPTIMIZERS))
    for rule in RULES:
        parts = []
        for opt in OPTIMIZERS:
            mine = [c for c in cases if c["optimizer"] == opt and rule in c["suggestions"]]
            ratios = [c["suggestions"][rule] / c["best_lr"] for c in mine]
            strict = sum(1 / 3 <= r <= 3 for r in ratios)
            near = sum(any(1 / 3 <= c["suggestions"][rule] / float(lr) <= 3 for lr, a in c["accuracy"].items()
                           if a >= c["best_acc"] - 0.01) for c in mine)
            off = math.exp(statistics.mean(abs(math.log(r)) for r in ratios))
            parts.append(f"{strict}/{len(mine)} / {near}/{len(mine)} / x{off:.2g}")
        print(f"{rule:10s}" + "".join(f"{p:>34s}" for p in parts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--summary", metavar="FILE.json", help="only print the table of a saved --out file")
    args = ap.parse_args()
    if args.summary:
        with open(args.summary) as f:
            summarize(json.load(f))
        return
    warnings.simplefilter("ignore")
    cases = []
    for data in DATASETS:
        for opt in OPTIMIZERS:
            seeds = list(range(args.seeds))
            scores = {lr: [validation(base(opt, data, args.epochs, s), lr) for s in seeds] for lr in GRID}
            accs = {lr: statistics.mean(a for a, _ in v) for lr, v in scores.items()}
            losses = {lr: statistics.mean(x for _, x in v) for lr, v in scores.items()}
            # best mean validation accuracy; among equal accuracies (a small split ties often), the lower loss
            best = max(GRID, key=lambda lr: (round(accs[lr], 6), -losses[lr]))
            for s in seeds:
                test = range_test(load_recipe({}, base(opt, data, args.epochs, s)))
                case = {"data": data, "optimizer": opt, "seed": s, "best_lr": best, "best_acc": accs[best],
                        "accuracy": {f"{lr:.3g}": a for lr, a in accs.items()},
                        "loss": {f"{lr:.3g}": x for lr, x in losses.items()},
                        "suggestions": test.suggestions,
                        "curve": {"lrs": test.lrs.tolist(), "smooth": test.smooth.tolist()}}
                cases.append(case)
                ratios = "  ".join(f"{r} {test.suggestions.get(r, float('nan')) / best:.2g}x" for r in RULES)
                print(f"{data:14s} {opt:9s} seed {s}: best lr {best:.3g} (val acc {accs[best]:.3f})  {ratios}",
                      flush=True)
    summarize(cases)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
