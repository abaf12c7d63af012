import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from trainwell.docs import render
from trainwell.errors import RecipeError
from trainwell.recipe import Recipe, load_recipe, parse_overrides, parse_value


def problems(raw):
    with pytest.raises(RecipeError) as info:
        load_recipe(raw)
    return info.value.problems


def test_default_recipe_round_trips_through_toml():
    r = load_recipe()
    assert Recipe.from_dict(tomllib.loads(r.to_toml())) == r
    assert Recipe.from_dict(tomllib.loads(r.to_toml(comments=True))) == r


def test_every_key_is_written_even_unset_ones():
    text = load_recipe().to_toml()
    for key in ("baseline", "clip_norm", "clip_value", "stopping_threshold", "target", "name"):
        assert f"# {key} =" in text


@pytest.mark.parametrize("raw, message", [
    ({"optimizer": {"kind": "adam", "lr": -0.1}}, "optimizer.lr: got -0.1, must be > 0.0"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr: got 0, must be > 0.0"),
    ({"model": {"hiden": [3]}}, "model.hiden: unknown key; did you mean model.hidden?"),
    ({"modle": {}}, "modle: unknown key; did you mean model?"),
    ({"optimizer": {"kind": "adamx"}}, "optimizer.kind: got 'adamx', must be one of 'sgd', 'adagrad', "
     "'rmsprop', 'adadelta', 'adam', 'adamw' (did you mean 'adam'?)"),
    ({"data": {"split": [0.5, 0.2, 0.2]}}, "data.split: got [0.5, 0.2, 0.2] (sum 0.9), fractions must sum to 1"),
    ({"train": {"epochs": "x"}}, "train.epochs: got 'x', must be an integer"),
    ({"train": {"batch_size": 0}}, "train.batch_size: got 0, must be >= 1"),
    ({"stopping": {"monitor": "val_foo"}},
     'stopping.mode: the direction of \'val_foo\' is not known; set stopping.mode = "min" or "max"'),
    ({"model": {"dropout": 1.0}}, "model.dropout: got 1.0, must be < 1.0"),
    ({"loss": {"kind": "mse", "label_smoothing": 0.1}},
     "loss.label_smoothing: applies to cross_entropy and bce_with_logits only, got loss.kind = 'mse'"),
    ({"optimizer": {"kind": "sgd", "nesterov": True}},
     "optimizer.nesterov: needs optimizer.momentum > 0 and optimizer.dampening = 0"),
])
def test_error_messages_name_the_field(raw, message):
    assert message in problems(raw)


def test_key_of_another_kind_says_which_kind_owns_it():
    (msg,) = problems({"optimizer": {"kind": "sgd", "betas": [0.9, 0.99]}})
    assert msg.startswith("optimizer.betas: unknown key; it belongs to kind adam / adamw")


def test_all_problems_are_reported_at_once():
    found = problems({"optimizer": {"lr": -1}, "model": {"hiden": [3]}, "train": {"epochs": 0}})
    assert len(found) == 3


def test_direction_of_known_metrics_is_filled_in_and_unknown_needs_one():
    assert load_recipe(None, {"stopping.monitor": "val_accuracy"}).stopping.mode == "max"
    assert load_recipe(None, {"stopping.monitor": "val_loss"}).stopping.mode == "min"
    assert load_recipe(None, {"stopping.monitor": "my_score", "stopping.mode": "max"}).stopping.mode == "max"


def test_no_validation_split_refuses_val_monitor():
    msgs = problems({"data": {"split": [0.8, 0.0, 0.2]}})
    assert any(m.startswith("stopping.monitor: got 'val_loss'") for m in msgs)
    load_recipe(None, {"data.split": [0.8, 0.0, 0.2], "stopping.monitor": "train_loss"})


def test_overrides_switch_tagged_kind():
    r = load_recipe(None, parse_overrides(["optimizer.kind=sgd", "optimizer.momentum=0.9", "model.hidden=[32, 16]"]))
    assert r.optimizer.kind == "sgd" and r.optimizer.momentum == 0.9 and r.model.hidden == (32, 16)


def test_set_without_equals_is_an_error():
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_overrides(["optimizer.lr"])


@given(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                 st.booleans(), st.lists(st.integers(0, 999), max_size=4)))
def test_set_values_parse_as_toml(value):
    from trainwell.recipe import _toml_value
    assert parse_value(_toml_value(value)) == value


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_bare_words_are_strings(word):
    if word not in ("true", "false", "inf", "nan"):
        assert parse_value(word) == word


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optimizer\nlr = 1")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(bad)


def test_frozen():
    r = load_recipe()
    with pytest.raises(ValidationError):
        r.seed = 3  # type: ignore[misc]


def test_docs_recipe_md_is_current():
    page = Path(__file__).parents[1] / "docs" / "recipe.md"
    assert page.read_text() == render(), "regenerate: python -m trainwell.docs > docs/recipe.md"


ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_example_recipes_are_valid(path):
    load_recipe(path)


def test_readme_recipe_is_valid():
    import re
    block = re.search(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    Recipe.from_dict(tomllib.loads(block))
