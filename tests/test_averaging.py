"""SWA and EMA of weights: against SWALR, hand-computed means, the EMA recursion and batch statistics."""

import json
import types
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim.swa_utils import SWALR

import trainwell as tw
from trainwell.averaging import WeightAveraging
from trainwell.data.sources import load_source
from trainwell.loop import Callback
from trainwell.recipe import load_recipe
from trainwell.schedules import swa_lr

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False}


@given(st.floats(1e-4, 1.0), st.floats(1e-4, 1.0), st.integers(0, 12), st.sampled_from(["cos", "linear"]),
       st.integers(0, 7))
@settings(max_examples=80, deadline=None)
def test_swa_lr_matches_torch_swalr_stepped_every_step(lr_start, target, anneal, strategy, start):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr_start)
    sched = SWALR(opt, swa_lr=target, anneal_epochs=anneal, anneal_strategy=strategy)
    for step in range(start, start + anneal + 5):
        ours = swa_lr(step, start_step=start, anneal_steps=anneal, lr_start=lr_start, swa_lr=target,
                      strategy=strategy)
        assert ours == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()


class Recorder(Callback):
    """Copies of the weights (and buffers) after every optimizer step and at every epoch's end."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def step_end(self, trainer):
        self.steps.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})

    def epoch_end(self, trainer, row):
        self.epochs.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def _params(states, model):
    names = [n for n, _ in model.named_parameters()]
    return {n: torch.stack([s[n] for s in states]) for n in names}


def test_swa_weights_are_the_mean_of_the_weights_at_the_averaging_epochs(tiny):
    rec = Recorder()
    run = tw.fit(out=False, quiet=True, callbacks=[rec], **{**tiny, **QUIET,
                    "train.epochs": 5, "train.swa.start_epoch": 3, "train.swa.lr": 0.002,
                    "stopping.enabled": False, "model.norm": "none"})
    assert run.metrics["model"] == "swa" and run.metrics["swa"]["epochs"] == [3, 4, 5]
    stacked = _params(rec.epochs[2:], run.model)         # the weights at the ends of epochs 3, 4, 5
    for name, p in run.model.named_parameters():
        torch.testing.assert_close(p.detach(), stacked[name].mean(0), rtol=1e-5, atol=1e-6)


def test_swa_phase_runs_at_the_swa_learning_rate_after_annealing(tiny):
    run = tw.fit(out=False, quiet=True, **{**tiny, **QUIET,
                    "train.epochs": 6, "train.swa.start_epoch": 3, "train.swa.lr": 0.002,
                    "train.swa.anneal_epochs": 1, "stopping.enabled": False, "schedule.kind": "constant",
                    "optimizer.lr": 0.01})
    lrs = [r["lr"] for r in run.history]
    assert lrs[:2] == pytest.approx([0.01, 0.01])       # the schedule's rate before the SWA phase
    assert lrs[2:] == pytest.approx([0.002] * 4)        # annealed over one epoch, then kept


def test_ema_matches_the_closed_form_recursion_buffers_included(tiny):
    decay = 0.9
    rec = Recorder()
    run = tw.fit(out=False, quiet=True, callbacks=[rec], **{**tiny, **QUIET,
                    "train.ema_decay": decay, "stopping.enabled": False, "model.norm": "batch"})
    ema = dict(rec.steps[0])
    for state in rec.steps[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * state[k] if v.is_floating_point() else v
               for k, v in state.items()}
    got = run.model.state_dict()
    assert any("running_mean" in k for k in got)
    for k, v in ema.items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-6)
    assert run.metrics["ema"]["n_averaged"] == len(rec.steps)


def test_update_bn_recomputes_the_batch_statistics_of_the_averaged_weights(tiny):
    run = tw.fit(out=False, quiet=True, **{**tiny, **QUIET,
                    "train.epochs": 4, "train.swa.start_epoch": 2, "stopping.enabled": False,
                    "model.norm": "batch", "model.dropout": 0.0})
    model, x = run.model, run.extras["data"].train.x
    assert run.metrics["swa"]["update_bn"] is True
    w = model.fc1.weight.detach()
    means, variances = [], []
    for i in range(0, len(x), 32):                       # train.batch_size = 32, rows in order
        h = x[i:i + 32] @ w.T
        means.append(h.mean(0))
        variances.append(h.var(0, unbiased=True))
    # update_bn's cumulative average: equal weight per batch
    torch.testing.assert_close(model.norm1.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.norm1.running_var, torch.stack(variances).mean(0), rtol=1e-4, atol=1e-5)
    plain = run.extras["trainer"].best_state     # the last epoch's own statistics are not the average's
    assert not torch.allclose(plain["norm1.running_mean"], model.norm1.running_mean, atol=1e-3)


def test_swa_that_never_started_keeps_the_plain_model_and_says_why(tiny):
    run = tw.fit(out=False, quiet=True, **{**tiny, **QUIET,
                    "train.swa.start_epoch": 3, "stopping.monitor": "train_loss",
                    "stopping.stopping_threshold": 100.0})
    assert run.metrics["model"] == "plain" and "plain" not in run.metrics
    assert run.metrics["swa"]["n_averaged"] == 0
    assert "stopped at epoch 1" in run.metrics["swa"]["reason"]
    assert run.model is run.extras["trainer"].model


def test_averaged_model_is_saved_reported_and_used_by_predict(tiny, tmp_path):
    from trainwell.predict import predict

    run = tw.fit(out=tmp_path / "run", quiet=True, **tiny, **QUIET, **{"train.ema_decay": 0.8})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "ema" and metrics["ema"]["checkpoint"] == "checkpoints/averaged.safetensors"
    assert metrics["test"] == metrics["ema"]["test"] != metrics["plain"]["test"]
    data = run.extras["data"]
    assert metrics["test"] == run.extras["trainer"].evaluate(data.test, run.model)
    rows = load_source(run.recipe.data, run.recipe.seed).x[data.indices["test"]]
    frame = predict(tmp_path / "run", rows)
    with torch.inference_mode():
        expected = torch.sigmoid(run.model(data.test.x)).squeeze(1).numpy()
    np.testing.assert_allclose(frame["prob_1"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_a_fresh_averager_loaded_mid_run_continues_identically(kind):
    recipe = load_recipe(None, {"train.ema_decay": 0.7} if kind == "ema" else {"train.swa.start_epoch": 1})
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    trainer = types.SimpleNamespace(model=model, state=types.SimpleNamespace(epoch=0, step=0))
    gen = torch.Generator().manual_seed(0)

    def move():                     # stands in for an optimizer step and a training forward pass
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        model(torch.randn(8, 3, generator=gen))
        trainer.state.epoch += 1
        trainer.state.step += 1

    a = WeightAveraging.from_recipe(recipe)
    a.fit_start(trainer)
    for _ in range(3):
        move()
        a.step_end(trainer)
        a.epoch_end(trainer, {"train_loss": 1.0})
    b = WeightAveraging.from_recipe(recipe)
    b.load_state_dict(a.state_dict())
    b.fit_start(trainer)
    for _ in range(3):
        move()
        for cb in (a, b):
            cb.step_end(trainer)
            cb.epoch_end(trainer, {"train_loss": 1.0})
    for (k, va), vb in zip(a.averaged.state_dict().items(), b.averaged.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.epochs == b.epochs


@pytest.mark.parametrize("overrides, message", [
    ({"train.ema_decay": 0.9, "train.swa.start_epoch": 2},
     "train.ema_decay: cannot be combined with train.swa.start_epoch"),
    ({"train.swa.start_epoch": 50, "train.epochs": 40},
     "train.average.start_epoch: got 50, after the last epoch (train.epochs = 40)"),
    ({"train.average": {"kind": "swa", "start_epoch": 50}, "train.epochs": 40},
     "train.average.start_epoch: got 50, after the last epoch (train.epochs = 40)"),
    ({"train.ema_decay": 1.0}, "train.average.decay"),
    ({"train.average": {"kind": "ema", "decay": 1.0}}, "train.average.decay"),
    ({"train.swa.start_epoch": 3, "train.swa.lr": 0}, "train.average.lr"),
    ({"train.average": {"kind": "swa", "lr": 0}}, "train.average.lr"),
    ({"train.ema_decay": 0.9, "train.average": {"kind": "swa"}},
     "train.ema_decay: cannot be combined with train.average.kind = 'swa'"),
])
def test_averaging_keys_are_validated(overrides, message):
    with pytest.raises(tw.RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(None, overrides)


def test_an_average_started_after_a_resume_without_its_state_says_so():
    recipe = load_recipe(None, {"train.ema_decay": 0.9})
    trainer = types.SimpleNamespace(model=torch.nn.Linear(2, 1), state=types.SimpleNamespace(epoch=3, step=30))
    fresh = WeightAveraging.from_recipe(recipe)
    fresh.fit_start(trainer)
    assert fresh.note.startswith("resumed at epoch 3 without the average's state")
    restored = WeightAveraging.from_recipe(recipe)
    restored.load_state_dict(fresh.state_dict())
    restored.fit_start(trainer)
    assert restored.note is None


@pytest.mark.parametrize("extra", [{"train.ema_decay": 0.9}, {"train.swa.start_epoch": 2, "train.swa.lr": 0.005}])
def test_a_resumed_run_averages_exactly_like_an_uninterrupted_one(tiny, tmp_path, extra):
    base = {**tiny, **QUIET, "schedule.kind": "constant", "stopping.enabled": False, **extra}
    full = tw.fit(out=tmp_path / "full", quiet=True, **{**base, "train.epochs": 4})
    tw.fit(out=tmp_path / "part", quiet=True, **{**base, "train.epochs": 2})
    resumed = tw.resume(tmp_path / "part", quiet=True, **{"train.epochs": 4})
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    kind = "ema" if "train.ema_decay" in extra else "swa"
    assert resumed.metrics[kind] == full.metrics[kind] and "note" not in resumed.metrics[kind]
    assert resumed.metrics["test"] == full.metrics["test"]


# ------------------------------------------------------------------------------ [train.average]: one tagged choice
SNAPSHOT_SCHEDULE = {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 2}


@pytest.mark.parametrize("old, new", [
    ({"train.ema_decay": 0.9}, {"kind": "ema", "decay": 0.9}),
    ({"train.swa.start_epoch": 3, "train.swa.lr": 0.01, "train.swa.anneal_strategy": "linear"},
     {"kind": "swa", "start_epoch": 3, "lr": 0.01, "anneal_strategy": "linear"}),
    ({**SNAPSHOT_SCHEDULE, "train.snapshots": 2}, {"kind": "snapshots", "count": 2}),
    ({"train.ensemble.members": 3, "train.ensemble.method": "bagging"},
     {"kind": "ensemble", "members": 3, "method": "bagging"}),
    ({"train.ema_decay": 0.0, "train.snapshots": 0, "train.ensemble.members": 1}, {"kind": "none"}),
], ids=["ema", "swa", "snapshots", "ensemble", "all-off"])
def test_old_averaging_keys_read_as_the_tagged_choice_with_one_deprecation_line(old, new):
    schedule = {k: v for k, v in old.items() if k.startswith("schedule.")}
    with pytest.warns(tw.RecipeDeprecation) as seen:
        got = load_recipe(None, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # the new form warns about nothing
        want = load_recipe(None, {**schedule, "train.average": new})
    assert got == want
    assert len(seen) == 1
    line = str(seen[0].message)
    assert "\n" not in line
    assert all(f"train.{k.split('.')[1]}" in line for k in old if k.startswith("train."))
    assert f'kind = "{new["kind"]}"' in line and "deprecated" in line


@pytest.mark.parametrize("old_space, extra, new_kind, new_space", [
    ({"train.ema_decay": {"uniform": [0.9, 0.99]}}, {}, "ema", {"train.average.decay": {"uniform": [0.9, 0.99]}}),
    ({"train": {"swa": {"lr": {"log_uniform": [1e-3, 1e-1]}, "start_epoch": {"int": [2, 3]}}}}, {}, "swa",
     {"train.average.lr": {"log_uniform": [1e-3, 1e-1]}, "train.average.start_epoch": {"int": [2, 3]}}),
    ({"train.snapshots": {"choice": [2, 3]}, "optimizer.lr": {"log_uniform": [1e-3, 1e-1]}},
     {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 2, "train.epochs": 6}, "snapshots",
     {"train.average.count": {"choice": [2, 3]}, "optimizer.lr": {"log_uniform": [1e-3, 1e-1]}}),
    ({"train.ensemble.members": {"int": [2, 4]}}, {}, "ensemble", {"train.average.members": {"int": [2, 4]}}),
], ids=["ema", "swa-nested", "snapshots", "ensemble"])
def test_a_search_space_naming_old_averaging_keys_searches_the_new_ones(old_space, extra, new_kind, new_space):
    """The space's old keys are read as [train.average] keys, with the kind they switched on, and one
    deprecation line like a recipe's; the recipe equals the one written in the new form."""
    with pytest.warns(tw.RecipeDeprecation) as seen:
        got = load_recipe(None, {**extra, "search": {"space": old_space}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = load_recipe(None, {**extra, "train.average": {"kind": new_kind}, "search": {"space": new_space}})
    assert got == want and got.train.average.kind == new_kind
    assert len(seen) == 1
    line = str(seen[0].message)
    assert "\n" not in line and "deprecated" in line and f'[train.average] kind = "{new_kind}"' in line
    for key in new_space:
        if key.startswith("train."):
            assert f"search.space.{key}" in line


def test_old_space_keys_keep_a_given_kind_of_their_own_and_refuse_another():
    space = {"search": {"space": {"train.ema_decay": {"uniform": [0.9, 0.99]}}}}
    with pytest.warns(tw.RecipeDeprecation):
        same = load_recipe(None, {**space, "train.average": {"kind": "ema", "decay": 0.95}})
    assert same.train.average.decay == 0.95 and set(same.search.space) == {"train.average.decay"}
    with pytest.raises(tw.RecipeError) as err:
        load_recipe(None, {**space, "train.average": {"kind": "swa"}})
    assert str(err.value).count("\n") == 0
    assert "search.space.train.ema_decay: cannot be combined with train.average.kind = 'swa'" in str(err.value)
    with pytest.raises(tw.RecipeError, match="search.space.train.swa.lr: cannot be combined with "
                                             "search.space.train.ema_decay"):
        load_recipe(None, {"search": {"space": {"train.ema_decay": {"uniform": [0.9, 0.99]},
                                                "train.swa.lr": {"uniform": [0.01, 0.1]}}}})


def test_an_older_run_folders_resolved_recipe_still_loads(tmp_path):
    """A recipe.toml written before [train.average]: every old key present at its default."""
    raw = load_recipe(None).to_dict()
    del raw["train"]["average"]
    raw["train"].update(ema_decay=0.0, snapshots=0, ensemble={"members": 1, "method": "seeds"},
                        swa={"lr": None, "anneal_epochs": 1, "anneal_strategy": "cos", "update_bn": True})
    with pytest.warns(tw.RecipeDeprecation, match=r"train.ema_decay, train.snapshots, train.ensemble, train.swa: deprecated"):
        recipe = load_recipe(raw)
    assert recipe.train.average.kind == "none"
    assert recipe == load_recipe(None)


def test_the_cli_prints_the_deprecation_as_one_line(capsys):
    from trainwell.cli import main

    with warnings.catch_warnings():      # a fresh process shows it; here an earlier test may have shown it already
        warnings.simplefilter("always", tw.RecipeDeprecation)
        assert main(["recipe", "--set", "train.ema_decay=0.9"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['trainwell: warning: train.ema_decay: deprecated, read as [train.average] kind = "ema", '
                   'decay = 0.9; write that instead (trainwell recipe prints the new form)']


@pytest.mark.parametrize("epochs, start", [(40, 31), (10, 9), (4, 4), (1, 1)])
def test_swa_starts_in_the_last_quarter_when_no_start_epoch_is_given(epochs, start):
    recipe = load_recipe(None, {"train.epochs": epochs, "train.average": {"kind": "swa"}})
    assert recipe.train.average.start_epoch == start
    assert load_recipe(recipe.to_dict()) == recipe            # the resolved recipe says it explicitly


@pytest.mark.parametrize("extra, files, tensors", [
    ({}, ["checkpoints/best.safetensors"], "model"),
    ({"stopping.restore_best": False}, ["checkpoints/last.safetensors"], "model"),
    ({"checkpoint.best": False}, ["checkpoints/last.safetensors"], "best"),
    ({"train.average": {"kind": "ema", "decay": 0.8}}, ["checkpoints/averaged.safetensors"], "model"),
    ({"train.average": {"kind": "swa", "start_epoch": 3}, "stopping.enabled": True, "stopping.monitor": "train_loss",
      "stopping.stopping_threshold": 100.0}, ["checkpoints/best.safetensors"], "model"),
    ({"train.average": {"kind": "ensemble", "members": 2}},
     ["checkpoints/member-1.safetensors", "checkpoints/member-2.safetensors"], "model"),
], ids=["plain", "last-epoch", "best-in-last", "ema", "swa-never-started", "ensemble"])
def test_the_finisher_tells_predict_which_weights_the_run_scored(tiny, tmp_path, extra, files, tensors):
    """metrics.json "weights" names the files of the returned model; predict serves exactly that model,
    and a folder without the entry (an older version) is read by file name to the same answer."""
    from trainwell.predict import predict

    run = tw.fit(out=tmp_path / "run", quiet=True, **{**tiny, **QUIET, "stopping.enabled": False, **extra})
    pointer = run.metrics["weights"]
    assert pointer == {"files": files, "tensors": tensors, "ensemble": len(files) > 1}
    data = run.extras["data"]
    rows = load_source(run.recipe.data, run.recipe.seed).x[data.indices["test"]]
    with torch.inference_mode():
        expected = torch.sigmoid(run.model.eval()(data.test.x)).squeeze(1).numpy()
    frame = predict(tmp_path / "run", rows)
    np.testing.assert_allclose(frame["prob_1"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["weights"] == pointer
    del metrics["weights"]
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(metrics))
    np.testing.assert_allclose(predict(tmp_path / "run", rows)["prob_1"].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_recipe_with_the_old_keys_resumes_under_the_new_ones():
    """A run started before [train.average]: its checkpoint's recipe names train.ema_decay; resuming it
    with today's recipe.toml finds no difference, and a real change is still listed."""
    from trainwell.resuming import recipe_differences

    recipe = load_recipe(None, {"train.average": {"kind": "ema", "decay": 0.9}})
    saved = recipe.to_dict()
    del saved["train"]["average"]
    saved["train"].update(ema_decay=0.9, snapshots=0, ensemble={"members": 1, "method": "seeds"},
                          swa={"start_epoch": None, "lr": None})
    assert recipe_differences(saved, recipe) == []
    other = load_recipe(None, {"train.average": {"kind": "ema", "decay": 0.8}})
    assert recipe_differences(saved, other) == ["train.average.decay: 0.9 -> 0.8"]
