"""scripts/gpu_check.sh, the GPU figures of issue 13: on a machine without CUDA it refuses in one line;
its CPU rehearsal runs every step of it (precisions, compile, SIGKILL and resume, the hand-written
loop), so that the one try on a lent GPU does not fail on the script itself."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the check itself")
def test_without_cuda_it_refuses_in_one_line_and_runs_nothing():
    env = {**os.environ, "PY": sys.executable}
    env.pop("GPU_CHECK_DEVICE", None)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_step_and_the_resume_is_exact():
    env = {**os.environ, "PY": sys.executable, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_ROWS": "2000"}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not a GPU measurement" in out and "FAILED" not in out
    for name in ("32", "bf16-mixed", "compile"):
        assert any(line.startswith(name + " ") and "steady epoch" in line for line in out.splitlines()), name
    assert "history identical: True; weights, optimizer and RNG states identical: True" in out
    assert out.count("hand loop ") == 2 and "gpu_check done" in out
