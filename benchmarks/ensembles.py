"""Ensembles and weight averaging on digits, next to the plain model, over several seeds.

For each seed (the split changes with it), trains the default recipe as it is and with each
technique, and prints test accuracy and log loss: the ensemble (seeds, bagging), its mean member
and member 1 (= the plain run); a snapshot ensemble; SWA and EMA next to their own plain model.
Then the mean over seeds. Every run is the library's `fit`; nothing is tuned on test.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensembles.py [--seeds 3] [--members 5] [--small]

`--small` uses an MLP with one hidden layer of 32 units and 10 epochs (the setting of the test).
"""

from __future__ import annotations

import argparse
import statistics
import warnings

from trainwell.api import fit

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False}


def settings(members: int) -> dict[str, dict]:
    return {
        "ensemble (seeds)": {"train.average": {"kind": "ensemble", "members": members}},
        "ensemble (bagging)": {"train.average": {"kind": "ensemble", "members": members, "method": "bagging"}},
        "snapshots (5 cycles of 8 epochs)": {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 8,
                                             "train.epochs": 40, "train.average": {"kind": "snapshots", "count": 5},
                                             "stopping.enabled": False},
        "swa (from epoch 31, lr 5e-4)": {"train.average": {"kind": "swa", "start_epoch": 31, "lr": 5e-4},
                                         "stopping.enabled": False},
        "ema (decay 0.99)": {"train.average": {"kind": "ema", "decay": 0.99}},
    }


def figures(metrics: dict) -> dict[str, tuple[float, float]]:
    """name -> (test accuracy, test loss) of the returned model and of what it is compared with."""
    t = metrics["test"]
    out = {"returned": (t["accuracy"], t["loss"])}
    if "plain" in metrics:
        out["plain"] = (metrics["plain"]["test"]["accuracy"], metrics["plain"]["test"]["loss"])
    section = metrics.get(metrics["model"], {})
    if "mean_member" in section:
        mm = section["mean_member"]["test"]
        out["mean member"] = (mm["accuracy"], mm["loss"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    base = {**QUIET, **({"model.hidden": [32], "train.epochs": 10, "stopping.enabled": False,
                         "model.dropout": 0.0} if args.small else {})}
    table: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for seed in range(args.seeds):
        for name, over in settings(args.members).items():
            if args.small and name.startswith(("snapshots", "swa")):
                continue
            run = fit(out=False, quiet=True, **{**base, "seed": seed, **over})
            for kind, value in figures(run.metrics).items():
                table.setdefault(name, {}).setdefault(kind, []).append(value)
                print(f"seed {seed}  {name:34s} {kind:12s} test accuracy {value[0]:.4f}  loss {value[1]:.4f}",
                      flush=True)
    print(f"\nmean over {args.seeds} seeds (test accuracy / log loss):")
    for name, kinds in table.items():
        cells = "   ".join(f"{k} {statistics.mean(a for a, _ in v):.4f} / {statistics.mean(b for _, b in v):.4f}"
                           for k, v in kinds.items())
        print(f"  {name:34s} {cells}")


if __name__ == "__main__":
    main()
