"""CNN builder and DropConnect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainwell.errors import RecipeError
from trainwell.models import DropConnectLinear, build_model
from trainwell.recipe import load_recipe


def cnn(**kw):
    return load_recipe(None, {"model.kind": "cnn", **{f"model.{k}": v for k, v in kw.items()}}).model


def test_cnn_blocks_in_order():
    net = build_model(cnn(channels=[4, 8, 16], pool="max", dropout=0.2), (3, 16, 16), 5)
    names = [n for n, _ in net.named_children()]
    assert names == ["conv1", "norm1", "act1", "pool1", "conv2", "norm2", "act2", "pool2", "conv3", "norm3",
                     "act3", "gap", "flatten", "drop", "head"]
    assert isinstance(net.norm1, nn.BatchNorm2d) and net.conv1.bias is None
    assert net.conv1.in_channels == 3 and net.conv3.out_channels == 16 and net.head.in_features == 16
    assert net(torch.randn(7, 3, 16, 16)).shape == (7, 5)


def test_cnn_without_norm_or_pool_keeps_the_size():
    net = build_model(cnn(channels=[6], norm="none", pool="none", kernel_size=5), (1, 9, 7), 2)
    assert net.conv1.bias is not None and net.conv1.padding == (2, 2)
    feats = nn.Sequential(*list(net.children())[:2])
    assert feats(torch.randn(2, 1, 9, 7)).shape == (2, 6, 9, 7)


def test_cnn_refuses_tabular_rows_and_too_many_pools():
    with pytest.raises(ValueError, match=r"model.kind: cnn needs images \(N, C, H, W\), the data has rows of "
                       r"shape \(64,\)"):
        build_model(cnn(), (64,), 10)
    with pytest.raises(ValueError, match=r"model.channels: 4 blocks pool a 4-pixel image 3 times"):
        build_model(cnn(channels=[2, 2, 2, 2]), (1, 4, 4), 2)
    with pytest.raises(RecipeError, match=r"model.kernel_size: got 4, must be odd"):
        cnn(kernel_size=4)


def test_dropconnect_drops_weights_and_scales_them():
    torch.manual_seed(0)
    layer = DropConnectLinear(200, 300, p=0.3)
    x = torch.eye(200)                                  # row i of the output reads column i of W
    layer.train()
    w_used = (layer(x) - layer.bias).T                  # the weights that were used, (out, in)
    dropped = w_used == 0
    assert abs(float(dropped.float().mean()) - 0.3) < 0.01
    kept = ~dropped
    torch.testing.assert_close(w_used[kept], layer.weight.detach()[kept] / 0.7)
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_dropconnect_expectation_is_the_eval_output():
    torch.manual_seed(1)
    layer = DropConnectLinear(8, 3, p=0.5)
    x = torch.randn(4, 8)
    with torch.no_grad():
        mean = torch.stack([layer(x) for _ in range(4000)]).mean(0)
        layer.eval()
        torch.testing.assert_close(mean, layer(x), atol=0.05, rtol=0)


def test_mlp_dropconnect_flag():
    section = load_recipe(None, {"model.dropconnect": 0.25, "model.hidden": [16, 8]}).model
    net = build_model(section, (10,), 3)
    assert isinstance(net.fc1, DropConnectLinear) and isinstance(net.fc2, DropConnectLinear)
    assert net.fc1.p == 0.25 and type(net.head) is nn.Linear
    plain = build_model(load_recipe(None).model, (10,), 3)
    assert type(plain.fc1) is nn.Linear
