"""The training loop, readable top to bottom.

    fit_start
    for epoch in epochs:
        epoch_start
        for batch in shuffled training rows (seeded generator; tensor indexing, no DataLoader):
            forward -> loss (+ L1/L2 penalties) -> backward            (÷ accumulate)
            every `accumulate` batches:
                grad norm (logged, pre-clip) -> clip by value -> clip by norm
                -> decoupled weight decay -> optimizer.step -> zero_grad
                step += 1 -> lr = base_lr * schedule(step) * plateau scale * NaN-guard scale
                step_end
                every checkpoint.every_steps steps / every_minutes: NaN check, save `last` mid-epoch
            Ctrl-C / SIGTERM seen: save `last`, raise Interrupted (exit 130)
        NaN check (loss, gradients, weights): stop, or roll back to the last good state
        evaluate validation split (inference mode, whole split at once for the metrics)
        record one history row -> plateau -> early stopping (should_stop, reason)
        epoch_end (a callback may set state.stop_reason)
        save best (when improved) and last checkpoints, history.csv
    restore best weights -> fit_end

The step does no host synchronisation: loss sums, grad norms and predictions stay on the device
and are read once per epoch (and at each mid-epoch checkpoint). Where the run is lives in
`Trainer.state` (runstate.py captures and restores it exactly) plus the objects with a `state_dict`.
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
from . import runstate, schedules
from .callbacks import EarlyStopping, StopReason
from .callbacks.nonfinite import NonFiniteGuard, all_finite
from .data.augment import build_augmenter
from .errors import Interrupted
from .interrupts import InterruptFlag
from .losses import l1_penalty, l2_penalty, resolve_kind
from .optim import apply_decoupled_decay, split_parameters
from .rundir import BEST, CHECKPOINTS, HISTORY, LAST, atomic_write_text, history_csv
from .runstate import EpochCursor, LoopState
from .seeding import stream, stream_seed

GOOD_STATES = 3       # rollback policy: good states kept in memory (each one model + optimizer state)

__all__ = ["Callback", "EpochCursor", "LoopState", "SplitTensors", "Trainer"]


@dataclass
class SplitTensors:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


class Callback:
    """Base of loop callbacks: override the events you need. Callbacks read `trainer.state.history`;
    one may stop the run at epoch_end by setting `trainer.state.stop_reason` (and `stopped_epoch`).

    A callback with state that a resume needs returns it from `state_dict` (dicts and lists of
    tensors and JSON values); every checkpoint saves it under the callback's class name (tensors as
    safetensors) and a resume hands it back to `load_state_dict` before `fit_start`."""

    def fit_start(self, trainer: Trainer) -> None: ...
    def epoch_start(self, trainer: Trainer) -> None: ...
    def step_end(self, trainer: Trainer) -> None: ...
    def epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def fit_end(self, trainer: Trainer) -> None: ...
    def state_dict(self) -> dict[str, Any]: return {}
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    def __init__(self, *, recipe, model: nn.Module, loss_fn, optimizer: torch.optim.Optimizer, task: str,
                 n_classes: int, train: SplitTensors, val: SplitTensors | None, device: torch.device,
                 run_dir: Path | None = None, extra_tensors: dict[str, torch.Tensor] | None = None,
                 callbacks: list[Callback] | None = None, progress=None, augment=None):
        self.recipe, self.model, self.loss_fn, self.optimizer = recipe, model, loss_fn, optimizer
        self.task, self.n_classes, self.device = task, n_classes, device
        self.train_data, self.val_data = train, val
        self.run_dir = run_dir
        self.extra_tensors = extra_tensors or {}      # e.g. normalizer statistics, saved with checkpoints
        self.callbacks = callbacks or []
        self.progress = progress
        # (xb, yb) -> (xb, yb or soft targets) on training batches; built from [data.augment] when not
        # given, so every Trainer of a recipe (a resumed one too) augments the same way.
        self.augment = augment if augment is not None else build_augmenter(
            recipe.data.augment, tuple(train.x.shape[1:]), n_classes, stream_seed(recipe.seed, "augment"))
        self.state = LoopState()
        self.metrics = M.build_metrics(task, n_classes).to(device)
        t = recipe.train
        self.batch_size, self.accumulate = t.batch_size, t.accumulate
        n = len(train)
        self.batches_per_epoch = n // self.batch_size if t.drop_last else math.ceil(n / self.batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"train.batch_size: got {self.batch_size}, larger than the {n} training rows "
                             "with train.drop_last = true")
        self.steps_per_epoch = max(1, self.batches_per_epoch // self.accumulate)
        self.total_steps = self.steps_per_epoch * t.epochs
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.plateau = schedules.Plateau(recipe.schedule) if recipe.schedule.kind == "reduce_on_plateau" else None
        s = recipe.stopping
        self.stopper = EarlyStopping.from_section(s) if s.enabled else None
        # The best-epoch monitor also decides the "best" checkpoint when early stopping is off.
        self.monitor = EarlyStopping.from_section(s.model_copy(update={"patience": 10**9}))
        self.best_state: dict[str, torch.Tensor] | None = None
        self.shuffle = stream(recipe.seed, "shuffle")
        reg = recipe.regularization
        decay, rest = split_parameters(model)
        self.penalized = decay + rest if reg.penalize_bias_and_norm else decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self.guard = NonFiniteGuard.from_section(recipe.watch)
        self.interrupts: InterruptFlag | None = None      # set while fit runs
        self.data_fingerprint: str | None = None
        self._good: list[bytes] = []                      # last good states, serialized (rollback policy)
        c = recipe.checkpoint
        self._every_seconds = c.every_minutes * 60 or math.inf
        self._saves_mid_epoch = bool(c.every_steps or c.every_minutes) and (
            run_dir is not None or self.guard.keeps_snapshots)
        self._next_save = math.inf
        self._fault = False
        self._set_lr()

    # ------------------------------------------------------------------------------ LR control
    def lr_scale(self, step: int) -> float:
        s = self.recipe.schedule
        f = schedules.lr_factor(s, step, self.steps_per_epoch, self.total_steps, base_lr=self.base_lrs[0])
        return f * (self.plateau.scale if self.plateau else 1.0) * self.guard.lr_scale

    def _set_lr(self) -> None:
        scale = self.lr_scale(self.state.step)
        floor = getattr(self.recipe.schedule, "min_lr", 0.0)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = max(base * scale, floor) if self.plateau else base * scale

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------------------ one epoch
    def _batches(self) -> torch.Tensor:
        """This epoch's row order (batch b is rows [b * batch_size, (b + 1) * batch_size))."""
        n = len(self.train_data)
        if self.recipe.train.sampler == "balanced":
            perm = balanced_rows(self.train_data.y, self.shuffle).to(self.device)
        else:
            perm = torch.randperm(n, generator=self.shuffle).to(self.device)
        if self.recipe.train.drop_last:
            perm = perm[: self.batches_per_epoch * self.batch_size]
        elif self._has_batchnorm and n % self.batch_size == 1 and n > 1:
            perm = perm[:-1]           # batch norm cannot train on a batch of one row
        return perm

    def _new_cursor(self) -> EpochCursor:
        perm = self._batches()
        regression_targets = self.task == "regression" and self.train_data.y.dim() > 1
        preds = None if regression_targets else torch.zeros(
            len(perm), dtype=torch.float32 if self.task == "regression" else torch.long, device=self.device)
        zero = torch.zeros((), device=self.device)
        return EpochCursor(perm, zero, zero.clone(), preds)

    def train_epoch(self) -> dict[str, float]:
        """Run one epoch (or the rest of one, after a resume); returns the training part of its row."""
        st = self.state
        if st.cursor is None:
            st.cursor = self._new_cursor()
        cur = st.cursor
        self.model.train()
        self._fault = False            # set by a replay that meets a second non-finite batch
        n_batches = cur.n_batches(self.batch_size)
        while cur.batch < n_batches and not self._fault:
            stepped = self._train_batch(cur, n_batches)
            if stepped and cur.batch < n_batches and self._save_due() and not self._save_mid_epoch():
                break                  # non-finite: the epoch ends here and the guard decides
            if self.progress is not None:
                self.progress.advance_batch()
            if self.interrupts is not None and self.interrupts.requested:
                self._interrupt()
        st.cursor = None
        return self._epoch_summary(cur)

    def _train_batch(self, cur: EpochCursor, n_batches: int) -> bool:
        """One batch forward and backward, and the optimizer step when it closes an accumulation
        group; returns whether a step was taken."""
        data, reg = self.train_data, self.recipe.regularization
        start = cur.batch * self.batch_size
        idx = cur.perm[start:start + self.batch_size]
        cur.batch += 1
        xb, yb = data.x.index_select(0, idx), data.y.index_select(0, idx)
        if self.augment is not None:   # train metrics below still compare with the hard labels
            xb, yb = self.augment(xb, yb)
        out = self.model(xb)
        loss = self.loss_fn(out, yb)
        if cur.preds is not None:
            cur.preds[start:start + len(idx)] = M.predictions(out.detach(), self.task)
        if self.guard.careful and not all_finite([loss]):     # replay after a rollback: skip the bad batch
            if not self.guard.may_skip("skip_batch", epoch=self.state.epoch + 1, batch=cur.batch):
                self._fault = True
            cur.skipped_rows += len(idx)
        else:
            total = loss
            if reg.l2:
                total = total + l2_penalty(self.penalized, reg.l2)
            if reg.l1:
                total = total + l1_penalty(self.penalized, reg.l1)
            (total / self.accumulate if self.accumulate > 1 else total).backward()
            cur.loss_sum += loss.detach() * len(idx)
            cur.pending += 1
        if not cur.pending or (cur.pending < self.accumulate and cur.batch < n_batches):
            return False
        norm = self._step()
        cur.pending = 0
        if norm is None:
            return False
        cur.norm_sum += norm
        cur.n_steps += 1
        return True

    def _step(self) -> torch.Tensor | None:
        t = self.recipe.train
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if self.guard.careful and not all_finite([norm]):
            self.optimizer.zero_grad(set_to_none=True)
            if not self.guard.may_skip("skip_step", epoch=self.state.epoch + 1, step=self.state.step):
                self._fault = True
            return None
        if t.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, t.clip_value)
        if t.clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, t.clip_norm,
                                                 norm if t.clip_value is None else
                                                 torch.nn.utils.get_total_norm(grads))
        apply_decoupled_decay(self.optimizer)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self._set_lr()
        for cb in self.callbacks:
            cb.step_end(self)
        return norm.detach()

    def _epoch_summary(self, cur: EpochCursor) -> dict[str, float]:
        seen = min(cur.batch * self.batch_size, len(cur.perm))
        counted = seen - cur.skipped_rows
        train_loss = float(cur.loss_sum) / counted if counted else math.nan
        row = {"train_loss": train_loss, "grad_norm": float(cur.norm_sum) / max(cur.n_steps, 1)}
        if cur.preds is not None and math.isfinite(train_loss):
            y = self.train_data.y[cur.perm[:seen]]
            row.update({f"train_{k}": v for k, v in M.compute(self.metrics, cur.preds[:seen], y).items()})
        return row

    # ------------------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def evaluate(self, data: SplitTensors, model: nn.Module | None = None) -> dict[str, float]:
        """Loss and metrics over a whole split, in eval mode."""
        model = model or self.model
        was_training = model.training
        model.eval()
        outs = [model(data.x[i:i + self.recipe.train.eval_batch_size])
                for i in range(0, len(data), self.recipe.train.eval_batch_size)]
        model.train(was_training)
        out = torch.cat(outs)
        result = {"loss": float(self.loss_fn(out, data.y))}
        if math.isfinite(result["loss"]) and bool(torch.isfinite(out).all()):
            result.update(M.compute(self.metrics, M.predictions(out, self.task), data.y,
                                    M.probabilities(out, self.task, resolve_kind(self.recipe.loss.kind, self.task))))
        return result

    # ------------------------------------------------------------------------------ the run
    def fit(self) -> LoopState:
        t, st = self.recipe.train, self.state
        if self.run_dir is not None and self.data_fingerprint is None:
            self.data_fingerprint = runstate.fingerprint(self.train_data, self.val_data)
        for cb in self.callbacks:
            cb.fit_start(self)
        if self.progress is not None:
            self.progress.start(t.epochs, self.batches_per_epoch, initial_epoch=st.epoch)
        if self.guard.keeps_snapshots and not self._good:
            self._good = [ckpt.encode(*self.state_dict(), "the initial state")]
        self._next_save = time.monotonic() + self._every_seconds
        try:
            with InterruptFlag() as self.interrupts:
                while st.epoch < t.epochs and st.stop_reason is None:
                    self._epoch()
        finally:
            self.interrupts = None
            if self.progress is not None:
                self.progress.stop()
        if st.stop_reason is None:
            st.stop_reason, st.stopped_epoch = StopReason.FINISHED.value, st.epoch
        if self.recipe.stopping.restore_best and self.best_state is not None:
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
        val_row = self.evaluate(self.val_data) if self.val_data is not None and len(self.val_data) else {}
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
            cb.epoch_end(self, row)
        if healthy:
            self._write_state(best=self.recipe.checkpoint.best and self.monitor.improved)
        if self.run_dir is not None:
            atomic_write_text(self.run_dir / HISTORY, history_csv(st.history))
        if self.progress is not None:
            self.progress.end_epoch(row, self.recipe.stopping.monitor)
        if self.interrupts is not None and self.interrupts.requested:
            self._interrupt()

    def _decide(self, row: dict[str, Any]) -> None:
        """Plateau, best epoch and early stopping: each reads the recorded row."""
        st, s = self.state, self.recipe.stopping
        if self.plateau is not None:
            value = _monitored(row, self.recipe.schedule.monitor, "schedule.monitor")
            self.plateau.update(value, self.base_lrs[0])
            self._set_lr()
        value = _monitored(row, s.monitor, "stopping.monitor")
        self.monitor.update(st.epoch, value)
        if self.monitor.improved:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.stopper is not None:
            stop, reason = self.stopper.update(st.epoch, value)
            if stop:
                st.stop_reason, st.stopped_epoch = reason.value, st.epoch

    @property
    def best_epoch_number(self) -> int:
        return self.monitor.best_epoch or self.state.epoch

    # ------------------------------------------------------------------------------ faults
    def _weights(self) -> list[torch.Tensor]:
        return [t for t in self.model.state_dict().values() if t.is_floating_point()]

    def _rollback(self) -> None:
        """Back to the last good state with a smaller LR; the guard keeps its own record. When the
        replay from that state failed too, it was finite but already diverging: go one further back."""
        if self.guard.consecutive and len(self._good) > 1:
            self._good.pop()
        where = {"epoch": self.state.epoch + 1, "at_step": self.state.step}
        guard = self.guard.state_dict()
        self.load_state_dict(*ckpt.decode(self._good[-1], "the last good state"))
        self.guard.load_state_dict(guard)
        self.guard.rolled_back(**where, to_step=self.state.step)
        self._set_lr()

    def _interrupt(self) -> NoReturn:
        """Ctrl-C / SIGTERM: save where the run is (if finite) and stop with exit code 130."""
        st, cur = self.state, self.state.cursor
        where = f"epoch {st.epoch + 1}" + (f", batch {cur.batch}" if cur is not None else "")
        if self.run_dir is None:
            raise Interrupted(f"interrupted by {self.interrupts.name} at {where}; no run folder, nothing saved")
        sums = [cur.loss_sum, cur.norm_sum] if cur is not None else []
        if all_finite(sums + self._weights()):
            self._write_state(best=False, force_last=True)
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

    def _save_due(self) -> bool:
        if not self._saves_mid_epoch:
            return False
        every = self.recipe.checkpoint.every_steps
        return bool(every and self.state.step % every == 0) or time.monotonic() >= self._next_save

    def _save_mid_epoch(self) -> bool:
        """`last` at a step boundary inside an epoch; False (nothing written) when not finite."""
        self._next_save = time.monotonic() + self._every_seconds
        cur = self.state.cursor
        if not all_finite([cur.loss_sum, cur.norm_sum, *self._weights()]):
            return False
        self.guard.passed()
        self._write_state(best=False)
        return True

    def _write_state(self, best: bool, force_last: bool = False) -> None:
        """Serialize the state once: the `last` checkpoint, and the in-memory last good state of the
        rollback policy; plus the best weights when `best`. Callers check that all is finite."""
        c = self.recipe.checkpoint
        want_last = self.run_dir is not None and (c.last or force_last)
        files = {}
        if want_last or self.guard.keeps_snapshots:
            data = ckpt.encode(*self.state_dict(), LAST)
            if self.guard.keeps_snapshots:
                self._good = [*self._good[-(GOOD_STATES - 1):], data]
            if want_last:
                files[LAST] = data
        if best and self.run_dir is not None:
            files[BEST] = ckpt.encode({**ckpt.prefixed("model", self.model.state_dict()), **self.extra_tensors},
                                      {"epoch": self.state.epoch, "monitor": self.recipe.stopping.monitor,
                                       "value": self.monitor.best}, BEST)
        if files:
            ckpt.write_files(self.run_dir / CHECKPOINTS, files)


def balanced_rows(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """train.sampler = "balanced": len(labels) row indices drawn with replacement, row i with probability
    proportional to 1 / count(class of i), so that every class present is equally likely."""
    y = labels.long().cpu()
    counts = torch.bincount(y).double()
    return torch.multinomial((1.0 / counts)[y], len(y), replacement=True, generator=generator)


def _monitored(row: dict[str, Any], key: str, field_name: str) -> float:
    if key not in row:
        raise KeyError(f"{field_name}: got {key!r}, not a history column; columns: {', '.join(row)}")
    value = row[key]
    return float("nan") if value is None else float(value)
