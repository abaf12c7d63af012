"""trainwell at home in a notebook: short reprs, inline HTML, DataFrames and Figures.

Nothing here changes global state: figures are unmanaged `matplotlib.figure.Figure`s (see
figures.py), which Jupyter shows inline by their own `_repr_png_`/`_repr_html_`; no backend is
set. The functions exported as `tw.lab`, `tw.lr_find` and `tw.doctor` live here, and `Run` takes
its notebook views (`repr`, `_repr_html_`, `history_df`, `plot`, `report`) from `RunViews`.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from .errors import TrainwellError

_STYLE = ("<style>.tw td,.tw th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}"
          ".tw caption{text-align:left;font-weight:bold}</style>")


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"{_STYLE}<table class='tw'><caption>{html.escape(title)}</caption>{body}</table>"


def _metrics_text(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "—"
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                     if not isinstance(v, dict | list))


def _link(path: Path) -> str:
    """A link that works from a notebook: relative to the working directory when below it."""
    try:
        target = os.path.relpath(path)
    except ValueError:
        target = str(path)
    if target.startswith(".."):
        target = path.resolve().as_uri()
    return f"<a href='{html.escape(target)}' target='_blank'>{html.escape(str(path))}</a>"


class HTML:
    """HTML shown inline by Jupyter (`_repr_html_`); `str()` gives the markup."""

    def __init__(self, markup: str, source: Path | None = None) -> None:
        self.markup, self.source = markup, source

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"<HTML {len(self.markup)} characters{where}>"


class RunViews:
    """The notebook views of a `Run` (mixed into api.Run)."""

    path: Path | None
    recipe: Any
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    extras: dict[str, Any]

    def _findings(self) -> list:
        return list(self.extras.get("findings") or [])

    def _name(self) -> str:
        return getattr(self.recipe, "name", None) or (self.path.name if self.path else "(in memory)")

    def __repr__(self) -> str:
        m = self.metrics
        return (f"Run(name={self._name()!r}, task={m.get('task')!r}, epochs={len(self.history)}, "
                f"best_epoch={m.get('best_epoch')}, test=({_metrics_text(m.get('test'))}), "
                f"findings={len(self._findings())}, path={str(self.path) if self.path else None!r})")

    def _repr_html_(self) -> str:
        m = self.metrics
        report = self.path / "report.html" if self.path is not None else None
        rows = [("name", html.escape(self._name())), ("task", _num(m.get("task"))),
                ("epochs", _num(len(self.history))), ("best epoch", _num(m.get("best_epoch"))),
                ("validation", html.escape(_metrics_text(m.get("val")))),
                ("test", html.escape(_metrics_text(m.get("test")))),
                ("findings", _num(len(self._findings())) + "".join(
                    f"<br><small>{html.escape(f.severity)}: {html.escape(f.rule)}</small>"
                    for f in self._findings()[:5]))]
        if report is not None and report.exists():
            rows.append(("report", _link(report)))
        elif self.path is not None:
            rows.append(("folder", html.escape(str(self.path))))
        return _kv_table("trainwell run", rows)

    def history_df(self):
        """The history as a pandas DataFrame indexed by epoch (pandas is an optional dependency)."""
        try:
            import pandas as pd
        except ImportError:
            raise TrainwellError("history_df: needs pandas (pip install pandas); run.history is the same "
                                 "data as a list of dicts") from None
        return pd.DataFrame(self.history).set_index("epoch")

    def plot(self, metrics: list[str] | None = None):
        """Loss per epoch (train and validation), and the other metrics of the history, as a Figure."""
        from .figures import plt

        columns = sorted({k for r in self.history for k, v in r.items() if isinstance(v, int | float)})
        if metrics is None:
            metrics = [k[4:] for k in columns if k.startswith("val_") and k != "val_loss"][:1]
        epochs = [r["epoch"] for r in self.history]
        fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5.5 * (1 + len(metrics)), 3.6), squeeze=False)
        for ax, name in zip(axes[0], ["loss", *metrics]):
            for split, style in (("train", "-"), ("val", "--")):
                key = f"{split}_{name}"
                if key in columns:
                    ax.plot(epochs, [r.get(key) for r in self.history], style, marker="o", ms=3, label=key)
            best = self.metrics.get("best_epoch")
            if best:
                ax.axvline(best, color="green", ls=":", lw=1, label=f"best epoch {best}")
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=9)
        fig.tight_layout()
        return fig

    def report(self) -> HTML:
        """The run report, shown inline (an HTML object; the file stays in the run folder)."""
        if self.path is not None and (self.path / "report.html").exists():
            path = self.path / "report.html"
            return HTML(path.read_text(), path)
        raise TrainwellError("report: this run has no report.html (it ran with out=False or watch.report = "
                             "false); fit with a run folder, or `trainwell report RUN_DIR`")


class Findings(list):
    """The doctor's findings: a list of `Finding`, shown in a notebook as a table."""

    def __repr__(self) -> str:
        if not self:
            return "Findings(none)"
        return "Findings(" + "; ".join(f"{f.severity} {f.rule}" for f in self) + ")"

    def _repr_html_(self) -> str:
        from .report.html import findings_section

        return _STYLE + "<div class='tw'><b>trainwell doctor</b>" + findings_section(list(self)) + "</div>"


def doctor(run_or_path: Any) -> Findings:
    """Diagnose a run: a `Run` from `tw.fit`, or a run folder written by `trainwell fit`."""
    from .watch.doctor import diagnose, load_evidence
    from .watch.evidence import Evidence

    if isinstance(run_or_path, str | os.PathLike):
        return Findings(diagnose(load_evidence(run_or_path)))
    run = run_or_path
    if getattr(run, "path", None) is not None and (Path(run.path) / "history.csv").exists():
        return Findings(diagnose(load_evidence(run.path)))
    if getattr(run, "extras", {}).get("findings") is not None:       # fit's own diagnosis (with its probes)
        return Findings(run.extras["findings"])
    if hasattr(run, "history") and hasattr(run, "recipe"):
        return Findings(diagnose(Evidence(run.recipe.to_dict(), run.history, run.metrics)))
    raise TrainwellError(f"doctor: expected a Run or a run folder, got {type(run_or_path).__name__}")


def lab(name: str, *, quick: bool = False, seed: int = 0, seeds: int | None = None, recipe: str | None = None,
        overrides: dict[str, Any] | None = None, out: str | Path | None = None, dpi: float = 100,
        fmt: str = "png", **params: Any):
    """Run lab `name` with its parameters as keyword arguments (`tw.lab("gd-path", lrs=[0.03, 0.09])`;
    a parameter spelled with a hyphen takes an underscore: `lr_scale=3`). Returns the LabResult, which a
    notebook shows with its figures and table; nothing is written unless `out` names a folder."""
    from .labs import LabOptions, lab_module, params_of, run_lab

    lab_module(name)
    known = params_of(name)
    given = {(k.replace("_", "-") if k not in known and k.replace("_", "-") in known else k): v
             for k, v in params.items()}
    options = LabOptions(quick=quick, seed=seed, seeds=seeds, recipe=recipe, overrides=dict(overrides or {}),
                         params=given, dpi=dpi, fmt=fmt)
    result, _ = run_lab(name, options, out=out, quiet=True, write=out is not None)
    return result


class LRFind:
    """The LR range test's result: `suggestions` per rule, the chosen `lr`, and the figure."""

    def __init__(self, test, rule: str, png: bytes) -> None:
        self.test, self.rule, self.png = test, rule, png
        self.suggestions: dict[str, float] = dict(test.suggestions)
        self.lr: float | None = self.suggestions.get(rule)      # None: the curve gave this rule nothing

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v:.3g}" for k, v in self.suggestions.items())
        lr = "None" if self.lr is None else f"{self.lr:.3g}"
        return f"LRFind(lr={lr} ({self.rule}), suggestions: {s})"

    def _repr_png_(self) -> bytes:
        return self.png

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.3g}</td></tr>" for k, v in self.suggestions.items())
        img = base64.b64encode(self.png).decode("ascii")
        return (f"{_STYLE}<table class='tw'><caption>LR range test: lr = {self.lr or float('nan'):.3g} ({html.escape(self.rule)} "
                f"rule)</caption>{rows}</table><img src='data:image/png;base64,{img}'>")


def lr_find(recipe: Any = None, *, rule: str = "auto", steps: int | None = None, **overrides: Any) -> LRFind:
    """The LR range test on `recipe` (a path, a dict, a Recipe or None for the built-in one) with dotted
    overrides as keywords (`**{"optimizer.kind": "sgd"}`): the rules' suggestions and the figure; `lr` is
    the suggestion of `rule` (auto: the optimizer family's default, as `fit --find-lr`)."""
    from .labs.lr_range import RULES, STEPS, default_rule, figure, range_test
    from .recipe import Recipe, load_recipe

    if rule not in (*RULES, "auto"):
        raise TrainwellError(f"lr_find: rule got {rule!r}, expected auto or one of {', '.join(RULES)}")
    if isinstance(recipe, Recipe):
        r = recipe.replace(**overrides) if overrides else recipe
    elif isinstance(recipe, dict):
        r = load_recipe(None, {**recipe, **overrides})
    else:
        r = load_recipe(recipe, overrides)
    test = range_test(r, steps=steps or STEPS)
    rule = default_rule(r.optimizer) if rule == "auto" else rule
    return LRFind(test, rule, figure({r.seed: test}, r.seed))
