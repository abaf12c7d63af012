"""Several `trainwell search` processes sharing one study on a real PostgreSQL server.

The processes are what runs on separate machines: each has its own study folder and joins the
study through `--storage postgresql://...`. Checked: exactly the requested trials complete, each
once; a worker SIGKILLed in the middle of a trial leaves it FAILED (heartbeat) and queued again,
and the study finishes without it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from postgres_server import postgres_url  # noqa: F401  (the fixture)

from trainwell.search.study import sqlalchemy_url

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]


def _recipe(tmp_path, trials: int, epochs: int):
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join([
        "[data]", 'source = "moons"', "n_samples = 300", "[model]", "hidden = [8]",
        "[train]", f"epochs = {epochs}", "batch_size = 16", "[stopping]", "enabled = false",
        "[watch]", "probes = false", "doctor = false", "report = false",
        "[search]", f"trials = {trials}", "heartbeat_interval = 1", "grace_period = 3",
        "[search.space]", '"optimizer.lr" = { log_uniform = [1e-3, 1e-1] }']) + "\n")
    return path


def _search(recipe, url, study, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "trainwell.cli", "search", str(recipe), "--storage", url,
                             "--study", study, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _folders(*outs):
    return sorted(p.name for out in outs for p in (out / "trials").iterdir() if (p / "metrics.json").exists())


def test_two_processes_share_a_study_without_duplicates(tmp_path, postgres_url):  # noqa: F811
    recipe = _recipe(tmp_path, trials=6, epochs=3)
    lead = _search(recipe, postgres_url, "shared", tmp_path / "lead")
    worker = _search(recipe, postgres_url, "shared", tmp_path / "worker", "--worker")
    out_lead, err_lead = lead.communicate(timeout=600)
    out_worker, err_worker = worker.communicate(timeout=600)
    assert lead.returncode == 0, err_lead
    assert worker.returncode == 0, err_worker
    study = optuna.load_study(study_name="shared", storage=sqlalchemy_url(postgres_url))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 6
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert _folders(tmp_path / "lead", tmp_path / "worker") == [f"{i:04d}" for i in range(6)]
    assert sum(line.startswith("test ") for line in out_lead.splitlines()) == 1
    assert not any(line.startswith("test ") for line in out_worker.splitlines())
    metrics = json.loads((tmp_path / "lead" / "metrics.json").read_text())
    assert metrics["search"]["complete"] == 6 and metrics["search"]["storage"].startswith("postgresql://")
    assert metrics["best_trial"]["value"] == min(t.value for t in study.trials)


def _running_trial_of(url, study, pid, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = optuna.load_study(study_name=study, storage=sqlalchemy_url(url))
        except KeyError:
            time.sleep(0.3)
            continue
        for t in s.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{pid}"):
                return t.number
        time.sleep(0.3)
    raise AssertionError("the worker never started a trial")


def test_a_killed_worker_leaves_its_trial_failed_and_the_study_goes_on(tmp_path, postgres_url):  # noqa: F811
    recipe = _recipe(tmp_path, trials=3, epochs=40)
    doomed = _search(recipe, postgres_url, "killed", tmp_path / "doomed", "--worker")
    number = _running_trial_of(postgres_url, "killed", doomed.pid)
    time.sleep(1.0)                                    # mid-trial, after at least one heartbeat
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate(timeout=60)
    survivor = _search(recipe, postgres_url, "killed", tmp_path / "survivor")
    out, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err
    study = optuna.load_study(study_name="killed", storage=sqlalchemy_url(postgres_url))
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    assert [t.number for t in by_state[TrialState.FAIL]] == [number]
    assert len(by_state[TrialState.COMPLETE]) == 3 and not by_state[TrialState.RUNNING]
    retry = [t for t in by_state[TrialState.COMPLETE] if t.system_attrs.get("failed_trial") == number]
    assert len(retry) == 1 and by_state[TrialState.FAIL][0].params.items() <= retry[0].params.items()
    assert sum(line.startswith("test ") for line in out.splitlines()) == 1
    metrics = json.loads((tmp_path / "survivor" / "metrics.json").read_text())
    assert metrics["search"]["failed"] == 1 and metrics["search"]["complete"] == 3
