"""Test helper for tests/test_resume.py: runs `trainwell` commands in forked processes and kills or
signals them at chosen moments.

    python tests/kill_worker.py PLAN.json  ->  prints one JSON line per job

Importing torch and trainwell takes seconds; this process does it once, never trains itself, and
forks a fresh child per job, so every job is a real process that can be SIGKILLed mid-epoch or
mid-save at little cost. A job is {"argv": [...], "stderr": path, "fault": ..., "fit_argv": [...]}
(fit_argv: run instead when the folder has no recipe.toml yet) with fault one of
  {"kind": "step", "n": N}                     SIGKILL itself at its N-th optimizer step (mid-epoch)
  {"kind": "call", "fn": "write", "n": N}      SIGKILL itself at its N-th os.write/fsync/replace call
                                               (inside a checkpoint, manifest or history write)
  {"kind": "wall", "seconds": S}               the parent SIGKILLs it S seconds after its first save
                                               (so it is training, not still loading data)
  {"kind": "signal", "signal": "SIGINT", "n": N}  sends itself SIGINT/SIGTERM at its N-th optimizer step,
                                               as a Ctrl-C arriving mid-epoch (at any machine speed)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

# Everything a run imports, imported once before forking (no tensor math here: the children train).
import sklearn.datasets  # noqa: E402,F401
import torch._dynamo  # noqa: E402,F401  (what torch.optim imports on first use)

import trainwell.api  # noqa: E402,F401
import trainwell.resuming  # noqa: E402,F401
import trainwell.watch.session  # noqa: E402,F401
from trainwell import step  # noqa: E402
from trainwell.cli import main  # noqa: E402


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(fault: dict) -> None:
    """In the child: kill this process at the chosen call."""
    count = [0]

    def counted(real):
        def wrapper(*args, **kw):
            count[0] += 1
            if count[0] == fault["n"]:
                if fault["kind"] == "signal":
                    os.kill(os.getpid(), getattr(signal, fault["signal"]))
                else:
                    _die()
            return real(*args, **kw)
        return wrapper

    if fault["kind"] in ("step", "signal"):
        step.optimizer_step = counted(step.optimizer_step)
    elif fault["kind"] == "call":
        setattr(os, fault["fn"], counted(getattr(os, fault["fn"])))


def _child(job: dict) -> None:
    fd = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.dup2(fd, 1)
    sys.stdout = sys.stderr = os.fdopen(2, "w", buffering=1)
    fault = job.get("fault") or {}
    if fault.get("kind") in ("step", "call", "signal"):
        _arm(fault)
    code = main(job["argv"])
    sys.stderr.flush()
    os._exit(code)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _wait_for_first_save(pid: int, manifest: Path, before: int | None, timeout: float = 60) -> int | None:
    """Until the child saved its first checkpoint (it is training then): None; or, when it ended
    first, its wait status."""
    tic = time.monotonic()
    while time.monotonic() - tic < timeout:
        if _mtime(manifest) != before:
            return None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    return None


def run_job(job: dict) -> dict:
    if job.get("fit_argv") and not (Path(job["run_dir"]) / "recipe.toml").exists():
        # Killed before its recipe.toml was written, the folder holds nothing to resume: fit again.
        job = {**job, "argv": job["fit_argv"]}
    manifest = Path(job["run_dir"]) / "checkpoints" / "manifest.json"
    before = _mtime(manifest)
    pid = os.fork()
    if pid == 0:
        try:
            _child(job)
        finally:
            os._exit(99)
    fault = job.get("fault") or {}
    tic = time.monotonic()
    status = None
    if fault.get("kind") == "wall":
        status = _wait_for_first_save(pid, manifest, before)
        if status is None:
            time.sleep(fault["seconds"])
            os.kill(pid, signal.SIGKILL)          # the child is not reaped yet, so its pid is still its own
    if status is None:
        _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {"fault": fault, "killed": killed, "command": job["argv"][0], "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "seconds": round(time.monotonic() - tic, 3)}


if __name__ == "__main__":
    for job in json.loads(Path(sys.argv[1]).read_text()):
        print(json.dumps(run_job(job)), flush=True)
