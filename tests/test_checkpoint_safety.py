"""Checkpoints are safe to load and survive faults: a pickle that would run code is refused and
never runs; every write is atomic and verified by the manifest; failing writes and corrupted bytes
give a clear error naming the file and keep the previous checkpoint loadable; the run lock."""

import errno
import os
import pickle
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trainwell as tw
from trainwell.checkpoint import MANIFEST, load_checkpoint, read_manifest, save_checkpoint, write_files
from trainwell.cli import main
from trainwell.errors import CheckpointError, RunDirError, WriteError
from trainwell.rundir import TMP_PREFIX, acquire_run_lock, release_run_lock

TINY = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16], "train.epochs": 3,
        "train.batch_size": 32, "watch.probes": False, "watch.doctor": False, "watch.report": False}


class OpensAFile:
    """A real malicious payload: unpickling it calls open(marker, "w"), which creates the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    warnings.simplefilter("ignore")
    return tw.fit(out=tmp_path_factory.mktemp("runs") / "run", quiet=True, **TINY)


def _copy_run(run, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


# ----------------------------------------------------------------------------------- no pickle
def test_the_payload_is_real(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(OpensAFile(proof))).close()
    assert proof.exists()
    proof.unlink()
    with open(tmp_path / "p.pt", "wb") as f:
        torch.save({"x": OpensAFile(proof)}, f)
    torch.load(tmp_path / "p.pt", weights_only=False)["x"].close()
    assert proof.exists()


@pytest.mark.parametrize("form", ["pickle", "torch.save"])
def test_a_malicious_checkpoint_is_refused_and_never_runs(finished_run, tmp_path, capsys, form):
    run_dir = _copy_run(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    last = run_dir / "checkpoints" / "last.safetensors"
    if form == "pickle":
        last.write_bytes(pickle.dumps(OpensAFile(marker), protocol=2))
    else:
        torch.save({"model": OpensAFile(marker)}, last)
    (run_dir / "metrics.json").unlink()            # an unfinished run, so resume loads the checkpoint
    with pytest.raises(CheckpointError, match="refused: trainwell loads only safetensors") as info:
        load_checkpoint(last)
    assert str(last) in str(info.value)
    assert main(["resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(last) in err and "unpickling can run arbitrary code" in err
    best = run_dir / "checkpoints" / "best.safetensors"
    best.write_bytes(pickle.dumps(OpensAFile(marker)))
    with pytest.raises(CheckpointError, match="a pickle, refused"):
        from trainwell.predict import load_run
        load_run(run_dir)
    assert not marker.exists()


# ------------------------------------------------------------------------- manifest and fuzzing
def _small_state():
    g = torch.Generator().manual_seed(0)
    tensors = {"model.w": torch.randn(6, 5, generator=g), "model.b": torch.randn(5, generator=g),
               "optim.0.step": torch.tensor(3.0), "rng.shuffle": torch.Generator().manual_seed(1).get_state()}
    return tensors, {"epoch": 2, "step": 7, "history": [{"epoch": 1, "train_loss": 0.5}]}


def _same(a, b) -> bool:
    meta = [{k: v for k, v in m.items() if k != "format"} for m in (a[1], b[1])]
    return meta[0] == meta[1] and a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


def test_manifest_lists_each_checkpoint_with_its_sha256(finished_run):
    import hashlib

    folder = finished_run.path / "checkpoints"
    manifest = read_manifest(folder)
    for name in ("last.safetensors", "best.safetensors"):
        raw = (folder / name).read_bytes()
        assert manifest[name] == {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    save_checkpoint(folder / "last.safetensors", *_small_state())
    return folder, (folder / "last.safetensors").read_bytes(), (folder / MANIFEST).read_bytes()


FUZZ_CASES = 400


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_checkpoints_fail_cleanly_naming_the_file(valid_checkpoint, data):
    folder, good, manifest = valid_checkpoint
    path = folder / "last.safetensors"
    raw = bytearray(good)
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="keep")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            i = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] = data.draw(st.integers(0, 255), label="byte")
    path.write_bytes(bytes(raw))
    for with_manifest in (True, False):
        if with_manifest:
            (folder / MANIFEST).write_bytes(manifest)
        else:
            (folder / MANIFEST).unlink()
        tic = time.perf_counter()
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
        else:   # with the manifest only the unchanged bytes load; without it, any parse is still safe
            assert not with_manifest or (bytes(raw) == good and _same(loaded, _small_state()))
        assert time.perf_counter() - tic < 5


# ---------------------------------------------------------------------------- failing writes
@pytest.mark.parametrize("call", ["write", "fsync", "replace"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_a_failing_write_keeps_a_loadable_checkpoint_and_says_so(tmp_path, monkeypatch, call, code):
    folder = tmp_path / "ck"
    folder.mkdir()
    old = _small_state()
    save_checkpoint(folder / "last.safetensors", *old)
    new = ({k: v + 1 if v.is_floating_point() else v for k, v in old[0].items()}, {**old[1], "epoch": 3})
    from trainwell.checkpoint import encode

    blob = encode(*new, "last.safetensors")
    real = getattr(os, call)
    calls = 0
    while True:               # fail the 1st, 2nd, ... call of os.<call> inside one checkpoint write
        calls += 1
        count = 0

        def failing(*args, _n=calls, **kw):
            nonlocal count
            count += 1
            if count == _n:
                raise OSError(code, os.strerror(code))
            return real(*args, **kw)

        monkeypatch.setattr(os, call, failing)
        try:
            write_files(folder, {"last.safetensors": blob})
            failed = None
        except WriteError as exc:
            failed = str(exc)
        monkeypatch.setattr(os, call, real)
        if failed is None:        # past the last call: every failure point was tried
            break
        assert os.strerror(code) in failed and str(folder) in failed
        loaded = load_checkpoint(folder / "last.safetensors")
        assert _same(loaded, old) or _same(loaded, new)
        assert not [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
        save_checkpoint(folder / "last.safetensors", *old)      # back to the old state for the next point
    assert calls >= 3


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.tuples(st.sampled_from([("last.safetensors",), ("last.safetensors", "best.safetensors")]),
                                 st.sampled_from([None, 1, 2, 3, 4])), min_size=1, max_size=6))
def test_a_run_killed_inside_successive_writes_always_leaves_files_its_manifest_accepts(tmp_path_factory, writes):
    # Each write is killed at its k-th os.replace (staged manifest, each file, final manifest) or ends.
    # Whatever the sequence, a file on disk matches the manifest (current or staged digest), and a
    # file not on disk has no current digest (it never landed whole). Found by the SIGKILL test: a
    # write after an interrupted one kept the stale digest, and a kill then left a file matching neither.
    import hashlib

    from trainwell.checkpoint import verify

    folder = tmp_path_factory.mktemp("kills")
    real = os.replace
    for i, (names, kill_at) in enumerate(writes):
        count = 0

        def replace(*args, _kill_at=kill_at, **kw):
            nonlocal count
            count += 1
            if count == _kill_at:
                raise Killed
            return real(*args, **kw)

        files = {name: f"{name} #{i} {'x' * (i % 3)}".encode() for name in names}
        os.replace = replace
        try:
            write_files(folder, files)
        except Killed:
            pass
        finally:
            os.replace = real
        manifest = read_manifest(folder)
        for name in ("last.safetensors", "best.safetensors"):
            path = folder / name
            if path.exists():
                verify(path, path.read_bytes(), manifest)          # raises CheckpointError if neither
            else:
                assert "sha256" not in manifest.get(name, {})
        if kill_at is None:
            for name, data in files.items():
                assert manifest[name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_disk_full_during_a_run_is_one_line_and_keeps_the_previous_epoch(tmp_path, monkeypatch, capsys):
    real = os.replace
    seen = []

    def full_at_epoch_3(src, dst, *a, **kw):
        if str(dst).endswith("last.safetensors"):
            seen.append(dst)
            if len(seen) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", full_at_epoch_3)
    out = tmp_path / "run"
    args = ["fit", "--quiet", "--out", str(out)] + [f"--set={k}={v!r}".replace("'", '"') for k, v in TINY.items()]
    warnings.simplefilter("ignore")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and "last.safetensors" in err
    tensors, meta = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == 2 and len(meta["history"]) == 2


def test_no_checkpoint_with_non_finite_weights_is_written(tmp_path):
    tensors, meta = _small_state()
    tensors["model.w"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite parameter 'w'"):
        save_checkpoint(tmp_path / "x.safetensors", tensors, meta)
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_swept_when_a_run_resumes(finished_run, tmp_path):
    run_dir = _copy_run(finished_run, tmp_path)
    stale = run_dir / "checkpoints" / (TMP_PREFIX + "last.safetensors.abc123")
    stale.write_bytes(b"half a checkpoint")
    with pytest.raises(RunDirError, match="already ended"):
        tw.resume(run_dir, quiet=True)
    assert not stale.exists()


# ---------------------------------------------------------------------------------------- lock
HOLD = ("import sys, time; from trainwell.rundir import acquire_run_lock; acquire_run_lock(sys.argv[1]); "
        "print('held', flush=True); time.sleep(60)")


def test_a_second_process_resuming_the_same_run_is_refused(finished_run, tmp_path, capsys):
    run_dir = _copy_run(finished_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["resume", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"{run_dir}: in use by another trainwell process (pid {holder.pid})" in err
        with pytest.raises(RunDirError, match="in use by another trainwell process"):
            tw.fit(out=run_dir, quiet=True, force=True, **TINY)
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the lock with the killed process: nothing stale is left behind.
    acquire_run_lock(run_dir)
    release_run_lock(run_dir)
