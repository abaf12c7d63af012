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
from ..rundir import FACTS, HISTORY, METRICS, PROBES, RECIPE, read_history, write_json

DIAGNOSIS = "diagnosis.json"
SEVERITIES = ("info", "warning", "severe")


@dataclass(frozen=True)
class Finding:
    """One finding. `overrides` are the recipe changes its remedy proposes (dotted keys, as for
    `--set`), none of which the run already has; `cause` names the finding that explains this one
    (it is then shown under it, as a consequence, not as a separate problem)."""

    rule: str
    severity: str
    message: str
    evidence: dict[str, Any]
    remedy: str
    overrides: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None

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

    def train_eval(self, name: str) -> list[tuple[int, float]]:
        """(epoch, value) of an eval-mode statistic over the training sample (probes), finite only."""
        out = []
        for rec in self.probes.get("epochs") or []:
            v = number((rec.get("train_eval") or {}).get(name))
            if math.isfinite(v):
                out.append((rec.get("epoch"), v))
        return out

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A recipe value by dotted key (the default when the recipe does not hold it)."""
        node: Any = self.recipe
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def task(self) -> str:
        return self.metrics.get("task") or self.facts.get("data", {}).get("task", "")

    @property
    def n_classes(self) -> int:
        return len(self.metrics.get("classes") or self.facts.get("data", {}).get("classes", []))

    def layer_series(self, group: str, stat: str) -> dict[str, list[tuple[int, float]]]:
        """{layer: [(epoch, value), ...]} of one probe statistic, finite values only."""
        out: dict[str, list[tuple[int, float]]] = {}
        for rec in self.probes.get("epochs") or []:
            for layer, stats in (rec.get(group) or {}).items():
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
    write_json(run_dir / DIAGNOSIS, {"findings": [f.to_dict() for f in findings]})


def set_flags(overrides: dict[str, Any]) -> str:
    """`--set key=value ...` for the command line (strings quoted as TOML strings)."""
    return " ".join(f"--set {k}={json.dumps(v) if isinstance(v, str | list) else _toml_scalar(v)}"
                    for k, v in overrides.items())


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def format_findings(findings: list[Finding], remedies: bool = True) -> list[str]:
    """Causes first; the symptoms a cause explains indented under it."""
    if not findings:
        return ["doctor: no findings"]
    lines = []
    for f in findings:
        pad = "    " if f.cause else ""
        lead = f"{pad}-> consequence of {f.cause}: " if f.cause else ""
        lines.append(f"{lead}[{f.severity}] {f.rule}: {f.message}")
        if remedies and not f.cause:
            lines.append(f"    try: {f.remedy}")
            if f.overrides:
                lines.append(f"         {set_flags(f.overrides)}")
    return lines
