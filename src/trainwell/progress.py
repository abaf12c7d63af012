"""The live progress bar (rich): epoch, batches, loss, the monitored metric, LR and ETA.

Silent when asked (`--quiet`) or when stdout is not a terminal. It is updated per batch with a
counter only; numbers are read once per epoch, so it adds no host synchronisation.

In a Jupyter notebook (no terminal, but a display) it is an HTML table of the epochs so far,
updated in place once per epoch; `quiet=True` silences it there too.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a display), False in a terminal or a plain script."""
    import sys

    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class EpochTable:
    """The notebook's progress: one row per finished epoch in an HTML table that is updated in place."""

    COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._handle = None

    def start(self, epochs: int, batches_per_epoch: int, initial_epoch: int = 0) -> None:
        from IPython.display import HTML, display

        self.epochs, self.rows = epochs, []
        self._handle = display(HTML(self.html()), display_id=True)

    def advance_batch(self) -> None:
        """Per batch: nothing (the table changes once per epoch)."""

    def end_epoch(self, row: dict[str, Any], monitor: str) -> None:
        from IPython.display import HTML

        self.monitor = monitor
        self.rows.append(dict(row))
        if self._handle is not None:
            self._handle.update(HTML(self.html()))

    def html(self) -> str:
        monitor = getattr(self, "monitor", None)
        cols = list(self.COLUMNS) + ([monitor] if monitor and monitor not in self.COLUMNS else [])

        def cell(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in self.rows)
        done = self.rows[-1]["epoch"] if self.rows else 0
        return (f"<div class='trainwell-progress'><b>trainwell: epoch {done}/{getattr(self, 'epochs', '?')}</b>"
                f"<table><tr>{head}</tr>{body}</table></div>")

    def stop(self) -> None:
        self._handle = None


class ProgressBar:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._table: EpochTable | None = None

    @staticmethod
    def wanted(quiet: bool, console: Console | None = None) -> bool:
        return not quiet and ((console or Console(stderr=True)).is_terminal or in_notebook())

    def start(self, epochs: int, batches_per_epoch: int, initial_epoch: int = 0) -> None:
        if not self.console.is_terminal and in_notebook():
            self._table = EpochTable()
            self._table.start(epochs, batches_per_epoch, initial_epoch)
            return
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.fields[summary]}"), TimeRemainingColumn(),
            console=self.console, transient=False, refresh_per_second=8)
        self._progress.start()
        self._bpe = batches_per_epoch
        self._task = self._progress.add_task("fit", total=epochs * batches_per_epoch,
                                             completed=initial_epoch * batches_per_epoch,
                                             epoch=initial_epoch + 1, epochs=epochs, summary="")

    def advance_batch(self) -> None:
        if self._table is None:
            self._progress.advance(self._task)

    def end_epoch(self, row: dict[str, Any], monitor: str, compile_seconds: float | None = None) -> None:
        if self._table is not None:
            self._table.end_epoch(row, monitor)
            return
        parts = [f"loss {row['train_loss']:.4f}"]
        if row.get("val_loss") is not None:
            parts.append(f"val_loss {row['val_loss']:.4f}")
        if monitor in row and monitor not in ("val_loss", "train_loss") and row[monitor] is not None:
            parts.append(f"{monitor} {row[monitor]:.4f}")
        parts.append(f"lr {row['lr']:.2e}")
        if compile_seconds is not None:       # train.compile: the time spent compiling, apart from training
            parts.append(f"compile {compile_seconds:.1f}s")
        epoch = row["epoch"]
        self._progress.update(self._task, completed=epoch * self._bpe, epoch=min(epoch + 1,
                              self._progress.tasks[0].fields["epochs"]), summary="  ".join(parts))

    def stop(self) -> None:
        if self._table is not None:
            self._table.stop()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
