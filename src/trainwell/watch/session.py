"""What `fit` asks of the watch: the callbacks to add, and the end-of-run diagnosis and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..loop import Callback
from ..rundir import FACTS, write_json
from .doctor import Evidence, Finding, diagnose, write_diagnosis
from .facts import gather_facts
from .probes import ProbeCallback


class WatchSession:
    def __init__(self, recipe, run_dir: Path | None, data_bytes: int = 0):
        self.recipe, self.run_dir, w = recipe, run_dir, recipe.watch
        self.tensorboard = None
        if w.tensorboard and run_dir is not None:
            from .tensorboard import TensorBoardCallback

            self.tensorboard = TensorBoardCallback(run_dir)
        sink = self.tensorboard.probes if self.tensorboard is not None else None
        self.probes = ProbeCallback(w.probe_every, run_dir, sink) if w.probes else None
        # The report's figures are drawn by a helper process (report/painter.py) that imports matplotlib
        # while the run trains; the command line starts it before torch's import, else it starts here.
        # On large data it starts once the facts are gathered (painter.LATE_BYTES).
        from ..report import painter

        early = painter.take()
        wanted = run_dir is not None and w.report
        self.late = wanted and painter.starts_late(data_bytes)
        if wanted and not self.late:
            self.painter = early or painter.Painter.start()
        else:
            self.painter = None
            if early is not None:
                early.close()

    def callbacks(self) -> list[Callback]:
        return [cb for cb in (self.probes, self.tensorboard) if cb is not None]

    def close(self) -> None:
        """Ends the report's helper process, if the run ends before `finish` (an error, an interrupt)."""
        if self.painter is not None:
            self.painter.close()

    def finish(self, trainer, prepared, metrics: dict[str, Any], quiet: bool) -> list[Finding]:
        """Facts -> findings -> diagnosis.json and report.html; prints a short summary. The figures that
        need no facts are drawn by the helper meanwhile."""
        w = self.recipe.watch
        if not (w.doctor or w.report):
            return []

        recipe, probes = self.recipe.to_dict(), self.probes.to_dict() if self.probes is not None else {}
        if self.painter is not None:
            self.painter.begin(recipe, trainer.state.history, metrics, probes)
        facts = gather_facts(trainer.model, prepared, trainer.setup.task, w.suspects,
                             self.recipe.train.eval_batch_size, trainer.setup.loss_kind)
        if self.late:           # large data: the helper starts now, past the run's peak (the facts)
            from ..report import painter

            self.painter = painter.Painter.start()
            if self.painter is not None:
                self.painter.begin(recipe, trainer.state.history, metrics, probes)
        if self.run_dir is not None:
            write_json(self.run_dir / FACTS, facts)
        ev = Evidence(recipe, trainer.state.history, metrics, probes, facts)
        findings = diagnose(ev) if w.doctor else []
        if self.run_dir is not None and w.doctor:
            write_diagnosis(self.run_dir, findings)
        if not quiet and w.doctor:      # said before the report is drawn: nothing more to wait for
            print_summary(findings)
        if self.run_dir is not None and w.report:
            from ..report.html import write_report

            drawn = self.painter.finish(facts) if self.painter is not None else None
            write_report(self.run_dir, ev, findings, drawn)
        return findings


def print_summary(findings: list[Finding], limit: int = 5) -> None:
    from rich.console import Console
    from rich.markup import escape

    con = Console()
    colours = {"severe": "red", "warning": "yellow", "info": "cyan"}
    if not findings:
        con.print("doctor: no findings")
        return
    con.print(f"doctor: {len(findings)} finding(s)")
    for f in findings[:limit]:
        con.print(f"  [{colours[f.severity]}]{f.severity}[/] {f.rule}: {escape(f.message)}")
    if len(findings) > limit:
        con.print(f"  ... and {len(findings) - limit} more: trainwell doctor RUN_DIR")
