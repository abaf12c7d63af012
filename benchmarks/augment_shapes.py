"""Does augmentation help on a small training set? examples/shapes-cnn.toml with and without
[data.augment] (crop + flips + mixup), over several seeds; prints test accuracy mean +- std.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augment_shapes.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import trainwell as tw

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "shapes-cnn.toml"
OFF = {"data.augment.crop_padding": 0, "data.augment.hflip": 0.0, "data.augment.vflip": 0.0,
       "data.augment.mixup_alpha": 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    scores: dict[str, list[float]] = {"augmented": [], "plain": []}
    for seed in range(args.seeds):
        for name, overrides in (("augmented", {}), ("plain", OFF)):
            run = tw.fit(RECIPE, out=False, quiet=True, seed=seed, **overrides)
            scores[name].append(run.metrics["test"]["accuracy"])
            print(f"seed {seed} {name:9s} test accuracy {scores[name][-1]:.4f}", flush=True)
    for name, values in scores.items():
        print(f"{name:9s} mean {statistics.mean(values):.4f} +- {statistics.stdev(values):.4f} "
              f"(n={len(values)}): {' '.join(f'{v:.3f}' for v in values)}")
    wins = sum(a > b for a, b in zip(scores["augmented"], scores["plain"]))
    print(f"augmented beats plain on {wins} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
