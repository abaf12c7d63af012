"""What the doctor reads and writes: the evidence of a run (from its folder or from memory) and
its findings."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..rundir import HISTORY, METRICS, RECIPE, read_history
from .facts import FACTS
from .probes import PROBES

DIAGNOSIS = "diagnosis.json"
SEVERITIES = ("info", "warning", "severe")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    message: str
    evidence: dict[str, Any]
    remedy: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evidence:
    recipe: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def column(self, name: str) -> list[float]:
        return [number(r.get(name)) for r in self.history]

    @property
    def task(self) -> str:
        return self.metrics.get("task") or self.facts.get("data", {}).get("task", "")

    @property
    def n_classes(self) -> int:
        return len(self.metrics.get("classes") or self.facts.get("data", {}).get("classes", []))

    def layer_series(self, group: str, stat: str) -> dict[str, list[tuple[int, float]]]:
        """{layer: [(epoch, value), ...]} of one probe statistic, finite values only."""
        out: dict[str, list[tuple[int, float]]] = {}
        for rec in self.probes.get("epochs", []):
            for layer, stats in rec.get(group, {}).items():
                v = number(stats.get(stat))
                if math.isfinite(v):
                    out.setdefault(layer, []).append((rec["epoch"], v))
        return out


def number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# ------------------------------------------------------------------------------------ run folders
def load_evidence(run_dir: str | Path) -> Evidence:
    run_dir = Path(run_dir)
    if not (run_dir / HISTORY).exists():
        raise RunDirError(f"{run_dir}: not a run folder (no {HISTORY}); pass the folder `trainwell fit` wrote")

    def js(name: str) -> dict[str, Any]:
        p = run_dir / name
        return json.loads(p.read_text()) if p.exists() else {}

    recipe = tomllib.loads((run_dir / RECIPE).read_text()) if (run_dir / RECIPE).exists() else {}
    return Evidence(recipe, read_history(run_dir / HISTORY), js(METRICS), js(PROBES), js(FACTS))


def write_diagnosis(run_dir: Path, findings: list[Finding]) -> None:
    from ..rundir import write_json

    write_json(run_dir / DIAGNOSIS, {"findings": [f.to_dict() for f in findings]})


def format_findings(findings: list[Finding], remedies: bool = True) -> list[str]:
    if not findings:
        return ["doctor: no findings"]
    lines = []
    for f in findings:
        lines.append(f"[{f.severity}] {f.rule}: {f.message}")
        if remedies:
            lines.append(f"    try: {f.remedy}")
    return lines
