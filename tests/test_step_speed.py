"""The cheaper pieces of a training epoch compute what they replace: trainwell's CPU dropout has
torch's distribution, the checkpoint writer writes safetensors' own bytes, and the finiteness check
agrees with an elementwise isfinite."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from trainwell.callbacks.nonfinite import all_finite
from trainwell.checkpoint import serialize
from trainwell.models import build_model
from trainwell.models.layers import Dropout
from trainwell.recipe import load_recipe


# ------------------------------------------------------------------------------ dropout
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_each_unit_with_probability_1_minus_p_and_scales_it(p):
    torch.manual_seed(0)
    x = torch.randn(400, 500, requires_grad=True)
    y = Dropout(p)(x)
    kept = y != 0
    n = kept.numel()
    # The kept fraction is Binomial(n, 1 - p): within 5 standard deviations.
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))     # d(out)/d(in): the same mask


def test_dropout_masks_are_independent_across_units_and_calls():
    torch.manual_seed(1)
    d = Dropout(0.5)
    a, b = (d(torch.ones(200_000)) != 0).float(), (d(torch.ones(200_000)) != 0).float()
    # Neighbouring units and two calls: correlations of independent draws are ~N(0, 1/n).
    for u, v in ((a[1:], a[:-1]), (a, b)):
        r = torch.corrcoef(torch.stack([u, v]))[0, 1].item()
        assert abs(r) < 5 / math.sqrt(len(u))


def test_dropout_is_repeatable_from_the_global_seed_and_the_identity_in_eval_mode():
    d, x = Dropout(0.3), torch.randn(64, 32)
    torch.manual_seed(7)
    first = d(x)
    torch.manual_seed(7)
    assert torch.equal(d(x), first)
    d.eval()
    assert torch.equal(d(x), x)


def test_dropout_keeps_the_dtype_under_autocast_and_falls_back_to_torch_in_place():
    x = torch.randn(32, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert Dropout(0.5)(x.bfloat16()).dtype == torch.bfloat16
    torch.manual_seed(3)
    expected = nn.Dropout(0.5)(x.clone())
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.5, inplace=True)(x.clone()), expected)     # inplace: torch's own


def test_the_builders_use_it_and_it_is_still_a_torch_dropout():
    mlp = build_model(load_recipe(None, {"model.dropout": 0.2}).model, (8,), 3)
    cnn = build_model(load_recipe(None, {"model.kind": "cnn", "model.dropout": 0.2}).model, (1, 8, 8), 3)
    for net in (mlp, cnn):
        drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(type(m) is Dropout and m.p == 0.2 for m in drops)


# ------------------------------------------------------------------------------ checkpoint bytes
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]
tensor_specs = st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3))
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


def _tensor(dtype, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * 100).to(dtype)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names.filter(lambda s: s != "__metadata__"), tensor_specs, max_size=8),
       st.dictionaries(names, st.text(max_size=40), max_size=1))
def test_the_checkpoint_writer_writes_safetensors_own_bytes(specs, metadata):
    # One metadata key, as a checkpoint has: safetensors orders several keys as its hash map does.
    tensors = {name: _tensor(dtype, shape, i) for i, (name, (dtype, shape)) in enumerate(specs.items())}
    ours = serialize(tensors, metadata)
    assert ours == st_save(tensors, metadata=metadata or None)
    back = st_load(ours)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())


def test_the_checkpoint_writer_takes_non_contiguous_tensors():
    t = torch.arange(12.0).reshape(3, 4).T
    assert serialize({"t": t}, {}) == st_save({"t": t.contiguous()})


# ------------------------------------------------------------------------------ finiteness
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.just(float("nan")))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(values, max_size=6), st.sampled_from([torch.float32, torch.float64,
                                                                         torch.bfloat16, torch.float16])),
                max_size=4))
def test_all_finite_agrees_with_an_elementwise_check(parts):
    tensors = [torch.tensor(v, dtype=torch.float32).to(dtype) for v, dtype in parts]
    tensors.append(torch.arange(3))                                     # integers are finite
    expected = all(bool(torch.isfinite(t).all()) for t in tensors)
    assert all_finite(tensors) is expected


def test_all_finite_on_zero_dim_large_and_empty_tensors():
    assert all_finite([]) and all_finite([torch.zeros(0)]) and all_finite([torch.tensor(2.0)])
    assert all_finite([torch.tensor([1e300], dtype=torch.float64)])     # finite in float64, not float32
    assert not all_finite([torch.tensor(float("-inf"))])
    assert not all_finite([torch.ones(1000), torch.tensor([0.0, float("nan")])])
