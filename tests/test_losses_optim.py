"""Losses, penalties and optimizers against closed forms and PyTorch's own implementations."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from trainwell.checkpoint import optimizer_from_flat, optimizer_to_flat
from trainwell.losses import build_loss, hinge, l1_penalty, l2_penalty
from trainwell.optim import OPTIMIZERS, apply_decoupled_decay, build_optimizer, split_parameters
from trainwell.recipe import load_recipe

CPU = torch.device("cpu")


@given(st.integers(2, 6), st.floats(0.0, 0.5), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_label_smoothing_equals_the_smoothed_target_formula(c, eps, seed):
    g = torch.Generator().manual_seed(seed)
    out, y = torch.randn(5, c, generator=g), torch.randint(0, c, (5,), generator=g)
    loss = build_loss(load_recipe(None, {"loss.label_smoothing": eps}).loss, "multiclass")
    target = F.one_hot(y, c).float() * (1 - eps) + eps / c          # y_ls = (1-eps) y + eps/C
    expected = -(target * F.log_softmax(out, 1)).sum(1).mean()
    assert float(loss(out, y)) == pytest.approx(float(expected), rel=1e-5)


@given(st.floats(0.0, 0.5), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_binary_smoothing_equals_two_class_cross_entropy_smoothing(eps, seed):
    # One logit z is the two-class logit pair [0, z]: sigmoid(z) = softmax([0, z])[1], so smoothing
    # a binary target must give torch's two-class cross-entropy with the same epsilon.
    g = torch.Generator().manual_seed(seed)
    z, y = torch.randn(6, 1, generator=g), torch.randint(0, 2, (6,), generator=g)
    loss = build_loss(load_recipe(None, {"loss.label_smoothing": eps}).loss, "binary")
    pair = torch.cat([torch.zeros_like(z), z], 1)
    assert float(loss(z, y)) == pytest.approx(float(F.cross_entropy(pair, y, label_smoothing=eps)), rel=1e-5)


def test_cross_entropy_accepts_soft_targets():
    out = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), 1)
    loss = build_loss(load_recipe().loss, "multiclass")
    assert float(loss(out, soft)) == pytest.approx(float(-(soft * F.log_softmax(out, 1)).sum(1).mean()), rel=1e-6)


def test_hinge_is_weston_watkins():
    out = torch.tensor([[2.0, 1.5, -1.0], [0.0, 0.2, 0.1]])
    y = torch.tensor([0, 2])
    # row 0: max(0, 1-2+1.5) + max(0, 1-2-1) = 0.5 ; row 1: max(0,1-0.1+0) + max(0,1-0.1+0.2) = 0.9+1.1
    expected = ((0.5) / 3 + (0.9 + 1.1) / 3) / 2
    assert float(hinge(1.0)(out, y)) == pytest.approx(expected)


def test_regression_losses():
    r = load_recipe(None, {"loss.kind": "huber", "loss.delta": 0.5})
    out, y = torch.tensor([[0.0], [2.0]]), torch.tensor([0.2, 0.0])
    # |e| = 0.2 -> 0.5 e^2 = 0.02 ; |e| = 2 -> delta (|e| - delta/2) = 0.5 * 1.75 = 0.875
    assert float(build_loss(r.loss, "regression")(out, y)) == pytest.approx((0.02 + 0.875) / 2)
    with pytest.raises(ValueError, match="regression loss"):
        build_loss(load_recipe(None, {"loss.kind": "mse"}).loss, "multiclass")


def test_penalty_gradients_are_lambda_w_and_lambda_sign_w():
    w = torch.randn(7, 3, requires_grad=True)
    l2_penalty([w], 0.3).backward()
    assert torch.allclose(w.grad, 0.3 * w.detach())
    w.grad = None
    l1_penalty([w], 0.2).backward()
    assert torch.allclose(w.grad, 0.2 * torch.sign(w.detach()))


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_biases_and_norm_parameters_are_not_decayed():
    decay, no_decay = split_parameters(_net())
    assert [tuple(p.shape) for p in decay] == [(8, 4), (2, 8)]
    assert len(no_decay) == 4


def test_decoupled_sgd_decay_is_w_times_one_minus_lr_lambda():
    net = _net()
    opt = build_optimizer(net, load_recipe(None, {"optimizer.kind": "sgd", "optimizer.lr": 0.1,
                                                  "optimizer.weight_decay": 0.5}).optimizer, CPU)
    w0, b0 = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    net(torch.randn(6, 4)).sum().backward()
    g, gb = net[0].weight.grad.clone(), net[0].bias.grad.clone()
    apply_decoupled_decay(opt)
    opt.step()
    assert torch.allclose(net[0].weight, w0 * (1 - 0.1 * 0.5) - 0.1 * g, atol=1e-6)
    assert torch.allclose(net[0].bias, b0 - 0.1 * gb, atol=1e-6)          # bias: no decay


def _adam_steps(recipe_overrides, l2=0.0, steps=5):
    net = _net()
    opt = build_optimizer(net, load_recipe(None, recipe_overrides).optimizer, CPU)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 4, generator=g)
        loss = net(x).pow(2).mean()
        if l2:
            loss = loss + l2_penalty(split_parameters(net)[0], l2)
        loss.backward()
        apply_decoupled_decay(opt)
        opt.step()
        opt.zero_grad()
    return net[0].weight.detach()


def test_adam_with_l2_differs_from_adamw():
    """Seed 003: with Adam, an L2 penalty is rescaled by the adaptive denominator; AdamW's decay is not."""
    lam, lr = 0.1, 0.01
    coupled = _adam_steps({"optimizer.kind": "adam", "optimizer.lr": lr}, l2=lam)
    adamw = _adam_steps({"optimizer.kind": "adamw", "optimizer.lr": lr, "optimizer.weight_decay": lam})
    adam_decoupled = _adam_steps({"optimizer.kind": "adam", "optimizer.lr": lr, "optimizer.weight_decay": lam})
    assert not torch.allclose(coupled, adamw, atol=1e-4)
    assert torch.allclose(adamw, adam_decoupled, atol=1e-6)   # decoupled decay is the same for both kinds


def test_adamw_matches_torch_reference():
    ours = _adam_steps({"optimizer.kind": "adamw", "optimizer.lr": 0.01, "optimizer.weight_decay": 0.1})
    net = _net()
    decay, rest = split_parameters(net)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=0.01)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        net(torch.randn(8, 4, generator=g)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert torch.allclose(ours, net[0].weight.detach(), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_optimizer_builds_steps_and_round_trips_its_state(kind):
    recipe = load_recipe(None, {"optimizer.kind": kind})
    net = _net()
    opt = build_optimizer(net, recipe.optimizer, CPU)
    x = torch.randn(8, 4)
    for _ in range(2):
        net(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    tensors, meta = optimizer_to_flat(opt)
    twin = _net()
    twin.load_state_dict(net.state_dict())
    opt2 = build_optimizer(twin, recipe.optimizer, CPU)
    opt2.load_state_dict(optimizer_from_flat({k: v.clone() for k, v in tensors.items()}, meta))
    for model, o in ((net, opt), (twin, opt2)):
        model(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(float(net[0].weight.detach().sum()))


def test_fused_kernels_are_used_where_they_exist():
    net = _net()
    assert build_optimizer(net, load_recipe().optimizer, CPU).defaults["fused"] is True
    assert build_optimizer(net, load_recipe(None, {"optimizer.kind": "rmsprop"}).optimizer, CPU).defaults["foreach"]
