"""Checkpoints in a safe format: one safetensors file per checkpoint.

Tensors (model weights and buffers, optimizer state, RNG states, normalizer statistics) are
stored as safetensors; everything else (step, epoch, optimizer hyperparameters, early-stopping
and plateau state, python/numpy RNG) is JSON in the file's metadata. Loading never unpickles.
A single file means a single atomic rename: a crash leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CheckpointError
from .rundir import atomic_write_bytes

META_KEY = "trainwell"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + JSON metadata atomically. Refuses non-finite floating tensors under `model.`."""
    for name, t in tensors.items():
        if name.startswith("model.") and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: refusing to save non-finite parameter {name[6:]!r}")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    data = st_save(cpu, metadata={META_KEY: json.dumps({"format": FORMAT_VERSION, **meta})})
    atomic_write_bytes(path, data)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header.get("__metadata__", {})[META_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: not a valid trainwell checkpoint (corrupt or truncated: "
                              f"{str(exc)[:120]})") from None
    return tensors, meta


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# ------------------------------------------------------------------------- optimizer state
def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors, JSON): per-parameter tensors flattened by index."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}
