"""The doctor never crashes: evidence shaped like what trainwell writes (history rows, probes,
facts, metrics), with any number replaced by NaN, inf, None or left out, any list empty or short,
gives findings or a clean "cannot judge" note -- never an exception."""

import math

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from trainwell.watch.doctor import RULES, Evidence, diagnose, format_findings
from trainwell.watch.evidence import SEVERITIES

ODD = st.sampled_from([math.nan, math.inf, -math.inf, None, 0.0, -0.0, 1e300, -1e300, 1e-300])
VALUE = st.one_of(st.floats(allow_nan=True, allow_infinity=True), ODD, st.integers(-5, 5))
NOSHRINK = [Phase.explicit, Phase.generate]    # shrinking these nested structures takes minutes; the failing example is printed as is
PROB = st.one_of(st.floats(0, 1), ODD)


def maybe(d: st.SearchStrategy) -> st.SearchStrategy:
    """Each key of a fixed dict strategy may be dropped."""
    return st.builds(lambda full, keep: {k: v for k, v in full.items() if keep.get(k, True)},
                     d, st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", max_size=20), st.booleans()))


COLUMNS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "train_r2", "val_r2", "lr", "grad_norm",
           "val_ece")


@st.composite
def history(draw):
    n = draw(st.integers(0, 9))
    rows = []
    for e in range(1, n + 1):
        row = {"epoch": e}
        for c in COLUMNS:
            if draw(st.booleans()) or c == "train_loss":
                row[c] = draw(VALUE)
        rows.append(row)
    return rows


LAYERS = ["fc1", "fc2", "conv1", "head"]


@st.composite
def probes(draw):
    if draw(st.integers(0, 5)) == 0:
        return {}
    layers = draw(st.lists(st.sampled_from(LAYERS), unique=True, max_size=4))
    acts = draw(st.lists(st.sampled_from(["act1", "act2"]), unique=True, max_size=2))
    epochs = []
    for e in range(1, draw(st.integers(0, 4)) + 1):
        epochs.append({
            "epoch": e, "samples": draw(st.integers(0, 3)),
            "activations": {a: draw(maybe(st.fixed_dictionaries({"saturated": PROB, "dead": PROB, "mean": VALUE,
                                                                  "std": VALUE}))) for a in acts},
            "weights": {w: draw(maybe(st.fixed_dictionaries({"out_grad_rms": VALUE, "row_spread": VALUE,
                                                              "update_ratio": VALUE, "grad_norm": VALUE,
                                                              "weight_norm": VALUE}))) for w in layers},
            "train_eval": draw(maybe(st.fixed_dictionaries({"loss": VALUE, "accuracy": PROB, "r2": VALUE,
                                                             "rows": st.integers(0, 100)}))),
        })
    return draw(maybe(st.fixed_dictionaries({
        "initial": maybe(st.fixed_dictionaries({"loss": VALUE, "accuracy": PROB})),
        "weighted": st.just([{"name": n, "type": "Conv2d" if n.startswith("conv") else "Linear",
                              "nonlinearity": "relu", "shape": [4, 4]} for n in layers]),
        "activations": st.just([{"name": a, "kind": "relu"} for a in acts]),
        "epochs": st.just(epochs)})))


TASKS = st.sampled_from(["binary", "multiclass", "regression", "", None])


@st.composite
def facts(draw, task):
    classes = draw(st.lists(st.sampled_from("abcd"), unique=True, max_size=4))
    counts = draw(st.lists(st.integers(0, 50), min_size=len(classes), max_size=len(classes)))
    suspect = maybe(st.fixed_dictionaries({"index": st.integers(0, 99), "label": st.sampled_from("ab"),
                                           "prediction": st.sampled_from("ab"), "confidence": PROB}))
    return draw(maybe(st.fixed_dictionaries({
        "data": maybe(st.fixed_dictionaries({
            "task": st.just(task), "classes": st.just(classes),
            "rows": maybe(st.fixed_dictionaries({"train": st.integers(0, 200), "val": st.integers(0, 50),
                                                 "test": st.integers(0, 50)})),
            "class_counts": st.just({"train": counts}) if classes else st.just({}),
            "target": maybe(st.fixed_dictionaries({"std": VALUE, "abs_mean": VALUE, "scaled": st.booleans()}))})),
        "scales": maybe(st.fixed_dictionaries({"std_min": VALUE, "std_max": VALUE, "std_median": VALUE,
                                               "abs_mean_max": VALUE, "std_min_feature": st.just("f0"),
                                               "std_max_feature": st.just("f1")})),
        "leakage": maybe(st.fixed_dictionaries({"val": st.integers(0, 50), "test": st.integers(0, 50)})),
        "leakage_same_target": maybe(st.fixed_dictionaries({"val": st.integers(0, 50),
                                                            "test": st.integers(0, 50)})),
        "leakage_lift": maybe(st.fixed_dictionaries({"val": maybe(st.fixed_dictionaries({
            "lift": VALUE, "accuracy_leaked": PROB, "accuracy_rest": PROB})), "test": st.one_of(VALUE, st.just([]))})),
        "suspects": st.lists(suspect, max_size=6),
        "noise": maybe(st.fixed_dictionaries({"suspects": st.integers(0, 50), "rate": PROB,
                                              "checked": st.integers(0, 200)})),
        "calibration": maybe(st.fixed_dictionaries({"ece": PROB, "split": st.just("val"),
                                                    "rows": st.integers(0, 50)})),
        "baseline": maybe(st.fixed_dictionaries({"train": VALUE, "val": VALUE,
                                                 "metric": st.sampled_from(["accuracy", "r2"]),
                                                 "models": maybe(st.fixed_dictionaries({"linear": VALUE,
                                                                                        "knn": VALUE})),
                                                 "versus_net": maybe(st.fixed_dictionaries({
                                                     "linear": VALUE, "net": VALUE, "gap": VALUE, "se": VALUE,
                                                     "rows": st.integers(0, 50)}))})),
    })))


@st.composite
def evidence(draw):
    task = draw(TASKS)
    metrics = draw(maybe(st.fixed_dictionaries({
        "task": st.just(task), "loss": st.sampled_from(["cross_entropy", "mse", "bce_with_logits", "nll"]),
        "classes": st.lists(st.sampled_from("abc"), unique=True, max_size=3),
        "stop_reason": st.sampled_from(["finished", "non_finite", "early_stopping", "interrupted"]),
        "best_epoch": st.one_of(st.none(), st.integers(0, 9)), "stopped_epoch": st.integers(0, 9)})))
    recipe = draw(maybe(st.fixed_dictionaries({
        "optimizer": maybe(st.fixed_dictionaries({"kind": st.sampled_from(["adam", "sgd", "adamw"]),
                                                  "lr": VALUE, "momentum": PROB, "weight_decay": PROB})),
        "model": maybe(st.fixed_dictionaries({"kind": st.sampled_from(["mlp", "cnn", "custom"]),
                                              "hidden": st.lists(st.integers(1, 64), max_size=3),
                                              "norm": st.sampled_from(["none", "batch"]), "dropout": PROB,
                                              "activation": st.sampled_from(["relu", "tanh", "sigmoid"])})),
        "init": maybe(st.fixed_dictionaries({"weights": st.sampled_from(["auto", "zeros", "normal",
                                                                         "kaiming_normal"]), "std": VALUE})),
        "data": maybe(st.fixed_dictionaries({"normalize": st.sampled_from(["none", "standard"]),
                                             "target_normalize": st.booleans()})),
        "stopping": maybe(st.fixed_dictionaries({"enabled": st.booleans(), "restore_best": st.booleans(),
                                                 "monitor": st.sampled_from(["val_loss", "val_accuracy", "val_odd", 3]),
                                                 "mode": st.sampled_from(["min", "max", None])})),
        "train": maybe(st.fixed_dictionaries({"epochs": st.integers(1, 9), "clip_norm": VALUE})),
    })))
    return Evidence(recipe, draw(history()), metrics, draw(probes()), draw(facts(task)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=NOSHRINK)
@given(evidence())
def test_no_rule_raises_on_any_evidence(ev):
    for name, rule in RULES.items():
        for f in rule(ev):
            assert f.severity in SEVERITIES, name
            assert f.message and isinstance(f.evidence, dict)
    findings = diagnose(ev)
    lines = format_findings(findings)
    assert lines and all(isinstance(line, str) for line in lines)


@settings(max_examples=60, deadline=None)
@given(evidence())
def test_empty_or_unusable_history_gives_a_cannot_judge_note(ev):
    ev.history = [{"epoch": i + 1, "train_loss": None} for i in range(len(ev.history))]
    notes = [f for f in diagnose(ev) if f.rule == "cannot_judge"]
    assert len(notes) == 1 and notes[0].message.startswith("cannot judge: ")
    assert notes[0].severity == "info"


def test_doctor_and_report_read_a_run_that_diverged_with_sgd(tmp_path, capsys):
    """SGD at LR 5 without normalization diverges in the first epoch; the stored suspects may then carry
    no confidence (NaN outputs are written as null), which once crashed the doctor."""
    import json

    from trainwell.api import fit
    from trainwell.cli import main

    fit(out=tmp_path, quiet=True, **{"data.source": "digits", "optimizer.kind": "sgd", "optimizer.lr": 5.0,
                                     "model.norm": "none", "model.dropout": 0.0, "train.epochs": 3,
                                     "schedule.kind": "constant"})
    facts = json.loads((tmp_path / "facts.json").read_text())
    facts["suspects"] = [{**s, "confidence": None} for s in facts["suspects"]]
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    assert main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "divergence" in out
    assert main(["report", str(tmp_path)]) == 0


FOLDERS = {
    "one_epoch": {"train.epochs": 1},
    "regression": {"data.source": "diabetes", "train.epochs": 2},
    "cnn": {"data.source": "shapes", "data.n_samples": 60, "data.image_size": 8, "model.kind": "cnn",
            "model.channels": [4], "train.epochs": 1},
    "ensemble": {"train.ensemble.members": 2, "train.epochs": 2},
    "swa": {"train.swa.start_epoch": 1, "train.epochs": 2},
    "ema": {"train.ema_decay": 0.9, "train.epochs": 2},
    "probes_off": {"watch.probes": False, "train.epochs": 2},
}


@pytest.mark.parametrize("case", sorted(FOLDERS) + ["custom_module", "interrupted"])
def test_doctor_and_report_read_every_kind_of_run_folder(case, tmp_path, capsys):
    from torch import nn

    from trainwell.api import fit
    from trainwell.cli import main

    if case == "custom_module":
        fit(out=tmp_path, quiet=True, model=nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)),
            **{"data.source": "iris", "train.epochs": 2})
    else:
        fit(out=tmp_path, quiet=True, **{"data.source": "iris", **FOLDERS.get(case, {"train.epochs": 2})})
    if case == "interrupted":             # a run stopped before its end: no metrics, facts or report yet
        for name in ("metrics.json", "facts.json", "diagnosis.json", "report.html"):
            (tmp_path / name).unlink(missing_ok=True)
    assert main(["doctor", str(tmp_path)]) == 0
    assert main(["report", str(tmp_path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_doctor_and_report_read_search_trial_folders(tmp_path, capsys):
    """A search's trial folders (test split locked, watch off) and its final retrain."""
    import trainwell as tw
    from trainwell.cli import main
    from trainwell.search.run import search

    path = tmp_path / "search.toml"
    path.write_text("\n".join([
        "[data]", 'source = "moons"', "n_samples = 200", "[model]", "hidden = [8]", "[train]", "epochs = 2",
        "[search]", 'strategy = "grid"', "grid_points = 2", "trials = 2", "[search.space]",
        '"optimizer.lr" = { log_uniform = [1e-3, 1e-1] }']) + "\n")
    search(tw.load_recipe(path), out=tmp_path / "study", quiet=True)
    folders = sorted((tmp_path / "study" / "trials").iterdir()) + [tmp_path / "study" / "final"]
    assert len(folders) == 3 and all((f / "history.csv").exists() for f in folders)
    for folder in folders:
        assert main(["doctor", str(folder)]) == 0
        assert main(["report", str(folder)]) == 0
    assert "Traceback" not in capsys.readouterr().err
