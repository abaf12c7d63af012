"""report.html: written by fit and by `trainwell report`, self-contained, and checked in a real
headless Chromium: no console errors, no network requests, findings and figures present."""

import os
import re
import shutil

import chromium
import pytest

from trainwell.api import fit
from trainwell.cli import main

# Zero init: a run with severe findings (identical units, dead ReLUs) to show in the report.
BROKEN = {"data.source": "digits", "train.epochs": 3, "init.weights": "zeros", "model.norm": "none"}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    return fit(out=out, quiet=True, **BROKEN)


def test_report_is_self_contained(broken_run):
    page = (broken_run.path / "report.html").read_text()
    # nothing fetched: no external src/href, no scripts, every image inline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|ftp:)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == 6     # five figures and the reliability diagram
    for rule in ("identical_units", "dead_relus"):
        assert f'data-rule="{rule}"' in page
    assert 'init.weights = "zeros"' not in page and 'weights = &quot;zeros&quot;' in page   # recipe, escaped
    # digits is a bundled set: the synthetic-data keys are folded away, with the reason, the rest is shown
    shown, folded = page.split("<pre id='recipe'>")[1].split("<details id='recipe-unused'>")
    assert "n_samples = 1000" not in shown and "n_samples = 1000" in folded and "synthetic sources only" in folded
    assert "epochs = 3" in shown and "epochs = 3" not in folded


def test_report_command_rewrites_the_page(broken_run, capsys):
    path = broken_run.path / "report.html"
    path.unlink()
    assert main(["report", str(broken_run.path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    assert "identical_units" in path.read_text()


def test_report_in_headless_chromium(broken_run, tmp_path):
    reason = chromium.available()
    if reason:
        pytest.skip(reason)
    with chromium.Browser() as browser:
        page = browser.open(broken_run.path / "report.html")
        assert chromium.console_errors(page) == []
        assert chromium.network_requests(page) == []
        rules = page.evaluate("[...document.querySelectorAll('#findings tr.finding')].map(r => r.dataset.rule)")
        assert {"identical_units", "dead_relus"} <= set(rules)
        figures = page.evaluate("[...document.querySelectorAll('figure img')].map(i => [i.closest('figure').id, "
                                "i.complete && i.naturalWidth > 100 && i.naturalHeight > 100])")
        assert dict(figures) == {"fig-curves": True, "fig-lr_grad": True, "fig-layer_grads": True,
                                 "fig-activations": True, "fig-confusion": True, "fig-reliability": True}
        assert "test" in page.evaluate("document.body.innerText")
        shot = chromium.screenshot(page, tmp_path / "report.png")
        assert shot.stat().st_size > 10_000
        if os.environ.get("TRAINWELL_SCREENSHOT"):  # keep it to look at
            shutil.copy(shot, os.environ["TRAINWELL_SCREENSHOT"])
