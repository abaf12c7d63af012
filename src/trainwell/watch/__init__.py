"""Watching a run: probes (hooks at a sampling interval), facts, and the doctor's findings."""

from .doctor import RULES, Evidence, Finding, diagnose, load_evidence
from .probes import ProbeCallback

__all__ = ["RULES", "Evidence", "Finding", "ProbeCallback", "diagnose", "load_evidence"]
