"""`trainwell search`: create or join the study, run its trials in `jobs` processes, then (unless a
mere worker) the protocol: retrain the best trial's values on train+validation, test once.

    STUDY_DIR/
      recipe.toml        the recipe with its [search]
      study.journal      the study (default storage; --storage URL puts it in a database instead)
      trials/NNNN/       one run folder per trial (test locked, watch off)
      trials.csv         every trial: number, state, value, values, best epoch, stop reason, seconds
      best.json          the best trial: values, metric, best epoch
      final/             the retrain on train+validation: the only run that reads the test split
      metrics.json       the search, the chosen values, the single test evaluation
      report.html        optimization history, parameter importance, slices, trials
"""

from __future__ import annotations

import multiprocessing
import os
import time
import tomllib
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import Recipe
from ..rundir import RECIPE, atomic_write_text, create_run_dir
from .outputs import finish
from .protocol import check_protocol
from .study import TRIALS, open_storage, open_study, requeue, rescue, storage_url, work, worker_name


def search(recipe: Recipe, *, trials: int | None = None, jobs: int = 1, storage: str | None = None,
           out: str | Path | None = None, study_name: str | None = None, worker_only: bool = False,
           quiet: bool = False) -> dict[str, Any]:
    """Run (or join) a search; unless `worker_only`, finish with the protocol and write the outputs."""
    if not recipe.search.space:
        raise RecipeError(["search.space: empty; map at least one recipe key to a distribution, e.g. "
                           "\"optimizer.lr\" = { log_uniform = [1e-4, 1e-1] }"])
    check_protocol(recipe)
    if jobs < 1:
        raise RecipeError([f"--jobs: got {jobs}, must be >= 1"])
    trials = trials or recipe.search.trials
    name = study_name or recipe.name or f"{Path(recipe.data.source).stem}-{recipe.model.kind}-search"
    study_dir = create_run_dir(out, name)
    atomic_write_text(study_dir / RECIPE, recipe.to_toml())
    (study_dir / TRIALS).mkdir(exist_ok=True)
    url = storage_url(storage, study_dir)
    store = open_storage(url, recipe.search)
    study, created = open_study(store, name, recipe, trials)
    if storage is None and not created:
        requeue(study)           # a search resumed in its folder: its old workers are gone
    tic = time.perf_counter()
    if jobs == 1:
        work(study, store, recipe, study_dir, quiet)
    else:
        _parallel(study, store, recipe, study_dir, url, name, jobs, quiet)
    seconds = time.perf_counter() - tic
    if worker_only:
        return {"path": study_dir, "study": study, "seconds": seconds}
    return finish(study, recipe, study_dir, url, seconds, quiet)


def _parallel(study, store, recipe: Recipe, study_dir: Path, url: str, name: str, jobs: int,
              quiet: bool) -> None:
    """`jobs` worker processes on this machine; a worker that dies has its trial failed and queued again."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = [ctx.Process(target=_worker, args=(recipe.to_toml(), str(study_dir), url, name, i, threads, quiet))
             for i in range(jobs)]
    for p in procs:
        p.start()
    host = worker_name().rsplit(":", 1)[0]
    while procs:
        for p in list(procs):
            p.join(timeout=0.5)
            if p.exitcode is None:
                continue
            procs.remove(p)
            if p.exitcode != 0:
                lost = rescue(study, f"{host}:{p.pid}")
                if lost and not quiet:
                    print(f"worker {p.pid} exited with code {p.exitcode}; trial(s) {lost} queued again")
    work(study, store, recipe, study_dir, quiet)    # anything queued again after the last worker left


def _worker(recipe_toml: str, study_dir: str, url: str, name: str, index: int, threads: int, quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    recipe = Recipe.from_dict(tomllib.loads(recipe_toml))
    store = open_storage(url, recipe.search)
    study, _ = open_study(store, name, recipe, recipe.search.trials, worker=index)
    work(study, store, recipe, Path(study_dir), quiet)
