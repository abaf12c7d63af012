"""Early stopping on scripted metric sequences; expected stop epochs worked out by hand (Keras semantics)."""

import pytest

from trainwell.callbacks import EarlyStopping, StopReason


def run(values, **kw):
    kw.setdefault("monitor", "val_loss")
    kw.setdefault("mode", "min")
    kw.setdefault("patience", 2)
    es = EarlyStopping(**kw)
    for epoch, v in enumerate(values, start=1):
        stop, reason = es.update(epoch, v)
        if stop:
            return epoch, reason, es.best_epoch
    return None, None, es.best_epoch


@pytest.mark.parametrize("values, kw, expected", [
    # best at epoch 2, then two epochs without improvement -> stop at 4
    ([1.0, 0.8, 0.9, 0.85, 0.7], {}, (4, StopReason.PATIENCE, 2)),
    # steady improvement: never stops
    ([1.0, 0.9, 0.8, 0.7], {}, (None, None, 4)),
    # min_delta 0.1: 0.95 and 0.91 are not improvements over 1.0 -> stop at 3
    ([1.0, 0.95, 0.91, 0.5], {"min_delta": 0.1}, (3, StopReason.PATIENCE, 1)),
    # patience 0: the first non-improving epoch stops
    ([1.0, 0.9, 0.95], {"patience": 0}, (3, StopReason.PATIENCE, 2)),
    # mode max on accuracy
    ([0.5, 0.7, 0.69, 0.7, 0.71], {"mode": "max", "monitor": "val_accuracy"}, (4, StopReason.PATIENCE, 2)),
    # start_from_epoch 2: epochs 1-2 ignored (even a bad epoch 2); counting starts at 3
    ([5.0, 9.0, 1.0, 1.1, 1.2, 0.5], {"start_from_epoch": 2}, (5, StopReason.PATIENCE, 3)),
    # baseline 0.5: improvements that do not beat it do not reset the wait (wait = 3 at epoch 3)
    ([1.0, 0.9, 0.95, 0.92], {"baseline": 0.5}, (3, StopReason.BASELINE, 2)),
    # ... but, as in Keras, an improving epoch never triggers the stop itself
    ([1.0, 0.9, 0.8, 0.4, 0.45], {"baseline": 0.5}, (None, None, 4)),
    # baseline beaten at epoch 2 -> ordinary patience afterwards
    ([1.0, 0.4, 0.45, 0.41, 0.3], {"baseline": 0.5}, (4, StopReason.PATIENCE, 2)),
    # non-finite value stops at once
    ([1.0, float("nan"), 0.5], {}, (2, StopReason.NON_FINITE, 1)),
    # Lightning's thresholds
    ([1.0, 0.5, 0.09, 0.05], {"stopping_threshold": 0.1}, (3, StopReason.STOPPING_THRESHOLD, 3)),
    ([1.0, 2.0, 6.0], {"divergence_threshold": 5.0, "patience": 10}, (3, StopReason.DIVERGENCE_THRESHOLD, 1)),
])
def test_stop_epochs(values, kw, expected):
    assert run(values, **kw) == expected


def test_state_round_trips_mid_run():
    values = [1.0, 0.8, 0.9, 0.85, 0.84, 0.83, 0.9, 0.95]
    a = EarlyStopping(monitor="val_loss", mode="min", patience=3)
    for e, v in enumerate(values[:4], 1):
        a.update(e, v)
    b = EarlyStopping(monitor="val_loss", mode="min", patience=3)
    b.load_state_dict(a.state_dict())
    for e, v in enumerate(values[4:], 5):
        assert a.update(e, v) == b.update(e, v)
    assert a.state_dict() == b.state_dict()
