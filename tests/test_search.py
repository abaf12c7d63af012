"""Search by the book: test lock, train+validation retrain, protocol, pruning, and random vs grid."""

import csv
import json
import subprocess
import sys

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import trainwell as tw
from trainwell.errors import TestSplitLocked
from trainwell.prepare import prepare_data
from trainwell.search.protocol import fit_protocol
from trainwell.search.study import open_study, work

TINY = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [8], "train.epochs": 3,
        "train.batch_size": 32, "watch.probes": False, "watch.doctor": False, "watch.report": False}


def test_locked_test_split_raises_on_every_read(tiny):
    recipe = tw.load_recipe(None, tiny)
    prepared = prepare_data(recipe, lock_test=True)
    for read in (lambda t: t.x, lambda t: t.y, len):
        with pytest.raises(TestSplitLocked, match="the test split \\(40 rows\\) is locked"):
            read(prepared.test)
    run = tw.fit(recipe, out=False, quiet=True, lock_test=True)
    assert run.metrics["test"] == {} and run.metrics["test_locked"] is True
    with pytest.raises(TestSplitLocked):
        print(run.extras["data"].test.x)


def test_train_on_train_plus_val_keeps_the_test_rows(tiny):
    plain = prepare_data(tw.load_recipe(None, tiny))
    merged = prepare_data(tw.load_recipe(None, {**tiny, "data.train_on": "train+val",
                                                "stopping.monitor": "train_loss"}))
    assert merged.val is None
    assert np.array_equal(merged.indices["test"], plain.indices["test"])
    assert np.array_equal(merged.indices["train"], np.sort(np.concatenate([plain.indices["train"],
                                                                           plain.indices["val"]])))
    assert len(merged.train) == len(plain.train) + len(plain.val)
    with pytest.raises(tw.RecipeError, match="stopping.monitor: got 'val_loss', but data.train_on"):
        tw.load_recipe(None, {**tiny, "data.train_on": "train+val"})


def test_fit_protocol_selects_the_epoch_then_retrains_and_tests_once(tmp_path):
    recipe = tw.load_recipe(None, {**TINY, "train.epochs": 6, "stopping.patience": 2})
    out = fit_protocol(recipe, out=tmp_path / "p", quiet=True)
    select, final, m = out["select"], out["final"], out["metrics"]
    assert select.metrics["test"] == {} and select.metrics["test_locked"]
    epochs = select.metrics["best_epoch"]
    assert len(final.history) == epochs == m["best_epoch"] == m["protocol"]["retrain_epochs"]
    assert final.metrics["rows"]["train"] == select.metrics["rows"]["train"] + select.metrics["rows"]["val"]
    assert final.metrics["rows"]["test"] == select.metrics["rows"]["test"]
    assert final.metrics["stop_reason"] == "finished" and all(r["val_loss"] is None for r in final.history)
    assert m["test"] == final.metrics["test"] and set(m["test"]) >= {"loss", "accuracy"}
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["test"] == m["test"]


def _search_recipe(tmp_path, **search):
    text = "\n".join([
        'name = "tiny-search"', "[data]", 'source = "moons"', "n_samples = 200", "[model]", "hidden = [8]",
        "[train]", "epochs = 3", "batch_size = 32", "[watch]", "probes = false", "doctor = false",
        "[search]", *(f"{k} = {json.dumps(v)}" for k, v in search.items()),
        "[search.space]", '"optimizer.lr" = { log_uniform = [1e-3, 1e-1] }',
        '"model.hidden" = { choice = [[4], [8, 4]] }'])
    path = tmp_path / "search.toml"
    path.write_text(text + "\n")
    return path


@pytest.mark.slow
def test_search_cli_runs_trials_retrains_and_prints_one_test_score(tmp_path):
    recipe = _search_recipe(tmp_path, strategy="random", trials=3)
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "-m", "trainwell.cli", "search", str(recipe), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("test ") for line in lines) == 1
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 3
    for r in rows:
        trial = json.loads((out / r["folder"] / "metrics.json").read_text())
        assert trial["test"] == {} and trial["test_locked"] is True
        assert not (out / r["folder"] / "report.html").exists()        # the watch is off in trials
    best = json.loads((out / "best.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == best["params"] and metrics["search"]["complete"] == 3
    assert best["value"] == min(float(r["value"]) for r in rows)
    assert metrics["protocol"]["test_evaluations"] == 1 and "accuracy" in metrics["test"]
    final_history = list(csv.DictReader((out / "final" / "history.csv").open()))
    assert len(final_history) == best["best_epoch"]
    final_recipe = tw.load_recipe(out / "final" / "recipe.toml")
    assert final_recipe.optimizer.lr == pytest.approx(best["params"]["optimizer.lr"])
    assert list(final_recipe.model.hidden) == best["params"]["model.hidden"]
    assert final_recipe.data.train_on == "train+val" and not final_recipe.search.space
    page = (out / "report.html").read_text()
    assert 'id="fig-history"' in page and 'id="fig-slices"' in page and "id='test-score'" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_grid_search_runs_each_point_once_and_caps_the_budget(tmp_path):
    recipe = tw.load_recipe(_search_recipe(tmp_path, strategy="grid", grid_points=2, trials=10, retrain=False),
                            {"train.epochs": 1})
    from trainwell.search.run import search

    out = search(recipe, out=tmp_path / "g", quiet=True)
    points = {(r["optimizer.lr"], r["model.hidden"]) for r in out["rows"]}
    assert len(out["rows"]) == 4 and len(points) == 4
    assert sorted({p[0] for p in points}) == pytest.approx([1e-3, 1e-1])
    assert "test" not in out["metrics"]


def test_median_pruner_stops_a_bad_trial_after_the_warmup(tmp_path):
    recipe = tw.load_recipe(_search_recipe(tmp_path, pruner="median", prune_startup=1, min_epochs=2),
                            {"train.epochs": 5, "stopping.enabled": False})
    storage = optuna.storages.InMemoryStorage()
    study, _ = open_study(storage, "prune", recipe, trials=0)
    study.enqueue_trial({"optimizer.lr": 0.1, "model.hidden": "[8, 4]"})
    study.enqueue_trial({"optimizer.lr": 0.001, "model.hidden": "[4]"})
    work(study, storage, recipe, tmp_path, quiet=True)
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert sorted(bad.intermediate_values) == [1, 2]
    history = list(csv.DictReader((tmp_path / "trials" / "0001" / "history.csv").open()))
    assert len(history) == 2
    assert json.loads((tmp_path / "trials" / "0001" / "metrics.json").read_text())["stop_reason"] == "pruned"


def _synthetic_search(strategy: str, seed: int, target: float) -> float:
    """Best |dropout - target| found with 9 trials when only model.dropout matters (l2 is irrelevant)."""
    recipe = tw.load_recipe(None, {"seed": seed, "search": {
        "strategy": strategy, "trials": 9, "grid_points": 3,
        "space": {"model.dropout": {"uniform": [0.0, 0.9]}, "regularization.l2": {"uniform": [0.0, 1.0]}}}})
    storage = optuna.storages.InMemoryStorage()
    study, _ = open_study(storage, strategy, recipe, trials=9)

    def objective(trial, recipe, folder):
        from trainwell.search.study import trial_values

        values = trial_values(trial, recipe)
        return TrialState.COMPLETE, (values["model.dropout"] - target) ** 2 + 0.0 * values["regularization.l2"]

    work(study, storage, recipe, None, quiet=True, objective=objective)
    assert len(study.trials) == 9
    return float(np.sqrt(study.best_value))


def test_random_search_beats_grid_on_the_one_hyperparameter_that_matters():
    """Bergstra & Bengio (2012): with 9 trials a 3x3 grid tries 3 values of the important
    hyperparameter, random search tries 9."""
    rng = np.random.default_rng(0)
    targets = rng.uniform(0.0, 0.9, size=15)
    grid = [_synthetic_search("grid", s, t) for s, t in enumerate(targets)]
    rand = [_synthetic_search("random", s, t) for s, t in enumerate(targets)]
    print(f"median best error: grid {np.median(grid):.4f}, random {np.median(rand):.4f}")
    assert np.median(rand) < 0.5 * np.median(grid)


def test_cli_bad_search_input_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[search.space]\n"optimizer.lrr" = { log_uniform = [1e-4, 1e-1] }\n')
    empty = tmp_path / "empty.toml"
    empty.write_text("[train]\nepochs = 1\n")
    for path, message in ((bad, "did you mean 'optimizer.lr'?"), (empty, "search.space: empty")):
        proc = subprocess.run([sys.executable, "-m", "trainwell.cli", "search", str(path), "--out",
                               str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_fit_protocol_prints_one_test_score(tmp_path):
    sets = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]
    proc = subprocess.run([sys.executable, "-m", "trainwell.cli", "fit", "--protocol", *sets, "--out",
                           str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sum(line.startswith("test ") for line in proc.stdout.splitlines()) == 1
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert m["protocol"]["test_evaluations"] == 1 and (tmp_path / "p" / "select" / "history.csv").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("search-jobs")
def test_jobs_run_in_processes_and_a_killed_worker_is_replaced(tmp_path):
    """--jobs 2 on the journal file: a worker SIGKILLed mid-trial has its trial failed by the parent and
    queued again with the same values; the study still completes exactly the requested trials."""
    import os
    import signal
    import time

    from trainwell.search.study import open_storage

    recipe_path = _search_recipe(tmp_path, trials=3)
    recipe = tw.load_recipe(recipe_path, {"train.epochs": 30, "stopping.enabled": False})
    recipe_path.write_text(recipe.to_toml())
    out = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-m", "trainwell.cli", "search", str(recipe_path), "--jobs", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.3)
        if not (out / "study.journal").exists():
            continue
        study = optuna.load_study(study_name="tiny-search", storage=open_storage(str(out / "study.journal"),
                                                                                  recipe.search))
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and "worker" in running[0].user_attrs:
            victim = running[0]
    assert victim is not None, "no trial started"
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    study = optuna.load_study(study_name="tiny-search", storage=open_storage(str(out / "study.journal"),
                                                                              recipe.search))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.number for t in failed] == [victim.number] and len(complete) == 3
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == victim.number]
    # The retry keeps the values the dead trial had drawn (all, or the first ones if it died early).
    assert len(retry) == 1 and failed[0].params.items() <= retry[0].params.items()
    assert "queued again" in stdout and sum(line.startswith("test ") for line in stdout.splitlines()) == 1
