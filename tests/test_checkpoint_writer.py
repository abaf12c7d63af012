"""The checkpoint files of a run are written by a helper thread (checkpoint.BackgroundWriter): in the
order they were made, each with the bytes of its moment, all on disk when `fit` returns; a failed
write reaches the training thread and nothing queued after it is written."""

import threading
import warnings

import pytest
import torch

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell.checkpoint import BackgroundWriter, encode, load_checkpoint, read_manifest
from trainwell.errors import WriteError

TINY = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16], "train.epochs": 3,
        "train.batch_size": 32, "watch.probes": False, "watch.doctor": False, "watch.report": False}


def _blob(value: float, step: int) -> bytes:
    return encode({"model.w": torch.full((4, 3), value)}, {"step": step}, "x")


def test_files_land_in_submission_order_with_their_own_bytes(tmp_path):
    writer = BackgroundWriter()
    for step in range(6):
        writer.submit(tmp_path, {"last.safetensors": _blob(float(step), step)})
        if step % 2 == 0:
            writer.submit(tmp_path, {"best.safetensors": _blob(-float(step), step)})
    writer.close()
    tensors, meta = load_checkpoint(tmp_path / "last.safetensors")      # verified against the manifest
    assert meta["step"] == 5 and torch.equal(tensors["model.w"], torch.full((4, 3), 5.0))
    tensors, meta = load_checkpoint(tmp_path / "best.safetensors")
    assert meta["step"] == 4 and torch.equal(tensors["model.w"], torch.full((4, 3), -4.0))
    assert set(read_manifest(tmp_path)) == {"last.safetensors", "best.safetensors"}
    assert not any(t.name == "trainwell-checkpoint-writer" for t in threading.enumerate())


def test_a_failed_write_is_raised_at_the_next_submit_and_what_follows_is_dropped(tmp_path, monkeypatch):
    real, seen = ckpt.write_files, []

    def second_fails(folder, files):
        seen.append(threading.current_thread().name)
        if len(seen) == 2:
            raise WriteError(f"{folder}: could not write (disk full)")
        real(folder, files)

    monkeypatch.setattr(ckpt, "write_files", second_fails)
    writer = BackgroundWriter()
    writer.submit(tmp_path, {"last.safetensors": _blob(1.0, 1)})
    writer.submit(tmp_path, {"last.safetensors": _blob(2.0, 2)})
    writer.submit(tmp_path, {"last.safetensors": _blob(3.0, 3)})
    with pytest.raises(WriteError, match="disk full"):
        writer.close()
    assert seen == ["trainwell-checkpoint-writer"] * 2            # the third was never attempted
    assert load_checkpoint(tmp_path / "last.safetensors")[1]["step"] == 1
    writer.submit(tmp_path, {"last.safetensors": _blob(4.0, 4)})  # reported once; the writer goes on
    writer.close()
    assert load_checkpoint(tmp_path / "last.safetensors")[1]["step"] == 4


def test_close_without_check_waits_but_keeps_the_callers_error_first(tmp_path, monkeypatch):
    def fails(folder, files):
        raise WriteError("boom")

    monkeypatch.setattr(ckpt, "write_files", fails)
    writer = BackgroundWriter()
    writer.submit(tmp_path, {"last.safetensors": _blob(1.0, 1)})
    writer.close(check=False)
    writer.close()                        # the error was dropped with the caller's own, not raised later
    assert not (tmp_path / "last.safetensors").exists()


def test_fit_writes_on_the_helper_thread_and_returns_with_every_file_on_disk(tmp_path, monkeypatch):
    real, threads = ckpt.write_files, []

    def recording(folder, files):
        threads.append(threading.current_thread().name)
        real(folder, files)

    monkeypatch.setattr(ckpt, "write_files", recording)
    warnings.simplefilter("ignore")
    run = tw.fit(out=tmp_path / "run", quiet=True, **TINY)
    assert threads and set(threads) == {"trainwell-checkpoint-writer"}
    tensors, meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == 3 and len(meta["history"]) == len(run.history) == 3
    assert not any(t.name == "trainwell-checkpoint-writer" for t in threading.enumerate())


def test_a_write_that_fails_during_fit_stops_fit_with_its_error(tmp_path, monkeypatch):
    real, calls = ckpt.write_files, []

    def second_epoch_fails(folder, files):
        calls.append(sorted(files))
        if len(calls) == 2:
            raise WriteError(f"{folder}/last.safetensors: could not write (No space left on device)")
        real(folder, files)

    monkeypatch.setattr(ckpt, "write_files", second_epoch_fails)
    warnings.simplefilter("ignore")
    with pytest.raises(WriteError, match="No space left"):
        tw.fit(out=tmp_path / "run", quiet=True, **{**TINY, "train.epochs": 6})
    assert len(calls) <= 3                # raised at the next epoch's write at the latest
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")[1]["epoch"] == 1


def test_a_slow_disk_makes_submit_wait_instead_of_holding_every_checkpoint(tmp_path):
    # A run that checkpoints faster than the disk writes would otherwise keep each waiting checkpoint's
    # bytes in memory (a large model saved every step: gigabytes). Jobs beyond PENDING wait at submit.
    release, started, done = threading.Event(), threading.Event(), []
    writer = BackgroundWriter()

    def slow():
        started.set()
        release.wait(10)
        done.append("slow")

    writer.call(slow)
    assert started.wait(10)                   # the writer is busy with the slow job; the queue is empty
    for i in range(BackgroundWriter.PENDING):
        writer.call(lambda i=i: done.append(i))
    blocked = threading.Thread(target=writer.call, args=(lambda: done.append("late"),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()                 # the submitter waits while PENDING jobs are queued
    release.set()
    blocked.join(10)
    writer.close()
    assert done == ["slow", *range(BackgroundWriter.PENDING), "late"]
