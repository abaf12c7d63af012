"""`calibrate = "temperature"`: temperature scaling (Guo et al. 2017) of a trained classifier.

After training, one scalar T > 0 is fitted on the validation split by minimizing the negative
log-likelihood of softmax(z / T) (sigmoid(z / T) for a binary head's one logit) with L-BFGS over
log T, so T stays positive. Dividing every row's outputs by the same T > 0 does not change which
class is largest: accuracy and every label metric stay exactly as they were; only the confidence
moves. T > 1 softens an over-confident model, T < 1 sharpens an under-confident one.

The test split is never used to fit T. The run stores T and the validation/test NLL and ECE
before and after in metrics.json ("temperature"); the test metrics, `predict`, `tw.load` and the
estimators' `predict_proba` use the scaled outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scale_outputs(out: torch.Tensor, temperature: float, loss_kind: str) -> torch.Tensor:
    """A classifier's outputs with the temperature applied, in the same space: logits / T, or for the
    nll head (log-probabilities) log_softmax(log p / T), i.e. probabilities p^(1/T), renormalized."""
    scaled = out / temperature
    return F.log_softmax(scaled, 1) if loss_kind == "nll" and out.shape[1] > 1 else scaled


def nll(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labels under the outputs (one logit: binary; else logits or
    log-probabilities, whose log_softmax is themselves)."""
    if out.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], target.to(out.dtype))
    return F.cross_entropy(out, target.long())


def all_right(out: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether every row's label has the strictly largest output (one logit: the right sign). Then each
    row's nll(out / T) falls as T falls, towards 0: no T > 0 minimizes it."""
    if out.shape[1] == 1:
        return bool(((out[:, 0] > 0) == target.bool()).all() and (out[:, 0] != 0).all())
    mine = out.gather(1, target.long().reshape(-1, 1))
    others = out.masked_fill(F.one_hot(target.long(), out.shape[1]).bool(), float("-inf"))
    return bool((mine[:, 0] > others.amax(1)).all())


def fit_temperature(out: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """The T > 0 minimizing nll(out / T, target): L-BFGS (strong Wolfe line search) over log T, from T = 1,
    in float64. `out`: the validation split's outputs (logits or log-probabilities), `target`: its labels.
    When every row is classified right (`all_right`) there is no minimum, only T -> 0: T = 1 is kept."""
    out = out.detach().double().cpu()
    target = target.detach().cpu()
    if len(target) == 0:
        raise ValueError("temperature scaling needs validation rows")
    if all_right(out, target):
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nll(out / log_t.exp(), target)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        return 1.0
    return t


class TemperatureScaled(nn.Module):
    """A classifier whose outputs are divided by a fitted temperature (see scale_outputs): what the run
    scores on the test split when `calibrate = "temperature"`."""

    def __init__(self, net: nn.Module, temperature: float, loss_kind: str) -> None:
        super().__init__()
        self.net, self.temperature, self.loss_kind = net, float(temperature), loss_kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale_outputs(self.net(x), self.temperature, self.loss_kind)


@torch.inference_mode()
def split_outputs(model: nn.Module, x: torch.Tensor, setup, batch: int) -> torch.Tensor:
    """A model's outputs on a split, in eval mode, under the run's precision (as its metrics are), float32."""
    was = model.training
    model.eval()
    with setup.precision.autocast():
        out = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).float()
    model.train(was)
    return out


def temperature_scale(trainer, prepared, metrics: dict, evaluate) -> nn.Module:
    """`calibrate = "temperature"` at the end of a run: T fitted on the validation split's outputs of the
    returned model (trainer.model); `metrics` gets the scaled model's "val" and "test" and a "temperature"
    section (T, and each split's nll and ece before and after). Returns the scaled model.
    `evaluate(model)`: {"val": ..., "test": ...} of a model over the whole splits."""
    setup = trainer.setup
    val = prepared.val
    out = split_outputs(trainer.model, val.x, setup, setup.settings.eval_batch_size)
    t = fit_temperature(out, val.y)
    scaled = TemperatureScaled(trainer.model, t, setup.loss_kind)
    after = evaluate(scaled)
    pick = lambda figures: {k: figures[k] for k in ("nll", "ece") if k in figures}     # noqa: E731
    metrics["temperature"] = {
        "temperature": t, "fitted_on": "val",
        **({"note": "every validation row is classified right: no temperature minimizes their NLL (it falls "
                    "as T falls to 0), so T = 1 is kept"} if all_right(out, val.y) else {}),
        "before": {split: pick(metrics[split]) for split in ("val", "test") if metrics.get(split)},
        "after": {split: pick(after[split]) for split in ("val", "test") if after.get(split)}}
    metrics["val"], metrics["test"] = after["val"], after["test"]
    return scaled
