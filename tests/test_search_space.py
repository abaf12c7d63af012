"""The [search] section: shorthand, validation against the recipe, and the strategies' arithmetic."""

import math
import tomllib

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import trainwell as tw
from trainwell.search.space import Choice, IntRange, LogUniform, SearchSection
from trainwell.search.strategies import TightenSampler, grid_plan, tighten


def _space(space, **search):
    return tw.load_recipe(None, {"search": {"space": space, **search}})


def test_shorthand_nested_tables_and_toml_round_trip():
    r = _space({"optimizer": {"lr": {"log_uniform": [1e-4, 1e-1]}},
                "model.hidden": {"choice": [[64], [128, 64]]},
                "train.batch_size": {"int": [16, 64], "step": 16}})
    space = r.search.space
    assert space["optimizer.lr"] == LogUniform(low=1e-4, high=1e-1)
    assert space["model.hidden"] == Choice(values=([64], [128, 64]))
    assert space["train.batch_size"] == IntRange(low=16, high=64, step=16)
    again = tw.Recipe.from_dict(tomllib.loads(r.to_toml()))
    assert again == r
    assert r.search.direction == "minimize"
    assert _space({"optimizer.lr": {"uniform": [0.001, 0.01]}}, metric="val_accuracy").search.direction == "maximize"


@pytest.mark.parametrize("space, message", [
    ({"optimizer.lrr": {"log_uniform": [1e-4, 1]}}, "'optimizer.lrr' is not a key of this recipe; did you mean 'optimizer.lr'?"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}}, "search.space.model.dropout: 1.5 is not a valid value (model.dropout: got 1.5, must be < 1"),
    ({"optimizer.lr": {"log_uniform": [0.0, 0.1]}}, "search.space.optimizer.lr: got low=0.0, a log range needs low > 0"),
    ({"optimizer.lr": {"uniform": [0.1, 0.01]}}, "search.space.optimizer.lr: got low=0.1, high=0.01, need low < high"),
    ({"train.batch_size": {"int": [16, 100], "step": 16}}, "step 16 does not divide the range 16..100"),
    ({"model.activation": {"choice": ["relu", "relu"]}}, "choice lists \"relu\" twice"),
    ({"model.activation": {"choice": ["relu", "rleu"]}}, "'rleu' is not a valid value"),
])
def test_bad_space_is_one_clear_line(space, message):
    with pytest.raises(tw.RecipeError) as e:
        _space(space)
    assert message in str(e.value)


def test_metric_must_be_a_validation_column_and_direction_known():
    with pytest.raises(tw.RecipeError, match="search.metric: got 'train_loss', must be a val_ column"):
        _space({}, metric="train_loss")
    with pytest.raises(tw.RecipeError, match="search.direction: the direction of 'val_custom' is not known"):
        _space({}, metric="val_custom")


def test_keys_of_a_searched_kind_are_accepted():
    r = _space({"optimizer.kind": {"choice": ["sgd", "adam"]}, "optimizer.momentum": {"uniform": [0.0, 0.9]}})
    assert set(r.search.space) == {"optimizer.kind", "optimizer.momentum"}


def test_grid_is_the_product_of_the_axes_log_spaced_for_log_ranges():
    s = SearchSection(space={"a": {"log_uniform": [1e-4, 1e-2]}, "b": {"choice": ["x", "y"]},
                             "c": {"int": [1, 3]}}, grid_points=3)
    plan = grid_plan(s, seed=0)
    assert len(plan) == 3 * 2 * 3
    assert {round(p["a"], 12) for p in plan} == {1e-4, 1e-3, 1e-2}
    assert {p["c"] for p in plan} == {1, 2, 3}
    assert len({tuple(sorted(p.items())) for p in plan}) == len(plan)
    assert plan != grid_plan(s, seed=1) and sorted(map(str, plan)) == sorted(map(str, grid_plan(s, seed=1)))


def test_tighten_takes_the_span_of_the_best_in_log_space_with_margin():
    d = FloatDistribution(1e-5, 1.0, log=True)
    t = tighten(d, [1e-3, 1e-2], margin=0.5)
    # log10 span [-3, -2], widened by half its width each side: [-3.5, -1.5]
    assert math.log10(t.low) == pytest.approx(-3.5) and math.log10(t.high) == pytest.approx(-1.5)
    assert t.log
    lin = tighten(FloatDistribution(0.0, 1.0), [0.2, 0.4, 0.3], margin=0.0)
    assert (lin.low, lin.high) == pytest.approx((0.2, 0.4))
    assert tighten(FloatDistribution(0.0, 1.0), [0.0, 0.9], margin=1.0).low == 0.0   # clipped to the range
    i = tighten(IntDistribution(0, 100, step=10), [23, 47], margin=0.0)
    assert (i.low, i.high, i.step) == (20, 50, 10)
    c = tighten(CategoricalDistribution(["a", "b", "c"]), ["c", "a"], margin=0.0)
    assert c.choices == ("a", "c")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=5), st.floats(0.0, 2.0))
def test_tightened_range_holds_the_best_values_and_stays_inside(best, margin):
    d = FloatDistribution(1e-6, 1.0, log=True)
    t = tighten(d, best, margin)
    assert d.low <= t.low <= min(best) * (1 + 1e-9) and max(best) * (1 - 1e-9) <= t.high <= d.high


def test_tighten_sampler_rounds_draw_inside_the_best_span():
    """Round 2 draws x only from the span of round 1's best trials, for an objective minimized at 0.8."""
    sampler = TightenSampler(trials=40, rounds=2, keep=3, margin=0.0, seed=3)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.8) ** 2 + 0 * len(t.suggest_categorical("c", ["p", "q"])),
                   n_trials=40)
    trials = study.trials
    first = sorted(trials[:20], key=lambda t: t.value)[:3]
    lo, hi = min(t.params["x"] for t in first), max(t.params["x"] for t in first)
    second = [t.params["x"] for t in trials[20:]]
    assert all(lo <= x <= hi for x in second)
    assert {t.params["c"] for t in trials[20:]} <= {t.params["c"] for t in first}
    assert np.median([t.value for t in trials[20:]]) < np.median([t.value for t in trials[:20]])


def test_draws_depend_on_the_trial_number_not_the_worker():
    """Two studies with the same seed draw the same values trial by trial (workers are interchangeable)."""
    def draws(seed):
        study = optuna.create_study(sampler=TightenSampler(trials=5, seed=seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
        return [t.params["x"] for t in study.trials]
    assert draws(7) == draws(7) and draws(7) != draws(8)
