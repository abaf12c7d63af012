"""The `shapes` image set: seeded, balanced, configurable, and label-preserving under flips."""

from __future__ import annotations

import numpy as np
import pytest

from trainwell.data.shapes import _masks, shapes
from trainwell.data.sources import load_source
from trainwell.recipe import SHAPE_KINDS, DataSection


def test_seeded_balanced_and_sized():
    s = DataSection(source="shapes", n_samples=60, image_size=12, channels=1, shape_kinds=("circle", "cross",
                                                                                           "ring"))
    a, b, c = load_source(s, 3), load_source(s, 3), load_source(s, 4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (60, 1, 12, 12) and a.x.dtype == np.float32
    assert a.classes == ("circle", "cross", "ring")
    assert np.bincount(a.y).tolist() == [20, 20, 20]
    assert 0 <= a.x.min() and a.x.max() <= 1


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_every_kind_is_symmetric_left_right(kind):
    size = 15
    grid = np.arange(size) + 0.5
    dx, dy = grid[None, None, :] - 7.5, grid[None, :, None] - 7.5
    r = np.full((1, 1, 1), 6.0)
    for up in (True, False):
        mask = _masks(kind, dx, dy, r, np.full((1, 1, 1), up))[0]
        assert mask.sum() > 10
        np.testing.assert_array_equal(mask, mask[:, ::-1])
    if kind != "triangle":
        np.testing.assert_array_equal(mask, mask[::-1])   # upside down too; a triangle flips to its twin
    up_mask = _masks(kind, dx, dy, r, np.full((1, 1, 1), True))[0]
    np.testing.assert_array_equal(up_mask[::-1], mask)


def test_figures_stand_out_from_the_background():
    x, labels = shapes(50, 0.0, ("square",), 16, 3, np.random.default_rng(0))
    for img in x:
        values = np.unique(img.round(6).reshape(3, -1).T, axis=0)
        assert len(values) == 2                       # figure and background, nothing else without noise
        assert abs(values[0] - values[1]).max() >= 0.2
