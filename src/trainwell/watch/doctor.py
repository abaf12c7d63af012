"""The doctor: rules that read a run's stored evidence and return findings.

Each rule is a small function `rule(evidence) -> list[Finding]`, registered in RULES. A finding
says what is wrong (message), how bad (severity: info < warning < severe), the numbers that
show it (evidence: epochs, layers, values) and what to try (remedy, from the lecture notes).
The evidence is only what the run folder holds: recipe.toml, history.csv, metrics.json,
probes.json and facts.json.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from .evidence import (
    DIAGNOSIS,
    SEVERITIES,
    Evidence,
    Finding,
    format_findings,
    load_evidence,
    write_diagnosis,
)
from .evidence import number as _num

__all__ = ["DIAGNOSIS", "RULES", "Evidence", "Finding", "diagnose", "format_findings", "load_evidence",
           "write_diagnosis"]


def _finite(xs: list[float]) -> list[float]:
    return [x for x in xs if math.isfinite(x)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


# ------------------------------------------------------------------------------------ the curves
def initial_loss(ev: Evidence) -> list[Finding]:
    """A softmax classifier that knows nothing predicts 1/C for every class: loss ln(C)."""
    loss = _num(ev.probes.get("initial", {}).get("loss"))
    kind = ev.metrics.get("loss")
    if not math.isfinite(loss) or ev.task == "regression" or kind not in ("cross_entropy", "nll",
                                                                            "bce_with_logits"):
        return []
    c = 2 if ev.task == "binary" else ev.n_classes
    expected = math.log(c)
    if loss <= 3 * expected and loss >= 0.5 * expected:
        return []
    return [Finding("initial_loss", "warning",
                    f"initial loss {_fmt(loss)} is far from ln({c}) = {_fmt(expected)}, the loss of a model "
                    "that predicts every class with equal probability",
                    {"initial_loss": loss, "expected": expected, "classes": c},
                    "Check the initialization scale (a too-large init gives confident random outputs: use "
                    "Xavier/He scaling), the output layer and the loss/label encoding before training longer.")]


def not_decreasing(ev: Evidence) -> list[Finding]:
    tl = _finite(ev.column("train_loss"))
    start = _num(ev.probes.get("initial", {}).get("loss"))
    first = start if math.isfinite(start) else (tl[0] if tl else float("nan"))
    if len(tl) < 3 or not math.isfinite(first) or len(tl) < len(ev.history):
        return []
    best = min(tl)
    if best < first * 0.97 and best < first - 1e-6:
        return []
    return [Finding("loss_not_decreasing", "severe",
                    f"the training loss did not decrease: {_fmt(first)} at the start, best {_fmt(best)} "
                    f"over {len(tl)} epochs",
                    {"initial_loss": first, "best_train_loss": best, "epochs": len(tl)},
                    "The learning rate is probably too low (try 10x higher, or run an LR range test), or "
                    "there is a bug: check that gradients reach the weights and that targets match outputs.")]


def divergence(ev: Evidence) -> list[Finding]:
    tl = ev.column("train_loss")
    bad = [r["epoch"] for r, v in zip(ev.history, tl) if not math.isfinite(v)]
    remedy = ("Lower the learning rate (e.g. 10x), clip gradients (train.clip_norm = 1.0) and/or warm up the "
              "learning rate (schedule.warmup_epochs).")
    if bad or ev.metrics.get("stop_reason") == "non_finite":
        return [Finding("divergence", "severe", f"the loss became NaN or infinite at epoch {bad[0] if bad else '?'}",
                        {"non_finite_epochs": bad}, remedy)]
    start = _num(ev.probes.get("initial", {}).get("loss"))
    finite = _finite(tl)
    if len(finite) >= 2:
        ref = min(start, finite[0]) if math.isfinite(start) else finite[0]
        if finite[-1] > 1.5 * ref and finite[-1] > ref + 0.05:
            return [Finding("divergence", "severe",
                            f"the training loss grew from {_fmt(ref)} to {_fmt(finite[-1])}",
                            {"start_loss": ref, "final_loss": finite[-1],
                             "max_loss": max(finite), "epoch_of_max": 1 + finite.index(max(finite))}, remedy)]
        peak = max(finite)
        if peak > 3 * ref and peak > ref + 0.5:
            return [Finding("divergence", "warning",
                            f"the training loss spiked to {_fmt(peak)} at epoch {1 + finite.index(peak)} "
                            f"(from {_fmt(ref)}) before coming down", {"start_loss": ref, "max_loss": peak,
                                                                     "epoch_of_max": 1 + finite.index(peak)},
                            remedy)]
    if len(finite) >= 6:
        d = [b - a for a, b in zip(finite, finite[1:])]
        ups = [i + 2 for i, x in enumerate(d) if x > 0.1 * abs(finite[i])]
        flips = sum(1 for a, b in zip(d, d[1:]) if a * b < 0)
        if len(ups) >= max(3, len(d) // 4) and flips >= len(d) // 2:
            return [Finding("oscillation", "warning",
                            f"the training loss oscillates: it rose by more than 10% in {len(ups)} of "
                            f"{len(d)} epochs", {"rising_epochs": ups, "direction_changes": flips},
                            remedy.replace("Lower", "Oscillation: lower"))]
    return []


def overfitting(ev: Evidence) -> list[Finding]:
    vl, tl = ev.column("val_loss"), ev.column("train_loss")
    pairs = [(r["epoch"], v, t) for r, v, t in zip(ev.history, vl, tl) if math.isfinite(v) and math.isfinite(t)]
    if len(pairs) < 4:
        return []
    best_i = min(range(len(pairs)), key=lambda i: pairs[i][1])
    epoch0, v0, t0 = pairs[best_i]
    later = pairs[best_i + 1:]
    if not later:
        return []
    worst = max(later, key=lambda p: p[1])
    rise = (worst[1] - v0) / max(abs(v0), 1e-12)
    gap = worst[1] - worst[2]
    if rise < 0.2 or worst[2] > t0 or gap <= 0:
        return []
    severity = "warning" if rise > 0.5 else "info"
    return [Finding("overfitting", severity,
                    f"overfitting began at epoch {epoch0}: validation loss rose {rise:.0%} above its minimum "
                    f"{_fmt(v0)} (to {_fmt(worst[1])} at epoch {worst[0]}) while the training loss kept falling",
                    {"began_epoch": epoch0, "best_val_loss": v0, "worst_val_loss": worst[1],
                     "worst_epoch": worst[0], "train_loss_then": worst[2], "gap": gap},
                    "Regularize (weight decay, dropout, L2), augment the data, get more data, or stop early "
                    f"(stopping.restore_best keeps epoch {epoch0}'s weights).")]


def underfitting(ev: Evidence) -> list[Finding]:
    if ev.task == "regression":
        tr, va, floor, name = ev.column("train_r2"), ev.column("val_r2"), 0.5, "R2"
    else:
        tr, va, floor, name = ev.column("train_accuracy"), ev.column("val_accuracy"), 0.9, "accuracy"
    tr, va = _finite(tr), _finite(va)
    if not tr:
        return []
    best_train = max(tr)
    if best_train >= floor:
        return []
    still = len(tr) >= 3 and tr[-1] > tr[-3] + 0.01
    return [Finding("underfitting", "warning",
                    f"underfitting: the best training {name} is {_fmt(best_train)} (validation "
                    f"{_fmt(max(va)) if va else 'n/a'}); the model does not fit its own training rows",
                    {f"best_train_{name.lower()}": best_train, f"best_val_{name.lower()}": max(va) if va else None,
                     "epochs": len(tr), "still_improving": still},
                    "Add capacity (wider/deeper model), train longer" + (" (it was still improving)" if still else "")
                    + ", reduce regularization (dropout, weight decay), or raise a too-low learning rate.")]


# ------------------------------------------------------------------------------------ the probes
def _median(points: list[tuple[int, float]]) -> float:
    return statistics.median(v for _, v in points)


def _hidden(ev: Evidence) -> list[str]:
    """Weighted layers in forward order (the head last)."""
    return [w["name"] for w in ev.probes.get("weighted", [])]


def gradient_flow(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("weights", "out_grad_rms")
    names = [n for n in _hidden(ev) if n in series]
    if len(names) < 3:
        return []
    first = ev.probes["epochs"][0]["epoch"]
    early = {n: [v for e, v in series[n] if e == first] for n in names}
    med = {n: statistics.median(v) for n, v in early.items() if v}
    if names[0] not in med or names[-1] not in med or med[names[-1]] <= 0:
        return []
    ratio = med[names[0]] / med[names[-1]]
    evidence = {"epoch": first, "ratio_first_to_last": ratio,
                "out_grad_rms": {n: med[n] for n in names if n in med}}
    if ratio < 1 / 30:
        return [Finding("vanishing_gradients", "severe" if ratio < 1e-3 else "warning",
                        f"vanishing gradients: the gradient reaching {names[0]} is {ratio:.1e} times the one "
                        f"reaching {names[-1]} (epoch {first})", evidence,
                        "Use a scaled initialization (Xavier/Glorot for tanh/sigmoid, He for ReLU), add "
                        "normalization layers (model.norm = \"batch\"), or a non-saturating activation (ReLU).")]
    if ratio > 30:
        return [Finding("exploding_gradients", "severe" if ratio > 1e3 else "warning",
                        f"exploding gradients: the gradient reaching {names[0]} is {ratio:.1e} times the one "
                        f"reaching {names[-1]} (epoch {first})", evidence,
                        "Use a scaled initialization (Xavier/He: weights ~ 1/sqrt(fan_in)), add normalization "
                        "layers, and clip gradients (train.clip_norm).")]
    return []


def saturation(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("activations", "saturated")
    bad = {n: _median(p) for n, p in series.items() if _median(p) > 0.3}
    if not bad:
        return []
    worst = max(bad.values())
    return [Finding("saturated_units", "severe" if worst > 0.6 else "warning",
                    f"saturated units: {len(bad)} of {len(series)} tanh/sigmoid layers have a median "
                    f"{worst:.0%} of their outputs in the flat tails (|tanh| > 0.97, sigmoid < 0.03 or > 0.97)",
                    {"saturated_fraction": bad},
                    "Saturated units pass almost no gradient. Use Xavier/Glorot initialization "
                    "(init.weights = \"xavier_normal\"), normalize the inputs, add batch norm, or a "
                    "non-saturating activation (ReLU, leaky ReLU).")]


def dead_relus(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("activations", "dead")
    last = {n: p[-1][1] for n, p in series.items() if p}
    bad = {n: v for n, v in last.items() if v > 0.4}
    if not bad:
        return []
    worst = max(bad.values())
    return [Finding("dead_relus", "severe" if worst > 0.7 else "warning",
                    f"dead ReLUs: up to {worst:.0%} of the units of {', '.join(bad)} never fired on the "
                    "last probe batch", {"dead_fraction": bad, "epoch": ev.probes["epochs"][-1]["epoch"]},
                    "Use He (Kaiming) initialization with zero biases, a leaky ReLU (model.activation = "
                    "\"leaky_relu\"), and a lower learning rate: a too-large step pushes units where they "
                    "never fire again.")]


def identical_units(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("weights", "row_spread")
    names = _hidden(ev)[:-1]          # the head's rows are the classes, not hidden units
    bad = {n: series[n][-1][1] for n in names if n in series and series[n][-1][1] < 1e-4}
    if not bad:
        return []
    return [Finding("identical_units", "severe",
                    f"identical units: every unit of {', '.join(bad)} has the same weights, so they compute "
                    "the same thing and receive the same gradient forever (the symmetry problem)",
                    {"row_spread": bad},
                    "Break the symmetry with a random initialization (init.weights = \"kaiming_normal\" for ReLU, "
                    "\"xavier_normal\" for tanh/sigmoid) instead of zeros or a constant.")]


def update_ratio(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("weights", "update_ratio")
    if not series:
        return []
    # The first half of the run: a decaying schedule legitimately shrinks the updates near its end.
    half = math.ceil(len(ev.probes.get("epochs", [])) / 2)
    first = ev.probes["epochs"][0]["epoch"] if ev.probes.get("epochs") else 1
    med = {n: _median([(e, v) for e, v in p if e < first + half] or p) for n, p in series.items()}
    high = {n: v for n, v in med.items() if v > 3e-2}
    low = {n: v for n, v in med.items() if 0 < v < 1e-5}
    if high:
        return [Finding("update_ratio", "warning",
                        f"updates are large: the update/weight ratio of {', '.join(high)} is "
                        f"{_fmt(max(high.values()))} (median), far above ~1e-3", {"update_ratio": med},
                        "Lower the learning rate; a healthy update changes each weight by about a thousandth "
                        "of its size per step.")]
    if low and len(low) == len(med):
        return [Finding("update_ratio", "warning",
                        f"updates are tiny: the update/weight ratio is at most {_fmt(max(low.values()))} "
                        "(median), far below ~1e-3", {"update_ratio": med},
                        "Raise the learning rate (or check that it is not scheduled to almost zero).")]
    return []


# ------------------------------------------------------------------------------------ the data
def unnormalized(ev: Evidence) -> list[Finding]:
    s = ev.facts.get("scales", {})
    lo, hi = _num(s.get("std_min")), _num(s.get("std_max"))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0:
        return []
    ratio, off = hi / lo, _num(s.get("abs_mean_max")) / max(_num(s.get("std_median")), 1e-12)
    if ratio < 100 and off < 10:
        return []
    return [Finding("unnormalized_inputs", "warning",
                    f"the input features' scales are orders of magnitude apart: std from {_fmt(lo)} "
                    f"({s.get('std_min_feature')}) to {_fmt(hi)} ({s.get('std_max_feature')})",
                    {"std_ratio": ratio, "abs_mean_max_over_median_std": off, **s},
                    "Normalize the inputs (data.normalize = \"standard\"), with statistics fitted on the "
                    "training split only.")]


def imbalance(ev: Evidence) -> list[Finding]:
    counts = ev.facts.get("data", {}).get("class_counts", {}).get("train")
    if not counts or min(counts) == 0 and len(counts) < 2:
        return []
    ratio = max(counts) / max(min(counts), 1)
    if ratio < 3:
        return []
    classes = ev.facts["data"].get("classes", [])
    return [Finding("class_imbalance", "warning" if ratio < 10 else "severe",
                    f"class imbalance: the largest training class has {ratio:.1f}x the rows of the smallest",
                    {"train_counts": dict(zip(classes, counts)) if classes else counts, "ratio": ratio},
                    "Judge the model by macro F1 (f1) and balanced_accuracy rather than accuracy, and weight "
                    "the classes (loss.class_weight = \"balanced\") or resample them "
                    "(train.sampler = \"balanced\").")]


def leakage(ev: Evidence) -> list[Finding]:
    leak = ev.facts.get("leakage", {})
    rows = ev.facts.get("data", {}).get("rows", {})
    hits = {k: v for k, v in leak.items() if v}
    if not hits:
        return []
    frac = max(v / max(rows.get(k, 1), 1) for k, v in hits.items())
    return [Finding("leakage", "severe" if frac > 0.01 else "warning",
                    "train/test leakage: " + ", ".join(f"{v} of {rows.get(k, '?')} {k} rows" for k, v in hits.items())
                    + " also occur, feature for feature, in the training split",
                    {"shared_rows": hits, "rows": rows},
                    "Remove duplicate rows before splitting (or split by group), otherwise validation and test "
                    "scores measure memory, not generalization.")]


def mislabeled(ev: Evidence) -> list[Finding]:
    suspects = [s for s in ev.facts.get("suspects", []) if s["confidence"] >= 0.5]
    fit = _finite(ev.column("train_accuracy"))
    # A model that does not fit most training rows has no authority to doubt their labels.
    if not suspects or not fit or max(fit) < 0.9:
        return []
    shown = ", ".join(f"#{s['index']} ({s['label']}->{s['prediction']}, {s['confidence']:.2f})" for s in suspects[:5])
    return [Finding("suspected_mislabeled", "info",
                    f"{len(suspects)} training rows are confidently predicted as another class: {shown}"
                    + (" ..." if len(suspects) > 5 else ""),
                    {"rows": suspects},
                    "Look at these rows: a wrong label teaches the model a wrong rule. Fix or drop them, or "
                    "use label smoothing to soften their pull.")]


RULES: dict[str, Callable[[Evidence], list[Finding]]] = {
    "initial_loss": initial_loss, "loss_not_decreasing": not_decreasing, "divergence": divergence,
    "gradient_flow": gradient_flow, "saturated_units": saturation, "dead_relus": dead_relus,
    "identical_units": identical_units, "update_ratio": update_ratio, "overfitting": overfitting,
    "underfitting": underfitting, "unnormalized_inputs": unnormalized, "class_imbalance": imbalance,
    "leakage": leakage, "suspected_mislabeled": mislabeled,
}


def diagnose(ev: Evidence) -> list[Finding]:
    """Every rule's findings, most severe first."""
    found = [f for rule in RULES.values() for f in rule(ev)]
    return sorted(found, key=lambda f: -SEVERITIES.index(f.severity))
