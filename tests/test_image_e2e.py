"""End to end on images: the CLI trains a CNN on `shapes` with augmentation, writes a preview,
predicts, and a run resumed mid-way (augmentation generator included) equals an uninterrupted one."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import trainwell as tw
from trainwell.build import build
from trainwell.cli import main
from trainwell.loop import Trainer
from trainwell.predict import predict

TINY = ["--set", "data.n_samples=120", "--set", "data.image_size=8", "--set", "model.channels=[4, 8]",
        "--set", "train.epochs=2", "--set", "data.augment.crop_padding=1", "--set", "data.augment.hflip=0.5",
        "--set", "data.augment.mixup_alpha=0.2"]
TINY_KW = {"data.source": "shapes", "model.kind": "cnn", "data.n_samples": 120, "data.image_size": 8,
           "model.channels": [4, 8], "data.augment.crop_padding": 1, "data.augment.hflip": 0.5,
           "data.augment.mixup_alpha": 0.2, "data.augment.cutmix_alpha": 1.0, "model.dropout": 0.0,
           "schedule.kind": "constant", "stopping.enabled": False, "stopping.restore_best": False}


def test_cli_fit_shapes_cnn_then_predict(tmp_path):
    out = tmp_path / "run"
    code = main(["fit", "--set", 'data.source="shapes"', "--set", 'model.kind="cnn"', *TINY, "--out", str(out),
                 "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"loss", "accuracy", "f1", "balanced_accuracy", "nll", "ece"}   # multiclass
    assert json.loads((out / "data.json").read_text())["input_shape"] == [3, 8, 8]
    assert "train_accuracy" in (out / "history.csv").read_text()   # hard labels, even with mixup
    x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "imgs.npy", x)
    frame = predict(out, tmp_path / "imgs.npy")
    assert len(frame) == 4 and set(frame["prediction"]) <= {"circle", "cross", "ring", "square", "triangle"}


def test_data_preview_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--set", 'data.source="shapes"', *TINY[:4], "--set",
                 "data.augment.cutmix_alpha=1.0", "--out", str(out), "--count", "12"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 300
    assert main(["data", "preview", "--out", str(tmp_path / "x.png")]) == 2     # digits rows are not images
    assert "data preview: needs images (N, C, H, W), 'digits' has rows of shape (64,)" in capsys.readouterr().err


def test_image_augmentation_on_tabular_data_is_a_recipe_error(capsys):
    assert main(["fit", "--set", "data.augment.hflip=0.5", "--quiet", "--out", "/nonexistent/never"]) == 2
    assert ("data.augment.hflip: needs images (N, C, H, W), the data has rows of shape (64,); set it to 0"
            in capsys.readouterr().err)


def _trainer(run, epochs: int, model=None) -> Trainer:
    """A fresh Trainer on the same data as `run`, as a resume would build it."""
    old = run.extras["trainer"]
    recipe = run.recipe.replace(**{"train.epochs": epochs})
    net = model if model is not None else copy.deepcopy(run.model)
    return Trainer(build(recipe, run.extras["data"], old.setup.device, model=net))


def test_resume_mid_run_equals_uninterrupted():
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    full = tw.fit(out=False, quiet=True, **TINY_KW, **{"train.epochs": 3})
    torch.manual_seed(0)
    first = tw.fit(out=False, quiet=True, **TINY_KW, **{"train.epochs": 1})
    tensors, meta = first.extras["trainer"].state_dict()
    meta = {**meta, "stop_reason": None}            # it finished its one epoch; continue it to three
    resumed = _trainer(first, 3, model=copy.deepcopy(first.model))   # builds its augmenter from the recipe
    for p in resumed.model.parameters():           # make sure the weights come from the state dict
        torch.nn.init.zeros_(p)
    resumed.load_state_dict(tensors, meta)
    resumed.fit()
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    assert [r["train_loss"] for r in resumed.state.history] == pytest.approx(
        [r["train_loss"] for r in full.history])
