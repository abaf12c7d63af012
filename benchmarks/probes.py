"""Probe overhead: epoch time with probes on (default interval, and every step) vs off.

Runs the default recipe (digits, MLP 256-128 with batch norm) with each setting in turn,
interleaved so that machine noise hits all settings alike, and reports the median epoch time
(the `seconds` column: training epoch + validation pass) over all repeats, first epoch of each
run excluded (warm-up). Target: default interval <= 10% over probes off.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probes.py [--repeats 7] [--epochs 8]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from trainwell.api import fit
from trainwell.recipe import WatchSection

SETTINGS = {
    "off": {"watch.probes": False},
    f"default (every {WatchSection().probe_every} steps)": {},
    "every step": {"watch.probe_every": 1},
}


def epoch_seconds(overrides: dict, epochs: int) -> list[float]:
    run = fit(out=False, quiet=True, **{"train.epochs": epochs, "stopping.enabled": False, "watch.doctor": False,
                                        "watch.report": False, **overrides})
    return [r["seconds"] for r in run.history[1:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(args.repeats):
        for name, overrides in SETTINGS.items():
            times[name] += epoch_seconds(overrides, args.epochs)
    base = statistics.median(times["off"])
    print(f"default recipe (digits), {args.repeats} interleaved repeats x {args.epochs - 1} epochs, 1 thread")
    print(f"{'probes':<28}{'median epoch (ms)':>18}{'ratio to off':>14}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<28}{med * 1e3:>18.2f}{med / base:>14.3f}")


if __name__ == "__main__":
    main()
