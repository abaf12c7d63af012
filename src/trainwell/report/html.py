"""report.html: one self-contained page (inline CSS, PNG figures as data: URIs, no scripts, no
network requests) that explains a run from its folder alone."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..rundir import RECIPE, atomic_write_text
from ..watch.doctor import Evidence, Finding, set_flags
from .captions import CAPTIONS
from .recipe_view import recipe_section

REPORT = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4} .severe{background:#fde2e1} .warning{background:#fff4d6} .info{background:#e6f3fb}
.sev{font-weight:bold;text-transform:uppercase;font-size:.8em} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
figure{margin:1em 0} figcaption{color:#555;font-size:.9em} img{max-width:100%}
.muted{color:#777} details summary{cursor:pointer;color:#555}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else _e(v)


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def findings_section(findings: list[Finding]) -> str:
    if not findings:
        return '<p id="no-findings">The doctor found nothing to report.</p>'
    rows = []
    for f in findings:
        ev = ", ".join(f"{k}={_short(v)}" for k, v in f.evidence.items())
        cause = f"<span class='muted'>&#8627; consequence of {_e(f.cause)}</span><br>" if f.cause else ""
        remedy = "" if f.cause else _e(f.remedy) + (
            f"<br><code>{_e(set_flags(f.overrides))}</code>" if f.overrides else "")
        rows.append(f'<tr class="finding {f.severity}" data-rule="{_e(f.rule)}"><td class="sev">{_e(f.severity)}</td>'
                    f"<td>{cause}<b>{_e(f.rule)}</b><br>{_e(f.message)}<br><span class='muted'>{_e(ev)}</span></td>"
                    f"<td>{remedy}</td></tr>")
    return ('<table id="findings"><tr><th>severity</th><th>finding and evidence</th><th>what to try</th></tr>'
            + "".join(rows) + "</table>")


def _short(v: Any, limit: int = 160) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        text = "{" + ", ".join(f"{k}: {_short(x, 40)}" for k, x in v.items()) + "}"
    elif isinstance(v, list):
        text = "[" + ", ".join(_short(x, 60) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    else:
        text = str(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def metrics_section(metrics: dict[str, Any]) -> str:
    splits = [s for s in ("train", "val", "test") if metrics.get(s)]
    names = list(dict.fromkeys(k for s in splits for k in metrics[s]))
    rows = [(k, *(metrics[s].get(k, "") for s in splits)) for k in names]
    head = ("metric", *("train (final pass, eval mode)" if s == "train" else s for s in splits))
    out = _table(rows, head) if "val" in splits or "test" in splits else "<p>No held-out split was evaluated.</p>"
    stop = (f"<p>Best epoch <b>{_e(metrics.get('best_epoch'))}</b>, stopped at epoch "
            f"<b>{_e(metrics.get('stopped_epoch'))}</b> (reason: {_e(metrics.get('stop_reason'))}), "
            f"seed {_e(metrics.get('seed'))}.</p>")
    return stop + network_line(metrics.get("network")) + out + temperature_section(metrics) + models_section(metrics)


def temperature_section(metrics: dict[str, Any]) -> str:
    """calibrate = "temperature": T and each split's NLL and ECE before and after scaling."""
    t = metrics.get("temperature")
    if not isinstance(t, dict) or "temperature" not in t:
        return ""
    rows = [(split, *(t[when].get(split, {}).get(k, "") for k in ("nll", "ece") for when in ("before", "after")))
            for split in ("val", "test") if t["before"].get(split)]
    return (f"<h3 id='temperature'>Temperature scaling</h3><p>T = <b>{t['temperature']:.4g}</b>, fitted on the "
            "validation split (never the test split); the metrics above are after scaling, which leaves every "
            "predicted class, and so accuracy, as it was.</p>"
            + (f"<p>{_e(t['note'])}.</p>" if t.get("note") else "")
            + _table(rows, ("split", "NLL before", "NLL after", "ECE before", "ECE after")))


def network_line(net: Any) -> str:
    """What was trained: the recipe's kind, or the user's own module (model.kind = "custom")."""
    if not isinstance(net, dict) or "kind" not in net:
        return ""
    what = (f"a custom module, <code>{_e(net.get('module'))}</code> (passed from Python)"
            if net["kind"] == "custom" else f"the recipe's {_e(net['kind'])}")
    return f"<p id='network'>Network: {what}, {_e(net.get('parameters'))} trainable parameters.</p>"


def models_section(metrics: dict[str, Any]) -> str:
    """The returned model (ensemble, snapshots, SWA, EMA) next to the models it was made of or compared with."""
    section = metrics.get(metrics.get("model", "plain"))
    if not isinstance(section, dict) or "test" not in section:
        note = (section or {}).get("reason") if isinstance(section, dict) else None
        return f"<p>{_e(note)}</p>" if note else ""
    keys = list(section["test"] or section["val"])
    named = [(f"{part[:-1]} {k}", r) for part in ("members", "snapshots") for k, r in
             enumerate(section.get(part, []), start=1)]
    named += [("mean member", section["mean_member"])] if "mean_member" in section else []
    named += [("plain", metrics["plain"])] if "mean_member" not in section and "plain" in metrics else []
    named.append((f"{metrics['model']} (returned)", section))
    rows = [(name, *((r.get(split) or {}).get(k, "") for split in ("val", "test") for k in keys))
            for name, r in named]
    return (f"<h3 id='models'>{_e(metrics['model'])}</h3>"
            + _table(rows, ("model", *(f"{split} {k}" for split in ("val", "test") for k in keys))))


def data_section(facts: dict[str, Any]) -> str:
    d = facts.get("data", {})
    if not d:
        return "<p>No data summary stored.</p>"
    rows = [("source", d.get("name")), ("task", d.get("task")), ("input shape", d.get("shape")),
            ("rows (train / val / test)", " / ".join(str(d.get("rows", {}).get(k, 0)) for k in ("train", "val", "test")))]
    if d.get("classes"):
        rows.append(("classes", ", ".join(map(str, d["classes"]))))
    for split, counts in d.get("class_counts", {}).items():
        rows.append((f"class counts ({split})", " ".join(map(str, counts))))
    s = facts.get("scales", {})
    if "std_min" in s:
        rows.append(("input feature std (model's view)", f"{s['std_min']:.3g} .. {s['std_max']:.3g}, "
                     f"{s['constant']} constant of {s['features']}"))
    leak = facts.get("leakage", {})
    rows.append(("rows shared with train (val / test)", f"{leak.get('val', 0)} / {leak.get('test', 0)}"))
    return _table(rows + preparation_rows(d.get("preparation") or {}))


def preparation_rows(prep: dict[str, Any]) -> list[tuple[str, str]]:
    """What was done to the data (data/preparation.py), one row per column touched."""
    rows = []
    arrays = prep.get("arrays")
    if arrays:
        rows.append(("data passed from Python", f"x {arrays['x']['shape']} {arrays['x']['dtype']}, y {arrays['y']['shape']} "
                     f"{arrays['y']['dtype']}, sha256 {arrays['sha256'][:16]}..."))
    if prep.get("dropped"):
        rows.append(("columns left out", ", ".join(prep["dropped"])))
    for r in prep.get("encoded", []):
        missing = f"; {r['missing']} missing → {r['missing_as']}" if r.get("missing") else ""
        shown = ", ".join(r.get("categories", []))
        more = ", ..." if r["levels"] > len(r.get("categories", [])) else ""
        width = f" of width {r['dim']}" if "dim" in r else ""
        rows.append((f"encoded: {r['column']}", f"{r['encoding']}{width}, {r['levels']} levels ({shown}{more}){missing}"))
    for r in prep.get("imputed", []):
        rows.append((f"imputed: {r['feature']}", f"{r['values']} values → {r['with']:.4g} (training-split mean)"))
    t = prep.get("target")
    if t:
        pairs = ", ".join(f"{a:.4g} / {b:.4g}" for a, b in zip(t["shift"], t["scale"]))
        rows.append(("target scaling", f"{t['kind']}: (y - shift) / scale with shift / scale {pairs}; the network's "
                     "outputs are mapped back, metrics are in the target's units"))
    return rows


def suspects_section(facts: dict[str, Any]) -> str:
    s = facts.get("suspects")
    if not s:
        return ""
    return ("<h2>Suspected mislabeled training rows</h2><p>The final model's most confident mistakes on "
            "its own training rows.</p>"
            + _table([(r["index"], r["label"], r["prediction"], r["confidence"]) for r in s],
                     ("row", "label", "prediction", "confidence")))


def render(ev: Evidence, findings: list[Finding], recipe_toml: str, drawn: Mapping[str, bytes | None] | None = None) -> str:
    """The page. `drawn`: figures already drawn from this evidence (by the helper process, painter.py),
    by key; the others are drawn here."""
    figures = []
    for key, caption in CAPTIONS.items():
        if drawn is not None and key in drawn:
            png = drawn[key]
        else:
            from .plots import FIGURES

            png = FIGURES[key][1](ev)
        if png is None:
            continue
        data = base64.b64encode(png).decode("ascii")
        figures.append(f'<figure id="fig-{key}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    image = len(ev.facts.get("data", {}).get("shape") or []) > 1
    title = _e(ev.recipe.get("name") or ev.facts.get("data", {}).get("name") or "run")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>trainwell report: {title}</title>'
            f"<style>{_CSS}</style></head><body>"
            f"<h1>trainwell report: {title}</h1>"
            f"<h2>Findings</h2>{findings_section(findings)}"
            f"<h2>Final metrics</h2>{metrics_section(ev.metrics)}"
            f"<h2>Figures</h2>{''.join(figures) or '<p>No history to plot.</p>'}"
            f"<h2>Data</h2>{data_section(ev.facts)}"
            f"{suspects_section(ev.facts)}"
            f"<h2>Recipe</h2>{recipe_section(recipe_toml, ev.task, image)}"
            "</body></html>\n")


def write_report(run_dir: Path, ev: Evidence, findings: list[Finding],
                 drawn: Mapping[str, bytes | None] | None = None) -> Path:
    recipe_path = run_dir / RECIPE
    toml = recipe_path.read_text() if recipe_path.exists() else ""
    path = run_dir / REPORT
    atomic_write_text(path, render(ev, findings, toml, drawn))
    return path
