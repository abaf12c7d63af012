"""The recipe: one validated, frozen description of a run.

Each section is a pydantic model that declares every key once (type, range, choices, default,
description). `load_recipe` merges a TOML file with `--set` overrides and validates everything
in one pass; every problem is reported at once as `field: got X, expected Y` lines. The
resolved recipe (all defaults filled in) is what a run folder stores, and loading it again
repeats the run.
"""

from __future__ import annotations

import math
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import RecipeDeprecation, RecipeError
from .recipe_errors import KNOWN_DIRECTIONS, drop_unknown, format_errors, set_dotted, unknown_key_problems
from .recipe_errors import field_keys as _keys
from .search.space import SearchSection, flatten_space, space_problems

ACTIVATIONS = ("relu", "leaky_relu", "elu", "selu", "gelu", "silu", "tanh", "sigmoid", "identity")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _field(default: Any, doc: str, **kw: Any) -> Any:
    return Field(default, description=doc, **kw)


# ---------------------------------------------------------------------------------------- data
# Values a synthetic source may generate (rows x values per row): a typo such as n_samples = 3e9
# is refused up front instead of exhausting the memory.
MAX_SYNTHETIC_VALUES = 10**8
SHAPE_KINDS = ("circle", "square", "triangle", "cross", "ring", "diamond")
FILE_FORMATS = ("auto", "csv", "tsv", "parquet", "npy", "npz", "idx", "cifar10", "cifar100", "image_folder")


class AugmentSection(Section):
    """Training-split augmentation, applied batch by batch (seeded). 0 switches a step off."""

    crop_padding: int = _field(0, "Random crop: pad each image by this many pixels on every side, then cut "
                               "a window of the original size at a random offset (images only).", ge=0)
    crop_mode: Literal["zeros", "reflect"] = _field("zeros", "Padding of the random crop: zeros or a "
                                                    "reflection of the border pixels.")
    hflip: float = _field(0.0, "Probability of flipping an image left-right (images only).", ge=0, le=1)
    vflip: float = _field(0.0, "Probability of flipping an image upside down (images only).", ge=0, le=1)
    noise_std: float = _field(0.0, "Standard deviation of gaussian noise added to the (normalized) inputs.",
                              ge=0)
    cutout_size: int = _field(0, "Cutout: side in pixels of a square set to 0 at a random place in each image "
                              "(images only).", ge=0)
    mixup_alpha: float = _field(0.0, "Mixup: rows mixed with a shuffled copy of the batch, weight "
                                "lambda ~ Beta(alpha, alpha); targets become the same mix of one-hot labels.",
                                ge=0)
    cutmix_alpha: float = _field(0.0, "CutMix: a box of a shuffled copy of the batch pasted in, its area "
                                 "1 - lambda with lambda ~ Beta(alpha, alpha); targets mixed by area (images "
                                 "only). With mixup also on, each batch uses one of the two at random.", ge=0)
    mix_prob: float = _field(1.0, "Probability that a batch is mixed at all (mixup/cutmix).", ge=0, le=1)


class DataSection(Section):
    source: str = _field("digits", "Bundled set (digits, iris, wine, breast_cancer, diabetes), synthetic "
                         "set (spirals, moons, circles, teacher, polynomial, shapes) or a local file or folder: "
                         ".csv/.tsv/.parquet (a target column), .npy, .npz (arrays x and y), MNIST IDX "
                         "(raw or .gz images file), CIFAR-10/100 binary (.bin), or a folder of images with "
                         "one sub-folder per class.")
    format: Literal[FILE_FORMATS] = _field(  # type: ignore[valid-type]
        "auto", "File format of a path source; auto guesses from the name (and a .bin file's record size).")
    target: str | None = _field(None, "Target column of a CSV/Parquet file, array name of an NPZ file "
                                "(default: the last column / array `y`), labels file of an IDX or NPY source "
                                "(default: the matching labels-idx1 file / the last column), or "
                                "coarse/fine for CIFAR-100 (default fine).")
    drop: tuple[str, ...] = _field((), "Columns of a CSV/Parquet file to leave out (identifiers, leaks).")
    task: Literal["auto", "binary", "multiclass", "regression"] = _field(
        "auto", "Learning task; auto infers it from the targets (integers with few values: classification).")
    split: tuple[float, float, float] = _field((0.6, 0.2, 0.2), "Train, validation, test fractions (sum to 1).")
    split_file: str | None = _field(
        None, "Reuse the train/validation/test rows of another run: its folder or its splits.npz (every run "
        "folder holds one: row indices in the source's row order, with the row count and the sha256 of the "
        "source file (and of its labels file, when the targets are read from one), or of the loaded data when "
        "the source is not a file, so recipes that keep or encode a file's columns differently share its splits). Refused for other data; data.split and "
        "data.stratify are then not used.")
    stratify: bool = _field(True, "Keep class proportions equal across splits (classification only).")
    normalize: Literal["none", "minmax", "standard", "per_channel", "pca_whiten", "zca_whiten"] = _field(
        "standard", "Feature normalization, fitted on the training split only: per_channel standardizes each "
        "image channel; pca_whiten/zca_whiten decorrelate the features (covariance eigenvectors) and scale "
        "them to unit variance (ZCA rotates back, staying closest to the input).")
    target_normalize: Literal["auto", "standard", "minmax", "none"] = _field(
        "auto", "Scaling of regression targets, fitted on the training split only (each output column on its "
        "own): standard ((y - mean) / std), minmax (into [0, 1]) or none; auto = standard for regression. The "
        "network learns the scaled targets and its output layer maps them back, so predictions and metrics are "
        "in the target's own units; the loss columns of the history (train_loss, val_loss) are in the scaled "
        "space.")
    whiten_eps: float = _field(1e-5, "Epsilon added to the covariance eigenvalues before dividing by their "
                               "square root (pca_whiten, zca_whiten).", gt=0)
    categorical: Literal["auto", "onehot", "error"] = _field(
        "auto", "String feature columns of a CSV/Parquet file. auto: one-hot up to data.max_categories levels, "
        "above that a learned entity embedding (Guo & Berkhahn 2016): the column holds each row's level code "
        "(0 = missing or unseen) and the network's first layer looks it up in an nn.Embedding of width "
        "min(50, round(1.6 * (levels + 1) ** 0.56)), concatenated with the other features (mlp only); a column "
        "with a distinct string in every row is an identifier and stops the run. onehot: one-hot encode every "
        "string column (above data.max_categories levels: stop). error: stop at any string column.")
    max_categories: int = _field(50, "Most levels a string column is one-hot encoded with; above it the column "
                                 "gets an entity embedding (data.categorical = auto) or stops the run (onehot).",
                                 ge=2)
    nonfinite: Literal["error", "impute"] = _field(
        "error", "NaN/inf features: stop with an error, or replace them by the training split's column mean.")
    n_samples: int = _field(1000, "Rows generated by a synthetic source.", ge=10)
    noise: float = _field(0.1, "Noise level of a synthetic source (shapes: pixel noise std).", ge=0)
    classes: int = _field(2, "Number of classes (arms) of the `spirals` source.", ge=2)
    features: Annotated[int, Field(ge=1)] | tuple[str, ...] = _field(
        10, "A number: the input features of the `teacher` and `polynomial` sources. A list of names: the "
        "feature columns of a CSV/Parquet file to use, in this order (default: every column but the target and "
        "data.drop).")
    image_size: int | None = _field(None, "Image side in pixels: of `shapes` (default 16) and of image-folder "
                                    "images, resized (default: their own size, the same for all).", ge=4)
    channels: Literal[1, 3] = _field(3, "Colour channels of `shapes` and image-folder images: 3 (RGB) or 1 "
                                     "(grey).")
    shape_kinds: tuple[Literal[SHAPE_KINDS], ...] = _field(  # type: ignore[valid-type]
        SHAPE_KINDS[:5], f"Classes drawn by the `shapes` source (any of {', '.join(SHAPE_KINDS)}).",
        min_length=2)
    train_on: Literal["train", "train+val"] = _field(
        "train", "Rows the model trains on: the training split, or the training and validation splits merged "
        "(the protocol's final retrain, after the hyperparameters are chosen; nothing is left to validate on). "
        "The test rows are the same either way.")
    augment: AugmentSection = AugmentSection()

    @model_validator(mode="after")
    def _check_split(self) -> DataSection:
        train, val, test = self.split
        if train <= 0 or val < 0 or test < 0:
            raise ValueError(f"data.split: got {list(self.split)}, the training fraction must be > 0 "
                             "and the others >= 0")
        if not math.isclose(train + val + test, 1.0, abs_tol=1e-6):
            raise ValueError(f"data.split: got {list(self.split)} (sum {train + val + test:g}), "
                             "fractions must sum to 1")
        if isinstance(self.features, tuple):
            if self.drop:
                raise ValueError("data.drop: give data.features (the columns to use) or data.drop (the columns to "
                                 "leave out), not both")
            if self.source in ("teacher", "polynomial"):
                raise ValueError(f"data.features: {self.source!r} takes a number of features, got column names "
                                 f"{list(self.features)}")
        if len(set(self.shape_kinds)) != len(self.shape_kinds):
            raise ValueError(f"data.shape_kinds: got {list(self.shape_kinds)}, each kind at most once")
        return self

    @model_validator(mode="after")
    def _check_synthetic_size(self) -> DataSection:
        # Values per generated row (shapes: 16-pixel images unless data.image_size says otherwise).
        width = self.features if isinstance(self.features, int) else 0
        per_row = {"spirals": 2, "moons": 2, "circles": 2, "teacher": width, "polynomial": width,
                   "shapes": self.channels * (self.image_size or 16) ** 2}.get(self.source)
        if per_row is not None and self.n_samples * per_row > MAX_SYNTHETIC_VALUES:
            raise ValueError(f"data.n_samples: got {self.n_samples} rows of {per_row} values from {self.source!r}, "
                             f"{self.n_samples * per_row:.3g} in all; a synthetic source makes at most "
                             f"{MAX_SYNTHETIC_VALUES:.0e} (lower data.n_samples, data.features or data.image_size)")
        return self


# --------------------------------------------------------------------------------------- model
SYNC_BATCHNORM_HELP = ("With several workers (--nproc N, torchrun), batch norm computes its statistics over "
                       "the global batch (synchronized batch norm); false: over each worker's share. No effect "
                       "on one process or without batch norm.")

class MLPSection(Section):
    kind: Literal["mlp"] = _field("mlp", "Model family: mlp (multi-layer perceptron) or cnn (images).")
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = _field((256, 128), "Widths of the hidden layers.")
    activation: Literal[ACTIVATIONS] = _field("relu", "Hidden-layer activation.")  # type: ignore[valid-type]
    negative_slope: float = _field(0.01, "Slope of leaky_relu for negative inputs.", ge=0)
    norm: Literal["none", "batch", "layer"] = _field(
        "batch", "Normalization between each linear layer and its activation.")
    dropout: float = _field(0.1, "Dropout probability after each hidden layer.", ge=0, lt=1)
    dropconnect: float = _field(0.0, "DropConnect probability of the hidden linear layers: each weight is "
                                "dropped with this probability while training (scaled by 1/(1-p)); 0 = off.",
                                ge=0, lt=1)
    sync_batchnorm: bool = _field(True, SYNC_BATCHNORM_HELP)


class CNNSection(Section):
    kind: Literal["cnn"] = _field("cnn", "Model family: mlp (multi-layer perceptron) or cnn (images).")
    channels: tuple[Annotated[int, Field(ge=1)], ...] = _field(
        (16, 32, 64), "Output channels of each conv block (conv -> norm -> activation -> pool).", min_length=1)
    kernel_size: int = _field(3, "Side of the square conv kernels (odd; padding keeps the size).", ge=1)
    activation: Literal[ACTIVATIONS] = _field("relu", "Activation after each conv.")  # type: ignore[valid-type]
    negative_slope: float = _field(0.01, "Slope of leaky_relu for negative inputs.", ge=0)
    norm: Literal["none", "batch"] = _field("batch", "BatchNorm2d between each conv and its activation.")
    pool: Literal["max", "avg", "none"] = _field("max", "2x2 pooling at the end of each block but the last.")
    dropout: float = _field(0.0, "Dropout probability before the linear head.", ge=0, lt=1)
    sync_batchnorm: bool = _field(True, SYNC_BATCHNORM_HELP)

    @model_validator(mode="after")
    def _odd_kernel(self) -> CNNSection:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size: got {self.kernel_size}, must be odd (same padding)")
        return self


class CustomSection(Section):
    kind: Literal["custom"] = _field(
        "custom", "A module passed from Python (tw.fit(..., model=Net())), recorded by the run: the CLI cannot "
        "rebuild it; load the trained run with tw.load(RUN_DIR, model=Net()).")
    module: str = _field("", "Import path of the module's class (module.Class), as recorded by the run.")
    parameters: int = _field(0, "Parameter count of the module (trainable ones), as recorded by the run.", ge=0)


Model = Annotated[Union[MLPSection, CNNSection, CustomSection], Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------- init
class InitSection(Section):
    weights: Literal["pytorch", "zeros", "constant", "normal", "uniform", "xavier_normal", "xavier_uniform",
                     "kaiming_normal", "kaiming_uniform", "lecun_normal", "lecun_uniform", "orthogonal"] = _field(
        "pytorch", "Weight initialization scheme. pytorch (the default) is PyTorch's own, drawn from the run's seed: "
        "each layer's weights uniform in +-1/sqrt(fan_in), as a hand-written PyTorch model has them; kaiming_normal (He) makes a ReLU layer's "
        "weights sqrt(6) times larger, which suits deep ReLU networks without normalization. Under batch norm the scale of the weights does "
        "not change the outputs, only how far a step moves them: the smaller pytorch weights learn faster with "
        "Adam (benchmarks/init_study.py).")
    bias: Literal["zeros", "constant", "pytorch"] = _field(
        "zeros", "Bias initialization (pytorch: PyTorch's own, uniform in +-1/sqrt(fan_in), drawn from the run's seed).")
    bias_value: float = _field(0.0, "Bias value when bias = constant.")
    value: float = _field(0.0, "Weight value when weights = constant.")
    mean: float = _field(0.0, "Mean of weights = normal.")
    std: float = _field(0.01, "Standard deviation of weights = normal.", gt=0)
    a: float = _field(-0.05, "Lower bound of weights = uniform.")
    b: float = _field(0.05, "Upper bound of weights = uniform.")
    gain: float | Literal["auto"] = _field(
        1.0, "Gain of xavier/lecun/orthogonal: a number, or auto for the activation's "
        "recommended gain (torch.nn.init.calculate_gain). Kaiming takes its gain from the activation.")
    mode: Literal["fan_in", "fan_out"] = _field("fan_in", "Fan used by kaiming and lecun.")
    from_: str | None = Field(None, alias="from", description=(
        "Fine-tuning: a run folder whose best weights start this run. Layers are matched by name and "
        "shape; the others (e.g. the head when the class count differs) keep the fresh initialization "
        "and are listed."))
    freeze: tuple[str, ...] | Annotated[int, Field(ge=0)] = _field(
        (), "Layers kept fixed while fine-tuning: a list of layer names (e.g. [\"fc1\", \"norm1\"]), or k "
        "for the first k weighted layers with their norms.")

    @model_validator(mode="after")
    def _check_bounds(self) -> InitSection:
        if self.a >= self.b:
            raise ValueError(f"init.a, init.b: got a={self.a}, b={self.b}, need a < b")
        if isinstance(self.gain, float) and self.gain <= 0:
            raise ValueError(f"init.gain: got {self.gain}, must be > 0 or \"auto\"")
        if self.freeze and self.from_ is None:
            raise ValueError("init.freeze: only applies when fine-tuning; set init.from to a run folder")
        return self


# ---------------------------------------------------------------------------------------- loss
class LossSection(Section):
    kind: Literal["auto", "mse", "mae", "huber", "cross_entropy", "nll", "bce_with_logits", "hinge"] = _field(
        "auto", "Loss; auto: bce_with_logits (binary), cross_entropy (multiclass), mse (regression).")
    label_smoothing: float = _field(0.0, "Label smoothing epsilon of cross_entropy and bce_with_logits: the target becomes (1 - eps) * y + eps / classes.", ge=0, lt=1)
    delta: float = _field(1.0, "Threshold of the huber loss.", gt=0)
    margin: float = _field(1.0, "Margin of the multi-class hinge loss.", gt=0)
    class_weight: Literal["none", "balanced"] | tuple[Annotated[float, Field(gt=0)], ...] = _field(
        "none", "Per-class loss weights of a classification loss: none, balanced (n / (C * count_c), counted on "
        "the training split) or one positive weight per class in the order of the sorted labels. "
        "bce_with_logits uses them as pos_weight = w1 / w0.")


# ----------------------------------------------------------------------------------- optimizer
class _Opt(Section):
    weight_decay: float = _field(0.0, "Decoupled weight decay (AdamW/SGDW style): w <- w - lr*wd*w each "
                                 "step, separate from the gradient (PyTorch convention: scaled by lr).", ge=0)
    decay_bias_and_norm: bool = _field(False, "Also decay biases and normalization parameters.")


class SGDSection(_Opt):
    kind: Literal["sgd"]
    lr: float = _field(0.01, "Learning rate.", gt=0)
    momentum: float = _field(0.0, "Momentum factor.", ge=0, lt=1)
    dampening: float = _field(0.0, "Dampening of momentum.", ge=0, le=1)
    nesterov: bool = _field(False, "Nesterov momentum (needs momentum > 0, dampening 0).")

    @model_validator(mode="after")
    def _check(self) -> SGDSection:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("optimizer.nesterov: needs optimizer.momentum > 0 and optimizer.dampening = 0")
        return self


class AdagradSection(_Opt):
    kind: Literal["adagrad"]
    lr: float = _field(0.01, "Learning rate.", gt=0)
    lr_decay: float = _field(0.0, "Learning-rate decay of Adagrad.", ge=0)
    initial_accumulator_value: float = _field(0.0, "Initial value of the squared-gradient sum.", ge=0)
    eps: float = _field(1e-10, "Term added to the denominator.", gt=0)


class RMSpropSection(_Opt):
    kind: Literal["rmsprop"]
    lr: float = _field(0.01, "Learning rate.", gt=0)
    alpha: float = _field(0.99, "Smoothing constant of the squared-gradient average.", gt=0, lt=1)
    eps: float = _field(1e-8, "Term added to the denominator.", gt=0)
    momentum: float = _field(0.0, "Momentum factor.", ge=0, lt=1)
    centered: bool = _field(False, "Normalize by the estimated gradient variance.")


class AdadeltaSection(_Opt):
    kind: Literal["adadelta"]
    lr: float = _field(1.0, "Scale applied to the Adadelta update.", gt=0)
    rho: float = _field(0.9, "Decay of the running averages.", gt=0, lt=1)
    eps: float = _field(1e-6, "Term added for numerical stability.", gt=0)


class AdamSection(_Opt):
    kind: Literal["adam", "adamw"]
    lr: float = _field(0.001, "Learning rate.", gt=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = _field(
        (0.9, 0.999), "Decay rates of the first and second moment estimates.")
    eps: float = _field(1e-8, "Term added to the denominator.", gt=0)
    amsgrad: bool = _field(False, "Use the AMSGrad variant.")


Optimizer = Annotated[Union[SGDSection, AdagradSection, RMSpropSection, AdadeltaSection, AdamSection],
                      Field(discriminator="kind")]


# ------------------------------------------------------------------------------------ schedule
class _Sched(Section):
    warmup_epochs: float = _field(0.0, "Linear warmup length in epochs (fractions allowed), before the schedule.",
                                  ge=0)
    warmup_start_factor: float = _field(0.01, "LR factor at the first warmup step, relative to the LR the "
                                        "schedule starts from (max_lr / div_factor for one_cycle, else "
                                        "optimizer.lr).", gt=0, le=1)


class ConstantSchedule(_Sched):
    kind: Literal["constant"]


class StepSchedule(_Sched):
    kind: Literal["step"]
    step_size: int = _field(10, "Epochs between decays.", ge=1)
    gamma: float = _field(0.1, "Factor applied every step_size epochs.", gt=0)


class MultiStepSchedule(_Sched):
    kind: Literal["multistep"]
    milestones: tuple[Annotated[int, Field(ge=1)], ...] = _field((10, 20), "Epochs at which the LR decays.")
    gamma: float = _field(0.1, "Factor applied at each milestone.", gt=0)


class ExponentialSchedule(_Sched):
    kind: Literal["exponential"]
    gamma: float = _field(0.95, "Factor applied every epoch.", gt=0)


class PolynomialSchedule(_Sched):
    kind: Literal["polynomial"]
    power: float = _field(1.0, "Power of the decay (1 = linear) to 0 at the end of training.", gt=0)


class CosineSchedule(_Sched):
    kind: Literal["cosine"]
    eta_min: float = _field(0.0, "Final learning rate of the cosine decay.", ge=0)


class CosineRestartsSchedule(_Sched):
    kind: Literal["cosine_restarts"]
    cycle_epochs: int = _field(10, "Length of the first cosine cycle, in epochs (annealed per step; "
                               "SGDR, Loshchilov & Hutter 2017).", ge=1)
    cycle_mult: int = _field(1, "Each cycle is this many times longer than the one before.", ge=1)
    eta_min: float = _field(0.0, "Learning rate at the end of every cycle.", ge=0)


class OneCycleSchedule(_Sched):
    kind: Literal["one_cycle"]
    max_lr: float | None = _field(None, "Peak learning rate (default: optimizer.lr).", gt=0)
    pct_start: float = _field(0.3, "Fraction of the run spent increasing the LR.", gt=0, lt=1)
    div_factor: float = _field(25.0, "Initial LR = max_lr / div_factor.", gt=0)
    final_div_factor: float = _field(1e4, "Final LR = initial LR / final_div_factor.", gt=0)
    anneal: Literal["cos", "linear"] = _field("cos", "Annealing shape.")


class PlateauSchedule(_Sched):
    kind: Literal["reduce_on_plateau"]
    monitor: str = _field("val_loss", "History column watched.")
    mode: Literal["min", "max"] | None = _field(None, "Direction of improvement (required for unknown metrics).")
    factor: float = _field(0.1, "Factor applied to the LR on a plateau.", gt=0, lt=1)
    patience: int = _field(5, "Epochs without improvement before reducing.", ge=0)
    threshold: float = _field(1e-4, "Minimum change that counts as improvement.", ge=0)
    threshold_mode: Literal["rel", "abs"] = _field("rel", "Threshold relative to the best value, or absolute.")
    cooldown: int = _field(0, "Epochs to wait after a reduction.", ge=0)
    min_lr: float = _field(0.0, "Lower bound on the LR.", ge=0)

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, data: Any) -> Any:
        return _fill_mode(data, "schedule")


Schedule = Annotated[Union[ConstantSchedule, StepSchedule, MultiStepSchedule, ExponentialSchedule,
                           PolynomialSchedule, CosineSchedule, CosineRestartsSchedule, OneCycleSchedule,
                           PlateauSchedule],
                     Field(discriminator="kind")]


# ------------------------------------------------------------------------------ regularization
class RegularizationSection(Section):
    l1: float = _field(0.0, "L1 penalty lambda*sum|w| added to the loss.", ge=0)
    l2: float = _field(0.0, "L2 penalty lambda/2*||w||^2 added to the loss (coupled with the gradient; "
                       "for decoupled decay use optimizer.weight_decay).", ge=0)
    penalize_bias_and_norm: bool = _field(False, "Also penalize biases and normalization parameters.")


# --------------------------------------------------------------------------------------- train
class NoAverage(Section):
    """The run returns its own network (the best epoch's weights with stopping.restore_best)."""
    kind: Literal["none"]


class EMAAverage(Section):
    kind: Literal["ema"]
    decay: float = _field(0.99, "Exponential moving average of the weights, updated every optimizer step, buffers (batch-norm statistics) included: "
                          "avg <- decay*avg + (1-decay)*w.", gt=0, lt=1)


class SWAAverage(Section):
    kind: Literal["swa"]
    start_epoch: int | None = _field(
        None, "Stochastic weight averaging (Izmailov et al. 2018, torch.optim.swa_utils): the weights at the end "
        "of this epoch (1-based) and of every later one are averaged with equal weights; unset = the last quarter "
        "of the epochs, at least the last one (train.epochs - max(1, train.epochs // 4) + 1).", ge=1)
    lr: float | None = _field(None, "Learning rate the SWA phase anneals to (as SWALR) and then keeps; unset = "
                              "the schedule's rate continues.", gt=0)
    anneal_epochs: int = _field(1, "Epochs over which the rate goes from the schedule's to lr (per step; "
                                "0 = at once).", ge=0)
    anneal_strategy: Literal["cos", "linear"] = _field("cos", "Shape of that annealing.")
    update_bn: bool = _field(True, "Recompute the batch-norm statistics of the averaged weights with one pass "
                             "over the training rows (torch.optim.swa_utils.update_bn).")


class SnapshotsAverage(Section):
    kind: Literal["snapshots"]
    count: int = _field(3, "Snapshot ensemble (Huang et al. 2017; needs schedule.kind = \"cosine_restarts\"): "
                        "keep the weights at the ends of the last `count` cosine cycles and average their "
                        "predictions.", ge=2)


class EnsembleAverage(Section):
    kind: Literal["ensemble"]
    members: int = _field(5, "Networks trained and their predictions averaged (probabilities for "
                          "classification, outputs for regression); member 1 is the plain run of the recipe.",
                          ge=2, le=100)
    method: Literal["seeds", "bagging"] = _field(
        "seeds", "seeds: member k trains from its own seed (init, shuffling, dropout), derived from `seed`; "
        "bagging: each member also trains on a bootstrap resample of the training split.")


Average = Annotated[Union[NoAverage, EMAAverage, SWAAverage, SnapshotsAverage, EnsembleAverage],
                    Field(discriminator="kind")]

# The keys [train.average] replaced: still read (deprecated), as the `kind` they switch on.
OLD_AVERAGE_KEYS = ("ensemble", "snapshots", "swa", "ema_decay")


class TrainSection(Section):
    epochs: int = _field(40, "Maximum number of epochs.", ge=1)
    batch_size: int = _field(64, "Rows per optimizer batch.", ge=1)
    eval_batch_size: int = _field(2048, "Rows per evaluation batch.", ge=1)
    accumulate: int = _field(1, "Batches whose gradients are accumulated before an optimizer step.", ge=1)
    clip_norm: float | None = _field(None, "Clip the global gradient norm to this value.", gt=0)
    clip_value: float | None = _field(None, "Clamp every gradient element to [-v, v].", gt=0)
    drop_last: bool = _field(False, "Drop the last short training batch of each epoch.")
    sampler: Literal["shuffle", "balanced"] = _field(
        "shuffle", "Order of the training rows in an epoch: shuffle (each row once, in a seeded random order) "
        "or balanced (classification: len(train) rows drawn with replacement, each class equally likely; "
        "seeded, resumed exactly).")
    device: Literal["auto", "cpu", "cuda", "mps"] = _field("auto", "Device; auto picks an accelerator if present.")
    threads: int = _field(0, "CPU threads for torch (0 = torch's default).", ge=0)
    precision: Literal["32", "bf16-mixed", "16-mixed"] = _field(
        "32", "Number format of the forward pass and the loss: 32 (float32), bf16-mixed or 16-mixed (autocast "
        "to bfloat16 / float16; weights, gradients and optimizer state stay float32; 16-mixed scales the loss). "
        "Evaluation runs under the same autocast.")
    compile: bool = _field(False, "Compile the model's training forward pass with torch.compile (compile time "
                           "reported separately); falls back to the eager step, with one warning, when the "
                           "compiler is unavailable or fails.")
    average: Average = _field(NoAverage(kind="none"), "What the run returns: its own network, or an average of "
                              "weights or of networks, one kind at a time. The keys it replaced (train.ema_decay, "
                              "train.swa.*, train.snapshots, train.ensemble.*) are still read, also in search.space "
                              "(searching the new keys), with a one-line deprecation warning.")

    @model_validator(mode="before")
    @classmethod
    def _average_defaults(cls, data: Any) -> Any:
        """[train.average] given without `kind` keeps "none"; SWA's start epoch defaults to the last quarter."""
        if not isinstance(data, dict) or not isinstance(data.get("average"), dict):
            return data
        avg = {"kind": "none", **data["average"]}
        if avg["kind"] == "swa" and avg.get("start_epoch") is None:
            epochs = data.get("epochs", cls.model_fields["epochs"].default)
            if isinstance(epochs, int):
                avg["start_epoch"] = epochs - max(1, epochs // 4) + 1
        return {**data, "average": avg}

    @model_validator(mode="before")
    @classmethod
    def _precision_number(cls, data: Any) -> Any:
        """`--set train.precision=32` arrives as the integer 32: the same as "32"."""
        if isinstance(data, dict) and type(data.get("precision")) is int:
            return {**data, "precision": str(data["precision"])}
        return data


# ------------------------------------------------------------------------------------ stopping
class StoppingSection(Section):
    enabled: bool = _field(True, "Stop early when the monitored value stops improving.")
    monitor: str = _field("val_loss", "History column watched (e.g. val_loss, val_accuracy).")
    mode: Literal["min", "max"] | None = _field(
        None, "Direction of improvement; filled in for trainwell's metrics, required for any other column.")
    patience: int = _field(10, "Epochs without improvement before stopping.", ge=0)
    min_delta: float = _field(0.0, "Minimum change that counts as improvement.", ge=0)
    baseline: float | None = _field(None, "Stop unless the monitored value beats this within patience epochs.")
    restore_best: bool = _field(True, "Restore the best epoch's weights at the end (also when patience never "
                                "ran out).")
    start_from_epoch: int = _field(0, "Epochs ignored before monitoring starts (warm-up).", ge=0)
    check_finite: bool = _field(True, "Stop when the monitored value becomes NaN or infinite.")
    stopping_threshold: float | None = _field(None, "Stop as soon as the monitored value reaches this.")
    divergence_threshold: float | None = _field(None, "Stop as soon as the monitored value is worse than this.")

    @model_validator(mode="before")
    @classmethod
    def _mode(cls, data: Any) -> Any:
        return _fill_mode(data, "stopping")


class CheckpointSection(Section):
    best: bool = _field(True, "Keep the checkpoint of the best epoch (by stopping.monitor).")
    last: bool = _field(True, "Keep the checkpoint of the latest epoch (what `trainwell resume` continues from).")
    every_steps: int = _field(0, "Also save `last` inside an epoch every this many optimizer steps, so a crash "
                              "loses at most that many steps (0 = only at epoch ends).", ge=0)
    every_minutes: float = _field(10.0, "Also save `last` inside an epoch when this many minutes of training "
                                  "passed since the previous save (0 = off).", ge=0)


class WatchSection(Section):
    probes: bool = _field(True, "Record per-layer probes (activation mean/std, saturated and dead units, gradient "
                          "and weight norms, update-to-weight ratio) into probes.json.")
    probe_every: int = _field(25, "Probe one training step in this many (plus the first step of every epoch); "
                              "the probed step's batch is the probe batch.", ge=1)
    doctor: bool = _field(True, "Diagnose the run at the end of fit: findings with evidence and remedies "
                          "in diagnosis.json, a short summary printed.")
    report: bool = _field(True, "Write the self-contained report.html at the end of fit.")
    suspects: int = _field(20, "At most this many suspected mislabeled training rows are listed (the final "
                           "model's most confident mistakes).", ge=0)
    tensorboard: bool = _field(False, "Also write TensorBoard scalars and histograms to RUN_DIR/tensorboard "
                               "(needs the tensorboard package).")
    on_nan: Literal["stop", "rollback"] = _field(
        "stop", "When the training loss, a gradient or a weight becomes NaN/inf (checked at each checkpoint "
        "and epoch end): stop (the last good checkpoint is kept), or roll back to the last good state with "
        "a smaller LR and skip the bad batch.")
    nan_lr_factor: float = _field(0.5, "Rollback: multiply the learning rate by this at each rollback.",
                                  gt=0, lt=1)
    nan_retries: int = _field(3, "Rollback: at most this many rollbacks in a run; one more non-finite "
                              "boundary stops it.", ge=0)


def _check_averaging(recipe: Recipe) -> None:
    avg, epochs = recipe.train.average, recipe.train.epochs
    if avg.kind == "snapshots" and recipe.schedule.kind != "cosine_restarts":
        raise ValueError(f"train.average.kind: \"snapshots\" needs schedule.kind = \"cosine_restarts\", got "
                         f"{recipe.schedule.kind!r}")
    if avg.kind == "snapshots" and _cycles(recipe.schedule, epochs) < avg.count:
        s = recipe.schedule
        raise ValueError(f"train.average.count: got {avg.count}, but train.epochs = {epochs} completes only "
                         f"{_cycles(s, epochs)} cosine cycle(s) (schedule.cycle_epochs = {s.cycle_epochs}, "
                         f"cycle_mult = {s.cycle_mult}, warmup_epochs = {s.warmup_epochs:g})")
    if avg.kind == "swa" and avg.start_epoch > epochs:
        raise ValueError(f"train.average.start_epoch: got {avg.start_epoch}, after the last epoch "
                         f"(train.epochs = {epochs})")


def read_old_average_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A raw recipe with train.ema_decay / train.swa / train.snapshots / train.ensemble (the keys before
    [train.average]) rewritten as [train.average], and the one-line deprecation message (None when
    there were none). Two of them switched on, or one with [train.average] also given, is refused.
    A search space that names them searches the new keys instead, with the kind they switched on."""
    raw, space = _read_old_space_keys(raw)
    train = raw.get("train")
    if not space and (not isinstance(train, dict) or not any(k in train for k in OLD_AVERAGE_KEYS)):
        return raw, None
    train = dict(train) if isinstance(train, dict) else {}
    old = {k: train.pop(k) for k in list(train) if k in OLD_AVERAGE_KEYS}
    table = lambda key: old.get(key) if isinstance(old.get(key), dict) else {}      # noqa: E731
    swa, ens = table("swa"), table("ensemble")
    on = {}
    if isinstance(ens.get("members"), int) and ens["members"] > 1:
        on["train.ensemble.members"] = {"kind": "ensemble", **ens}
    if old.get("snapshots"):
        on["train.snapshots"] = {"kind": "snapshots", "count": old["snapshots"]}
    if swa.get("start_epoch") is not None:
        on["train.swa.start_epoch"] = {"kind": "swa", **swa}
    if old.get("ema_decay"):
        on["train.ema_decay"] = {"kind": "ema", "decay": old["ema_decay"]}
    switched = {**on, **{f"search.space.{k}": {"kind": kind} for k, (kind, _) in space.items()}}
    kind = next(iter(switched.values()))["kind"] if switched else None
    other = next((k for k, v in switched.items() if v["kind"] != kind), None)
    if other is not None:
        raise RecipeError([f"{other}: cannot be combined with {next(iter(switched))}; a run averages one way "
                           "at a time: set one [train.average] kind"])
    given = train.get("average")
    given_kind = given.get("kind", "none") if isinstance(given, dict) else "none"
    if switched and given_kind != "none" and (on or given_kind != kind):
        raise RecipeError([f"{next(iter(switched))}: cannot be combined with train.average.kind = "
                           f"{given_kind!r}; set [train.average] only"])
    if switched and given_kind == "none":
        train["average"] = next(iter(switched.values()))
    average = train.get("average") or {"kind": "none"}
    shown = ", ".join(f"{k} = {_toml_value(v)}" for k, v in average.items() if v is not None)
    shown += "".join(f" and search.space.{new}" for _, new in space.values())
    names = ", ".join([*(f"train.{k}" for k in old), *(f"search.space.{k}" for k in space)])
    message = (f"{names}: deprecated, read as [train.average] {shown}; write that instead "
               "(trainwell recipe prints the new form)")
    return {**raw, "train": train}, message


def _read_old_space_keys(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """A raw recipe whose search space names the old averaging keys, with the space rewritten to the new
    keys, and {old key: (the kind it switched on, the new key)} (empty when the space names none)."""
    search = raw.get("search")
    space = search.get("space") if isinstance(search, dict) else None
    if not isinstance(space, dict):
        return raw, {}
    flat = flatten_space(space)
    renamed = {k: _new_average_key(k) for k in flat}
    renamed = {k: v for k, v in renamed.items() if v is not None}
    if not renamed:
        return raw, {}
    new_space = {renamed[k][1] if k in renamed else k: v for k, v in flat.items()}
    return {**raw, "search": {**search, "space": new_space}}, renamed


def _new_average_key(key: str) -> tuple[str, str] | None:
    """An old averaging key's (kind, key under [train.average]); None for any other key."""
    parts = key.split(".")
    if parts[0] != "train" or len(parts) < 2 or parts[1] not in OLD_AVERAGE_KEYS:
        return None
    if parts[1] in ("ema_decay", "snapshots"):
        kind, leaf = ("ema", "decay") if parts[1] == "ema_decay" else ("snapshots", "count")
        return (kind, f"train.average.{leaf}") if len(parts) == 2 else None
    return (parts[1], f"train.average.{'.'.join(parts[2:])}") if len(parts) > 2 else None


def _cycles(schedule: CosineRestartsSchedule, epochs: int) -> int:
    """Complete cosine cycles within `epochs` epochs."""
    end, length, n = schedule.warmup_epochs, schedule.cycle_epochs, 0
    while end + length <= epochs:
        end, length, n = end + length, length * schedule.cycle_mult, n + 1
    return n


def _fill_mode(data: Any, section: str) -> Any:
    if not isinstance(data, dict) or data.get("mode") is not None:
        return data
    monitor = data.get("monitor", "val_loss")
    base = str(monitor).removeprefix("val_").removeprefix("train_")
    if base not in KNOWN_DIRECTIONS:
        raise ValueError(f"{section}.mode: the direction of {monitor!r} is not known; set "
                         f"{section}.mode = \"min\" or \"max\"")
    return {**data, "mode": KNOWN_DIRECTIONS[base]}


# -------------------------------------------------------------------------------------- recipe
class Recipe(Section):
    """A complete, validated run description. Build with `load_recipe` or `Recipe.from_dict`."""

    name: str | None = _field(None, "Run name used in the default run folder (default: <source>-<model>).")
    seed: int = _field(0, "Seed of every random choice: split, init, shuffling, dropout.", ge=0)
    calibrate: Literal["none", "temperature"] = _field(
        "none", "Calibration of a classifier's probabilities after training. temperature: temperature scaling "
        "(Guo et al. 2017): one scalar T > 0 fitted on the validation split (never the test split) by minimizing "
        "the log-loss of softmax(outputs / T); the test metrics, predict and tw.load use the scaled outputs, and "
        "metrics.json (\"temperature\") and the report give T and the validation and test NLL and ECE before and "
        "after. Dividing by T does not change the predicted class, so accuracy is unchanged. Needs validation rows "
        "and probabilities (classification, not the hinge loss).")
    data: DataSection = DataSection()
    model: Model = MLPSection()
    init: InitSection = InitSection()
    loss: LossSection = LossSection()
    optimizer: Optimizer = AdamSection(kind="adam")
    schedule: Schedule = CosineSchedule(kind="cosine")
    regularization: RegularizationSection = RegularizationSection()
    train: TrainSection = TrainSection()
    stopping: StoppingSection = StoppingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    watch: WatchSection = WatchSection()
    search: SearchSection = SearchSection()

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        """A tagged section given without `kind` keeps the default kind (`--set optimizer.lr=3e-3`)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, info in cls.model_fields.items():
            section = data.get(name)
            if isinstance(section, dict) and "kind" not in section and hasattr(info.default, "kind"):
                data[name] = {"kind": info.default.kind, **section}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        no_val = "data.split has no validation fraction" if self.data.split[1] == 0 else (
            "data.train_on = \"train+val\" leaves no validation rows" if self.data.train_on != "train" else None)
        if no_val:
            for key, monitor in (("stopping.monitor", self.stopping.monitor if self.stopping.enabled else ""),
                                 ("schedule.monitor", getattr(self.schedule, "monitor", ""))):
                if monitor.startswith("val_"):
                    raise ValueError(f"{key}: got {monitor!r}, but {no_val}; "
                                     "monitor a train_ column or give validation rows")
        _check_averaging(self)
        if self.calibrate != "none":
            no_probabilities = ("data.task = \"regression\"" if self.data.task == "regression" else
                                f"loss.kind = {self.loss.kind!r}" if self.loss.kind in ("mse", "mae", "huber", "hinge")
                                else None)
            if no_probabilities or no_val:
                raise ValueError(f"calibrate: got {self.calibrate!r}, but {no_probabilities or no_val}; temperature "
                                 "scaling needs a classifier's probabilities and validation rows to fit on"
                                 + (" (set calibrate = \"none\")" if no_probabilities else ""))
        if self.loss.label_smoothing and self.loss.kind not in ("auto", "cross_entropy", "bce_with_logits"):
            raise ValueError("loss.label_smoothing: applies to cross_entropy and bce_with_logits only, "
                             f"got loss.kind = "
                             f"{self.loss.kind!r}")
        if self.search.space:
            problems = space_problems(self)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str | None = None) -> Recipe:
        raw, deprecated = read_old_average_keys(dict(raw))
        if deprecated:
            warnings.warn(deprecated, RecipeDeprecation, stacklevel=2)
        problems = unknown_key_problems(cls, raw)
        try:
            recipe = cls.model_validate(drop_unknown(cls, raw))
        except ValidationError as exc:
            problems += [p for p in format_errors(cls, exc) if p not in problems]
            raise RecipeError(problems, source) from None
        if problems:
            raise RecipeError(problems, source)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def replace(self, **dotted: Any) -> Recipe:
        """A new recipe with dotted-key overrides applied (validated)."""
        raw = self.to_dict()
        for key, value in dotted.items():
            set_dotted(raw, key, value)
        return Recipe.from_dict(raw)

    def to_toml(self, comments: bool = False) -> str:
        return dump_toml(self, comments=comments)

    def get(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, _keys(type(node)).get(part, part))
        return node


# --------------------------------------------------------------------------- loading / overrides
def parse_value(text: str) -> Any:
    """A `--set` value, parsed as TOML; a bare word that is not TOML is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError([f"--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.lr=3e-3"])
        out[key.strip()] = parse_value(value.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{path}: recipe file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{path}: cannot read recipe ({exc.__class__.__name__}: {exc})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path}: not valid TOML ({exc})"]) from None


def load_recipe(recipe: str | Path | Mapping[str, Any] | Recipe | None = None,
                overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Recipe from a TOML path, a dict, a Recipe or None (the default), with dotted overrides."""
    source = None
    if recipe is None:
        raw: dict[str, Any] = {}
    elif isinstance(recipe, Recipe):
        raw = recipe.to_dict()
    elif isinstance(recipe, Mapping):
        raw = _deep_copy(recipe)
    else:
        source = str(recipe)
        raw = read_toml(recipe)
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return Recipe.from_dict(raw, source)


def _deep_copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


# ---------------------------------------------------------------------------------- TOML output
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v) if not isinstance(v, float) or math.isfinite(v) else ("nan" if v != v else
                                                                             ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) else _toml_value(k)


def _emit(model: BaseModel, data: dict[str, Any], header: str | None, comments: bool, out: list[str]) -> None:
    if header:
        out.append(f"\n[{header}]")
    fields = type(model).model_fields
    keys = _keys(type(model))
    nested = []
    # The tag of a tagged section comes first so the section reads as "kind = ..., its keys".
    for key, value in sorted(data.items(), key=lambda kv: kv[0] != "kind"):
        sub = getattr(model, keys[key])
        if isinstance(sub, BaseModel):
            nested.append((key, sub, value))
            continue
        if isinstance(value, dict):      # a table of tables (search.space): one line per entry
            if value:
                nested.append((key, None, value))
            continue
        doc = fields[keys[key]].description if comments else None
        line = f"{key} = {_toml_value(value)}" if value is not None else f"# {key} =  (unset)"
        out.append(f"{line:<40} # {doc}" if doc else line)
    for key, sub, value in nested:
        name = f"{header}.{key}" if header else key
        if sub is None:
            out.append(f"\n[{name}]")
            out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
        else:
            _emit(sub, value, name, comments, out)


def dump_toml(recipe: BaseModel, comments: bool = False) -> str:
    out: list[str] = []
    _emit(recipe, recipe.model_dump(mode="json", by_alias=True), None, comments, out)
    return "\n".join(out).lstrip("\n") + "\n"
