"""Watching a run: probes (hooks at a sampling interval), facts, and the doctor's findings.

Names are imported on first use: the report's figures (drawn in a helper process, report/painter.py)
read `watch.evidence` without paying for torch, which the probes and facts need."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {"RULES": "doctor", "Evidence": "evidence", "Finding": "evidence", "diagnose": "doctor",
            "load_evidence": "evidence", "ProbeCallback": "probes"}

__all__ = ["RULES", "Evidence", "Finding", "ProbeCallback", "diagnose", "load_evidence"]

if TYPE_CHECKING:
    from .doctor import RULES, diagnose
    from .evidence import Evidence, Finding, load_evidence
    from .probes import ProbeCallback


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
