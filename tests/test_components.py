"""The Setup's stateful components are saved and restored by their names (runstate.py knows none)."""

import torch

from trainwell.build import build
from trainwell.loop import Trainer
from trainwell.prepare import prepare_data
from trainwell.recipe import load_recipe

ALL = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16], "train.batch_size": 32,
       "train.epochs": 3, "schedule.kind": "reduce_on_plateau", "schedule.patience": 0,
       "watch.on_nan": "rollback", "stopping.patience": 1}


class CountRows:
    """A component the loop does not know: its state is the number of epochs it was shown, and it stops
    the run after `stop_after` of them."""

    def __init__(self, stop_after=None):
        self.seen, self.stop_after, self.rows = 0, stop_after, []

    def after_epoch(self, epoch, row):
        self.seen += 1
        self.rows.append((epoch, row["val_loss"]))
        return "enough epochs" if self.seen == self.stop_after else None

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def _trainer(recipe, extra=None):
    setup = build(recipe, prepare_data(recipe), torch.device("cpu"))
    if extra is not None:
        setup.components["count_rows"] = extra
    return Trainer(setup)


def test_every_component_round_trips_through_a_checkpoint_by_name():
    recipe = load_recipe(None, ALL)
    first = _trainer(recipe)
    first.fit()
    assert set(first.setup.components) == {"monitor", "stopper", "plateau", "guard"}
    tensors, meta = first.state_dict()
    fresh = _trainer(recipe)
    before, after = fresh.setup.components, first.setup.components
    assert any(before[n].state_dict() != after[n].state_dict() for n in after)
    fresh.load_state_dict(tensors, meta)
    for name, component in first.setup.components.items():
        assert fresh.setup.components[name].state_dict() == component.state_dict(), name


def test_a_new_component_is_saved_and_restored_without_editing_the_loop():
    recipe = load_recipe(None, {**ALL, "train.epochs": 2})
    counter = CountRows()
    first = _trainer(recipe, counter)
    counter.seen = 7
    tensors, meta = first.state_dict()
    assert meta["count_rows"] == {"seen": 7}
    restored = CountRows()
    _trainer(recipe, restored).load_state_dict(tensors, meta)
    assert restored.seen == 7


def test_a_new_component_decides_after_each_epoch_without_editing_the_loop():
    """The loop hands every healthy epoch's row to each component; its stop reason ends the run."""
    recipe = load_recipe(None, {**ALL, "train.epochs": 5, "stopping.enabled": False})
    counter = CountRows(stop_after=2)
    trainer = _trainer(recipe, counter)
    state = trainer.fit()
    assert counter.rows == [(r["epoch"], r["val_loss"]) for r in state.history] and len(state.history) == 2
    assert (state.stop_reason, state.stopped_epoch) == ("enough epochs", 2)

