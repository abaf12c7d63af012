"""build: (Recipe, prepared data, device) -> a frozen Setup, the one place a recipe becomes objects.

Everything that trains goes through `build`: fit and resume, ensemble members, search trials and
their retrain (through fit), the LR range test and the overfit-one-batch check. So a technique is
built in one place and is the same everywhere. The Setup holds:

    model (sized for the data, initialized, fine-tuned), loss, optimizer with its parameter groups
    precision      the autocast of the forward pass and the loss; the float16 gradient scaler
    forward        the compiled training forward pass (train.compile), or None: the model itself
    penalties      loss terms, each a function of nothing (the parameters are bound)     (L2, L1)
    transforms     gradient transforms, in order, after the pre-clip norm is measured
                   (clip by value, clip by norm, decoupled weight decay)
    lr(step)       each parameter group's LR: schedule x warmup x plateau x NaN-guard scale, or the
                   SWA phase's annealed rate; a function of the step and the components' state
    augment        the training-batch augmenter (its own seeded stream)
    components     the stateful deciders by name (best-epoch monitor, early stopping, plateau, NaN
                   guard): each has state_dict / load_state_dict and is saved under its name
    settings       the few plain numbers the Trainer needs (epochs, batch sizes, checkpoint policy)

The caller seeds the global generators (seeding.seed_globals) before or after `build`, as its
history demands; `build` itself only draws from the streams it is given (init, shuffle, augment).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .callbacks import EarlyStopping
from .callbacks.nonfinite import NonFiniteGuard
from .compiling import CompiledForward
from .data import target
from .data.augment import build_augmenter
from .errors import DataError, RecipeError
from .finetune import finetune
from .init import init_model_
from .losses import (
    LogSoftmaxHead,
    build_loss,
    class_weights,
    l1_penalty,
    l2_penalty,
    output_size,
    resolve_kind,
)
from .metrics import metric_names
from .models import build_model, embedding_columns
from .optim import apply_decoupled_decay, build_optimizer, split_parameters
from .precision import Precision
from .precision import problem as precision_problem
from .schedules import Plateau, lr_factor, swa_lr
from .seeding import stream, stream_seed

Penalty = Callable[[], torch.Tensor]
Transform = Callable[[list[torch.Tensor], torch.Tensor | None], torch.Tensor | None]


@dataclass(frozen=True)
class Settings:
    """Plain values the Trainer reads (never the recipe)."""
    epochs: int
    batch_size: int
    accumulate: int
    drop_last: bool
    eval_batch_size: int
    sampler: str                      # "shuffle", or "balanced": rows drawn with replacement, classes equally likely
    monitor: str                      # the best epoch's (and early stopping's) history column
    restore_best: bool
    save_best: bool
    save_last: bool
    every_steps: int
    every_minutes: float
    record: dict[str, Any]            # the resolved recipe, stored in every checkpoint for resume


@dataclass(frozen=True)
class Setup:
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    loss_kind: str
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]        # the trainable parameters (gradient norm, clipping)
    penalties: tuple[Penalty, ...]
    transforms: tuple[Transform, ...]
    lr: Callable[[int], list[float]]
    base_lrs: list[float]
    augment: Any
    shuffle: torch.Generator          # each epoch's row order
    components: dict[str, Any]
    settings: Settings
    task: str
    n_classes: int
    device: torch.device
    train: Any                        # SplitTensors
    val: Any
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    finetuned: dict[str, Any] | None
    precision: Precision = Precision()  # the autocast of the forward pass and the loss (train.precision)
    scaler: Any = None                # the float16 gradient scaler ("16-mixed"), its state saved in checkpoints
    forward: Any = None               # the compiled training forward (train.compile), else None: the model


def pick_device(name: str) -> torch.device:
    """train.device: "auto" picks CUDA, then MPS, then the CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError(["train.device: got 'cuda', but no CUDA device is available; use \"auto\" or \"cpu\""])
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RecipeError(["train.device: got 'mps', but MPS is not available; use \"auto\" or \"cpu\""])
    return torch.device(name)


def build(recipe, prepared, device: torch.device, *, model: nn.Module | None = None, train=None) -> Setup:
    """The Setup of `recipe` on `prepared` data (train: other training rows, e.g. a bagging member's)."""
    ds = prepared.dataset
    train = prepared.train if train is None else train
    check_monitors(recipe, ds.task)
    check_sampler(recipe, ds.task)
    check_calibration(recipe, ds.task)
    check_batch_size(recipe, len(train))
    problem = precision_problem(recipe.train.precision, device)
    if problem:
        raise RecipeError([problem])
    try:
        net, loss_kind = build_network(recipe, ds, model)
        loss_fn = build_run_loss(recipe, prepared, net)
    except ValueError as exc:
        raise RecipeError([str(exc)]) from None
    tuned = finetune(net, recipe.init) if recipe.init.from_ is not None else None
    augment = build_augmenter(recipe.data.augment, tuple(ds.x.shape[1:]), ds.n_classes,
                              stream_seed(recipe.seed, "augment"))
    net = net.to(device)
    check_forward(net, train)
    optimizer = build_optimizer(net, recipe.optimizer, device)

    t = recipe.train
    batches = len(train) // t.batch_size if t.drop_last else math.ceil(len(train) / t.batch_size)
    spe = max(1, batches // t.accumulate)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    components = build_components(recipe, base_lrs[0])
    precision = Precision(t.precision, device.type)
    return Setup(
        model=net, loss_fn=loss_fn, loss_kind=loss_kind, optimizer=optimizer,
        params=[p for p in net.parameters() if p.requires_grad],
        penalties=penalties(recipe.regularization, net), transforms=transforms(t, optimizer),
        lr=lr_policy(recipe, base_lrs, spe, spe * t.epochs, components), base_lrs=base_lrs,
        augment=augment, shuffle=stream(recipe.seed, "shuffle"), components=components,
        settings=settings(recipe), task=ds.task, n_classes=ds.n_classes, device=device, train=train,
        val=prepared.val, batches_per_epoch=batches, steps_per_epoch=spe, total_steps=spe * t.epochs,
        finetuned=tuned, precision=precision, scaler=precision.scaler(),
        forward=CompiledForward(net) if t.compile else None)


def settings(recipe) -> Settings:
    t, s, c = recipe.train, recipe.stopping, recipe.checkpoint
    return Settings(epochs=t.epochs, batch_size=t.batch_size, accumulate=t.accumulate, drop_last=t.drop_last,
                    eval_batch_size=t.eval_batch_size, sampler=t.sampler, monitor=s.monitor,
                    restore_best=s.restore_best, save_best=c.best, save_last=c.last,
                    every_steps=c.every_steps, every_minutes=c.every_minutes, record=recipe.to_dict())


# ------------------------------------------------------------------------------ the network
def build_network(recipe, ds, model: nn.Module | None = None) -> tuple[nn.Module, str]:
    """The recipe's model, sized for the data and initialized; or the user's own module. A regression
    run's network ends in its target scaling (outputs in the target's units)."""
    kind = resolve_kind(recipe.loss.kind, ds.task)
    custom = model is not None
    if model is None:
        model = build_model(recipe.model, tuple(ds.x.shape[1:]), output_size(kind, ds.task, ds.n_outputs),
                            embedding_columns(ds.feature_names, ds.preparation.get("embedded", {})))
        init_model_(model, recipe.init, stream(recipe.seed, "init"))
        if kind == "nll":
            model.add_module("log_softmax", LogSoftmaxHead())
    if ds.target_scale is not None:
        model = target.attach(model, copy.deepcopy(ds.target_scale), custom)
    return model, kind


def build_run_loss(recipe, prepared, net: nn.Module):
    """The recipe's loss, with its class weights counted on the training split; for a network with
    target scaling, computed in the scaled space."""
    ds, spec = prepared.dataset, recipe.loss.class_weight
    weight = None
    if spec != "none":
        if ds.task == "regression":
            raise ValueError(f"loss.class_weight: got {spec!r}, but the task is regression; class weights apply "
                             "to classification losses, use \"none\"")
        weight = class_weights(spec, prepared.train.y, ds.n_classes)
    return target.scaled_loss(build_loss(recipe.loss, ds.task, weight), target.find(net))


def check_forward(net: nn.Module, train) -> None:
    """One forward pass on two rows, so a model/data shape mismatch is a clear error up front."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(train.x[:2])
    except RuntimeError as exc:
        raise DataError(f"model: does not accept the data's rows of shape {tuple(train.x.shape[1:])} "
                        f"({str(exc).splitlines()[0]})") from None
    finally:
        net.train(was)


# ------------------------------------------------------------------------------ checks against the data
def check_batch_size(recipe, train_rows: int) -> None:
    """A batch size chosen larger than the training split was meant for other data: refuse it up front.

    The default batch size on a smaller split is one full batch per epoch (nobody chose it), unless
    train.drop_last would then drop every row."""
    t = recipe.train
    default = type(t).model_fields["batch_size"].default
    if t.batch_size > train_rows and (t.batch_size != default or t.drop_last):
        raise RecipeError([f"train.batch_size: got {t.batch_size}, larger than the {train_rows} training rows"
                           f"{' with train.drop_last = true' if t.drop_last else ''}; use at most {train_rows} "
                           "(one full batch per epoch) or give more data"])


def check_sampler(recipe, task: str) -> None:
    if recipe.train.sampler == "balanced" and task == "regression":
        raise RecipeError(["train.sampler: got 'balanced', but the task is regression; it balances classes, "
                           "use \"shuffle\""])


def check_calibration(recipe, task: str) -> None:
    if recipe.calibrate != "none" and task == "regression":
        raise RecipeError([f"calibrate: got {recipe.calibrate!r}, but the task is regression; temperature scaling "
                           "calibrates a classifier's probabilities, use \"none\""])


def check_monitors(recipe, task: str) -> None:
    cols = ["train_loss", "val_loss", "lr", "grad_norm"]
    cols += [f"train_{m}" for m in metric_names(task)] + [f"val_{m}" for m in metric_names(task, probabilities=True)]
    problems = []
    for key, monitor in (("stopping.monitor", recipe.stopping.monitor),
                         ("schedule.monitor", getattr(recipe.schedule, "monitor", None))):
        if monitor is not None and monitor not in cols and (key != "stopping.monitor" or recipe.stopping.enabled
                                                              or recipe.checkpoint.best):
            problems.append(f"{key}: got {monitor!r}, not logged for a {task} task; choose one of {', '.join(cols)}")
    if problems:
        raise RecipeError(problems)


# ------------------------------------------------------------------------------ the step's parts
def penalties(reg, model: nn.Module) -> tuple[Penalty, ...]:
    """Loss terms added to the batch loss, in this order: L2, then L1."""
    decay, rest = split_parameters(model)
    params = decay + rest if reg.penalize_bias_and_norm else decay
    out: list[Penalty] = []
    if reg.l2:
        out.append(lambda: l2_penalty(params, reg.l2))
    if reg.l1:
        out.append(lambda: l1_penalty(params, reg.l1))
    return tuple(out)


def clip_by_value(value: float) -> Transform:
    def clip(params: list[torch.Tensor], norm: torch.Tensor | None) -> None:
        torch.nn.utils.clip_grad_value_(params, value)
        return None                   # the norm changed: a later transform measures it again
    return clip


def clip_by_global_norm(max_norm: float) -> Transform:
    def clip(params: list[torch.Tensor], norm: torch.Tensor | None) -> torch.Tensor | None:
        if norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return None
    return clip


def decoupled_decay(optimizer: torch.optim.Optimizer) -> Transform:
    def decay(params: list[torch.Tensor], norm: torch.Tensor | None) -> torch.Tensor | None:
        apply_decoupled_decay(optimizer)
        return norm
    return decay


def transforms(t, optimizer: torch.optim.Optimizer) -> tuple[Transform, ...]:
    """Gradient transforms applied in order between backward and the optimizer step."""
    out: list[Transform] = []
    if t.clip_value is not None:
        out.append(clip_by_value(t.clip_value))
    if t.clip_norm is not None:
        out.append(clip_by_global_norm(t.clip_norm))
    out.append(decoupled_decay(optimizer))
    return tuple(out)


# ------------------------------------------------------------------------------ stateful deciders and the LR
def build_components(recipe, base_lr: float) -> dict[str, Any]:
    """The run's stateful deciders, by the name they are saved under in every checkpoint. After each
    healthy epoch the loop hands its history row to each one's `after_epoch(epoch, row)`, which may
    return a stop reason; `state_dict` / `load_state_dict` are the resume's."""
    s = recipe.stopping
    out: dict[str, Any] = {
        # The best-epoch monitor also decides the "best" checkpoint when early stopping is off.
        "monitor": EarlyStopping.from_section(s.model_copy(update={"patience": 10**9}), stops=False),
        "guard": NonFiniteGuard.from_section(recipe.watch),
    }
    if s.enabled:
        out["stopper"] = EarlyStopping.from_section(s)
    if recipe.schedule.kind == "reduce_on_plateau":
        out["plateau"] = Plateau(recipe.schedule, base_lr)
    return out


def lr_policy(recipe, base_lrs: list[float], spe: int, total: int,
              components: dict[str, Any]) -> Callable[[int], list[float]]:
    """step -> each parameter group's LR. The plateau and NaN-guard scales are read from their
    components when called, so the one owner (the Trainer) applies it after every step and decision."""
    sched, swa = recipe.schedule, recipe.train.average
    plateau, guard = components.get("plateau"), components["guard"]
    floor = getattr(sched, "min_lr", 0.0)
    swa_on = swa.kind == "swa" and swa.lr is not None
    swa_start = (swa.start_epoch - 1) * spe if swa_on else None

    def scale(step: int) -> float:
        f = lr_factor(sched, step, spe, total, base_lr=base_lrs[0])
        return f * (plateau.scale if plateau else 1.0) * guard.lr_scale

    def lr(step: int) -> list[float]:
        if swa_on and step >= swa_start:     # the SWA phase: anneal from the schedule's rate to swa.lr
            start = scale(swa_start)
            return [swa_lr(step, start_step=swa_start, anneal_steps=swa.anneal_epochs * spe, lr_start=b * start,
                           swa_lr=swa.lr, strategy=swa.anneal_strategy) for b in base_lrs]
        f = scale(step)
        return [max(b * f, floor) if plateau else b * f for b in base_lrs]
    return lr
