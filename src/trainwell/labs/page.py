"""What every lab writes: PNG figures, a table (printed, CSV, JSON) and one self-contained page.

A lab returns a `LabResult`; `write_lab` turns it into files in the output folder:

    OUT/
      <figure>.png     one file per figure
      table.csv        the numbers behind the figures, one row per line
      table.json       the same table, plus the lab's settings and any series it plotted
      index.html       the page: what the lab shows, the figures inline (base64), the table

The page has no scripts and no links to fetch: it opens offline in any browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report.html import _CSS, _table
from ..report.plots import _png
from ..rundir import atomic_write_bytes, atomic_write_text, write_json

__all__ = ["Figure", "LabResult", "png", "write_lab", "print_table", "fmt"]

png = _png   # matplotlib figure -> PNG bytes (Agg backend), shared with the run report


@dataclass
class Figure:
    name: str          # file stem: <name>.png
    caption: str       # what to look at in it
    data: bytes        # PNG bytes


@dataclass
class LabResult:
    lab: str
    title: str
    summary: str                                  # one paragraph: what the experiment shows
    columns: list[str]
    rows: list[list[Any]]
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)   # what was run: seeds, sizes, quick
    notes: list[str] = field(default_factory=list)           # findings worth a sentence on the page
    series: dict[str, Any] = field(default_factory=dict)     # plotted data, stored in table.json

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


def fmt(v: Any) -> str:
    """A table cell as text: 4 significant digits, inf/nan spelled out, None as a dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def _csv(result: LabResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(result.columns)
    w.writerows([["" if c is None else c for c in r] for r in result.rows])
    return buf.getvalue()


def _html(result: LabResult, command: str) -> str:
    e = html.escape
    figures = "".join(
        f'<figure id="fig-{e(f.name)}"><img alt="{e(f.caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(f.data).decode("ascii")}">'
        f"<figcaption>{e(f.caption)}</figcaption></figure>" for f in result.figures)
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    table = _table([tuple(fmt(c) for c in r) for r in result.rows], tuple(result.columns))
    settings = _table([(k, fmt(v)) for k, v in result.settings.items()], ("setting", "value"))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>trainwell lab: {e(result.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>trainwell lab: {e(result.title)}</h1><p>{e(result.summary)}</p>"
            + (f"<h2>What the numbers say</h2><ul id='notes'>{notes}</ul>" if notes else "")
            + f"<h2>Figures</h2>{figures}"
            f"<h2>Table</h2><div id='table'>{table}</div>"
            f"<h2>Settings</h2>{settings}<p class='muted'>Repeat with: <code>{e(command)}</code></p>"
            "</body></html>\n")


def write_lab(result: LabResult, out: Path, command: str) -> Path:
    """Write the figures, table.csv, table.json and index.html into `out`; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    for f in result.figures:
        atomic_write_bytes(out / f"{f.name}.png", f.data)
    atomic_write_text(out / "table.csv", _csv(result))
    write_json(out / "table.json", {"lab": result.lab, "columns": result.columns, "rows": result.rows,
                                    "settings": result.settings, "notes": result.notes,
                                    "series": result.series})
    page = out / "index.html"
    atomic_write_text(page, _html(result, command))
    return page


def print_table(result: LabResult, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:     # piped or captured: no terminal width to respect, keep numbers whole
            console = Console(width=160)
    t = Table(title=result.title, title_justify="left")
    for c in result.columns:
        t.add_column(c, justify="left")
    for r in result.rows:
        t.add_row(*(fmt(c) for c in r))
    console.print(t)
    for n in result.notes:
        console.print(f"• {n}")
