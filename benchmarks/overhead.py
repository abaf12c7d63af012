"""How far is trainwell's epoch from a hand-written loop, and from the hardware's limit?

The MLP of seed 004 (784-512-256-10, batch norm, dropout 0.5, Adam 1e-3, batch 128,
cross-entropy) on synthetic MNIST-shaped data, trained by:
  - naive loop        : DataLoader over a TensorDataset, default torch.optim.Adam;
  - fused loop        : tensor indexing for batches, fused Adam;
  - trainwell 32      : `trainwell.fit` with its defaults (metrics, best+last checkpoints every
                        epoch, history.csv, probes, the progress bar drawing to an off-screen
                        terminal) but PyTorch's initialization (see RECIPE), train.precision = "32";
  - trainwell bf16    : the same with train.precision = "bf16-mixed";
  - trainwell compile : train.compile = true; and compile + bf16 both;
  - tw ... 1 thread   : bf16 and float32 with train.threads = 1 (torch's CPU threads: with two cores, a
                        second thread halves the matrix products but wakes for every other operation).
Every contender trains on the same rows and evaluates the validation split once per epoch. Each run
is a fresh process (so its peak memory, VmHWM, is its own); the runs are interleaved, one round per
seed (the order shuffled per round), and seed s seeds the initialization, the batch order and
dropout of every contender. Figures: the median seconds per epoch (each run's first epoch dropped:
warm-up and compilation), the CPU seconds of those epochs (the process's threads together: the work
apart from waiting), the validation accuracy of each seed, the median VmHWM; each run's line also
shows the machine's load average when it ended.

The float32 GEMM floor is the time of the epoch's matrix products alone: the step's forward,
input-gradient and weight-gradient products at their shapes, times the steps of an epoch, plus the
validation forward, each product timed here back to back in float32 (the machine's measured rate
at those shapes; the peak rate is printed too). Goals on a quiet CPU: trainwell 32 <= 0.90x the
naive loop; the best trainwell option <= 2.5x the floor; bf16's accuracy within the seed-to-seed
spread of float32's.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/overhead.py [--rows 24000] [--epochs 4] [--seeds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

LAYERS = [(784, 512), (512, 256), (256, 10)]
BATCH = 128
RECIPE = {
    "model.hidden": [512, 256], "model.norm": "batch", "model.dropout": 0.5, "model.activation": "relu",
    "optimizer.kind": "adam", "optimizer.lr": 1e-3, "train.batch_size": BATCH, "loss.kind": "cross_entropy",
    "schedule.kind": "constant", "stopping.enabled": False, "data.split": [0.8, 0.2, 0.0], "data.normalize": "none",
    # PyTorch's own initialization, biases included, as the hand-written loops have it (trainwell's default weights
    # are PyTorch's too; its default biases are zeros), so the accuracy column compares the same network trained
    # the same way.
    "init.weights": "pytorch", "init.bias": "pytorch",
}


def make_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 784)).astype(np.float32)
    w = rng.normal(size=(784, 10)).astype(np.float32)
    return x, (x @ w).argmax(1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10))


def split(x, y):
    n = int(0.8 * len(x))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return t(x[:n]), t(y[:n]), t(x[n:]), t(y[n:])


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds over all its threads)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float], end: tuple[float, float] | None = None) -> tuple[float, float]:
    end = end or clock()
    return end[0] - start[0], end[1] - start[1]


def evaluate(model, xv, yv) -> float:
    model.eval()
    with torch.inference_mode():
        out = model(xv)
        F.cross_entropy(out, yv).item()
        acc = (out.argmax(1) == yv).float().mean().item()
    model.train()
    return acc


def naive_loop(x, y, epochs: int, seed: int) -> tuple[list[float], float]:
    xt, yt, xv, yv = split(x, y)
    torch.manual_seed(seed)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=BATCH, shuffle=True)
    times, acc = [], math.nan
    for _ in range(epochs):
        tic = clock()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        acc = evaluate(model, xv, yv)
        times.append(since(tic))
    return times, acc


def fused_loop(x, y, epochs: int, seed: int) -> tuple[list[float], float]:
    xt, yt, xv, yv = split(x, y)
    torch.manual_seed(seed)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(seed)
    times, acc = [], math.nan
    for _ in range(epochs):
        tic = clock()
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        acc = evaluate(model, xv, yv)
        times.append(since(tic))
    return times, acc


def trainwell_loop(options: dict):
    def run(x, y, epochs: int, seed: int) -> tuple[list[float], float]:
        from rich.console import Console

        import trainwell as tw
        from trainwell import progress
        from trainwell.loop import Callback

        class EpochClock(Callback):
            """Wall time between epoch ends: training, validation, metrics, checkpoints, history."""

            def fit_start(self, trainer) -> None:
                self.marks = [clock()]

            def epoch_end(self, trainer, row) -> None:
                self.marks.append(clock())

        epochs_clock = EpochClock()
        # Draw the live bar as in a terminal, into a buffer, so its cost is counted.
        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        original = progress.ProgressBar.__init__
        progress.ProgressBar.wanted = staticmethod(lambda quiet, console=None: True)
        progress.ProgressBar.__init__ = lambda self, c=None: original(self, console)
        with tempfile.TemporaryDirectory() as d:
            result = tw.fit(out=os.path.join(d, "run"), quiet=True, data=(x, y), callbacks=[epochs_clock],
                            **RECIPE, **options, **{"train.epochs": epochs, "seed": seed})
        times = [since(a, b) for a, b in zip(epochs_clock.marks, epochs_clock.marks[1:])]
        return times, result.history[-1]["val_accuracy"]
    return run


CONTENDERS = {
    "naive loop": naive_loop,
    "fused loop": fused_loop,
    "trainwell 32": trainwell_loop({}),
    "trainwell bf16": trainwell_loop({"train.precision": "bf16-mixed"}),
    "trainwell compile": trainwell_loop({"train.compile": True}),
    "tw compile+bf16": trainwell_loop({"train.compile": True, "train.precision": "bf16-mixed"}),
    "tw bf16 1 thread": trainwell_loop({"train.precision": "bf16-mixed", "train.threads": 1}),
    "tw 32 1 thread": trainwell_loop({"train.threads": 1}),
}


def vm_hwm_mib() -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return math.nan


def one(name: str, rows: int, epochs: int, seed: int) -> None:
    """Run one contender in this process and print its figures as one JSON line."""
    import warnings

    warnings.simplefilter("ignore")
    x, y = make_data(rows)
    times, acc = CONTENDERS[name](x, y, epochs, seed)
    print(json.dumps({"times": [w for w, _ in times], "cpu": [c for _, c in times], "accuracy": acc,
                      "vmhwm": vm_hwm_mib()}))


# ------------------------------------------------------------------------------ the GEMM floor
def _time_mm(m: int, k: int, n: int, reps: int = 30) -> float:
    """Median seconds of one float32 (m x k) @ (k x n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    samples = []
    for _ in range(reps):
        tic = time.perf_counter()
        a @ b
        samples.append(time.perf_counter() - tic)
    return statistics.median(samples)


def gemm_floor(rows: int) -> tuple[float, float]:
    """(seconds of an epoch's matrix products in float32, the peak GFLOP/s measured at 128x784x512)."""
    n_train = int(0.8 * rows)
    n_val = rows - n_train
    full, last = divmod(n_train, BATCH)

    def step(b: int) -> float:
        t = 0.0
        for i, (fan_in, fan_out) in enumerate(LAYERS):
            t += _time_mm(b, fan_in, fan_out)                  # forward
            t += _time_mm(fan_out, b, fan_in)                  # weight gradient (out x b) @ (b x in)
            if i:                                              # input gradient (none for the data)
                t += _time_mm(b, fan_out, fan_in)
        return t

    epoch = full * step(BATCH) + (step(last) if last else 0.0)
    epoch += sum(_time_mm(n_val, fan_in, fan_out, reps=5) for fan_in, fan_out in LAYERS)
    peak = 2 * 128 * 784 * 512 / _time_mm(128, 784, 512, reps=200) / 1e9
    return epoch, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3, help="rounds; round s runs every contender with seed s")
    ap.add_argument("--only", nargs="*", default=None, help="contenders to run (default: all)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.rows, args.epochs, args.seed)
        return
    names = args.only or list(CONTENDERS)
    per: dict[str, list[dict]] = {k: [] for k in names}
    for seed in range(args.seeds):
        order = list(names)
        random.Random(seed).shuffle(order)
        for name in order:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--seed", str(seed), "--rows",
                                   str(args.rows), "--epochs", str(args.epochs)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{name} (seed {seed}) failed:\n{proc.stderr[-3000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["epoch"] = statistics.median(res["times"][1:])
            res["epoch_cpu"] = statistics.median(res["cpu"][1:])
            per[name].append(res)
            print(f"seed {seed}  {name:<18} {res['epoch']:.3f} s/epoch ({res['epoch_cpu']:.3f} CPU s)  "
                  f"val_accuracy {res['accuracy']:.4f}  VmHWM {res['vmhwm']:.0f} MiB  load {os.getloadavg()[0]:.1f}",
                  flush=True)
    floor, peak = gemm_floor(args.rows)
    load = os.getloadavg()
    med = {k: statistics.median(r["epoch"] for r in v) for k, v in per.items()}
    base = med.get("naive loop", math.nan)
    mem_base = statistics.median(r["vmhwm"] for r in per["naive loop"]) if "naive loop" in per else math.nan
    print(f"\n{args.rows} rows (80% train), {args.epochs} epochs, {args.seeds} seeds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; float32 peak {peak:.0f} GFLOP/s at 128x784x512; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    print(f"{'contender':<19}{'s/epoch':>9}{'vs naive':>10}{'vs floor':>10}{'CPU s':>8}{'VmHWM MiB':>11}{'vs naive':>10}"
          f"   val_accuracy per seed")
    for k, runs in per.items():
        mem = statistics.median(r["vmhwm"] for r in runs)
        cpu = statistics.median(r["epoch_cpu"] for r in runs)
        accs = "  ".join(f"{r['accuracy']:.4f}" for r in runs)
        print(f"{k:<19}{med[k]:>9.3f}{med[k] / base:>10.2f}{med[k] / floor:>10.2f}{cpu:>8.3f}{mem:>11.0f}"
              f"{mem / mem_base:>10.2f}   {accs}")
    print(f"{'GEMM floor (fp32)':<19}{floor:>9.3f}{floor / base:>10.2f}{1:>10.2f}")
    best = min((v, k) for k, v in med.items() if k.startswith(("trainwell", "tw ")))
    print(f"\ngoals: trainwell 32 <= 0.90x naive ({med.get('trainwell 32', math.nan) / base:.2f}); "
          f"best option <= 2.5x the floor ({best[1]}: {best[0] / floor:.2f}); "
          f"memory <= 1.2x the naive loop's ({statistics.median(r['vmhwm'] for r in per.get('trainwell 32', [{'vmhwm': math.nan}])) / mem_base:.2f})")


if __name__ == "__main__":
    main()
