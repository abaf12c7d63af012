"""What every lab writes: figures (PNG or SVG), a table (printed, CSV, JSON) and one self-contained page.

A lab returns a `LabResult`; `write_lab` turns it into files in the output folder:

    OUT/
      <figure>.png     one file per figure (<figure>.svg with --format svg; --dpi sets the resolution)
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

from ..figures import render
from ..report.html import _CSS, _table
from ..report.plots import _png
from ..rundir import atomic_write_bytes, atomic_write_text, write_json

__all__ = ["Figure", "LabResult", "png", "write_lab", "print_table", "fmt"]

png = _png   # matplotlib figure -> PNG bytes at 100 dpi, shared with the run report

# Matplotlib's points are 1/72 inch; figures are drawn at their size in inches, so every font size
# below is what a reader sees at the page's natural width (100 px per inch).
MIN_FONT_PT = 9


@dataclass
class Figure:
    name: str          # file stem: <name>.png
    caption: str       # what to look at in it
    data: Any          # a matplotlib Figure (rendered at the lab's --dpi/--format), or PNG bytes

    def image(self, fmt: str = "png", dpi: float = 100) -> tuple[str, bytes]:
        """(format, bytes) of the figure; PNG bytes given by a lab stay PNG."""
        if isinstance(self.data, bytes | bytearray):
            return "png", bytes(self.data)
        key = (fmt, float(dpi))
        cache = self.__dict__.setdefault("_rendered", {})
        if key not in cache:
            cache[key] = render(self.data, fmt, dpi)
        return fmt, cache[key]

    @property
    def png(self) -> bytes:
        return self.image("png", 100)[1]

    def __repr__(self) -> str:
        return f"Figure({self.name!r}, caption={_short(self.caption, 80)!r})"


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


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

    def figure(self, name: str) -> Figure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(f"lab {self.lab} has no figure {name!r} (its figures: {', '.join(f.name for f in self.figures)})")

    def __repr__(self) -> str:
        return (f"LabResult(lab={self.lab!r}, title={_short(self.title, 100)!r}, rows={len(self.rows)}, "
                f"figures={[f.name for f in self.figures]})")

    def _repr_html_(self) -> str:
        """In a notebook: the title, the findings, each figure inline with its caption, the table."""
        return _body(self, command=None)


def fmt_cell(v: Any) -> str:
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


fmt = fmt_cell


def _csv(result: LabResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(result.columns)
    w.writerows([["" if c is None else c for c in r] for r in result.rows])
    return buf.getvalue()


# The lab page is wider than the run report: figures are shown at their natural width (100 px per
# inch of figure), up to 1280 px, and scroll sideways rather than shrink.
_LAB_CSS = _CSS + ("body{max-width:1300px} figure{overflow-x:auto} figure img{max-width:none} "
                   "figcaption{font-size:1em;max-width:1100px}")


def _img(f: Figure, fmt: str, dpi: float) -> str:
    kind, data = f.image(fmt, dpi)
    mime = "image/svg+xml" if kind == "svg" else "image/png"
    width = ""
    if not isinstance(f.data, bytes | bytearray):       # natural width: the figure's inches at 100 px each
        width = f' width="{round(_natural_px(f.data, data, kind, dpi))}"'
    return (f'<img alt="{html.escape(f.caption)}"{width} '
            f'src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">')


def _natural_px(fig, data: bytes, kind: str, dpi: float) -> float:
    if kind == "png":          # the PNG's width in pixels, at 100 px per inch
        return int.from_bytes(data[16:20], "big") * 100 / dpi
    return fig.get_size_inches()[0] * 100


def _body(result: LabResult, command: str | None, fmt: str = "png", dpi: float = 100) -> str:
    e = html.escape
    figures = "".join(
        f'<figure id="fig-{e(f.name)}">{_img(f, fmt, dpi)}'
        f"<figcaption>{e(f.caption)}</figcaption></figure>" for f in result.figures)
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes)
    table = _table([tuple(fmt_cell(c) for c in r) for r in result.rows], tuple(result.columns))
    settings = _table([(k, fmt_cell(v)) for k, v in result.settings.items()], ("setting", "value"))
    return (f"<h1>trainwell lab: {e(result.title)}</h1><p>{e(result.summary)}</p>"
            + (f"<h2>What the numbers say</h2><ul id='notes'>{notes}</ul>" if notes else "")
            + f"<h2>Figures</h2>{figures}"
            f"<h2>Table</h2><div id='table'>{table}</div>"
            f"<h2>Settings</h2>{settings}"
            + (f"<p class='muted'>Repeat with: <code>{e(command)}</code></p>" if command else ""))


def _html(result: LabResult, command: str, fmt: str = "png", dpi: float = 100) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>trainwell lab: {html.escape(result.title)}</title><style>{_LAB_CSS}</style></head><body>"
            + _body(result, command, fmt, dpi) + "</body></html>\n")


def write_lab(result: LabResult, out: Path, command: str, dpi: float = 100, fmt: str = "png") -> Path:
    """Write the figures, table.csv, table.json and index.html into `out`; returns the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    for f in result.figures:
        kind, data = f.image(fmt, dpi)
        atomic_write_bytes(out / f"{f.name}.{kind}", data)
    atomic_write_text(out / "table.csv", _csv(result))
    write_json(out / "table.json", {"lab": result.lab, "columns": result.columns, "rows": result.rows,
                                    "settings": result.settings, "notes": result.notes,
                                    "series": result.series})
    page = out / "index.html"
    atomic_write_text(page, _html(result, command, fmt, dpi))
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
        t.add_row(*(fmt_cell(c) for c in r))
    console.print(t)
    for n in result.notes:
        console.print(f"• {n}")
