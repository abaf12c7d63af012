"""Every random stream of a run, derived from its one `seed` in one place.

A run draws from a few independent streams, each a `torch.Generator` seeded from (seed, stream):

    init      the initial weights                     seed + 0
    shuffle   each epoch's row order                  seed + 1
    augment   augmentation draws (crops, flips, mix)  seed + 2
    data      a lab's synthetic rows                  seed + 1 (a lab never shuffles)

The offsets are those the runs have always used, so a recipe and seed keep their history. Draws
that torch makes from its global generator (dropout) come from `seed_globals(seed)`, which also
seeds numpy's and python's global generators: nothing in trainwell draws from those, but a
user's model or callback may, and a checkpoint saves and restores them.
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
