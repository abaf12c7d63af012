"""Recipe keys of the data/model issue: the model union, [data.augment], init.from/freeze."""

from __future__ import annotations

import pytest

from trainwell.errors import RecipeError
from trainwell.recipe import CNNSection, MLPSection, Recipe, load_recipe


def test_model_is_a_tagged_union_defaulting_to_mlp():
    assert isinstance(load_recipe(None, {"model.hidden": [8]}).model, MLPSection)
    cnn = load_recipe(None, {"model.kind": "cnn", "model.channels": [8, 16]}).model
    assert isinstance(cnn, CNNSection) and cnn.channels == (8, 16)


@pytest.mark.parametrize("overrides, message", [
    ({"model.channels": [8]}, "model.channels: unknown key; it belongs to kind cnn; valid keys here: kind, hidden, "
                              "activation, negative_slope, norm, dropout, dropconnect"),
    ({"model.kind": "cnn", "model.hidden": [8]}, "model.hidden: unknown key; it belongs to kind mlp;"),
    ({"model.kind": "rnn"}, "model.kind: got 'rnn', must be one of 'mlp', 'cnn'"),
    ({"init.frm": "x"}, "init.frm: unknown key; did you mean init.from?"),
    ({"data.augment.hflp": 0.5}, "data.augment.hflip"),
    ({"data.augment.hflip": 1.5}, "data.augment.hflip: got 1.5, must be <= 1"),
    ({"data.normalize": "zca"}, "data.normalize: got 'zca', must be one of"),
    ({"model.dropconnect": 1.0}, "model.dropconnect: got 1.0, must be < 1"),
    ({"data.shape_kinds": ["circle", "circle"]}, "data.shape_kinds: got ['circle', 'circle'], each kind at most once"),
])
def test_messages(overrides, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(None, overrides)
    assert message in str(info.value)


def test_init_from_round_trips_through_toml(tmp_path):
    recipe = load_recipe(None, {"init.from": "runs/pre", "init.freeze": ["fc1"], "model.kind": "cnn",
                                "data.augment.mixup_alpha": 0.2})
    text = recipe.to_toml()
    assert 'from = "runs/pre"' in text and "[data.augment]" in text
    (tmp_path / "r.toml").write_text(text)
    again = load_recipe(tmp_path / "r.toml")
    assert again == recipe and again.get("init.from") == "runs/pre" and again.init.freeze == ("fc1",)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
