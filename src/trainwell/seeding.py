"""Every random stream of a run, derived from its one `seed` in one place.

A run draws from a few independent streams, each a `torch.Generator` seeded from (seed, stream):

    init      the initial weights                     seed + 0
    shuffle   each epoch's row order                  seed + 1
    augment   augmentation draws (crops, flips, mix)  seed + 2
    data      a lab's synthetic rows                  seed + 1 (a lab never shuffles)

The offsets are those the runs have always used, so a recipe and seed keep their history. Draws
that torch makes from its global generator (dropout) come from `seed_globals(seed)`, which also
seeds numpy's and python's global generators: nothing in trainwell draws from those, but a
user's model or callback may, and a checkpoint saves and restores them (`host_states`).
"""

from __future__ import annotations

import random

import numpy as np
import torch

STREAMS = {"init": 0, "shuffle": 1, "augment": 2, "data": 1}


def stream_seed(seed: int, name: str) -> int:
    """The integer seed of stream `name` (one of STREAMS) of a run seeded with `seed`."""
    return seed + STREAMS[name]


def stream(seed: int, name: str) -> torch.Generator:
    """A fresh CPU generator for stream `name` of a run seeded with `seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, name))


def seed_globals(seed: int) -> None:
    """Seed torch's, numpy's and python's global generators from the run's seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def host_states() -> dict[str, list]:
    """numpy's and python's global generator states, JSON-able (a checkpoint's metadata; each worker's)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"rng_numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "rng_python": [version, list(internal), gauss]}


def set_host_states(meta: dict) -> None:
    """Put back the states `host_states` returned (read from `meta`'s "rng_numpy" and "rng_python")."""
    s = meta["rng_numpy"]
    np.random.set_state((s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    s = meta["rng_python"]
    random.setstate((s[0], tuple(s[1]), s[2]))
