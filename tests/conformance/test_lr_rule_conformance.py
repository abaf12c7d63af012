"""The LR range test's default rule, held against what training then achieves: the suggestion lands
within 3x of the best constant learning rate found by training at a grid of rates (the full
measurement, over optimizers, data sets and seeds, is benchmarks/lr_rules.py; docs/conformance.md)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from trainwell.api import fit
from trainwell.labs.lr_range import default_rule, range_test, suggest
from trainwell.recipe import load_recipe

QUIET = {"watch.doctor": False, "watch.report": False, "watch.probes": False}


def test_default_rule_per_optimizer_family():
    rule = lambda **o: default_rule(load_recipe(None, o).optimizer)  # noqa: E731
    assert rule(**{"optimizer.kind": "sgd", "optimizer.momentum": 0.0}) == "steepest"
    assert rule(**{"optimizer.kind": "sgd", "optimizer.momentum": 0.9}) == "min"
    assert rule(**{"optimizer.kind": "adam"}) == "min"
    assert rule(**{"optimizer.kind": "rmsprop"}) == "min"


def test_min_rule_reads_the_lowest_point_and_min10_a_tenth_of_it():
    lrs = np.geomspace(1e-5, 1.0, 60)
    loss = (np.log10(lrs) + 1.5) ** 2 + 1.0            # lowest at lr = 10**-1.5
    s = suggest(lrs, loss)
    k = int(np.argmin(loss))
    assert s["min"] == lrs[k] and s["min/10"] == pytest.approx(lrs[k] / 10)
    assert abs(math.log10(s["min"]) + 1.5) < 0.1


def test_cli_find_lr_defaults_to_the_family_rule(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "trainwell.cli", "fit", "--find-lr", "--out", str(out), "--quiet",
                           "--set", 'data.source="moons"', "--set", "data.n_samples=200", "--set", "model.hidden=[8]",
                           "--set", "train.epochs=1", "--set", 'optimizer.kind="sgd"', "--set",
                           "optimizer.momentum=0.9"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    assert "(min rule;" in done.stdout
    record = json.loads((out / "lr_find.json").read_text())
    assert record["rule"] == "min" and record["lr"] == record["suggestions"]["min"]


GRID = [float(10 ** (k / 2)) for k in range(-6, 2)]    # 1e-3 .. 3.2, half a decade apart


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", [{"optimizer.kind": "sgd", "optimizer.momentum": 0.9},
                                       {"optimizer.kind": "adam"}], ids=["momentum", "adam"])
def test_default_suggestion_lands_within_3x_of_the_best_constant_rate(optimizer):
    settings = {**QUIET, **optimizer, "data.source": "digits", "model.hidden": [256, 256], "train.epochs": 5,
                "train.batch_size": 64, "stopping.enabled": False, "stopping.restore_best": False, "seed": 0}
    warnings.simplefilter("ignore")
    accuracy = {}
    for lr in GRID:
        accs = []
        for seed in (0, 1):
            run = fit(None, out=False, quiet=True, **{**settings, "optimizer.lr": lr, "seed": seed})
            acc = run.metrics["val"].get("accuracy")
            accs.append(acc if acc is not None and math.isfinite(acc) else 0.0)
        accuracy[lr] = sum(accs) / len(accs)
    # The best rates: the best mean accuracy over two seeds and those within half a point of it. One seed
    # is not enough: at momentum's rates 0.1, 0.32 and 1 its accuracy on these 360 validation rows moves by
    # 0.01-0.03 from seed to seed (4 seeds, measured), so one seed's best rate is a draw among them.
    top = max(accuracy.values())
    best = [lr for lr in GRID if accuracy[lr] >= top - 0.005]
    recipe = load_recipe(None, settings)
    suggestion = range_test(recipe).suggestions[default_rule(recipe.optimizer)]
    assert any(lr / 3 <= suggestion <= lr * 3 for lr in best), (suggestion, best, accuracy)
