"""The study: an Optuna storage holding every trial, shared by every worker that joins it.

The process that creates the study queues exactly `trials` trials (WAITING, grid trials with their
values fixed) and then marks the study ready. A worker takes a queued trial by moving it to
RUNNING, which the storage does atomically (two workers cannot take the same trial), runs one
`fit` in `trials/NNNN/`, and tells the result. Because nothing is created beyond the queue, the
study completes exactly the requested number of trials however many workers join. A trial whose
worker dies is failed and queued again with the same values: by Optuna's heartbeat on database
storages, by the parent process for its own local workers (`rescue`). A search rerun in its folder
after being stopped puts its interrupted trials back in the queue as they were (`requeue`), so it
ends as the uninterrupted search would have.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from ..api import fit
from ..data.checks import DataWarning
from ..errors import TrainwellError
from ..recipe import Recipe
from .protocol import trial_recipe
from .pruning import PruneCallback, make_pruner
from .space import apply_values, recipe_keys, resolved, searched_kinds
from .strategies import grid_plan, make_sampler, suggest

JOURNAL = "study.journal"
TRIALS = "trials"
READY = "trainwell"          # study user attribute written once the queue is full
_RETRIES = 3                 # times a trial whose worker died is queued again


optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(storage: str | None, study_dir: Path) -> str:
    return storage or str(study_dir / JOURNAL)


def open_storage(url: str, search) -> optuna.storages.BaseStorage:
    """A database URL (sqlite:///, postgresql://, mysql://) -> RDBStorage with heartbeats; anything
    else is a journal file (Optuna's file storage for parallel workers on one host)."""
    if "://" in url:
        try:
            return _rdb(url, search)
        except (ImportError, ModuleNotFoundError) as exc:
            raise TrainwellError(f"--storage {url}: the database driver is missing ({exc}); for PostgreSQL "
                                 "install trainwell[postgres]") from None
        except Exception as exc:   # bad URL, server down: one line, not a SQLAlchemy traceback
            raise TrainwellError(f"--storage {url}: cannot open the study storage "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(url))


def _rdb(url: str, search, attempts: int = 5) -> RDBStorage:
    """RDBStorage with heartbeats. Workers starting together race to create the schema in an empty
    database; the loser sees a duplicate-key error, and a second try finds the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():    # Optuna marks the heartbeat arguments experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    sqlalchemy_url(url), heartbeat_interval=search.heartbeat_interval,
                    grace_period=search.grace_period,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=_RETRIES))
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` names SQLAlchemy's default driver (psycopg 3); with only psycopg2 installed
    (trainwell[postgres]) the URL names psycopg2 instead."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url

    has = {m: importlib.util.find_spec(m) is not None for m in ("psycopg", "psycopg2")}
    return f"postgresql+psycopg2://{rest}" if has["psycopg2"] and not has["psycopg"] else f"postgresql://{rest}"


def open_study(storage, name: str, recipe: Recipe, trials: int, worker: int = 0,
               wait: float = 60.0) -> tuple[optuna.Study, bool]:
    """Create the study and queue its trials, or join it. Returns (study, created)."""
    s = recipe.search
    seed = s.seed if s.seed is not None else recipe.seed
    kwargs = dict(storage=storage, study_name=name, direction=s.direction,
                  sampler=make_sampler(s, seed, trials, worker), pruner=make_pruner(s, recipe.train.epochs))
    try:
        study = optuna.create_study(**kwargs)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**{k: v for k, v in kwargs.items() if k != "direction"})
        created = False
    if created:
        plan = grid_plan(s, seed) if s.strategy == "grid" else [{} for _ in range(trials)]
        for values in plan[:trials]:
            study.enqueue_trial(values)
        study.set_user_attr(READY, {"trials": len(plan[:trials]), "recipe": recipe.to_toml()})
        return study, True
    deadline = time.monotonic() + wait
    while READY not in study.user_attrs:
        if time.monotonic() > deadline:
            raise TrainwellError(f"study {name!r}: its creator has not queued the trials after {wait:.0f} s")
        time.sleep(0.5)
    if study.user_attrs[READY]["recipe"] != recipe.to_toml():
        raise TrainwellError(f"study {name!r}: already exists with a different recipe; give another --study "
                             "name or the same recipe")
    if study.direction.name.lower() != s.direction:
        raise TrainwellError(f"study {name!r}: its direction is {study.direction.name.lower()}, the recipe's "
                             f"search.direction is {s.direction}")
    return study, False


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


# ------------------------------------------------------------------------------------- workers
def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _live(study: optuna.Study):
    """The storage the study's Trial objects write through. Optuna wraps a database storage in a
    cache that must see every state change of the trials it serves, so the workers use it too."""
    return study._storage


def _take(study: optuna.Study) -> tuple[optuna.Trial, int] | None:
    """Move one WAITING trial to RUNNING; the storage refuses a second taker. None when none is left."""
    storage = _live(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                storage.set_trial_user_attr(trial_id, "worker", worker_name())
                return optuna.Trial(study, trial_id), trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


@contextmanager
def heartbeat(storage, trial_id: int, interval: int | None):
    """Record the trial's heartbeat every `interval` seconds while it runs (None: no heartbeat)."""
    if interval is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def work(study: optuna.Study, storage, recipe: Recipe, study_dir: Path, quiet: bool = False,
         poll: float = 1.0, objective=None) -> int:
    """Run queued trials until the queue is empty and nothing is running. Returns trials run here.
    `objective(trial, recipe, study_dir) -> (state, value)` is one `fit` per trial unless given."""
    objective = objective or run_trial
    # Heartbeats exist on database storages; a journal file's dead workers are handled by `rescue`.
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    done = 0
    while True:
        with warnings.catch_warnings():   # Optuna marks the heartbeat API experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)      # fails dead workers' trials; the callback queues them again
        taken = _take(study)
        if taken is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return done
            time.sleep(poll)              # a running trial may still die and come back to the queue
            continue
        trial, trial_id = taken
        with heartbeat(_live(study), trial_id, interval):
            state, value = objective(trial, recipe, study_dir)
        try:
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass                          # failed as stale meanwhile (a long stall); its retry is queued
        done += 1
        if not quiet:
            print(describe(_live(study).get_trial(trial_id), state, value), flush=True)


def trial_values(trial: optuna.Trial, recipe: Recipe) -> dict[str, Any]:
    """Suggest every key of the space that applies: kinds first, then the keys the chosen kinds accept."""
    space = recipe.search.space
    kinds = searched_kinds(space)
    values = {k: suggest(trial, k, space[k]) for k in kinds}
    base = recipe.to_dict()
    base.pop("search", None)
    reachable = set(recipe_keys(resolved(Recipe, apply_values(Recipe, base, values)) or base))
    values.update({k: suggest(trial, k, d) for k, d in space.items() if k not in kinds and k in reachable})
    return values


def run_trial(trial: optuna.Trial, recipe: Recipe, study_dir: Path) -> tuple[TrialState, float | None]:
    """One `fit` with the trial's values, test split locked; its value is the metric at the best epoch."""

    s = recipe.search
    folder = study_dir / TRIALS / f"{trial.number:04d}"
    trial.set_user_attr("folder", f"{TRIALS}/{folder.name}")
    tic = time.perf_counter()
    try:
        values = trial_values(trial, recipe)
        pruner = PruneCallback(trial, s.metric)
        with warnings.catch_warnings():   # the data's warnings are the same in every trial: the final run tells
            warnings.simplefilter("ignore", DataWarning)
            run = fit(trial_recipe(recipe, values), out=folder, quiet=True, lock_test=True, callbacks=[pruner],
                      force=True)
    except Exception as exc:     # the study goes on; the reason stays with the trial
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").write_text(traceback.format_exc())
        return TrialState.FAIL, None
    m = run.metrics
    trial.set_user_attr("best_epoch", int(m["best_epoch"]))
    trial.set_user_attr("stopped_epoch", int(m["stopped_epoch"]))
    trial.set_user_attr("stop_reason", m["stop_reason"])
    trial.set_user_attr("seconds", round(time.perf_counter() - tic, 3))
    trial.set_user_attr("val", m["val"])         # in the study: the trial's folder may be on another machine
    if pruner.pruned_at is not None:
        return TrialState.PRUNED, None
    value = run.history[m["best_epoch"] - 1].get(s.metric)
    if value is None or not math.isfinite(value):     # diverged: the worst value, not a failure
        value = math.inf if s.direction == "minimize" else -math.inf
    return TrialState.COMPLETE, float(value)


def describe(trial, state: TrialState, value: float | None) -> str:
    attrs = trial.user_attrs
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    what = f"{value:.4g}" if value is not None else state.name.lower()
    extra = f" ({attrs.get('stop_reason')} at epoch {attrs.get('stopped_epoch')})" if "stop_reason" in attrs else ""
    if "error" in attrs:
        extra = f" ({attrs['error'].splitlines()[0][:120]})"
    return f"trial {trial.number:>3}: {what}{extra}  {params}"


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else (v if isinstance(v, str) else json.dumps(v))


def requeue(study: optuna.Study) -> list[int]:
    """A search resumed in its folder (all its old workers gone): every RUNNING trial goes back to
    WAITING as it is: same number, same values, what it already reported kept. A trial is a seeded,
    deterministic run, so running it again reports the same values, and the study goes on exactly as
    if it had never stopped: a strategy that reads earlier trials (tighten's rounds, TPE) or a pruner
    that compares them (rungs, brackets by trial number) sees the same study as an uninterrupted run."""
    storage = _live(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    queued = []
    for t in storage.get_all_trials(study_id, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.WAITING):
                queued.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return queued


def rescue(study: optuna.Study, worker: str | None) -> list[int]:
    """Fail the RUNNING trials of a worker known to be dead (None: of every worker) and queue them
    again with the same values."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=_RETRIES)
    storage = _live(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for t in storage.get_all_trials(study_id, states=(TrialState.RUNNING,)):
        if worker is not None and t.user_attrs.get("worker") != worker:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "error", f"worker {t.user_attrs.get('worker')} died")
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                retry(study, storage.get_trial(trial_id))
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
    return failed
