"""Watching a run: probes (hooks at a sampling interval), facts, and the doctor's findings.

Names are imported on first use: the report's figures (drawn in a helper process, report/painter.py)
read `watch.evidence` without paying for torch, which the probes and facts need."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {"RULES": "doctor", "Evidence": "evidence", "Finding": "evidence", "diagnose": "doctor",
            "load_evidence": "evidence", "ProbeCallback": "probes"}

__all__ = ["RULES", "Evidence", "Finding", "ProbeCallback", "diagnose", "load_evidence"]

if TYPE_CHECKING:
    from .doctor import RULES, diagnose
    from .evidence import Evidence, Finding, load_evidence
    from .probes import ProbeCallback

__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
