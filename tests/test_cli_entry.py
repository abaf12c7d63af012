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


def _entry(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """`trainwell ARGS` as the console script runs it, with an exit handler that leaves a file."""
    code = ("import atexit, pathlib, sys\n"
            f"atexit.register(lambda: pathlib.Path({str(tmp_path / 'handler-ran')!r}).write_text('yes'))\n"
            f"sys.argv = ['trainwell', *{args!r}]\n"
            "from trainwell.cli import entry\nentry()")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_ends_after_its_exit_handlers_with_its_output_flushed(tmp_path):
    """After a command that succeeded the process skips the interpreter's teardown, but nothing else:
    the exit handlers run, the whole output arrives, the exit code is 0."""
    from trainwell.recipe import load_recipe

    out = _entry(["recipe"], tmp_path)
    assert out.returncode == 0 and (tmp_path / "handler-ran").read_text() == "yes"
    assert out.stdout == load_recipe(None, {}).to_toml(comments=True) and len(out.stdout) > 8192   # past a pipe's buffer


def test_a_command_that_fails_ends_the_ordinary_way(tmp_path):
    out = _entry(["recipe", "--set", "optimizer.lr=-1"], tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("trainwell: error: ") and "optimizer.lr" in out.stderr
    assert (tmp_path / "handler-ran").read_text() == "yes"


def test_the_summary_keeps_each_metric_with_its_value_and_the_run_folder_whole_on_a_narrow_terminal(tmp_path):
    # rich folds at the console's width (80 in a pipe): "nll" on one line and its value on the next, the
    # run folder's path cut in two. The summary's lines are printed whole instead.
    run = tmp_path / ("a-long-folder-name-" * 4) / "run"
    env = {**os.environ, "COLUMNS": "40", "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "trainwell.cli", "fit", "--out", str(run), "--set", "data.source=iris",
                          "--set", "train.epochs=2", "--set", "watch.report=false"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    test = [line for line in lines if line.startswith("test ")]
    assert len(test) == 1 and all(f" {k} " in test[0] for k in ("loss", "accuracy", "f1", "nll", "ece"))
    assert f"run folder: {run}" in lines
