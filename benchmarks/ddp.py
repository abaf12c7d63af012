"""Data-parallel training on one small machine: 2 workers x 1 thread vs 1 process x 2 threads.

The MLP of seed 004 (784-512-256-10, batch norm, dropout 0.5, Adam 1e-3, cross-entropy; the
recipe of benchmarks/overhead.py) on synthetic MNIST-shaped rows, trained through the real CLI by:
  - 1 process, 2 threads : `trainwell fit --set train.threads=2`
  - 1 worker, 1 thread   : `trainwell fit --set train.threads=1` (what one DDP worker computes alone)
  - 2 workers, 1 thread  : `trainwell fit --nproc 2 --set train.threads=1` (gloo, synchronized batch norm)
for each global batch size asked (the work per optimizer step; the all-reduce per step is the
same ~2 MB of gradients whatever the batch). Figures per contender: the median epoch time
(training + validation, first epoch dropped as warm-up; from history.csv), the training samples
per second it gives, the command's wall time (start-up included), and the validation accuracy
after the fixed budget of epochs and after a fixed budget of training seconds.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ddp.py [--rows 12000] [--epochs 4] [--batch 128,512] [--budget 20]

Reading it: two workers split each batch's compute but add, every step, one all-reduce of the
gradients, the synchronized batch norm's small all-reduces (forward and backward) and DDP's buffer
broadcast, through loopback TCP. One process with two threads splits the same matrix products
with no messages. So data parallelism pays only where a worker's compute per step outweighs the
communication: larger batches (compute grows with the rows, the gradient all-reduce does not),
wider rather than latency-bound steps, or workers on separate machines/GPUs; on 2 shared cores
with a 128-row batch the threaded process is expected to win.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from overhead import RECIPE, make_data  # noqa: E402  (the seed-004 MLP recipe and its data)

CONTENDERS = (("1 process, 2 threads", 1, 2), ("1 worker, 1 thread", 1, 1), ("2 workers, 1 thread", 2, 1))


def run(name: str, nproc: int, threads: int, data: Path, out: Path, epochs: int, batch: int) -> dict:
    sets = {**RECIPE, "data.source": str(data), "train.epochs": epochs, "train.batch_size": batch,
            "train.threads": threads, "train.device": "cpu", "watch.probes": False, "watch.doctor": False, "watch.report": False,
            "checkpoint.best": False}
    argv = [sys.executable, "-m", "trainwell", "fit", "--quiet", "--out", str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    if nproc > 1:
        argv += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    tic = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {"seconds": [float(r["seconds"]) for r in rows], "val_accuracy": [float(r["val_accuracy"]) for r in rows],
            "wall": wall}


def accuracy_within(record: dict, budget: float) -> float | None:
    """Validation accuracy of the last epoch finished within `budget` seconds of training."""
    spent, acc = 0.0, None
    for seconds, value in zip(record["seconds"], record["val_accuracy"]):
        spent += seconds
        if spent > budget:
            break
        acc = value
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=12000, help="synthetic rows (80%% train, 20%% validation)")
    ap.add_argument("--epochs", type=int, default=4, help="the fixed budget of epochs")
    ap.add_argument("--batch", default="128,512", help="global batch sizes, comma-separated (seed 004: 128)")
    ap.add_argument("--budget", type=float, default=20.0, help="the fixed budget of training seconds")
    args = ap.parse_args()
    x, y = make_data(args.rows)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.npz"
        np.savez(data, x=x, y=y)
        for batch in (int(b) for b in args.batch.split(",")):
            for i, (name, nproc, threads) in enumerate(CONTENDERS):
                rec = run(name, nproc, threads, data, Path(tmp) / f"b{batch}-{i}", args.epochs, batch)
                results.append((batch, name, rec))
                print(f"batch {batch:>5}  {name:<22} done in {rec['wall']:.1f} s", flush=True)
    train_rows = int(0.8 * args.rows)
    print(f"\n{args.rows} rows ({train_rows} train), seed-004 MLP, {args.epochs} epochs; epoch time = median "
          f"of epochs 2..{args.epochs} (training + validation); cores: {os.cpu_count()}")
    head = (f"{'batch':>6}  {'contender':<22}{'s/epoch':>9}{'samples/s':>11}{'wall s':>8}"
            f"{f'acc@{args.epochs}ep':>10}{f'acc@{args.budget:g}s':>10}")
    print(head)
    print("-" * len(head))
    for batch, name, rec in results:
        epoch = statistics.median(rec["seconds"][1:] or rec["seconds"])
        within = accuracy_within(rec, args.budget)
        print(f"{batch:>6}  {name:<22}{epoch:>9.2f}{train_rows / epoch:>11.0f}{rec['wall']:>8.1f}"
              f"{rec['val_accuracy'][-1]:>10.4f}{'-' if within is None else f'{within:.4f}':>10}")


if __name__ == "__main__":
    main()
