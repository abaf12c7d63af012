"""Exact resume: a run killed at random moments (SIGKILL mid-epoch and mid-save), interrupted by
SIGINT/SIGTERM, or crashed at each loop boundary, then resumed, ends bitwise identical to an
uninterrupted run: the same weights, optimizer state and history (all but the wall-clock
`seconds` column, which measures time, not training). Plus what a resume refuses."""

import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell import loop, step
from trainwell.callbacks import EarlyStopping
from trainwell.errors import CheckpointError, Interrupted, RunDirError
from trainwell.rundir import read_history

HERE = Path(__file__).parent
# Dropout, noise augmentation, accumulation with a short last group, early stopping and a cosine
# schedule: every piece of state a resume must restore is exercised. 240 training rows in batches
# of 16 = 15 batches = 8 optimizer steps per epoch; a mid-epoch checkpoint every 3 steps.
RECIPE = {"data.source": "moons", "data.n_samples": 400, "model.hidden": [32, 32], "model.dropout": 0.1,
          "data.augment.noise_std": 0.05, "train.batch_size": 16, "train.accumulate": 2, "train.epochs": 5,
          "train.threads": 1, "checkpoint.every_steps": 3, "stopping.patience": 3,
          "watch.doctor": False, "watch.report": False}
SETS = [f"--set={k}={json.dumps(v)}" for k, v in RECIPE.items()]


def _final(run_dir: Path) -> tuple[dict, list, dict]:
    tensors, meta = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run_dir / "history.csv")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return tensors, history, {k: metrics[k] for k in ("test", "val", "best_epoch", "stopped_epoch", "stop_reason")}


def assert_same_run(a: Path, b: Path) -> None:
    ta, ha, ma = _final(a)
    tb, hb, mb = _final(b)
    assert ta.keys() == tb.keys()
    for name in ta:            # weights, optimizer state, best weights, every RNG
        assert torch.equal(ta[name], tb[name]), name
    assert ha == hb            # every column but `seconds`, compared exactly
    assert ma == mb


# ------------------------------------------------------------------ real processes, real kills
KILL_SEED = 4


def _plan(tmp: Path) -> tuple[list[dict], Path, Path]:
    rng = random.Random(KILL_SEED)
    # Step and write faults first: each lands within a child's first 9 steps or 12 calls, long before
    # the run (40 steps) can end, so at least 6 kills happen whatever the machine's speed; then two
    # kills at random wall-clock moments, which may come after the run ended on a fast machine.
    faults = ([{"kind": "step", "n": rng.randint(3, 9)} for _ in range(3)]
              + [{"kind": "call", "fn": rng.choice(["write", "fsync", "replace"]), "n": rng.randint(1, 12)}
                 for _ in range(3)])
    rng.shuffle(faults)
    faults += [{"kind": "wall", "seconds": round(rng.uniform(0.0, 0.3), 3)} for _ in range(2)]
    ref, killed, signalled = tmp / "reference", tmp / "killed", tmp / "signalled"
    jobs = [{"argv": ["fit", "--quiet", "--out", str(ref), *SETS], "run_dir": str(ref)}]
    fit = ["fit", "--quiet", "--out", str(killed), *SETS]
    for i, fault in enumerate(faults):
        argv = fit if i == 0 else ["resume", str(killed), "--quiet"]
        jobs.append({"argv": argv, "run_dir": str(killed), "fault": fault, "fit_argv": fit})
    jobs.append({"argv": ["resume", str(killed), "--quiet"], "run_dir": str(killed), "fit_argv": fit})
    # SIGINT, then SIGTERM, then a clean finish, in a third folder.
    jobs.append({"argv": ["fit", "--quiet", "--out", str(signalled), *SETS], "run_dir": str(signalled),
                 "fault": {"kind": "signal", "signal": "SIGINT", "n": 10}})
    jobs.append({"argv": ["resume", str(signalled), "--quiet"], "run_dir": str(signalled),
                 "fault": {"kind": "signal", "signal": "SIGTERM", "n": 5}})
    jobs.append({"argv": ["resume", str(signalled), "--quiet"], "run_dir": str(signalled)})
    for i, job in enumerate(jobs):
        job["stderr"] = str(tmp / f"job{i}.err")
    return jobs, ref, killed


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kills")
    jobs, ref, killed = _plan(tmp)
    (tmp / "plan.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, str(HERE / "kill_worker.py"), str(tmp / "plan.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    errs = [Path(j["stderr"]).read_text() for j in jobs]
    return jobs, results, errs, tmp


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(processes):
    jobs, results, errs, tmp = processes
    kill_jobs = [r for j, r in zip(jobs, results) if j.get("fault", {}).get("kind") in ("step", "call", "wall")]
    kill_errs = [e for j, e in zip(jobs, errs) if j.get("fault", {}).get("kind") in ("step", "call", "wall")]
    kills = [r for r in kill_jobs if r["killed"]]
    mid_save = [r for r in kills if r["fault"]["kind"] == "call"]
    print("job seconds:", [r["seconds"] for r in results])
    print(f"{len(kills)} SIGKILLs ({len(mid_save)} inside a write) of {len(kill_jobs)} planned:",
          [r["fault"] for r in kills])
    assert len(kills) >= 5 and len(mid_save) >= 2
    last = len(kill_jobs) + 1          # the final plain resume; the run may have ended in a wall-clock job
    assert results[0]["exit"] == 0 and (results[last]["exit"] == 0 or "already ended at epoch 5 (finished)"
                                        in errs[last]), errs
    # A job may also finish before its fault; on a fast machine the run may even have ended before a
    # wall-clock job starts, which then refuses to resume a finished run.
    assert all(r["exit"] in (0, None) or (r["fault"]["kind"] == "wall" and r["exit"] == 2
                                          and "already ended" in e) for r, e in zip(kill_jobs, kill_errs)), errs
    assert all(r["killed"] for r in kill_jobs[:6])
    assert_same_run(tmp / "reference", tmp / "killed")
    assert not list((tmp / "killed").rglob(".tmp-*"))


@pytest.mark.slow
def test_sigint_and_sigterm_save_print_the_resume_command_and_exit_130(processes):
    jobs, results, errs, tmp = processes
    sigint, sigterm, final = results[-3:]
    folder = tmp / "signalled"
    assert (sigint["exit"], sigterm["exit"], final["exit"]) == (130, 130, 0), errs[-3:]
    for err, name in ((errs[-3], "SIGINT"), (errs[-2], "SIGTERM")):
        first, second = err.strip().splitlines()[-2:]
        assert first.startswith(f"trainwell: interrupted by {name} at epoch ") and first.endswith("checkpoint saved")
        assert second == f"resume with: trainwell resume {folder}"
    assert_same_run(tmp / "reference", folder)


KILL_AT_FIRST_RENAME = """
import os, signal, sys
real = os.replace
def replace(src, dst, *a, **k):
    if os.path.basename(dst) == "last.safetensors":     # the first checkpoint, about to be renamed in
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
from trainwell.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_while_the_first_checkpoint_is_renamed_in_resumes_from_the_beginning(tmp_path):
    # The manifest then names the first `last` file as staged ("next") only, and the file is not there:
    # resume starts the run again (it used to stop at "checkpoint not found", with nothing to resume).
    ref, killed = tmp_path / "reference", tmp_path / "killed"
    run = [sys.executable, "-m", "trainwell.cli"]
    assert subprocess.run([*run, "fit", "--quiet", "--out", str(ref), *SETS], capture_output=True).returncode == 0
    died = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_RENAME, "fit", "--quiet", "--out", str(killed),
                           *SETS], capture_output=True)
    assert died.returncode == -9
    manifest = json.loads((killed / "checkpoints" / "manifest.json").read_text())
    assert set(manifest["last.safetensors"]) == {"next"} and not (killed / "checkpoints" / "last.safetensors").exists()
    again = subprocess.run([*run, "resume", str(killed)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "no checkpoint yet, starting the run from the beginning" in again.stdout
    assert_same_run(ref, killed)


# ------------------------------------------------------- deterministic crashes at each boundary
class Crash(Exception):
    """Stands for the process dying at that point."""


def _crash_on(monkeypatch, owner, name: str, n: int, after: bool = False) -> None:
    real = getattr(owner, name)
    count = [0]

    def wrapper(*args, **kw):
        count[0] += 1
        if count[0] == n and not after:
            raise Crash(name)
        out = real(*args, **kw)
        if count[0] == n and after:
            raise Crash(name)
        return out

    monkeypatch.setattr(owner, name, wrapper)


BOUNDARIES = {
    "before the optimizer step": (torch.optim.Adam, "step", 13, False),
    "after the optimizer step": (torch.optim.Adam, "step", 17, True),
    "before the schedule step": (loop.Trainer, "apply_lr", 21, False),
    "after the schedule step": (loop.Trainer, "apply_lr", 9, True),
    "before a checkpoint write": (ckpt, "write_files", 4, False),
    "inside a checkpoint write": (ckpt, "atomic_write_bytes", 8, False),
    "after a checkpoint write": (ckpt, "write_files", 6, True),
    "before validation": (loop.Trainer, "evaluate", 3, False),
    "after validation": (loop.Trainer, "evaluate", 2, True),
    "at the early-stopping decision": (EarlyStopping, "update", 5, False),
    "at an accumulation boundary": (step, "optimizer_step", 11, False),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    warnings.simplefilter("ignore")
    out = tmp_path_factory.mktemp("ref") / "run"
    tw.fit(out=out, quiet=True, **RECIPE)
    return out


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_a_crash_at_each_boundary_then_resume_is_bitwise_identical(reference, tmp_path, monkeypatch, boundary):
    owner, name, n, after = BOUNDARIES[boundary]
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_on(m, owner, name, n, after)
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **RECIPE)
    tw.resume(out, quiet=True)
    assert_same_run(reference, out)


def test_an_interrupt_inside_an_accumulation_saves_the_gradients(reference, tmp_path, monkeypatch):
    """SIGINT raised in-process after a batch that opened an accumulation group: the checkpoint
    holds the pending gradients, and the resumed run still matches."""
    import signal

    real = loop.Trainer._train_batch
    seen = [0]

    def batch(self, cur, n):
        real(self, cur, n)
        seen[0] += 1
        if seen[0] == 20 and cur.pending == 1:
            signal.raise_signal(signal.SIGINT)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(loop.Trainer, "_train_batch", batch)
        with pytest.raises(Interrupted, match="resume with: trainwell resume"):
            tw.fit(out=out, quiet=True, **RECIPE)
    tensors, meta = ckpt.load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["cursor"]["pending"] == 1 and ckpt.unprefixed("grad", tensors)
    # The interrupted fit let go of the folder's lock: another process may resume it now.
    take = "import sys; from trainwell.rundir import acquire_run_lock; acquire_run_lock(sys.argv[1])"
    assert subprocess.run([sys.executable, "-c", take, str(out)], capture_output=True).returncode == 0
    tw.resume(out, quiet=True)
    assert_same_run(reference, out)


# ----------------------------------------------------------------------- what a resume refuses
@pytest.fixture
def interrupted(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _crash_on(m, loop.Trainer, "evaluate", 2)
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **RECIPE)
    return out


@pytest.mark.parametrize("change, expected", [
    ({"model.hidden": [32, 16]}, "model.hidden: [32, 32] -> [32, 16]"),
    ({"data.n_samples": 500}, "data.n_samples: 400 -> 500"),
    ({"train.batch_size": 8, "seed": 3}, "2 key(s)"),
])
def test_a_changed_recipe_is_refused_with_the_differences(interrupted, change, expected):
    with pytest.raises(RunDirError, match="cannot resume, the recipe differs") as info:
        tw.resume(interrupted, quiet=True, **change)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_edited_recipe_toml_with_another_optimizer_is_refused(interrupted):
    raw = tw.load_recipe(interrupted / "recipe.toml").to_dict()
    raw["optimizer"] = {"kind": "sgd", "lr": 0.1}
    (interrupted / "recipe.toml").write_text(tw.Recipe.from_dict(raw).to_toml())
    with pytest.raises(RunDirError) as info:
        tw.resume(interrupted, quiet=True)
    assert 'optimizer.kind: "adam" -> "sgd"' in str(info.value) and 'optimizer.betas: [0.9, 0.999] -> (absent)' \
        in str(info.value)


def test_changed_data_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 4)).astype(np.float32), rng.integers(0, 2, 120)
    out = tmp_path / "run"
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as m:
        _crash_on(m, step, "optimizer_step", 5)          # in epoch 3 (2 steps per epoch)
        tw.fit(out=out, quiet=True, data=(x, y), **{"train.epochs": 3, "watch.doctor": False,
                                                    "watch.report": False})
    assert (out / "checkpoints" / "last.safetensors").exists()
    x[:, 0] += rng.normal(size=len(x)).astype(np.float32)       # the same file name, other contents
    with pytest.raises(CheckpointError, match="data: the training/validation rows differ"):
        tw.resume(out, quiet=True, data=(x, y))


def test_what_may_change_changes_and_train_epochs_extends_a_finished_run(reference, tmp_path):
    """watch.* may change on resume; raising train.epochs continues a finished run, and with a
    schedule that does not depend on the length it equals a longer run."""
    flat = {**RECIPE, "schedule.kind": "constant", "stopping.enabled": False, "train.epochs": 2}
    short, long = tmp_path / "short", tmp_path / "long"
    tw.fit(out=short, quiet=True, **flat)
    with pytest.raises(RunDirError, match="already ended at epoch 2 .finished.; nothing to resume .raise"):
        tw.resume(short, quiet=True)
    run = tw.resume(short, quiet=True, **{"train.epochs": 4, "watch.probes": False})
    assert len(run.history) == 4
    tw.fit(out=long, quiet=True, **{**flat, "train.epochs": 4})
    assert_same_run(long, short)


def test_a_folder_killed_before_its_first_checkpoint_starts_over(reference, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as m:
        _crash_on(m, step, "optimizer_step", 1)
        tw.fit(out=out, quiet=True, **RECIPE)
    assert not (out / "checkpoints" / "last.safetensors").exists()
    tw.resume(out, quiet=True)
    assert_same_run(reference, out)


@pytest.mark.parametrize("finisher", [{"train.ema_decay": 0.9}, {"train.swa.start_epoch": 3, "train.swa.lr": 0.01},
                                      {"schedule.kind": "cosine_restarts", "schedule.cycle_epochs": 2,
                                       "train.snapshots": 2}], ids=["ema", "swa", "snapshots"])
def test_callback_state_is_saved_so_averaged_models_resume_exactly(tmp_path, finisher):
    """Weight averaging and snapshots keep state in their callbacks; it travels in the checkpoint."""
    recipe = {**RECIPE, **finisher, "stopping.enabled": False}
    ref, out = tmp_path / "ref", tmp_path / "run"
    whole = tw.fit(out=ref, quiet=True, **recipe)
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as m:
        _crash_on(m, step, "optimizer_step", 29)           # in epoch 4 of 5
        tw.fit(out=out, quiet=True, **recipe)
    tensors, _ = ckpt.load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert any(k.startswith("callback.") for k in tensors)
    resumed = tw.resume(out, quiet=True)
    assert resumed.metrics["model"] == whole.metrics["model"] != "plain"
    assert_same_run(ref, out)


def test_timed_checkpoints_inside_epochs_do_not_change_the_run(reference, tmp_path):
    """checkpoint.every_minutes (here 60 microseconds: after every step) saves at other moments than
    the reference's every 3 steps; saving never perturbs training, so the resume equals the reference."""
    timed = {**RECIPE, "checkpoint.every_steps": 0, "checkpoint.every_minutes": 1e-9}
    out = tmp_path / "run"
    with pytest.raises(Crash), pytest.MonkeyPatch.context() as m:
        _crash_on(m, step, "optimizer_step", 21)
        tw.fit(out=out, quiet=True, **timed)
    _, meta = ckpt.load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["cursor"] is not None and meta["step"] == 20
    tw.resume(out, quiet=True, **{"checkpoint.every_steps": 3, "checkpoint.every_minutes": 10.0})
    assert_same_run(reference, out)
