"""The test lock: while hyperparameters are chosen, the test split is a stand-in that holds no rows
and raises on every read. It is evaluated once, by the protocol's final run, which loads it afresh."""

from __future__ import annotations

from ..errors import TestSplitLocked


class LockedSplit:
    """Takes the place of the test split's tensors during a search trial or a protocol's selection run."""

    def __init__(self, rows: int):
        self.rows = rows           # how many rows are held back: a count, not the rows themselves

    def _refuse(self):
        raise TestSplitLocked(f"the test split ({self.rows} rows) is locked while hyperparameters are chosen; "
                              "it is evaluated once, after the search, by the final retrain")

    @property
    def x(self):
        self._refuse()

    @property
    def y(self):
        self._refuse()

    def __len__(self) -> int:
        self._refuse()
        return 0
