"""The report's figures, drawn in a helper process while the run finishes.

The figures are most of what a report costs: importing matplotlib (about half a second) and then
0.1-0.4 s a figure, all after the last epoch. A `Painter` starts a helper Python process (`main`)
as soon as a run knows it will write a report (the command line: before it imports torch). The
helper imports matplotlib and draws a small warm-up figure on another core while this process
imports torch and trains. After training, `begin` hands it the history, probes and metrics: it draws
every figure that does not read the facts while this process gathers the facts and runs the doctor;
`finish` hands it the facts and returns the PNG bytes of every figure it drew, once the last one is
drawn. The page is the same, byte for byte, as one drawn in this process (tests/test_report_painter.py).

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

# The helper's command: this trainwell package (which may be on a path set at run time, a notebook's or a
# test's), then `main`. The folder goes first only when it is not on the path already (site-packages is).
_BOOT = ("import sys\nif sys.argv[1] not in sys.path:\n    sys.path.insert(0, sys.argv[1])\n"
         "from trainwell.report.painter import main\nmain()")


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
        root = str(Path(__file__).resolve().parents[2])      # the folder that holds this trainwell package
        try:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT, root], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
        except OSError:
            return None
        return cls(proc)

    def begin(self, recipe: dict, history: list, metrics: dict, probes: dict) -> None:
        """Draw what needs no facts."""
        self._outbox.put(("evidence", plain({"recipe": recipe, "history": history, "metrics": metrics,
                                             "probes": probes})))

    def finish(self, facts: dict) -> dict[str, bytes | None]:
        """Draw the rest; {figure key: PNG bytes, or None when the run holds nothing to draw} for every
        figure the helper drew."""
        self._outbox.put(("facts", plain(facts)))
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
        except Exception:       # the helper is gone, or a value would not pickle: what it did not draw is drawn here
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        try:
            while True:
                key, png = pickle.load(self.proc.stdout)
                self.drawn[key] = png
        except Exception:       # EOF: the helper has sent all it drew (or died)
            pass


def plain(v: Any) -> Any:
    """`v` in Python's own types, as the run folder's JSON holds it: a numpy or torch value (torch's version
    string among the metrics) would make the helper import numpy's or torch's unpickling, torch's a second."""
    if v is None or type(v) in (bool, int, float, str):
        return v
    if isinstance(v, dict):
        return {plain(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, str):
        return str(v)
    for kind in (bool, int, float):
        if isinstance(v, kind):
            return kind(v)
    if hasattr(v, "tolist"):
        return plain(v.tolist())
    return v


# Data of this size or more (the rows' bytes in memory, or a source file's on disk): the helper starts after
# the run has gathered its facts, not before training. Its imports (numpy, matplotlib: about 50 MiB) would
# otherwise sit beside the run's largest moment, the facts, where memory is what a large run runs out of;
# a run on that much data trains for seconds, and half a second more for the report is little beside it.
LATE_BYTES = 64 * 2**20


def starts_late(size: int) -> bool:
    """Whether the helper of a run on `size` bytes of data starts after the facts (see LATE_BYTES)."""
    return size >= LATE_BYTES


def source_bytes(source: str) -> int:
    """The bytes on disk of a data source that is a file or a folder (its files), else 0 (a bundled or
    synthetic set, a path not there: the run finds out and says so)."""
    try:
        path = Path(source)
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except (OSError, ValueError, TypeError):
        return 0


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

    fig, ax = plots._subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend(fontsize=8)
    plots._laid_out(fig)


_LATER = "later"        # a forked half's answer for a figure that needs the facts (see _draw_halved)
# Rough drawing cost of each figure (tenths of a second on the digits default), to split them evenly.
_COST = {"curves": 5, "layer_grads": 3, "reliability": 2, "activations": 2, "lr_grad": 2, "confusion": 1}


def _split(keys: list[str]) -> tuple[list[str], list[str]]:
    """Two halves of about equal drawing cost (the costliest first, each to the lighter half), in page order."""
    halves: tuple[list[str], list[str]] = ([], [])
    for key in sorted(keys, key=lambda k: -_COST.get(k, 2)):
        min(halves, key=lambda h: sum(_COST.get(k, 2) for k in h)).append(key)
    return tuple(sorted(h, key=keys.index) for h in halves)  # type: ignore[return-value]


def _draw(keys: list[str], ev, send) -> list[str]:
    """Draw `keys`, sending (key, PNG bytes or None) for each drawn; the keys that wait for the facts are
    returned. A figure that raises is not sent: the main process draws it again, where its error shows."""
    from . import plots

    later = []
    for key in keys:
        try:
            png = plots.FIGURES[key][1](ev)
        except _Later:
            later.append(key)
            continue
        except Exception:
            continue
        send((key, png))
    return later


def _draw_halved(keys: list[str], ev, send) -> list[str]:
    """`_draw` on two cores: a forked copy of this helper (matplotlib imported, fonts loaded) draws half
    the figures and hands its results back through a pipe. Where fork is not safe (outside Linux) or
    fails, one process draws them all."""
    if sys.platform != "linux" or len(keys) < 2:
        return _draw(keys, ev, send)
    mine, theirs = _split(keys)
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return _draw(keys, ev, send)
    if pid == 0:                                   # the copy: draw, hand back, and leave at once
        code = 1
        try:
            os.close(r)
            # Every figure drawn before any is sent: the parent reads the pipe only once its own half is
            # drawn, and a PNG or two fill a pipe's buffer; writing as it went, this copy would wait there.
            drawn: list = []
            later = _draw(theirs, ev, drawn.append)
            with os.fdopen(w, "wb") as pipe:
                for msg in [*drawn, *((key, _LATER) for key in later)]:
                    pickle.dump(msg, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    later = _draw(mine, ev, send)
    with os.fdopen(r, "rb") as pipe:
        while True:
            try:
                key, png = pickle.load(pipe)
            except (EOFError, pickle.UnpicklingError):
                break
            if isinstance(png, str) and png == _LATER:
                later.append(key)
            else:
                send((key, png))
    os.waitpid(pid, 0)
    return later


def _release() -> None:
    """Collect the drawn figures (matplotlib's objects hold reference cycles) and hand the freed heap pages
    back to the system (glibc's malloc_trim; nothing elsewhere)."""
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def serve(inp, out) -> None:
    """Draw the report's figures as the evidence and then the facts arrive on `inp`; send each
    figure's (key, PNG bytes or None) on `out`. The first pass (no facts yet) draws on two cores; a
    figure that reads the facts waits for them."""
    from ..watch.evidence import Evidence
    from . import plots

    def send(msg) -> None:
        pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    _warm_up()
    pending, ev = list(plots.FIGURES), None
    while pending:
        try:
            kind, value = pickle.load(inp)
        except EOFError:
            return
        if kind == "evidence":
            ev = Evidence(**value, facts=_Awaited())
            pending = _draw_halved(pending, ev, send)
            _release()      # the drawn figures' garbage, while the run gathers its facts beside this process
        elif ev is not None:
            ev.facts = value
            pending = _draw(pending, ev, send)


def main() -> None:
    """The helper process."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the main process's to handle; EOF ends this one
    serve(sys.stdin.buffer, sys.stdout.buffer)
