"""The study folder's report.html: the single test score, the chosen values, and the figures a
person looks at to trust a search: optimization history, parameter importance, one slice per
parameter (value against the metric). Drawn with matplotlib from the study itself."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import optuna
from matplotlib import ticker
from optuna.trial import TrialState

from ..recipe import Recipe
from ..report.html import _CSS, REPORT, _e, _table
from ..report.plots import _png, plt
from ..rundir import atomic_write_text

DONE, PRUNED, BEST = "#1f77b4", "#bbbbbb", "#d62728"


def _finite(trials) -> list:
    return [t for t in trials if t.value is not None and math.isfinite(t.value)]


def history_figure(study: optuna.Study, metric: str) -> bytes | None:
    """Each trial's value by trial number, pruned trials at the value they were stopped at, and the
    best value so far."""
    done = _finite(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if not done:
        return None
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, color=DONE, label="complete")
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                   s=18, marker="x", color=PRUNED, label="pruned (last reported)")
    better = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    xs, best = [], []
    for t in sorted(done, key=lambda t: t.number):
        xs.append(t.number)
        best.append(t.value if not best else better(best[-1], t.value))
    ax.step(xs, best, where="post", color=BEST, label="best so far")
    values = [t.value for t in done]
    if min(values) > 0 and max(values) > 10 * min(values):
        ax.set_yscale("log")
    ax.set(xlabel="trial", ylabel=metric, title="Optimization history")
    ax.legend(fontsize=8)
    return _png(fig)


def importances(study: optuna.Study, seed: int) -> dict[str, float]:
    """fANOVA importances (Optuna's evaluator, seeded); empty when there are too few trials to tell."""
    done = _finite(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if len(done) < 3:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        return optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                       target=lambda t: t.value if math.isfinite(t.value) else
                                                       float("nan"))
    except (RuntimeError, ValueError):   # e.g. every trial used the same values
        return {}


def importance_figure(scores: dict[str, float]) -> bytes | None:
    if not scores:
        return None
    names = list(scores)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(names)))
    ax.barh(names, [scores[n] for n in names], color=DONE)
    ax.set(xlabel="share of the metric's variance (fANOVA)", title="Parameter importance", xlim=(0, 1))
    return _png(fig)


def slice_figure(study: optuna.Study, recipe: Recipe) -> bytes | None:
    """One panel per parameter: each complete trial's metric against its value (log axis for log ranges)."""
    done = _finite(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    keys = [k for k in recipe.search.space if any(k in t.params for t in done)]
    if not done or not keys:
        return None
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False, sharey=True)
    for ax, key in zip(axes.flat, keys):
        pts = [(t.params[key], t.value, t.number) for t in done if key in t.params]
        d = recipe.search.space[key]
        if d.kind == "choice":
            labels = sorted({str(p[0]) for p in pts})
            x = [labels.index(str(p[0])) for p in pts]
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        else:
            x = [p[0] for p in pts]
            if d.kind in ("log_uniform", "int_log"):
                ax.set_xscale("log")
            if d.kind == "int_log":        # plain integers, not 2x10^1
                ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
                ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            pad = 0.03 * (d.high - d.low) if d.kind in ("uniform", "int") else 0
            ax.set_xlim(d.low - pad, d.high + pad)       # the searched range, not just the drawn points
        sc = ax.scatter(x, [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis", s=16)
        ax.set_title(key, fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes[0][0].set_ylabel(recipe.search.metric)
    fig.subplots_adjust(hspace=0.5)
    fig.colorbar(sc, ax=axes, label="trial", shrink=0.8)
    fig.suptitle("Slices: the metric against each parameter")
    return _png(fig)


def _figure(key: str, caption: str, png: bytes | None) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="fig-{key}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render(study: optuna.Study, recipe: Recipe, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    s, best = metrics["search"], metrics["best_trial"]
    seed = recipe.search.seed if recipe.search.seed is not None else recipe.seed
    scores = importances(study, seed)
    test = metrics.get("test")
    head = (f"<p>{s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed of {s['trials']} trials "
            f"({_e(s['strategy'])}, pruner {_e(s['pruner'])}), {s['seconds']:.0f} s. Chosen on "
            f"<b>{_e(best['metric'])}</b> ({_e(best['direction'])}); the test split stayed locked until "
            "the final retrain.</p>")
    if test:
        p = metrics["protocol"]
        head += (f"<p id='test-score'>Retrained on train+validation ({p['retrain_rows']} rows) for "
                 f"{p['retrain_epochs']} epochs, then evaluated on the test split once: "
                 + ", ".join(f"<b>{_e(k)} {v:.4f}</b>" for k, v in test.items()) + ".</p>")
    chosen = _table([(k, v) for k, v in best["params"].items()] +
                    [("(best trial)", best["trial"]), (f"({best['metric']})", best["value"]),
                     ("(best epoch)", best["best_epoch"])], ("key", "value"))
    ranked = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["value"],
                    reverse=recipe.search.direction == "maximize")[:20]
    keys = list(recipe.search.space)
    table = _table([(r["number"], r["value"], *(r.get(k) for k in keys), r["best_epoch"], r["stop_reason"])
                    for r in ranked], ("trial", best["metric"], *keys, "best epoch", "stop"))
    figures = (_figure("history", "Each trial's metric and the best so far", history_figure(study, best["metric"]))
               + _figure("importance", "Parameter importance (fANOVA over the complete trials)",
                         importance_figure(scores))
               + _figure("slices", "The metric against each parameter, coloured by trial number",
                         slice_figure(study, recipe)))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>trainwell search: '
            f"{_e(study.study_name)}</title><style>{_CSS}</style></head><body>"
            f"<h1>trainwell search: {_e(study.study_name)}</h1>{head}"
            f"<h2>Chosen values</h2>{chosen}<h2>Figures</h2>{figures or '<p>Too few trials to plot.</p>'}"
            f"<h2>Best trials</h2>{table}<p class='muted'>Every trial: trials.csv.</p>"
            f"<h2>Recipe</h2><pre id='recipe'>{_e(recipe.to_toml())}</pre></body></html>\n")


def write_search_report(study_dir: Path, study: optuna.Study, recipe: Recipe, metrics: dict[str, Any],
                        rows: list[dict[str, Any]]) -> Path:
    path = study_dir / REPORT
    atomic_write_text(path, render(study, recipe, metrics, rows))
    return path
