"""`trainwell predict RUN_DIR DATA`: the run's model on new rows: always the model `fit` returned and
scored, as its finisher recorded in metrics.json ("weights"): the ensemble of its members or
snapshots, its averaged weights (SWA/EMA), else the best epoch's weights (the last epoch's with
`stopping.restore_best = false`).

New rows are encoded exactly like the training rows (data.json: feature columns, one-hot
levels, input shape), then imputed and normalized with the statistics saved in the checkpoint
(fitted on the training split), then passed through the best weights. Values of categories unseen
in training and imputed values are counted per column and said in one warning line each. Classification gives the
predicted label and one probability column per class; regression gives the prediction.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .calibration import scale_outputs
from .checkpoint import load_checkpoint, unprefixed
from .custom import import_path, refuse
from .data.checks import emit, impute
from .data.formats import SUFFIXES, encode_features, unseen_categories
from .data.normalize import make_normalizer
from .data.preparation import predict_warnings
from .data.target import attach, scale_from_schema
from .ensemble import Ensemble, combine_rule
from .errors import DataError, RunDirError
from .losses import LogSoftmaxHead, output_size
from .metrics import probabilities
from .models import build_model, embedding_columns
from .recipe import Recipe, load_recipe
from .rundir import CHECKPOINTS, DATA_SCHEMA, METRICS, RECIPE


def _legacy_weights(run_dir: Path, restore_best: bool) -> dict[str, Any] | None:
    """For a folder without the "weights" entry of metrics.json (an older version, or a run stopped
    before its end): the weights it would have returned, found by file name."""
    folder = run_dir / CHECKPOINTS
    for kind in ("member", "snapshot"):
        found = sorted(folder.glob(f"{kind}-*.safetensors"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if found:
            return {"files": [f"{CHECKPOINTS}/{p.name}" for p in found], "tensors": "model", "ensemble": True}
    best = [("best.safetensors", "model"), ("last.safetensors", "best")]
    last = [("last.safetensors", "model")]
    for name, prefix in [("averaged.safetensors", "model"), *(best + last if restore_best else last + best)]:
        if (folder / name).is_file() and unprefixed(prefix, load_checkpoint(folder / name)[0]):
            return {"files": [f"{CHECKPOINTS}/{name}"], "tensors": prefix, "ensemble": False}
    return None


def scored_weights(run_dir: Path, restore_best: bool) -> dict[str, Any]:
    """Where the model the run returned and scored is: metrics.json's "weights" (the finisher's
    answer, finish.py), else found by file name."""
    metrics = run_dir / METRICS
    pointer = json.loads(metrics.read_text()).get("weights") if metrics.is_file() else None
    pointer = pointer or _legacy_weights(run_dir, restore_best)
    if pointer is None:
        raise RunDirError(f"{run_dir}: no checkpoint in {CHECKPOINTS}/; predict needs a finished run")
    return pointer


def load_run(run_dir: str | Path, model: torch.nn.Module | None = None
             ) -> tuple[Recipe, torch.nn.Module, Any, torch.Tensor | None, dict[str, Any]]:
    """(recipe, model in eval mode, fitted normalizer, impute values or None, data schema): the model
    the run returned (its ensemble, averaged weights or best/last epoch's weights, see scored_weights).
    `model`: a fresh instance of the module a custom run trained (model.kind = "custom"), which the
    recipe cannot rebuild."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run folder not found; give the folder `trainwell fit` wrote (--out)")
    if not (run_dir / DATA_SCHEMA).is_file():
        raise RunDirError(f"{run_dir}: no {DATA_SCHEMA}; not a trainwell run folder (or made by an older "
                          "version)")
    schema = json.loads((run_dir / DATA_SCHEMA).read_text())
    recipe = load_recipe(run_dir / RECIPE)
    if recipe.model.kind == "custom" and model is None:
        refuse(recipe.model)
    if model is not None and recipe.model.kind != "custom":      # (its nll head, target scale: the recipe's)
        raise DataError(f"model: {run_dir} trained the recipe's network (model.kind = {recipe.model.kind!r}), "
                        "which tw.load rebuilds itself; leave model= out (it is for a run of your own module, "
                        "model.kind = \"custom\")")
    pointer = scored_weights(run_dir, recipe.stopping.restore_best)
    loaded = [load_checkpoint(run_dir / name)[0] for name in pointer["files"]]
    models = [_network(recipe, schema, unprefixed(pointer["tensors"], t),
                       copy.deepcopy(model) if pointer["ensemble"] else model) for t in loaded]
    net = Ensemble(models, combine_rule(schema["loss"], schema["task"])) if pointer["ensemble"] else models[0]
    net.eval()
    normalizer = make_normalizer(recipe.data.normalize, recipe.data.whiten_eps)
    normalizer.load_state_dict(unprefixed("normalizer", loaded[0]))
    return recipe, net, normalizer, loaded[0].get("impute.values"), schema


class Loaded(torch.nn.Module):
    """A finished run's model with its saved preprocessing (`tw.load`): called on raw feature rows (as
    `predict` reads them from a file) it imputes and normalizes them like the training rows, then applies
    the trained network. `tw.predict(loaded, rows)` gives the labelled table."""

    def __init__(self, run_dir: Path, recipe: Recipe, net: torch.nn.Module, normalizer: Any,
                 impute_values: torch.Tensor | None, schema: dict[str, Any], temperature: float | None = None) -> None:
        super().__init__()
        self.run_dir, self.recipe, self.net, self.normalizer = run_dir, recipe, net, normalizer
        self.impute_values, self.schema = impute_values, schema
        self.temperature = temperature      # calibrate = "temperature": the outputs are divided by it
        self.eval()

    @property
    def classes(self) -> list[str]:
        return list(self.schema["classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impute_values is not None:
            x = impute(x, self.impute_values)
        out = self.net(self.normalizer.transform(x))
        return out if self.temperature is None else scale_outputs(out, self.temperature, self.schema["loss"])

    def extra_repr(self) -> str:
        return f"run={str(self.run_dir)!r}, task={self.schema['task']}"


def load(run_dir: str | Path, model: torch.nn.Module | None = None) -> Loaded:
    """The trained model of a run folder with its saved preprocessing, in eval mode, ready for `tw.predict`.

    `model`: a fresh instance of your own module when the run trained one (model.kind = "custom"); its
    trained weights are loaded into it. Without it, the recipe's network is rebuilt."""
    return Loaded(Path(run_dir), *load_run(run_dir, model), temperature=stored_temperature(Path(run_dir)))


def stored_temperature(run_dir: Path) -> float | None:
    """The temperature a run fitted (calibrate = "temperature", metrics.json), else None."""
    metrics = run_dir / METRICS
    section = json.loads(metrics.read_text()).get("temperature") if metrics.is_file() else None
    return float(section["temperature"]) if section else None


def _network(recipe: Recipe, schema: dict[str, Any], weights: dict[str, torch.Tensor],
             custom: torch.nn.Module | None = None) -> torch.nn.Module:
    """The network the weights belong to: the recipe's, rebuilt, or the user's own module (`custom`)."""
    if custom is None:
        embedded = (schema.get("preparation") or {}).get("embedded", {})
        model = build_model(recipe.model, tuple(schema["input_shape"]),
                            output_size(schema["loss"], schema["task"], schema["n_outputs"]),
                            embedding_columns(tuple(schema["feature_names"]), embedded))
        if schema["loss"] == "nll":
            model.add_module("log_softmax", LogSoftmaxHead())
    else:
        model = custom
    if schema.get("target_scale"):      # regression: outputs mapped back to the target's units
        model = attach(model, scale_from_schema(schema["target_scale"]), custom=custom is not None)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        if custom is None:
            raise
        raise DataError(f"model: the module given ({import_path(custom)}) does not fit the run's weights "
                        f"({str(exc).splitlines()[0]}); pass a fresh instance of the class the run trained"
                        + (f" ({recipe.model.module})" if recipe.model.kind == "custom" else "")) from None
    return model


def read_rows(path: str | Path, schema: dict[str, Any], target: str | None,
              unseen: dict[str, dict] | None = None) -> np.ndarray:
    """Features of a CSV/TSV/Parquet/NPY/NPZ file, shaped like the training rows. `unseen` (a dict)
    receives a table's values of categories unseen in training and missing ones, per string column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    fmt = SUFFIXES.get(path.suffix.lower())
    shape = tuple(schema["input_shape"])
    if fmt in ("csv", "tsv", "parquet"):
        from .data.formats import _read_frame

        frame = _read_frame(path, fmt)
        names = tuple(schema["feature_names"])
        if not names:   # trained on arrays: every column but the target is a feature
            extra = frame.shape[1] - math.prod(shape)
            names = tuple(c for c in frame.columns if c != (target or frame.columns[-1]) or extra <= 0)
        embedded = (schema.get("preparation") or {}).get("embedded", {})
        x = encode_features(frame, names, path, embedded)
        if unseen is not None:
            unseen.update(unseen_categories(frame, names, embedded))
    elif fmt == "npy":
        x = np.load(path, allow_pickle=False)
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise DataError(f"{path}: an NPZ file to predict must hold an array 'x'; found {list(arrays)}")
            x = arrays["x"]
    else:
        raise DataError(f"{path}: predict reads .csv/.tsv/.parquet/.npy/.npz files")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1 or math.prod(x.shape[1:]) != math.prod(shape):
        raise DataError(f"{path}: rows of shape {tuple(x.shape[1:])}, the model was trained on rows of shape "
                        f"{shape}")
    return x.reshape(len(x), *shape)


@torch.inference_mode()
def predict(run: str | Path | Loaded, data: str | Path | np.ndarray | torch.Tensor):
    """A pandas DataFrame: `prediction` and, for classification, `prob_<class>` per class.

    `run`: a run folder, or what `tw.load` returned (a custom module's run must be loaded that way);
    `data`: a file of rows, or an array/tensor of feature rows encoded like the training ones."""
    import pandas as pd

    loaded = run if isinstance(run, Loaded) else load(run)
    schema, imputing = loaded.schema, loaded.impute_values is not None
    if torch.is_tensor(data):
        data = data.detach().cpu().numpy()
    unseen: dict[str, dict] = {}
    x = data if isinstance(data, np.ndarray) else read_rows(data, schema, loaded.recipe.data.target, unseen)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    where = "predict" if isinstance(data, np.ndarray) else str(data)
    nonfinite = (~torch.isfinite(xt.reshape(len(xt), -1))).sum(0).numpy()
    emit(predict_warnings(where, unseen, nonfinite, tuple(schema["feature_names"]), imputing))
    if not imputing and nonfinite.any():
        raise DataError(f"{where}: the rows hold NaN or infinite features and the run was trained with "
                        "data.nonfinite = \"error\"; clean them")
    out = torch.cat([loaded(xt[i:i + 2048]) for i in range(0, len(xt), 2048)])   # imputed, normalized, the model
    if schema["task"] == "regression":
        values = out.reshape(len(out), -1).numpy()
        cols = ["prediction"] if values.shape[1] == 1 else [f"prediction_{k}" for k in range(values.shape[1])]
        return pd.DataFrame(values, columns=cols)
    classes = schema["classes"]
    probs = out if schema["loss"] == "hinge" else probabilities(out, "classification", schema["loss"])
    probs = probs.numpy()
    frame = pd.DataFrame({"prediction": np.asarray(classes, dtype=object)[probs.argmax(1)]})
    prefix = "score" if schema["loss"] == "hinge" else "prob"
    for k, name in enumerate(classes):
        frame[f"{prefix}_{name}"] = probs[:, k]
    return frame


