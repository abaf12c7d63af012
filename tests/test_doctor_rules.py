"""Each judgement rule on hand-built evidence, just inside and just outside its threshold; the
root-cause ordering; remedies that read the recipe."""

import math

import numpy as np
import pytest

from trainwell.data.checks import row_keys
from trainwell.recipe import load_recipe
from trainwell.watch import doctor as D
from trainwell.watch.doctor import RULES, Evidence, Finding, diagnose, order_findings, set_flags
from trainwell.watch.facts import calibration, keys_with_targets, label_noise, leaked_keys

RECIPE = load_recipe(None).to_dict()


def ev(history=(), probes=None, facts=None, metrics=None, recipe=None):
    return Evidence(recipe or RECIPE, list(history), metrics or {}, probes or {}, facts or {})


def rules(e):
    return [f.rule for f in diagnose(e)]


def curve(train, val=None, **cols):
    rows = []
    for i, t in enumerate(train):
        row = {"epoch": i + 1, "train_loss": t, "val_loss": (val or train)[i]}
        row.update({k: v[i] for k, v in cols.items()})
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ underfitting
def _fit(val_acc, base, train_acc=None, rows=300):
    probes = {"epochs": [{"epoch": i + 1, "train_eval": {"accuracy": train_acc if train_acc is not None else val_acc}}
                         for i in range(3)]}
    facts = {"baseline": {"metric": "accuracy", "val": base, "models": {"knn": base}},
             "data": {"rows": {"val": rows}}}
    return ev(curve([1.0, 0.8, 0.7], val_accuracy=[val_acc] * 3), probes, facts, {"task": "multiclass"})


def test_underfitting_is_judged_against_the_baseline_not_a_fixed_floor():
    assert [f.rule for f in D.underfitting(_fit(0.80, 0.95))] == ["underfitting"]
    # 0.93 vs 0.95: inside the 5-point margin -> quiet
    assert D.underfitting(_fit(0.93, 0.95)) == []
    # a noisy task whose best possible score is 0.6: a model at 0.58 does not underfit
    assert D.underfitting(_fit(0.58, 0.60)) == []
    # fits its training rows far better than the baseline generalizes: not underfitting (overfitting, maybe)
    assert D.underfitting(_fit(0.80, 0.95, train_acc=1.0)) == []


def test_underfitting_margin_grows_with_few_validation_rows():
    # 30 validation rows, baseline 0.9: 2 standard errors = 0.11 > 0.05
    assert D.underfitting(_fit(0.82, 0.90, rows=30)) == []
    assert D.underfitting(_fit(0.82, 0.90, rows=3000)) != []


def test_underfitting_reads_eval_mode_training_accuracy_over_the_running_one():
    e = _fit(0.80, 0.95, train_acc=0.99)
    for row in e.history:
        row["train_accuracy"] = 0.7          # the running average, dropout active: not used when probes have it
    assert D.underfitting(e) == []


# ------------------------------------------------------------------------------------ curves
def test_oscillation_is_relative_to_the_curves_range():
    converged = [2.3, 0.5, 0.1, 0.021, 0.019, 0.023, 0.018, 0.022, 0.019, 0.023]   # rises of ~20% near 0.02
    assert D.oscillation(ev(curve(converged))) == []
    wild = [1.0, 0.6, 0.9, 0.55, 0.85, 0.5, 0.8, 0.52, 0.82, 0.5]
    assert [f.rule for f in D.oscillation(ev(curve(wild)))] == ["oscillation"]


def test_an_exploding_finite_loss_is_divergence_listed_first():
    e = ev(curve([4.8, 300.0, 1e12, 1.7e23]), {"initial": {"loss": 4.8}})
    found = diagnose(e)
    assert found[0].rule == "divergence" and found[0].severity == "severe"
    assert "1.7e+23" in found[0].message
    # "loss not decreasing" is a consequence of the divergence, shown under it, never before it
    assert all(f.cause == "divergence" for f in found[1:] if f.rule == "loss_not_decreasing")


# ------------------------------------------------------------------------------------ gradients
def _grads(values, names=("fc1", "fc2", "fc3", "head")):
    return {"weighted": [{"name": n} for n in names],
            "epochs": [{"epoch": 1, "weights": {n: {"out_grad_rms": v} for n, v in zip(names, values)}}]}


def test_gradient_flow_compares_hidden_layers_only():
    # the head's gradient is 100x the hidden ones' (a handful of logits): not vanishing
    assert D.gradient_flow(ev(probes=_grads([1e-3, 1e-3, 1e-3, 1e-1]))) == []
    assert [f.rule for f in D.gradient_flow(ev(probes=_grads([1e-5, 1e-4, 1e-3, 1e-3])))] == ["vanishing_gradients"]
    assert D.gradient_flow(ev(probes=_grads([1e-4 * 9.5, 1e-3, 1e-4, 1]))) == []          # 9.5x: inside
    assert [f.rule for f in D.gradient_flow(ev(probes=_grads([1e-4 * 11, 1e-3, 1e-4, 1])))] == ["exploding_gradients"]


# ------------------------------------------------------------------------------------ learning rate
def _updates(ratio):
    return {"weighted": [{"name": "fc1"}, {"name": "head"}],
            "epochs": [{"epoch": e, "weights": {"fc1": {"update_ratio": ratio}, "head": {"update_ratio": ratio}}}
                       for e in (1, 2)]}


def test_learning_rate_rules_and_their_computed_lr():
    low = D.update_ratio(ev(probes=_updates(1e-6)))
    assert [f.rule for f in low] == ["lr_too_low"]
    # 2.5e-3 / 1e-6 = 2500x, capped at 100x: 1e-3 -> 0.1
    assert low[0].overrides == {"optimizer.lr": pytest.approx(0.1)}
    # just outside the band: 3x at least (2.5e-3 / 9e-5 = 28x -> 1e-3 x 28, one significant digit: 0.03)
    (near,) = D.update_ratio(ev(probes=_updates(9e-5)))
    assert near.rule == "lr_too_low" and near.overrides == {"optimizer.lr": pytest.approx(0.03)}
    assert D.update_ratio(ev(probes=_updates(1.1e-4))) == []              # just inside: quiet
    high = D.update_ratio(ev(probes=_updates(0.1)))
    assert [f.rule for f in high] == ["lr_too_high"]
    # aims at the healthy runs' median ratio: 1e-3 x 2.5e-3 / 0.1 = 2.5e-5, one significant digit
    assert high[0].overrides == {"optimizer.lr": pytest.approx(2e-5)}
    (edge,) = D.update_ratio(ev(probes=_updates(0.031)))
    assert edge.overrides == {"optimizer.lr": pytest.approx(8e-5)}       # 1e-3 x 2.5e-3 / 0.031
    assert D.update_ratio(ev(probes=_updates(0.029))) == []               # just inside: quiet
    assert D.update_ratio(ev(probes=_updates(2e-3))) == []


def test_after_a_divergence_the_lower_rate_aims_at_the_safer_ratio():
    rows = curve([2.0, 3.0, 5.0, 9.0])
    (f,) = D.divergence(ev(rows, probes=_updates(0.1)))
    # 1e-3 x 1e-3 / 0.1 = 1e-5 (the lr_too_high rule alone would propose 2e-5), with clipping tried together
    assert f.overrides == {"optimizer.lr": pytest.approx(1e-5), "train.clip_norm": 1.0}


# ------------------------------------------------------------------------------------ data
def test_leakage_counts_same_target_rows_with_graded_severity():
    def leak(n, rows):
        return D.leakage(ev(facts={"leakage": {"test": n}, "leakage_same_target": {"test": n},
                                   "data": {"rows": {"test": rows}}}))
    assert leak(1, 30)[0].severity == "info"            # one natural duplicate pair in a small split
    assert leak(3, 100)[0].severity == "warning"
    assert leak(20, 100)[0].severity == "severe"
    # identical features, different targets (two houses, two prices): not leakage
    assert D.leakage(ev(facts={"leakage": {"test": 20}, "leakage_same_target": {"test": 0},
                               "data": {"rows": {"test": 100}}})) == []


def test_shared_rows_with_targets():
    import numpy as np

    def shared_rows(train_x, other_x, train_y=None, other_y=None):     # as gather_facts counts them
        return int(leaked_keys(keys_with_targets(row_keys(train_x), train_y),
                               keys_with_targets(row_keys(other_x), other_y)).sum())

    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert shared_rows(x, x) == 2
    assert shared_rows(x, x, np.array([0, 1]), np.array([0, 0])) == 1


def test_mislabeled_is_a_warning_with_a_noise_rate_even_at_low_train_accuracy():
    facts = {"noise": {"checked": 500, "suspects": 40, "rate": 0.08},
             "suspects": [{"index": i, "label": "a", "prediction": "b", "confidence": 0.9} for i in range(3)]}
    e = ev(curve([1, 0.9, 0.8], train_accuracy=[0.5, 0.6, 0.7]), facts=facts)
    (f,) = D.mislabeled(e)
    assert f.severity == "warning" and "8%" in f.message and f.evidence["noise_rate"] == 0.08
    # wrong labels are a data fix: label smoothing left the corpus's noisy runs' validation log-loss worse
    assert f.overrides == {} and "label smoothing" not in f.remedy
    quiet = {**facts, "noise": {"checked": 500, "suspects": 10, "rate": 0.02}}
    assert D.mislabeled(ev(curve([1, 0.9, 0.8], train_accuracy=[0.5, 0.6, 0.7]), facts=quiet)) == []


def test_label_noise_estimate_needs_the_neighbours_to_agree():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100, 2, generator=g) - 3, torch.randn(100, 2, generator=g) + 3])
    y = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    y_noisy = y.clone()
    y_noisy[:10] = 1                                  # 10 of 200 labels wrong (5%)
    model = torch.stack([1 - y.float(), y.float()], 1) * 0.9 + 0.05     # a model that learned the truth
    est = label_noise(model, x, y_noisy)
    assert est["suspects"] == 10 and est["rate"] == pytest.approx(0.05)
    # a model wrong on rows whose neighbours agree with their label (underfitting) is not noise
    wrong = torch.stack([y.float(), 1 - y.float()], 1) * 0.9 + 0.05
    assert label_noise(wrong, x, y)["suspects"] == 0


def test_calibration_ece_against_a_hand_computed_value():
    import torch

    # 4 rows at confidence 0.9, 2 right -> |0.5 - 0.9| = 0.4, weight 1 -> ECE 0.4
    probs = torch.tensor([[0.9, 0.1]] * 4)
    y = torch.tensor([0, 0, 1, 1])
    cal = calibration(probs, y)
    assert cal["ece"] == pytest.approx(0.4) and cal["confidence"] == pytest.approx(0.9)
    assert cal["accuracy"] == 0.5


def test_overconfidence_only_for_a_model_that_learned():
    facts = {"calibration": {"ece": 0.15, "confidence": 0.97, "accuracy": 0.82, "rows": 200},
             "baseline": {"metric": "accuracy", "val": 0.85}}
    (f,) = D.overconfidence(ev(facts=facts, metrics={"task": "binary", "loss": "cross_entropy"}))
    assert f.overrides == {"loss.label_smoothing": 0.1}
    near_chance = {**facts, "calibration": {"ece": 0.3, "confidence": 0.8, "accuracy": 0.5, "rows": 200}}
    assert D.overconfidence(ev(facts=near_chance, metrics={"task": "binary"})) == []
    calibrated = {**facts, "calibration": {"ece": 0.03, "confidence": 0.84, "accuracy": 0.82, "rows": 200}}
    assert D.overconfidence(ev(facts=calibrated, metrics={"task": "binary"})) == []


def test_unscaled_target_and_already_scaled_targets():
    def run(std, mean, recipe=None):
        return D.unscaled_target(ev(facts={"data": {"target": {"std": std, "abs_mean": mean}}},
                                    metrics={"task": "regression"}, recipe=recipe))
    unscaled = {**RECIPE, "data": {**RECIPE["data"], "target_normalize": "none"}}
    (f,) = run(1500.0, 4000.0, unscaled)
    assert f.rule == "unscaled_target" and f.overrides == {"data.target_normalize": "standard"}
    assert run(1.0, 0.1, unscaled) == [] and run(9.0, 5.0, unscaled) == []
    for setting in ("auto", "standard", "minmax"):        # auto: standard for regression, the default
        scaled = {**RECIPE, "data": {**RECIPE["data"], "target_normalize": setting}}
        assert run(1500.0, 4000.0, scaled) == []


# ------------------------------------------------------------------------------------ causes first
def test_causes_come_first_with_their_symptoms_under_them():
    f = [Finding("loss_not_decreasing", "severe", "m", {}, "r"), Finding("vanishing_gradients", "severe", "m", {}, "r"),
         Finding("identical_units", "severe", "m", {}, "r"), Finding("class_imbalance", "warning", "m", {}, "r"),
         Finding("suspected_mislabeled", "info", "m", {}, "r")]
    out = order_findings(f)
    assert [x.rule for x in out] == ["identical_units", "vanishing_gradients", "loss_not_decreasing",
                                     "class_imbalance", "suspected_mislabeled"]
    assert [x.cause for x in out] == [None, "identical_units", "identical_units", None, None]


def test_remedies_never_repeat_the_recipe_and_end_with_overrides():
    # a run with a scaled init (the default, PyTorch's) and zero biases: dead units are blamed on the step size
    probes = {"activations": [{"name": "act1"}],
              "epochs": [{"epoch": 1, "activations": {"act1": {"dead": 0.9}}}]}
    (f,) = D.dead_relus(ev(probes=probes))
    assert "He" not in f.remedy and "init.weights" not in f.overrides
    assert f.overrides == {"optimizer.lr": pytest.approx(1e-4)}
    # an init with a negative constant bias: zero biases first
    bad = {**RECIPE, "init": {**RECIPE["init"], "bias": "constant", "bias_value": -4.0}}
    (g,) = D.dead_relus(ev(probes=probes, recipe=bad))
    assert g.overrides == {"init.bias": "zeros"}
    # weights not scaled to the fan-in (a fixed-std normal): He initialization first
    small = {**RECIPE, "init": {**RECIPE["init"], "weights": "normal"}}
    (h,) = D.dead_relus(ev(probes=probes, recipe=small))
    assert h.remedy.startswith("He") and h.overrides.get("init.weights") == "kaiming_normal"
    assert set_flags({"optimizer.lr": 3e-4, "init.weights": "kaiming_normal", "model.hidden": [64, 64],
                      "stopping.enabled": True}) == ('--set optimizer.lr=0.0003 --set init.weights="kaiming_normal" '
                                                     '--set model.hidden=[64, 64] --set stopping.enabled=true')


def test_overfitting_with_early_stopping_restoring_the_best_epoch_is_a_note():
    rows = curve([1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [1.0, 0.8, 0.7, 0.6, 0.7, 0.8, 0.95, 1.1])
    (f,) = D.overfitting(ev(rows))          # the default recipe stops early and restores the best epoch
    assert f.severity == "info" and "stopping.enabled" not in f.overrides
    off = {**RECIPE, "stopping": {**RECIPE["stopping"], "enabled": False, "restore_best": False}}
    (g,) = D.overfitting(ev(rows, recipe=off))
    assert g.severity == "warning" and g.overrides == {"stopping.enabled": True, "stopping.restore_best": True}
    # the best epoch restored without early stopping: still a note, and regularization is proposed instead
    kept = {**RECIPE, "stopping": {**RECIPE["stopping"], "enabled": False}}
    (h,) = D.overfitting(ev(rows, recipe=kept))
    assert h.severity == "info" and "stopping.enabled" not in h.overrides and "optimizer.weight_decay" in h.overrides


def test_overfitting_restored_by_another_monitor_can_return_an_overfitted_epoch():
    """restore_best keeps the best epoch by the monitored value: by val_accuracy that can be an epoch
    whose validation loss has already risen, and then the returned model is affected."""
    rows = curve([1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [1.0, 0.8, 0.7, 0.6, 0.7, 0.8, 0.95, 1.1],
                 val_accuracy=[0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.82, 0.81])
    by_acc = {**RECIPE, "stopping": {**RECIPE["stopping"], "monitor": "val_accuracy", "mode": "max"}}
    (f,) = D.overfitting(ev(rows, recipe=by_acc))        # epoch 7 restored: val loss 0.95, 58% above 0.6
    assert f.severity == "warning" and f.evidence["kept_best"] is False
    early = [0.5, 0.6, 0.7, 0.85, 0.8, 0.8, 0.82, 0.81]  # epoch 4 restored: the loss minimum
    rows_early = curve([1.0, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05], [1.0, 0.8, 0.7, 0.6, 0.7, 0.8, 0.95, 1.1],
                       val_accuracy=early)
    (g,) = D.overfitting(ev(rows_early, recipe=by_acc))
    assert g.severity == "info" and g.evidence["kept_best"] is True


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_is_quiet_on_a_healthy_run_evidence(rule):
    """A curve that falls steadily, a model as good as its baseline, sound probes, clean data."""
    probes = {"initial": {"loss": math.log(10)}, "weighted": [{"name": "fc1"}, {"name": "fc2"}, {"name": "head"}],
              "activations": [{"name": "act1", "kind": "relu"}],
              "epochs": [{"epoch": e, "activations": {"act1": {"dead": 0.05}},
                          "weights": {n: {"out_grad_rms": 1e-3, "update_ratio": 2e-3, "row_spread": 0.9}
                                      for n in ("fc1", "fc2", "head")},
                          "train_eval": {"loss": 1 / e, "accuracy": 0.97}} for e in range(1, 7)]}
    facts = {"scales": {"std_min": 0.5, "std_max": 1.5, "std_median": 1.0, "abs_mean_max": 0.1},
             "leakage": {"test": 0}, "leakage_same_target": {"test": 0},
             "data": {"rows": {"train": 600, "val": 200, "test": 200}, "class_counts": {"train": [60] * 10},
                      "classes": list("0123456789")},
             "baseline": {"metric": "accuracy", "val": 0.96, "models": {"linear": 0.94, "knn": 0.96},
                          "versus_net": {"linear": 0.94, "net": 0.95, "gap": -0.01, "se": 0.01, "rows": 200}},
             "noise": {"checked": 600, "suspects": 2, "rate": 0.003},
             "calibration": {"ece": 0.02, "confidence": 0.95, "accuracy": 0.95, "rows": 200}}
    e = ev(curve([2.0, 1.0, 0.6, 0.4, 0.3, 0.25], [2.0, 1.1, 0.7, 0.5, 0.45, 0.44], val_accuracy=[0.5, 0.8, 0.9, 0.93,
                                                                                              0.95, 0.95]),
           probes, facts, {"task": "multiclass", "loss": "cross_entropy", "classes": list("0123456789")})
    assert RULES[rule](e) == []


# ------------------------------------------------------------------------------------ doctor --try's ruler
def test_try_compares_the_same_quantity_when_the_remedy_changes_the_loss():
    import torch
    import torch.nn.functional as F

    from trainwell.watch.trial import compared_column

    # why: the same logits score worse under a smoothed criterion (its floor is above zero)
    logits, y = torch.tensor([[6.0, 0.0, 0.0]]), torch.tensor([0])
    assert F.cross_entropy(logits, y, label_smoothing=0.1) > 2 * F.cross_entropy(logits, y)
    assert compared_column("val_loss", "multiclass", {"loss.label_smoothing": 0.1}) == ("val_nll", "min")
    assert compared_column("val_loss", "binary", {"loss.class_weight": "balanced"}) == ("val_nll", "min")
    assert compared_column("val_loss", "regression", {"data.target_normalize": "standard"}) == ("val_mse", "min")
    # a remedy that leaves the criterion alone, or a monitor that does not depend on it: unchanged
    assert compared_column("val_loss", "multiclass", {"optimizer.lr": 0.01}) == ("val_loss", "")
    assert compared_column("val_accuracy", "multiclass", {"loss.label_smoothing": 0.1}) == ("val_accuracy", "")


def test_try_reads_the_returned_models_value():
    from trainwell.watch.trial import monitored

    h = [{"val_loss": 0.9, "val_nll": 0.5}, {"val_loss": 0.6, "val_nll": 0.7}, {"val_loss": 0.8, "val_nll": 0.4}]
    # restore_best keeps epoch 2 (lowest val_loss): its val_nll, not the column's own minimum
    assert monitored(h, "val_loss", "min", True, "val_nll") == 0.7
    assert monitored(h, "val_loss", "min", False, "val_nll") == 0.4       # the last epoch's
    assert monitored(h, "val_loss", "min", True) == 0.6
    assert math.isnan(monitored([{"val_loss": float("nan")}], "val_loss", "min", True))


# ------------------------------------------------------------------------------------ every threshold, both sides
_TEN = {"task": "multiclass", "loss": "cross_entropy", "classes": list("0123456789")}


def _initial(loss):
    return ev(probes={"initial": {"loss": loss}}, metrics=_TEN)


def _losses(losses, start=1.0):
    return ev(curve(losses), probes={"initial": {"loss": start}}, metrics=_TEN)


def _act(stat, value):
    return ev(probes={"activations": [{"name": "act1"}], "epochs": [{"epoch": 1, "activations": {"act1": {stat: value}}}]})


def _spread(value):
    return ev(probes={"weighted": [{"name": "fc1"}, {"name": "head"}],
                      "epochs": [{"epoch": 1, "weights": {"fc1": {"row_spread": value}, "head": {"row_spread": 1.0}}}]})


def _scales(std_max, abs_mean=0.0):
    return ev(facts={"scales": {"std_min": 1.0, "std_max": std_max, "std_median": 1.0, "abs_mean_max": abs_mean}})


def _counts(big, small=100):
    return ev(facts={"data": {"class_counts": {"train": [big, small]}, "classes": ["a", "b"]}})


def _calib(ece, conf, acc, rows=200):
    return ev(facts={"calibration": {"ece": ece, "confidence": conf, "accuracy": acc, "rows": rows}},
              metrics={"task": "binary", "loss": "cross_entropy"})


def _noise(rate, suspects, checked):
    return ev(facts={"noise": {"checked": checked, "suspects": suspects, "rate": rate}})


LN10 = math.log(10)
# (rule, evidence just inside the healthy side, evidence just outside, severity outside)
THRESHOLDS = {
    "initial_loss low": (D.initial_loss, _initial(0.51 * LN10), _initial(0.49 * LN10), "warning"),
    "initial_loss high": (D.initial_loss, _initial(2.99 * LN10), _initial(3.01 * LN10), "warning"),
    "not_decreasing": (D.not_decreasing, _losses([1.0, 0.98, 0.965]), _losses([1.0, 0.98, 0.975]), "severe"),
    "divergence final": (D.divergence, _losses([1.0, 1.2, 1.49]), _losses([1.0, 1.2, 1.51]), "severe"),
    "divergence spike": (D.divergence, _losses([1.0, 2.9, 0.9]), _losses([1.0, 3.1, 0.9]), "warning"),
    "saturated": (D.saturation, _act("saturated", 0.29), _act("saturated", 0.31), "warning"),
    "saturated severe": (D.saturation, _act("saturated", 0.29), _act("saturated", 0.61), "severe"),
    "dead": (D.dead_relus, _act("dead", 0.39), _act("dead", 0.41), "warning"),
    "dead severe": (D.dead_relus, _act("dead", 0.39), _act("dead", 0.71), "severe"),
    "identical": (D.identical_units, _spread(1.1e-4), _spread(0.9e-4), "severe"),
    "unnormalized spread": (D.unnormalized, _scales(99.0), _scales(101.0), "warning"),
    "unnormalized offset": (D.unnormalized, _scales(1.0, 9.9), _scales(1.0, 10.1), "warning"),
    "imbalance": (D.imbalance, _counts(299), _counts(300), "warning"),
    "imbalance severe": (D.imbalance, _counts(299), _counts(1000), "severe"),
    "overconfidence ece": (D.overconfidence, _calib(0.079, 0.95, 0.85), _calib(0.081, 0.95, 0.85), "warning"),
    "overconfidence gap": (D.overconfidence, _calib(0.1, 0.949, 0.9), _calib(0.1, 0.951, 0.9), "warning"),
    "overconfidence rows": (D.overconfidence, _calib(0.1, 0.95, 0.85, rows=49), _calib(0.1, 0.95, 0.85), "warning"),
    "mislabeled rate": (D.mislabeled, _noise(0.039, 39, 1000), _noise(0.041, 41, 1000), "warning"),
    "mislabeled rows": (D.mislabeled, _noise(0.05, 5, 99), _noise(0.05, 5, 100), "warning"),
    "mislabeled count": (D.mislabeled, _noise(0.04, 4, 100), _noise(0.05, 5, 100), "warning"),
}


@pytest.mark.parametrize("case", sorted(THRESHOLDS))
def test_each_threshold_from_both_sides(case):
    rule, inside, outside, severity = THRESHOLDS[case]
    assert rule(inside) == []
    (f,) = rule(outside)
    assert f.severity == severity


def test_underfitting_says_still_improving_only_when_the_loss_agrees():
    def run(losses):
        probes = {"initial": {"loss": 1.0},
                  "epochs": [{"epoch": i + 1, "train_eval": {"accuracy": a, "loss": t}}
                             for i, (a, t) in enumerate(zip([0.3, 0.35, 0.4], losses))]}
        facts = {"baseline": {"metric": "accuracy", "val": 0.9, "models": {"knn": 0.9}}, "data": {"rows": {"val": 300}}}
        return diagnose(ev(curve(losses, val_accuracy=[0.3, 0.35, 0.4]), probes, facts, _TEN))
    falling = run([0.9, 0.8, 0.7])
    assert "still improving" in next(f for f in falling if f.rule == "underfitting").remedy
    flat = run([1.0, 0.99, 0.985])                        # accuracy creeps up, the loss does not fall
    assert "loss_not_decreasing" in [f.rule for f in flat]
    assert not any("still improving" in f.remedy for f in flat)


def test_leakage_severity_grows_with_the_accuracy_the_duplicates_add():
    from trainwell.watch.facts import leak_lift

    # 10 of 200 rows leaked, all right; the other 190 at 80%: lift = 0.05 x (1 - 0.8) = 0.01
    correct = np.array([True] * 10 + [True] * 152 + [False] * 38)
    leaked = np.array([True] * 10 + [False] * 190)
    lift = leak_lift(correct, leaked)
    assert lift["lift"] == pytest.approx(0.05 * 0.2) and lift["accuracy_rest"] == pytest.approx(0.8)
    assert leak_lift(correct, np.zeros(200, bool)) == {}

    def leak(n, rows, lift):
        return D.leakage(ev(facts={"leakage": {"val": n}, "leakage_same_target": {"val": n},
                                   "data": {"rows": {"val": rows}},
                                   "leakage_lift": {"val": {"lift": lift, "accuracy_leaked": 1.0,
                                                            "accuracy_rest": 0.8}}}))
    # 3 of 300 rows (1%): a note while they add little, a warning or severe as they add more
    assert leak(3, 300, 0.004)[0].severity == "info"
    assert leak(3, 300, 0.006)[0].severity == "warning"
    assert leak(2, 300, 0.006)[0].severity == "info"               # a natural pair or two stays a note
    assert leak(6, 200, 0.004)[0].severity == "warning"            # 3% of the split: a warning by its share
    (f,) = leak(6, 200, 0.021)
    assert f.severity == "severe" and "lift the val accuracy by 2.1%" in f.message


# ------------------------------------------------------------------------------------ linear_better
def _versus(gap, se, lin=0.918, metric="r2", train=0.944, recipe=None, knn=0.555, history=None):
    probes = {"epochs": [{"epoch": i + 1, "train_eval": {metric: train}} for i in range(3)]}
    facts = {"baseline": {"metric": metric, "val": max(lin, knn), "rows": 240, "models": {"linear": lin, "knn": knn},
                          "versus_net": {"linear": lin, "net": lin - gap, "gap": gap, "se": se, "rows": 80}},
             "scales": {"features": 14}, "data": {"rows": {"train": 240, "val": 80}}}
    task = "regression" if metric == "r2" else "multiclass"
    rows = history or curve([1.0, 0.5, 0.3], [1.0, 0.6, 0.5], **{f"val_{metric}": [0.5, 0.8, lin - gap]})
    return ev(rows, probes, facts, {"task": task}, recipe)


def test_linear_better_fires_on_a_net_that_generalizes_worse_than_ridge_on_the_same_rows():
    # carseats, seed 0: ridge 0.918 vs the net's 0.864 on the same 80 rows, 3.6 paired standard errors
    (f,) = D.linear_better(_versus(0.054, 0.015))
    assert f.severity == "warning"
    assert "0.918" in f.message and "0.864" in f.message and "3.6 standard errors" in f.message
    assert "nearly linear" in f.message and "240 rows of 14 features" in f.message
    # the remedy that cut the variance on carseats (val R2 +0.04 over 3 seeds): an ensemble
    assert f.overrides == {"train.average.kind": "ensemble"}
    assert "model.dropout" in f.remedy or "regularize" in f.remedy


@pytest.mark.parametrize("gap,se,train,why", [
    (0.045, 0.01, 0.944, "under the 0.05 margin"),
    (0.06, 0.035, 0.944, "within 2 paired standard errors (0.07)"),
    (0.10, 0.01, 0.90, "does not fit its own rows as well as ridge validates: underfitting's case"),
    (-0.02, 0.01, 0.99, "the net is the better model"),
])
def test_linear_better_quiet(gap, se, train, why):
    assert D.linear_better(_versus(gap, se, train=train)) == [], why


def test_linear_better_accuracy_margin_and_not_nearly_linear():
    (f,) = D.linear_better(_versus(0.06, 0.01, lin=0.90, metric="accuracy", train=0.99, knn=0.93))
    assert "nearly linear" not in f.message                  # a k-NN does better than the linear model here
    # the corpus's healthy digits runs: logistic regression 0.975, the 10-epoch nets 0.953 and 0.950 (2.3 and
    # 2.7 paired standard errors): under the 0.05 margin
    assert D.linear_better(_versus(0.022, 0.0096, lin=0.975, metric="accuracy", train=0.984)) == []
    assert D.linear_better(_versus(0.025, 0.0092, lin=0.975, metric="accuracy", train=0.998)) == []


def test_linear_better_never_prescribes_what_the_run_does():
    # already an ensemble with dropout 0.3 or more: neither is prescribed again, and no weight decay
    # instead (weight decay 1.0 left carseats' validation R2 within 0.001: docs/doctor.md)
    for dropout in (0.3, 0.5):
        recipe = load_recipe(None, {"train.average.kind": "ensemble", "model.dropout": dropout}).to_dict()
        (f,) = D.linear_better(_versus(0.08, 0.01, recipe=recipe))
        assert f.overrides == {} and "ensemble" not in f.remedy and "regularize" not in f.remedy
        assert "linear model itself" in f.remedy
    # an ensemble with less dropout: dropout 0.3 is what is left to try
    recipe = load_recipe(None, {"train.average.kind": "ensemble", "model.dropout": 0.1}).to_dict()
    (f,) = D.linear_better(_versus(0.08, 0.01, recipe=recipe))
    assert f.overrides == {"model.dropout": 0.3} and "regularize harder" in f.remedy


def _custom_recipe():
    import torch

    from trainwell import custom

    return custom.record(load_recipe(None, {"stopping.enabled": False, "stopping.restore_best": False}),
                         torch.nn.Linear(14, 1), None).to_dict()


def test_a_custom_module_is_never_prescribed_the_recipe_networks_keys():
    # a module passed from Python has no model.dropout (load_recipe refuses the key) and cannot be an
    # ensemble (members are built from [model]): the doctor prescribes neither
    recipe = _custom_recipe()
    with pytest.raises(Exception, match="model.dropout: unknown key"):
        load_recipe(recipe, {"model.dropout": 0.3})
    (f,) = D.linear_better(_versus(0.08, 0.01, recipe=recipe))
    assert f.overrides == {} and "ensemble" not in f.remedy and "regularize" not in f.remedy
    assert "linear model itself" in f.remedy
    rows = curve([1.0, 0.5, 0.3, 0.2, 0.1, 0.05], [1.0, 0.6, 0.5, 0.7, 0.9, 1.2])
    (g,) = D.overfitting(ev(rows, recipe=recipe))
    assert g.overrides == {"stopping.enabled": True, "stopping.restore_best": True}
    assert "dropout" not in g.remedy and "weight decay" in g.remedy
    load_recipe(recipe, g.overrides)           # what --try runs is a valid recipe


def test_linear_better_is_listed_under_overfitting():
    # the last epoch returned: overfitting is a warning, and it explains the gap to ridge
    rows = curve([1.0, 0.5, 0.3, 0.2, 0.1, 0.05], [1.0, 0.6, 0.5, 0.7, 0.9, 1.2],
                 val_r2=[0.5, 0.8, 0.86, 0.84, 0.8, 0.75])
    last = load_recipe(None, {"stopping.enabled": False, "stopping.restore_best": False}).to_dict()
    found = diagnose(_versus(0.054, 0.015, history=rows, recipe=last))
    assert [(f.rule, f.cause) for f in found if f.rule in ("overfitting", "linear_better")] == \
        [("overfitting", None), ("linear_better", "overfitting")]


def test_linear_versus_net_is_the_paired_gap_of_sklearn_scores():
    from scipy.stats import ttest_rel
    from sklearn.metrics import accuracy_score, r2_score

    from trainwell.watch.facts import linear_versus_net

    rng = np.random.default_rng(0)
    y = rng.normal(size=80)
    lin, net = y + rng.normal(0, 0.3, 80), y + rng.normal(0, 0.45, 80)
    vs = linear_versus_net(y, lin, net.reshape(-1, 1), "r2")           # the network's (N, 1) output
    assert vs["linear"] == pytest.approx(r2_score(y, lin)) and vs["net"] == pytest.approx(r2_score(y, net))
    assert vs["gap"] == pytest.approx(r2_score(y, lin) - r2_score(y, net))
    t = ttest_rel((y - net) ** 2, (y - lin) ** 2).statistic       # the paired t statistic is gap / se
    assert vs["gap"] / vs["se"] == pytest.approx(t) and vs["rows"] == 80
    labels = rng.integers(0, 3, 200)
    lin_l = np.where(rng.random(200) < 0.9, labels, (labels + 1) % 3)
    net_l = np.where(rng.random(200) < 0.8, labels, (labels + 2) % 3)
    vs = linear_versus_net(labels, lin_l, net_l, "accuracy")
    assert vs["gap"] == pytest.approx(accuracy_score(labels, lin_l) - accuracy_score(labels, net_l))
    assert vs["gap"] / vs["se"] == pytest.approx(ttest_rel((lin_l == labels) * 1.0, (net_l == labels) * 1.0).statistic)
    assert linear_versus_net(y[:, None].repeat(2, 1), lin, net, "r2") == {}      # several outputs: not compared


@pytest.mark.parametrize(("n", "says"), [(1, "1 training row is confidently"), (3, "3 training rows are confidently")])
def test_a_few_suspected_labels_are_counted_in_words_that_agree(n, says):
    suspects = [{"index": i, "label": "a", "prediction": "b", "confidence": 0.8} for i in range(n)]
    probes = {"epochs": [{"epoch": 1, "train_eval": {"accuracy": 0.99}}]}
    found = D.mislabeled(ev(curve([0.5]), probes, {"suspects": suspects}, {"task": "multiclass"}))
    assert [f.rule for f in found] == ["suspected_mislabeled"] and found[0].message.startswith(says)
