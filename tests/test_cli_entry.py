"""The CLI entry point: a passive OpenMP wait policy before torch is imported; a bare Ctrl-C says what stays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import trainwell

SRC = str(Path(trainwell.__file__).resolve().parents[1])
# Import the CLI, check torch is not loaded yet, run a command that imports torch, report the policy.
PROBE = ("import os, sys, trainwell.cli as c; before = 'torch' in sys.modules; "
         "code = c.main(['recipe']); import torch; "
         "print('RESULT', before, os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads() > 0, code)")


def _probe(policy: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    assert line, out.stderr
    return line[0].split()[1:]


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_passive_unless_the_user_chose(given, expected):
    before, policy, _, code = _probe(given)
    assert before == "False" and policy == expected and code == "0"


def test_a_bare_interrupt_says_what_stays_and_how_to_write_the_report(monkeypatch, capsys):
    from trainwell import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "recipe", interrupted)
    assert cli.main(["recipe"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("trainwell: interrupted; ") and "trainwell report RUN_DIR" in err
