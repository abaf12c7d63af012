"""The labs: each runs with --quick and its numbers show the lectures' known result, checked
against closed forms (gd-path), the theory of the variance of deep nets (init), and PyTorch's own
schedulers (schedules). Kept small: the whole module runs in well under a minute on one core."""

import json
import re
import subprocess
import sys

import pytest
import torch

from trainwell.cli import main
from trainwell.labs import LABS, LabOptions, run_lab

QUICK = LabOptions(quick=True)


def _check_outputs(result, page):
    out = page.parent
    assert page.name == "index.html"
    for f in result.figures:
        data = (out / f"{f.name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    # self-contained: every figure inline, nothing fetched
    assert html.count('src="data:image/png;base64,') == len(result.figures) >= 1
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", html)
    assert "<script" not in html
    table = json.loads((out / "table.json").read_text())
    assert table["columns"] == result.columns and len(table["rows"]) == len(result.rows)
    lines = (out / "table.csv").read_text().splitlines()
    assert len(lines) == len(result.rows) + 1 and lines[0].split(",")[0] == result.columns[0]


def test_list_shows_every_lab_with_a_description():
    out = subprocess.run([sys.executable, "-m", "trainwell.cli", "lab", "--list"],
                         capture_output=True, text=True, check=True)
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert listed == list(LABS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in out.stdout.splitlines())


def test_unknown_lab_is_one_line_with_a_suggestion(capsys):
    assert main(["lab", "gd-pth"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'gd-path'" in err and "lab: got 'gd-pth'" in err


def test_gd_path_follows_the_closed_form_and_labels_each_rate(tmp_path, capsys):
    assert main(["lab", "gd-path", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "diverges" in printed and str(tmp_path / "index.html") in printed
    table = json.loads((tmp_path / "table.json").read_text())
    verdicts = {r[1]: r[4] for r in table["rows"] if r[0] == "f = x²"}
    assert verdicts[1.1] == "diverges"
    assert verdicts[0.2] == "converges"
    assert verdicts[1.0] == "oscillates"
    assert verdicts[0.9].startswith("converges")
    for lr, path in table["series"]["paths"].items():
        lr = float(lr)
        expected = [10.0 * (1 - 2 * lr) ** t for t in range(len(path))]   # x_t = x0 (1 - 2 lr)^t
        assert path == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # the 2-D quadratic near lr = 2/K bounces across the valley: y changes sign every step
    y = [p[1] for p in table["series"]["paths_2d"]["0.09"]]
    assert all(a * b < 0 for a, b in zip(y, y[1:]))


def test_init_collapses_saturates_or_stays_healthy(tmp_path):
    result, page = run_lab("init", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    s = {label: v["std"] for label, v in result.series.items()}
    assert s["tanh, N(0, 0.01)"][-1] < 1e-3 * s["tanh, N(0, 0.01)"][0]
    assert 1 / 4 < s["tanh, Xavier"][-1] / s["tanh, Xavier"][0] <= 1.0
    assert result.series["tanh, N(0, 1)"]["saturated"][-1] > 0.8          # stuck at ±1
    assert 0.5 < s["ReLU, He"][-1] / s["ReLU, He"][0] < 2
    assert s["ReLU, Xavier"][-1] / s["ReLU, Xavier"][0] < 0.1
    # ReLU + Xavier loses a factor sqrt(2) per layer (variance halved): 9 layers from the first to the last
    assert s["ReLU, Xavier"][-1] / s["ReLU, Xavier"][0] == pytest.approx(2 ** -4.5, rel=0.35)


def test_momentum_beats_plain_sgd_on_the_ill_conditioned_quadratic(tmp_path):
    result, page = run_lab("optimizers", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    rows = {(r["surface"], r["optimizer"]): r for r in result.records()}
    sgd, mom = rows[("ill-conditioned quadratic", "SGD")], rows[("ill-conditioned quadratic", "momentum")]
    assert sgd["lr"] == mom["lr"]
    assert mom["settled at step"] is not None and sgd["settled at step"] is not None
    assert mom["settled at step"] < sgd["settled at step"]
    assert mom["first below tol"] < sgd["first below tol"]
    # five optimizers by default: at most five lines per panel
    assert {r["optimizer"] for r in result.records()} == {"SGD", "momentum", "Nesterov", "RMSProp", "Adam"}


def test_optimizer_paths_are_torch_optim_steps():
    from trainwell.labs.optimizers import SURFACES, walk

    quad = SURFACES[0]
    path = walk(quad, "momentum", 5, lr=0.01).path
    # heavy ball by hand: v <- 0.9 v + g, p <- p - lr v (PyTorch's convention)
    p, v = torch.tensor(quad.start, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for t in range(1, 6):
        g = torch.stack([p[0], 25.0 * p[1]])
        v = 0.9 * v + g if t > 1 else g
        p = p - 0.01 * v
        assert path[t] == pytest.approx(p.numpy(), rel=1e-12)


S = torch.optim.lr_scheduler


def _torch_lrs(make, spe, total, per_step, metrics=None):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make(opt)
    out = []
    for step in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_step:
            sched.step()
        elif (step + 1) % spe == 0:
            sched.step(metrics[step // spe]) if metrics is not None else sched.step()
    return out


def test_schedule_curves_match_torch_schedulers(tmp_path):
    from trainwell.labs.schedule_curves import CURVES, EPOCHS, STEPS_PER_EPOCH, schedule_kinds

    result, page = run_lab("schedules", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    assert {keys["kind"] for keys in CURVES.values()} == schedule_kinds()
    curves, val = result.series["curves"], result.series["val_loss"]
    spe, total = STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH
    oracles = {
        "step": (lambda o: S.StepLR(o, 8, 0.5), False),
        "multistep": (lambda o: S.MultiStepLR(o, [10, 20], 0.3), False),
        "exponential": (lambda o: S.ExponentialLR(o, 0.9), False),
        "polynomial": (lambda o: S.PolynomialLR(o, total_iters=total, power=2.0), True),
        "cosine": (lambda o: S.CosineAnnealingLR(o, total, eta_min=0.005), True),
        "cosine_restarts": (lambda o: S.CosineAnnealingWarmRestarts(o, 6 * spe, T_mult=2, eta_min=0.005), True),
        "one_cycle": (lambda o: S.OneCycleLR(o, max_lr=0.3, total_steps=total, cycle_momentum=False), True),
        "reduce_on_plateau": (lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=3), False),
    }
    for label, (make, per_step) in oracles.items():
        metrics = val if label == "reduce_on_plateau" else None
        expected = _torch_lrs(make, spe, total, per_step, metrics)
        picks = list(range(0, total, 7)) + [total - 1]
        assert [curves[label][i] for i in picks] == pytest.approx([expected[i] for i in picks], rel=1e-9), label
    assert min(curves["reduce_on_plateau"]) < 0.1          # the synthetic plateau did trigger a reduction
    warm = curves["cosine + warmup"]
    assert warm[0] == pytest.approx(0.1 * 0.01) and warm[3 * spe] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(warm[: 3 * spe], warm[1: 3 * spe + 1]))


def test_lr_range_is_seeded_and_suggests_before_divergence(tmp_path):
    from trainwell.labs.lr_range import QUICK_STEPS, RULES, range_test
    from trainwell.recipe import load_recipe

    result, page = run_lab("lr-range", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    first = result.series["0"]
    again = range_test(load_recipe(None).replace(seed=0), steps=QUICK_STEPS)
    assert again.losses.tolist() == first["losses"] and again.suggestions == first["suggestions"]
    for rec in result.series.values():
        assert rec["diverged_lr"] is not None            # the default recipe does blow up below lr 10
        smooth = rec["smooth"]
        for rule in RULES:
            lr = rec["suggestions"][rule]
            assert rec["lrs"][0] < lr < rec["diverged_lr"]
            i = min(range(len(rec["lrs"])), key=lambda k: abs(rec["lrs"][k] - lr * (10 if rule == "min/10" else 1)))
            assert smooth[i] < smooth[0]                 # a point where training was working
    spread = {r["rule"]: r for r in result.records()}
    assert set(spread) == set(RULES)
    assert all(r["min over seeds"] <= r["median"] <= r["max"] for r in spread.values())


def test_suggestion_rules_on_a_hand_made_curve():
    import numpy as np

    from trainwell.labs.lr_range import suggest

    lrs = np.geomspace(1e-5, 1.0, 51)                     # 10 points per decade
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 4))         # falls fastest at lr 1e-3, flat after
    loss[-8:] += np.linspace(0.0, 1.0, 8) ** 2            # turns up at the end
    s = suggest(lrs, loss)
    assert s["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert s["min/10"] == pytest.approx(lrs[int(np.argmin(loss))] / 10)
    assert 1e-3 < s["valley"] < lrs[int(np.argmin(loss))]


def test_fit_find_lr_trains_with_the_suggestion_and_records_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "--find-lr", "steepest", "--out", str(out), "--quiet", "--set", 'data.source="moons"',
            "--set", "data.n_samples=300", "--set", "model.hidden=[16]", "--set", "train.epochs=2",
            "--set", "watch.probes=false", "--set", "watch.doctor=false", "--set", "watch.report=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "lr_find.json").read_text())
    assert record["rule"] == "steepest" and record["lr"] == record["suggestions"]["steepest"]
    import tomllib

    assert tomllib.loads((out / "recipe.toml").read_text())["optimizer"]["lr"] == pytest.approx(record["lr"])
    assert f"optimizer.lr = {record['lr']:.3g} (steepest rule" in printed
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


def test_regularization_narrows_the_gap_of_an_overfitting_net(tmp_path):
    import numpy as np

    from trainwell.labs.regularization import VARIANTS, gap

    result, page = run_lab("regularization", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    assert result.column("variant") == list(VARIANTS)
    rows = {r["variant"]: r for r in result.records()}
    assert rows["none"]["train acc"] > rows["none"]["val acc"]          # it does overfit
    assert gap(result, "none") > 1.5 * gap(result, "L2 penalty")
    assert gap(result, "none") > 1.5 * gap(result, "dropout")
    assert rows["early stopping"]["epochs"] < rows["none"]["epochs"]    # stopped before the budget ran out
    assert "regularization_boundaries" in [f.name for f in result.figures]   # 2-D data: the boundaries drawn
    # the curves' caption: what the baseline's validation loss does, and which variants narrow the gap
    caption = result.figure("regularization_curves").caption
    val = result.series["curves"]["none"]["val_loss"]
    low, last = min(val), val[-1]
    if last > 1.05 * low:
        assert f"reaches its minimum {low:.3g} at epoch {int(np.argmin(val)) + 1} and then climbs to {last:.3g}" in caption
        assert "levels off" not in caption
    narrower = [n for n, r in rows.items() if n != "none" and r["gap"] < rows["none"]["gap"]]
    assert ("narrower with " + ", ".join(narrower)) in caption if narrower else "narrower with" not in caption
    assert "one seed" in result.figure("regularization_gaps").caption       # --quick: one seed, said so


def test_random_search_finds_a_better_important_value_than_grid(tmp_path):
    import numpy as np

    from trainwell.labs.search_layout import TRIALS, grid_layout

    result, page = run_lab("search-layout", QUICK, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    rows = {r["layout"]: r for r in result.records()}
    assert rows["grid"]["distinct x values"] == 3 and rows["random"]["distinct x values"] == TRIALS
    assert rows["random"]["median |x_best − x*|"] < rows["grid"]["median |x_best − x*|"]
    # the grid's x values are 1/6, 1/2, 5/6: its best x can never be further than 1/6 from x*
    assert len(np.unique(grid_layout()[:, 0])) == 3
    assert max(r["best"]["grid"]["x_miss"] for r in result.series["repeats"]) <= 1 / 6 + 1e-12


def test_ablate_has_one_row_per_variant_with_mean_and_std_over_seeds(tmp_path):
    import numpy as np

    from trainwell.labs.ablate import variants
    from trainwell.recipe import load_recipe

    sets = {"data.source": "iris", "model.hidden": [16], "model.norm": "none", "model.dropout": 0.2,
            "schedule.kind": "constant", "stopping.enabled": False, "train.batch_size": 16, "optimizer.lr": 0.01,
            "train.epochs": 4}
    options = LabOptions(quick=True, seeds=2, overrides=sets)
    result, page = run_lab("ablate", options, out=tmp_path, quiet=True)
    _check_outputs(result, page)
    expected = variants(load_recipe(None, sets))
    # used techniques are switched off, the usual ones that are not used are switched on
    assert {"− dropout", "+ batch norm", "+ weight decay", "+ label smoothing", "+ early stopping",
            "+ LR schedule"} <= set(expected)
    assert result.column("variant") == ["baseline", *expected]
    for row in result.records():
        per_seed = result.series[row["variant"]]
        assert len(per_seed["val"]) == 2
        assert row["val accuracy"] == pytest.approx(np.mean(per_seed["val"]))
        assert row["val std"] == pytest.approx(np.std(per_seed["val"], ddof=1))
        assert row["test std"] == pytest.approx(np.std(per_seed["test"], ddof=1))
        base = result.series["baseline"]
        assert row["Δ test"] == pytest.approx(np.mean(per_seed["test"]) - np.mean(base["test"]))
    assert result.records()[0]["Δ val"] == 0
    assert result.records()[0]["val accuracy"] > 0.5             # the tiny recipe does learn iris


def test_ablate_variants_follow_the_recipe():
    from trainwell.labs.ablate import _apply, variants
    from trainwell.recipe import load_recipe

    r = load_recipe(None, {"data.source": "moons", "regularization.l2": 1e-3, "data.augment.mixup_alpha": 0.2,
                           "schedule.kind": "step", "schedule.warmup_epochs": 1})
    v = variants(r)
    assert v["− L2 penalty"] == {"regularization.l2": 0.0} and "− mixup" in v and "− warmup" in v
    assert "+ label smoothing" not in v           # binary moons: bce_with_logits, smoothing would do nothing
    off = _apply(r, v["− LR schedule"])
    assert off.schedule.kind == "constant" and off.schedule.warmup_epochs == 1
    assert _apply(r, v["− dropout"]).model.dropout == 0.0


@pytest.mark.parametrize("argv, expected", [
    (["lab", "gd-path", "recipe.toml"], "lab gd-path: takes no RECIPE or --set"),
    (["lab", "gd-path", "--lrs", "0.1,abc"], "lab gd-path: --lrs got 'abc', expected comma-separated numbers > 0"),
    (["lab", "gd-path", "--lrs", "-0.1"], "lab gd-path: --lrs got '-0.1'"),
    (["lab", "gd-path", "--steps", "2.5"], "lab gd-path: --steps got '2.5', expected an integer >= 1"),
    (["lab", "gd-path", "--x0", "0"], "lab gd-path: --x0 got 0"),
    (["lab", "gd-path", "--depth", "20"], "lab gd-path: unrecognized arguments: --depth 20; its parameters: --lrs"),
    (["lab", "gd-path", "--set", "lrz=1"], "lab gd-path: has no parameter 'lrz'"),
    (["lab", "init", "--activations", "tanh,swish"], "lab init: --activations got 'tanh,swish', expected "
     "comma-separated names of tanh, relu, sigmoid"),
    (["lab", "init", "--depth", "1"], "lab init: --depth got '1', expected an integer >= 2 and <= 50"),
    (["lab", "optimizers", "--optimizers", "SGD,LBFGS"], "lab optimizers: --optimizers got 'SGD,LBFGS'"),
    (["lab", "optimizers", "--lr-scale", "0"], "lab optimizers: --lr-scale got '0', expected a number > 0"),
    (["lab", "gd-path", "--dpi", "5"], "lab gd-path: --dpi got 5"),
    (["lab", "init", "--seeds", "3"], "lab init: takes no --seeds"),
    (["lab", "ablate", "--seeds", "0"], "--seeds got 0, must be >= 1"),
    (["lab", "ablate", "no-such-recipe.toml"], "no-such-recipe.toml: recipe file not found"),
    (["lab", "lr-range", "--set", "optimizer.lr=-1"], "optimizer.lr"),
    (["lab"], "give a lab NAME"),
])
def test_bad_lab_arguments_are_one_line_and_exit_2(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err, err
    assert not (tmp_path / "runs").exists()                  # nothing written
