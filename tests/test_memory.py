"""One copy of the rows (issue #13): the splits are slices of one array, with the same values as indexing
the loaded rows by the split indices and normalizing each split, as before; the moments are the float64
ones of the whole matrix, computed a block of columns at a time."""

from __future__ import annotations

import json

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


# ------------------------------------------------------------------------------ rows used as given: read by index
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), width=st.sampled_from([(3,), (2, 3), (1,)]), seed=st.integers(0, 2**16),
       start=st.integers(0, 70), stop=st.integers(0, 70))
def test_indexed_rows_read_what_the_gathered_rows_hold_bit_for_bit(n, width, seed, start, stop):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n + 5, *width, generator=g)
    index = torch.randperm(n + 5, generator=g)[:n]
    r, want = rows.IndexedRows(base, index), base[index]
    assert r.shape == want.shape and len(r) == n and r.dtype == want.dtype and r.dim() == want.dim()
    assert torch.equal(r[start:stop], want[start:stop])
    assert r[start:stop].is_contiguous()
    idx = torch.randint(0, n, (7,), generator=g)
    assert torch.equal(r[idx], want[idx]) and torch.equal(r.index_select(0, idx), want.index_select(0, idx))
    assert torch.equal(r[idx.numpy()], want[idx])
    mask = torch.rand(n, generator=g) > 0.5
    assert torch.equal(r[mask], want[mask])
    k = int(idx[0])
    assert torch.equal(r[k], want[k]) and torch.equal(r[np.int64(k)], want[k])
    assert torch.equal(r[idx, 0], want[idx, 0]) and torch.equal(r[..., 0], want[..., 0])
    assert torch.equal(r.reshape(n, -1)[start:stop], want.reshape(n, -1)[start:stop])
    # anything else acts on the gathered rows: a torch function, a tensor method, numpy
    assert torch.equal(torch.nn.functional.relu(r), torch.relu(want))
    assert torch.equal(r.sum(0), want.sum(0)) and torch.equal(r.double(), want.double())
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(want[0].numel(), 2))
    assert torch.equal(net(r), net(want))           # a module handed the split itself
    np.testing.assert_array_equal(np.asarray(r), want.numpy())


def test_the_fingerprint_of_indexed_rows_is_the_gathered_rows_one():
    from trainwell.loop import SplitTensors
    from trainwell.runstate import fingerprint

    base = torch.randn(5000, 300)            # several READ_BYTES blocks
    index = torch.randperm(5000)[:4321]
    y = torch.arange(4321)
    assert (fingerprint(SplitTensors(rows.IndexedRows(base, index), y))
            == fingerprint(SplitTensors(base[index], y)))
    assert fingerprint(SplitTensors(rows.IndexedRows(base, index.flip(0)), y)) != fingerprint(SplitTensors(base[index], y))


def test_constant_features_read_by_index_are_those_of_the_rows():
    from trainwell.data.checks import constant_features

    x = np.random.default_rng(0).normal(size=(3000, 400)).astype(np.float32)
    train = np.sort(np.random.default_rng(1).choice(3000, 2000, replace=False))
    x[train, 7] = 1.5       # constant in the training rows only
    x[train, 9] = -2.0
    names = tuple(f"f{j}" for j in range(400))
    by_index = constant_features(rows.IndexedRows(torch.from_numpy(x), torch.from_numpy(train)), names)
    assert by_index == constant_features(x[train], names) and "('f7', 'f9')" in by_index[0]


def _caller_data(n=600, d=12, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, :3].sum(1) > 0).astype(np.int64)


def test_rows_used_as_given_are_read_from_the_callers_array_without_a_copy():
    x, y = _caller_data()
    given = x.copy()
    recipe = tw.load_recipe(None, {"data.normalize": "none"})
    prepared = prepare_data(recipe, (x, y))
    for k in SPLITS:
        part = getattr(prepared, k)
        assert isinstance(part.x, rows.IndexedRows) and np.shares_memory(part.x.base.numpy(), x)
        np.testing.assert_array_equal(np.asarray(part.x), given[prepared.indices[k]])
        assert torch.equal(part.y, torch.from_numpy(y[prepared.indices[k]]))
    # normalized, imputed or not writable: a copy, as before
    for overrides, data in [({}, (x, y)), ({"data.normalize": "none"}, (given.astype(np.float64), y))]:
        assert not isinstance(prepare_data(tw.load_recipe(None, overrides), data).train.x, rows.IndexedRows)
    frozen = x.copy()
    frozen.flags.writeable = False
    assert not isinstance(prepare_data(recipe, (frozen, y)).train.x, rows.IndexedRows)


def test_a_run_on_rows_read_by_index_equals_the_run_on_a_copy_of_them(tmp_path):
    """The same history, metrics and facts, bit for bit, as the run on the arranged copy (a read-only array
    is copied), and the caller's array is not written."""
    x, y = _caller_data()
    given = x.copy()
    frozen = x.copy()
    frozen.flags.writeable = False
    keys = {"data.normalize": "none", "train.epochs": 3, "model.hidden": [16], "watch.report": False}
    runs = [tw.fit(out=tmp_path / name, quiet=True, data=(arr, y), **keys) for name, arr in (("i", x), ("c", frozen))]
    assert isinstance(runs[0].extras["data"].train.x, rows.IndexedRows)
    assert not isinstance(runs[1].extras["data"].train.x, rows.IndexedRows)
    np.testing.assert_array_equal(x, given)
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in runs]
    assert untimed[0] == untimed[1]
    a, b = (json.loads((tmp_path / d / "facts.json").read_text()) for d in "ic")
    assert a == b
    for split in ("val", "test", "train"):
        assert runs[0].metrics[split] == runs[1].metrics[split], split
