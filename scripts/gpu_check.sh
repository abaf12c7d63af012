#!/usr/bin/env bash
# trainwell on a CUDA GPU, in a few minutes (well under 5 on a current GPU):
#   1. `trainwell fit` with train.precision = "32", "bf16-mixed", "16-mixed", and train.compile = true:
#      epoch seconds, validation accuracy, compile seconds;
#   2. one run (16-mixed: the gradient scaler's state is resumed too) killed with SIGKILL after its
#      first mid-epoch checkpoint, resumed, and compared with the same run uninterrupted;
#   3. the epoch time of trainwell against a hand-written loop (same data on the GPU, same model,
#      Adam, batch size), float32 and bf16 autocast.
# Synthetic MNIST-shaped data (40,000 x 784, 10 classes) written to a temporary NPZ; the MLP of
# seed 004 (784-512-256-10, batch norm, dropout 0.5), Adam 1e-3, batches of 256, 3 epochs.
#
#   scripts/gpu_check.sh            (PY=/path/to/python to choose the interpreter)
#
# Without CUDA it refuses with one line and exit code 3: it measures nothing on a CPU.
# GPU_CHECK_DEVICE=cpu GPU_CHECK_ROWS=2000 runs the same steps on the CPU, on fewer rows (bf16 in
# place of float16, which a CPU does not train in): a rehearsal of the script itself, not a measurement
# (tests/test_gpu_check.py runs it so that the one try on a lent GPU does not fail on the script).
set -euo pipefail
PY=${PY:-python}
export OMP_WAIT_POLICY=PASSIVE
export GPU_CHECK_DEVICE=${GPU_CHECK_DEVICE:-cuda} GPU_CHECK_ROWS=${GPU_CHECK_ROWS:-40000}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if [ "$GPU_CHECK_DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); this check needs a GPU, nothing was run" >&2
  exit 3
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
exec "$PY" - "$WORK" <<'PYTHON'
import csv, json, os, signal, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

work = Path(sys.argv[1])
started = time.perf_counter()
DEVICE, ROWS = os.environ["GPU_CHECK_DEVICE"], int(os.environ["GPU_CHECK_ROWS"])
CUDA = DEVICE == "cuda"
HALF = "16-mixed" if CUDA else "bf16-mixed"       # a CPU rehearsal: float16 does not train on a CPU
rng = np.random.default_rng(0)
x = rng.normal(size=(ROWS, 784)).astype(np.float32)
y = (x @ rng.normal(size=(784, 10)).astype(np.float32)).argmax(1)
np.savez(work / "data.npz", x=x, y=y)
if CUDA:
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported()}", flush=True)
else:
    print(f"device: cpu (a rehearsal of this script on {ROWS} rows, not a GPU measurement), torch {torch.__version__}",
          flush=True)


def sync():
    if CUDA:
        torch.cuda.synchronize()

BASE = {"data.source": str(work / "data.npz"), "data.normalize": "none", "data.split": [0.8, 0.2, 0.0],
        "model.hidden": [512, 256], "model.norm": "batch", "model.dropout": 0.5, "optimizer.kind": "adam",
        "optimizer.lr": 1e-3, "train.batch_size": 256, "train.epochs": 3, "train.device": DEVICE,
        "schedule.kind": "constant", "stopping.enabled": False, "watch.doctor": False, "watch.report": False,
        # the hand-written loop's initialization (PyTorch's own, biases too; trainwell's default biases are zeros),
        # so the accuracy column compares like with like
        "init.weights": "pytorch", "init.bias": "pytorch"}


def cli(*args, **sets):
    argv = [sys.executable, "-m", "trainwell.cli", *args, "--quiet"]
    for k, v in {**BASE, **sets}.items():
        argv += ["--set", f"{k}={json.dumps(v)}"]
    return argv


def history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def fit(name, **sets):
    run = work / name
    proc = subprocess.run(cli("fit", "--out", str(run), **sets), capture_output=True, text=True)
    if proc.returncode:
        print(f"{name}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
        return None
    rows, metrics = history(run), json.loads((run / "metrics.json").read_text())
    steady = statistics.median(float(r["seconds"]) for r in rows[1:])
    comp = metrics.get("compile") or {}
    extra = (f", compile {comp['seconds']:.1f} s" + (f" (fell back: {comp['fallback']})" if comp.get("fallback") else "")
             if comp else "")
    print(f"{name:<22} epoch 1 {float(rows[0]['seconds']):6.2f} s, steady epoch {steady:6.3f} s, "
          f"val_accuracy {float(rows[-1]['val_accuracy']):.4f}{extra}", flush=True)
    return steady


print("\n1. fit at each precision, and compiled", flush=True)
epochs = {}
for name, sets in {"32": {}, "bf16-mixed": {"train.precision": "bf16-mixed"},
                   **({"16-mixed": {"train.precision": "16-mixed"}} if CUDA else {}),
                   "compile": {"train.compile": True}}.items():
    epochs[name] = fit(name, **sets)

print(f"\n2. kill (SIGKILL) after the first mid-epoch checkpoint, resume, compare ({HALF})", flush=True)
KILL = {"train.precision": HALF, "checkpoint.every_steps": max(2, ROWS // 1000), "train.epochs": 3}
ref, killed = work / "ref", work / "killed"
subprocess.run(cli("fit", "--out", str(ref), **KILL), check=True, capture_output=True)
proc = subprocess.Popen(cli("fit", "--out", str(killed), **KILL), stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
last = killed / "checkpoints" / "last.safetensors"
while proc.poll() is None and not last.exists():
    time.sleep(0.05)
if proc.poll() is None:
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print("killed after its first checkpoint", flush=True)
else:
    print("the run finished before it could be killed (a very fast GPU): the resume below restarts nothing")
resumed = subprocess.run([sys.executable, "-m", "trainwell.cli", "resume", str(killed), "--quiet"],
                         capture_output=True, text=True)
if resumed.returncode:
    print(f"resume FAILED (exit {resumed.returncode})\n{resumed.stderr[-2000:]}")
else:
    a = [{k: v for k, v in r.items() if k != "seconds"} for r in history(ref)]
    b = [{k: v for k, v in r.items() if k != "seconds"} for r in history(killed)]
    from trainwell import checkpoint as ckpt
    ta, ma = ckpt.load_checkpoint(ref / "checkpoints" / "last.safetensors")
    tb, mb = ckpt.load_checkpoint(killed / "checkpoints" / "last.safetensors")
    same_weights = ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    print(f"history identical: {a == b}; weights, optimizer and RNG states identical: {same_weights}; "
          f"scaler {mb.get('scaler')} vs {ma.get('scaler')}", flush=True)


print("\n3. epoch time against a hand-written loop (data on the GPU, tensor indexing)", flush=True)


def hand_loop(dtype):
    dev = torch.device(DEVICE)
    n = int(0.8 * len(x))
    xt, yt = torch.from_numpy(x[:n]).to(dev), torch.from_numpy(y[:n]).to(dev)
    xv, yv = torch.from_numpy(x[n:]).to(dev), torch.from_numpy(y[n:]).to(dev)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(256, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(3):
        sync()
        tic = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, 256):
            idx = perm[i:i + 256]
            with torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(xt[idx]).float(), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None):
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        sync()
        times.append(time.perf_counter() - tic)
    return statistics.median(times[1:]), acc


for label, dtype, mine in (("float32", None, "32"), ("bf16 autocast", torch.bfloat16, "bf16-mixed")):
    seconds, acc = hand_loop(dtype)
    ratio = f"{epochs[mine] / seconds:.2f}x" if epochs.get(mine) else "n/a"
    print(f"hand loop {label:<14} steady epoch {seconds:6.3f} s (val_accuracy {acc:.4f}); "
          f"trainwell {mine}: {ratio} of it", flush=True)
print(f"\ngpu_check done in {time.perf_counter() - started:.0f} s")
PYTHON
