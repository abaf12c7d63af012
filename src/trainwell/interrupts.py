"""Ctrl-C and SIGTERM during training: finish the batch, save a resumable checkpoint, exit 130.

The handler only raises a flag; the loop reads it after each batch (a Python attribute read, no
cost worth measuring) and saves there, so a checkpoint is never written from inside a signal
handler or in the middle of an optimizer step. A second signal while the first is being handled
interrupts at once (KeyboardInterrupt); atomic writes still keep the previous checkpoint intact.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptFlag:
    """`with InterruptFlag() as flag:` ... `if flag.requested: save and stop` (main thread only)."""

    def __init__(self) -> None:
        self.requested: int | None = None           # the signal number once one arrived
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> InterruptFlag:
        # Signal handlers can only be installed from the main thread; elsewhere (a search worker
        # thread) signals keep their default behaviour.
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
