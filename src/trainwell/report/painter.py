"""The report's figures, drawn in a helper process while the run finishes.

The figures are most of what a report costs: importing matplotlib (about half a second) and then
0.1-0.4 s a figure, all after the last epoch. A `Painter` starts `python -m trainwell.report.painter`
as soon as a run knows it will write a report (the command line: before it imports torch). The
helper imports matplotlib and draws a small warm-up figure on another core while this process
imports torch and trains. After training, `begin` hands it the history, probes and metrics: it draws
every figure that does not read the facts while this process gathers the facts and runs the doctor;
`finish` hands it the facts and returns the PNG bytes of every figure it drew, once the last one is
drawn. The page is the same, byte for byte, as one drawn in this process (tests/test_report.py).

Whatever the helper does not deliver (it did not start, it died, a figure raised there, or it took
longer than `WAIT_S`) report/html.py draws in this process, as it would without a helper: the report
is complete when `fit` returns. No helper is started when matplotlib is already imported here (a
notebook, a test session): drawing here then costs only the drawing.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

WAIT_S = 120.0          # the longest `finish` waits for the helper's figures before drawing the rest here

_early: Painter | None = None


class Painter:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.drawn: dict[str, bytes | None] = {}
        self._outbox: queue.Queue = queue.Queue()
        # Both pipes are served by threads: a pickled history or a PNG can exceed a pipe's buffer, and
        # neither side may wait for the other to read (this process gathers the facts meanwhile).
        self._writer = threading.Thread(target=self._write, daemon=True, name="trainwell-painter-writer")
        self._reader = threading.Thread(target=self._read, daemon=True, name="trainwell-painter-reader")
        self._writer.start()
        self._reader.start()

    @classmethod
    def start(cls) -> Painter | None:
        """A helper process, or None where drawing here is as cheap (matplotlib already imported) or
        no helper can be started."""
        if "matplotlib" in sys.modules or not sys.executable:
            return None
        root = str(Path(__file__).resolve().parents[2])      # the folder that holds the trainwell package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
        except OSError:
            return None
        return cls(proc)

    def begin(self, recipe: dict, history: list, metrics: dict, probes: dict) -> None:
        """Draw what needs no facts."""
        self._outbox.put(("evidence", {"recipe": recipe, "history": history, "metrics": metrics, "probes": probes}))

    def finish(self, facts: dict) -> dict[str, bytes | None]:
        """Draw the rest; {figure key: PNG bytes, or None when the run holds nothing to draw} for every
        figure the helper drew."""
        self._outbox.put(("facts", facts))
        self._outbox.put(None)          # then close its input: the helper exits once it has drawn
        self._reader.join(WAIT_S)
        self.close()
        return dict(self.drawn)

    def close(self) -> None:
        """End the helper. Once its input is closed it exits by itself after sending what it drew; one
        that has not sent everything by now (a run that failed, or a helper past `WAIT_S`) is killed."""
        self._outbox.put(None)
        if self._reader.is_alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _write(self) -> None:
        try:
            while (msg := self._outbox.get()) is not None:
                pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self.proc.stdin.flush()
            self.proc.stdin.close()
        except (OSError, ValueError):    # the helper is gone: what it did not draw is drawn here
            pass

    def _read(self) -> None:
        try:
            while True:
                key, png = pickle.load(self.proc.stdout)
                self.drawn[key] = png
        except (EOFError, OSError, pickle.UnpicklingError, ValueError, TypeError):
            pass


def prestart() -> None:
    """Start the helper now, for the next `WatchSession` of this process to take (the command line
    calls this before importing torch, so matplotlib's import overlaps torch's)."""
    global _early
    if _early is None:
        _early = Painter.start()


def take() -> Painter | None:
    """The helper `prestart` started, if any (each is taken once)."""
    global _early
    painter, _early = _early, None
    return painter


# ------------------------------------------------------------------------------------------ helper side
class _Later(Exception):
    """A figure read the facts before they arrived: it is drawn again when they do."""


class _Awaited(dict):
    """The facts, before they arrive: any read raises _Later."""

    def _later(self, *args: Any, **kwargs: Any):
        raise _Later

    __getitem__ = __contains__ = __iter__ = __len__ = __bool__ = get = keys = values = items = _later


def _warm_up() -> None:
    """One small figure with text, saved as PNG: the fonts, the Agg canvas and the PNG writer loaded
    before the first real figure (about a tenth of a second each, otherwise paid after training)."""
    from . import plots

    fig, ax = plots.plt.subplots(figsize=(2, 2), layout="constrained")
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend(fontsize=8)
    plots._png(fig)


def serve(inp, out) -> None:
    """Draw the report's figures as the evidence and then the facts arrive on `inp`; send each
    figure's (key, PNG bytes or None) on `out`. A figure that raises is not sent (it is drawn again
    by the main process, where its error shows)."""
    from ..watch.evidence import Evidence
    from . import plots

    _warm_up()
    pending, ev = list(plots.FIGURES), None
    while pending:
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        kind, value = msg
        if kind == "evidence":
            ev = Evidence(**value, facts=_Awaited())
        elif ev is not None:
            ev.facts = value
        for key in list(pending):
            try:
                png = plots.FIGURES[key][1](ev)
            except _Later:
                continue
            except Exception:
                pending.remove(key)
                continue
            pending.remove(key)
            pickle.dump((key, png), out, protocol=pickle.HIGHEST_PROTOCOL)
            out.flush()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the main process's to handle; EOF ends this one
    serve(sys.stdin.buffer, sys.stdout.buffer)
