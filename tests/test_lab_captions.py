"""The labs' parameters and captions: every sentence a caption states is checked against the lab's own
table (and the table against closed forms), for the default parameters and for one other setting; each
new parameter changes what the page says was run."""

import math
import re

import pytest

from trainwell.labs import LabOptions, lab_params, run_lab


def _run(name, tmp_path, quick=True, **params):
    result, page = run_lab(name, LabOptions(quick=quick, params=params), out=tmp_path, quiet=True)
    return result, page.read_text()


def _caption(result, name):
    return result.figure(name).caption


# ---- gd-path ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"lrs": [0.05, 0.5, 0.75], "x0": -4.0, "steps": 6, "curvature": 10.0,
                                          "lrs-2d": [0.02, 0.18, 0.21], "steps-2d": 12}])
def test_gd_path_captions_follow_the_table(tmp_path, params):
    result, page = _run("gd-path", tmp_path, **params)
    p = lab_params("gd-path", params, True)
    rows = result.records()
    one = [r for r in rows if r["problem"] == "f = x²"]
    two = [r for r in rows if r["problem"] != "f = x²"]
    assert [r["lr"] for r in one] == p["lrs"] and [r["lr"] for r in two] == p["lrs-2d"]
    for r in one:                          # the table against the closed form x_t = x0 (1 - 2 lr)^t
        assert r["x factor"] == pytest.approx(1 - 2 * r["lr"])
        assert r["|x| × per step"] == pytest.approx(abs(1 - 2 * r["lr"]), rel=1e-9)
    for r in two:                          # 1 - lr along x, 1 - K lr along y
        assert r["x factor"] == pytest.approx(1 - r["lr"]) and r["y factor"] == pytest.approx(1 - p["curvature"] * r["lr"])
        if abs(r["y factor"]) < 1:
            assert r["|x| × per step"] == pytest.approx(abs(1 - r["lr"]), rel=1e-9)
    paths = _caption(result, "gd_paths")
    for r in one:                          # each rate's sentence says what its verdict and factor say
        k = abs(1 - 2 * r["lr"])
        claim = re.search(rf"lr {r['lr']:g} (.*?)(?:; |\.$)", paths).group(1)
        if k == 0:
            assert claim == "lands on the minimum in one step"
        elif k > 1:
            assert "further out" in claim and f"×{k:.3g}" in claim
        elif k == 1:
            assert "forever" in claim
        elif 1 - 2 * r["lr"] < 0:
            assert "across the minimum" in claim and f"×{k:.3g}" in claim
        else:
            assert "slides down one side" in claim and f"×{k:.3g}" in claim
    zig = _caption(result, "gd_zigzag")
    for r in two:
        claim = re.search(rf"lr {r['lr']:g} (.*?)(?:; |\. )", zig).group(1)
        assert ("bounces" in claim) == (r["y factor"] < 0)
        assert f"×{abs(1 - r['lr']):.2f} per step" in claim or abs(r["y factor"]) >= 1
    finite = [r for r in two if math.isfinite(r["|x| × per step"])]
    slow = max(finite, key=lambda r: r["|x| × per step"])
    fast = min(finite, key=lambda r: r["|x| × per step"])
    # the smaller rate is the slower one along x (×0.97 vs ×0.91 by default), never "as slow"
    assert "as slow" not in zig
    assert ("The smaller rate is slower along x" in zig) == (slow["lr"] < fast["lr"])
    # what was run is on the page: title, settings, the command to repeat it
    assert f"from x0 = {p['x0']:g}, {p['steps']} steps" in result.title and result.title in page
    if params:
        assert "--lrs 0.05,0.5,0.75" in page and "--curvature 10" in page


def test_gd_path_default_zigzag_numbers():
    from trainwell.labs.gd_path import captions

    rows = [{"problem": "f = (x² + K·y²)/2", "lr": lr, "x factor": 1 - lr, "y factor": 1 - 20 * lr,
             "|x| × per step": 1 - lr, "|x_T|/|x_0|": (1 - lr) ** 30} for lr in (0.03, 0.09)]
    zig = captions(rows, {"steps": 10, "x0": 10, "curvature": 20.0, "steps-2d": 30})["gd_zigzag"]
    assert "lr 0.03 does not bounce and shrinks x by ×0.97 per step" in zig
    assert "lr 0.09 bounces across the valley (y changes sign every step) and shrinks x by ×0.91 per step" in zig
    assert "×0.4 of its start with lr 0.03, ×0.059 with lr 0.09" in zig


# ---- init ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"depth": 12, "width": 200, "activations": ["tanh"],
                                          "inits": ["xavier", "normal1"], "gain": 5 / 3}])
def test_init_captions_follow_the_table(tmp_path, params):
    result, page = _run("init", tmp_path, **params)
    p = lab_params("init", params, True)
    depth = p["depth"]
    rows = {r["setup"]: r for r in result.records()}
    hist, grads = _caption(result, "init_histograms"), _caption(result, "init_grads")
    for setup, r in rows.items():
        assert r["std ratio"] == pytest.approx(r[f"std L{depth}"] / r["std L1"])
        grad = result.series[setup]["grad"]
        assert len(grad) == depth and r["grad max/min"] == pytest.approx(max(grad) / min(grad))
        claim = re.search(rf"{re.escape(setup)}: (.*?)(?:; |\. )", grads).group(1)
        if r["grad max/min"] <= 2:
            assert claim.startswith(f"within ×{r['grad max/min']:.2g}")
        else:      # a 7.5× rise is not "within a small factor"
            assert "within" not in claim and f"×{r['grad max/min']:.2g}" in claim
            assert ("towards the input" in claim) == (r["grad L1"] > r[f"grad L{depth}"])
        shape = re.search(rf"{re.escape(setup)}: (.*?)(?:; |\.$)", hist).group(1)
        if r[f"std L{depth}"] < 1e-3:
            assert "spike at 0" in shape
        elif r["activation"] == "tanh" and r[f"L{depth} saturated|zero"] > 0.5:
            assert f"{r[f'L{depth} saturated|zero']:.0%} saturated" in shape
        elif r["std ratio"] < 0.5:
            assert "narrows" in shape
        elif r["std ratio"] <= 2:
            assert "keeps its spread" in shape
    assert f"through {depth} layers of {p['width']}" in result.title and result.title in page
    big = [r for r in rows.values() if r["init"] == "normal1"]
    for r in big:       # the lecture's "gradients at zero" reconciled with the exploding weight gradients
        assert r["grad L1"] > 100 * r[f"grad L{depth}"]
        assert r["mean slope"] < 0.1
        assert f"here {r['mean slope']:.2g} on average at layer {depth}" in grads and "gradients at zero" in grads
    if params:
        assert "Xavier (gain 1.67)" in page and "--gain 1.66667" in page and len(rows) == 2


def test_init_default_set_ups_and_relu_xavier_factor(tmp_path):
    result, _ = _run("init", tmp_path)
    rows = {r["setup"]: r for r in result.records()}
    assert list(rows) == ["tanh, N(0, 0.01)", "tanh, N(0, 1)", "tanh, Xavier", "ReLU, Xavier", "ReLU, He"]
    std = _caption(result, "init_std")
    assert f"ReLU, Xavier ×{rows['ReLU, Xavier']['std × per layer']:.2g}" in std
    assert rows["ReLU, Xavier"]["std × per layer"] == pytest.approx(2 ** -0.5, rel=0.1)
    he, xa = rows["ReLU, He"]["grad geo-mean"], rows["ReLU, Xavier"]["grad geo-mean"]
    assert he > 5 * xa and f"×{he / xa:.2g} smaller than ReLU with He" in _caption(result, "init_grads")


# ---- optimizers ------------------------------------------------------------------------------------------

def test_optimizers_score_each_method_against_its_own_objective(tmp_path):
    from trainwell.labs.optimizers import SURFACES, objective_min, walk

    result, page = _run("optimizers", tmp_path, quick=False, steps=1500,
                        optimizers=["SGD", "momentum", "RMSProp", "AdamW"])
    rows = {(r["surface"], r["optimizer"]): r for r in result.records()}
    # RMSProp touches the quadratic's tolerance and bounces back out: touched, not settled
    rms = rows[("ill-conditioned quadratic", "RMSProp")]
    assert rms["first below tol"] is not None and rms["settled at step"] is None and rms["final gap"] > 1e-4
    assert f"RMSProp touched it at step {rms['first below tol']} but left again" in " ".join(result.notes)
    # AdamW is measured against f + λ/2‖p‖²: its minimum is off the star by the decay, found independently
    for s in SURFACES:
        (x, y), fmin = objective_min(s, "AdamW", 0.01)
        r = rows[(s.name, "AdamW")]
        assert r["objective"] == "f + 0.005·‖p‖²"
        grad = [float(v) for v in _num_grad(lambda a, b, s=s: s.f(a, b) + 0.005 * (a * a + b * b), x, y)]
        assert max(abs(g) for g in grad) < 1e-5                 # a stationary point of the decayed objective
        w = walk(s, "AdamW", 1500, wd=0.01)
        assert r["final gap"] == pytest.approx(float(s.f(*w.path[-1]) + 0.005 * (w.path[-1] ** 2).sum() - fmin))
    for name in ("Rosenbrock", "Beale"):        # off the origin, AdamW does converge to its own objective
        assert rows[(name, "AdamW")]["settled at step"] is not None
    settled = [r for r in result.records() if r["settled at step"] is not None]
    for r in settled:                           # settled means: below the tolerance from then to the end
        tol = next(s.tol for s in SURFACES if s.name == r["surface"])
        assert r["final gap"] < tol and r["first below tol"] <= r["settled at step"]


def _num_grad(f, x, y, h=1e-6):
    return ((f(x + h, y) - f(x - h, y)) / (2 * h), (f(x, y + h) - f(x, y - h)) / (2 * h))


def test_optimizers_lr_scale_changes_every_lr_and_the_title(tmp_path):
    base, _ = _run("optimizers", tmp_path / "a", optimizers=["SGD", "Adam"])
    scaled, page = _run("optimizers", tmp_path / "b", optimizers=["SGD", "Adam"], **{"lr-scale": 3.0})
    assert [r["lr"] for r in scaled.records()] == pytest.approx([3 * r["lr"] for r in base.records()])
    assert "every LR ×3" in scaled.title and "--lr-scale 3" in page
    assert len(scaled.rows) == 2 * 4


def test_lab_help_lists_the_lab_parameters(capsys):
    from trainwell.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["lab", "gd-path", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--lrs LRS" in out and "--x0 X0" in out and "--curvature CURVATURE" in out and "--dpi" in out


def test_set_sets_a_lab_parameter_and_format_svg(tmp_path):
    from trainwell.cli import main

    assert main(["lab", "gd-path", "--quick", "--set", "steps=4", "--format", "svg", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "4 steps" in page and 'src="data:image/svg+xml;base64,' in page
    assert (tmp_path / "gd_paths.svg").read_bytes().lstrip().startswith(b"<?xml")


# ---- regularization --------------------------------------------------------------------------------------

def test_regularization_baseline_stays_unregularized_when_set_changes_a_strength():
    from trainwell.labs.regularization import UNREGULARIZED, plan
    from trainwell.recipe import load_recipe

    p = lab_params("regularization", {"variants": ["L2 penalty", "dropout"]}, False)
    runs, strengths = plan(load_recipe(None), p, {"regularization.l2": 0.1, "train.epochs": 40})
    assert runs["none"] == UNREGULARIZED and runs["none"]["regularization.l2"] == 0.0
    assert runs["L2 penalty"]["regularization.l2"] == 0.1 and runs["dropout"]["regularization.l2"] == 0.0
    assert strengths == ["regularization.l2"]
    from trainwell.errors import TrainwellError

    with pytest.raises(TrainwellError, match="sets the strength of the variant 'L2 penalty', which --variants"):
        plan(load_recipe(None), lab_params("regularization", {"variants": ["dropout"]}, False),
             {"regularization.l2": 0.1})


def test_regularization_seeds_give_mean_and_std_and_captions_follow_them(tmp_path):
    import numpy as np

    options = LabOptions(quick=True, seeds=2, params={"variants": ["L2 penalty", "dropout"]},
                         overrides={"regularization.l2": 0.05, "train.epochs": 30})
    result, page = run_lab("regularization", options, out=tmp_path, quiet=True)
    page = page.read_text()
    rows = {r["variant"]: r for r in result.records()}
    assert list(rows) == ["none", "L2 penalty", "dropout"]
    assert rows["none"]["recipe change"] == "every regularizer off; --set train.epochs=30"
    assert rows["L2 penalty"]["recipe change"] == "regularization.l2=0.05"
    assert "every regularizer off; --set train.epochs=30" in page and "(2 seeds)" in result.title
    for name, r in rows.items():
        s = result.series["per_seed"][name]
        assert len(s["val_acc"]) == 2 and r["seeds"] == 2
        assert r["val acc"] == pytest.approx(np.mean(s["val_acc"]))
        assert r["val acc std"] == pytest.approx(np.std(s["val_acc"], ddof=1))
        assert r["gap"] == pytest.approx(np.mean(np.array(s["val_ce"]) - np.array(s["train_ce"])))
    base = rows["none"]
    caption = result.figure("regularization_gaps").caption
    better = [n for n, r in rows.items() if n != "none"
              and r["val acc"] - base["val acc"] > r["val acc std"] + base["val acc std"]]
    assert f"by more than both spreads together: {', '.join(better) or 'none'}" in caption
    assert "mean ± std over 2 seeds" in caption


def test_regularization_sweep(tmp_path):
    options = LabOptions(quick=True, params={"sweep": "dropout=0:0.6", "points": 3},
                         overrides={"train.epochs": 20})
    result, page = run_lab("regularization", options, out=tmp_path, quiet=True)
    rows = {r["variant"]: r for r in result.records()}
    assert list(rows) == ["none", "dropout 0", "dropout 0.3", "dropout 0.6"]
    assert rows["dropout 0.6"]["recipe change"] == "model.dropout=0.6"
    low = min((r for n, r in rows.items() if n != "none"), key=lambda r: r["val CE"])
    value = float(low["variant"].split()[-1])
    assert f"lowest at model.dropout = {value:g} ({low['val CE']:.3g}" in result.figure("regularization_sweep").caption
    assert "model.dropout from 0:0.6" in result.title


@pytest.mark.parametrize("sweep, expected", [("l2=1e-1:1e-4", "expected NAME=LO:HI"), ("bogus=0:1", "NAME one of"),
                                             ("l2=0:0.1", "log scale, LO must be > 0")])
def test_regularization_bad_sweep_is_one_line(sweep, expected, capsys, tmp_path):
    from trainwell.cli import main

    assert main(["lab", "regularization", "--sweep", sweep, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and not (tmp_path / "x").exists()


# ---- lr-curves -------------------------------------------------------------------------------------------

def test_lr_curve_verdicts_on_hand_made_curves():
    from trainwell.labs.learning_rate import verdict

    best = 0.1
    assert verdict([2.0, 1.0, 0.5, 0.2, 0.11], best, 2.3) == "good"
    assert verdict([2.2, 2.0, 1.8, 1.6, 1.4], best, 2.3) == "too slow"          # still falling at the end
    assert verdict([1.0, 0.5, 0.45, 0.45, 0.45, 0.45], best, 2.3) == "plateaus high"
    assert verdict([20.0, 5.0, 1.0, 0.5, 0.3], best, 2.3) == "unstable"          # jumped above the untrained loss
    assert verdict([2.0, 3.0, 9.0, 40.0, 80.0], best, 2.3) == "diverges"
    assert verdict([2.0, float("nan"), float("nan")], best, 2.3) == "diverges"


@pytest.mark.slow
def test_lr_curves_rates_come_from_the_range_test_and_captions_follow_the_table(tmp_path):
    from trainwell.labs.learning_rate import SETUP
    from trainwell.labs.lr_range import QUICK_STEPS, range_test
    from trainwell.recipe import load_recipe

    result, page = _run("lr-curves", tmp_path)
    rows = result.records()
    test = range_test(load_recipe(None, {**SETUP, "seed": 0, "train.epochs": 6}), steps=QUICK_STEPS)
    good = test.suggestions["valley"]
    assert [r["role"] for r in rows][:2] == ["valley ÷30", "valley"]
    assert rows[1]["lr"] == pytest.approx(good) and rows[0]["lr"] == pytest.approx(good / 30)
    if test.diverged_lr:
        assert rows[3]["lr"] == pytest.approx(test.diverged_lr) and rows[2]["lr"] == pytest.approx(test.diverged_lr / 3)
    caption = result.figure("lr_curves").caption
    finals = [r["final loss"] for r in rows if r["verdict"] != "diverges"]
    for r in rows:
        curve = result.series["curves"][f"{r['lr']:.6g}"]
        assert r["final loss"] == curve[-1] and r["max loss"] == max(curve)
        assert f"lr {r['lr']:.3g} {r['verdict']}" in caption
        if r["verdict"] == "good":
            assert r["final loss"] <= 1.25 * min(finals)
    assert rows[0]["verdict"] in ("too slow", "plateaus high")     # ÷30 of the suggestion is too low
    assert "4 learning rates, 6 epochs" in result.title and result.title in page


# ---- projector-ready -------------------------------------------------------------------------------------

def small_text(result, least=9.0):
    """The visible texts of the lab's figures drawn below `least` points."""
    import matplotlib.text

    found = []
    for f in result.figures:
        if isinstance(f.data, bytes):
            continue
        f.data.canvas.draw() if hasattr(f.data.canvas, "draw") else None
        for t in f.data.findobj(matplotlib.text.Text):
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < least:
                found.append((f.name, t.get_text(), t.get_fontsize()))
    return found


@pytest.mark.parametrize("name, params", [("gd-path", {}), ("init", {}), ("optimizers", {"steps": 20})])
def test_lab_figures_have_no_text_below_9_points_and_fit_a_1280px_page(tmp_path, name, params):
    result, page = _run(name, tmp_path, **params)
    assert small_text(result) == []
    for f in result.figures:
        width = int.from_bytes(f.png[16:20], "big")          # PNG width in pixels at 100 px per inch
        assert width <= 1240, (f.name, width)        # a 1280-px window less the page margins
        assert f'width="{width}"' in page                    # shown at its natural width
