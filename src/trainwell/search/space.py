"""The `[search]` section: which recipe keys vary, over which distributions, and how the study runs.

A space maps a dotted recipe key to a distribution, written in full or as shorthand:

    [search.space]
    "optimizer.lr" = { log_uniform = [1e-4, 1e-1] }          # = { kind = "log_uniform", low = 1e-4, high = 1e-1 }
    "model.dropout" = { uniform = [0.0, 0.5] }
    "model.hidden" = { choice = [[64], [128, 64]] }
    "train.batch_size" = { int_log = [16, 256] }

Nested TOML tables (`[search.space.optimizer] lr = {...}`) are read as the same dotted keys.
This module holds the schema and the recipe-side checks (every key a real recipe key, every end
of every range a valid value for it); `search.strategies` turns a space into Optuna samplers.
"""

from __future__ import annotations

import difflib
import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import RecipeError
from ..recipe_errors import KNOWN_DIRECTIONS, _member_of_kind, field_keys, section_members, set_dotted

DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int", "int_log")
STRATEGIES = ("random", "grid", "tpe", "tighten")
PRUNERS = ("none", "median", "successive_halving", "hyperband")
_DIRECTION_OF_MODE = {"min": "minimize", "max": "maximize"}


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Choice(_Dist):
    kind: Literal["choice"] = "choice"
    values: tuple[Any, ...] = Field(min_length=1, description="The values tried, each a valid value of the key.")

    def endpoints(self) -> tuple[Any, ...]:
        return self.values


class _Range(_Dist):
    def endpoints(self) -> tuple[Any, ...]:
        return (self.low, self.high)


class Uniform(_Range):
    kind: Literal["uniform"] = "uniform"
    low: float
    high: float
    step: float | None = Field(None, gt=0, description="Spacing of the values (none: continuous).")


class LogUniform(_Range):
    kind: Literal["log_uniform"] = "log_uniform"
    low: float
    high: float


class IntRange(_Range):
    kind: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(1, ge=1, description="Spacing of the integers.")


class IntLog(_Range):
    kind: Literal["int_log"] = "int_log"
    low: int
    high: int


Distribution = Annotated[Union[Choice, Uniform, LogUniform, IntRange, IntLog], Field(discriminator="kind")]


def _leaf(value: Any) -> bool:
    return isinstance(value, dict) and ("kind" in value or any(k in value for k in DISTRIBUTIONS))


def _expand(value: dict[str, Any]) -> dict[str, Any]:
    """Shorthand `{log_uniform = [a, b]}` -> `{kind = "log_uniform", low = a, high = b}`."""
    if "kind" in value:
        return value
    named = [k for k in DISTRIBUTIONS if k in value]
    if len(named) != 1:
        return value          # pydantic reports the missing or ambiguous kind
    kind = named[0]
    rest = {k: v for k, v in value.items() if k != kind}
    body = value[kind]
    if kind == "choice":
        return {"kind": kind, "values": body, **rest}
    if isinstance(body, list | tuple) and len(body) == 2:
        return {"kind": kind, "low": body[0], "high": body[1], **rest}
    return {"kind": kind, "bounds": body, **rest}     # refused as an unknown key, with the value shown


def flatten_space(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables of the space -> dotted keys; each distribution in its full form."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not _leaf(value):
            out.update(flatten_space(value, f"{dotted}."))
        else:
            out[dotted] = _expand(value) if isinstance(value, dict) else value
    return out


class SearchSection(BaseModel):
    """Hyperparameter search: `trainwell search RECIPE.toml` runs one fit per trial over this space."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    space: dict[str, Distribution] = Field(
        {}, description="Dotted recipe key -> distribution: choice = [...], uniform = [lo, hi] "
        "(optional step), log_uniform = [lo, hi], int = [lo, hi] (optional step), int_log = [lo, hi].")
    strategy: Literal[STRATEGIES] = Field(  # type: ignore[valid-type]
        "random", description="random (independent draws), grid (every combination, grid_points per range), "
        "tpe (Optuna's Tree-structured Parzen Estimator), tighten (rounds of random trials, each round's "
        "ranges narrowed to the span of the previous round's best `keep` trials).")
    trials: int = Field(20, ge=1, description="Trials to complete (a grid smaller than this runs once each).")
    metric: str = Field("val_loss", description="History column the search optimizes, read at each trial's "
                        "best epoch; a val_ column: choices are made on the validation split only.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="Whether a lower or higher metric is better; filled in for trainwell's metrics.")
    seed: int | None = Field(None, ge=0, description="Seed of the samplers (default: the recipe's seed).")
    grid_points: int = Field(3, ge=2, description="grid: values per numeric range, evenly spaced (log-spaced "
                             "for log ranges); an int range with no more values than this takes them all.")
    rounds: int = Field(3, ge=1, description="tighten: rounds the trials are divided into.")
    keep: int = Field(3, ge=1, description="tighten: best trials of a round whose span becomes the next "
                      "round's range.")
    margin: float = Field(0.1, ge=0, description="tighten: the span of the best trials is widened by this "
                          "fraction of its width on each side (in log space for log ranges), within the "
                          "original range.")
    tpe_startup: int = Field(10, ge=1, description="tpe: random trials before the model of good and bad "
                             "trials takes over.")
    pruner: Literal[PRUNERS] = Field(  # type: ignore[valid-type]
        "none", description="Stop unpromising trials early from their per-epoch metric: median (worse than "
        "the median of earlier trials at the same epoch), successive_halving, hyperband.")
    min_epochs: int = Field(2, ge=1, description="Epochs every trial runs before it may be pruned (the "
                            "median pruner's warm-up; the minimum resource of successive halving/hyperband).")
    prune_startup: int = Field(5, ge=0, description="median: trials that complete before any is pruned.")
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: 1/reduction_factor of "
                                  "the trials are promoted at each rung.")
    heartbeat_interval: int = Field(10, ge=1, description="Seconds between a running trial's heartbeats "
                                    "(database storages): a trial silent for grace_period is marked failed "
                                    "and queued again.")
    grace_period: int | None = Field(None, ge=1, description="Seconds without a heartbeat before a running "
                                     "trial counts as dead (default 2 x heartbeat_interval).")
    retrain: bool = Field(True, description="After the search, retrain the best parameters on "
                          "train+validation for the best trial's best epoch count and evaluate the test "
                          "split once.")

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("space"), dict):
            data["space"] = flatten_space(data["space"])
        metric = str(data.get("metric", "val_loss"))
        if data.get("direction") is None and metric.startswith("val_"):   # else: refused below
            base = metric.removeprefix("val_")
            if base not in KNOWN_DIRECTIONS:
                raise ValueError(f"search.direction: the direction of {data.get('metric')!r} is not known; "
                                 "set search.direction = \"minimize\" or \"maximize\"")
            data["direction"] = _DIRECTION_OF_MODE[KNOWN_DIRECTIONS[base]]
        return data

    @model_validator(mode="after")
    def _check(self) -> SearchSection:
        if not self.metric.startswith("val_"):
            raise ValueError(f"search.metric: got {self.metric!r}, must be a val_ column (e.g. val_loss, "
                             "val_accuracy): hyperparameters are chosen on the validation split")
        problems = [p for key, d in self.space.items() for p in bound_problems(key, d)]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def bound_problems(key: str, d: Any) -> list[str]:
    where = f"search.space.{key}"
    if isinstance(d, Choice):
        encoded = [json.dumps(v, sort_keys=True) for v in d.values]
        return [f"{where}: choice lists {v} twice" for i, v in enumerate(encoded) if v in encoded[:i]]
    out = []
    if not d.low < d.high:
        out.append(f"{where}: got low={d.low}, high={d.high}, need low < high")
    elif d.kind in ("log_uniform", "int_log") and d.low <= 0:
        out.append(f"{where}: got low={d.low}, a log range needs low > 0")
    elif not all(math.isfinite(v) for v in (d.low, d.high)):
        out.append(f"{where}: got low={d.low}, high={d.high}, bounds must be finite")
    step = getattr(d, "step", None)
    if step is not None and not out and not _divides(d.high - d.low, step):
        out.append(f"{where}: step {step} does not divide the range {d.low}..{d.high}")
    return out


def _divides(width: float, step: float) -> bool:
    k = width / step
    return abs(k - round(k)) < 1e-9 * max(1.0, abs(k))


def recipe_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted leaf key of a recipe dict."""
    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            out += recipe_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def apply_values(schema, base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A recipe dict with dotted values set (`schema`: the Recipe class). A changed `kind` comes first
    and keeps only the keys of the section that the new kind accepts (its other keys take the new
    kind's defaults)."""
    raw = json.loads(json.dumps(base))
    for key, value in sorted(values.items(), key=lambda kv: not kv[0].endswith(".kind")):
        section, _, leaf = key.rpartition(".")
        node = raw.get(section) if leaf == "kind" and "." not in section else None
        if isinstance(node, dict) and node.get("kind") != value:
            member = _member_of_kind(section_members(schema.model_fields[section]), value)
            accepted = field_keys(member) if member is not None else {}
            raw[section] = {k: v for k, v in node.items() if k in accepted}
        set_dotted(raw, key, value)
    return raw


def resolved(schema, raw: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe dict with every default filled in, or None when it is not a valid recipe."""
    try:
        return schema.from_dict(raw).to_dict()
    except RecipeError:
        return None


def searched_kinds(space: dict[str, Any]) -> dict[str, Any]:
    return {k: d for k, d in space.items() if k.endswith(".kind") and k.count(".") == 1 and isinstance(d, Choice)}


def space_problems(recipe: Any) -> list[str]:
    """Each space key must be a key of this recipe (or of a `kind` the space also tries), and both
    ends of its range (every choice) a valid value of it: checked by validating the recipe so set."""
    schema = type(recipe)
    base = recipe.to_dict()
    base.pop("search", None)
    # The recipes the space can reach through its kinds: the base one and one per tried kind.
    variants = [base]
    for key, dist in searched_kinds(recipe.search.space).items():
        variants += [r for r in (resolved(schema, apply_values(schema, base, {key: v})) for v in dist.values) if r is not None]
    problems = []
    for key, dist in recipe.search.space.items():
        holders = [v for v in variants if key in recipe_keys(v)]
        if not holders:
            keys = sorted({k for v in variants for k in recipe_keys(v)})
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "keys are written as in `trainwell recipe`, " \
                "e.g. optimizer.lr"
            problems.append(f"search.space: {key!r} is not a key of this recipe; {hint}")
            continue
        for value in dist.endpoints():
            try:
                schema.from_dict(apply_values(schema, holders[0], {key: value}))
            except RecipeError as exc:
                problems.append(f"search.space.{key}: {value!r} is not a valid value ({'; '.join(exc.problems)})")
    return problems
