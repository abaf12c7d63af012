"""The run folder: the only module that chooses paths. Writes are atomic (temp file in the same
folder, flush, fsync, rename, fsync the folder), so a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunDirError, WriteError

RECIPE = "recipe.toml"
HISTORY = "history.csv"
METRICS = "metrics.json"
PROBES = "probes.json"            # the watch's probe records (watch/probes.py)
FACTS = "facts.json"              # the end-of-run facts the doctor reads (watch/facts.py)
DATA_SCHEMA = "data.json"       # how rows are encoded and shaped, read back by `predict`
CHECKPOINTS = "checkpoints"
LAST = "last.safetensors"       # the latest state: everything a resume needs
BEST = "best.safetensors"       # the best epoch's weights (and data statistics)
TMP_PREFIX = ".tmp-"
LOCK = ".lock"

try:
    import fcntl
except ImportError:         # Windows: no flock; run folders are not locked there
    fcntl = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return                    # a platform that cannot open folders (Windows) has nothing to sync
    try:
        os.fsync(fd)
    except OSError as exc:
        raise WriteError(f"{path}: a file was renamed into place but the folder could not be synced "
                         f"({exc.strerror or exc}); it may not survive a power loss") from None
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Temp file in the same folder -> write -> fsync -> rename over `path` -> fsync the folder.

    A crash at any moment leaves either the old or the new file, never a mix. A failing write
    (disk full, I/O error) removes the temp file, keeps the old file, and raises WriteError."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
        try:
            view = memoryview(data)
            while view:                       # unbuffered: nothing waits in a Python buffer
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(f"{path}: could not write ({exc.strerror or exc}); the previous version of "
                             "the file is intact") from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if v != v else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def json_text(obj: Any) -> str:
    """The text write_json writes."""
    return json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def history_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def read_history(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for k, v in row.items():
            if v in ("", None):
                parsed[k] = None
                continue
            try:
                parsed[k] = int(v) if k == "epoch" else float(v)
            except ValueError:
                parsed[k] = v
        out.append(parsed)
    return out


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{name}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def create_run_dir(out: str | Path | None, name: str, force: bool = False) -> Path:
    """Create (or reuse an empty) run folder. A folder holding a finished run is refused."""
    path = Path(out) if out is not None else default_run_dir(name)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {path}: exists and is not a folder")
    if (path / METRICS).exists() and not force:
        raise RunDirError(f"--out {path}: already holds a finished run; choose another folder or pass --force")
    try:
        (path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {path}: cannot create the run folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK):
        raise RunDirError(f"--out {path}: folder is not writable")
    acquire_run_lock(path)      # held until fit ends (release_run_lock); refuses a folder in use
    sweep_temp_files(path)
    return path


def sweep_temp_files(path: Path) -> None:
    """Remove temp files a killed process left behind (only while holding the folder's lock)."""
    for stale in path.rglob(TMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- the lock
_HELD: dict[Path, list[int]] = {}     # resolved run folder -> [fd, holders]; reentrant within a process


def acquire_run_lock(path: str | Path) -> None:
    """Hold the run folder's lock (flock on RUN_DIR/.lock) until `release_run_lock`.

    One process at a time trains in a run folder; a second one gets a RunDirError naming the
    holder's pid. The kernel drops the lock when its process ends, even by SIGKILL, so a crash
    never leaves a stale lock. Reentrant within a process: `resume` holds it, then `fit` again."""
    key = Path(path).resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return
    if fcntl is None:
        _HELD[key] = [-1, 1]
        return
    try:
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create the lock file {LOCK} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(f"{path}: in use by another trainwell process (pid {holder}) that is training or "
                          "resuming this run; wait for it to end or stop it, then try again") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1]


def release_run_lock(path: str | Path) -> None:
    key = Path(path).resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        if held[0] >= 0:
            os.close(held[0])           # closing the descriptor drops the flock


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """`with run_lock(RUN_DIR):` hold the run folder's lock for the block (see acquire_run_lock)."""
    acquire_run_lock(path)
    try:
        yield
    finally:
        release_run_lock(path)
