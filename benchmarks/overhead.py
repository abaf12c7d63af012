"""How much does trainwell's loop cost over a hand-written PyTorch loop?

The MLP of seed 004 (784-512-256-10, batch norm, dropout 0.5, Adam 1e-3, batch 128,
cross-entropy) on synthetic MNIST-shaped data, trained by:
  - trainwell  : `trainwell.fit` with its defaults (metrics, best+last checkpoints every epoch,
                 history.csv, the progress bar drawing to an off-screen terminal);
  - naive loop : DataLoader over a TensorDataset, default torch.optim.Adam;
  - tuned loop : tensor indexing for batches, fused Adam.
Every contender trains on the same rows and evaluates the validation split once per epoch.
Contenders are interleaved over repeats; the figure is the median seconds per epoch (first
epoch of each run dropped as warm-up). Targets: trainwell <= 0.90x naive, <= 1.05x tuned.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/overhead.py [--rows 24000] [--epochs 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import trainwell as tw  # noqa: E402
from trainwell.loop import Callback  # noqa: E402

RECIPE = {
    "model.hidden": [512, 256], "model.norm": "batch", "model.dropout": 0.5, "model.activation": "relu",
    "optimizer.kind": "adam", "optimizer.lr": 1e-3, "train.batch_size": 128, "loss.kind": "cross_entropy",
    "schedule.kind": "constant", "stopping.enabled": False, "data.split": [0.8, 0.2, 0.0], "data.normalize": "none",
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


def evaluate(model, xv, yv):
    model.eval()
    with torch.inference_mode():
        out = model(xv)
        loss, acc = F.cross_entropy(out, yv).item(), (out.argmax(1) == yv).float().mean().item()
    model.train()
    return loss, acc


def naive_loop(x, y, epochs: int) -> list[float]:
    xt, yt, xv, yv = split(x, y)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=128, shuffle=True)
    times = []
    for _ in range(epochs):
        tic = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        evaluate(model, xv, yv)
        times.append(time.perf_counter() - tic)
    return times


def tuned_loop(x, y, epochs: int) -> list[float]:
    xt, yt, xv, yv = split(x, y)
    torch.manual_seed(0)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        tic = time.perf_counter()
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        evaluate(model, xv, yv)
        times.append(time.perf_counter() - tic)
    return times


class EpochClock(Callback):
    """Wall time between epoch ends: training, validation, metrics, checkpoints and history writes."""

    def fit_start(self, trainer) -> None:
        self.marks = [time.perf_counter()]

    def epoch_end(self, trainer, row) -> None:
        self.marks.append(time.perf_counter())


def trainwell_loop(x, y, epochs: int) -> list[float]:
    from rich.console import Console

    from trainwell import progress

    clock = EpochClock()
    # Draw the live bar as in a terminal, into a buffer, so its cost is counted.
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    original = progress.ProgressBar.__init__
    progress.ProgressBar.wanted = staticmethod(lambda quiet, console=None: True)
    progress.ProgressBar.__init__ = lambda self, c=None: original(self, console)
    try:
        with tempfile.TemporaryDirectory() as d:
            tw.fit(out=os.path.join(d, "run"), quiet=True, data=(x, y), callbacks=[clock],
                   **RECIPE, **{"train.epochs": epochs})
    finally:
        progress.ProgressBar.__init__ = original
    return [b - a for a, b in zip(clock.marks, clock.marks[1:])]


CONTENDERS = {"trainwell": trainwell_loop, "naive loop": naive_loop, "tuned loop": tuned_loop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=24000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    x, y = make_data(args.rows)
    per: dict[str, list[float]] = {k: [] for k in CONTENDERS}
    order = list(CONTENDERS)
    for r in range(args.repeats):
        random.Random(r).shuffle(order)
        for name in order:
            times = CONTENDERS[name](x, y, args.epochs)
            per[name].append(statistics.median(times[1:]))
            print(f"repeat {r + 1}/{args.repeats}  {name:<10} {per[name][-1]:.3f} s/epoch", flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f"\n{args.rows} rows (80% train), {args.epochs} epochs x {args.repeats} repeats, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'contender':<12}{'median s/epoch':>16}{'vs naive':>10}{'vs tuned':>10}")
    for k, v in med.items():
        print(f"{k:<12}{v:>16.3f}{v / med['naive loop']:>10.2f}{v / med['tuned loop']:>10.2f}")
    print(f"\ntarget: trainwell <= 0.90x naive ({med['trainwell'] / med['naive loop']:.2f}), "
          f"<= 1.05x tuned ({med['trainwell'] / med['tuned loop']:.2f})")


if __name__ == "__main__":
    main()
