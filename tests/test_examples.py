"""The example recipes say what they are."""

from pathlib import Path

from trainwell.recipe import load_recipe

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_digits_example_is_the_default_recipe():
    """examples/digits.toml says it is the default recipe spelled out: every key it sets has the default value."""
    assert load_recipe(EXAMPLES / "digits.toml") == load_recipe(None)
