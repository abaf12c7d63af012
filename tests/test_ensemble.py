"""Ensembles (seeds, bagging) and snapshot ensembles: averaging by hand, members, the run folder, predict."""

import json
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import trainwell as tw
from trainwell.checkpoint import load_checkpoint, unprefixed
from trainwell.data.sources import load_source
from trainwell.ensemble import Ensemble, Snapshots, bootstrap_rows, member_rows, member_seeds
from trainwell.loop import Callback, SplitTensors
from trainwell.recipe import load_recipe

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False}


def test_member_seeds_start_from_the_recipe_seed_and_are_distinct_and_repeatable():
    seeds = member_seeds(7, 6)
    assert seeds[0] == 7 and len(set(seeds)) == 6
    assert member_seeds(7, 6) == seeds and member_seeds(7, 3) == seeds[:3] and member_seeds(8, 6) != seeds


def _members(n, out):
    return [torch.nn.Linear(4, out) for _ in range(n)]


@given(st.integers(1, 5), st.integers(0, 10_000), st.floats(0.1, 30.0))
@settings(max_examples=40, deadline=None)
def test_ensemble_output_is_the_mean_probability_in_the_members_output_space(n, seed, scale):
    torch.manual_seed(seed)
    x = torch.randn(6, 4) * scale
    multi, binary, reg = (_members(n, 3), _members(n, 1), _members(n, 2))
    with torch.no_grad():
        p = torch.stack([torch.softmax(m(x), 1) for m in multi]).mean(0)
        torch.testing.assert_close(torch.softmax(Ensemble(multi, "prob")(x), 1), p, rtol=1e-5, atol=1e-6)
        q = torch.stack([torch.sigmoid(m(x)) for m in binary]).mean(0)
        torch.testing.assert_close(torch.sigmoid(Ensemble(binary, "prob")(x)), q, rtol=1e-5, atol=1e-6)
        r = torch.stack([m(x) for m in reg]).mean(0)
        torch.testing.assert_close(Ensemble(reg, "mean")(x), r)
        logp = [torch.nn.Sequential(m, torch.nn.LogSoftmax(1)) for m in multi]   # members ending in log_softmax
        torch.testing.assert_close(Ensemble(logp, "prob")(x).exp(), p, rtol=1e-5, atol=1e-6)


def test_bagging_rows_are_a_bootstrap_of_the_training_split_only():
    recipe = load_recipe(None, {"train.ensemble.members": 3, "train.ensemble.method": "bagging"})
    train = SplitTensors(torch.arange(50.0).unsqueeze(1), torch.arange(50))
    rows = [member_rows(recipe, k, train) for k in range(3)]
    for k, r in enumerate(rows):
        idx = bootstrap_rows(50, member_seeds(0, 3)[k])
        assert torch.equal(r.y, idx) and torch.equal(r.x[:, 0], idx.float())   # rows drawn with replacement
        assert 20 < len(torch.unique(r.y)) < 45                               # ~63% distinct, not all
    assert not torch.equal(rows[0].y, rows[1].y)
    seeds = load_recipe(None, {"train.ensemble.members": 3})
    assert member_rows(seeds, 1, train) is train


def _hand_average(run_dir, x, kind="member"):
    """Softmax probabilities of every saved member checkpoint, averaged by hand."""
    files = sorted((run_dir / "checkpoints").glob(f"{kind}-*.safetensors"))
    run = tw.load_recipe(run_dir / "recipe.toml")
    from trainwell.models import build_model

    probs = []
    for f in files:
        model = build_model(run.model, (x.shape[1],), 10)
        model.load_state_dict(unprefixed("model", load_checkpoint(f)[0]))
        with torch.inference_mode():
            probs.append(torch.softmax(model.eval()(x), 1))
    return len(files), torch.stack(probs).mean(0)


DIGITS_SMALL = {"model.hidden": [32], "train.epochs": 8, "stopping.enabled": False, "train.batch_size": 64}


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens") / "run"
    return tw.fit(out=out, quiet=True, **{**DIGITS_SMALL, **QUIET, "train.ensemble.members": 3})


def test_ensemble_reports_each_member_the_mean_member_and_the_ensemble(seeds_run):
    m = json.loads((seeds_run.path / "metrics.json").read_text())
    ens = m["ensemble"]
    assert m["model"] == "ensemble" and ens["size"] == 3 and ens["method"] == "seeds"
    assert [r["seed"] for r in ens["members"]] == member_seeds(0, 3)
    assert [r["checkpoint"] for r in ens["members"]] == [f"checkpoints/member-{k}.safetensors" for k in (1, 2, 3)]
    for split in ("val", "test"):
        for key in ("loss", "accuracy", "f1"):
            assert ens["mean_member"][split][key] == pytest.approx(np.mean([r[split][key] for r in ens["members"]]))
    assert m["test"] == ens["test"] and m["plain"]["test"] == ens["members"][0]["test"]


def test_ensemble_test_score_is_the_hand_averaged_member_probabilities(seeds_run):
    data = seeds_run.extras["data"]
    n, probs = _hand_average(seeds_run.path, data.test.x)
    assert n == 3
    acc = float((probs.argmax(1) == data.test.y).float().mean())
    nll = float(torch.nn.functional.nll_loss(probs.log(), data.test.y))
    assert seeds_run.metrics["test"]["accuracy"] == pytest.approx(acc)
    assert seeds_run.metrics["test"]["loss"] == pytest.approx(nll, rel=1e-5)
    # Jensen: the ensemble's log loss is at most its members' mean log loss
    assert seeds_run.metrics["test"]["loss"] <= seeds_run.metrics["ensemble"]["mean_member"]["test"]["loss"]


def test_predict_uses_the_ensemble(seeds_run):
    from trainwell.predict import predict

    data = seeds_run.extras["data"]
    frame = predict(seeds_run.path, load_source(seeds_run.recipe.data, seeds_run.recipe.seed).x[data.indices["test"]])
    _, probs = _hand_average(seeds_run.path, data.test.x)
    cols = [c for c in frame.columns if c.startswith("prob_")]
    np.testing.assert_allclose(frame[cols].to_numpy(), probs.numpy(), rtol=1e-5, atol=1e-6)


def test_member_one_is_the_plain_run_of_the_recipe(seeds_run):
    plain = tw.fit(out=False, quiet=True, **{**DIGITS_SMALL, **QUIET})
    assert seeds_run.metrics["ensemble"]["members"][0]["test"] == plain.metrics["test"]
    assert seeds_run.metrics["ensemble"]["members"][1]["test"] != plain.metrics["test"]


def test_bagging_members_report_their_resample_and_use_the_same_validation_rows(tiny):
    run = tw.fit(out=False, quiet=True, **{**tiny, **QUIET, "train.ensemble.members": 2,
                                           "train.ensemble.method": "bagging"})
    members = run.metrics["ensemble"]["members"]
    n = run.metrics["rows"]["train"]
    for r in members:
        assert r["distinct_train_rows"] == len(torch.unique(bootstrap_rows(n, r["seed"])))
    # each member's validation figures are over the recipe's validation rows: recompute member 1's
    trainer, data = run.extras["trainer"], run.extras["data"]
    assert members[0]["val"] == trainer.evaluate(data.val, run.model.members[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_ensemble_of_small_mlps_beats_its_mean_member_on_digits(seed):
    run = tw.fit(out=False, quiet=True, **{**QUIET, "seed": seed, "model.hidden": [32], "train.epochs": 10,
                                           "stopping.enabled": False, "model.dropout": 0.0,
                                           "train.ensemble.members": 5})
    ens = run.metrics["ensemble"]
    for split in ("val", "test"):
        assert ens[split]["accuracy"] > ens["mean_member"][split]["accuracy"]
        assert ens[split]["loss"] < ens["mean_member"][split]["loss"]


# ----------------------------------------------------------------------------------- snapshots
class EpochWeights(Callback):
    def __init__(self):
        self.states = []

    def epoch_end(self, trainer, row):
        self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


SNAP = {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 1, "train.epochs": 4, "train.snapshots": 3,
        "stopping.enabled": False}


def test_snapshots_are_the_weights_at_the_last_cycle_ends_and_are_averaged(tiny, tmp_path):
    from trainwell.predict import predict

    rec = EpochWeights()
    run = tw.fit(out=tmp_path / "run", quiet=True, callbacks=[rec], **{**tiny, **QUIET, **SNAP})
    snap = run.metrics["snapshots"]
    assert run.metrics["model"] == "snapshots" and snap["kept"] == 3
    assert [s["epoch"] for s in snap["snapshots"]] == [2, 3, 4]
    for member, state in zip(run.model.members, rec.states[1:]):
        for k, v in member.state_dict().items():
            assert torch.equal(v, state[k]), k
    data = run.extras["data"]
    with torch.inference_mode():
        p = torch.stack([torch.sigmoid(m.eval()(data.test.x)) for m in run.model.members]).mean(0)
    frame = predict(tmp_path / "run", load_source(run.recipe.data, run.recipe.seed).x[data.indices["test"]])
    np.testing.assert_allclose(frame["prob_1"].to_numpy(), p.squeeze(1).numpy(), rtol=1e-5, atol=1e-6)
    acc = float(((p.squeeze(1) > 0.5).long() == data.test.y).float().mean())
    assert run.metrics["test"]["accuracy"] == pytest.approx(acc)


def test_too_few_cycles_keep_the_plain_model_and_say_why(tiny):
    run = tw.fit(out=False, quiet=True, **{**tiny, **QUIET, **SNAP, "stopping.enabled": True,
                                           "stopping.monitor": "train_loss", "stopping.stopping_threshold": 100.0})
    assert run.metrics["model"] == "plain" and run.metrics["snapshots"]["kept"] == 1
    assert "1 cosine cycle(s) completed before training stopped at epoch 1" in run.metrics["snapshots"]["reason"]


def test_a_fresh_snapshot_keeper_loaded_mid_run_continues_identically():
    model = torch.nn.Linear(2, 1)
    recipe = load_recipe(None, {**SNAP, "train.epochs": 6, "train.snapshots": 2})
    trainer = types.SimpleNamespace(model=model, setup=types.SimpleNamespace(steps_per_epoch=2, total_steps=12),
                                    state=types.SimpleNamespace(step=0))
    a = Snapshots.from_recipe(recipe)
    a.fit_start(trainer)
    for _ in range(5):
        trainer.state.step += 1
        with torch.no_grad():
            model.weight.add_(1.0)
        a.step_end(trainer)
    b = Snapshots.from_recipe(recipe)
    b.load_state_dict(a.state_dict())
    b.fit_start(trainer)
    for _ in range(7):
        trainer.state.step += 1
        with torch.no_grad():
            model.weight.add_(1.0)
        a.step_end(trainer)
        b.step_end(trainer)
    assert [s for s, _ in a.kept] == [s for s, _ in b.kept] == [10, 12]
    assert all(torch.equal(x["weight"], y["weight"]) for (_, x), (_, y) in zip(a.kept, b.kept))


@pytest.mark.parametrize("overrides, message", [
    ({"train.snapshots": 3}, 'train.average.kind: "snapshots" needs schedule.kind = "cosine_restarts", got \'cosine\''),
    ({**SNAP, "train.snapshots": 1}, "train.average.count: got 1, must be >= 2"),
    ({**SNAP, "train.snapshots": 5}, "train.average.count: got 5, but train.epochs = 4 completes only 4 cosine"),
    ({**{k: v for k, v in SNAP.items() if k != "train.snapshots"}, "train.average": {"kind": "snapshots", "count": 5}},
     "train.average.count: got 5, but train.epochs = 4 completes only 4 cosine"),
    ({"train.ensemble.members": 3, "train.ema_decay": 0.9},
     "train.ema_decay: cannot be combined with train.ensemble.members"),
    ({"train.average": {"kind": "ensemble", "members": 1}}, "train.average.members: got 1, must be >= 2"),
    ({"train.average": {"kind": "ensemble", "method": "boosting"}}, "train.average.method"),
    ({"train.ensemble.members": 2, "train.ensemble.method": "boosting"}, "train.average.method"),
])
def test_ensemble_keys_are_validated(overrides, message):
    with pytest.raises(tw.RecipeError) as err:
        load_recipe(None, overrides)
    assert message in str(err.value)


def test_an_ensemble_needs_the_recipes_model():
    with pytest.raises(tw.RecipeError, match='train.average.kind: got "ensemble", but members are built'):
        tw.fit(out=False, quiet=True, model=torch.nn.Linear(64, 10), **{"train.ensemble.members": 2})


def test_snapshots_missing_after_a_resume_are_noted():
    recipe = load_recipe(None, {**SNAP, "train.epochs": 6, "train.snapshots": 2})
    trainer = types.SimpleNamespace(model=torch.nn.Linear(2, 1), state=types.SimpleNamespace(step=7, epoch=3),
                                    setup=types.SimpleNamespace(steps_per_epoch=2, total_steps=12))
    fresh = Snapshots.from_recipe(recipe)
    fresh.fit_start(trainer)             # cycles ended at steps 2, 4, 6: the last 2 should have been kept
    assert fresh.note == "resumed at epoch 3 without 2 snapshot(s) taken before: they are missing"


def test_the_report_tables_each_member_the_mean_member_and_the_ensemble(tiny, tmp_path):
    from trainwell.report.html import models_section

    run = tw.fit(out=tmp_path / "run", quiet=True, **{**tiny, "watch.doctor": False, "watch.probes": False,
                                                      "train.ensemble.members": 2})
    page = (tmp_path / "run" / "report.html").read_text()
    table = models_section(run.metrics)
    assert table in page and "<h3 id='models'>ensemble</h3>" in table
    for name in ("member 1", "member 2", "mean member", "ensemble (returned)"):
        assert f"<td>{name}</td>" in table
    acc = run.metrics["ensemble"]["test"]["accuracy"]
    assert f"<td>{acc:.4g}</td>" in table


def test_a_resumed_run_keeps_its_snapshots(tiny, tmp_path):
    base = {**tiny, **QUIET, **SNAP, "train.snapshots": 2}
    full = tw.fit(out=tmp_path / "full", quiet=True, **{**base, "train.epochs": 4})
    tw.fit(out=tmp_path / "part", quiet=True, **{**base, "train.epochs": 3})
    resumed = tw.resume(tmp_path / "part", quiet=True, **{"train.epochs": 4})   # epoch 3's snapshot came before
    assert resumed.metrics["snapshots"] == full.metrics["snapshots"]
    assert [s["epoch"] for s in full.metrics["snapshots"]["snapshots"]] == [3, 4]
    for a, b in zip(full.model.members, resumed.model.members):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
