"""What a finished search leaves: trials.csv, best.json, the final retrain, metrics.json, report.html,
and one printed test score."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ..errors import TrainwellError
from ..recipe import Recipe
from ..rundir import METRICS, atomic_write_text, write_json
from .protocol import FINAL, retrain_and_test
from .strategies import decode
from .study import counts

TRIALS_CSV, BEST = "trials.csv", "best.json"


def trial_rows(study, recipe: Recipe) -> list[dict[str, Any]]:
    """One row per trial, values as the recipe spells them (lists as JSON)."""
    space = recipe.search.space
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower(),
                               "value": t.value if t.state == TrialState.COMPLETE else None}
        for key, d in space.items():
            v = decode(d, t.params[key]) if key in t.params else None
            row[key] = json.dumps(v) if isinstance(v, list | dict) else v
        attrs = t.user_attrs
        for key in ("best_epoch", "stopped_epoch", "stop_reason", "seconds", "folder"):
            row[key] = attrs.get(key)
        # A retried trial inherits its dead predecessor's attributes: the error belongs to failures only.
        row["error"] = attrs.get("error") if t.state == TrialState.FAIL else None
        if t.state == TrialState.PRUNED and t.intermediate_values:
            row["value_at_prune"] = t.intermediate_values[max(t.intermediate_values)]
        rows.append(row)
    return rows


def trials_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _public(url: str) -> str:
    """A storage URL without its password."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.rsplit('@', 1)[1]}"


def retrain(study, recipe: Recipe, study_dir: Path) -> tuple[Any, dict[str, Any], int]:
    """The best trial's values retrained on train+validation for its best epoch count; test once."""
    best = study.best_trial
    values = {k: decode(recipe.search.space[k], v) for k, v in best.params.items()}
    epochs = int(best.user_attrs["best_epoch"])
    return retrain_and_test(recipe, values, epochs, study_dir / FINAL), values, epochs


def summary(study, recipe: Recipe, url: str, seconds: float) -> dict[str, Any]:
    s = recipe.search
    n = counts(study)
    return {"strategy": s.strategy, "trials": study.user_attrs.get("trainwell", {}).get("trials"),
            "complete": n["complete"], "pruned": n["pruned"], "failed": n["fail"], "metric": s.metric,
            "direction": s.direction, "pruner": s.pruner, "study": study.study_name,
            "storage": url if "://" not in url else url.split("@")[-1], "seconds": round(seconds, 2)}


def finish(study, recipe: Recipe, study_dir: Path, url: str, seconds: float, quiet: bool) -> dict[str, Any]:
    rows = trial_rows(study, recipe)
    atomic_write_text(study_dir / TRIALS_CSV, trials_csv(rows))
    if not any(r["state"] == "complete" for r in rows):
        raise TrainwellError(f"search: no trial completed ({len(rows)} trials: see {study_dir / TRIALS_CSV})")
    best = study.best_trial
    values = {k: decode(recipe.search.space[k], v) for k, v in best.params.items()}
    best_info = {"trial": best.number, "value": best.value, "metric": recipe.search.metric,
                 "direction": recipe.search.direction, "params": values,
                 "best_epoch": best.user_attrs.get("best_epoch"), "folder": best.user_attrs.get("folder"),
                 "worker": best.user_attrs.get("worker")}
    write_json(study_dir / BEST, best_info)
    info = {**summary(study, recipe, url, seconds), "storage": _public(url)}
    metrics: dict[str, Any] = {"search": info, "params": values, "best_trial": best_info}
    if recipe.search.retrain:
        final, values, epochs = retrain(study, recipe, study_dir)
        metrics.update({"test": final.metrics["test"], "val": best.user_attrs.get("val", {}), "best_epoch": epochs,
                        "seed": recipe.seed,
                        "protocol": {"final": "final", "retrain_epochs": epochs,
                                     "retrain_rows": final.metrics["rows"]["train"], "test_evaluations": 1}})
    write_json(study_dir / METRICS, metrics)
    from .report import write_search_report

    write_search_report(study_dir, study, recipe, metrics, rows)
    if not quiet:
        _print(metrics, study_dir)
    return {"path": study_dir, "metrics": metrics, "study": study, "rows": rows}


def _print(metrics: dict[str, Any], study_dir: Path) -> None:
    s, b = metrics["search"], metrics["best_trial"]
    print(f"search: {s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed "
          f"of {s['trials']} trials in {s['seconds']:.0f} s ({s['strategy']})")
    params = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, float) else f'{v:.4g}'}"
                       for k, v in b["params"].items())
    print(f"best trial {b['trial']}: {b['metric']} {b['value']:.4f} at epoch {b['best_epoch']}  {params}")
    if "test" in metrics:
        p = metrics["protocol"]
        print(f"retrained on train+validation ({p['retrain_rows']} rows) for {p['retrain_epochs']} epochs")
        print("test  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items()))
    print(f"study folder: {study_dir}")
