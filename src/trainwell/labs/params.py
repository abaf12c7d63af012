"""A lab's parameters: what a teacher may change for a lesson (`trainwell lab NAME --PARAM VALUE`).

Each lab module declares `PARAMS = {name: Param(...)}`. The command line takes them as options
(`--lrs 0.03,0.09`) or as `--set lrs=0.03,0.09`; the Python API as keyword arguments
(`tw.lab("gd-path", lrs=[0.03, 0.09])`). Every value is checked before anything runs, and a bad
one is one line naming the lab, the parameter and what is valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TrainwellError


@dataclass(frozen=True)
class Param:
    kind: str                       # "float", "int", "floats", "names", "choice", "text" (checked by the lab)
    default: Any
    help: str
    low: float | None = None        # numbers: smallest allowed (inclusive unless low_open)
    high: float | None = None       # numbers: largest allowed (inclusive)
    low_open: bool = False
    choices: Sequence[str] = ()     # names/choice: the allowed values
    quick: Any = None               # the default under --quick, when it differs

    def describe(self) -> str:
        """What is valid, in words (used by errors and --help)."""
        what = {"float": "a number", "int": "an integer", "floats": "comma-separated numbers",
                "names": "comma-separated names", "choice": "one of", "text": "text"}[self.kind]
        if self.choices:
            return f"{what} {', '.join(self.choices)}" if self.kind == "choice" else f"{what} of {', '.join(self.choices)}"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        return what + (f" {' and '.join(bounds)}" if bounds else "")


def _number(lab: str, name: str, p: Param, raw: Any, integer: bool) -> float | int:
    def bad() -> TrainwellError:
        return TrainwellError(f"lab {lab}: --{name} got {raw!r}, expected {p.describe()}")

    if isinstance(raw, bool):
        raise bad()
    try:
        if isinstance(raw, str) and raw.count("/") == 1:        # a fraction, e.g. tanh's gain 5/3
            num, den = raw.split("/")
            value = float(num) / float(den)
        else:
            value = float(raw) if not isinstance(raw, int | float) else raw
    except (TypeError, ValueError, ZeroDivisionError):
        raise bad() from None
    if not math.isfinite(value) or (integer and float(value) != int(value)):
        raise bad()
    if p.low is not None and (value <= p.low if p.low_open else value < p.low):
        raise bad()
    if p.high is not None and value > p.high:
        raise bad()
    return int(value) if integer else float(value)


def _items(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [s.strip() for s in raw.strip("[]").split(",") if s.strip()]
    if isinstance(raw, list | tuple):
        return list(raw)
    return [raw]


def parse(lab: str, name: str, p: Param, raw: Any) -> Any:
    """`raw` (text from the command line, or a Python value) as the parameter's value; or one-line error."""
    if p.kind in ("float", "int"):
        return _number(lab, name, p, raw, p.kind == "int")
    if p.kind == "floats":
        items = _items(raw)
        if not items:
            raise TrainwellError(f"lab {lab}: --{name} got {raw!r}, expected {p.describe()}")
        return [_number(lab, name, p, x, False) for x in items]
    if p.kind == "text":
        return str(raw)
    items = _items(raw) if p.kind == "names" else [raw]
    bad = [x for x in items if not isinstance(x, str) or x not in p.choices]
    if bad or not items:
        raise TrainwellError(f"lab {lab}: --{name} got {raw!r}, expected {p.describe()}")
    if p.kind == "names" and len(set(items)) != len(items):
        raise TrainwellError(f"lab {lab}: --{name} got {raw!r}, names repeat")
    return items if p.kind == "names" else items[0]


def resolve(lab: str, params: dict[str, Param], given: dict[str, Any], quick: bool,
            check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every parameter's value: the given ones parsed and checked, the others at their (quick) default."""
    unknown = [k for k in given if k not in params]
    if unknown:
        takes = ", ".join(f"--{k}" for k in params) or "none"
        raise TrainwellError(f"lab {lab}: has no parameter {unknown[0]!r} (its parameters: {takes})")
    values = {k: (p.quick if quick and p.quick is not None else p.default) for k, p in params.items()}
    values.update({k: parse(lab, k, params[k], v) for k, v in given.items()})
    if check is not None:
        check(values)
    return values


def changed(params: dict[str, Param], values: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The values that differ from the defaults (what a caption or label should mention)."""
    return {k: v for k, v in values.items()
            if v != (params[k].quick if quick and params[k].quick is not None else params[k].default)}
