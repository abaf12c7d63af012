"""Probes: statistics against hand computations, hooks against PyTorch's own gradients, and no
effect of the probes on the training itself."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainwell.api import fit
from trainwell.build import build_network
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe
from trainwell.watch.probes import ProbeCallback, activation_stats, row_spread

floats = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 9)), elements=floats))
def test_activation_stats_match_numpy(a):
    t = torch.from_numpy(a)
    th = np.tanh(a)
    s = activation_stats(torch.tanh(t), "tanh")
    assert float(s["saturated"]) == pytest.approx(np.mean(np.abs(th) > 0.97), abs=1e-6)
    assert float(s["mean"]) == pytest.approx(th.mean(), abs=1e-5)
    assert float(s["std"]) == pytest.approx(th.std(), abs=1e-5)
    sg = 1 / (1 + np.exp(-a))
    s = activation_stats(torch.sigmoid(t), "sigmoid")
    assert float(s["saturated"]) == pytest.approx(np.mean((sg < 0.03) | (sg > 0.97)), abs=1e-6)
    r = np.maximum(a, 0)
    s = activation_stats(torch.relu(t), "relu")
    assert float(s["dead"]) == pytest.approx(np.mean(~(r > 0).any(0)), abs=1e-6)
    assert int(s["hist"].sum()) == a.size


def test_dead_units_of_a_feature_map_are_channels():
    a = torch.ones(4, 3, 5, 5)
    a[:, 1] = 0.0                              # channel 1 never fires on any row or position
    assert float(activation_stats(a, "relu")["dead"]) == pytest.approx(1 / 3)


def test_row_spread_is_zero_only_for_identical_rows():
    assert float(row_spread(torch.zeros(5, 3))) == 0.0
    assert float(row_spread(torch.full((4, 7), 0.3))) == pytest.approx(0.0, abs=1e-7)
    w = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert float(row_spread(w)) > 0.5


def test_update_ratio_and_grad_norm_match_a_plain_sgd_step(tiny):
    # One batch per epoch, one epoch, SGD without momentum: W1 = W0 - lr * g exactly, so the probe's
    # update ratio must equal lr * ||g|| / ||W0|| with ||g|| the probe's own gradient norm.
    over = {**tiny, "train.epochs": 1, "train.batch_size": 120, "optimizer.kind": "sgd", "optimizer.lr": 0.1,
            "model.dropout": 0.0}
    run = fit(out=False, quiet=True, **over)
    probes = next(cb for cb in run.extras["trainer"].callbacks if isinstance(cb, ProbeCallback))
    rec = probes.epochs[0]
    assert rec["samples"] == 1
    recipe = load_recipe(None, over)
    w0, _ = build_network(recipe, prepare_data(recipe).dataset)
    for name, layer in w0.named_children():
        if isinstance(layer, torch.nn.Linear):
            stats = rec["weights"][name]
            norm0 = float(layer.weight.detach().norm())
            assert stats["update_ratio"] == pytest.approx(0.1 * stats["grad_norm"] / norm0, rel=1e-4)
            assert stats["weight_norm"] == pytest.approx(float(run.model.get_submodule(name).weight.detach().norm()),
                                                         rel=1e-5)


def test_grad_norm_is_the_weight_gradient_of_the_probed_batch():
    # Oracle: torch autograd on the same batch with the same weights.
    from trainwell.build import build
    from trainwell.data.sources import make_dataset
    from trainwell.loop import SplitTensors, Trainer
    from trainwell.prepare import Prepared

    recipe = load_recipe(None, {"data.source": "moons", "data.n_samples": 100, "model.hidden": [8],
                                "model.norm": "none", "model.dropout": 0.0, "train.epochs": 1,
                                "train.batch_size": 60, "optimizer.kind": "sgd", "optimizer.lr": 0.01,
                                "schedule.kind": "constant", "stopping.monitor": "train_loss",
                                "loss.kind": "cross_entropy"})
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(60, 2), torch.randint(0, 2, (60,))
    loss_fn = torch.nn.CrossEntropyLoss()
    ref = [p.detach().clone() for p in net.parameters()]
    probe = ProbeCallback(every=1)
    data = Prepared(make_dataset(x.numpy(), y.numpy(), "auto", name="data"), SplitTensors(x, y), None, None,
                    None, {})
    Trainer(build(recipe, data, torch.device("cpu"), model=net), callbacks=[probe]).fit()
    clone = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        for p, r in zip(clone.parameters(), ref):
            p.copy_(r)
    loss_fn(clone(x), y).backward()   # the one batch is the whole (shuffled) set: same mean gradient
    rec = probe.epochs[0]
    assert rec["weights"]["0"]["grad_norm"] == pytest.approx(float(clone[0].weight.grad.norm()), rel=1e-4)
    assert rec["weights"]["2"]["grad_norm"] == pytest.approx(float(clone[2].weight.grad.norm()), rel=1e-4)
    h = torch.tanh(clone[0](x))
    assert rec["activations"]["1"]["mean"] == pytest.approx(float(h.detach().mean()), abs=1e-5)


def test_probes_do_not_change_the_run(tiny, tmp_path):
    on = fit(out=tmp_path / "on", quiet=True, **tiny, **{"watch.probe_every": 1})
    off = fit(out=tmp_path / "off", quiet=True, **tiny, **{"watch.probes": False})
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in on.history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in off.history]
    data = json.loads((tmp_path / "on" / "probes.json").read_text())
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    assert [w["name"] for w in data["weighted"]] == ["fc1", "head"]
    assert not (tmp_path / "off" / "probes.json").exists()
    # every step probed: 120 training rows / 32 = 4 steps per epoch
    assert all(e["samples"] == 4 for e in data["epochs"])


def test_probe_interval_counts_steps(tiny):
    run = fit(out=False, quiet=True, **{**tiny, "watch.probe_every": 3, "train.epochs": 2})
    probes = next(cb for cb in run.extras["trainer"].callbacks if isinstance(cb, ProbeCallback))
    # 4 steps per epoch; epoch 1 probes steps 1 (epoch start) and 4 (after step 3);
    # epoch 2 probes steps 5 (epoch start) and 7 (after step 6).
    assert [e["samples"] for e in probes.epochs] == [2, 2]


def test_tensorboard_export(tiny, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(out=tmp_path, quiet=True, **tiny, **{"watch.tensorboard": True})
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(
        [r["train_loss"] for r in json_rows(tmp_path)], rel=1e-6)
    assert "weights/fc1/grad_norm" in tags["scalars"]
    assert "activations/act1" in tags["histograms"] and "weights/fc1.weight" in tags["histograms"]


def json_rows(run_dir):
    from trainwell.rundir import read_history

    return read_history(run_dir / "history.csv")
