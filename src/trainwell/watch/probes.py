"""Probes: per-layer statistics of a sampled training step, recorded per epoch.

One step in `every` (and the first step of each epoch) is probed: just before its forward pass
hooks are attached, and they are removed again after the optimizer step, so the other steps run
with no hook at all. On a probed step we record

- for every activation module: mean and std of its output, the fraction of saturated units
  (|tanh| > 0.97; sigmoid < 0.03 or > 0.97), the fraction of dead ReLU units (never positive
  on the probe batch) and a histogram of its values;
- for every weighted layer (Linear / Conv): the norm of the weight gradient, the RMS of the
  gradient reaching its output (the backpropagated signal whose shrinking or growth across depth
  is "vanishing/exploding gradients"), the weight norm, the update-to-weight ratio
  ||W_after - W_before|| / ||W_before|| of that step, and the spread of the weight rows (0 when
  every unit of the layer has the same weights: the symmetry problem).

With train.precision = "16-mixed" the gradients are read during backward, still multiplied by the
loss scale: the probes divide by it, so they record the unscaled gradients of the other precisions.

Statistics stay on the device while an epoch runs and are read once at its end (no host
synchronisation in the step). The epoch's record is the mean over its probed steps; the
histogram is the one of its first probed step.

Each epoch's record also holds `train_eval`: the loss and metrics of the model in eval mode (no
dropout, batch-norm running statistics, the weights as they are at the epoch's end) over a fixed
sample of the training split. The running training loss of history.csv is an average over an
epoch of moving weights in training mode; the doctor judges fit from this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..init import layer_nonlinearities
from ..loop import Callback
from ..precision import inverse_scale
from ..rundir import PROBES, json_text

SATURATION = 0.97          # |tanh| above, or sigmoid outside [0.03, 0.97]: the unit's slope is < ~6% of its peak
HIST_BINS = 40
TRAIN_EVAL_ROWS = 512      # training rows (a fixed sample) evaluated in eval mode at each epoch's end

# Activation modules the probes understand, by the statistic that makes sense for each.
ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh",
               nn.Sigmoid: "sigmoid", nn.ELU: "elu", nn.SELU: "selu", nn.GELU: "gelu", nn.SiLU: "silu",
               nn.Softplus: "softplus"}
_RANGE = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def _units(a: torch.Tensor) -> torch.Tensor:
    """(rows, units): channels are the units of a convolutional feature map."""
    if a.dim() > 2:
        return a.transpose(0, 1).reshape(a.shape[1], -1).T
    return a.reshape(a.shape[0], -1)


def activation_stats(a: torch.Tensor, kind: str, histogram: bool = True) -> dict[str, torch.Tensor]:
    """Statistics of one activation output, as 0-d tensors (and a histogram) on its device."""
    a = a.detach().float()
    stats = {"mean": a.mean(), "std": a.std(unbiased=False)}
    if kind == "tanh":
        stats["saturated"] = (a.abs() > SATURATION).float().mean()
    elif kind == "sigmoid":
        stats["saturated"] = ((a < 1 - SATURATION) | (a > SATURATION)).float().mean()
    if kind == "relu":
        stats["dead"] = (~(_units(a) > 0).any(0)).float().mean()
    if not histogram:
        return stats
    lo, hi = _RANGE.get(kind, (None, None))
    if lo is None:
        lo_t, hi_t = a.min(), a.max()
        stats["hist_lo"], stats["hist_hi"] = lo_t, hi_t
        stats["hist"] = torch.histc(a, HIST_BINS)   # min = max = 0: histc takes the data's range
    else:
        stats["hist_lo"], stats["hist_hi"] = a.new_tensor(lo), a.new_tensor(hi)
        stats["hist"] = torch.histc(a, HIST_BINS, lo, hi)
    return stats


def _gradient_taps(model: nn.Module, weighted: list[str]) -> dict[str, nn.Module]:
    """Where each weighted layer's backpropagated signal is read: its output, or the output of the
    normalization layer right after it (a norm layer divides the gradient by the scale of its
    input, which would make badly scaled inputs look like vanishing gradients)."""
    mods = list(model.named_modules())
    taps = {}
    for i, (name, module) in enumerate(mods):
        if name in weighted:
            nxt = mods[i + 1][1] if i + 1 < len(mods) else None
            norm = isinstance(nxt, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm)
            taps[name] = nxt if norm else module
    return taps


def row_spread(w: torch.Tensor) -> torch.Tensor:
    """||W - mean row|| / ||W||: 0 when all units (rows) of the layer are identical."""
    w = w.detach().float().reshape(w.shape[0], -1)
    if w.shape[0] < 2:
        return w.new_tensor(float("nan"))
    return (w - w.mean(0, keepdim=True)).norm() / w.norm().clamp_min(1e-12)


class ProbeCallback(Callback):
    """Samples one step in `every` (plus each epoch's first) and keeps one record per epoch.

    `sink(record)` is called with each finished epoch record (used by the TensorBoard export).
    """

    def __init__(self, every: int = 25, run_dir: Path | None = None, sink=None):
        self.every, self.run_dir, self.sink = every, run_dir, sink
        self.epochs: list[dict[str, Any]] = []
        self.initial: dict[str, float] = {}
        self._handles: list[Any] = []
        self._armed = False
        self._scaler = None
        self._before: dict[str, torch.Tensor] = {}
        self._current: dict[str, dict[str, torch.Tensor]] = {}
        self._samples: list[dict[str, dict[str, torch.Tensor]]] = []

    # ------------------------------------------------------------------------------ events
    def fit_start(self, trainer) -> None:
        model = trainer.model
        self.weighted = [(name, layer, nl) for name, layer, nl, _ in layer_nonlinearities(model)]
        self.taps = _gradient_taps(model, [name for name, _, _ in self.weighted])
        self.activations = [(name, m, ACTIVATIONS[type(m)]) for name, m in model.named_modules()
                            if type(m) in ACTIVATIONS]
        previous = self._load_previous(trainer.state.epoch)
        if previous is not None:
            self.initial, self.epochs = previous
        elif trainer.state.epoch == 0:
            # The loss of the untrained model (eval mode: no dropout, no batch-norm update) is what
            # the initial-loss check compares with ln(C).
            self.initial = trainer.evaluate(trainer.setup.train)

    def epoch_start(self, trainer) -> None:
        self._samples = []
        self._arm(trainer)

    def step_end(self, trainer) -> None:
        if self._armed:
            self._finish_step()
        if trainer.state.step % self.every == 0:
            self._arm(trainer)

    def epoch_end(self, trainer, row: dict[str, Any]) -> None:
        record = self._summarize(trainer.state.epoch)
        record["train_eval"] = self._train_eval(trainer)
        self.epochs.append(record)
        if self.sink is not None:
            self.sink(record)
        if self.run_dir is not None:        # written by the trainer's writer thread, before this epoch's checkpoint
            trainer.write_text(self.run_dir / PROBES, json_text(self.to_dict()))

    def fit_end(self, trainer) -> None:
        self._disarm()

    def _train_eval(self, trainer) -> dict[str, Any]:
        data = trainer.setup.train
        n = len(data)
        if n == 0:
            return {}
        if n > TRAIN_EVAL_ROWS:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:TRAIN_EVAL_ROWS]
            data = type(data)(data.x[idx.to(data.x.device)], data.y[idx.to(data.y.device)])
        return {**trainer.evaluate(data), "rows": len(data)}

    # ------------------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {"every": self.every, "initial": self.initial,
                "weighted": [{"name": n, "type": type(m).__name__, "nonlinearity": nl,
                              "shape": list(m.weight.shape)} for n, m, nl in self.weighted],
                "activations": [{"name": n, "kind": k} for n, _, k in self.activations],
                "epochs": self.epochs}

    def _load_previous(self, epoch: int):
        """On resume, keep the records of the epochs already done."""
        if epoch == 0 or self.run_dir is None or not (self.run_dir / PROBES).exists():
            return None

        data = json.loads((self.run_dir / PROBES).read_text())
        return data.get("initial", {}), [e for e in data.get("epochs", []) if e["epoch"] <= epoch]

    # ------------------------------------------------------------------------------ hooks
    def _arm(self, trainer) -> None:
        if self._armed:
            return
        self._armed = True
        self._current = {}
        self._scaler = trainer.setup.scaler       # "16-mixed": gradients are read unscaled
        for name, module, kind in self.activations:
            self._handles.append(module.register_forward_hook(self._on_activation(name, kind)))
        for name, layer, _ in self.weighted:
            self._before[name] = layer.weight.detach().clone()
            self._handles.append(self.taps[name].register_forward_hook(self._on_layer_output(name)))
            if layer.weight.requires_grad:
                self._handles.append(layer.weight.register_post_accumulate_grad_hook(self._on_grad(name)))

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._armed = False

    def _slot(self, name: str) -> dict[str, torch.Tensor]:
        return self._current.setdefault(name, {})

    def _on_activation(self, name: str, kind: str):
        def hook(module, inputs, output):
            if module.training:            # validation passes between epochs are not probed
                self._slot(name).update(activation_stats(output, kind, histogram=not self._samples))
        return hook

    def _on_layer_output(self, name: str):
        def hook(module, inputs, output):
            if module.training and output.requires_grad:
                slot = self._slot(name)
                output.register_hook(lambda g: slot.__setitem__("out_grad_rms", self._unscaled(
                    g.detach().float().pow(2).mean().sqrt())))
        return hook

    def _on_grad(self, name: str):
        def hook(param):
            self._slot(name)["grad_norm"] = self._unscaled(param.grad.detach().float().norm())
        return hook

    def _unscaled(self, value: torch.Tensor) -> torch.Tensor:
        """A gradient statistic read during backward, divided by the float16 loss scale (if any)."""
        inverse = inverse_scale(self._scaler)
        return value if inverse is None else value * inverse.to(value.device)

    def _finish_step(self) -> None:
        self._disarm()
        for name, layer, _ in self.weighted:
            w, before = layer.weight.detach().float(), self._before.pop(name).float()
            slot = self._slot(name)
            slot["weight_norm"] = w.norm()
            slot["update_ratio"] = (w - before).norm() / before.norm().clamp_min(1e-12)
        self._samples.append(self._current)
        self._current = {}

    # ------------------------------------------------------------------------------ per epoch
    def _summarize(self, epoch: int) -> dict[str, Any]:
        """Mean of each statistic over the epoch's probed steps; the first step's histogram."""
        self._current = {}                     # hooks that fired on a step that never reached step_end
        samples = [self._to_floats(s) for s in self._samples]
        record: dict[str, Any] = {"epoch": epoch, "samples": len(samples), "activations": {}, "weights": {}}
        spread = self._row_spreads()
        for group, names in (("activations", [n for n, _, _ in self.activations]),
                             ("weights", [n for n, _, _ in self.weighted])):
            for name in names:
                per = [s[name] for s in samples if name in s]
                if not per:
                    continue
                keys = [k for k in per[0] if not k.startswith("hist")]
                stats: dict[str, Any] = {k: sum(p[k] for p in per if k in p) / sum(1 for p in per if k in p)
                                         for k in keys}
                if group == "weights":
                    stats["row_spread"] = spread[name]
                if "hist" in per[0]:
                    stats["hist"] = {"counts": [int(c) for c in per[0]["hist"]],
                                     "lo": per[0]["hist_lo"], "hi": per[0]["hist_hi"]}
                record[group][name] = stats
        self._samples = []
        return record

    def _row_spreads(self) -> dict[str, float]:
        values = torch.stack([row_spread(layer.weight) for _, layer, _ in self.weighted]).tolist()
        return {name: v for (name, _, _), v in zip(self.weighted, values)}

    @staticmethod
    def _to_floats(sample: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, Any]]:
        """One host transfer per probed step: every scalar stacked, read at once."""
        scalars = [(n, k, v) for n, slot in sample.items() for k, v in slot.items() if v.dim() == 0]
        values = torch.stack([v.float() for _, _, v in scalars]).tolist() if scalars else []
        out: dict[str, dict[str, Any]] = {n: {} for n in sample}
        for (n, k, _), v in zip(scalars, values):
            out[n][k] = v
        for n, slot in sample.items():
            if "hist" in slot:
                out[n]["hist"] = slot["hist"].tolist()
        return out
