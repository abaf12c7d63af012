"""Search strategies as Optuna samplers over a `[search]` space.

- random: independent draws (log-uniform for log ranges), each trial seeded by (seed, trial number,
  key), so a study draws the same values whichever worker runs which trial.
- grid: every combination of `grid_points` values per range, queued in the study in a seeded
  shuffled order (`grid_plan`); a budget smaller than the grid runs a random part of it.
- tpe: Optuna's TPESampler (constant liar, so parallel workers do not all pick the same point), its
  draws seeded per (seed, trial number, key) like random's.
- tighten: rounds of random trials; round r draws each numeric key from the span of the best
  `keep` completed trials of round r-1 (widened by `margin`, in log space for log ranges) and
  each choice among the values those trials used. With one round it is random search.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from .space import Choice, SearchSection

_SCALAR = (str, int, float, bool, type(None))


def _encoded(d: Choice) -> bool:
    """Optuna's categorical values are scalars; lists (e.g. model.hidden) travel as JSON strings."""
    return not all(isinstance(v, _SCALAR) for v in d.values)


def to_optuna(d: Any) -> BaseDistribution:
    if d.kind == "choice":
        return CategoricalDistribution([json.dumps(v) for v in d.values] if _encoded(d) else list(d.values))
    if d.kind == "uniform":
        return FloatDistribution(d.low, d.high, step=d.step)
    if d.kind == "log_uniform":
        return FloatDistribution(d.low, d.high, log=True)
    if d.kind == "int":
        return IntDistribution(d.low, d.high, step=d.step)
    return IntDistribution(d.low, d.high, log=True)


def decode(d: Any, value: Any) -> Any:
    """An Optuna parameter value -> the recipe value."""
    return json.loads(value) if d.kind == "choice" and _encoded(d) else value


def suggest(trial: optuna.Trial, key: str, d: Any) -> Any:
    return decode(d, _suggest(trial, key, d))


def _suggest(trial: optuna.Trial, key: str, d: Any) -> Any:
    dist = to_optuna(d)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


# ------------------------------------------------------------------------------------------ grid
def _axis(d: Any, points: int) -> list[Any]:
    dist = to_optuna(d)
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        values = list(range(dist.low, dist.high + 1, dist.step))
        if len(values) <= points:
            return values
        spaced = np.geomspace(dist.low, dist.high, points) if dist.log else np.linspace(dist.low, dist.high, points)
        return sorted({int(round(v)) for v in spaced})
    spaced = np.geomspace(dist.low, dist.high, points) if dist.log else np.linspace(dist.low, dist.high, points)
    if dist.step is not None:       # stay on the range's lattice
        spaced = dist.low + np.round((spaced - dist.low) / dist.step) * dist.step
    return sorted({float(v) for v in spaced})


def grid_plan(search: SearchSection, seed: int) -> list[dict[str, Any]]:
    """Every combination of the grid's values (Optuna parameter values), in a seeded shuffled order."""
    keys = list(search.space)
    axes = [_axis(search.space[k], search.grid_points) for k in keys]
    combos = [dict(zip(keys, values)) for values in itertools.product(*axes)]
    order = np.random.default_rng([seed, 0x6121D]).permutation(len(combos))
    return [combos[i] for i in order]


# --------------------------------------------------------------------------------------- samplers
def _trial_seed(seed: int, number: int, key: str) -> int:
    return int(np.random.SeedSequence([seed, number, zlib.crc32(key.encode())]).generate_state(1)[0])


class TightenSampler(BaseSampler):
    """Random search in rounds, each round's ranges tightened around the previous round's best trials.

    Stateless: every draw is computed from the study's trials and the trial number, so several
    processes (or machines) sharing the study draw consistently.
    """

    def __init__(self, *, trials: int, rounds: int = 1, keep: int = 3, margin: float = 0.1, seed: int = 0):
        self.round_size = max(1, math.ceil(trials / rounds))
        self.rounds, self.keep, self.margin, self.seed = rounds, keep, margin, seed

    def round_of(self, number: int) -> int:
        return min(number // self.round_size, self.rounds - 1)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str,
                           dist: BaseDistribution) -> Any:
        narrowed = self.narrowed(study, self.round_of(trial.number), name, dist)
        draw = RandomSampler(seed=_trial_seed(self.seed, trial.number, name))
        return draw.sample_independent(study, trial, name, narrowed)

    def best_of_round(self, study: optuna.Study, r: int) -> list[FrozenTrial]:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if self.round_of(t.number) == r and t.value is not None and not math.isnan(t.value)]
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        return sorted(done, key=lambda t: (sign * t.value, t.number))[: self.keep]

    def narrowed(self, study: optuna.Study, r: int, name: str, dist: BaseDistribution) -> BaseDistribution:
        """The distribution of `name` in round r: round 0 draws from the full range."""
        if r == 0:
            return dist
        outer = self.narrowed(study, r - 1, name, dist)
        best = [t.params[name] for t in self.best_of_round(study, r - 1) if name in t.params]
        if not best:                 # nothing finished in the last round (yet): keep its range
            return outer
        return tighten(outer, best, self.margin)


def tighten(dist: BaseDistribution, best: Sequence[Any], margin: float) -> BaseDistribution:
    """`dist` narrowed to the span of the values `best` (widened by `margin` of the span each side)."""
    if isinstance(dist, CategoricalDistribution):
        kept = [c for c in dist.choices if c in best]
        return CategoricalDistribution(kept or list(dist.choices))
    log = dist.log
    fwd = (lambda v: math.log(v)) if log else (lambda v: float(v))
    back = (lambda v: math.exp(v)) if log else (lambda v: v)
    lo, hi = min(fwd(v) for v in best), max(fwd(v) for v in best)
    pad = margin * (hi - lo)
    new_lo, new_hi = max(back(lo - pad), dist.low), min(back(hi + pad), dist.high)
    if isinstance(dist, IntDistribution):
        step = dist.step
        # Snap outwards onto the range's lattice so the narrowed range is a valid sub-range.
        new_lo = dist.low + math.floor(round((new_lo - dist.low) / step, 9)) * step
        new_hi = dist.low + math.ceil(round((new_hi - dist.low) / step, 9)) * step
        return IntDistribution(int(new_lo), int(min(new_hi, dist.high)), log=log, step=step)
    if dist.step is not None:
        new_lo = dist.low + math.floor(round((new_lo - dist.low) / dist.step, 9)) * dist.step
        new_hi = min(dist.low + math.ceil(round((new_hi - dist.low) / dist.step, 9)) * dist.step, dist.high)
    return FloatDistribution(new_lo, new_hi, log=log, step=dist.step)


class SeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws for a trial's key are seeded by (seed, trial number, key), not by one
    generator consumed trial after trial: a search stopped and rerun (a fresh sampler) draws what the
    uninterrupted one did. What TPE learns from the earlier trials is in the study either way."""

    def __init__(self, *, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._trial_seed_base = seed

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, name: str,
                           dist: BaseDistribution) -> Any:
        s = _trial_seed(self._trial_seed_base, trial.number, name)
        self._rng.rng.seed(s)
        self._random_sampler._rng.rng.seed(s)
        return super().sample_independent(study, trial, name, dist)


def make_sampler(search: SearchSection, seed: int, trials: int, worker: int = 0) -> BaseSampler:
    """The study's sampler for `search.strategy` (grid trials are queued with fixed values instead)."""
    if search.strategy == "tpe":
        return SeededTPE(n_startup_trials=search.tpe_startup, constant_liar=True, seed=seed * 1000 + worker)
    rounds = search.rounds if search.strategy == "tighten" else 1
    return TightenSampler(trials=trials, rounds=rounds, keep=search.keep, margin=search.margin, seed=seed)
