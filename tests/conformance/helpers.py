"""Shared pieces of the conformance suite: small fast runs, and the sampling of combinations.

Every combination is a test case; a fixed sample of them (seeded, so the same every run) runs by
default and the rest are marked slow (`make test` and `pytest -m slow` run them all).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import warnings

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False}
TINY = {"data.source": "moons", "data.n_samples": 120, "model.hidden": [8], "train.batch_size": 16, **QUIET}


def combinations(axes: dict[str, list], fast: int, seed: int = 18) -> list:
    """Every combination of the axes' values as pytest params (ids name them); `fast` of them,
    drawn with a fixed seed, run by default, the others are marked slow."""
    combos = list(itertools.product(*axes.values()))
    chosen = set(random.Random(seed).sample(range(len(combos)), min(fast, len(combos))))
    params = []
    for k, combo in enumerate(combos):
        cid = "-".join(_short(v) for v in combo)
        marks = () if k in chosen else (pytest.mark.slow,)
        params.append(pytest.param(*combo, id=cid, marks=marks))
    return params


def _short(v) -> str:
    if isinstance(v, dict):
        return ",".join(f"{k.split('.')[-1]}{_short(x)}" for k, x in v.items()) or "default"
    return str(v)


@contextlib.contextmanager
def step_lrs():
    """The learning rate of every optimizer step taken in the block (param group 0), read by a
    global torch hook: it sees what the optimizer actually used, whatever sets it."""
    seen: list[float] = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        yield seen
    finally:
        handle.remove()


def quiet_warnings():
    warnings.simplefilter("ignore")
