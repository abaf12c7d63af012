"""The training loop, readable top to bottom.

    fit_start
    for epoch in epochs:
        epoch_start
        for batch in shuffled training rows (seeded generator; tensor indexing, no DataLoader):
            train_step (step.py): augment -> forward -> loss + penalties -> backward (÷ accumulate)
            every `accumulate` batches: grad norm (logged, pre-clip) -> transforms -> optimizer step
                step += 1 -> LR of the next step = setup.lr(step) (the Trainer is its one owner)
                step_end
                every checkpoint.every_steps steps / every_minutes: NaN check, save `last` mid-epoch
            Ctrl-C / SIGTERM seen: save `last`, raise Interrupted (exit 130)
        NaN check (loss, gradients, weights): stop, or roll back to the last good state
        evaluate validation split (inference mode, whole split at once for the metrics)
        record one history row -> plateau -> best epoch -> early stopping (should_stop, reason)
        epoch_end (a callback may return a stop reason)
        save best (when improved) and last checkpoints, history.csv (written and fsynced by a helper thread)
    restore best weights -> fit_end

The Trainer receives a Setup (build.py) and never reads the recipe. The step does no host
synchronisation: loss sums, grad norms and predictions stay on the device and are read once per
epoch (and at each mid-epoch checkpoint). Where the run is lives in `Trainer.state` (runstate.py
captures and restores it exactly) plus the Setup's components and the callbacks, saved by name.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from . import checkpoint as ckpt
from . import metrics as M
from . import runstate
from .build import Settings
from .callbacks import StopReason
from .callbacks.nonfinite import NonFiniteGuard, all_finite
from .errors import Interrupted
from .interrupts import InterruptFlag
from .rundir import BEST, CHECKPOINTS, HISTORY, LAST, atomic_write_text, history_csv
from .runstate import EpochCursor, LoopState
from .step import close_group, train_step

__all__ = ["Callback", "EpochCursor", "LoopState", "SplitTensors", "Trainer"]


@dataclass
class SplitTensors:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


class Callback:
    """Base of loop callbacks: override the events you need. Callbacks read `trainer.state.history`;
    one stops the run by returning a stop reason (a StopReason or its string) from epoch_end.

    A callback with state that a resume needs returns it from `state_dict` (dicts and lists of
    tensors and JSON values); every checkpoint saves it under the callback's class name (tensors as
    safetensors) and a resume hands it back to `load_state_dict` before `fit_start`."""

    def fit_start(self, trainer: Trainer) -> None: ...
    def epoch_start(self, trainer: Trainer) -> None: ...
    def step_end(self, trainer: Trainer) -> None: ...
    def epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> str | None: ...
    def fit_end(self, trainer: Trainer) -> None: ...
    def state_dict(self) -> dict[str, Any]: return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    def __init__(self, setup, *, run_dir: Path | None = None, extra_tensors: dict[str, torch.Tensor] | None = None,
                 callbacks: list[Callback] | None = None, progress=None):
        self.setup = setup
        self.model = setup.model                          # the finisher may swap in the returned model
        self.run_dir = run_dir
        self.extra_tensors = extra_tensors or {}      # e.g. normalizer statistics, saved with checkpoints
        self.callbacks = callbacks or []
        self.progress = progress
        self.state = LoopState()
        self.metrics = M.build_metrics(setup.task, setup.n_classes).to(setup.device)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.interrupts: InterruptFlag | None = None      # set while fit runs
        self.data_fingerprint: str | None = None
        self._writes = run_dir is not None                # (data parallel: whether rank 0 writes)
        self._next_save = math.inf
        self._fault = False
        self._writer = ckpt.BackgroundWriter()            # checkpoint files, written while training goes on
        self.apply_lr()

    @property
    def settings(self) -> Settings:
        return self.setup.settings

    @property
    def guard(self) -> NonFiniteGuard:
        return self.setup.components["guard"]

    def apply_lr(self) -> None:
        """Set each parameter group's LR for the next step: the one place the LR is written."""
        for group, lr in zip(self.setup.optimizer.param_groups, self.setup.lr(self.state.step)):
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return self.setup.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------------------ one epoch
    def _batches(self) -> torch.Tensor:
        """This epoch's row order (batch b is rows [b * batch_size, (b + 1) * batch_size))."""
        n = len(self.setup.train)
        bs = self.settings.batch_size
        if self.settings.sampler == "balanced":
            perm = balanced_rows(self.setup.train.y, self.setup.shuffle).to(self.setup.device)
        else:
            perm = torch.randperm(n, generator=self.setup.shuffle).to(self.setup.device)
        if self.settings.drop_last:
            perm = perm[: self.setup.batches_per_epoch * bs]
        elif n % bs == 1 and n > 1 and has_batchnorm(self.model):
            perm = perm[:-1]           # batch norm cannot train on a batch of one row
        return perm

    def _new_cursor(self) -> EpochCursor:
        perm = self._batches()
        task, device = self.setup.task, self.setup.device
        regression_targets = task == "regression" and self.setup.train.y.dim() > 1
        preds = None if regression_targets else torch.zeros(
            len(perm), dtype=torch.float32 if task == "regression" else torch.long, device=device)
        zero = torch.zeros((), device=device)
        return EpochCursor(perm, zero, zero.clone(), preds)

    def train_epoch(self) -> dict[str, float]:
        """Run one epoch (or the rest of one, after a resume); returns the training part of its row."""
        st = self.state
        if st.cursor is None:
            st.cursor = self._new_cursor()
        cur = st.cursor
        self.model.train()
        self._fault = False            # set by a replay that meets a second non-finite batch
        n_batches = cur.n_batches(self.settings.batch_size)
        while cur.batch < n_batches and not self._fault:
            stepped = self._train_batch(cur, n_batches)
            if stepped and cur.batch < n_batches and self._save_due() and not self._save_mid_epoch():
                break                  # non-finite: the epoch ends here and the guard decides
            if self.progress is not None:
                self.progress.advance_batch()
            if self._interrupted():
                self._interrupt()
        st.cursor = None
        return self._epoch_summary(cur)

    def _train_batch(self, cur: EpochCursor, n_batches: int) -> bool:
        """One batch through `train_step`, which also steps when the batch closes an accumulation
        group; returns whether the optimizer stepped."""
        bs, st = self.settings.batch_size, self.state
        start = cur.batch * bs
        idx = cur.perm[start:start + bs]
        at, rows, scale = self._share(idx)
        cur.batch += 1
        last = cur.batch >= n_batches
        close = cur.pending + 1 >= self.settings.accumulate or last
        data = self.setup.train
        result = train_step(self.setup, data.x.index_select(0, rows), data.y.index_select(0, rows), close=close,
                            careful=self.guard.careful, scale=scale)
        if cur.preds is not None:
            cur.preds[start + at:start + at + len(rows)] = M.predictions(result.out.detach(), self.setup.task)
        if result.skipped == "batch":              # replay after a rollback: skip the bad batch
            if not self.guard.may_skip("skip_batch", epoch=st.epoch + 1, batch=cur.batch):
                self._fault = True
            cur.skipped_rows += len(idx)
            if not (last and cur.pending):         # the group's earlier batches still step at the end
                return False
            norm, skipped = close_group(self.setup, careful=True)
        elif not close:
            if len(rows):
                cur.loss_sum += result.loss.detach() * len(rows)
            cur.pending += 1
            return False
        else:
            if len(rows):              # a worker may get no row of a last batch shorter than the worker count
                cur.loss_sum += result.loss.detach() * len(rows)
            norm, skipped = result.norm, result.skipped
        cur.pending = 0
        if skipped == "overflow":           # float16: the scaler skipped this update, lowered its scale
            return self._stepped(norm=None)
        if norm is None:
            if not self.guard.may_skip("skip_step", epoch=st.epoch + 1, step=st.step):
                self._fault = True
            return False
        return self._stepped(norm)

    def _stepped(self, norm: torch.Tensor | None) -> bool:
        """After an optimizer step: the counter, the LR, the callbacks, the epoch's norm sum. A step the
        float16 scaler skipped counts as a step (the schedule advances, as in any scaled loop) but its
        non-finite norm is not averaged into grad_norm."""
        st, cur = self.state, self.state.cursor
        st.step += 1
        self.apply_lr()
        for cb in self.callbacks:
            cb.step_end(self)
        if norm is not None:
            cur.norm_sum += norm
            cur.n_steps += 1
        return True

    def _share(self, idx: torch.Tensor) -> tuple[int, torch.Tensor, float]:
        """This process's rows of a batch: (their offset in it, the rows, the loss scale). One process
        takes all of it; a data-parallel worker its part (distributed.py)."""
        return 0, idx, 1.0

    def _interrupted(self) -> bool:
        """Ctrl-C / SIGTERM seen (data parallel: by any worker)."""
        return self.interrupts is not None and bool(self.interrupts.requested)

    def _all_ranks(self, ok: bool) -> bool:
        """A finiteness verdict, agreed by every worker (one process: itself)."""
        return ok

    def _epoch_summary(self, cur: EpochCursor) -> dict[str, float]:
        seen = min(cur.batch * self.settings.batch_size, len(cur.perm))
        counted = seen - cur.skipped_rows
        train_loss = float(cur.loss_sum) / counted if counted else math.nan
        row = {"train_loss": train_loss, "grad_norm": float(cur.norm_sum) / max(cur.n_steps, 1)}
        if cur.preds is not None and math.isfinite(train_loss):
            y = self.setup.train.y[cur.perm[:seen]]
            row.update({f"train_{k}": v for k, v in M.compute(self.metrics, cur.preds[:seen], y).items()})
        return row

    # ------------------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def evaluate(self, data: SplitTensors, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and metrics over a whole split, in eval mode."""
        model = model or self.model
        was_training = model.training
        model.eval()
        size = self.settings.eval_batch_size
        with self.setup.precision.autocast():          # evaluated as trained
            outs = [model(data.x[i:i + size]) for i in range(0, len(data), size)]
        model.train(was_training)
        out = torch.cat(outs).float()
        result = {"loss": float(self.setup.loss_fn(out, data.y))}
        if math.isfinite(result["loss"]) and bool(torch.isfinite(out).all()):
            result.update(M.compute(self.metrics, M.predictions(out, self.setup.task), data.y,
                                    M.probabilities(out, self.setup.task, self.setup.loss_kind)))
        return result

    def _validate(self) -> dict[str, float]:
        """The validation split's loss and metrics for this epoch's row (data parallel: rank 0's, shared)."""
        val = self.setup.val
        return self.evaluate(val) if val is not None and len(val) else {}

    # ------------------------------------------------------------------------------ the run
    def fit(self) -> LoopState:
        st = self.state
        if self.run_dir is not None and self.data_fingerprint is None:
            self.data_fingerprint = runstate.fingerprint(self.setup.train, self.setup.val)
        for cb in self.callbacks:
            cb.fit_start(self)
        if self.progress is not None:
            self.progress.start(self.settings.epochs, self.setup.batches_per_epoch, initial_epoch=st.epoch)
        if self.guard.keeps_snapshots and not self.guard.remembers:
            self.guard.remember(ckpt.encode(*self.state_dict(), "the initial state"))
        self._next_save = time.monotonic() + self._every_seconds()
        try:
            with InterruptFlag() as self.interrupts:   # also while the last files are written: a signal raises the flag
                try:
                    while st.epoch < self.settings.epochs and st.stop_reason is None:
                        self._epoch()
                except BaseException:
                    self._writer.close(check=False)    # what was queued still lands; the run's own error goes on
                    raise
                self._writer.close()          # every checkpoint on disk (or its write error) before fit returns
                if self._interrupted():       # Ctrl-C / SIGTERM while they were written
                    self._interrupt()
        finally:
            self.interrupts = None
            if self.progress is not None:
                self.progress.stop()
        if st.stop_reason is None:
            st.stop_reason, st.stopped_epoch = StopReason.FINISHED.value, st.epoch
        if self.settings.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for cb in self.callbacks:
            cb.fit_end(self)
        return st

    def _epoch(self) -> None:
        st = self.state
        for cb in self.callbacks:
            cb.epoch_start(self)
        tic = time.perf_counter()
        train_row = self.train_epoch()
        healthy = (not self._fault and math.isfinite(train_row["train_loss"]) and math.isfinite(train_row["grad_norm"])
                   and all_finite(self._weights()))
        if not healthy and self.guard.decide() == "rollback":
            self._rollback()
            return
        val_row = self._validate()
        row = {"epoch": st.epoch + 1, "train_loss": train_row.pop("train_loss"),
               "val_loss": val_row.pop("loss", None), "lr": self.lr, "grad_norm": train_row.pop("grad_norm"),
               "seconds": time.perf_counter() - tic}
        row.update(train_row)
        row.update({f"val_{k}": v for k, v in val_row.items()})
        if self.guard.policy == "rollback":
            row["nan_rollbacks"] = self.guard.rollbacks
        st.epoch += 1
        st.history.append(row)
        if healthy:
            self.guard.passed()
            self._decide(row)
        else:      # the last good checkpoint stays; nothing non-finite is ever written
            self.guard.record("stop", epoch=st.epoch, step=st.step)
            st.stop_reason, st.stopped_epoch = StopReason.NON_FINITE.value, st.epoch
        for cb in self.callbacks:
            reason = cb.epoch_end(self, row)
            if reason is not None and st.stop_reason is None:
                st.stop_reason, st.stopped_epoch = str(reason), st.epoch
        if healthy:
            self._write_state(best=self.settings.save_best and self.setup.components["monitor"].improved)
        if self.run_dir is not None:       # after this epoch's checkpoints, on the same helper thread
            self.write_text(self.run_dir / HISTORY, history_csv(st.history))
        if self.progress is not None:
            forward = self.setup.forward
            self.progress.end_epoch(row, self.settings.monitor, None if forward is None else forward.seconds)
        if self._interrupted():
            self._interrupt()

    def _decide(self, row: dict[str, Any]) -> None:
        """Each component reads the recorded row (plateau, best epoch, early stopping: build.py's
        `build_components`); a stop reason stops the run. Then the LR and the best weights follow."""
        st = self.state
        for component in self.setup.components.values():
            reason = component.after_epoch(st.epoch, row) if hasattr(component, "after_epoch") else None
            if reason is not None and st.stop_reason is None:
                st.stop_reason, st.stopped_epoch = str(reason), st.epoch
        self.apply_lr()
        if self.setup.components["monitor"].improved:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @property
    def best_epoch_number(self) -> int:
        return self.setup.components["monitor"].best_epoch or self.state.epoch

    # ------------------------------------------------------------------------------ faults
    def _weights(self) -> list[torch.Tensor]:
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    def write_text(self, path: Path, text: str) -> None:
        """Replace a run-folder file with `text` (atomically) on the checkpoint writer's thread, in order
        with the checkpoints: a callback's epoch record lands before the epoch's `last` checkpoint."""
        self._writer.call(lambda: atomic_write_text(path, text))

    def _rollback(self) -> None:
        """Back to the guard's restore point with a smaller LR; the guard keeps its own record. The best
        checkpoint goes back too: it may hold an epoch after the restore point, which the run discards."""
        self._writer.close()                      # the best file below replaces what is queued, not the reverse
        where = {"epoch": self.state.epoch + 1, "at_step": self.state.step}
        guard = self.guard.state_dict()
        self.load_state_dict(*ckpt.decode(self.guard.restore_point(), "the last good state"))
        self.guard.load_state_dict(guard)
        self.guard.rolled_back(**where, to_step=self.state.step)
        self.apply_lr()
        if self.settings.save_best and self.run_dir is not None:
            if self.best_state is None:         # back before any epoch: no best epoch yet
                (self.run_dir / CHECKPOINTS / BEST).unlink(missing_ok=True)
            else:
                ckpt.write_files(self.run_dir / CHECKPOINTS, {BEST: self._best_checkpoint(self.best_state)})

    def _interrupt(self) -> NoReturn:
        """Ctrl-C / SIGTERM: save where the run is (if finite) and stop with exit code 130."""
        st, cur = self.state, self.state.cursor
        where = f"epoch {st.epoch + 1}" + (f", batch {cur.batch}" if cur is not None else "")
        if not self._writes:
            raise Interrupted(f"interrupted by {self.interrupts.name} at {where}; no run folder, nothing saved")
        sums = [cur.loss_sum, cur.norm_sum] if cur is not None else []
        if self._all_ranks(all_finite(sums + self._weights())):
            self._write_state(best=False, force_last=True)
            self._writer.close()                  # on disk before the message says so
            saved = "checkpoint saved"
        else:
            saved = "the state was not finite, the last good checkpoint is kept"
        raise Interrupted(f"interrupted by {self.interrupts.name} at {where}; {saved}\n"
                          f"resume with: trainwell resume {shlex.quote(str(self.run_dir))}")

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a resume needs: (tensors, JSON-able metadata). See runstate.py."""
        return runstate.capture(self)

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        runstate.restore(self, tensors, meta)

    def _every_seconds(self) -> float:
        return self.settings.every_minutes * 60 or math.inf

    def _save_due(self) -> bool:
        """A mid-epoch `last` (or, under the rollback policy, a good state in memory) is due."""
        s = self.settings
        if not (s.every_steps or s.every_minutes) or not (self._writes or self.guard.keeps_snapshots):
            return False
        every = self.settings.every_steps
        return bool(every and self.state.step % every == 0) or time.monotonic() >= self._next_save

    def _save_mid_epoch(self) -> bool:
        """`last` at a step boundary inside an epoch; False (nothing written) when not finite."""
        self._next_save = time.monotonic() + self._every_seconds()
        cur = self.state.cursor
        if not self._all_ranks(all_finite([cur.loss_sum, cur.norm_sum, *self._weights()])):
            return False
        self.guard.passed()
        self._write_state(best=False)
        return True

    def _write_state(self, best: bool, force_last: bool = False) -> None:
        """Serialize the state once: the `last` checkpoint, and the in-memory last good state of the
        rollback policy; plus the best weights when `best`. Callers check that all is finite."""
        want_last = self.run_dir is not None and (self.settings.save_last or force_last)
        files = {}
        if want_last or self.guard.keeps_snapshots:
            data = ckpt.encode(*self.state_dict(), LAST)
            self.guard.remember(data)
            if want_last:
                files[LAST] = data
        if best and self.run_dir is not None:
            files[BEST] = self._best_checkpoint(self.model.state_dict())
        if files:
            self._writer.submit(self.run_dir / CHECKPOINTS, files)

    def _best_checkpoint(self, weights: dict[str, torch.Tensor]) -> bytes:
        """best.safetensors: the best epoch's weights with the data statistics, and which epoch it is."""
        monitor = self.setup.components["monitor"]
        return ckpt.encode({**ckpt.prefixed("model", weights), **self.extra_tensors},
                           {"epoch": monitor.best_epoch, "monitor": self.settings.monitor, "value": monitor.best},
                           BEST)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def balanced_rows(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """train.sampler = "balanced": len(labels) row indices drawn with replacement, row i with probability
    proportional to 1 / count(class of i), so that every class present is equally likely."""
    y = labels.long().cpu()
    counts = torch.bincount(y).double()
    return torch.multinomial((1.0 / counts)[y], len(y), replacement=True, generator=generator)

