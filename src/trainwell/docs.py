"""Generate docs/recipe.md from the recipe schema: `python -m trainwell.docs > docs/recipe.md`.

The schema is the single source of every key's type, default, range and meaning; a test keeps
the committed page equal to this output.
"""

from __future__ import annotations

import sys
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import recipe as R
from .recipe_errors import section_members

INTRO = """# Recipe reference

A recipe is one TOML file; every key has a default, so an empty file is the default recipe.
`trainwell recipe` prints the resolved recipe with every key; `--set KEY=VALUE` overrides a key
(the value is parsed as TOML). Tagged sections (`[optimizer]`, `[schedule]`, ...) accept the keys of
their `kind` only. Unknown keys are refused with the closest valid name.

Conventions: epochs are numbered from 1; `optimizer.weight_decay` is decoupled decay scaled by
the learning rate (PyTorch's AdamW convention, w <- w - lr*wd*w; Loshchilov & Hutter's paper
applies the schedule multiplier only); `regularization.l2` is the coupled penalty lambda/2*||w||^2
added to the loss; biases and normalization parameters are exempt from both unless asked.

This page is generated from the schema by `python -m trainwell.docs`.
"""


def _type(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is Annotated:
        return _type(get_args(ann)[0])
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in get_args(ann))
    if origin in (Union, types.UnionType):
        text = " or ".join(_type(a) for a in get_args(ann) if a is not type(None))
        return text + " (optional)" if type(None) in get_args(ann) else text
    if origin is dict:
        return "table: dotted key -> distribution"
    if origin in (tuple, list):
        args = [a for a in get_args(ann) if a is not Ellipsis]
        return f"list of {_type(args[0])}" if args else "list"
    return getattr(ann, "__name__", str(ann))


def _constraints(info: FieldInfo) -> str:
    out = []
    for m in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _default(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, BaseModel):
        return "table"
    return f"`{R._toml_value(v)}`"


def _table(model: type[BaseModel], prefix: str, out: list[str], skip: set[str] = frozenset()) -> None:
    out.append("| key | type | default | range | meaning |")
    out.append("|---|---|---|---|---|")
    for name, info in model.model_fields.items():
        if name in skip or (isinstance(info.default, BaseModel)):
            continue
        out.append(f"| `{prefix}{info.alias or name}` | {_type(info.annotation)} | {_default(info.default)} | "
                   f"{_constraints(info)} | {info.description or ''} |")
    out.append("")


def _section(name: str, info: FieldInfo, out: list[str]) -> None:
    members = section_members(info)
    out.append(f"## [{name}]\n")
    if len(members) == 1:
        _table(members[0], f"{name}.", out)
        for sub, sub_info in members[0].model_fields.items():
            if section_members(sub_info) and isinstance(sub_info.default, BaseModel):
                _section(f"{name}.{sub}", sub_info, out)
        return
    default = info.default
    about = f"{info.description} " if info.description else ""
    out.append(f"{about}Tagged by `{name}.kind`; default `{getattr(default, 'kind', '')}`.\n")
    for m in members:
        kinds = ", ".join(f'`"{k}"`' for k in get_args(m.model_fields["kind"].annotation))
        out.append(f"### kind = {kinds}\n")
        if set(m.model_fields) == {"kind"}:        # a kind without keys: what it means
            out.append(f"{' '.join((m.__doc__ or '').split())}\n")
        else:
            _table(m, f"{name}.", out, skip={"kind"})


def render() -> str:
    out = [INTRO, "## Top level\n"]
    _table(R.Recipe, "", out)
    for name, info in R.Recipe.model_fields.items():
        if section_members(info) and isinstance(info.default, BaseModel):
            _section(name, info, out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
