"""Runs `trainwell ARGS...` and SIGKILLs itself at its N-th optimizer step (counted by a global torch
optimizer hook, across every run the command makes): a `kill -9` at a reproducible moment.

    python kill_at_step.py N ARGS...
"""

import os
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainwell.cli import main

if __name__ == "__main__":
    n, count = int(sys.argv[1]), [0]

    def hook(opt, args, kwargs):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_pre_hook(hook)
    sys.exit(main(sys.argv[2:]))
