"""Fine-tuning (seed 001, "supervised pre-training"): start from another run's best weights.

Tensors are matched by name and shape. Those that differ (typically the head, when the class
count changes) keep this run's fresh initialization and are listed, as are names found on one
side only. `init.freeze` then fixes named layers, or the first k weighted layers with whatever
follows them up to the next weighted layer (their norm, activation, pooling). A frozen batch
norm also stops tracking its running statistics (`track_running_stats = False`), so it keeps the
pre-trained ones bit for bit through training and every finisher (SWA's batch-norm pass included),
and uses them in evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint, unprefixed
from .errors import CheckpointError, RecipeError
from .rundir import CHECKPOINTS

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def run_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The best model weights of a run folder (the last ones when it kept no best checkpoint)."""
    folder = Path(run_dir) / CHECKPOINTS
    for name, prefixes in (("best.safetensors", ("model",)), ("last.safetensors", ("best", "model"))):
        if (folder / name).is_file():
            tensors, _ = load_checkpoint(folder / name)
            for prefix in prefixes:
                weights = unprefixed(prefix, tensors)
                if weights:
                    return weights
    raise CheckpointError(f"init.from: {str(run_dir)!r} holds no checkpoint (expected "
                          f"{CHECKPOINTS}/best.safetensors); give the folder of a finished run")


def transfer(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, list]:
    """Copy every tensor of `source` whose name and shape match `model`'s; report the rest. The target
    scaling (data/target.py) stays the one fitted on this run's own training split."""
    target = model.state_dict()
    loaded, mismatched = [], []
    with torch.no_grad():
        for name, value in target.items():
            if name not in source or name.startswith("target_scale."):
                continue
            if tuple(source[name].shape) != tuple(value.shape):
                mismatched.append({"name": name, "from": list(source[name].shape), "here": list(value.shape)})
                continue
            value.copy_(source[name])
            loaded.append(name)
    return {"loaded": loaded, "mismatched": mismatched,
            "missing": [n for n in target if n not in source], "unused": [n for n in source if n not in target]}


def layers_to_freeze(model: nn.Module, spec: tuple[str, ...] | int) -> list[str]:
    """Module names to freeze: the names given, or the first k weighted top-level layers and their
    followers (norm, activation, ...) up to the next weighted layer."""
    modules = dict(model.named_modules())
    if not isinstance(spec, int):
        unknown = [n for n in spec if n not in modules or n == ""]
        if unknown:
            names = [n for n, m in model.named_children()]
            raise RecipeError([f"init.freeze: got {unknown}, no such layer; layers: {', '.join(names)}"])
        return list(spec)
    children = list(model.named_children())
    weighted = [n for n, m in children if isinstance(m, _WEIGHTED)]
    if spec >= len(weighted):
        raise RecipeError([f"init.freeze: got {spec}, the model has {len(weighted)} weighted layers "
                           f"({', '.join(weighted)}); freeze at most {len(weighted) - 1} so something trains"])
    out, seen = [], 0
    for name, module in children:
        if isinstance(module, _WEIGHTED):
            seen += 1
        if seen > spec:
            break
        if seen:
            out.append(name)
    return out


def freeze(model: nn.Module, names: list[str]) -> None:
    modules = dict(model.named_modules())
    for name in names:
        for m in modules[name].modules():
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                # Training still normalizes with the batch's statistics, but nothing updates the running
                # ones (nor the batch counter), and SWA's update_bn, which resets and recomputes the
                # statistics of every tracking batch norm, leaves this one alone.
                m.track_running_stats = False
                m.momentum = 0.0


def finetune(model: nn.Module, section) -> dict[str, Any]:
    """Apply `init.from` and `init.freeze` to a freshly initialized model; the report for metrics.json."""
    report: dict[str, Any] = {"from": section.from_, **transfer(model, run_weights(section.from_))}
    # A batch-norm step counter (a 0-d tensor) matches any model; it does not make a match.
    if not any(not name.endswith("num_batches_tracked") for name in report["loaded"]):
        raise CheckpointError(f"init.from: no layer of {section.from_!r} matches this model by name and shape; "
                              "fine-tuning needs the same architecture up to the head")
    names = layers_to_freeze(model, section.freeze) if section.freeze else []
    freeze(model, names)
    report["frozen"] = names
    return report


def describe(report: dict[str, Any]) -> str:
    """One line for the console: what was loaded, re-initialized and frozen."""
    parts = [f"fine-tuning from {report['from']}: {len(report['loaded'])} tensors loaded"]
    if report["mismatched"]:
        parts.append("re-initialized (shape differs): " + ", ".join(
            f"{m['name']} {tuple(m['from'])}->{tuple(m['here'])}" for m in report["mismatched"]))
    if report["missing"]:
        parts.append("new: " + ", ".join(report["missing"]))
    if report["frozen"]:
        parts.append("frozen: " + ", ".join(report["frozen"]))
    return "; ".join(parts)
