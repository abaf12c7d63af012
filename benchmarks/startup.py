"""End to end, whole processes: `trainwell fit` to 97% validation accuracy on digits against a
hand-written PyTorch script that does the same.

    trainwell : `python -m trainwell.cli fit --out RUN --set stopping.monitor=val_accuracy
                 --set stopping.stopping_threshold=0.97` with the default recipe otherwise
                 (bundled digits, the default MLP, Adam, cosine schedule; the watch, doctor and
                 report on, as a user gets them), stdout not a terminal;
    script    : SCRIPT below: sklearn's digits, a stratified 60/20/20 split, standardization fitted
                 on the training rows, the same MLP (256-128, batch norm, ReLU, dropout 0.1), Adam
                 1e-3, batches of 64, validation accuracy after every epoch, stop at 0.97.

Both are started as fresh processes, interleaved over repeats (the order shuffled per repeat);
the figure is the median wall time of each, and their ratio (goal: trainwell <= 1.15x the script).
Each trainwell run also reports where its time went, from the times its files were written: until
recipe.toml (imports, data, build: just before the first epoch), the epochs (until the last write of
history.csv), the conclusion (test split, calibration: metrics.json), the facts and the doctor
(diagnosis.json), the report (report.html: the wait for its figures) and the exit.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = r'''
import sys, time
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x = x.astype(np.float32)
xt, xr, yt, yr = train_test_split(x, y, train_size=0.6, stratify=y, random_state=0)
xv, xs, yv, ys = train_test_split(xr, yr, train_size=0.5, stratify=yr, random_state=0)
mean, std = xt.mean(0), xt.std(0) + 1e-8
t = lambda a: torch.from_numpy((a - mean) / std)
xt, xv = t(xt), t(xv)
yt, yv = torch.from_numpy(yt), torch.from_numpy(yv)
model = nn.Sequential(nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1),
                      nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(1, 41):
    model.train()
    perm = torch.randperm(len(xt))
    for i in range(0, len(xt), 64):
        idx = perm[i:i + 64]
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    if acc >= 0.97:
        break
print(f"epoch {epoch} val_accuracy {acc:.4f}")
'''

TARGET = ["--set", "stopping.monitor=val_accuracy", "--set", "stopping.stopping_threshold=0.97"]


# Where a run's time went: the file whose write ends each phase (see the docstring).
PHASES = {"start": "recipe.toml", "epochs": "history.csv", "conclude": "metrics.json", "doctor": "diagnosis.json",
          "report": "report.html"}


def run_trainwell(folder: Path, i: int) -> dict:
    out = folder / f"run{i}"
    tic, t0 = time.perf_counter(), time.time()
    proc = subprocess.run([sys.executable, "-m", "trainwell.cli", "fit", "--out", str(out), *TARGET],
                          capture_output=True, text=True)
    wall, t1 = time.perf_counter() - tic, time.time()
    if proc.returncode != 0:
        raise SystemExit(f"trainwell fit failed:\n{proc.stderr}")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "history.csv") as f:
        history = list(csv.DictReader(f))
    epochs = sum(float(r["seconds"]) for r in history)
    ends = [t0] + [(out / name).stat().st_mtime for name in PHASES.values()] + [t1]
    phases = {name: b - a for name, a, b in zip([*PHASES, "exit"], ends, ends[1:])}
    return {"wall": wall, "epochs": len(history), "epoch_seconds": epochs, "phases": phases,
            "val_accuracy": float(history[-1]["val_accuracy"]), "stop": metrics["stop_reason"]}


def run_script(folder: Path, i: int) -> dict:
    path = folder / "hand_written.py"
    path.write_text(SCRIPT)
    tic = time.perf_counter()
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"the hand-written script failed:\n{proc.stderr}")
    words = proc.stdout.split()
    return {"wall": wall, "epochs": int(words[1]), "val_accuracy": float(words[3])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load = os.getloadavg()
    contenders = {"trainwell": run_trainwell, "script": run_script}
    results: dict[str, list[dict]] = {k: [] for k in contenders}
    order = list(contenders)
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.repeats):
            random.Random(r).shuffle(order)
            for name in order:
                res = contenders[name](Path(d), r)
                results[name].append(res)
                print(f"repeat {r + 1}/{args.repeats}  {name:<10} {res['wall']:6.2f} s  "
                      f"({res['epochs']} epochs, val_accuracy {res['val_accuracy']:.4f})", flush=True)
    med = {k: statistics.median(x["wall"] for x in v) for k, v in results.items()}
    tw_runs = results["trainwell"]
    inside = statistics.median(x["epoch_seconds"] for x in tw_runs)
    print(f"\ndigits to 97% validation accuracy, whole processes, {args.repeats} repeats interleaved, medians; "
          f"python {sys.version.split()[0]}")
    print(f"{'contender':<12}{'wall s':>8}{'epochs':>8}{'vs script':>11}")
    for k, v in med.items():
        epochs = statistics.median(x["epochs"] for x in results[k])
        print(f"{k:<12}{v:>8.2f}{epochs:>8.0f}{v / med['script']:>11.2f}")
    print(f"\ntrainwell: {inside:.2f} s in its epochs (training, validation, checkpoints), "
          f"{med['trainwell'] - inside:.2f} s outside them (start-up, data, test, doctor, report)")
    phases = {k: statistics.median(x["phases"][k] for x in tw_runs) for k in tw_runs[0]["phases"]}
    print("trainwell by phase (medians, s; from the times its files were written): "
          + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print(f"load average (1, 5, 15 min): at the start {' '.join(f'{x:.2f}' for x in load)}, "
          f"at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"goal: trainwell <= 1.15x the script ({med['trainwell'] / med['script']:.2f})")


if __name__ == "__main__":
    main()
