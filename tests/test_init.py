"""Initializers against the formulas of seeds 000/002/004, within sampling tolerance."""

import math

import pytest
import torch
from torch import nn

from trainwell.build import build_network
from trainwell.data.sources import make_dataset
from trainwell.init import init_weight_, layer_nonlinearities
from trainwell.recipe import load_recipe

N_IN, N_OUT = 400, 300


def sample_std(scheme, **kw):
    w = torch.empty(N_OUT, N_IN)
    init_weight_(w, scheme, generator=torch.Generator().manual_seed(0), **kw)
    return float(w.std()), w


@pytest.mark.parametrize("scheme, kw, expected", [
    ("xavier_normal", {}, math.sqrt(2 / (N_IN + N_OUT))),
    ("xavier_normal", {"gain": 2.0}, 2 * math.sqrt(2 / (N_IN + N_OUT))),
    ("xavier_uniform", {}, math.sqrt(2 / (N_IN + N_OUT))),          # U(-a, a), a = sqrt(6/(in+out))
    ("kaiming_normal", {"nonlinearity": "relu"}, math.sqrt(2 / N_IN)),
    ("kaiming_uniform", {"nonlinearity": "relu"}, math.sqrt(2 / N_IN)),
    ("kaiming_normal", {"nonlinearity": "relu", "mode": "fan_out"}, math.sqrt(2 / N_OUT)),
    ("kaiming_normal", {"nonlinearity": "tanh"}, (5 / 3) / math.sqrt(N_IN)),
    ("lecun_normal", {}, math.sqrt(1 / N_IN)),
    ("lecun_uniform", {}, math.sqrt(1 / N_IN)),
    ("normal", {"std": 0.01}, 0.01),
    ("uniform", {"a": -0.1, "b": 0.1}, 0.2 / math.sqrt(12)),
    ("xavier_normal", {"gain": "auto", "nonlinearity": "relu"}, math.sqrt(2) * math.sqrt(2 / (N_IN + N_OUT))),
    ("xavier_normal", {"gain": "auto", "nonlinearity": "tanh"}, 5 / 3 * math.sqrt(2 / (N_IN + N_OUT))),
])
def test_sample_std_matches_formula(scheme, kw, expected):
    std, _ = sample_std(scheme, **kw)
    # 120,000 samples: the relative standard error of a sample std is about 1/sqrt(2n) = 0.2%.
    assert std == pytest.approx(expected, rel=0.02)


def test_uniform_bounds_and_orthogonal():
    _, w = sample_std("xavier_uniform")
    bound = math.sqrt(6 / (N_IN + N_OUT))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    w = torch.empty(50, 80)
    init_weight_(w, "orthogonal", gain=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(w @ w.T, torch.eye(50), atol=1e-5)


def test_xavier_default_gain_is_one():
    assert load_recipe().init.gain == 1.0


def test_each_layer_takes_the_activation_that_follows_it():
    r = load_recipe(None, {"model.activation": "leaky_relu", "model.negative_slope": 0.2, "model.norm": "none"})
    ds = make_dataset(torch.randn(20, 5).numpy(), torch.arange(20).remainder(3).numpy())
    model, _ = build_network(r, ds)
    rows = layer_nonlinearities(model)
    assert [(n, nl, s) for n, _, nl, s in rows] == [
        ("fc1", "leaky_relu", pytest.approx(0.2)), ("fc2", "leaky_relu", pytest.approx(0.2)), ("head", "linear", 0.0)]


def test_he_init_from_recipe_uses_the_relu_gain():
    r = load_recipe(None, {"model.hidden": [2000], "model.norm": "none", "init.weights": "kaiming_normal"})
    ds = make_dataset(torch.randn(20, 1000).numpy(), torch.arange(20).remainder(2).numpy())
    model, _ = build_network(r, ds)
    assert float(model.fc1.weight.detach().std()) == pytest.approx(math.sqrt(2 / 1000), rel=0.02)
    assert float(model.head.weight.detach().std()) == pytest.approx(math.sqrt(1 / 2000), rel=0.1)  # linear gain
    assert float(model.fc1.bias.detach().abs().max()) == 0.0


def test_the_default_keeps_pytorchs_weights_and_zero_biases():
    """The default recipe: each layer's weights as PyTorch initializes them, U(+-1/sqrt(fan_in)) (std
    1/sqrt(3 fan_in), where He's ReLU init has sqrt(2/fan_in)), biases zero (PRODUCT.md)."""
    assert load_recipe(None, {}).init.weights == "pytorch"
    r = load_recipe(None, {"model.hidden": [2000, 1000]})
    ds = make_dataset(torch.randn(20, 1000).numpy(), torch.arange(20).remainder(2).numpy())
    model, _ = build_network(r, ds)
    for layer in (model.fc1, model.fc2, model.head):
        w, fan_in = layer.weight.detach(), layer.weight.shape[1]
        assert float(w.abs().max()) <= 1 / math.sqrt(fan_in)
        assert float(w.std()) == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.03)
    assert float(model.head.bias.detach().abs().max()) == 0.0      # the hidden layers have none: batch norm follows


@pytest.mark.parametrize("make", [lambda: nn.Linear(40, 30), lambda: nn.Conv2d(3, 8, 5)])
def test_pytorch_scheme_is_torchs_own_draw_from_the_given_generator(make):
    torch.manual_seed(3)
    reference = make()                    # torch's reset_parameters, from the global generator seeded with 3
    w = init_weight_(torch.empty_like(reference.weight), "pytorch", generator=torch.Generator().manual_seed(3))
    assert torch.equal(w, reference.weight.detach())


def test_the_default_network_is_the_same_whatever_the_global_generator():
    r = load_recipe(None, {"init.bias": "pytorch", "model.norm": "none"})
    ds = make_dataset(torch.randn(20, 8).numpy(), torch.arange(20).remainder(2).numpy())
    torch.manual_seed(1)
    a, _ = build_network(r, ds)
    torch.manual_seed(2)
    b, _ = build_network(r, ds)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _train_tiny(weights: str, value: float = 0.0) -> nn.Module:
    import trainwell as tw
    run = tw.fit(None, out=False, quiet=True, **{
        "data.source": "moons", "data.n_samples": 200, "model.hidden": [8], "model.norm": "none",
        "model.dropout": 0.0, "init.weights": weights, "init.value": value, "train.epochs": 5,
        "optimizer.kind": "sgd", "optimizer.lr": 0.5, "stopping.enabled": False})
    return run.model


def test_zero_init_keeps_hidden_units_identical_random_does_not():
    """The symmetry problem (seed 002): identical weights get identical gradients forever."""
    for scheme, value in (("zeros", 0.0), ("constant", 0.1)):
        model = _train_tiny(scheme, value)
        w = model.fc1.weight.detach()
        assert torch.allclose(w, w[:1].expand_as(w))
    assert not torch.allclose(w, torch.full_like(w, 0.1))     # it did train, the units moved together
    w = _train_tiny("kaiming_normal").fc1.weight.detach()
    assert not torch.allclose(w, w[:1].expand_as(w), atol=1e-3)
