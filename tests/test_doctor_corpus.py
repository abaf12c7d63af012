"""The doctor's labelled corpus (benchmarks/doctor_corpus.py): the fast scenarios one by one, each
held to its labels (its rules fire, its root cause comes first, no must-not-fire rule speaks at
warning level, no remedy repeats the recipe, no crash); the whole corpus against the goals."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("doctor_corpus", Path(__file__).parents[1] / "benchmarks" / "doctor_corpus.py")
corpus = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = corpus          # dataclasses look their module up while the file executes
spec.loader.exec_module(corpus)

FAST = [s for s in corpus.SCENARIOS if s.fast]


def test_the_corpus_is_labelled_as_the_issue_asks():
    healthy = [s for s in corpus.SCENARIOS if s.healthy]
    assert len(corpus.SCENARIOS) >= 40 and len(healthy) >= len(corpus.SCENARIOS) / 2
    assert {s.area for s in corpus.SCENARIOS} >= {"tabular", "regression", "image", "csv"}
    for s in corpus.SCENARIOS:
        assert set(s.fire) <= corpus.ALL_RULES and set(s.may) <= corpus.ALL_RULES, s.name
        assert not s.healthy or not s.may, f"{s.name}: a healthy run allows no warning"
        assert s.healthy or set(s.first) <= set(s.fire) | set(s.may), s.name
    assert len({s.name for s in corpus.SCENARIOS}) == len(corpus.SCENARIOS)


@pytest.mark.parametrize("scenario", FAST, ids=[s.name for s in FAST])
def test_fast_scenario(scenario, tmp_path):
    o = corpus.run_scenario(scenario, tmp_path)
    assert o.crash is None, o.crash
    assert o.missed == [], f"missed {o.missed}: {[f.rule for f in o.findings]}"
    assert o.false_positives == [], f"false positives {o.false_positives}"
    assert o.repeated == [] and o.contradictions == []
    if not scenario.healthy:
        assert o.first_ok, f"first finding {o.findings[0].rule}, expected one of {scenario.first}"


@pytest.mark.slow
def test_whole_corpus_meets_the_goals(tmp_path):
    outcomes = [corpus.run_scenario(s, tmp_path) for s in corpus.SCENARIOS]
    m = corpus.summarize(outcomes)
    report = "\n".join(corpus.table(outcomes) + corpus.format_summary(m))
    g = corpus.GOALS
    assert m["crashes"] == g["crashes"], report
    assert m["recall"] >= g["recall"], report
    assert m["root_cause_first"] >= g["root_cause_first"], report
    assert m["fp_per_healthy"] <= g["fp_per_healthy"], report
    assert m["repeated_remedies"] == g["repeated_remedies"], report
    assert m["contradictions"] == g["contradictions"], report


def _scenario(name):
    return next(s for s in corpus.SCENARIOS if s.name == name)


def test_try_on_corpus_scenarios(tmp_path):
    """doctor --try on two corpus runs: a remedy that helps (zero biases for units a bias of -4 kills),
    and a healthy run with nothing to try."""
    from trainwell.watch.trial import try_remedy

    sick = corpus.run_scenario(_scenario("p_dead_bias"), tmp_path)
    result = try_remedy(sick.run_dir, out=tmp_path / "try")
    assert result.rule == "dead_relus" and result.overrides == {"init.bias": "zeros"}
    assert result.confirmed and result.after < 0.5 * result.before, result.summary()
    healthy = corpus.run_scenario(_scenario("h_wine"), tmp_path)
    nothing = try_remedy(healthy.run_dir)
    assert nothing.overrides == {} and not nothing.confirmed
    assert nothing.summary().startswith("nothing to try")


@pytest.mark.slow
def test_try_reads_the_returned_model_when_the_remedy_averages(tmp_path):
    """linear_better's remedy is an ensemble, whose member 1 is the plain run: its history is the plain
    network's, so --try reads the returned model's validation loss (metrics.json) on both sides."""
    from trainwell.watch.trial import try_remedy

    sick = corpus.run_scenario(_scenario("p_linear_small_regression"), tmp_path)
    assert sick.findings[0].rule == "linear_better"
    result = try_remedy(sick.run_dir, out=tmp_path / "try", data=sick.data)
    assert result.overrides == {"train.average.kind": "ensemble"}
    assert result.before == pytest.approx(json.loads((sick.run_dir / "metrics.json").read_text())["val"]["loss"])
    after = json.loads((tmp_path / "try" / "after" / "metrics.json").read_text())
    assert after["model"] == "ensemble" and result.after == pytest.approx(after["val"]["loss"])
    assert result.confirmed, result.summary()
