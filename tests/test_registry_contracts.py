"""Contract tests over the registries this issue extends: every normalizer and every model kind."""

from __future__ import annotations

import pytest
import torch

from trainwell.data.normalize import NORMALIZERS, make_normalizer
from trainwell.init import init_model_
from trainwell.models import MODELS, build_model
from trainwell.recipe import load_recipe


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_every_normalizer_fits_transforms_and_round_trips(name):
    g = torch.Generator().manual_seed(0)
    train = torch.rand(200, 2, 3, 3, generator=g) * torch.tensor([1.0, 4.0]).view(1, 2, 1, 1)
    other = torch.rand(10, 2, 3, 3, generator=g)
    norm = make_normalizer(name).fit(train)
    out = norm.transform(other)
    assert out.shape == other.shape and bool(torch.isfinite(out).all())
    fresh = make_normalizer(name)
    fresh.load_state_dict({k: v.clone() for k, v in norm.state_dict().items()})
    torch.testing.assert_close(fresh.transform(other), out)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_model_kind_builds_initializes_and_trains_two_steps(kind):
    recipe = load_recipe(None, {"model.kind": kind, "init.weights": "kaiming_normal"})
    shape = (3, 8, 8) if kind == "cnn" else (12,)
    net = build_model(recipe.model, shape, 4)
    init_model_(net, recipe.init, torch.Generator().manual_seed(0))
    x, y = torch.randn(6, *shape), torch.tensor([0, 1, 2, 3, 0, 1])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    net.eval()
    assert net(x[:1]).shape == (1, 4)
