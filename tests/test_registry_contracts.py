"""Contract tests over every registry: each entry builds from its recipe section and takes a step;
each round-trips its state through a mid-run checkpoint and resumes bitwise; normalizers and model
kinds also on their own."""

from __future__ import annotations

import json
import random
from typing import get_args

import pytest
import torch
from crash import Crash
from crash import crash_at_step as _crash_at_step

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell import recipe as R
from trainwell.build import build
from trainwell.data.normalize import NORMALIZERS, make_normalizer
from trainwell.init import init_model_
from trainwell.models import MODELS, build_model
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe
from trainwell.recipe_errors import section_members
from trainwell.rundir import read_history
from trainwell.step import train_step


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


# ------------------------------------------------------------------------------ every registry, end to end
# Each entry a recipe can name: the optimizers, schedules, losses, init schemes and model kinds of
# the schema's choices, every augmentation, every [train.average] kind, every normalizer and the
# stateful components (early stopping, plateau, the NaN guard's rollback, the balanced sampler).
# Read from the schema, so an entry added there is covered here without editing this file.
IMAGES = {"data.source": "shapes", "data.n_samples": 120, "data.image_size": 8,
          "model": {"kind": "cnn", "channels": [4, 8]}}
REGRESSION = {"data.source": "polynomial", "data.features": 3, "data.n_samples": 120}
AUGMENT_ON = {"crop_padding": 2, "hflip": 0.5, "vflip": 0.5, "noise_std": 0.1, "cutout_size": 3,
              "mixup_alpha": 0.2, "cutmix_alpha": 0.2}
AUGMENT_MODIFIERS = {"crop_mode", "mix_prob"}            # they change a step above, not steps of their own
IMAGE_ONLY = {"crop_padding", "hflip", "vflip", "cutout_size", "cutmix_alpha"}
AVERAGE_ON = {"none": {}, "ema": {"decay": 0.8}, "swa": {"start_epoch": 2, "lr": 0.01},
              "snapshots": {"count": 2}, "ensemble": {"members": 2}}
RESTARTS = {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 1}


def _kinds(field: str, model=R.Recipe) -> list[str]:
    return [k for m in section_members(model.model_fields[field])
            for k in get_args(m.model_fields["kind"].annotation)]


def _choices(model, field: str) -> list[str]:
    return list(get_args(model.model_fields[field].annotation))


def registry_entries() -> list[tuple[str, dict]]:
    out = [(f"optimizer={k}", {"optimizer.kind": k}) for k in _kinds("optimizer")]
    out += [(f"schedule={k}", {"schedule.kind": k}) for k in _kinds("schedule")]
    out += [(f"loss={k}", {"loss.kind": k, **(REGRESSION if k in ("mse", "mae", "huber") else {})})
            for k in _choices(R.LossSection, "kind")]
    out += [(f"init={k}", {"init.weights": k}) for k in _choices(R.InitSection, "weights")]
    # model.kind = "custom" records a module passed from Python; the recipe cannot build it
    # (tests/test_custom_model.py and the refusals in tests/test_bad_input.py cover it).
    out += [(f"model={k}", {"model.kind": k, **(IMAGES if k == "cnn" else {})}) for k in _kinds("model")
            if k != "custom"]
    out += [(f"normalize={k}", {"data.normalize": k, **(IMAGES if k == "per_channel" else {})})
            for k in _choices(R.DataSection, "normalize")]
    out += [(f"augment={k}", {f"data.augment.{k}": v, **(IMAGES if k in IMAGE_ONLY else {})})
            for k, v in AUGMENT_ON.items()]
    out += [(f"average={k}", {"train.average": {"kind": k, **AVERAGE_ON[k]}, **(RESTARTS if k == "snapshots" else {})})
            for k in _kinds("average", R.TrainSection)]
    out += [("component=stopper", {"stopping.enabled": True, "stopping.patience": 1}),
            ("component=plateau", {"schedule.kind": "reduce_on_plateau", "schedule.patience": 0}),
            ("component=guard-rollback", {"watch.on_nan": "rollback"}),
            ("sampler=balanced", {"train.sampler": "balanced"})]
    return out


ENTRIES = registry_entries()
BASE = {"data.source": "moons", "data.n_samples": 120, "model.hidden": [8], "train.batch_size": 16,
        "train.epochs": 2, "train.threads": 1, "stopping.enabled": False, "checkpoint.every_steps": 2,
        "watch.doctor": False, "watch.report": False, "watch.probes": False}


def sampled(entries: list[tuple[str, dict]], fast: int, seed: int = 16) -> list:
    """Every entry as a test case; `fast` of them (a fixed seeded sample) run by default, the rest
    are marked slow (`make test` runs them all)."""
    chosen = set(random.Random(seed).sample(range(len(entries)), fast))
    return [pytest.param(*e, id=e[0], marks=() if k in chosen else (pytest.mark.slow,)) for k, e in enumerate(entries)]


def test_the_entries_cover_every_augmentation_and_average_kind():
    """A new augmentation step or averaging kind needs its "on" setting here (the rest is read from the schema)."""
    assert set(R.AugmentSection.model_fields) - AUGMENT_MODIFIERS == set(AUGMENT_ON)
    assert set(_kinds("average", R.TrainSection)) == set(AVERAGE_ON)
    assert len({name for name, _ in ENTRIES}) == len(ENTRIES) > 50


@pytest.mark.parametrize("name, overrides", ENTRIES, ids=[n for n, _ in ENTRIES])
def test_every_entry_builds_from_its_section_and_steps(name, overrides):
    recipe = load_recipe(None, {**BASE, **overrides})
    prepared = prepare_data(recipe)
    setup = build(recipe, prepared, torch.device("cpu"))
    before = [p.detach().clone() for p in setup.params]
    data = setup.train
    result = train_step(setup, data.x[:16], data.y[:16])
    assert bool(torch.isfinite(result.loss)) and result.norm is not None and bool(torch.isfinite(result.norm))
    if recipe.init.weights != "zeros":          # all-zero weights pass no gradient to hidden layers
        assert any(not torch.equal(a, p) for a, p in zip(before, setup.params)), "the step moved nothing"




def _final(run_dir) -> tuple[dict, list, dict]:
    tensors, _ = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run_dir / "history.csv")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("environment")
    return tensors, history, metrics


# 72 training rows in batches of 16: 5 optimizer steps per epoch; `last` every 2 steps. The crash
# comes at the 8th step (epoch 2, after the mid-epoch checkpoint at step 6).
@pytest.mark.parametrize("name, overrides", sampled(ENTRIES, fast=8))
def test_every_entry_round_trips_a_mid_run_checkpoint_and_resumes_bitwise(name, overrides, tmp_path, monkeypatch):
    recipe = load_recipe(None, {**BASE, **overrides})
    reference = tw.fit(recipe, out=tmp_path / "reference", quiet=True)
    with monkeypatch.context() as m:
        _crash_at_step(m, 8)
        with pytest.raises(Crash):
            tw.fit(recipe, out=tmp_path / "crashed", quiet=True)
    _, meta = ckpt.load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.safetensors")
    assert meta["cursor"] is not None and meta["step"] == 6        # saved inside epoch 2
    trainer = reference.extras["trainer"]
    assert all(name in meta for name in trainer.setup.components)        # each component under its name
    assert {type(cb).__name__ for cb in trainer.callbacks if cb.state_dict()} <= set(meta["callbacks"])
    resumed = tw.resume(tmp_path / "crashed", quiet=True)
    ta, ha, ma = _final(tmp_path / "reference")
    tb, hb, mb = _final(tmp_path / "crashed")
    assert ta.keys() == tb.keys()
    for key in ta:              # weights, optimizer state, best weights, every RNG, every component's tensors
        assert torch.equal(ta[key], tb[key]), key
    assert ha == hb and ma == mb
    for (k, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
