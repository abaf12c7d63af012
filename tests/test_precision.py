"""train.precision: autocast forward and loss, float32 master weights, the float16 gradient scaler
(its state resumed exactly), evaluation under the same autocast, unscaled gradients for the norm,
clipping and the probes, and a clear line for a precision the device cannot run."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from crash import Crash
from crash import crash_at_step as _crash_at_step
from torch import nn

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell import precision, runstate, step
from trainwell.build import build
from trainwell.cli import main
from trainwell.errors import RecipeError
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe

QUIET = {"watch.doctor": False, "watch.report": False, "train.threads": 1}
DIGITS = {**QUIET, "train.epochs": 6, "stopping.enabled": False, "watch.probes": False}


def _linear_dtypes(record: list):
    """A global forward hook that records the output dtype of every Linear layer (but the two-row
    shape check of build.py, which is not training or evaluation)."""
    def hook(module, inputs, output):
        if isinstance(module, nn.Linear) and inputs[0].shape[0] > 2:
            record.append((module.training, output.dtype))
    return nn.modules.module.register_module_forward_hook(hook)


@pytest.fixture(scope="module")
def digits_runs():
    warnings.simplefilter("ignore")
    return {p: tw.fit(out=False, quiet=True, **{**DIGITS, "train.precision": p}) for p in ("32", "bf16-mixed")}


def test_bf16_trains_and_matches_float32_accuracy_on_digits(digits_runs):
    full, bf16 = digits_runs["32"], digits_runs["bf16-mixed"]
    losses = [r["train_loss"] for r in bf16.history]
    assert losses[-1] < 0.5 * losses[0]
    # Not the same numbers (the products ran in bfloat16), the same accuracy within seed-to-seed noise.
    assert [r["train_loss"] for r in full.history] != losses
    assert abs(bf16.metrics["val"]["accuracy"] - full.metrics["val"]["accuracy"]) < 0.03
    assert bf16.metrics["val"]["accuracy"] > 0.9
    assert bf16.metrics["precision"] == "bf16-mixed" and full.metrics["precision"] == "32"


def test_master_weights_and_optimizer_state_stay_float32(digits_runs):
    trainer = digits_runs["bf16-mixed"].extras["trainer"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    for state in trainer.setup.optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if torch.is_tensor(v) and v.dim())


def test_training_and_evaluation_run_under_the_same_autocast(tmp_path):
    seen: list = []
    handle = _linear_dtypes(seen)
    try:
        tw.fit(out=False, quiet=True, **{**DIGITS, "train.epochs": 1, "train.precision": "bf16-mixed"})
    finally:
        handle.remove()
    training = {d for t, d in seen if t}
    evaluation = {d for t, d in seen if not t}
    assert training == {torch.bfloat16} and evaluation == {torch.bfloat16}
    seen.clear()
    handle = _linear_dtypes(seen)
    try:
        tw.fit(out=False, quiet=True, **{**DIGITS, "train.epochs": 1})
    finally:
        handle.remove()
    assert {d for _, d in seen} == {torch.float32}


def test_float16_on_the_cpu_runs_with_a_clear_statement():
    with pytest.warns(precision.PrecisionWarning, match="float16 is emulated here and slower than float32"):
        run = tw.fit(out=False, quiet=True, **{**DIGITS, "train.epochs": 2, "train.precision": "16-mixed"})
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.extras["trainer"].setup.scaler is not None


def test_precision_is_read_as_a_number_or_a_string_and_other_values_are_refused():
    assert load_recipe(None, {"train.precision": 32}).train.precision == "32"
    assert load_recipe(None, {"train.precision": "bf16-mixed"}).train.precision == "bf16-mixed"
    with pytest.raises(RecipeError, match="train.precision: got '16', must be one of '32', 'bf16-mixed' or '16-mixed'"):
        load_recipe(None, {"train.precision": 16})


def test_a_precision_the_device_cannot_run_is_one_line_at_validation(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")
    line = precision.problem("bf16-mixed", torch.device("cuda"))
    assert line == ("train.precision: got 'bf16-mixed', but this CUDA device has no bfloat16 support (Old GPU); "
                    "use \"16-mixed\" or \"32\"")
    assert precision.problem("16-mixed", torch.device("cuda")) is None
    assert precision.problem("32", torch.device("cuda")) is None
    # Where autocast itself is unavailable, through the real CLI: exit 2, one line, no run folder.
    real = torch.amp.autocast_mode.is_autocast_available
    monkeypatch.setattr(torch.amp.autocast_mode, "is_autocast_available",
                        lambda kind: False if kind == "cpu" else real(kind))
    out = tmp_path / "run"
    code = main(["fit", "--quiet", "--out", str(out), "--set", "train.precision=bf16-mixed", "--set",
                 "train.device=cpu", "--set", "train.epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert err == ["trainwell: error: train.precision: got 'bf16-mixed', but autocast is not available on the "
                   "cpu device; use \"32\""]


# ----------------------------------------------------------------- the float16 scaler
MOONS = {**QUIET, "data.source": "moons", "data.n_samples": 400, "model.hidden": [32, 32], "model.dropout": 0.1,
         "train.batch_size": 16, "train.accumulate": 2, "train.epochs": 4, "checkpoint.every_steps": 3,
         "stopping.enabled": False, "train.precision": "16-mixed"}


@pytest.fixture
def busy_scaler(monkeypatch):
    """A scaler that overflows and grows within a short run: its state changes every few steps."""
    monkeypatch.setattr(precision.Precision, "scaler",
                        lambda self: torch.amp.GradScaler("cpu", init_scale=2.0 ** 20, growth_interval=3))
    warnings.simplefilter("ignore")




def _last(run_dir):
    return ckpt.load_checkpoint(run_dir / "checkpoints" / "last.safetensors")


def _history(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run.history]


def test_the_scalers_state_is_saved_and_a_resume_is_bitwise_identical(busy_scaler, tmp_path, monkeypatch):
    ref = tw.fit(out=tmp_path / "ref", quiet=True, **MOONS)
    scaler = ref.extras["trainer"].setup.scaler
    tensors_ref, meta_ref = _last(tmp_path / "ref")
    assert meta_ref["scaler"] == json.loads(json.dumps(scaler.state_dict()))
    # The scale moved: some steps overflowed (halving it) and some intervals grew it back.
    assert meta_ref["scaler"]["scale"] != 2.0 ** 20
    assert all(r["grad_norm"] == r["grad_norm"] and r["grad_norm"] < 1e3 for r in ref.history)   # unscaled norms

    out = tmp_path / "crashed"
    with monkeypatch.context() as m:
        _crash_at_step(m, 23)                            # mid-epoch 2 (12 steps per epoch), after a save
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **MOONS)
    resumed = tw.resume(out, quiet=True)
    tensors, meta = _last(out)
    assert meta["scaler"] == meta_ref["scaler"]
    assert _history(resumed) == _history(ref)
    for name in tensors_ref:
        assert torch.equal(tensors[name], tensors_ref[name]), name


def test_without_the_scalers_state_the_resume_would_differ(busy_scaler, tmp_path, monkeypatch):
    """The control of the test above: the scale is state a resume needs."""
    ref = tw.fit(out=tmp_path / "ref", quiet=True, **MOONS)
    out = tmp_path / "crashed"
    with monkeypatch.context() as m:
        _crash_at_step(m, 23)
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **MOONS)
    restore = runstate.restore
    monkeypatch.setattr(runstate, "restore", lambda tr, tensors, meta: restore(tr, tensors,
                                                                                 {**meta, "scaler": None}))
    resumed = tw.resume(out, quiet=True)
    assert _history(resumed) != _history(ref)


# ----------------------------------------------------------------- unscaled gradients
def _setup(overrides):
    recipe = load_recipe(None, {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16],
                                "model.dropout": 0.0, "optimizer.kind": "sgd", "optimizer.lr": 1.0,
                                "optimizer.momentum": 0.0, **overrides})
    torch.manual_seed(0)
    prepared = prepare_data(recipe, None, torch.device("cpu"))
    return build(recipe, prepared, torch.device("cpu"))


def test_the_norm_and_clipping_read_unscaled_gradients():
    results = {}
    for p in ("32", "16-mixed"):
        setup = _setup({"train.precision": p, "train.clip_norm": 1e-3})
        x, y = setup.train.x[:32], setup.train.y[:32]
        before = [w.detach().clone() for w in setup.params]
        result = step.train_step(setup, x, y)
        moved = torch.sqrt(sum(((w - b) ** 2).sum() for w, b in zip(setup.params, before, strict=True)))
        results[p] = (float(result.norm), float(moved))
    (norm32, moved32), (norm16, moved16) = results["32"], results["16-mixed"]
    assert norm16 == pytest.approx(norm32, rel=1e-2)        # not 65536 times larger
    # Plain SGD with lr 1: the update is the clipped gradient, whose norm is clip_norm.
    assert moved16 == pytest.approx(1e-3, rel=1e-2) and moved32 == pytest.approx(1e-3, rel=1e-3)


def test_the_probes_record_unscaled_gradients(tmp_path):
    records = {}
    for p in ("32", "16-mixed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tw.fit(out=tmp_path / p, quiet=True, **{**MOONS, "train.precision": p, "train.epochs": 1,
                                                     "watch.probes": True})
        records[p] = json.loads((tmp_path / p / "probes.json").read_text())["epochs"][0]["weights"]
    for layer, stats in records["32"].items():
        other = records["16-mixed"][layer]
        for key in ("grad_norm", "out_grad_rms"):
            assert other[key] == pytest.approx(stats[key], rel=0.05), (layer, key)


# ----------------------------------------------------------------- range test and overfit check
@pytest.mark.parametrize("which", ["range test", "overfit check"])
def test_the_range_test_and_the_overfit_check_run_under_the_chosen_precision(which):
    from trainwell.labs.lr_range import range_test
    from trainwell.watch.overfit_batch import overfit_batch

    recipe = load_recipe(None, {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16],
                                "train.precision": "bf16-mixed"})
    seen: list = []
    handle = _linear_dtypes(seen)
    try:
        if which == "range test":
            range_test(recipe, steps=12)
        else:
            overfit_batch(recipe, steps=12)
    finally:
        handle.remove()
    assert seen and {d for _, d in seen} == {torch.bfloat16}
