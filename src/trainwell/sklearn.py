"""trainwell as scikit-learn estimators: `TrainwellClassifier` and `TrainwellRegressor`.

    from trainwell.sklearn import TrainwellClassifier
    clf = TrainwellClassifier("recipe.toml", optimizer__lr=3e-3, model__hidden=(64,))
    clf.fit(X, y).predict_proba(X_new)
    GridSearchCV(clf, {"optimizer__lr": [1e-3, 3e-3]}, cv=3).fit(X, y)

The constructor takes a recipe (a TOML path, a dict, a Recipe or None for the default one) and any
recipe key as a parameter, its dots written as double underscores (`optimizer.lr` ->
`optimizer__lr`, `seed` stays `seed`); they are ordinary estimator parameters for `get_params`,
`set_params`, `clone` and grid searches, and are validated, all at once, when `fit` runs.

`fit(X, y)` trains through `trainwell.fit` on the arrays: the estimator holds out
`validation_fraction` of the rows (stratified by class for the classifier unless `stratify=False`) for
early stopping and the best epoch, and nothing for a test split (scikit-learn scores on rows it keeps
itself). A run folder is written only when `out` names one. What the run found stays on the
estimator: `history_`, `best_epoch_`, `metrics_`, `findings_` (the doctor's), `recipe_` (resolved).

Pickling keeps the network and the fitted statistics as safetensors bytes (tensors only) next to the
estimator's plain attributes; unpickling rebuilds the network from the resolved recipe.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .calibration import TemperatureScaled
from .errors import TrainwellError

# Recipe keys the estimator sets itself from its arguments and the data it is given.
OWN_DATA_KEYS = {"source": "the rows passed to fit", "format": "the rows passed to fit",
                 "target": "the y passed to fit", "task": "the estimator (classifier or regressor)",
                 "split": "validation_fraction", "split_file": "validation_fraction",
                 "stratify": "stratify (TrainwellClassifier)", "train_on": "validation_fraction",
                 "features": "the columns passed to fit", "drop": "the columns passed to fit"}
EXPLICIT = ("recipe", "validation_fraction", "stratify", "out", "quiet")
BATCH = 4096


# scikit-learn's estimator checks these estimators fail, each with why (parametrize_with_checks(...,
# expected_failed_checks=expected_failed_checks), as scikit-learn's developer guide says since 1.6).
_NO_WEIGHTS = "sample_weight is refused with a clear error: trainwell's losses do not weight rows"
EXPECTED_FAILED_CHECKS = {
    "check_sample_weights_pandas_series": _NO_WEIGHTS,
    "check_sample_weights_not_an_array": _NO_WEIGHTS,
    "check_sample_weights_list": _NO_WEIGHTS,
    "check_sample_weights_shape": _NO_WEIGHTS,
    "check_sample_weights_not_overwritten": _NO_WEIGHTS,
    "check_all_zero_sample_weights_error": _NO_WEIGHTS + " (so all-zero weights get that error, not a zero-weight one)",
    "check_sample_weight_equivalence_on_dense_data": _NO_WEIGHTS,
}


def expected_failed_checks(estimator) -> dict[str, str]:
    """{check name: one-line reason} of the scikit-learn estimator checks `estimator` is known to fail."""
    return dict(EXPECTED_FAILED_CHECKS)


class EstimatorInputError(TrainwellError, ValueError):
    """A recipe key or argument of an estimator that cannot work (a ValueError, as scikit-learn expects)."""


def _dotted(name: str) -> str:
    return name.replace("__", ".")


class _TrainwellEstimator(BaseEstimator):
    """What both estimators share: recipe keys as parameters, fit through trainwell.fit, pickling."""

    _task: str = ""
    _fit_task: str = "auto"

    # -- parameters ----------------------------------------------------------------------------
    def _set(self, recipe, validation_fraction, out, quiet, params: dict[str, Any]) -> None:
        """__init__'s arguments stored as they are given (scikit-learn validates nothing in __init__)."""
        self.recipe, self.validation_fraction, self.out, self.quiet = recipe, validation_fraction, out, quiet
        for key, value in params.items():
            setattr(self, key, value)

    def _recipe_params(self) -> dict[str, Any]:
        """The recipe keys given as parameters: every public attribute that is neither an explicit
        argument nor a fitted one (those end with an underscore)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and not k.endswith("_") and k not in EXPLICIT}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {**super().get_params(deep=deep), **self._recipe_params()}

    def set_params(self, **params: Any) -> _TrainwellEstimator:
        for key, value in params.items():     # a recipe key is checked when fit resolves the recipe
            if key.startswith("_") or key.endswith("_"):
                raise ValueError(f"{key}: not a parameter of {type(self).__name__}; give a recipe key with "
                                 "double underscores for its dots (optimizer__lr) or one of " + ", ".join(
                                     k for k in EXPLICIT if hasattr(self, k)))
            setattr(self, key, value)
        return self

    def resolved_recipe(self):
        """The recipe `fit` trains with: the `recipe` argument, the recipe-key parameters, and what
        the estimator sets itself (data from Python, the validation split, the task)."""
        from .recipe import load_recipe

        params = self._recipe_params()
        for key in params:
            section, _, rest = _dotted(key).partition(".")
            if section == "data" and rest in OWN_DATA_KEYS:
                raise EstimatorInputError(f"{key}: set by {OWN_DATA_KEYS[rest]} in {type(self).__name__}; "
                                          "leave it out")
        vf = self.validation_fraction
        if not isinstance(vf, int | float) or isinstance(vf, bool) or not 0 <= vf < 1:
            raise EstimatorInputError(f"validation_fraction: got {vf!r}, expected a number in [0, 1) (the share "
                                      "of the rows held out for early stopping)")
        forced = {"data.split": [1.0 - float(vf), float(vf), 0.0], "data.task": self._fit_task,
                  "data.stratify": bool(getattr(self, "stratify", False)), "data.split_file": None,
                  "data.train_on": "train"}
        try:
            return load_recipe(self.recipe, {**{_dotted(k): v for k, v in params.items()}, **forced})
        except TrainwellError as exc:
            raise EstimatorInputError(str(exc)) from None

    # -- fit -----------------------------------------------------------------------------------
    def _check_X(self, X, reset: bool, y=None):
        import scipy.sparse as sp

        if sp.issparse(X) or (y is not None and sp.issparse(y)):
            raise TypeError(f"X: sparse input is not supported by {type(self).__name__} (a network trains on "
                            "dense rows); pass X.toarray() or reduce the columns first (e.g. TruncatedSVD)")
        allow_nan = self._nonfinite() == "impute"
        kw = {"dtype": [np.float32, np.float64], "ensure_all_finite": "allow-nan" if allow_nan else True}
        if y is None:
            return validate_data(self, X, reset=reset, **kw)
        if isinstance(y, str) and y == "required":
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        return validate_data(self, X, y, reset=reset, ensure_min_samples=2, y_numeric=self._task == "regression",
                             multi_output=self._task == "regression", **kw)

    def _nonfinite(self) -> str:
        """data.nonfinite as the parameters and the recipe say it (without validating the rest)."""
        if "data__nonfinite" in vars(self):
            return self.data__nonfinite
        r = self.recipe
        if isinstance(r, dict):
            return (r.get("data") or {}).get("nonfinite", "error")
        nonfinite = getattr(getattr(r, "data", None), "nonfinite", None)
        if nonfinite is None and r is not None and not isinstance(r, dict):
            try:
                from .recipe import read_toml

                nonfinite = (read_toml(r).get("data") or {}).get("nonfinite")
            except (TrainwellError, TypeError):
                nonfinite = None
        return nonfinite or "error"

    def _train(self, X: np.ndarray, y: np.ndarray, sample_weight) -> _TrainwellEstimator:
        if sample_weight is not None:
            raise EstimatorInputError(
                f"sample_weight: {type(self).__name__} does not weight rows (trainwell's losses average over "
                "the batch); leave it out, or balance classes with loss__class_weight=\"balanced\" / "
                "train__sampler=\"balanced\"")
        from .api import fit
        from .predict import Loaded
        from .prepare import data_schema

        recipe = _fit_batch(self.resolved_recipe(), y if self._task != "regression" else None, len(y))
        try:
            run = fit(recipe, out=self.out if self.out is not None else False, quiet=self.quiet,
                      data=(X.astype(np.float32, copy=False), y))
        except TrainwellError as exc:
            if isinstance(exc, ValueError):
                raise
            raise EstimatorInputError(str(exc)) from None
        prepared = run.extras["data"]
        schema = data_schema(prepared.dataset, run.extras["trainer"].setup.loss_kind)
        net, temperature = run.model, None
        if isinstance(net, TemperatureScaled):       # calibrate = "temperature": the network and its T
            net, temperature = net.net, net.temperature
        self.model_ = Loaded(run.path, run.recipe, net, prepared.normalizer, prepared.impute_values, schema,
                             temperature)
        self.temperature_ = temperature
        self._predictor = _float64(self.model_)
        self.recipe_ = run.recipe
        self.history_ = run.history
        self.metrics_ = run.metrics
        self.best_epoch_ = run.metrics.get("best_epoch")
        self.findings_ = run.extras.get("findings", [])
        self.run_dir_ = run.path
        self.n_iter_ = run.metrics.get("stopped_epoch") or len(run.history)
        return self

    @torch.inference_mode()
    def _outputs(self, X) -> torch.Tensor:
        """The network's outputs on rows X (imputed and normalized like the training rows), in float64 on
        the CPU: a row's prediction does not depend on the rows predicted with it (float32 matrix products
        differ in their last bits with the batch's size)."""
        check_is_fitted(self, "model_")
        X = self._check_X(X, reset=False)
        xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
        outs = [self._predictor(xt[i:i + BATCH]) for i in range(0, len(xt), BATCH)]
        return torch.cat(outs) if outs else torch.empty(0, dtype=torch.float64)

    # -- pickling: tensors as safetensors bytes -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else dict(self.__dict__)
        state = dict(state)
        state.pop("_predictor", None)
        if "model_" in state:
            state["model_"] = _pack(state["model_"])
            state["recipe_"] = state["recipe_"].to_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        if isinstance(state.get("model_"), dict):
            from .recipe import Recipe

            state["recipe_"] = Recipe.from_dict(state["recipe_"])
            state["model_"] = _unpack(state["model_"], state["recipe_"])
            state["_predictor"] = _float64(state["model_"])
        super().__setstate__(state) if hasattr(super(), "__setstate__") else self.__dict__.update(state)


def _float64(model):
    """A copy of a fitted model (predict.Loaded) computing in float64 on the CPU: network, normalizer
    statistics and imputed values."""
    twin = copy.deepcopy(model).cpu().double()
    twin.normalizer = copy.copy(model.normalizer)
    twin.normalizer.load_state_dict({k: v.detach().cpu().double() for k, v in model.normalizer.state_dict().items()})
    if model.impute_values is not None:
        twin.impute_values = model.impute_values.detach().cpu().double()
    return twin


def _fit_batch(recipe, labels: np.ndarray | None, rows: int):
    """The recipe with train.batch_size lowered to the training rows when there are fewer (a warning says
    so): an estimator is fitted on whatever rows a cross-validation fold gives it."""
    train_f = recipe.data.split[0]
    if labels is not None and recipe.data.stratify:       # the count data/split.py's stratified cut keeps
        n_train = sum(int(round(train_f * c)) for c in np.unique(labels, return_counts=True)[1])
    else:
        n_train = int(round(train_f * rows))
    if 0 < n_train < recipe.train.batch_size:
        warnings.warn(f"train.batch_size: {recipe.train.batch_size} is more than the {n_train} training rows; "
                      f"training with batches of {n_train}", UserWarning, stacklevel=4)
        return recipe.replace(**{"train.batch_size": n_train})
    return recipe


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def _pack(model) -> dict[str, Any]:
    """A fitted model (trainwell.predict.Loaded) as plain data: its network's weights, the normalizer's and
    imputer's statistics as safetensors bytes, the data schema as it is (JSON-like)."""
    from .ensemble import Ensemble

    members = list(model.net.members) if isinstance(model.net, Ensemble) else [model.net]
    stats = model.normalizer.state_dict()
    if model.impute_values is not None:
        stats = {**stats, "impute.values": model.impute_values}
    return {"weights": [_tensor_bytes(m.state_dict()) for m in members], "ensemble": isinstance(model.net, Ensemble),
            "statistics": _tensor_bytes(stats), "schema": model.schema, "temperature": model.temperature}


def _unpack(packed: dict[str, Any], recipe):
    from .data.normalize import make_normalizer
    from .ensemble import Ensemble, combine_rule
    from .predict import Loaded, _network

    schema = packed["schema"]
    models = [_network(recipe, schema, st_load(w)) for w in packed["weights"]]
    net = Ensemble(models, combine_rule(schema["loss"], schema["task"])) if packed["ensemble"] else models[0]
    stats = st_load(packed["statistics"])
    impute = stats.pop("impute.values", None)
    normalizer = make_normalizer(recipe.data.normalize, recipe.data.whiten_eps)
    normalizer.load_state_dict(stats)
    return Loaded(None, recipe, net, normalizer, impute, schema, packed.get("temperature"))


def _has_probabilities(est: TrainwellClassifier) -> bool:
    """predict_proba exists unless the network was trained with the hinge loss (scores, not probabilities)."""
    loss = est.model_.schema["loss"] if hasattr(est, "model_") else None
    return loss != "hinge"


class TrainwellClassifier(ClassifierMixin, _TrainwellEstimator):
    """A trainwell network as a scikit-learn classifier (binary or multiclass labels of any type).

    recipe: a TOML path, a dict, a Recipe or None (the default recipe); validation_fraction: the share
    of the rows held out for early stopping (0: none; then monitor a train_ column or switch stopping
    off); stratify: keep class proportions in that split; out: a run folder to write (None: none);
    quiet: no output while training; **params: recipe keys with double underscores for dots.
    """

    _task = "classification"

    def __init__(self, recipe=None, *, validation_fraction: float = 0.2, stratify: bool = True,
                 out=None, quiet: bool = True, **params: Any) -> None:
        self.stratify = stratify
        self._set(recipe, validation_fraction, out, quiet, params)

    def fit(self, X, y, sample_weight=None) -> TrainwellClassifier:
        X, y = self._check_X(X, reset=True, y="required" if y is None else y)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise EstimatorInputError(f"y: only one class ({self.classes_[0]!r}) in the targets; a classifier "
                                      "needs at least 2 classes")
        self._fit_task = "binary" if len(self.classes_) == 2 else "multiclass"
        return self._train(X, codes.astype(np.int64), sample_weight)

    def decision_function(self, X) -> np.ndarray:
        """The network's outputs: the logit of the second class (binary), else one column per class (logits;
        log-probabilities with loss nll; scores with loss hinge); divided by the fitted temperature with
        calibrate="temperature" (`temperature_`), so that predict_proba is their softmax / sigmoid."""
        out = self._outputs(X).numpy()
        return out[:, 0] if out.shape[1] == 1 else out

    @available_if(_has_probabilities)
    def predict_proba(self, X) -> np.ndarray:
        from .metrics import probabilities

        return probabilities(self._outputs(X), "classification", self.model_.schema["loss"]).numpy().astype(np.float64)

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        out = self._outputs(X)
        index = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
        return self.classes_[index.numpy()]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._nonfinite() == "impute"
        tags.classifier_tags.multi_label = False
        return tags


class TrainwellRegressor(RegressorMixin, _TrainwellEstimator):
    """A trainwell network as a scikit-learn regressor (one target column or several).

    recipe, validation_fraction, out, quiet, **params: as TrainwellClassifier (no stratify).
    """

    _task = "regression"
    _fit_task = "regression"

    def __init__(self, recipe=None, *, validation_fraction: float = 0.2, out=None, quiet: bool = True,
                 **params: Any) -> None:
        self._set(recipe, validation_fraction, out, quiet, params)

    def fit(self, X, y, sample_weight=None) -> TrainwellRegressor:
        X, y = self._check_X(X, reset=True, y="required" if y is None else y)
        self._y_columns = None if y.ndim == 1 else y.shape[1]
        return self._train(X, np.asarray(y, dtype=np.float32), sample_weight)

    def predict(self, X) -> np.ndarray:
        out = self._outputs(X).numpy().astype(np.float64)
        out = out.reshape(len(out), -1)
        return out[:, 0] if self._y_columns is None else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._nonfinite() == "impute"
        tags.target_tags.multi_output = True
        return tags


__all__ = ["EXPECTED_FAILED_CHECKS", "EstimatorInputError", "TrainwellClassifier", "TrainwellRegressor",
           "expected_failed_checks"]
