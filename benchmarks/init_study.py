"""Which default weight initialization serves users best: the default recipe on real data sets with
`init.weights` = each candidate, same seeds, same rows.

Sets: the bundled ones (digits, iris, wine, breast_cancer, diabetes), the CSV sets of
benchmarks/realdata.py (house_prices, carseats, default, caravan, penguins, glass; `pip install -e
'.[bench]'`) and, with --synthetic, spirals, teacher and shapes (a CNN on 16-pixel images). For each set, candidate and seed: `tw.fit` with the default recipe (only the data keys
a file needs), the doctor and report off (they run after training and change nothing in it).
Prints, mean ± std over the seeds: the test score (accuracy and macro F1, or R2), the test loss, the
best epoch (the one restored) and the epochs run; and on digits the epochs to 97% validation
accuracy (`stopping.monitor = val_accuracy`, `stopping.stopping_threshold = 0.97`, the setting of
benchmarks/startup.py).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/init_study.py [--seeds 3] [--inits kaiming_normal,pytorch]
        [--only digits,wine] [--synthetic] [--set model.norm=none ...]

`--set KEY=VALUE` changes the recipe of every run (e.g. the networks without batch norm).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import trainwell as tw
from trainwell.recipe import parse_overrides

sys.path.insert(0, str(Path(__file__).parent))
from realdata import SETS, _csv  # noqa: E402

BUNDLED = {"digits": "multiclass", "iris": "multiclass", "wine": "multiclass", "breast_cancer": "binary",
           "diabetes": "regression"}
SYNTHETIC = {"spirals": ({"data.source": "spirals", "data.classes": 3}, "multiclass"),
             "teacher": ({"data.source": "teacher"}, "multiclass"),
             "shapes": ({"data.source": "shapes", "model.kind": "cnn"}, "multiclass")}
QUIET = {"watch.doctor": False, "watch.report": False}


def data_keys(name: str, folder: Path) -> tuple[dict, str]:
    if name in BUNDLED:
        return {"data.source": name}, BUNDLED[name]
    if name in SYNTHETIC:
        return SYNTHETIC[name]
    _, target, task = SETS[name]
    return {"data.source": str(_csv(name, folder)), "data.target": target, "data.drop": ["rownames"],
            "data.nonfinite": "impute"}, task


def one(data: dict, init: str, seed: int, folder: Path, **extra) -> tw.Run:
    out = folder / f"run-{init}-{seed}-{len(list(folder.iterdir()))}"
    return tw.fit(out=out, quiet=True, seed=seed, **data, **QUIET, **{"init.weights": init}, **extra)


def fmt(values: list[float], digits: int = 3) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--inits", default="kaiming_normal,pytorch")
    p.add_argument("--only", default="", help="comma-separated data set names (default: all)")
    p.add_argument("--synthetic", action="store_true", help="also the synthetic sets")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe key of every run")
    args = p.parse_args()
    inits = args.inits.split(",")
    extra = parse_overrides(args.set)
    every = [*BUNDLED, *SETS, *(SYNTHETIC if args.synthetic else ())]
    names = [n for n in (args.only.split(",") if args.only else every) if n]
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in names:
            data, task = data_keys(name, folder)
            for init in inits:
                got: dict[str, list[float]] = {}
                for seed in range(args.seeds):
                    run = one(data, init, seed, folder, **extra)
                    test = run.metrics["test"]
                    for k in ("accuracy", "f1", "r2", "loss"):
                        if k in test:
                            got.setdefault(k, []).append(float(test[k]))
                    got.setdefault("best epoch", []).append(float(run.metrics.get("best_epoch") or 0))
                    got.setdefault("epochs", []).append(float(len(run.history)))
                    if name == "digits":
                        fast = one(data, init, seed, folder, **extra, **{"stopping.monitor": "val_accuracy",
                                                                "stopping.stopping_threshold": 0.97})
                        got.setdefault("epochs to 97%", []).append(float(len(fast.history)))
                line = "  ".join(f"{k} {fmt(v, 1 if 'epoch' in k else 3)}" for k, v in got.items())
                rows.append(f"{name:14s} {task:11s} {init:15s} {line}")
                print(rows[-1], flush=True)
    print(f"\ntest split, mean ± std over {args.seeds} seeds (seed = split, init, shuffling, dropout)"
          + (f"; every run with {', '.join(args.set)}" if args.set else ""))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
