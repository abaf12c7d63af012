"""Every path that trains builds its Setup with build.py and steps with step.train_step."""

import dataclasses

import pytest
import torch

import trainwell as tw
from trainwell import step
from trainwell.build import build
from trainwell.labs.lr_range import range_test
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe
from trainwell.watch.overfit_batch import overfit_batch

SMALL = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16], "train.batch_size": 32,
         "watch.probes": False, "watch.doctor": False, "watch.report": False}


@pytest.fixture
def steps(monkeypatch):
    """Counts optimizer steps taken through step.py."""
    calls = []
    real = step.optimizer_step

    def counted(setup, **kw):
        calls.append(setup)
        return real(setup, **kw)

    monkeypatch.setattr(step, "optimizer_step", counted)
    return calls


def test_fit_the_lr_range_test_and_the_overfit_check_all_step_through_train_step(steps):
    recipe = load_recipe(None, {**SMALL, "train.accumulate": 2, "train.epochs": 2})
    run = tw.fit(recipe, out=False, quiet=True)
    assert len(steps) == run.extras["trainer"].state.step == 2 * run.extras["trainer"].setup.steps_per_epoch
    steps.clear()
    range_test(recipe, steps=12)
    assert len(steps) == 12                      # one optimizer step per `accumulate` batches
    steps.clear()
    overfit_batch(recipe, steps=7)
    assert len(steps) == 7


def test_the_range_test_measures_the_runs_own_step_clipping_included():
    base = load_recipe(None, {**SMALL, "optimizer.kind": "sgd"})
    free = range_test(base, steps=15)
    clipped = range_test(base.replace(**{"train.clip_value": 1e-6}), steps=15)
    assert free.losses[0] == clipped.losses[0]          # the same first batch and weights
    assert abs(clipped.losses[-1] - clipped.losses[0]) < abs(free.losses[-1] - free.losses[0])


def test_build_is_deterministic_and_its_setup_frozen():
    recipe = load_recipe(None, {**SMALL, "schedule.warmup_epochs": 1.0})
    device = torch.device("cpu")
    a, b = (build(recipe, prepare_data(recipe), device) for _ in range(2))
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), name
    assert [a.lr(s) for s in range(0, a.total_steps, 3)] == [b.lr(s) for s in range(0, b.total_steps, 3)]
    assert a.lr(0)[0] == pytest.approx(recipe.optimizer.lr * recipe.schedule.warmup_start_factor)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.model = b.model
