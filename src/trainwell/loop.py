"""The training loop, readable top to bottom.

    fit_start
    for epoch in epochs:
        epoch_start
        for batch in shuffled training rows (seeded generator; tensor indexing, no DataLoader):
            forward -> loss (+ L1/L2 penalties) -> backward            (÷ accumulate)
            every `accumulate` batches:
                grad norm (logged, pre-clip) -> clip by value -> clip by norm
                -> decoupled weight decay -> optimizer.step -> zero_grad
                step += 1 -> lr = base_lr * schedule(step) * plateau scale
                step_end
        evaluate validation split (inference mode, whole split at once for the metrics)
        record one history row -> plateau -> early stopping (should_stop, reason)
        save best (when improved) and last checkpoints, history.csv
        epoch_end
    restore best weights -> fit_end

The step does no host synchronisation: loss sums, grad norms and predictions stay on the device
and are read once per epoch. Every piece of state that a resume needs lives in `Trainer.state`
plus the objects with a `state_dict`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from . import metrics as M
from . import schedules
from .callbacks import EarlyStopping, StopReason
from .data.augment import build_augmenter
from .losses import l1_penalty, l2_penalty
from .optim import apply_decoupled_decay, split_parameters


@dataclass
class SplitTensors:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class LoopState:
    """Counters that, with the model/optimizer/RNG states, define where a run is."""
    epoch: int = 0                     # epochs completed
    step: int = 0                      # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    stopped_epoch: int = 0


class Callback:
    """Base of loop callbacks: override the events you need. Callbacks read `trainer.state.history`."""

    def fit_start(self, trainer: Trainer) -> None: ...
    def epoch_start(self, trainer: Trainer) -> None: ...
    def step_end(self, trainer: Trainer) -> None: ...
    def epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def fit_end(self, trainer: Trainer) -> None: ...


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
            recipe.data.augment, tuple(train.x.shape[1:]), n_classes, recipe.seed + 2)
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
        self.shuffle = torch.Generator().manual_seed(recipe.seed + 1)
        reg = recipe.regularization
        decay, rest = split_parameters(model)
        self.penalized = decay + rest if reg.penalize_bias_and_norm else decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self._set_lr()

    # ------------------------------------------------------------------------------ LR control
    def lr_scale(self, step: int) -> float:
        s = self.recipe.schedule
        f = schedules.lr_factor(s, step, self.steps_per_epoch, self.total_steps, base_lr=self.base_lrs[0])
        return f * (self.plateau.scale if self.plateau else 1.0)

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
        """This epoch's row order, as a (batches, ...) list of index tensors."""
        n = len(self.train_data)
        perm = torch.randperm(n, generator=self.shuffle).to(self.device)
        if self.recipe.train.drop_last:
            perm = perm[: self.batches_per_epoch * self.batch_size]
        elif self._has_batchnorm and n % self.batch_size == 1 and n > 1:
            perm = perm[:-1]           # batch norm cannot train on a batch of one row
        return perm

    def train_epoch(self) -> dict[str, float]:
        model, data = self.model, self.train_data
        reg = self.recipe.regularization
        model.train()
        perm = self._batches()
        n_rows = len(perm)
        loss_sum = torch.zeros((), device=self.device)
        norm_sum = torch.zeros((), device=self.device)
        n_steps = 0
        preds = torch.empty(n_rows, dtype=torch.long if self.task != "regression" else torch.float32,
                            device=self.device) if self.task != "regression" or data.y.dim() == 1 else None
        pending = 0
        for start in range(0, n_rows, self.batch_size):
            idx = perm[start:start + self.batch_size]
            xb, yb = data.x.index_select(0, idx), data.y.index_select(0, idx)
            if self.augment is not None:   # train metrics below still compare with the hard labels
                xb, yb = self.augment(xb, yb)
            out = model(xb)
            loss = self.loss_fn(out, yb)
            total = loss
            if reg.l2:
                total = total + l2_penalty(self.penalized, reg.l2)
            if reg.l1:
                total = total + l1_penalty(self.penalized, reg.l1)
            (total / self.accumulate if self.accumulate > 1 else total).backward()
            loss_sum += loss.detach() * len(idx)
            if preds is not None:
                preds[start:start + len(idx)] = M.predictions(out.detach(), self.task)
            pending += 1
            last = start + self.batch_size >= n_rows
            if pending == self.accumulate or last:
                norm_sum += self._step()
                n_steps += 1
                pending = 0
            if self.progress is not None:
                self.progress.advance_batch()
        train_loss = float(loss_sum) / n_rows
        row = {"train_loss": train_loss, "grad_norm": float(norm_sum) / max(n_steps, 1)}
        if preds is not None and math.isfinite(train_loss):
            row.update({f"train_{k}": v for k, v in M.compute(self.metrics, preds, data.y[perm]).items()})
        return row

    def _step(self) -> torch.Tensor:
        t = self.recipe.train
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
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
            result.update(M.compute(self.metrics, M.predictions(out, self.task), data.y))
        return result

    # ------------------------------------------------------------------------------ the run
    def fit(self) -> LoopState:
        t = self.recipe.train
        st = self.state
        for cb in self.callbacks:
            cb.fit_start(self)
        if self.progress is not None:
            self.progress.start(t.epochs, self.batches_per_epoch, initial_epoch=st.epoch)
        try:
            while st.epoch < t.epochs and st.stop_reason is None:
                for cb in self.callbacks:
                    cb.epoch_start(self)
                tic = time.perf_counter()
                row = {"epoch": st.epoch + 1}
                train_row = self.train_epoch()
                val_row = self.evaluate(self.val_data) if self.val_data is not None and len(self.val_data) else {}
                row.update({"train_loss": train_row.pop("train_loss"),
                            "val_loss": val_row.pop("loss", None),
                            "lr": self.lr, "grad_norm": train_row.pop("grad_norm"),
                            "seconds": time.perf_counter() - tic})
                row.update(train_row)
                row.update({f"val_{k}": v for k, v in val_row.items()})
                st.epoch += 1
                st.history.append(row)
                self._decide(row)
                self._save(row)
                for cb in self.callbacks:
                    cb.epoch_end(self, row)
                if self.progress is not None:
                    self.progress.end_epoch(row, self.recipe.stopping.monitor)
        finally:
            if self.progress is not None:
                self.progress.stop()
        if st.stop_reason is None:
            st.stop_reason, st.stopped_epoch = StopReason.FINISHED.value, st.epoch
        if self.recipe.stopping.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        for cb in self.callbacks:
            cb.fit_end(self)
        return st

    def _decide(self, row: dict[str, Any]) -> None:
        """Plateau, best epoch and early stopping: each reads the recorded row."""
        st, s = self.state, self.recipe.stopping
        if not math.isfinite(row["train_loss"]):
            st.stop_reason, st.stopped_epoch = StopReason.NON_FINITE.value, st.epoch
            return
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

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a resume needs: (tensors, JSON-able metadata)."""
        opt_tensors, opt_meta = ckpt.optimizer_to_flat(self.optimizer)
        tensors = {**ckpt.prefixed("model", self.model.state_dict()), **ckpt.prefixed("optim", opt_tensors),
                   **self.extra_tensors,
                   "rng.torch": torch.get_rng_state(), "rng.shuffle": self.shuffle.get_state()}
        if self.augment is not None:
            tensors["rng.augment"] = self.augment.state_dict()["generator"]
        if self.best_state is not None:
            tensors.update(ckpt.prefixed("best", self.best_state))
        st = self.state
        meta = {"epoch": st.epoch, "step": st.step, "history": st.history, "stop_reason": st.stop_reason,
                "stopped_epoch": st.stopped_epoch, "optimizer": opt_meta, "base_lrs": self.base_lrs,
                "monitor": self.monitor.state_dict(),
                "stopper": self.stopper.state_dict() if self.stopper else None,
                "plateau": self.plateau.state_dict() if self.plateau else None,
                "rng_numpy": _np_state(), "rng_python": _py_state()}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt.unprefixed("model", tensors))
        self.optimizer.load_state_dict(ckpt.optimizer_from_flat(ckpt.unprefixed("optim", tensors),
                                                                meta["optimizer"]))
        best = ckpt.unprefixed("best", tensors)
        self.best_state = best or None
        st = self.state
        st.epoch, st.step, st.history = meta["epoch"], meta["step"], meta["history"]
        st.stop_reason, st.stopped_epoch = meta["stop_reason"], meta["stopped_epoch"]
        self.base_lrs = meta["base_lrs"]
        self.monitor.load_state_dict(meta["monitor"])
        if self.stopper and meta["stopper"]:
            self.stopper.load_state_dict(meta["stopper"])
        if self.plateau and meta["plateau"]:
            self.plateau.load_state_dict(meta["plateau"])
        torch.set_rng_state(tensors["rng.torch"])
        self.shuffle.set_state(tensors["rng.shuffle"])
        if self.augment is not None and "rng.augment" in tensors:
            self.augment.load_state_dict({"generator": tensors["rng.augment"]})
        _set_np_state(meta["rng_numpy"])
        _set_py_state(meta["rng_python"])
        self._set_lr()

    def _save(self, row: dict[str, Any]) -> None:
        if self.run_dir is None:
            return
        from .rundir import CHECKPOINTS, HISTORY, atomic_write_text, history_csv

        c = self.recipe.checkpoint
        folder = self.run_dir / CHECKPOINTS
        if c.best and self.monitor.improved:
            ckpt.save_checkpoint(folder / "best.safetensors",
                                 {**ckpt.prefixed("model", self.model.state_dict()), **self.extra_tensors},
                                 {"epoch": self.state.epoch, "monitor": self.recipe.stopping.monitor,
                                  "value": self.monitor.best})
        if c.last:
            tensors, meta = self.state_dict()
            ckpt.save_checkpoint(folder / "last.safetensors", tensors, meta)
        atomic_write_text(self.run_dir / HISTORY, history_csv(self.state.history))


def _monitored(row: dict[str, Any], key: str, field_name: str) -> float:
    if key not in row:
        raise KeyError(f"{field_name}: got {key!r}, not a history column; columns: {', '.join(row)}")
    value = row[key]
    return float("nan") if value is None else float(value)


def _np_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _set_np_state(s: list) -> None:
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))


def _py_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_py_state(s: list) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))

