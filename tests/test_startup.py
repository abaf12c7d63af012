"""Start-up: nothing heavy is imported before it is needed (checked in fresh processes, by the
modules present in sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torchmetrics", "matplotlib", "optuna", "scipy")


def _loaded_after(code: str) -> set[str]:
    """The top-level packages of HEAVY (and torch) imported by `code` in a fresh interpreter."""
    probe = (f"{code}\nimport sys, json\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    return loaded & {*HEAVY, "torch"}


def test_import_trainwell_imports_nothing_heavy():
    assert _loaded_after("import trainwell") == set()


def test_trainwell_recipe_imports_nothing_heavy():
    code = ("import contextlib, io, sys\nfrom trainwell.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n    code = main(['recipe'])\n"
            "assert code in (0, None) and 'precision = \"32\"' in out.getvalue()")
    assert _loaded_after(code) == set()


@pytest.mark.parametrize("module", ["trainwell.api", "trainwell.loop", "trainwell.resuming"])
def test_the_training_stack_imports_torch_but_not_the_plotting_or_search_libraries(module):
    """A run needs torch; matplotlib (the report, the labs), optuna (search) and scipy are imported by
    what uses them, and torchmetrics not at all (metrics.py computes the metrics itself)."""
    assert _loaded_after(f"import {module}") == {"torch"}
