"""Ensembles: several networks whose predictions are averaged.

`[train.average] kind = "ensemble"`: N members, each from its own seed (init, shuffling, dropout, augmentation) or,
with bagging, also on a bootstrap resample of the training split (Breiman 1996). The split, the
normalization and the validation and test rows are those of the recipe's seed, the same for every
member. Member 1 trains from the recipe's seed itself, so it is the plain run of that recipe.

`kind = "snapshots"`: a snapshot ensemble (Huang et al. 2017): one run with a cosine schedule with
warm restarts, and the weights at the ends of its last K cycles (where the rate reaches its
minimum) as the members.

Predictions are averaged where they are comparable: probabilities for classification (softmax,
or sigmoid for a binary head), outputs for regression (and hinge scores). `Ensemble` returns the
average in its members' own output space (the log of the mean probability, which softmax/sigmoid
map back to that probability), so the loss, the metrics and `predict` treat it as one network.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .build import build
from .errors import Interrupted
from .finish import Finisher, Outcome, Save, evaluate_splits, plain_weights, pointer
from .loop import SplitTensors, Trainer
from .progress import ProgressBar
from .schedules import cycle_end_steps
from .seeding import seed_globals


def member_seeds(seed: int, n: int) -> list[int]:
    """Member 1 uses `seed`; the others seeds spawned by numpy's SeedSequence(seed): deterministic,
    and unrelated to the streams a run derives for itself (seeding.py)."""
    children = np.random.SeedSequence(seed).spawn(n - 1)
    return [seed] + [int(c.generate_state(1)[0] % 2**31) for c in children]


def bootstrap_rows(n: int, seed: int) -> torch.Tensor:
    """n row indices drawn with replacement (the resample of one bagging member)."""
    return torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(seed))


def member_rows(recipe, k: int, train: SplitTensors) -> SplitTensors:
    """The training rows of member k (0-based): the split itself, or its bootstrap resample."""
    e = recipe.train.average
    if e.kind != "ensemble" or e.method != "bagging":
        return train
    idx = bootstrap_rows(len(train), member_seeds(recipe.seed, e.members)[k]).to(train.x.device)
    return SplitTensors(train.x.index_select(0, idx), train.y.index_select(0, idx))


def combine_rule(loss: str, task: str) -> str:
    """How member outputs are averaged: as probabilities (`prob`), or as they are (`mean`)."""
    if task == "regression" or loss == "hinge":
        return "mean"
    return "prob"


class Ensemble(nn.Module):
    """The average of its members' predictions, in the members' output space."""

    def __init__(self, members: list[nn.Module], rule: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members])
        if self.rule == "mean":
            return outs.mean(0)
        log_n = math.log(len(self.members))
        if outs.shape[-1] == 1:       # binary head: one logit; the logit of the mean sigmoid
            log_p = torch.logsumexp(F.logsigmoid(outs), 0) - log_n
            log_q = torch.logsumexp(F.logsigmoid(-outs), 0) - log_n
            return log_p - log_q
        # log of the mean softmax; also right for members that end in log_softmax (nll), whose
        # outputs log_softmax leaves unchanged
        return torch.logsumexp(F.log_softmax(outs, -1), 0) - log_n


def mean_member(reports: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per split, each metric averaged over the members."""
    out: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        keys = reports[0][split].keys()
        out[split] = {k: float(np.mean([r[split][k] for r in reports])) for k in keys}
    return out


def _conclude_members(kind: str, models: list[nn.Module], reports: list[dict[str, Any]], trainer, prepared,
                      save: Save, meta: dict[str, Any]) -> Outcome:
    """Evaluate every member and their ensemble; save each member as <kind>-K.safetensors."""
    for k, (model, report) in enumerate(zip(models, reports), start=1):
        report.update(evaluate_splits(trainer, prepared, model))
        report["checkpoint"] = save(f"{kind}-{k}.safetensors", model, {**meta, kind: k})
    ensemble = Ensemble(models, combine_rule(trainer.setup.loss_kind, trainer.setup.task)).eval()
    section = {"kind": "ensemble" if kind == "member" else "snapshots", **meta,
               f"{kind}s": reports, "mean_member": mean_member(reports), **evaluate_splits(trainer, prepared,
                                                                                            ensemble)}
    return Outcome(ensemble, section, pointer([r["checkpoint"] for r in reports], ensemble=True))


# ------------------------------------------------------------------------------ kind = "ensemble"
class EnsembleRun(Finisher):
    """Trains members 2..N after the run's own trainer (member 1) and averages them all."""

    kind = "ensemble"

    def __init__(self, recipe, quiet: bool) -> None:
        self.recipe, self.quiet = recipe, quiet

    @classmethod
    def from_recipe(cls, recipe, quiet: bool = True) -> EnsembleRun:
        return cls(recipe, quiet)

    def conclude(self, trainer: Trainer, prepared, save: Save) -> Outcome:
        e = self.recipe.train.average
        seeds = member_seeds(self.recipe.seed, e.members)
        models = [trainer.model]
        reports = [self._summary(trainer, seeds[0])]
        for k in range(1, e.members):
            member = self._train_member(k, seeds[k], trainer, prepared)
            models.append(member.model)
            reports.append(self._summary(member, seeds[k]))
            if not self.quiet:
                print(f"member {k + 1}/{e.members} (seed {seeds[k]}): stopped at epoch "
                      f"{member.state.stopped_epoch} ({member.state.stop_reason})")
        return _conclude_members("member", models, reports, trainer, prepared, save,
                                 {"size": e.members, "method": e.method})

    def _summary(self, trainer: Trainer, seed: int) -> dict[str, Any]:
        st, n = trainer.state, len(trainer.setup.train)
        out = {"seed": seed, "best_epoch": trainer.best_epoch_number, "stopped_epoch": st.stopped_epoch,
               "stop_reason": st.stop_reason}
        if self.recipe.train.average.method == "bagging":
            out["distinct_train_rows"] = int(torch.unique(bootstrap_rows(n, seed)).numel())
        return out

    def _train_member(self, k: int, seed: int, first: Trainer, prepared) -> Trainer:
        setup = build(self.recipe.replace(seed=seed), prepared, first.setup.device,
                      train=member_rows(self.recipe, k, prepared.train))
        seed_globals(seed)                # dropout and any other draw from the global generators
        trainer = Trainer(setup, progress=ProgressBar() if ProgressBar.wanted(self.quiet) else None)
        try:
            trainer.fit()
        except Interrupted as exc:      # members after the first keep no checkpoint: say what a resume does
            n, where = self.recipe.train.average.members, first.run_dir
            hint = f"; member 1 is saved, `trainwell resume {where}` trains members 2..{n} again" if where else ""
            raise Interrupted(f"{exc} (ensemble member {k + 1} of {n}){hint}") from None
        return trainer


# ------------------------------------------------------------------------------ kind = "snapshots"
class Snapshots(Finisher):
    """Keeps the weights at the ends of the last K cosine cycles (cycle ends counted in steps)."""

    kind = "snapshots"

    def __init__(self, k: int, schedule) -> None:
        self.k, self.schedule = k, schedule
        self.kept: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=k)   # (step, weights)
        self._ends: set[int] = set()
        self.note: str | None = None

    @classmethod
    def from_recipe(cls, recipe, quiet: bool = True) -> Snapshots:
        return cls(recipe.train.average.count, recipe.schedule)

    def fit_start(self, trainer) -> None:
        self._ends = set(cycle_end_steps(self.schedule, trainer.setup.steps_per_epoch, trainer.setup.total_steps))
        due = min(self.k, sum(e <= trainer.state.step for e in self._ends))
        if len(self.kept) < due:
            self.note = (f"resumed at epoch {trainer.state.epoch} without {due - len(self.kept)} snapshot(s) "
                         "taken before: they are missing")

    def step_end(self, trainer) -> None:
        if trainer.state.step in self._ends:
            self.kept.append((trainer.state.step,
                              {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}))

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint (runstate.py): a resume or a NaN rollback restores the snapshots."""
        return {"steps": [step for step, _ in self.kept], "weights": [weights for _, weights in self.kept]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = deque(zip(state["steps"], state["weights"]), maxlen=self.k)

    def conclude(self, trainer: Trainer, prepared, save: Save) -> Outcome:
        spe = trainer.setup.steps_per_epoch
        extra = {"note": self.note} if self.note else {}
        if len(self.kept) < 2:
            st = trainer.state
            return Outcome(None, {"kind": "snapshots", "kept": len(self.kept), **extra,
                          "reason": f"{len(self.kept)} cosine cycle(s) completed before training stopped at "
                                    f"epoch {st.stopped_epoch} ({st.stop_reason}); a snapshot ensemble needs "
                                    "2, so the plain model is the run's model"}, plain_weights(trainer))
        models, reports = [], []
        for step, weights in self.kept:
            model = copy.deepcopy(trainer.model)
            model.load_state_dict(weights)
            models.append(model.eval())
            reports.append({"step": step, "epoch": round(step / spe, 3)})
        return _conclude_members("snapshot", models, reports, trainer, prepared, save,
                                 {"requested": self.k, "kept": len(self.kept), **extra})
