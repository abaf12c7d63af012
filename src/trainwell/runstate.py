"""Where a run is, gathered in one place, and its exact round trip through a checkpoint.

`capture(trainer)` returns (tensors, JSON metadata) holding everything that decides what the
run does next: model, optimizer, the epoch/step counters, the history, the Setup's components
(best-epoch monitor, early stopping, plateau, NaN guard: each under its name), the float16
gradient scaler's scale, the callbacks' state (under their class names), every RNG (torch's, on a
GPU the device's too, the shuffle and augmentation generators, numpy, python) and, inside an
epoch, the cursor: this epoch's row order, the next batch, the accumulated gradients of an unfinished accumulation and the running sums of the epoch's row.
`restore(trainer, tensors, meta)` puts it back, so the run continues bit for bit as if it had
never stopped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch

from . import checkpoint as ckpt
from .data.rows import byte_blocks
from .errors import CheckpointError
from .seeding import host_states, set_host_states


@dataclass
class EpochCursor:
    """Position inside an epoch: enough to finish it exactly after a resume."""
    perm: torch.Tensor               # this epoch's row order (drawn once from the shuffle generator)
    loss_sum: torch.Tensor           # sum of per-row training losses so far (on the device: no sync)
    norm_sum: torch.Tensor           # sum of pre-clip gradient norms of the steps so far
    preds: torch.Tensor | None       # training predictions so far, for the epoch's train metrics
    batch: int = 0                   # next batch to run
    pending: int = 0                 # batches accumulated since the last optimizer step
    n_steps: int = 0                 # optimizer steps taken this epoch
    skipped_rows: int = 0            # rows of batches skipped after a NaN rollback

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.perm) // batch_size)

    def to_flat(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {"cursor.perm": self.perm, "cursor.loss_sum": self.loss_sum, "cursor.norm_sum": self.norm_sum}
        if self.preds is not None:
            tensors["cursor.preds"] = self.preds
        return tensors, {"batch": self.batch, "pending": self.pending, "n_steps": self.n_steps,
                         "skipped_rows": self.skipped_rows}

    @classmethod
    def from_flat(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                  device: torch.device) -> EpochCursor:
        def get(name: str) -> torch.Tensor | None:
            t = tensors.get(f"cursor.{name}")
            return None if t is None else t.to(device)

        return cls(perm=get("perm"), loss_sum=get("loss_sum"), norm_sum=get("norm_sum"), preds=get("preds"),
                   **meta)


@dataclass
class LoopState:
    """Counters that, with the model/optimizer/RNG states, define where a run is."""
    epoch: int = 0                     # epochs completed
    step: int = 0                      # optimizer steps taken
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    stopped_epoch: int = 0
    cursor: EpochCursor | None = None  # set while inside an epoch


def capture(tr) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a resume needs from Trainer `tr`: (tensors, JSON-able metadata)."""
    opt_tensors, opt_meta = ckpt.optimizer_to_flat(tr.setup.optimizer)
    tensors = {**ckpt.prefixed("model", tr.model.state_dict()), **ckpt.prefixed("optim", opt_tensors),
               **tr.extra_tensors, "rng.torch": torch.get_rng_state(), "rng.shuffle": tr.setup.shuffle.get_state()}
    if tr.setup.device.type == "cuda":       # dropout on a GPU draws from the device's generator
        tensors["rng.cuda"] = torch.cuda.get_rng_state(tr.setup.device)
    if tr.setup.augment is not None:
        tensors["rng.augment"] = tr.setup.augment.state_dict()["generator"]
    if tr.best_state is not None:
        tensors.update(ckpt.prefixed("best", tr.best_state))
    st = tr.state
    meta = {"epoch": st.epoch, "step": st.step, "history": st.history, "stop_reason": st.stop_reason,
            "stopped_epoch": st.stopped_epoch, "optimizer": opt_meta, "base_lrs": tr.setup.base_lrs,
            **host_states(),
            "recipe": tr.settings.record, "data_sha256": tr.data_fingerprint, "cursor": None,
            "callbacks": {}}
    for name, component in tr.setup.components.items():
        meta[name] = component.state_dict()
    if tr.setup.scaler is not None:    # "16-mixed": the loss scale and its growth counter
        meta["scaler"] = tr.setup.scaler.state_dict()
    for key, cb in _named(tr.callbacks):
        state = cb.state_dict()
        if state:
            meta["callbacks"][key] = _split(state, f"callback.{key}", tensors)
    if st.cursor is not None:
        cur_tensors, meta["cursor"] = st.cursor.to_flat()
        tensors.update(cur_tensors)
        if st.cursor.pending:          # an unfinished accumulation: its gradients are state too
            tensors.update({f"grad.{n}": p.grad for n, p in tr.model.named_parameters() if p.grad is not None})
    return tensors, meta


def restore(tr, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Put a captured state back into Trainer `tr` (built from the same recipe and data)."""
    _check_data(tr, meta.get("data_sha256"))
    load_model(tr.model, ckpt.unprefixed("model", tensors), "the checkpoint")
    tr.setup.optimizer.load_state_dict(ckpt.optimizer_from_flat(ckpt.unprefixed("optim", tensors), meta["optimizer"]))
    tr.best_state = ckpt.unprefixed("best", tensors) or None
    st = tr.state
    st.epoch, st.step, st.history = meta["epoch"], meta["step"], [dict(r) for r in meta["history"]]
    st.stop_reason, st.stopped_epoch = meta["stop_reason"], meta["stopped_epoch"]
    for name, component in tr.setup.components.items():
        if meta.get(name):
            component.load_state_dict(meta[name])
    if tr.setup.scaler is not None and meta.get("scaler"):
        tr.setup.scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    tr.setup.shuffle.set_state(tensors["rng.shuffle"])
    if tr.setup.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"].cpu(), tr.setup.device)
    if tr.setup.augment is not None and "rng.augment" in tensors:
        tr.setup.augment.load_state_dict({"generator": tensors["rng.augment"]})
    set_host_states(meta)
    st.cursor = None if meta.get("cursor") is None else EpochCursor.from_flat(tensors, meta["cursor"], tr.setup.device)
    for key, cb in _named(tr.callbacks):
        if key in meta.get("callbacks", {}):
            cb.load_state_dict(_join(meta["callbacks"][key], tensors, tr.setup.device))
    grads = ckpt.unprefixed("grad", tensors)
    for name, p in tr.model.named_parameters():
        p.grad = grads[name].to(p.device).clone() if name in grads else None
    tr.apply_lr()


def _named(callbacks: list) -> list[tuple[str, Any]]:
    """Callbacks keyed by class name (numbered when a class appears twice): a key survives a resume
    that adds or removes other callbacks (watch.* may change)."""
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}{seen[name]}", cb))
    return out


def _split(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A nest of dicts/lists holding tensors -> the same nest, JSON-able, each tensor moved into
    `tensors` under its path and replaced by {"__tensor__": path}."""
    if torch.is_tensor(obj):
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {str(k): _split(v, f"{name}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor], device: torch.device) -> Any:
    if isinstance(obj, dict):
        if obj.keys() == {"__tensor__"}:
            return tensors[obj["__tensor__"]].to(device)
        return {k: _join(v, tensors, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors, device) for v in obj]
    return obj


def _check_data(tr, saved: str | None) -> None:
    if saved is None:
        return
    if tr.data_fingerprint is None:
        tr.data_fingerprint = fingerprint(tr.setup.train, tr.setup.val)
    if tr.data_fingerprint != saved:
        raise CheckpointError("data: the training/validation rows differ from the ones the checkpoint was "
                              "trained on (the data file or its contents changed); a resume needs the same "
                              "data, start a new run with `trainwell fit` instead")


def load_model(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str) -> None:
    """`model.load_state_dict(weights)`, with the differences listed when the shapes disagree."""
    own = model.state_dict()
    problems = [f"{k}: missing" for k in own if k not in weights]
    problems += [f"{k}: not in the model" for k in weights if k not in own]
    problems += [f"{k}: shape {list(weights[k].shape)} here {list(v.shape)}" for k, v in own.items()
                 if k in weights and weights[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{source} does not fit the model ({len(problems)} differences: "
                              + "; ".join(problems[:8]) + (" ..." if len(problems) > 8 else "") + ")")
    model.load_state_dict(weights)


def fingerprint(*splits) -> str:
    """sha256 of the training (and validation) rows and targets: a resume on other data is refused."""
    h = hashlib.sha256()
    for split in splits:
        if split is not None:
            for t in (split.x, split.y):
                h.update(str((tuple(t.shape), str(t.dtype))).encode())
                for block in byte_blocks(t):        # (a tensor's bytes where they are: no copy)
                    h.update(block)
    return h.hexdigest()
