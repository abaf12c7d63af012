"""Which embedded storage should a local `trainwell search --jobs N` use: Optuna's journal file or SQLite?

Several worker processes share one study through the same code path as `trainwell search`
(the study's queue, a worker taking a WAITING trial atomically, telling the result), on a
synthetic objective that sleeps `--trial-ms` per trial so the figure is the storage's cost and
its behaviour under contention. Reported per storage and worker count, median of `--repeats`:
wall seconds (from the moment every worker has joined), storage overhead per trial (wall x workers / trials - trial time), trials completed
(must equal the budget), failed trials, and errors raised by the storage.

    python benchmarks/search_storage.py [--trials 120] [--workers 1 4 8] [--trial-ms 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

import trainwell as tw
from trainwell.search.study import open_storage, open_study, work

SPACE = {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}, "model.dropout": {"uniform": [0.0, 0.5]}}


def _recipe(trials: int):
    return tw.load_recipe(None, {"search": {"trials": trials, "space": SPACE}})


def _objective_factory(seconds: float):
    def objective(trial, recipe, folder):
        from trainwell.search.study import trial_values

        values = trial_values(trial, recipe)
        time.sleep(seconds)
        return TrialState.COMPLETE, values["model.dropout"]
    return objective


def _worker(url: str, trials: int, seconds: float, errors, ready) -> None:
    recipe = _recipe(trials)
    try:
        storage = open_storage(url, recipe.search)
        study, _ = open_study(storage, "bench", recipe, trials)
        ready.wait()                  # the clock starts once every worker has imported and joined
        work(study, storage, recipe, None, quiet=True, poll=0.05, objective=_objective_factory(seconds))
    except Exception as exc:          # counted, not hidden: an error here is the storage failing
        errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")


def run_once(kind: str, workers: int, trials: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "study.journal") if kind == "journal" else f"sqlite:///{tmp}/study.db"
        recipe = _recipe(trials)
        storage = open_storage(url, recipe.search)
        open_study(storage, "bench", recipe, trials)          # the creator queues the trials
        ctx = multiprocessing.get_context("spawn")
        errors = ctx.Queue()
        ready = ctx.Barrier(workers + 1)
        procs = [ctx.Process(target=_worker, args=(url, trials, seconds, errors, ready)) for _ in range(workers)]
        for p in procs:
            p.start()
        ready.wait()
        tic = time.perf_counter()
        for p in procs:
            p.join()
        wall = time.perf_counter() - tic
        study = optuna.load_study(study_name="bench", storage=open_storage(url, recipe.search))
        states = [t.state for t in study.trials]
        found = []
        while not errors.empty():
            found.append(errors.get())
    return {"wall": wall, "complete": states.count(TrialState.COMPLETE), "failed": states.count(TrialState.FAIL),
            "errors": found, "overhead_ms": 1000 * (wall * workers / trials - seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=120)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--trial-ms", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seconds = args.trial_ms / 1000
    print(f"{args.trials} trials of {args.trial_ms:g} ms each; median of {args.repeats} repeats "
          "(clock starts when every worker has joined the study)")
    print(f"{'storage':<9}{'workers':>8}{'wall s':>9}{'overhead ms/trial':>19}{'complete':>10}{'failed':>8}  errors")
    for workers in args.workers:
        for kind in ("journal", "sqlite"):
            runs = [run_once(kind, workers, args.trials, seconds) for _ in range(args.repeats)]
            errors = sorted({e for r in runs for e in r["errors"]})
            print(f"{kind:<9}{workers:>8}{statistics.median(r['wall'] for r in runs):>9.2f}"
                  f"{statistics.median(r['overhead_ms'] for r in runs):>19.1f}"
                  f"{min(r['complete'] for r in runs):>7}-{max(r['complete'] for r in runs):<3}"
                  f"{max(r['failed'] for r in runs):>7}  {'; '.join(errors) or '-'}", flush=True)


if __name__ == "__main__":
    main()
