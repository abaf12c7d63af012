"""Peak memory of `trainwell fit` against a hand-written loop on the same NPZ file.

Both read one float32 NPZ (default 30,000 x 784, 94 MB of features, 10 classes), train the default
recipe's network (MLP 256-128, batch norm, dropout 0.1, Adam 1e-3, batch 64, 60/20/20 split with the
features standardized on the training split) for 2 epochs, evaluate the validation split each epoch
and the test split once. Each contender is a fresh process; its peak resident memory is its VmHWM
(ru_maxrss: the process's own, or a waited-for descendant's when larger, never their sum). Since
trainwell draws the report's figures in a helper process (report/painter.py) running beside `fit`,
the table also shows each contender's process tree, sampled every SAMPLE_S seconds (a short spike
between samples can exceed it): its resident pages with those shared between its processes (a
forked copy's, a library's) counted once, estimated as the sum of each process's private pages plus
the largest process's shared ones (smaps_rollup); for one process, its VmRSS. The hand-written loop keeps one copy of the rows: it standardizes the loaded array in
place and splits by index tensors. trainwell runs as `trainwell fit` with its defaults (the watch:
probes, facts and doctor; the report); `--no-watch` also shows it with watch.enabled = false.

Goal (issue #13): trainwell <= 1.2x the hand-written loop (the process tree's figure is the one that
counts memory a machine must have).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/memory.py [--rows 30000] [--epochs 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_npz(path: str, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 784)).astype(np.float32)
    w = rng.normal(size=(784, 10)).astype(np.float32)
    np.savez(path, x=x, y=(x @ w).argmax(1))


def hand_loop(path: str, epochs: int) -> None:
    """The default recipe's training, written by hand with one copy of the rows."""
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(0)
    with np.load(path) as f:
        x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"]).long()
    perm = torch.randperm(len(x))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    train, val, test = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    mean = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, n_train, 4096):                        # statistics of the training rows, in chunks
        mean += x[train[i:i + 4096]].double().sum(0)
    mean /= n_train
    var = torch.zeros_like(mean)
    for i in range(0, n_train, 4096):
        var += ((x[train[i:i + 4096]].double() - mean) ** 2).sum(0)
    std = (var / n_train).sqrt().clamp(min=1e-12)
    x.sub_(mean.float()).div_(std.float())                   # standardized in place
    model = nn.Sequential(nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def accuracy(rows: torch.Tensor) -> float:
        model.eval()
        with torch.inference_mode():
            hits = sum(int((model(x[rows[i:i + 2048]]).argmax(1) == y[rows[i:i + 2048]]).sum())
                       for i in range(0, len(rows), 2048))
        model.train()
        return hits / len(rows)

    for epoch in range(epochs):
        order = train[torch.randperm(n_train)]
        for i in range(0, n_train, 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1} val_accuracy {accuracy(val):.4f}")
    print(f"test accuracy {accuracy(test):.4f}")


SAMPLE_S = 0.05


def _tree_resident(root: int) -> float:
    """MiB: the resident pages of process `root` and its descendants now, those shared between processes
    counted once: the sum of the processes' private pages plus the largest one's shared pages."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    private, shared, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if line[0].isupper())}
        except (OSError, ValueError):
            continue
        private += kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
        shared = max(shared, kb.get("Shared_Clean", 0) + kb.get("Shared_Dirty", 0))
    return (private + shared) / 1024


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(peak resident MiB of the process, the largest sample of its process tree's in MiB, wall seconds) of
    a command run as a fresh process."""
    tic = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    tree = 0.0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        tree = max(tree, _tree_resident(pid))
        time.sleep(SAMPLE_S)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}")
    return usage.ru_maxrss / 1024, tree, time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of all contenders (the median is shown)")
    ap.add_argument("--no-watch", action="store_true", help="also run trainwell with watch.enabled = false")
    ap.add_argument("--hand", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hand:
        hand_loop(args.hand, args.epochs)
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.npz")
        make_npz(path, args.rows)
        fit = [sys.executable, "-m", "trainwell", "fit", "--quiet", "--set", f"data.source={path!r}".replace("'", '"'),
               "--set", f"train.epochs={args.epochs}"]
        contenders = {"hand-written loop": lambda k: [sys.executable, __file__, "--hand", path, "--epochs",
                                                      str(args.epochs)],
                      "trainwell fit": lambda k: [*fit, "--out", os.path.join(d, f"run{k}")]}
        if args.no_watch:
            contenders["trainwell fit, no watch"] = lambda k: [*fit, "--set", "watch.probes=false", "--set", "watch.doctor=false", "--set", "watch.report=false", "--out",
                                                                os.path.join(d, f"nowatch{k}")]
        peaks: dict[str, list[float]] = {name: [] for name in contenders}
        trees: dict[str, list[float]] = {name: [] for name in contenders}
        for k in range(args.repeats):
            for name, cmd in contenders.items():
                peak, tree, wall = measure(cmd(k))
                peaks[name].append(peak)
                trees[name].append(tree)
                print(f"round {k}  {name:<24} VmHWM {peak:7.0f} MiB  tree {tree:7.0f} MiB  ({wall:.1f} s)", flush=True)
    mib = args.rows * 784 * 4 / 2**20
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    base, base_tree = median(peaks["hand-written loop"]), median(trees["hand-written loop"])
    print(f"\n{args.rows} x 784 float32 features ({mib:.0f} MiB), {args.epochs} epochs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'contender':<26}{'VmHWM MiB':>10}{'vs hand':>9}{'tree MiB':>10}{'vs hand':>9}")
    for name in peaks:
        med, tree = median(peaks[name]), median(trees[name])
        print(f"{name:<26}{med:>10.0f}{med / base:>9.2f}{tree:>10.0f}{tree / base_tree:>9.2f}")
    print("goal: trainwell fit <= 1.2x the hand-written loop")


if __name__ == "__main__":
    main()
