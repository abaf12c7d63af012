"""What was done to the data on the way in, said once and recorded (data.json, facts.json, report).

The record of a run (`Dataset.preparation`) holds:

    dropped    columns of the table left out (data.drop, or not named by data.features)
    encoded    per string column: its encoding (onehot), levels, and where its missing values went
    imputed    per feature with NaN/inf values (data.nonfinite = "impute"): how many values, and the
               training split's mean they were replaced by
    target     the regression target's scaling (data.target_normalize): kind, shift and scale
    arrays     data passed from Python (data.source = "custom"): shapes, dtypes and sha256 (custom.py)

At fit each non-empty part but `dropped` (the user chose it) is printed once as a one-line warning;
at predict the new rows' unseen categories and imputed values are counted per column.
"""

from __future__ import annotations

import numpy as np
import torch

LISTED = 5      # columns a warning names before "..."


def _listed(parts: list[str]) -> str:
    return ", ".join(parts[:LISTED]) + (f", ... ({len(parts)} columns in all)" if len(parts) > LISTED else "")


def _values(n: int) -> str:
    return f"{n} value{'' if n == 1 else 's'}"


def _name(j: int, names: tuple[str, ...]) -> str:
    return names[j] if j < len(names) else f"feature {j}"


def imputed_values(x: torch.Tensor, values: torch.Tensor, names: tuple[str, ...]) -> list[dict]:
    """Per feature of `x` (every row, before imputing) with NaN/inf values: how many, and the value
    (`values`: the training split's column means) that replaced them."""
    flat = x.reshape(len(x), -1)
    counts = (~torch.isfinite(flat)).sum(0)
    fill = values.reshape(-1)
    return [{"feature": _name(j, names), "values": int(counts[j]), "with": float(fill[j])}
            for j in torch.nonzero(counts).flatten().tolist()]


def complete(record: dict, imputed: list[dict] | None, target_scale) -> dict:
    """The loader's record (dropped, encoded) with what prepare_data did: imputation, target scaling."""
    out = {"dropped": [], "encoded": [], **record}
    if imputed:
        out["imputed"] = imputed
    if target_scale is not None:
        out["target"] = target_scale.describe()
    return out


def fit_warnings(record: dict) -> list[str]:
    """One line per thing done to the data that a person did not spell out."""
    out = []
    imputed = record.get("imputed") or []
    if imputed:
        total = sum(r["values"] for r in imputed)
        out.append(f"imputed {_values(total)} (missing or infinite) with the training split's column mean "
                   "(data.nonfinite = \"impute\"): "
                   + _listed([f"{r['feature']} {r['values']} (-> {r['with']:.4g})" for r in imputed]))
    encoded = record.get("encoded") or []
    if encoded:
        out.append(f"encoded {len(encoded)} string column{'s' if len(encoded) > 1 else ''} (data.categorical): "
                   + _listed([_encoding(r) for r in encoded]))
    return out


def _encoding(r: dict) -> str:
    missing = f"; {r['missing']} missing -> {r['missing_as']}" if r.get("missing") else ""
    width = f", width {r['dim']}" if "dim" in r else ""
    return f"{r['column']} {r['encoding']} ({r['levels']} levels{width}{missing})"


def predict_warnings(where: str, unseen: dict[str, dict], nonfinite: np.ndarray, names: tuple[str, ...],
                     imputing: bool) -> list[str]:
    """The new rows' unseen categories (per column, with examples) and NaN/inf values (per feature)."""
    out = []
    if any(u["unseen"] for u in unseen.values()):
        cols = [f"{c} {u['unseen']} ({', '.join(map(repr, u['examples']))}{', ...' if u['unseen'] > 3 else ''})"
                for c, u in unseen.items() if u["unseen"]]
        out.append(f"{where}: {_values(sum(u['unseen'] for u in unseen.values()))} of categories unseen in "
                   f"training, encoded like a missing value: {_listed(cols)}")
    if any(u["missing"] for u in unseen.values()):
        cols = [f"{c} {u['missing']}" for c, u in unseen.items() if u["missing"]]
        out.append(f"{where}: {_values(sum(u['missing'] for u in unseen.values()))} missing in string columns, "
                   f"encoded as in training: {_listed(cols)}")
    if imputing and nonfinite.any():
        cols = [f"{_name(j, names)} {int(nonfinite[j])}" for j in np.flatnonzero(nonfinite)]
        out.append(f"{where}: imputed {_values(int(nonfinite.sum()))} (missing or infinite) with the training "
                   f"split's column means: {_listed(cols)}")
    return out
