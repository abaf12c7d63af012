"""One copy of the rows (issue #13): the splits are slices of one array, with the same values as indexing
the loaded rows by the split indices and normalizing each split, as before; the moments are the float64
ones of the whole matrix, computed a block of columns at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trainwell as tw
from trainwell.api import prepare_data
from trainwell.data import rows
from trainwell.data.normalize import column_moments, make_normalizer
from trainwell.data.sources import load_source
from trainwell.data.split import Splits, make_splits

SPLITS = ("train", "val", "test")


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), d=st.integers(1, 300), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       seed=st.integers(0, 2**16))
def test_column_moments_equal_the_whole_matrix_float64_moments_bit_for_bit(n, d, scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * scale + torch.rand(d, generator=g) * 5 * scale
    mean, std = column_moments(x)
    assert torch.equal(mean, x.double().mean(0))
    assert torch.equal(std, x.double().std(0, unbiased=False))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,d", [(9, 129), (1797, 64), (5, 65), (300, 1), (40, 784)])
def test_column_moments_at_widths_with_a_narrow_last_block(n, d, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, d, generator=torch.Generator().manual_seed(d)) * 3 + 1
        mean, std = column_moments(x)
        assert torch.equal(mean, x.double().mean(0)) and torch.equal(std, x.double().std(0, unbiased=False))
    finally:
        torch.set_num_threads(before)


def test_column_moments_keep_the_row_shape():
    x = torch.rand(50, 3, 4, 5)
    mean, std = column_moments(x)
    assert mean.shape == std.shape == (3, 4, 5)
    assert torch.equal(mean, x.double().mean(0)) and torch.equal(std, x.double().std(0, unbiased=False))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(10, 400), fractions=st.sampled_from([(0.6, 0.2, 0.2), (0.8, 0.2, 0.0), (0.34, 0.33, 0.33)]),
       seed=st.integers(0, 2**16), in_place=st.booleans())
def test_arrange_gives_the_rows_of_each_split_in_order(n, fractions, seed, in_place):
    x = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32)
    original = x.copy()
    splits = make_splits(n, fractions, seed)
    out = rows.arrange(x, splits, in_place)
    for (start, stop), idx in zip(rows.split_bounds(splits), (splits.train, splits.val, splits.test)):
        np.testing.assert_array_equal(out[start:stop], original[idx])
    # in place: in the array's own memory; otherwise the given array is left as it was
    assert np.shares_memory(out, x) == in_place
    if not in_place:
        np.testing.assert_array_equal(x, original)


def test_arrange_copies_an_array_it_cannot_write():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    x.flags.writeable = False
    splits = Splits(np.array([1, 3, 5]), np.array([0, 2]), np.array([4]))
    out = rows.arrange(x, splits, in_place=True)
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(out, x[[1, 3, 5, 0, 2, 4]])


@pytest.mark.parametrize("normalize", ["standard", "minmax", "none", "pca_whiten"])
def test_the_splits_are_slices_of_one_array_with_the_values_of_indexing_the_loaded_rows(normalize):
    recipe = tw.load_recipe(None, {"data.source": "digits", "data.normalize": normalize})
    prepared = prepare_data(recipe)
    parts = [getattr(prepared, k) for k in SPLITS]
    assert len({_storage(p.x) for p in parts}) == 1 and len({_storage(p.y) for p in parts}) == 1
    # the reference: the rows as loaded, indexed by each split, normalized as fitted on the training rows
    ds = load_source(recipe.data, recipe.seed)
    raw = torch.from_numpy(ds.x)
    normalizer = make_normalizer(normalize).fit(raw[torch.from_numpy(prepared.indices["train"])])
    for k, part in zip(SPLITS, parts):
        ix = torch.from_numpy(prepared.indices[k])
        assert torch.equal(part.x, normalizer.transform(raw[ix]).contiguous()), k
        assert torch.equal(part.y, torch.from_numpy(ds.y)[ix]), k
    # the dataset keeps the rows' shape, not a second copy of them
    assert prepared.dataset.x.shape == (0, 64) and len(prepared.dataset.y) == len(ds.y)


def test_imputed_rows_are_the_training_means_in_the_one_array():
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    x[::7, 2] = np.nan
    given = x.copy()
    recipe = tw.load_recipe(None, {"data.nonfinite": "impute", "data.normalize": "none"})
    prepared = prepare_data(recipe, (x, y))
    np.testing.assert_array_equal(x, given, err_msg="the caller's array was written")
    train = prepared.indices["train"]
    means = np.nanmean(given[train].astype(np.float64), axis=0)
    for k in SPLITS:
        want = given[prepared.indices[k]].copy()
        want[np.isnan(want)] = np.broadcast_to(means, want.shape)[np.isnan(want)].astype(np.float32)
        np.testing.assert_allclose(getattr(prepared, k).x.numpy(), want, rtol=1e-6)


def test_a_float32_array_passed_from_python_is_not_written_and_not_copied_twice():
    x = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 1] > 0).astype(np.int64)
    given = x.copy()
    run = tw.fit(out=False, quiet=True, data=(x, y), **{"train.epochs": 1, "model.hidden": [8],
                                                         "watch.report": False, "watch.doctor": False})
    np.testing.assert_array_equal(x, given)
    prepared = run.extras["data"]
    assert not any(np.shares_memory(getattr(prepared, k).x.numpy(), x) for k in SPLITS)
    assert len({_storage(getattr(prepared, k).x) for k in SPLITS}) == 1
