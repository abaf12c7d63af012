"""Two identical runs, each in its own process, write byte-identical run folders, except the
declared volatile fields below (wall-clock timing, and the writer's process id).

Separate processes are the real case: each starts with fresh global RNGs (numpy's and Python's
are saved in checkpoints) and its own string-hash seed (set order).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import QUIET, combinations
from safetensors import safe_open

# The declared volatile fields (docs/conformance.md). Everything else must match byte for byte.
VOLATILE_HISTORY_COLUMNS = {"seconds"}                       # history.csv, and checkpoint metadata history
VOLATILE_FILES = {".lock"}                                   # holds the pid of the process that wrote it
CHECKPOINTS_WITH_HISTORY = {"last.safetensors"}              # so their manifest digest/size vary too

CONFIGS = {
    "plain": {},                                             # every watch output: probes, doctor, report
    "ensemble-bagging": {"train.ensemble.members": 2, "train.ensemble.method": "bagging"},
    "swa-augment-rollback": {"train.swa.start_epoch": 2, "data.augment.noise_std": 0.1, "watch.on_nan": "rollback",
                             "checkpoint.every_steps": 3},
}
BASE = {"data.source": "moons", "data.n_samples": 150, "model.hidden": [16], "train.epochs": 3,
        "train.batch_size": 16}


def fit_in_subprocess(out: Path, overrides: dict) -> None:
    args = [sys.executable, "-m", "trainwell.cli", "fit", "--quiet", "--out", str(out)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "PYTHONHASHSEED": "random", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def history_without_volatile(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in VOLATILE_HISTORY_COLUMNS} for row in rows]


def checkpoint_parts(path: Path) -> tuple[dict, dict]:
    """(tensor name -> raw bytes, metadata with the volatile fields dropped)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k).numpy().tobytes() for k in f.keys()}
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    for value in meta.values():
        if isinstance(value, dict) and "history" in value:
            value["history"] = history_without_volatile(value["history"])
    return tensors, meta


def stable_entries(manifest: dict) -> dict:
    return {name: entry for name, entry in manifest.items() if name not in CHECKPOINTS_WITH_HISTORY}


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files_a != files_b:
        return [f"different files: {set(map(str, files_a)) ^ set(map(str, files_b))}"]
    for rel in files_a:
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if x == y or rel.name in VOLATILE_FILES:
            continue
        if rel.name == "history.csv":
            rows_x, rows_y = (list(csv.DictReader(io.StringIO(t.decode()))) for t in (x, y))
            same = history_without_volatile(rows_x) == history_without_volatile(rows_y)
        elif rel.suffix == ".safetensors":
            same = checkpoint_parts(a / rel) == checkpoint_parts(b / rel)
        elif rel.name == "manifest.json":
            same = stable_entries(json.loads(x)) == stable_entries(json.loads(y))
        else:
            same = False
        if not same:
            problems.append(str(rel))
    return problems


@pytest.mark.parametrize("config", combinations({"config": list(CONFIGS)}, fast=1))
def test_identical_runs_write_identical_folders(tmp_path, config):
    overrides = {**BASE, **CONFIGS[config]}
    fit_in_subprocess(tmp_path / "a", overrides)
    fit_in_subprocess(tmp_path / "b", overrides)
    assert compare(tmp_path / "a", tmp_path / "b") == []


@pytest.mark.slow
def test_the_comparison_sees_a_changed_byte(tmp_path):
    """The comparison above is not vacuous: a run with another seed differs, and so does a changed byte."""
    fit_in_subprocess(tmp_path / "a", {**BASE, **QUIET})
    fit_in_subprocess(tmp_path / "b", {**BASE, **QUIET, "seed": 1})
    assert "checkpoints/last.safetensors" in compare(tmp_path / "a", tmp_path / "b")
    shutil.copytree(tmp_path / "a", tmp_path / "c")
    metrics = tmp_path / "c" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"seed": 0', '"seed": 00'))
    assert compare(tmp_path / "a", tmp_path / "c") == ["metrics.json"]
