"""The report's layout: the recipe keys that do not apply to a run are folded away (and nothing is
lost), every figure's text is readable at the size the page shows it, and metric panels are scaled
to the settled epochs, not to epoch 1."""

import struct
import tomllib

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from trainwell.recipe import load_recipe
from trainwell.report import plots
from trainwell.report.recipe_view import split_recipe, unused_keys
from trainwell.watch.doctor import Evidence

PAGE_PX = 1100          # the report's column (body max-width); wider images are scaled down to it
MIN_PX = 9


def _recipe(**dotted):
    return load_recipe(None, dotted).to_dict()


def _key_lines(text):
    header, out = None, []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            header = s[1:-1]
        elif s:
            name = s.lstrip("# ").split("=", 1)[0].strip()
            out.append(f"{header}.{name}" if header else name)
    return out


def test_csv_classification_folds_synthetic_image_and_regression_keys():
    unused = unused_keys(_recipe(**{"data.source": "x.csv", "data.target": "y"}), "binary", image=False)
    for key in ("data.n_samples", "data.noise", "data.classes", "data.shape_kinds", "data.image_size",
                "data.augment.hflip", "data.augment.cutmix_alpha", "data.target_normalize", "model.negative_slope",
                "init.std", "init.mode", "loss.delta", "loss.margin", "watch.nan_retries", "search.trials"):
        assert key in unused, key      # init.mode: the default weights (pytorch) are not kaiming or lecun
    for key in ("data.target", "data.drop", "data.categorical", "data.stratify", "model.hidden", "init.weights",
                "loss.class_weight", "loss.label_smoothing", "train.sampler", "data.augment.mixup_alpha"):
        assert key not in unused, key


def test_cnn_on_shapes_keeps_image_and_synthetic_keys_folds_file_keys():
    unused = unused_keys(_recipe(**{"data.source": "shapes", "model.kind": "cnn"}), "multiclass", image=True)
    for key in ("data.n_samples", "data.shape_kinds", "data.channels", "data.augment.hflip", "model.kernel_size",
                "data.augment.crop_padding"):
        assert key not in unused, key
    for key in ("data.format", "data.target", "data.drop", "data.categorical", "data.classes", "data.features",
                "data.augment.crop_mode"):
        assert key in unused, key


def test_switched_on_features_show_their_keys():
    recipe = _recipe(**{"data.source": "diabetes", "model.activation": "leaky_relu", "init.weights": "normal",
                        "loss.kind": "huber", "watch.on_nan": "rollback", "optimizer.weight_decay": 0.01,
                        "stopping.enabled": False, "data.normalize": "zca_whiten"})
    unused = unused_keys(recipe, "regression", image=False)
    for key in ("model.negative_slope", "init.mean", "init.std", "loss.delta", "watch.nan_retries",
                "optimizer.decay_bias_and_norm", "data.target_normalize", "data.whiten_eps"):
        assert key not in unused, key
    for key in ("init.gain", "loss.label_smoothing", "loss.class_weight", "train.sampler", "data.stratify",
                "stopping.patience", "stopping.monitor", "data.format"):
        assert key in unused, key
    assert "stopping.enabled" not in unused


@pytest.mark.parametrize("dotted,task,image", [
    ({"data.source": "x.csv", "data.target": "y"}, "binary", False),
    ({"data.source": "shapes", "model.kind": "cnn"}, "multiclass", True),
    ({"data.source": "diabetes", "search.space": {"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}}}, "regression", False),
])
def test_split_recipe_loses_nothing_and_stays_toml(dotted, task, image):
    text = load_recipe(None, dotted).to_toml()
    shown, folded, count = split_recipe(text, task, image)
    assert sorted(_key_lines(shown) + _key_lines(folded)) == sorted(_key_lines(text))
    assert len(_key_lines(folded)) == count > 0
    assert set(_key_lines(folded)) == set(unused_keys(load_recipe(None, dotted).to_dict(), task, image)) & set(_key_lines(text))
    tomllib.loads(shown), tomllib.loads(folded)          # both halves still read as TOML


# ------------------------------------------------------------------------------------- figures
def _drawn(monkeypatch, draw, ev):
    figs = []

    def keep(fig):
        figs.append(fig)
        return real(fig)

    real = plots._png
    monkeypatch.setattr(plots, "_png", keep)
    png = draw(ev)
    return figs[0], png


def _png_width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]


def _smallest_text_px(fig, png) -> float:
    """The smallest text of the figure in page pixels: points at 100 dpi, scaled to the page column."""
    scale = min(1.0, PAGE_PX / _png_width(png))
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes) * 100 / 72 * scale


def _history(epochs, names, value):
    return [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e,
             **{f"{s}_{n}": value(e, s) for n in names for s in ("train", "val")}} for e in range(1, epochs + 1)]


def _probes(layers, epochs=3):
    hist = {"lo": -1.0, "hi": 3.0, "counts": [50] + [10, 8, 6, 4, 2] * 6}
    return {"activations": [{"name": f"act{i}"} for i in range(layers)],
            "epochs": [{"epoch": e, "activations": {f"act{i}": {"mean": 0.4, "std": 0.6, "hist": hist}
                                                    for i in range(layers)}} for e in range(1, epochs + 1)]}


@pytest.mark.parametrize("layers", [1, 3, 8])
def test_activation_grid_labels_readable_on_the_page(monkeypatch, layers):
    fig, png = _drawn(monkeypatch, plots.activation_histograms, Evidence({}, [], {}, _probes(layers), {}))
    assert _smallest_text_px(fig, png) >= MIN_PX


@pytest.mark.parametrize("names", [("accuracy",), ("accuracy", "f1", "balanced_accuracy"),
                                   ("accuracy", "f1", "balanced_accuracy", "precision_pos", "recall_pos")])
def test_curves_readable_on_the_page(monkeypatch, names):
    ev = Evidence({}, _history(12, names, lambda e, s: 1 - 0.5 / e), {"best_epoch": 9}, {}, {})
    fig, png = _drawn(monkeypatch, plots.curves, ev)
    assert _smallest_text_px(fig, png) >= MIN_PX
    assert len([a for a in fig.axes if a.get_title()]) == len(names) + 1


def test_accuracy_panel_zooms_on_the_settled_epochs(monkeypatch):
    # Epoch 1 at 0.40, then 0.97 .. 0.995: the axis must show the differences near 1.0.
    acc = {1: 0.40, 2: 0.97, 3: 0.975, 4: 0.98, 5: 0.985, 6: 0.99, 7: 0.99, 8: 0.995}
    ev = Evidence({}, _history(8, ("accuracy",), lambda e, s: acc[e] - (0.005 if s == "val" else 0)), {}, {}, {})
    fig, _ = _drawn(monkeypatch, plots.curves, ev)
    ax = next(a for a in fig.axes if a.get_title() == "accuracy")
    lo, hi = ax.get_ylim()
    assert 0.95 < lo < 0.965 and 0.995 < hi <= 1.0 + 1e-9
    assert "epoch 1 off the axis" in ax.get_xlabel() and "lowest 0.395" in ax.get_xlabel()


def test_steady_curve_keeps_its_whole_range(monkeypatch):
    ev = Evidence({}, _history(10, ("accuracy",), lambda e, s: 0.5 + 0.04 * e), {}, {}, {})
    fig, _ = _drawn(monkeypatch, plots.curves, ev)
    ax = next(a for a in fig.axes if a.get_title() == "accuracy")
    lo, hi = ax.get_ylim()
    assert lo <= 0.54 and hi >= 0.9 and ax.get_xlabel() == "epoch"


# ------------------------------------------------------------------------------- figure margins
def _weights(epochs, layers, scale):
    return {"epochs": [{"epoch": e, "weights": {f"fc{i}": {"grad_norm": scale * (1 + i) / e, "update_ratio": 1e-3 * (1 + i) / e}
                                                for i in range(layers)}} for e in range(1, epochs + 1)]}


def _bins(n=10):
    return [{"low": i / n, "high": (i + 1) / n, "rows": 5 * i, "confidence": (i + 0.5) / n, "accuracy": (i + 0.3) / n}
            for i in range(n)]


LAID_OUT = {
    "curves, two rows, epoch 1 off the axes": (plots.curves, Evidence(
        {}, _history(12, ("accuracy", "f1", "balanced_accuracy", "precision_pos", "recall_pos"),
                     lambda e, s: 1 - 0.5 / e), {"best_epoch": 9, "stopped_epoch": 12}, {}, {})),
    "curves, large values with an offset": (plots.curves, Evidence(
        {}, [{"epoch": e, "train_loss": 0.5 / e, "val_loss": 0.6 / e, "train_mse": 3.1e8 + 1e4 * e,
              "val_mse": 3.2e8 - 1e4 * e, "train_r2": -1234.5 / e, "val_r2": -2345.6 / e} for e in range(1, 9)],
        {"target_normalize": "standard"}, {}, {})),
    "learning rate in 1e-6": (plots.lr_and_grad, Evidence(
        {}, [{"epoch": e, "lr": 1e-6 * (1 + 0.001 * e), "grad_norm": 1234.5 + e} for e in range(1, 30)], {}, {}, {})),
    "per-layer norms on log axes": (plots.layer_grad_norms, Evidence({}, [], {}, _weights(20, 4, 3e4), {})),
    "eight layers of histograms": (plots.activation_histograms, Evidence({}, [], {}, _probes(8), {})),
    "confusion, three long class names": (plots.confusion, Evidence(
        {}, [], {}, {}, {"confusion": {"split": "test", "matrix": [[31, 0, 2], [1, 13, 0], [0, 0, 25]]},
                         "data": {"classes": ["Adelie penguin", "Chinstrap penguin", "Gentoo penguin"]}})),
    "confusion, twelve classes": (plots.confusion, Evidence(
        {}, [], {}, {}, {"confusion": {"split": "val", "matrix": [[10 * (i == j) + j for j in range(12)] for i in range(12)]}})),
    "reliability after temperature scaling": (plots.reliability, Evidence(
        {}, [], {"calibration": {"split": "test", "n_bins": 10, "ece": 0.01, "bins": _bins()},
                 "temperature": {"temperature": 0.409, "reliability_before": {"ece": 0.04, "bins": _bins()}}}, {}, {})),
}


@pytest.mark.parametrize("case", list(LAID_OUT))
def test_every_figure_keeps_its_text_inside_and_apart(monkeypatch, case):
    """The fitted margins (figures.fit_margins): as drawn, each axes' text (ticks, labels, title,
    offset) lies inside the figure and clear of every other axes' text."""
    draw, ev = LAID_OUT[case]
    fig, png = _drawn(monkeypatch, draw, ev)
    renderer = FigureCanvasAgg(fig).get_renderer()
    page = fig.bbox
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
    for box in boxes:
        assert page.x0 - 0.5 <= box.x0 and box.x1 <= page.x1 + 0.5, (case, box, page)
        assert page.y0 - 0.5 <= box.y0 and box.y1 <= page.y1 + 0.5, (case, box, page)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap_x, overlap_y = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_x <= 0.5 or overlap_y <= 0.5, (case, a, b)
    assert _smallest_text_px(fig, png) >= MIN_PX or draw is plots.confusion
