"""The NaN/inf guard on a recipe that really diverges: SGD at LR 1000 on a regression problem
overflows within a few steps. `stop` keeps the last good checkpoint and records the reason;
`rollback` restores good states with a smaller LR, skips the bad batch and recovers."""

import json
import math
import warnings

import pytest
import torch

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell import loop
from trainwell.rundir import read_history

DIVERGES = {"data.source": "polynomial", "model.hidden": [32], "optimizer.kind": "sgd", "optimizer.lr": 1000.0,
            "schedule.kind": "constant", "train.epochs": 5, "train.batch_size": 32, "checkpoint.every_steps": 2,
            "watch.probes": False, "watch.doctor": False, "watch.report": False, "watch.nan_lr_factor": 0.01}


@pytest.fixture(autouse=True)
def _quiet():
    warnings.simplefilter("ignore")


@pytest.fixture
def written(monkeypatch):
    """Every checkpoint encoded during the test, to check none holds a non-finite weight."""
    real, seen = ckpt.encode, []

    def encode(tensors, meta, path):
        seen.append({k: v.clone() for k, v in tensors.items() if k.startswith("model.")})
        return real(tensors, meta, path)

    monkeypatch.setattr(ckpt, "encode", encode)
    return seen


def test_stop_keeps_the_last_good_checkpoint_and_records_the_reason(tmp_path, written):
    run = tw.fit(out=tmp_path / "run", quiet=True, **DIVERGES, **{"watch.on_nan": "stop"})
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["stop_reason"] == "non_finite"
    assert [e["action"] for e in metrics["nan_events"]] == ["stop"]
    rows = read_history(run.path / "history.csv")
    assert len(rows) == metrics["stopped_epoch"] == 1 and not math.isfinite(rows[-1]["train_loss"])
    tensors, meta = ckpt.load_checkpoint(run.path / "checkpoints" / "last.safetensors")
    assert 0 < meta["step"] < metrics["nan_events"][0]["step"] and meta["cursor"] is not None
    assert written and all(bool(torch.isfinite(t).all()) for state in written for t in state.values())
    # A resume continues from the last good checkpoint; the policy may change (watch.*).
    again = tw.resume(run.path, quiet=True, **{"watch.on_nan": "rollback", "watch.nan_retries": 1})
    first = again.metrics["nan_events"][0]
    assert (first["action"], first["to_step"], first["lr_scale"]) == ("rollback", meta["step"], 0.01)


def test_rollback_lowers_the_lr_skips_the_bad_batch_and_recovers(tmp_path, written):
    run = tw.fit(out=tmp_path / "run", quiet=True, **DIVERGES, **{"watch.on_nan": "rollback"})
    events = run.metrics["nan_events"]
    rollbacks = [e for e in events if e["action"] == "rollback"]
    assert run.metrics["stop_reason"] == "finished" and len(run.history) == 5
    assert [e["lr_scale"] for e in rollbacks] == pytest.approx([0.01, 0.0001])
    assert any(e["action"] in ("skip_batch", "skip_step") for e in events)
    assert all(e["to_step"] < e["at_step"] for e in rollbacks)
    assert [r["nan_rollbacks"] for r in read_history(run.path / "history.csv")][-1] == 2
    assert run.history[-1]["lr"] == pytest.approx(1000.0 * 0.01 ** 2)
    assert all(math.isfinite(r["train_loss"]) for r in run.history)
    assert run.metrics["test"]["r2"] > 0.5
    assert all(bool(torch.isfinite(t).all()) for state in written for t in state.values())


def test_rollback_retries_are_bounded(tmp_path):
    run = tw.fit(out=False, quiet=True, **DIVERGES, **{"watch.on_nan": "rollback", "watch.nan_retries": 1})
    actions = [e["action"] for e in run.metrics["nan_events"]]
    assert actions.count("rollback") == 1 and actions[-1] == "stop"
    assert run.metrics["stop_reason"] == "non_finite"


def test_detection_reads_the_device_only_at_boundaries(tmp_path, monkeypatch):
    """No host sync per step for the guard: it checks once per epoch and per mid-epoch checkpoint."""
    calls = []
    real = loop.all_finite
    monkeypatch.setattr(loop, "all_finite", lambda ts: calls.append(len(ts)) or real(ts))
    run = tw.fit(out=tmp_path / "run", quiet=True, **{**DIVERGES, "optimizer.lr": 0.01, "train.epochs": 3})
    batches = run.extras["trainer"].setup.batches_per_epoch        # one step per batch (no accumulation)
    inside = [(e, b) for e in range(3) for b in range(1, batches) if (e * batches + b) % 2 == 0]
    assert run.metrics["stop_reason"] == "finished" and run.extras["trainer"].state.step == 3 * batches
    assert len(calls) == 3 + len(inside)          # epoch ends + mid-epoch checkpoints, not 3 * batches


class _Poison(loop.Callback):
    """NaN in the weights after the first step of epoch `at` (1-based), `times` times: the first
    rollback goes back to the end of epoch at - 1, the second (in the careful replay) one state further."""

    def __init__(self, at: int, times: int):
        self.at, self.left = at, times

    def step_end(self, trainer):
        if self.left and trainer.state.step == (self.at - 1) * trainer.setup.steps_per_epoch + 1:
            self.left -= 1
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_after_a_rollback_the_best_checkpoint_holds_an_epoch_that_was_kept(tmp_path):
    """Epoch 3 improves and is saved as best; a rollback that goes back to epoch 2 discards it, and the
    frozen replay (LR x 1e-12) never beats epoch 2 again. best.safetensors must hold the best epoch
    the run kept (the one metrics.json names and the run returns), not the discarded epoch 3."""
    over = {"data.source": "moons", "data.n_samples": 400, "model.hidden": [16], "optimizer.lr": 0.01,
            "train.epochs": 5, "stopping.enabled": False, "stopping.min_delta": 1e-3,
            "watch.on_nan": "rollback", "watch.nan_lr_factor": 1e-6, "watch.probes": False,
            "watch.doctor": False, "watch.report": False,
            "init.weights": "kaiming_normal"}     # the trajectory described above is this initialization's
    run = tw.fit(out=tmp_path / "run", quiet=True, callbacks=[_Poison(at=4, times=2)], **over)
    rollbacks = [e for e in run.metrics["nan_events"] if e["action"] == "rollback"]
    steps = run.extras["trainer"].setup.steps_per_epoch
    assert [e["to_step"] for e in rollbacks] == [3 * steps, 2 * steps]      # the second went one further back
    assert [r["val_loss"] for r in run.history[:2]] == sorted([r["val_loss"] for r in run.history[:2]],
                                                              reverse=True)
    tensors, meta = ckpt.load_checkpoint(run.path / "checkpoints" / "best.safetensors")
    assert meta["epoch"] == run.metrics["best_epoch"] <= 2
    assert meta["value"] == pytest.approx(run.history[meta["epoch"] - 1]["val_loss"])
    returned = run.extras["trainer"].best_state
    assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in returned.items())
    assert tw.predict(run.path, run.extras["data"].test.x.numpy()).shape[0] == len(run.extras["data"].test.x)
