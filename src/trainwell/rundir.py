"""The run folder: the only module that chooses paths. Writes are atomic (temp file in the same
folder, flush, fsync, rename, fsync the folder), so a crash never leaves a half-written file."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import RunDirError

RECIPE = "recipe.toml"
HISTORY = "history.csv"
METRICS = "metrics.json"
DATA_SCHEMA = "data.json"       # how rows are encoded and shaped, read back by `predict`
CHECKPOINTS = "checkpoints"
TMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


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
    for stale in path.rglob(TMP_PREFIX + "*"):
        stale.unlink(missing_ok=True)
    return path
