"""Data-parallel training (`trainwell fit --nproc N`, torchrun): real worker processes on CPU (gloo).

The references are independent of the data-parallel code: the same recipe trained by one process.
Every launch has a timeout, so a hung collective fails the test instead of hanging CI.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainwell as tw

LAUNCH_TIMEOUT = 420          # seconds; a 2-worker run of these recipes takes ~30 s on a loaded 2-core machine

# SGD, no batch norm, no dropout: a batch's gradient is the mean over its rows, so averaging the
# workers' shares (sized 13/12 of each 25-row batch: unequal on purpose) must give the same steps.
# 376 rows give 226 training rows: the last batch of each epoch has one row, worker 1 none of it.
PLAIN = {"data.source": "moons", "data.n_samples": 376, "model.hidden": [16, 16], "model.norm": "none",
         "model.dropout": 0.0, "optimizer.kind": "sgd", "optimizer.lr": 0.2, "optimizer.momentum": 0.9,
         "schedule.kind": "constant", "train.epochs": 2, "train.batch_size": 25, "train.threads": 1,
         "stopping.enabled": False, "watch.doctor": False, "watch.report": False, "train.device": "cpu"}


def _argv(overrides: dict) -> list[str]:
    out = []
    for key, value in overrides.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": os.pathsep.join(
        [str(Path(tw.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str, timeout: float = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainwell", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _weights(run: Path, name: str = "last.safetensors") -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(run / "checkpoints" / name).items() if k.startswith("model.")}


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def _compare_histories(a: list[dict], b: list[dict], columns: tuple[str, ...], rtol: float) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for col in columns:
            assert float(ra[col]) == pytest.approx(float(rb[col]), rel=rtol, abs=rtol), (col, ra, rb)


def test_two_workers_equal_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    tw.fit(None, out=one, quiet=True, **PLAIN)
    done = _cli("fit", "--nproc", "2", "--out", str(two), "--quiet", *_argv(PLAIN))
    assert done.returncode == 0, done.stderr[-3000:]
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5)
    _compare_histories(_history(one), _history(two), ("train_loss", "val_loss", "val_accuracy",
                                                      "train_accuracy", "grad_norm", "lr"), 1e-5)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    for key, value in m1["test"].items():
        assert m2["test"][key] == pytest.approx(value, abs=1e-5), key
    assert (m1["best_epoch"], m1["stop_reason"]) == (m2["best_epoch"], m2["stop_reason"])
    saved = load_file(two / "checkpoints" / "last.safetensors")
    assert "rank1.rng.torch" in saved                      # worker 1's own random stream is in the checkpoint


@pytest.mark.slow
def test_sync_batchnorm_follows_one_process(tmp_path):
    """Batch norm over the global batch: the curves of 2 workers stay within 1e-4 of one process's;
    each worker normalizing its own half (sync off) moves them measurably."""
    recipe = {**PLAIN, "model.norm": "batch", "train.batch_size": 24, "train.epochs": 3}
    runs = {"one": None, "sync": True, "local": False}
    for name, sync in runs.items():
        if sync is None:
            tw.fit(None, out=tmp_path / name, quiet=True, **recipe)
        else:
            done = _cli("fit", "--nproc", "2", "--out", str(tmp_path / name), "--quiet",
                        *_argv({**recipe, "model.sync_batchnorm": sync}))
            assert done.returncode == 0, done.stderr[-3000:]
    one, sync, local = (_history(tmp_path / n) for n in runs)
    _compare_histories(one, sync, ("train_loss", "val_loss", "grad_norm"), 1e-4)
    gap = max(abs(float(a["val_loss"]) - float(b["val_loss"])) / float(a["val_loss"]) for a, b in zip(one, local))
    assert gap > 1e-3


@pytest.mark.parametrize("args, message", [
    (["--nproc", "2", "--backend", "nccl"], "--backend nccl: needs CUDA"),
    (["--nproc", "2", "--set", "train.device=\"cuda\""], "train.device: got 'cuda'"),
], ids=["nproc-nccl", "nproc-cuda"])
def test_cuda_asked_without_cuda_is_one_line_and_writes_nothing(tmp_path, args, message):
    """(--nproc 0 and more workers than rows per batch: tests/test_bad_input.py, in-process.)"""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    done = _cli("fit", "--out", str(out), *_argv(PLAIN), *args, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not out.exists()


def _worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the trainwell workers the launcher `parent` started (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_killed_worker_stops_the_run_and_resume_is_exact(tmp_path):
    recipe = {**PLAIN, "train.epochs": 8, "train.batch_size": 10, "checkpoint.every_steps": 5,
              "model.dropout": 0.2}                  # dropout: each worker's own random stream must resume
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = _cli("fit", "--nproc", "2", "--out", str(full), "--quiet", *_argv(recipe))
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, "-m", "trainwell", "fit", "--nproc", "2", "--out", str(cut), "--quiet",
                             *_argv(recipe)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        history = cut / "history.csv"
        while not (history.exists() and len(history.read_text().splitlines()) >= 2):   # one epoch done
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.05)
        workers = _worker_pids(proc.pid)
        assert set(workers) == {0, 1}
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        stopped_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert f"worker 1 (pid {workers[1]}) was killed by SIGKILL" in err, err[-3000:]
    assert f"trainwell resume {cut} --nproc 2" in err
    assert stopped_after < 60                       # seconds, on a loaded 2-core machine (the agent polls at 0.1 s)
    assert not (cut / "metrics.json").exists()

    wrong = _cli("resume", str(cut), "--nproc", "3", timeout=120)
    assert wrong.returncode == 2
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert "written by 2 worker(s), resumed with 3" in wrong.stderr and "--nproc 2" in wrong.stderr

    done = _cli("resume", str(cut), "--nproc", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _history(full)] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in _history(cut)]


# ------------------------------------------------------------------------------ in-process pieces
def test_worker_command_line_drops_nproc_and_names_the_folder(tmp_path):
    from trainwell.distributed import worker_argv

    out = tmp_path / "run"
    assert worker_argv(["fit", "r.toml", "--nproc", "2", "--set", "a=1"], out) == \
        ["fit", "r.toml", "--set", "a=1", "--out", str(out)]
    assert worker_argv(["fit", "--nproc=4", "--out", "x"], out) == ["fit", "--out", "x"]
    assert worker_argv(["resume", "runs/x", "--nproc", "2"], None) == ["resume", "runs/x"]


def test_a_failure_is_named_once(capsys, tmp_path):
    from types import SimpleNamespace

    from trainwell.distributed import _report_failure

    def failed(**codes):
        return SimpleNamespace(failures={int(r[1:]): SimpleNamespace(exitcode=c, pid=100 + int(r[1:]), timestamp=0)
                                         for r, c in codes.items()})

    assert _report_failure(failed(r1=-9, r0=1), 2, tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"trainwell: error: worker 1 (pid 101) was killed by SIGKILL; the run stopped and the other "
                   f"workers were ended; the last complete checkpoint is kept in {tmp_path}; resume with: "
                   f"trainwell resume {tmp_path} --nproc 2"]
    assert _report_failure(failed(r0=2, r1=2), 2, tmp_path) == 2      # rank 0 said why (bad input)
    assert _report_failure(failed(r0=2, r1=-15), 2, tmp_path) == 2     # ... and the launcher ended worker 1
    assert _report_failure(failed(r0=130, r1=130), 2, tmp_path) == 130
    assert capsys.readouterr().err == ""
    assert _report_failure(failed(r0=1), 2, tmp_path) == 1
    assert "worker 0 exit 1" in capsys.readouterr().err


@pytest.mark.parametrize("rows, batch, drop_last, workers, refused", [
    (226, 24, False, 2, False),     # 9 x 24 + 10: the last batch gives 5 rows each
    (227, 24, False, 4, False),     # 9 x 24 + 11: 3, 3, 3, 2
    (219, 24, False, 2, True),      # 9 x 24 + 3: 2 and 1
    (219, 24, True, 2, False),      # the short batch is dropped: 12 each
    (217, 24, False, 2, False),     # 9 x 24 + 1: one process drops a 1-row batch with batch norm too
    (240, 3, False, 2, True),       # every batch: 2 and 1
])
def test_unsynchronized_batch_norm_needs_two_rows_per_worker(rows, batch, drop_last, workers, refused):
    from types import SimpleNamespace

    from torch import nn

    from trainwell.distributed import World, check_shares
    from trainwell.errors import RecipeError

    setup = SimpleNamespace(model=nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4)), train=range(rows),
                            settings=SimpleNamespace(batch_size=batch, drop_last=drop_last))
    world = World(rank=0, size=workers, local_rank=0)
    check_shares(setup, world, sync_bn=True)                  # synchronized: any share will do
    if refused:
        with pytest.raises(RecipeError, match="model.sync_batchnorm: false, but with 2 workers"):
            check_shares(setup, world, sync_bn=False)
    else:
        check_shares(setup, world, sync_bn=False)
