import random

import numpy as np
import torch

import trainwell
from trainwell.loop import Callback
from trainwell.seeding import STREAMS, seed_globals, stream


class DrawAtStart(Callback):
    """Draws from numpy's, python's and torch's global generators when training starts."""

    def fit_start(self, trainer) -> None:
        self.draws = (float(np.random.rand()), random.random(), float(torch.rand(())))


def test_fit_seeds_every_global_generator_so_a_users_draws_repeat(tiny):
    seen = []
    for disturb in (1, 2, 3):     # (the first run also imports modules, which may draw from python's)          # whatever state the generators were left in before the run
        np.random.seed(disturb)
        random.seed(disturb)
        torch.manual_seed(disturb)
        cb = DrawAtStart()
        trainwell.fit(out=False, quiet=True, callbacks=[cb], **{**tiny, "train.epochs": 1})
        seen.append(cb.draws)
    assert seen[1] == seen[2]


def test_seed_globals_matches_seeding_each_library_by_hand():
    seed_globals(7)
    got = (np.random.rand(3), random.random(), torch.rand(3))
    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    np.testing.assert_array_equal(got[0], np.random.rand(3))
    assert got[1] == random.random()
    assert torch.equal(got[2], torch.rand(3))


def test_the_run_streams_are_distinct_and_keep_their_historical_offsets():
    # the offsets decide every pinned history (tests/test_pinned_history.py): init seed, shuffle seed+1,
    # augment seed+2
    assert (STREAMS["init"], STREAMS["shuffle"], STREAMS["augment"]) == (0, 1, 2)
    draws = {name: torch.randperm(50, generator=stream(3, name)) for name in ("init", "shuffle", "augment")}
    assert torch.equal(draws["shuffle"], torch.randperm(50, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(draws["init"], draws["shuffle"]) and not torch.equal(draws["shuffle"], draws["augment"])


def test_host_states_put_back_through_json_repeat_the_same_draws():
    """What a checkpoint keeps of numpy's and python's global generators (incl. a cached Gaussian of each)
    survives the JSON of its metadata: the draws after restoring equal the draws after capturing."""
    import json

    from trainwell.seeding import host_states, set_host_states

    np.random.seed(7)
    random.seed(7)
    np.random.standard_normal()          # leaves the second of a pair cached (has_gauss = 1)
    random.gauss(0, 1)                   # python's cached gauss too
    saved = json.loads(json.dumps(host_states()))
    after = (np.random.standard_normal(3).tolist(), [random.gauss(0, 1) for _ in range(3)], random.random())
    np.random.seed(0)
    random.seed(0)
    set_host_states(saved)
    again = (np.random.standard_normal(3).tolist(), [random.gauss(0, 1) for _ in range(3)], random.random())
    assert again == after
