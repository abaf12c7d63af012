"""The doctor: rules that read a run's stored evidence and return findings.

Each rule is a small function `rule(evidence) -> list[Finding]`, registered in RULES. A finding
says what is wrong (message), how bad (severity: info < warning < severe), the numbers that
show it (evidence: epochs, layers, values), what to try (remedy) and the recipe overrides that
try it (overrides; never a value the run already has). The evidence is only what the run folder
holds: recipe.toml, history.csv, metrics.json, probes.json and facts.json.

`diagnose` orders the findings root cause first: a cause (divergence, zero init, unnormalized
inputs, an unscaled target, a learning rate far off, ...) comes before the symptoms it explains,
and those symptoms are marked as its consequences (`Finding.cause`). Every threshold below is
documented, with the corpus scenarios it was chosen from, in docs/doctor.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from ..recipe import DataSection
from ..recipe_errors import KNOWN_DIRECTIONS
from .evidence import (
    DIAGNOSIS,
    SEVERITIES,
    Evidence,
    Finding,
    format_findings,
    load_evidence,
    set_flags,
    write_diagnosis,
)
from .evidence import number as _num

__all__ = ["DIAGNOSIS", "RULES", "Evidence", "Finding", "diagnose", "format_findings", "load_evidence",
           "set_flags", "write_diagnosis"]

# ------------------------------------------------------------------------------------ thresholds
# (docs/doctor.md gives the corpus evidence behind each)
INITIAL_LOSS_BAND = (0.5, 3.0)      # initial loss within [0.5, 3] x ln(C) is an uninformed start
NOT_DECREASING = 0.97               # best loss must fall below 97% of the initial one
DIVERGED_FINAL = 1.5                # final training loss above 1.5 x the start: diverged
OVERFIT_RISE = 0.2                  # validation loss this far above its minimum, the training loss lower: overfitting
SPIKE = 3.0                         # a peak above 3 x the start that came back down: a spike
OSCILLATION_RISE = 0.1              # a rise counts when above 10% of the curve's own range
UNDERFIT_GAP_ACC = 0.05             # validation accuracy this far under the baseline's (and 2 std errors)
UNDERFIT_GAP_R2 = 0.1               # validation R2 this far under the baseline's
LINEAR_GAP_R2 = 0.05                # the network's validation R2 this far under the linear baseline's, same rows ...
LINEAR_GAP_ACC = 0.05               # ... or its accuracy this far; either beyond 2 paired standard errors
GRADIENT_RATIO = 10.0               # first/last hidden layer gradient RMS beyond 10x either way
SATURATED = 0.3                     # median share of saturated tanh/sigmoid outputs
DEAD = 0.4                          # share of ReLU units that never fire on the probe batch
IDENTICAL = 1e-4                    # row spread of a layer's weights: all units the same
UPDATE_HIGH = 3e-2                  # update/weight ratio (median, first half): learning rate too high
UPDATE_LOW = 1e-4                   # ... every layer below this: learning rate too low
UPDATE_SAFE = 1e-3                  # ... after a divergence, the remedy aims lower: the classic rule of thumb
UPDATE_GOOD = 2.5e-3                # the median ratio of the corpus's healthy runs (1.5e-3 to 1.2e-2): remedies aim at it
SCALE_RATIO = 100.0                 # feature std max/min, or |mean|/median std above 10: unnormalized
TARGET_SCALE = 10.0                 # regression target std or |mean| above this: unscaled
IMBALANCE = 3.0                     # largest/smallest class count
LEAK_WARNING, LEAK_SEVERE = 0.02, 0.1    # share of a split duplicated (with its target) in train
LIFT_WARNING, LIFT_SEVERE = 0.005, 0.02  # ... or accuracy the duplicated rows add to the split's (half a point, two)
NOISE_RATE = 0.04                   # estimated share of wrong labels that is a warning ...
NOISE_ROWS = 100                    # ... when at least this many training rows were checked
ECE_HIGH = 0.08                     # expected calibration error of the validation split ...
OVERCONFIDENT = 0.05                # ... with mean confidence this far above accuracy


def _finite(xs: Iterable[float]) -> list[float]:
    return [x for x in xs if math.isfinite(x)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _round_sig(v: float) -> float:
    return float(f"{v:.1g}")


# ------------------------------------------------------------------------------------ remedies
@dataclass(frozen=True)
class Option:
    """One thing to try: what to say, and the recipe overrides that do it (none when the advice has
    no recipe key). `joint` options are tried together with the first one."""

    text: str
    overrides: dict[str, Any] = field(default_factory=dict)
    joint: bool = False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def _new(ev: Evidence, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides the run does not already have, and that apply to its model: a module passed from
    Python (model.kind "custom") has none of the [model] keys and cannot be an ensemble (its members are
    built from [model]), so those are left out for it."""
    custom = ev.setting("model.kind") == "custom"
    return {k: v for k, v in overrides.items() if not _same(ev.setting(k), v)
            and not (custom and (k.startswith("model.") or (k, v) == ("train.average.kind", "ensemble")))}


def remedy(ev: Evidence, options: list[Option], lead: str = "") -> tuple[str, dict[str, Any]]:
    """Remedy text and overrides from the options that still change something in this run's recipe:
    an option whose every override is already set is left out (the doctor never prescribes what the
    run already does)."""
    kept: list[Option] = []
    for o in options:
        new = _new(ev, o.overrides)
        if o.overrides and not new:
            continue
        kept.append(replace(o, overrides=new))
    overrides: dict[str, Any] = {}
    first = True
    for o in kept:
        if o.overrides and (first or o.joint):
            overrides.update(o.overrides)
            first = False
    text = "; ".join(o.text for o in kept)
    return (lead + (" " if lead and text else "") + text).strip() or "No change of the recipe applies.", overrides


def _lr(ev: Evidence) -> float:
    return _num(ev.setting("optimizer.lr"))


def _median_update(ev: Evidence) -> float:
    med = _update_medians(ev)
    vals = _finite(med.values())
    return statistics.median(vals) if vals else float("nan")


def _lr_option(ev: Evidence, factor: float, text: str) -> list[Option]:
    lr = _lr(ev)
    if not (math.isfinite(lr) and lr > 0):
        return [Option(text)]
    new = _round_sig(lr * factor)
    return [Option(f"{text} (optimizer.lr {_fmt(lr)} -> {_fmt(new)})", {"optimizer.lr": new})]


def _lower_lr(ev: Evidence, target: float = UPDATE_GOOD) -> list[Option]:
    """A lower learning rate, from the run's own update/weight ratio when it is known (aiming at
    `target`: the healthy runs' median, or after a divergence the safer UPDATE_SAFE), else 10x lower."""
    ratio = _median_update(ev)
    factor = 0.1
    if math.isfinite(ratio) and ratio > target:
        factor = min(max(target / ratio, 0.01), 0.3)
    return _lr_option(ev, factor, "lower the learning rate")


def _raise_lr(ev: Evidence) -> list[Option]:
    ratio = _median_update(ev)
    factor = 10.0
    if math.isfinite(ratio) and 0 < ratio < UPDATE_GOOD:
        factor = min(max(UPDATE_GOOD / ratio, 3.0), 100.0)
    return _lr_option(ev, factor, "raise the learning rate")


def _scaled_init(ev: Evidence) -> Option:
    act = ev.setting("model.activation", "relu")
    if act in ("tanh", "sigmoid", "identity"):
        return Option("a scaled initialization (Xavier/Glorot for tanh/sigmoid)", {"init.weights": "xavier_normal"})
    return Option("He (Kaiming) initialization for ReLU", {"init.weights": "kaiming_normal"})


def _batch_norm(ev: Evidence) -> list[Option]:
    if ev.setting("model.norm") is None:
        return []
    return [Option("normalization layers (batch norm)", {"model.norm": "batch"})]


def _normalize_inputs(ev: Evidence) -> Option:
    return Option("normalize the inputs with statistics of the training split", {"data.normalize": "standard"})


def _label_smoothing(ev: Evidence) -> list[Option]:
    if ev.task == "regression" or ev.metrics.get("loss") not in (None, "cross_entropy", "bce_with_logits"):
        return []
    return [Option("label smoothing", {"loss.label_smoothing": 0.1})]


def finding(ev: Evidence, rule: str, severity: str, message: str, evidence: dict[str, Any],
            options: list[Option], lead: str = "") -> Finding:
    text, overrides = remedy(ev, options, lead)
    return Finding(rule, severity, message, evidence, text, overrides)


# ------------------------------------------------------------------------------------ the curves
def _fit_series(ev: Evidence, metric: str) -> tuple[list[float], str]:
    """An eval-mode statistic over the training sample (probes) when recorded, else the running one."""
    te = [v for _, v in ev.train_eval(metric)]
    if te:
        return te, "eval-mode"
    return _finite(ev.column(f"train_{metric}")), "running"


def initial_loss(ev: Evidence) -> list[Finding]:
    """A softmax classifier that knows nothing predicts 1/C for every class: loss ln(C)."""
    loss = _num((ev.probes.get("initial") or {}).get("loss"))
    kind = ev.metrics.get("loss")
    if not math.isfinite(loss) or ev.task == "regression" or kind not in ("cross_entropy", "nll",
                                                                            "bce_with_logits"):
        return []
    c = 2 if ev.task == "binary" else ev.n_classes
    if c < 2:
        return []
    expected = math.log(c)
    lo, hi = INITIAL_LOSS_BAND
    if lo * expected <= loss <= hi * expected:
        return []
    return [finding(ev, "initial_loss", "warning",
                    f"initial loss {_fmt(loss)} is far from ln({c}) = {_fmt(expected)}, the loss of a model "
                    "that predicts every class with equal probability: the initialization is off scale",
                    {"initial_loss": loss, "expected": expected, "classes": c},
                    [_scaled_init(ev), *_batch_norm(ev)],
                    "Check the initialization scale (a too-large init gives confident random outputs), the "
                    "output layer and the loss/label encoding;")]


def not_decreasing(ev: Evidence) -> list[Finding]:
    running = ev.column("train_loss")
    tl, source = _fit_series(ev, "loss")
    start = _num((ev.probes.get("initial") or {}).get("loss"))
    first = start if math.isfinite(start) else (tl[0] if tl else float("nan"))
    if len(tl) < 3 or not math.isfinite(first) or len(_finite(running)) < len(ev.history):
        return []
    best = min(tl)
    if best < first * NOT_DECREASING and best < first - 1e-6:
        return []
    return [finding(ev, "loss_not_decreasing", "severe",
                    f"the training loss did not decrease: {_fmt(first)} at the start, best {_fmt(best)} "
                    f"over {len(tl)} epochs ({source})",
                    {"initial_loss": first, "best_train_loss": best, "epochs": len(tl), "source": source},
                    _raise_lr(ev), "Check that gradients reach the weights and that targets match outputs;")]


def divergence(ev: Evidence) -> list[Finding]:
    tl = ev.column("train_loss")
    bad = [r.get("epoch") for r, v in zip(ev.history, tl) if not math.isfinite(v)]
    options = [*_lower_lr(ev, UPDATE_SAFE), Option("clip gradients", {"train.clip_norm": 1.0}, joint=True),
               Option("warm up the learning rate", {"schedule.warmup_epochs": 1.0})]
    if bad or ev.metrics.get("stop_reason") == "non_finite":
        return [finding(ev, "divergence", "severe",
                        f"the loss became NaN or infinite at epoch {bad[0] if bad else '?'}",
                        {"non_finite_epochs": bad}, options)]
    start = _num((ev.probes.get("initial") or {}).get("loss"))
    finite = _finite(tl)
    if len(finite) < 2:
        return []
    ref = min(start, finite[0]) if math.isfinite(start) else finite[0]
    peak = max(finite)
    at = 1 + finite.index(peak)
    if finite[-1] > DIVERGED_FINAL * ref and finite[-1] > ref + 0.05:
        return [finding(ev, "divergence", "severe",
                        f"the training loss diverged: it grew from {_fmt(ref)} to {_fmt(finite[-1])}"
                        + (f" (peak {_fmt(peak)} at epoch {at})" if peak > finite[-1] else ""),
                        {"start_loss": ref, "final_loss": finite[-1], "max_loss": peak, "epoch_of_max": at},
                        options)]
    if peak > SPIKE * ref and peak > ref + 0.5:
        return [finding(ev, "divergence", "warning",
                        f"the training loss spiked to {_fmt(peak)} at epoch {at} (from {_fmt(ref)}) before "
                        "coming down", {"start_loss": ref, "max_loss": peak, "epoch_of_max": at}, options)]
    return []


def oscillation(ev: Evidence) -> list[Finding]:
    """Rises counted against the curve's own range, so that the wiggles of a converged loss
    (0.021, 0.019, 0.022) are not oscillation while 1.0, 0.6, 0.9, 0.55 is."""
    finite = _finite(ev.column("train_loss"))
    if len(finite) < 6:
        return []
    span = max(finite) - min(finite)
    if span <= 0:
        return []
    d = [b - a for a, b in zip(finite, finite[1:])]
    ups = [i + 2 for i, x in enumerate(d) if x > OSCILLATION_RISE * span]
    flips = sum(1 for a, b in zip(d, d[1:]) if a * b < 0)
    if len(ups) < max(3, len(d) // 4) or flips < len(d) // 2:
        return []
    return [finding(ev, "oscillation", "warning",
                    f"the training loss oscillates: it rose by more than {OSCILLATION_RISE:.0%} of its range "
                    f"({_fmt(span)}) in {len(ups)} of {len(d)} epochs",
                    {"rising_epochs": ups, "direction_changes": flips, "range": span},
                    [*_lower_lr(ev), Option("clip gradients", {"train.clip_norm": 1.0}, joint=True)])]


def overfitting(ev: Evidence) -> list[Finding]:
    vl, tl = ev.column("val_loss"), ev.column("train_loss")
    pairs = [(r.get("epoch"), v, t) for r, v, t in zip(ev.history, vl, tl) if math.isfinite(v) and math.isfinite(t)]
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
    if rise < OVERFIT_RISE or worst[2] > t0 or gap <= 0:
        return []
    kept = _restored_before_rise(ev, pairs, v0)
    severity = "warning" if rise > 0.5 and not kept else "info"
    stop = Option("stop early and keep the best epoch's weights",
                  {"stopping.enabled": True, "stopping.restore_best": True})
    options = [*([] if kept else [stop]),
               Option("weight decay", {"optimizer.weight_decay": _more_decay(ev)}),
               Option("dropout", {"model.dropout": max(0.3, _num(ev.setting("model.dropout", 0.0)) or 0.0)}),
               Option("augment the data or get more of it")]
    note = (f" (stopping.restore_best returned epoch {epoch0}'s weights, so the returned model is not affected)"
            if kept else "")
    return [finding(ev, "overfitting", severity,
                    f"overfitting began at epoch {epoch0}: validation loss rose {rise:.0%} above its minimum "
                    f"{_fmt(v0)} (to {_fmt(worst[1])} at epoch {worst[0]}) while the training loss kept falling"
                    + note,
                    {"began_epoch": epoch0, "best_val_loss": v0, "worst_val_loss": worst[1],
                     "worst_epoch": worst[0], "train_loss_then": worst[2], "gap": gap, "kept_best": kept},
                    options, "Regularize:")]


def _restored_before_rise(ev: Evidence, pairs: list[tuple[Any, float, float]], best_val_loss: float) -> bool:
    """Whether the returned model is one from before the validation loss rose: restore_best returns the
    best epoch's weights by the monitored value (whether or not the run stopped early), which is the
    validation loss minimum when the loss is monitored; by another value (e.g. val_accuracy) it can
    be a late, overfitted epoch."""
    if not ev.setting("stopping.restore_best"):
        return False
    monitor = str(ev.setting("stopping.monitor", "val_loss"))
    if monitor in ("None", "val_loss"):
        return True
    scores = [(r.get("epoch"), _num(r.get(monitor))) for r in ev.history]
    scores = [(e, v) for e, v in scores if math.isfinite(v)]
    if not scores:
        return True
    mode = ev.setting("stopping.mode") or KNOWN_DIRECTIONS.get(monitor.removeprefix("val_").removeprefix("train_"),
                                                              "min")
    epoch = (min if mode == "min" else max)(scores, key=lambda p: p[1])[0]
    at = next((v for e, v, _ in pairs if e == epoch), best_val_loss)
    return (at - best_val_loss) / max(abs(best_val_loss), 1e-12) < OVERFIT_RISE


def _more_decay(ev: Evidence) -> float:
    wd = _num(ev.setting("optimizer.weight_decay", 0.0))
    return _round_sig(wd * 10) if math.isfinite(wd) and wd > 0 else 1e-4 if ev.setting("optimizer.kind") != "adamw" \
        else 1e-2


def _best_baseline(base: dict) -> str:
    """The name of the baseline model with the best finite validation score ("baseline" when none has one)."""
    models = base.get("models")
    scores = {k: _num(v) for k, v in models.items()} if isinstance(models, dict) else {}
    scores = {k: v for k, v in scores.items() if math.isfinite(v)}
    return max(scores, key=scores.get) if scores else "baseline"


def underfitting(ev: Evidence) -> list[Finding]:
    """Judged against what the data allows: the better of a linear model and a k-NN fitted on the
    same training rows and scored on the same validation rows (facts.baseline). Underfitting is a
    model whose validation score is clearly under that baseline while it does not fit its training
    rows any better (so more capacity, not regularization, is what it lacks)."""
    base = ev.facts.get("baseline") or {}
    metric = base.get("metric")
    target = _num(base.get("val"))
    if metric not in ("accuracy", "r2") or not math.isfinite(target):
        return []
    val = _finite(ev.column(f"val_{metric}"))
    train, source = _fit_series(ev, metric)
    if not val or not train:
        return []
    best_val, best_train = max(val), max(train)
    rows = _num((ev.facts.get("data") or {}).get("rows", {}).get("val"))
    if metric == "accuracy":
        se = math.sqrt(max(target * (1 - target), 0.0) / rows) if math.isfinite(rows) and rows > 0 else 0.0
        margin = max(UNDERFIT_GAP_ACC, 2 * se)
    else:
        margin = UNDERFIT_GAP_R2
    if best_val >= target - margin or best_train > target + margin / 2:
        return []
    # "still improving" only when the loss agrees: never next to "the loss did not decrease"
    still = len(train) >= 3 and train[-1] > train[-3] + 0.01 and not not_decreasing(ev)
    options = []
    epochs = ev.setting("train.epochs")
    if still and isinstance(epochs, int):
        options.append(Option("train longer (it was still improving)", {"train.epochs": 2 * epochs}))
    dropout, wd = _num(ev.setting("model.dropout", 0.0)), _num(ev.setting("optimizer.weight_decay", 0.0))
    if (math.isfinite(dropout) and dropout >= 0.3) or (math.isfinite(wd) and wd >= 1e-3):
        options.append(Option("less regularization", {"model.dropout": 0.0, "optimizer.weight_decay": 0.0}))
    options += _capacity(ev)
    return [finding(ev, "underfitting", "warning",
                    f"underfitting: the best validation {metric} is {_fmt(best_val)}, the best training {metric} "
                    f"{_fmt(best_train)} ({source}), while a {_best_baseline(base)} "
                    f"model fitted on the same rows reaches {_fmt(target)} on validation",
                    {f"best_val_{metric}": best_val, f"best_train_{metric}": best_train, "baseline": base,
                     "source": source, "still_improving": still},
                    options)]


def linear_better(ev: Evidence) -> list[Finding]:
    """A network that validates worse than the linear baseline fitted on the same training rows, while
    it fits its own training rows at least as well as that baseline validates: its extra capacity
    buys variance, not fit (typical of a few hundred rows of nearly linear data). Judged on the same
    validation rows, row by row (facts.baseline.versus_net), beyond 2 standard errors of the paired
    gap, so that a small validation split's noise does not make the claim."""
    base = ev.facts.get("baseline") or {}
    vs, metric = base.get("versus_net") or {}, base.get("metric")
    gap, se, lin, net = (_num(vs.get(k)) for k in ("gap", "se", "linear", "net"))
    if metric not in ("accuracy", "r2") or not all(math.isfinite(v) for v in (gap, se, lin, net)):
        return []
    if gap <= (LINEAR_GAP_R2 if metric == "r2" else LINEAR_GAP_ACC) or gap <= 2 * se:
        return []
    train, source = _fit_series(ev, metric)
    if not train or max(train) < lin:
        return []                               # it does not fit its own rows: underfitting's case
    knn = _num((base.get("models") or {}).get("knn"))
    rows, features = base.get("rows"), (ev.facts.get("scales") or {}).get("features")
    shape = (f"; the data look nearly linear (a k-NN reaches {_fmt(knn)})" if math.isfinite(knn) and knn < lin
             else "")
    options = [Option("average several networks (an ensemble cuts the variance a few hundred rows leave)",
                      {"train.average.kind": "ensemble"}),
               Option("regularize harder", {"model.dropout": max(0.3, _num(ev.setting("model.dropout", 0.0)))}),
               Option("or use the linear model itself: on this data it is the better model (the report's "
                      "baseline: ridge / logistic regression on the same standardized features)")]
    return [finding(ev, "linear_better", "warning",
                    f"a linear model fitted on the same {rows} training rows validates better: {metric} {_fmt(lin)} "
                    f"against the network's {_fmt(net)} on the same {vs.get('rows')} validation rows (gap "
                    f"{_fmt(gap)}, {f'{gap / se:.1f} standard errors' if se > 0 else 'on every row'}), while the network fits its training rows to "
                    f"{_fmt(max(train))} ({source}): its extra capacity buys variance, not fit, on "
                    f"{rows} rows of {features} features{shape}",
                    {"versus_net": vs, "baseline": base.get("models"), f"best_train_{metric}": max(train),
                     "source": source, "rows": rows, "features": features}, options)]


def _capacity(ev: Evidence) -> list[Option]:
    if ev.setting("model.kind") == "cnn":
        ch = ev.setting("model.channels")
        if isinstance(ch, list) and ch:
            return [Option("a wider model", {"model.channels": [2 * c for c in ch]})]
    hidden = ev.setting("model.hidden")
    if isinstance(hidden, list):
        wider = [max(64, 2 * h) for h in hidden] if hidden else [64]
        if len(wider) < 2:
            wider = wider + [wider[-1]]
        return [Option("a wider/deeper model", {"model.hidden": wider})]
    return [Option("a model with more capacity")]


# ------------------------------------------------------------------------------------ the probes
def _median(points: list[tuple[int, float]]) -> float:
    return statistics.median(v for _, v in points)


def _weighted(ev: Evidence) -> list[str]:
    """Weighted layers in forward order (the head last)."""
    return [w.get("name") for w in ev.probes.get("weighted") or [] if isinstance(w, dict)]


def gradient_flow(ev: Evidence) -> list[Finding]:
    """The gradient reaching the first hidden layer against the one reaching the last hidden layer
    (the head is left out: a handful of logits is not comparable with thousands of hidden units)."""
    series = ev.layer_series("weights", "out_grad_rms")
    names = [n for n in _weighted(ev)[:-1] if n in series]
    if len(names) < 2:
        return []
    first = min(e for n in names for e, _ in series[n])
    early = {n: [v for e, v in series[n] if e == first] for n in names}
    med = {n: statistics.median(v) for n, v in early.items() if v}
    lo, hi = names[0], names[-1]
    if lo not in med or hi not in med or med[hi] <= 0 or med[lo] < 0:
        return []
    ratio = med[lo] / med[hi]
    evidence = {"epoch": first, "ratio_first_to_last_hidden": ratio, "out_grad_rms": med}
    act = ev.setting("model.activation", "relu")
    if ratio < 1 / GRADIENT_RATIO:
        options = [_scaled_init(ev), *_batch_norm(ev)]
        if act in ("tanh", "sigmoid"):
            options.append(Option("a non-saturating activation", {"model.activation": "relu",
                                                                   "init.weights": "kaiming_normal"}))
        return [finding(ev, "vanishing_gradients", "severe" if ratio < 1e-3 else "warning",
                        f"vanishing gradients: the gradient reaching {lo} is {ratio:.1e} times the one reaching "
                        f"{hi} (epoch {first})", evidence, options)]
    if ratio > GRADIENT_RATIO:
        return [finding(ev, "exploding_gradients", "severe" if ratio > 1e3 else "warning",
                        f"exploding gradients: the gradient reaching {lo} is {ratio:.1e} times the one reaching "
                        f"{hi} (epoch {first})", evidence,
                        [_scaled_init(ev), *_batch_norm(ev), Option("clip gradients", {"train.clip_norm": 1.0})])]
    return []


def saturation(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("activations", "saturated")
    bad = {n: _median(p) for n, p in series.items() if _median(p) > SATURATED}
    if not bad:
        return []
    worst = max(bad.values())
    return [finding(ev, "saturated_units", "severe" if worst > 0.6 else "warning",
                    f"saturated units: {len(bad)} of {len(series)} tanh/sigmoid layers have a median "
                    f"{worst:.0%} of their outputs in the flat tails (|tanh| > 0.97, sigmoid < 0.03 or > 0.97)",
                    {"saturated_fraction": bad},
                    [_scaled_init(ev), _normalize_inputs(ev), *_batch_norm(ev),
                     Option("a non-saturating activation", {"model.activation": "relu",
                                                            "init.weights": "kaiming_normal"})],
                    "Saturated units pass almost no gradient:")]


def dead_relus(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("activations", "dead")
    last = {n: p[-1][1] for n, p in series.items() if p}
    bad = {n: v for n, v in last.items() if v > DEAD}
    if not bad:
        return []
    worst = max(bad.values())
    bias, value = ev.setting("init.bias"), _num(ev.setting("init.bias_value", 0.0))
    options = []
    init_at_fault = False
    if bias == "constant" and math.isfinite(value) and value < 0:
        options.append(Option(f"zero biases (init.bias_value = {_fmt(value)} keeps units below zero)",
                              {"init.bias": "zeros"}))
        init_at_fault = True
    # PyTorch's own init (the default) is scaled to the fan-in as He's is: neither leaves units dead
    if ev.setting("init.weights") not in ("kaiming_normal", "kaiming_uniform", "pytorch"):
        options.append(Option("He (Kaiming) initialization", {"init.weights": "kaiming_normal"}, joint=True))
        init_at_fault = True
    # With a sound initialization, units die from steps too large for them: a lower rate comes first.
    lower = [] if init_at_fault else _lower_lr(ev)
    options += [*lower, Option("a leaky ReLU", {"model.activation": "leaky_relu"})]
    epochs = ev.probes.get("epochs") or [{}]
    return [finding(ev, "dead_relus", "severe" if worst > 0.7 else "warning",
                    f"dead ReLUs: up to {worst:.0%} of the units of {', '.join(bad)} never fired on the "
                    "last probe batch", {"dead_fraction": bad, "epoch": epochs[-1].get("epoch")}, options)]


def identical_units(ev: Evidence) -> list[Finding]:
    series = ev.layer_series("weights", "row_spread")
    names = _weighted(ev)[:-1]          # the head's rows are the classes, not hidden units
    bad = {n: series[n][-1][1] for n in names if n in series and series[n][-1][1] < IDENTICAL}
    if not bad:
        return []
    return [finding(ev, "identical_units", "severe",
                    f"identical units: every unit of {', '.join(bad)} has the same weights, so they compute "
                    "the same thing and receive the same gradient forever (the symmetry problem)",
                    {"row_spread": bad}, [_scaled_init(ev)],
                    "Break the symmetry with a random initialization instead of zeros or a constant:")]


def _update_medians(ev: Evidence) -> dict[str, float]:
    series = ev.layer_series("weights", "update_ratio")
    if not series:
        return {}
    # The first half of the run: a decaying schedule legitimately shrinks the updates near its end.
    epochs = ev.probes.get("epochs") or []
    half = math.ceil(len(epochs) / 2)
    first = min(e for p in series.values() for e, _ in p)
    return {n: _median([(e, v) for e, v in p if e < first + half] or p) for n, p in series.items()}


def update_ratio(ev: Evidence) -> list[Finding]:
    med = _update_medians(ev)
    if not med:
        return []
    high = {n: v for n, v in med.items() if v > UPDATE_HIGH}
    low = {n: v for n, v in med.items() if 0 <= v < UPDATE_LOW}
    if high:
        return [finding(ev, "lr_too_high", "warning",
                        f"the learning rate is too high: the update/weight ratio of {', '.join(high)} is "
                        f"{_fmt(max(high.values()))} (median), far above the ~{_fmt(UPDATE_GOOD)} of a healthy run", {"update_ratio": med},
                        _lower_lr(ev), "A healthy step changes each weight by a few thousandths of its size:")]
    if low and len(low) == len(med):
        return [finding(ev, "lr_too_low", "warning",
                        f"the learning rate is too low: the update/weight ratio is at most {_fmt(max(low.values()))} "
                        f"(median), far below the ~{_fmt(UPDATE_GOOD)} of a healthy run", {"update_ratio": med},
                        _raise_lr(ev), "Check that it is not scheduled to almost zero;")]
    return []


# ------------------------------------------------------------------------------------ the data
def unnormalized(ev: Evidence) -> list[Finding]:
    s = ev.facts.get("scales") or {}
    lo, hi = _num(s.get("std_min")), _num(s.get("std_max"))
    med, off_mean = _num(s.get("std_median")), _num(s.get("abs_mean_max"))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0:
        return []
    ratio = hi / lo
    off = off_mean / max(med, 1e-12) if math.isfinite(off_mean) and math.isfinite(med) else 0.0
    if ratio < SCALE_RATIO and off < 10:
        return []
    return [finding(ev, "unnormalized_inputs", "warning",
                    f"the input features are not normalized: std from {_fmt(lo)} ({s.get('std_min_feature')}) "
                    f"to {_fmt(hi)} ({s.get('std_max_feature')}), largest |mean| {_fmt(off_mean)}",
                    {"std_ratio": ratio, "abs_mean_max_over_median_std": off, **s}, [_normalize_inputs(ev)])]


def unscaled_target(ev: Evidence) -> list[Finding]:
    """A regression target in the thousands makes the loss (and its gradient) huge next to what a
    freshly initialized network outputs, and a learning rate that suits the weights crawls on it."""
    if ev.task != "regression":
        return []
    normalize = ev.setting("data.target_normalize")
    if normalize not in (None, False, "none"):
        return []
    t = (ev.facts.get("data") or {}).get("target") or {}
    std, mean = _num(t.get("std")), _num(t.get("abs_mean"))
    if not (math.isfinite(std) and math.isfinite(mean)) or max(std, mean) < TARGET_SCALE:
        return []
    key = _target_key()
    options = [Option("standardize the target (the predictions are mapped back to its units)", {key[0]: key[1]})
               if key else Option("standardize the target yourself (subtract its mean, divide by its std)")]
    return [finding(ev, "unscaled_target", "warning",
                    f"the regression target is not scaled: std {_fmt(std)}, |mean| {_fmt(mean)}; the network "
                    "starts near 0 and its loss and gradients are dominated by the target's scale",
                    {"target_std": std, "target_abs_mean": mean}, options)]


def _target_key() -> tuple[str, Any] | None:
    """`data.target_normalize` and the value that switches it on, when this version's recipe has it."""


    info = DataSection.model_fields.get("target_normalize")
    if info is None:
        return None
    if info.annotation is bool:
        return "data.target_normalize", True
    choices = [a for a in get_args(info.annotation) if isinstance(a, str) and a != "none"]
    return ("data.target_normalize", "standard" if "standard" in choices else choices[0]) if choices else None


def imbalance(ev: Evidence) -> list[Finding]:
    counts = ((ev.facts.get("data") or {}).get("class_counts") or {}).get("train")
    if not counts or len(counts) < 2:
        return []
    ratio = max(counts) / max(min(counts), 1)
    if ratio < IMBALANCE:
        return []
    classes = ev.facts["data"].get("classes", [])
    return [finding(ev, "class_imbalance", "warning" if ratio < 10 else "severe",
                    f"class imbalance: the largest training class has {ratio:.1f}x the rows of the smallest",
                    {"train_counts": dict(zip(classes, counts)) if len(classes) == len(counts) else counts,
                     "ratio": ratio},
                    [Option("weight the classes in the loss (loss.class_weight = \"balanced\": n / (C * count)), "
                            "and judge the model by macro F1 (f1) and balanced_accuracy rather than accuracy",
                            {"loss.class_weight": "balanced"}),
                     Option("or resample the classes to equal frequencies (train.sampler = \"balanced\")",
                            {"train.sampler": "balanced"})])]


def leakage(ev: Evidence) -> list[Finding]:
    """Only rows duplicated with the same target inflate a score (two houses with the same features
    and different prices are not a leak); severity grows with the share of the split duplicated and
    with the accuracy those rows add to the split's (facts.leakage_lift)."""
    same = ev.facts.get("leakage_same_target")
    exact = same is not None
    leak = same if exact else ev.facts.get("leakage") or {}
    rows = (ev.facts.get("data") or {}).get("rows") or {}
    hits = {k: int(_num(v)) for k, v in (leak or {}).items() if math.isfinite(_num(v)) and _num(v) > 0}
    if not hits:
        return []
    share = max(v / max(_num(rows.get(k, 1)), 1) for k, v in hits.items())
    count = max(hits.values())
    given = ev.facts.get("leakage_lift")
    lifts = {k: v for k, v in (given if isinstance(given, dict) else {}).items()
             if isinstance(v, dict) and math.isfinite(_num(v.get("lift")))}
    split, worst = max(lifts.items(), key=lambda kv: _num(kv[1]["lift"])) if lifts else (None, {})
    lift = _num(worst.get("lift")) if worst else 0.0
    if not exact:
        severity = "info"         # an older run folder: features only, the targets may differ
    elif share >= LEAK_SEVERE or (lift >= LIFT_SEVERE and count >= 3):
        severity = "severe"
    elif count >= 3 and (share >= LEAK_WARNING or lift >= LIFT_WARNING):     # a natural pair or two: a note
        severity = "warning"
    else:
        severity = "info"
    lifted = (f"; they lift the {split} accuracy by {lift:.1%} ({_num(worst.get('accuracy_leaked')):.0%} right on them, "
              f"{_num(worst.get('accuracy_rest')):.0%} on the other rows)" if worst else "")
    return [finding(ev, "leakage", severity,
                    "train/test leakage: " + ", ".join(f"{v} of {rows.get(k, '?')} {k} rows" for k, v in hits.items())
                    + (" also occur, with the same target," if exact else " also occur, feature for feature,")
                    + f" in the training split ({share:.1%} of the split; the score on them measures memory){lifted}",
                    {"shared_rows": hits, "rows": rows, "share": share, "same_target": exact, "lift": lifts},
                    [Option("remove duplicate rows before splitting (or split by group)")])]


def mislabeled(ev: Evidence) -> list[Finding]:
    suspects = [s for s in ev.facts.get("suspects") or [] if isinstance(s, dict)
                and _num(s.get("confidence")) >= 0.5]
    noise = ev.facts.get("noise") or {}
    rate, flagged = _num(noise.get("rate")), int(_num(noise.get("suspects")) if math.isfinite(
        _num(noise.get("suspects"))) else 0)
    shown = ", ".join(f"#{s.get('index')} ({s.get('label')}->{s.get('prediction')}, {_num(s.get('confidence')):.2f})"
                      for s in suspects[:5]) + (" ..." if len(suspects) > 5 else "")
    # Label smoothing is not offered: on the corpus's noisy runs it left the validation log-loss worse
    # (digits 15% flipped 0.915 -> 0.923, moons 20% flipped 0.535 -> 0.538); wrong labels are a data fix.
    options = [Option("look at these rows and fix or drop the wrong labels (a data fix: no recipe setting "
                      "undoes wrong labels)")]
    checked = _num(noise.get("checked"))
    if math.isfinite(rate) and rate >= NOISE_RATE and flagged >= 5 and checked >= NOISE_ROWS:
        return [finding(ev, "suspected_mislabeled", "warning",
                        f"about {rate:.0%} of the training labels look wrong: {flagged} of {noise.get('checked')} "
                        "rows are confidently predicted as another class by the model and by their nearest "
                        "neighbours" + (f": {shown}" if suspects else ""),
                        {"noise_rate": rate, "noise": noise, "rows": suspects}, options)]
    fit, _ = _fit_series(ev, "accuracy")
    if not suspects or not fit or max(fit) < 0.9:
        return []
    return [finding(ev, "suspected_mislabeled", "info",
                    (f"{len(suspects)} training rows are" if len(suspects) != 1 else "1 training row is")
                    + f" confidently predicted as another class: {shown}",
                    {"rows": suspects, "noise": noise}, options)]


def overconfidence(ev: Evidence) -> list[Finding]:
    """Only for a model that learned what the data allows: a model near chance is miscalibrated
    because it learned nothing, and label smoothing is not its remedy."""
    cal = ev.facts.get("calibration") or {}
    ece, conf, acc = _num(cal.get("ece")), _num(cal.get("confidence")), _num(cal.get("accuracy"))
    if not all(math.isfinite(v) for v in (ece, conf, acc)) or _num(cal.get("rows")) < 50:
        return []
    c = 2 if ev.task == "binary" else ev.n_classes
    base = _num((ev.facts.get("baseline") or {}).get("val"))
    if c >= 2 and math.isfinite(base) and acc < (1 / c + base) / 2:
        return []
    if ece < ECE_HIGH or conf - acc < OVERCONFIDENT:
        return []
    return [finding(ev, "overconfidence", "warning",
                    f"over-confident predictions: on the validation split the mean confidence is {conf:.0%} but "
                    f"the accuracy {acc:.0%} (expected calibration error {ece:.3f})",
                    {"ece": ece, "confidence": conf, "accuracy": acc, "rows": cal.get("rows")},
                    [*_label_smoothing(ev),
                     Option("or calibrate the probabilities afterwards by temperature scaling on the validation "
                            "split")])]


RULES: dict[str, Callable[[Evidence], list[Finding]]] = {
    "initial_loss": initial_loss, "loss_not_decreasing": not_decreasing, "divergence": divergence,
    "oscillation": oscillation, "gradient_flow": gradient_flow, "saturated_units": saturation,
    "dead_relus": dead_relus, "identical_units": identical_units, "update_ratio": update_ratio,
    "overfitting": overfitting, "underfitting": underfitting, "linear_better": linear_better,
    "unnormalized_inputs": unnormalized,
    "unscaled_target": unscaled_target, "class_imbalance": imbalance, "leakage": leakage,
    "suspected_mislabeled": mislabeled, "overconfidence": overconfidence,
}

# ------------------------------------------------------------------------------------ root cause first
# Findings in this order: causes before the symptoms they can explain.
ORDER = ("unnormalized_inputs", "unscaled_target", "identical_units", "initial_loss", "divergence", "lr_too_high",
         "saturated_units", "dead_relus", "lr_too_low", "exploding_gradients", "vanishing_gradients",
         "leakage", "suspected_mislabeled", "class_imbalance", "underfitting", "loss_not_decreasing",
         "oscillation", "overfitting", "linear_better", "overconfidence", "cannot_judge")
_TRAINING = {"divergence", "lr_too_high", "lr_too_low", "saturated_units", "dead_relus", "exploding_gradients",
             "vanishing_gradients", "loss_not_decreasing", "oscillation", "underfitting", "overconfidence",
             "initial_loss", "linear_better"}
# cause -> the findings it explains (made transitive below)
EXPLAINS: dict[str, set[str]] = {
    "unnormalized_inputs": _TRAINING,
    "unscaled_target": _TRAINING,
    "identical_units": {"loss_not_decreasing", "underfitting", "vanishing_gradients", "dead_relus", "lr_too_low",
                        "saturated_units"},
    "initial_loss": {"saturated_units", "exploding_gradients", "vanishing_gradients", "loss_not_decreasing",
                     "underfitting", "dead_relus", "divergence"},
    "divergence": {"lr_too_high", "dead_relus", "saturated_units", "loss_not_decreasing", "oscillation",
                   "underfitting", "overfitting", "overconfidence", "suspected_mislabeled", "exploding_gradients",
                   "vanishing_gradients", "lr_too_low"},
    "lr_too_high": {"dead_relus", "oscillation", "loss_not_decreasing", "underfitting", "overconfidence"},
    "saturated_units": {"vanishing_gradients", "loss_not_decreasing", "underfitting", "lr_too_low"},
    "dead_relus": {"vanishing_gradients", "loss_not_decreasing", "underfitting", "lr_too_low"},
    "lr_too_low": {"loss_not_decreasing", "underfitting"},
    "exploding_gradients": {"divergence", "oscillation", "loss_not_decreasing", "underfitting"},
    "vanishing_gradients": {"loss_not_decreasing", "underfitting"},
    "suspected_mislabeled": {"underfitting", "overfitting", "overconfidence"},
    "underfitting": {"loss_not_decreasing", "linear_better"},
    "overfitting": {"overconfidence", "linear_better"},
}


def _closure(links: dict[str, set[str]]) -> dict[str, set[str]]:
    out = {k: set(v) for k, v in links.items()}
    changed = True
    while changed:
        changed = False
        for k, v in out.items():
            more = set().union(*(out.get(x, set()) for x in v)) - v - {k}
            if more:
                v |= more
                changed = True
    return out


_EXPLAINS = _closure(EXPLAINS)


def order_findings(found: list[Finding]) -> list[Finding]:
    """Root cause first: warning and severe findings before notes (info), each group in ORDER; a
    finding that an earlier top-level finding explains is placed right under that cause, with
    `cause` set to it."""
    rank = {r: i for i, r in enumerate(ORDER)}
    ranked = sorted(found, key=lambda f: (f.severity == "info", rank.get(f.rule, len(ORDER)),
                                          -SEVERITIES.index(f.severity)))
    top: list[Finding] = []
    under: dict[str, list[Finding]] = {}
    for f in ranked:
        cause = next((c.rule for c in top if f.rule in _EXPLAINS.get(c.rule, ())), None)
        if cause is None:
            top.append(f)
        else:
            under.setdefault(cause, []).append(replace(f, cause=cause))
    return [g for f in top for g in (f, *under.get(f.rule, []))]


def diagnose(ev: Evidence) -> list[Finding]:
    """Every rule's findings, root cause first (see order_findings)."""
    found = [f for rule in RULES.values() for f in rule(ev)]
    if not _finite(ev.column("train_loss")):
        found.append(Finding("cannot_judge", "info",
                             "cannot judge: " + ("the history is empty, so there are no learning curves"
                                                 if not ev.history else
                                                 "no epoch has a finite training loss, so the learning curves "
                                                 "say nothing"),
                             {"epochs": len(ev.history)}, "Look at the findings above, if any; otherwise rerun "
                             "with more epochs."))
    return order_findings(found)
