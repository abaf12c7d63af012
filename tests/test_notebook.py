"""trainwell in a notebook: no global matplotlib state changed, short reprs, inline HTML."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TINY = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [8], "train.epochs": 2,
        "watch.report": True}


def test_fit_and_labs_leave_the_matplotlib_backend_alone(tmp_path):
    code = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("svg")                   # stands for a notebook's inline backend
        import matplotlib.pyplot as plt
        import trainwell as tw
        from trainwell.labs import LabOptions, run_lab
        run = tw.fit(out={str(tmp_path / 'run')!r}, quiet=True, **{TINY!r})
        assert (run.path / "report.html").exists()
        run_lab("gd-path", LabOptions(quick=True), out={str(tmp_path / 'lab')!r}, quiet=True)
        print(matplotlib.get_backend(), plt.get_fignums())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].strip() == "svg []"


def _tiny_run(tmp_path):
    import trainwell as tw

    return tw.fit(out=tmp_path / "run", quiet=True, **TINY)


def test_run_repr_is_short_and_html_summarizes(tmp_path):
    run = _tiny_run(tmp_path)
    text = repr(run)
    assert len(text) < 2000 and "task='binary'" in text and f"best_epoch={run.metrics['best_epoch']}" in text
    markup = run._repr_html_()
    assert len(markup) < 4000
    assert "report.html" in markup and f"{run.metrics['test']['accuracy']:.4g}" in markup
    assert f"<th>findings</th><td>{len(run.extras['findings'])}" in markup


def test_history_df_plot_and_report(tmp_path):
    import matplotlib.figure
    import pandas as pd

    run = _tiny_run(tmp_path)
    df = run.history_df()
    assert isinstance(df, pd.DataFrame) and list(df.index) == [r["epoch"] for r in run.history]
    assert df["val_loss"].tolist() == [r["val_loss"] for r in run.history]
    fig = run.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    lines = {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()}
    assert list(lines["train_loss"].get_ydata()) == [r["train_loss"] for r in run.history]
    assert "val_accuracy" in lines                       # the first metric besides the loss
    report = run.report()
    assert report._repr_html_() == (run.path / "report.html").read_text() and len(repr(report)) < 200


def test_doctor_of_a_run_and_of_its_folder_agree(tmp_path):
    import trainwell as tw

    run = _tiny_run(tmp_path)
    a, b = tw.doctor(run), tw.doctor(str(run.path))
    assert [f.rule for f in a] == [f.rule for f in b] == [f.rule for f in run.extras["findings"]]
    markup = a._repr_html_()
    assert all(f.rule in markup or f.message[:20] in markup for f in a)
    assert len(repr(a)) < 2000


def test_tw_lab_takes_parameters_as_keywords_and_writes_nothing(tmp_path, monkeypatch):
    import trainwell as tw

    monkeypatch.chdir(tmp_path)
    result = tw.lab("gd-path", quick=True, lrs=[0.1, 0.4], steps_2d=5)
    assert [r[1] for r in result.rows[:2]] == [0.1, 0.4] and "5 steps" in result.figure("gd_zigzag").caption
    assert not (tmp_path / "runs").exists()
    assert len(repr(result)) < 2000
    markup = result._repr_html_()
    assert markup.count("data:image/png;base64,") == len(result.figures) and "<table>" in markup


def test_lr_find_returns_suggestions_and_a_figure():
    import trainwell as tw
    from trainwell.labs.lr_range import range_test
    from trainwell.recipe import load_recipe

    sets = {"data.source": "moons", "data.n_samples": 300, "model.hidden": [16]}
    found = tw.lr_find(sets, steps=40)
    again = range_test(load_recipe(None, sets), steps=40)
    assert found.suggestions == again.suggestions and found.lr == again.suggestions.get("min")   # adam: the min rule
    assert found._repr_png_()[:4] == b"\x89PNG" and len(repr(found)) < 300


NOTEBOOK = Path(__file__).parents[1] / "examples" / "teaching.ipynb"


def test_teaching_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_teaching_notebook_executes_headless(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert time.monotonic() - started < 300
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("trainwell: epoch" in h for h in html)                    # the per-epoch table of fit
    assert any("trainwell lab: initialization" in h for h in html)       # a lab inline, figures and table
    assert any("<caption>trainwell run</caption>" in h for h in html)    # a Run's summary
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs                                                         # run.plot(), the range test
    assert (tmp_path / "runs" / "notebook-early-stopping" / "report.html").exists()
