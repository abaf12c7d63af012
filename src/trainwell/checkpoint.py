"""Checkpoints in a safe format, written atomically and verified on load.

Tensors (model weights and buffers, optimizer state, RNG states, normalizer statistics) are
stored as safetensors; everything else (step, epoch, optimizer hyperparameters, early-stopping
and plateau state, python/numpy RNG, the recipe) is JSON in the file's metadata. Loading never
unpickles: a pickle or `torch.save` file is refused before anything is parsed.

During `fit` the files are written by a helper thread (`BackgroundWriter`): the training thread
serializes the state (the bytes are complete and final then) and goes on training while the helper
writes and fsyncs them, in the order they were made; `fit` returns, or raises, only after every
queued file is on disk.

Each checkpoint folder holds `manifest.json`: the sha256 and size of every checkpoint file.
Writes are two-phase so a kill at any moment leaves every file verifiable: the manifest first
accepts both the current and the new digest of each file, the files are renamed into place, then
the manifest keeps only the new digests. A load recomputes the digest; any flipped or missing
byte is a CheckpointError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .callbacks.nonfinite import all_finite
from .errors import CheckpointError
from .rundir import atomic_write_bytes

META_KEY = "trainwell"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_PICKLE_SIGNS = {b"\x80": "a pickle", b"PK\x03\x04": "a zip archive (torch.save)"}


def encode(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path) -> bytes:
    """Safetensors bytes of (tensors, meta). Refuses non-finite floating tensors under `model.`."""
    weights = [(name, t) for name, t in tensors.items() if name.startswith("model.") and t.is_floating_point()]
    if weights and not all_finite([t for _, t in weights]):
        bad = next(name for name, t in weights if not bool(torch.isfinite(t).all()))
        raise CheckpointError(f"{path}: refusing to save non-finite parameter {bad[6:]!r}")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return serialize(cpu, {META_KEY: json.dumps({"format": FORMAT_VERSION, **meta})})


# safetensors' dtype names, in the order its writer lays tensors out (then by name): widest first.
_DTYPES = {torch.uint64: "U64", torch.int64: "I64", torch.float64: "F64", torch.float32: "F32",
           torch.uint32: "U32", torch.int32: "I32", torch.bfloat16: "BF16", torch.float16: "F16",
           torch.uint16: "U16", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_RANK = {dtype: i for i, dtype in enumerate(_DTYPES)}


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """The bytes `safetensors.torch.save(tensors, metadata=metadata)` writes (tests/test_checkpoint.py
    checks that they are identical), joined with one copy of the data: an 8-byte little-endian header
    length, the JSON header (padded with spaces to a multiple of 8), the tensors' bytes. Tensors of
    another dtype are left to safetensors itself."""
    if any(t.dtype not in _DTYPES or t.device.type != "cpu" for t in tensors.values()):
        return st_save(tensors, metadata=metadata)
    order = sorted(tensors, key=lambda name: (_RANK[tensors[name].dtype], name))
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name in order:
        t = tensors[name].contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        end = offset + len(data)
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, end]}
        chunks.append(data)
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return b"".join([len(text).to_bytes(8, "little"), text, *chunks])


def refuse_pickle(raw: bytes, path: str | Path) -> None:
    """A safetensors file is an 8-byte header length then a JSON header; a pickle or a torch.save
    zip is named as such and refused (it is never unpickled, here or anywhere in trainwell)."""
    if raw[8:9] == b"{":
        return
    for sign, what in _PICKLE_SIGNS.items():
        if raw.startswith(sign):
            raise CheckpointError(f"{path}: {what}, refused: trainwell loads only safetensors checkpoints, "
                                  "because unpickling can run arbitrary code")


def decode(raw: bytes, path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    refuse_pickle(raw, path)
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        meta = json.loads(header["__metadata__"][META_KEY])
        if not isinstance(meta, dict):
            raise TypeError("metadata is not an object")
    except (SafetensorError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: not a valid trainwell checkpoint (corrupt or truncated: "
                              f"{str(exc)[:120]})") from None
    return tensors, meta


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Write one checkpoint (and its manifest entry); returns the bytes written."""
    path = Path(path)
    data = encode(tensors, meta, path)
    write_files(path.parent, {path.name: data})
    return data


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Atomically replace checkpoint files of `folder`, keeping the manifest valid at every moment."""
    manifest = _settled(folder, read_manifest(folder, strict=False), files)
    new = {name: _entry(data) for name, data in files.items()}
    staged = {**manifest, **{name: {**manifest.get(name, {}), "next": new[name]} for name in files}}
    atomic_write_bytes(folder / MANIFEST, _dump(staged))
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    atomic_write_bytes(folder / MANIFEST, _dump({**manifest, **new}))


def _settled(folder: Path, manifest: dict[str, Any], names) -> dict[str, Any]:
    """The manifest with the entries of `names` that an interrupted write left with a staged "next"
    made to say what the file on disk holds: the new bytes (the rename happened), the old (it did
    not), or no entry (a first write that never landed). Without this, the next staging would keep
    the stale digest beside its own, and a kill before its rename would leave a file that matches
    neither. Costs one hash of the file, only after an interrupted write."""
    settled = dict(manifest)
    for name in names:
        entry = manifest.get(name, {})
        staged = entry.get("next")
        if not isinstance(staged, dict):
            continue
        try:
            raw = (folder / name).read_bytes()
        except FileNotFoundError:
            settled.pop(name)
            continue
        except OSError:
            continue
        found = _entry(raw)
        if found == staged:
            settled[name] = staged
        elif found == {k: entry.get(k) for k in ("sha256", "bytes")}:
            settled[name] = found
    return settled


class BackgroundWriter:
    """File writes on one helper thread, in the order submitted, so that training does not wait for
    the disk (the fsyncs of `last`, `best` and history.csv cost 20-120 ms an epoch). A job holds
    finished bytes, so a file holds the state of the moment it was serialized whenever it lands; each
    write is as atomic as `write_files` / `atomic_write_bytes` themselves. A failed write (WriteError,
    or any exception) is raised in the submitting thread at its next `submit` or at `close`; the jobs
    queued after it are dropped, as if the run had stopped at the failure. The thread starts at the
    first job and ends at `close`. At most `PENDING` jobs wait: a run that makes checkpoints faster
    than the disk takes them waits at `submit`, instead of holding ever more checkpoints' bytes."""

    PENDING = 3          # an epoch's end queues three: its probes record, its checkpoints, history.csv

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=self.PENDING)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, folder: Path, files: dict[str, bytes]) -> None:
        """Checkpoint files of `folder`, replaced as `write_files` does (the manifest kept valid)."""
        self.call(lambda: write_files(folder, files))

    def call(self, job: Callable[[], None]) -> None:
        """Any other write (e.g. history.csv), run after the jobs already queued."""
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trainwell-checkpoint-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def close(self, check: bool = True) -> None:
        """Wait until every submitted job is done and end the thread; raise a failed write's error,
        or drop it when `check` is False (the caller is already raising its own)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if check:
            self._raise()
        else:
            self._error = None

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                    self._error = exc


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a checkpoint, verified against its folder's manifest when there is one."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    refuse_pickle(raw, path)
    if (path.parent / MANIFEST).exists():
        verify(path, raw, read_manifest(path.parent))
    return decode(raw, path)


def verify(path: Path, raw: bytes, manifest: dict[str, Any]) -> None:
    entry = manifest.get(path.name)
    if entry is None:
        raise CheckpointError(f"{path}: not listed in {MANIFEST}; not a checkpoint this run wrote")
    digest = hashlib.sha256(raw).hexdigest()
    accepted = [e for e in (entry, entry.get("next"))
                if isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("bytes"), int)]
    if not any(digest == e["sha256"] and len(raw) == e["bytes"] for e in accepted):
        sizes = " or ".join(str(e["bytes"]) for e in accepted)
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint: its sha256 does not match "
                              f"{MANIFEST} ({len(raw)} bytes, expected {sizes})")


def read_manifest(folder: Path, strict: bool = True) -> dict[str, Any]:
    """The folder's manifest; {} when absent. A corrupt manifest is an error (or {} when not strict:
    a new write then starts a fresh one)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError("not an object of file entries")
        return data
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if not strict:
            return {}
        raise CheckpointError(f"{path}: corrupt checkpoint manifest ({str(exc)[:120]})") from None


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _dump(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


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
