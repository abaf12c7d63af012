"""Per-epoch decisions that read the recorded history (never each other)."""

from .early_stopping import EarlyStopping, StopReason

__all__ = ["EarlyStopping", "StopReason"]
