"""TensorBoard export (watch.tensorboard = true): history scalars, per-layer probe statistics and
histograms of weights and activations, written with torch.utils.tensorboard to RUN_DIR/tensorboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..loop import Callback

TENSORBOARD = "tensorboard"


class TensorBoardCallback(Callback):
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RecipeError(["watch.tensorboard: the tensorboard package is not installed; "
                               "pip install 'trainwell[tensorboard]' or set watch.tensorboard = false"]) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD))

    def epoch_end(self, trainer, row: dict[str, Any]) -> None:
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(key.replace("_", "/", 1) if key[:4] in ("trai", "val_") else key,
                                       value, epoch)
        for name, p in trainer.model.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)

    def probes(self, record: dict[str, Any]) -> None:
        """Sink of the probe callback: one epoch's per-layer statistics."""
        epoch = record["epoch"]
        for group in ("activations", "weights"):
            for layer, stats in record[group].items():
                for stat, value in stats.items():
                    if isinstance(value, float):
                        self.writer.add_scalar(f"{group}/{layer}/{stat}", value, epoch)
                hist = stats.get("hist")
                if hist and sum(hist["counts"]):
                    self._histogram(f"activations/{layer}", hist, epoch)

    def _histogram(self, tag: str, hist: dict[str, Any], epoch: int) -> None:
        counts, lo, hi = hist["counts"], hist["lo"], hist["hi"]
        width = (hi - lo) / len(counts) if hi > lo else 1.0
        limits = [lo + width * (i + 1) for i in range(len(counts))]
        centers = [lo + width * (i + 0.5) for i in range(len(counts))]
        n = sum(counts)
        self.writer.add_histogram_raw(tag, min=lo, max=hi, num=n,
                                      sum=sum(c * x for c, x in zip(counts, centers)),
                                      sum_squares=sum(c * x * x for c, x in zip(counts, centers)),
                                      bucket_limits=limits, bucket_counts=counts, global_step=epoch)

    def fit_end(self, trainer) -> None:
        self.writer.flush()
        self.writer.close()
