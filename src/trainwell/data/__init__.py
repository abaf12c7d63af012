"""Data: load a source, split it, normalize it with training statistics only."""

from .sources import Dataset, load_source
from .split import Splits, make_splits

__all__ = ["Dataset", "Splits", "load_source", "make_splits"]
