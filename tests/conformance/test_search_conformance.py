"""Every search strategy x pruner: a search killed (SIGKILL, mid-trial) and rerun in its folder ends
with the same trials as the uninterrupted search: same numbers, states, values and metric, and
the same chosen values. The reference is the clean run of the same recipe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import combinations
from optuna.storages.journal import JournalFileBackend, JournalStorage

import trainwell as tw

HERE = Path(__file__).parent
TRIALS, STEPS_PER_TRIAL = 5, 12          # moons 200 rows, split 0.6 -> 120 train rows, batch 32, 3 epochs


def recipe_text(strategy: str, pruner: str) -> str:
    return "\n".join([
        'name = "kill-search"', "[data]", 'source = "moons"', "n_samples = 200", "[model]", "hidden = [8]",
        "[train]", "epochs = 3", "batch_size = 32", "[stopping]", "enabled = false",
        "[watch]", "probes = false", "doctor = false", "report = false",
        "[search]", f'strategy = "{strategy}"', f"trials = {TRIALS}", "rounds = 3", "keep = 2", "grid_points = 3",
        f'pruner = "{pruner}"', "min_epochs = 1", "prune_startup = 1", 'metric = "val_loss"',
        "[search.space]", '"optimizer.lr" = { log_uniform = [1e-3, 3e-1] }',
        '"model.hidden" = { choice = [[4], [8, 4]] }']) + "\n"


def trials(folder: Path) -> list[tuple]:
    """Every trial of the study in the folder: number, state, values, value, what it reported per epoch."""
    study = optuna.load_study(study_name="kill-search", storage=JournalStorage(JournalFileBackend(
        str(folder / "study.journal"))))
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values, t.user_attrs.get("stop_reason"),
             t.user_attrs.get("best_epoch")) for t in study.trials]


@pytest.mark.parametrize("strategy, pruner", combinations(
    {"strategy": ["random", "grid", "tpe", "tighten"], "pruner": ["none", "median", "successive_halving",
                                                                   "hyperband"]}, fast=2))
def test_killed_and_rerun_search_equals_the_uninterrupted_one(tmp_path, strategy, pruner):
    path = tmp_path / "search.toml"
    path.write_text(recipe_text(strategy, pruner))
    tw.search(tw.load_recipe(path), out=tmp_path / "clean", quiet=True, worker_only=True)

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "kill_at_step.py"), str(STEPS_PER_TRIAL + 5), "search",
                           str(path), "--out", str(killed), "--quiet"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    states = [t[1] for t in trials(killed)]
    assert states[0] == "COMPLETE" and "RUNNING" in states          # it died inside a later trial
    tw.search(tw.load_recipe(path), out=killed, quiet=True, worker_only=True)

    clean = trials(tmp_path / "clean")
    assert len(clean) == (min(TRIALS, 9) if strategy == "grid" else TRIALS) and trials(killed) == clean
