"""Start-up: nothing heavy is imported before it is needed (checked in fresh processes, by the
modules present in sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torchmetrics", "matplotlib", "optuna", "scipy")


def _modules_after(code: str) -> set[str]:
    """The modules in sys.modules after `code` ran in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _loaded_after(code: str, among=(*HEAVY, "torch")) -> set[str]:
    """The top-level packages of HEAVY (and torch) imported by `code` in a fresh interpreter."""
    return {m.split(".")[0] for m in _modules_after(code)} & set(among)


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


def test_a_bundled_set_loads_without_scikit_learn():
    """digits, iris, ... are read from scikit-learn's files; importing scikit-learn (and scipy, which it
    imports) would cost about a second before the first epoch."""
    code = ("from trainwell.data.sources import load_source\nfrom trainwell.recipe import load_recipe\n"
            "for name in ('digits', 'iris', 'wine', 'breast_cancer', 'diabetes'):\n"
            "    assert len(load_source(load_recipe(None, {'data.source': name}).data, 0).x) > 100")
    assert _loaded_after(code, among=("sklearn", "scipy", "pandas", "matplotlib")) == set()


def test_one_process_does_not_import_the_data_parallel_module():
    """`trainwell fit` asks whether it is a data-parallel worker before anything else; on one process the
    answer comes from the environment alone, without torch or trainwell.distributed."""
    code = ("import argparse\nfrom trainwell import cli\n"
            "assert cli._workers(argparse.Namespace(nproc=None)) == 1")
    loaded = _modules_after(code)
    assert "trainwell.distributed" not in loaded and "torch" not in loaded


def test_the_report_helper_imports_matplotlib_but_not_torch():
    """The helper process that draws the report's figures (report/painter.py) pays for matplotlib only."""
    code = "import trainwell.report.painter, trainwell.report.plots, trainwell.watch.evidence"
    assert _loaded_after(code, among=(*HEAVY, "torch", "sklearn", "pydantic")) == {"matplotlib"}


def test_fit_from_the_command_line_leaves_the_figures_to_the_helper(tmp_path):
    """The fitting process itself never imports matplotlib: the helper, started before torch's import,
    draws every figure (tests/test_report_painter.py checks they equal figures drawn here)."""
    code = ("import contextlib, io\nfrom trainwell.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['fit', '--out', {str(tmp_path / 'run')!r}, '--quiet', '--set', 'train.epochs=2']) == 0")
    assert "matplotlib" not in _loaded_after(code)
    assert (tmp_path / "run" / "report.html").read_text().count('src="data:image/png;base64,') == 6
