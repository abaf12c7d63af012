"""The report's figures drawn by a helper process (report/painter.py): the same page, byte for byte,
as one drawn in the main process; the figures that read the facts wait for them; and whatever the
helper does not deliver is drawn in the main process, so the report is always complete."""

from __future__ import annotations

import io
import json
import pickle
import re
import subprocess
import sys
from base64 import b64decode

import pytest

from trainwell.report import html, painter, plots
from trainwell.watch.doctor import diagnose, load_evidence

FIGURE = re.compile(r'<figure id="fig-(\w+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"')


@pytest.fixture(scope="module")
def helper_run(tmp_path_factory):
    """A run fitted in a fresh process: matplotlib is not imported there, so the helper draws."""
    out = tmp_path_factory.mktemp("painter") / "run"
    code = ("import sys, json\nimport trainwell as tw\n"
            f"tw.fit(out={str(out)!r}, quiet=True, **{{'train.epochs': 3, 'data.source': 'digits'}})\n"
            "print(json.dumps(sorted(m for m in ('matplotlib', 'trainwell.report.plots') if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out, json.loads(proc.stdout.splitlines()[-1])


def test_helper_draws_the_figures_and_the_page_equals_one_drawn_here(helper_run):
    run, imported_there = helper_run
    assert imported_there == []            # the fitting process never imported matplotlib: the helper drew
    page = (run / "report.html").read_text()
    shown = dict(FIGURE.findall(page))
    assert set(shown) == set(plots.FIGURES)
    ev = load_evidence(run)
    for key, (_, draw) in plots.FIGURES.items():
        assert b64decode(shown[key]) == draw(ev), key
    assert html.render(ev, diagnose(ev), (run / "recipe.toml").read_text()) == page


def _evidence_messages(ev, facts: bool = True) -> io.BytesIO:
    buf = io.BytesIO()
    pickle.dump(("evidence", {"recipe": ev.recipe, "history": ev.history, "metrics": ev.metrics,
                              "probes": ev.probes}), buf)
    if facts:
        pickle.dump(("facts", ev.facts), buf)
    buf.seek(0)
    return buf


def _sent(out: io.BytesIO) -> list[tuple[str, bytes | None]]:
    out.seek(0)
    sent = []
    while True:
        try:
            sent.append(pickle.load(out))
        except EOFError:
            return sent


def test_figures_that_read_the_facts_wait_for_them(helper_run):
    ev = load_evidence(helper_run[0])
    out = io.BytesIO()
    painter.serve(_evidence_messages(ev, facts=False), out)        # the facts never come
    early = dict(_sent(out))
    assert "confusion" not in early and set(early) == set(plots.FIGURES) - {"confusion"}
    out = io.BytesIO()
    painter.serve(_evidence_messages(ev), out)
    sent = _sent(out)
    assert sent[-1][0] == "confusion" and len(sent) == len(plots.FIGURES)
    for key, png in sent:
        assert png == plots.FIGURES[key][1](ev), key


def test_a_figure_that_raises_in_the_helper_is_left_to_the_main_process(helper_run, monkeypatch):
    ev = load_evidence(helper_run[0])

    def broken(ev):
        raise ValueError("drawn badly")

    monkeypatch.setitem(plots.FIGURES, "lr_grad", ("Learning rate and gradient norm", broken))
    out = io.BytesIO()
    painter.serve(_evidence_messages(ev), out)
    assert {k for k, _ in _sent(out)} == set(plots.FIGURES) - {"lr_grad"}


def _painter(code: str) -> painter.Painter:
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    return painter.Painter(proc)


def test_a_helper_that_dies_leaves_a_complete_report(helper_run, tmp_path):
    ev = load_evidence(helper_run[0])
    p = _painter("import sys; sys.exit(3)")
    p.begin(ev.recipe, ev.history, ev.metrics, ev.probes)
    drawn = p.finish(ev.facts)
    assert drawn == {} and p.proc.returncode == 3
    (tmp_path / "recipe.toml").write_text((helper_run[0] / "recipe.toml").read_text())
    page = html.write_report(tmp_path, ev, diagnose(ev), drawn).read_text()
    assert page == (helper_run[0] / "report.html").read_text()


def test_a_helper_past_its_time_is_killed_and_its_figures_drawn_here(helper_run, monkeypatch):
    ev = load_evidence(helper_run[0])
    monkeypatch.setattr(painter, "WAIT_S", 0.5)
    p = _painter("import time; time.sleep(60)")
    p.begin(ev.recipe, ev.history, ev.metrics, ev.probes)
    assert p.finish(ev.facts) == {} and p.proc.returncode is not None


def test_a_run_that_fails_ends_its_helper(tmp_path, monkeypatch):
    """fit closes the watch however the run ends: the helper is not left waiting for figures."""
    from trainwell import api
    from trainwell.loop import Trainer

    started = []

    def start():            # a helper that waits for its input, as the real one before the evidence comes
        started.append(_painter("import sys; sys.stdin.buffer.read()"))
        return started[-1]

    monkeypatch.setattr(painter.Painter, "start", staticmethod(start))

    def boom(self):
        raise RuntimeError("training failed")

    monkeypatch.setattr(Trainer, "fit", boom)
    with pytest.raises(RuntimeError, match="training failed"):
        api.fit(out=tmp_path / "run", quiet=True, **{"train.epochs": 1, "data.source": "iris"})
    assert len(started) == 1 and started[0].proc.poll() is not None


def test_no_helper_where_matplotlib_is_already_imported():
    import matplotlib  # noqa: F401

    assert painter.Painter.start() is None


def test_the_evidence_reaches_the_helper_in_plain_types():
    """A numpy or torch value among the metrics (torch's version string is one) would make the helper
    import torch to unpickle it: they are sent as the JSON of the run folder holds them."""
    import numpy as np
    import torch

    metrics = {"environment": {"torch": torch.__version__}, "ece": np.float32(0.25), "rows": np.int64(7),
               "bins": np.arange(3), "t": torch.tensor([1.5, 2.0]), "ok": np.bool_(True), "pair": (1, 2.5)}
    sent = painter.plain(metrics)
    assert sent == {"environment": {"torch": str(torch.__version__)}, "ece": 0.25, "rows": 7, "bins": [0, 1, 2],
                    "t": [1.5, 2.0], "ok": True, "pair": [1, 2.5]}
    code = "import pickle, sys\npickle.loads(sys.stdin.buffer.read())\nprint('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(sent), capture_output=True, check=True)
    assert out.stdout.split() == [b"False", b"False"]


def test_on_large_data_the_helper_starts_after_the_facts_and_the_page_is_the_same(tmp_path):
    # LATE_BYTES lowered so that digits counts as large: the helper must start only once the facts are
    # gathered (past the run's largest moment), and still draw the whole page, byte for byte.
    out = tmp_path / "run"
    code = ("import sys, json\nimport trainwell as tw\nfrom trainwell.report import painter\n"
            "from trainwell.watch import session\n"
            "painter.LATE_BYTES = 1\norder = []\nstart, gather = painter.Painter.start, session.gather_facts\n"
            "painter.Painter.start = lambda: (order.append('helper'), start())[1]\n"
            "session.gather_facts = lambda *a, **k: (order.append('facts'), gather(*a, **k))[1]\n"
            f"tw.fit(out={str(out)!r}, quiet=True, **{{'train.epochs': 3, 'data.source': 'digits'}})\n"
            "print(json.dumps([order, 'matplotlib' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    order, imported_there = json.loads(proc.stdout.splitlines()[-1])
    assert order == ["facts", "helper"] and not imported_there
    page = (out / "report.html").read_text()
    shown = dict(FIGURE.findall(page))
    assert set(shown) == set(plots.FIGURES)
    ev = load_evidence(out)
    assert html.render(ev, diagnose(ev), (out / "recipe.toml").read_text()) == page


def test_which_runs_count_as_large(tmp_path):
    assert not painter.starts_late(painter.LATE_BYTES - 1) and painter.starts_late(painter.LATE_BYTES)
    big = tmp_path / "rows.npy"
    with open(big, "wb") as f:           # sparse: the size is on record, no disk is used
        f.truncate(painter.LATE_BYTES)
    assert painter.source_bytes(str(big)) == painter.LATE_BYTES
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "a").write_bytes(b"x" * 10)
    (tmp_path / "idx" / "b").write_bytes(b"x" * 5)
    assert painter.source_bytes(str(tmp_path / "idx")) == 15
    assert painter.source_bytes("digits") == 0 and painter.source_bytes(str(tmp_path / "absent.csv")) == 0
