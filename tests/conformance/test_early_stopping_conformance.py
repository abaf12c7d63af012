"""Early stopping against a reference of Keras' EarlyStopping semantics, written here from Keras'
rules (not by calling trainwell): epochs before `start_from_epoch` are ignored; an epoch improves
when value - min_delta beats the best (min: value + |min_delta| < best; the first watched epoch
always improves); `wait` counts epochs since the last improvement and training stops once
wait >= patience; with a baseline, an improvement resets `wait` only if it also beats the baseline.
NaN compares false, as numpy's comparisons do. (trainwell's Lightning extras, check_finite and the
thresholds, are off here: Keras has none.)

Held over hypothesis-generated metric sequences, and end to end over a real run's history."""

from __future__ import annotations

import math

import pytest
from helpers import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

import trainwell as tw
from trainwell.callbacks import EarlyStopping


def keras_reference(values, *, mode, patience, min_delta, baseline, start_from_epoch):
    """(stopped epoch or None, best epoch, best value); epochs counted from 1."""
    sign = -1 if mode == "min" else 1
    delta = abs(min_delta) * sign

    def improves(value, reference):
        if reference is None:
            return True
        v = value - delta
        return v < reference if mode == "min" else v > reference

    wait, best, best_epoch = 0, None, 0
    for k, value in enumerate(values):              # k: Keras' 0-based epoch
        if k < start_from_epoch:
            continue
        wait += 1
        if improves(value, best):
            best, best_epoch = value, k + 1
            if baseline is None or improves(value, baseline):
                wait = 0
            continue
        if wait >= patience and k > 0:
            return k + 1, best_epoch, best
    return None, best_epoch, best


def trainwell_stop(values, **kw):
    es = EarlyStopping(monitor="val_loss", check_finite=False, **kw)
    for epoch, value in enumerate(values, start=1):
        stop, _ = es.update(epoch, value)
        if stop:
            return epoch, es.best_epoch, es.best
    return None, es.best_epoch, es.best


values = st.lists(st.one_of(st.floats(-5, 5, allow_nan=False), st.sampled_from([0.0, 1.0, 1.0001, math.nan])),
                  min_size=1, max_size=30)


@given(values, st.sampled_from(["min", "max"]), st.integers(0, 5), st.sampled_from([0.0, 1e-3, 0.1, 1.0]),
       st.one_of(st.none(), st.floats(-3, 3, allow_nan=False)), st.integers(0, 4))
@settings(max_examples=400, deadline=None)
def test_early_stopping_follows_keras(values, mode, patience, min_delta, baseline, start_from_epoch):
    kw = dict(mode=mode, patience=patience, min_delta=min_delta, baseline=baseline, start_from_epoch=start_from_epoch)
    got, want = trainwell_stop(values, **kw), keras_reference(values, **kw)
    assert got[:2] == want[:2]
    assert got[2] == want[2] or (math.isnan(got[2]) and math.isnan(want[2]))


@pytest.mark.parametrize("stopping", [
    {"stopping.patience": 1},
    pytest.param({"stopping.patience": 2, "stopping.min_delta": 0.01, "stopping.start_from_epoch": 2},
                 marks=pytest.mark.slow),
    pytest.param({"stopping.patience": 1, "stopping.monitor": "val_accuracy", "stopping.baseline": 0.99},
                 marks=pytest.mark.slow),
], ids=["patience", "min_delta-start", "baseline-max"])
def test_a_run_stops_where_keras_would_on_its_own_history(stopping):
    run = tw.fit(None, out=False, quiet=True, **{**TINY, "train.epochs": 25, "optimizer.lr": 0.3,
                                                 "stopping.check_finite": False, **stopping})
    monitor = stopping.get("stopping.monitor", "val_loss")
    mode = "max" if monitor == "val_accuracy" else "min"
    stop, best_epoch, _ = keras_reference(
        [row[monitor] for row in run.history], mode=mode, patience=stopping["stopping.patience"],
        min_delta=stopping.get("stopping.min_delta", 0.0), baseline=stopping.get("stopping.baseline"),
        start_from_epoch=stopping.get("stopping.start_from_epoch", 0))
    assert run.metrics["stopped_epoch"] == (stop or 25)
    assert run.metrics["stop_reason"] == ("finished" if stop is None else
                                          "baseline" if "stopping.baseline" in stopping else "patience")
    assert run.metrics["best_epoch"] == best_epoch
