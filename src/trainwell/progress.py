"""The live progress bar (rich): epoch, batches, loss, the monitored metric, LR and ETA.

Silent when asked (`--quiet`) or when stdout is not a terminal. It is updated per batch with a
counter only; numbers are read once per epoch, so it adds no host synchronisation.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressBar:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None

    @staticmethod
    def wanted(quiet: bool, console: Console | None = None) -> bool:
        return not quiet and (console or Console(stderr=True)).is_terminal

    def start(self, epochs: int, batches_per_epoch: int, initial_epoch: int = 0) -> None:
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
        self._progress.advance(self._task)

    def end_epoch(self, row: dict[str, Any], monitor: str) -> None:
        parts = [f"loss {row['train_loss']:.4f}"]
        if row.get("val_loss") is not None:
            parts.append(f"val_loss {row['val_loss']:.4f}")
        if monitor in row and monitor not in ("val_loss", "train_loss") and row[monitor] is not None:
            parts.append(f"{monitor} {row[monitor]:.4f}")
        parts.append(f"lr {row['lr']:.2e}")
        epoch = row["epoch"]
        self._progress.update(self._task, completed=epoch * self._bpe, epoch=min(epoch + 1,
                              self._progress.tasks[0].fields["epochs"]), summary="  ".join(parts))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
