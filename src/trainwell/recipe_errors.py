"""Turning schema violations into one-line problems: `field: got X, must be Y`, unknown keys
with the closest valid name, and keys that belong to another `kind` of a tagged section."""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import RecipeError

# Direction of the metrics trainwell itself logs; any other monitor needs an explicit mode.
KNOWN_DIRECTIONS = {"loss": "min", "mse": "min", "mae": "min", "accuracy": "max", "f1": "max", "r2": "max",
                    "balanced_accuracy": "max", "precision_pos": "max", "recall_pos": "max", "auroc_pos": "max",
                    "nll": "min", "ece": "min"}


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise RecipeError([f"{key}: {part!r} is a value, not a section"])
        node = child
    node[parts[-1]] = value


def field_keys(model: type[BaseModel]) -> dict[str, str]:
    """Recipe key -> attribute name (they differ for keys that are Python keywords, like init.from)."""
    return {info.alias or name: name for name, info in model.model_fields.items()}


def section_members(info) -> tuple[type[BaseModel], ...]:
    """The section models a field accepts: one, or the members of a tagged union."""
    ann = info.annotation
    if get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    members = get_args(ann) if get_origin(ann) in (Union, types.UnionType) else (ann,)
    return tuple(m for m in members if isinstance(m, type) and issubclass(m, BaseModel))


def _member_of_kind(members: tuple[type[BaseModel], ...], kind: Any) -> type[BaseModel] | None:
    for m in members:
        if "kind" in m.model_fields and kind in get_args(m.model_fields["kind"].annotation):
            return m
    return None


def _section_model(model: type[BaseModel], name: str, raw_value: Any) -> type[BaseModel] | None:
    """The model class of field `name`, resolving a tagged union by the raw `kind`."""
    info = model.model_fields.get(name)
    if info is None:
        return None
    members = section_members(info)
    if len(members) <= 1:
        return members[0] if members else None
    kind = raw_value.get("kind") if isinstance(raw_value, dict) else None
    return _member_of_kind(members, kind if kind is not None else getattr(info.default, "kind", None))


def _dotted(root: type[BaseModel], loc: tuple) -> str:
    """pydantic's error location without the union tags it inserts: (optimizer, adam, lr) -> optimizer.lr."""
    path: list[str] = []
    model: type[BaseModel] | None = root
    members: tuple[type[BaseModel], ...] = ()
    for part in loc:
        if members:
            tagged = _member_of_kind(members, part)
            members = ()
            if tagged is not None:
                model = tagged
                continue
        path.append(str(part))
        info = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        found = section_members(info) if info is not None else ()
        model, members = (found[0], ()) if len(found) == 1 else (None, found)
    return ".".join(path)


def _walk_unknown(model: type[BaseModel], raw: dict[str, Any], prefix: str, out: list[str],
                  siblings: tuple[type[BaseModel], ...] = ()) -> None:
    keys = field_keys(model)
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in keys:
            out.append(f"{dotted}: unknown key; {_hint(key, model, prefix, siblings)}")
            continue
        name = keys[key]
        sub = _section_model(model, name, value)
        if sub is not None and isinstance(value, dict):
            members = section_members(model.model_fields[name])
            _walk_unknown(sub, value, f"{dotted}.", out, members if len(members) > 1 else ())


def _hint(key: str, model: type[BaseModel], prefix: str, siblings: tuple[type[BaseModel], ...]) -> str:
    valid = list(field_keys(model))
    owners = [k for m in siblings if key in m.model_fields for k in get_args(m.model_fields["kind"].annotation)]
    if owners:
        return f"it belongs to kind {' / '.join(owners)}; valid keys here: " + ", ".join(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    return "valid keys: " + ", ".join(valid)


def unknown_key_problems(root: type[BaseModel], raw: dict[str, Any]) -> list[str]:
    found: list[str] = []
    _walk_unknown(root, raw, "", found)
    return found


def drop_unknown(model: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` without the unknown keys (already reported), so pydantic reports only the rest."""
    out = {}
    keys = field_keys(model)
    for key, value in raw.items():
        if key not in keys:
            continue
        sub = _section_model(model, keys[key], value)
        out[key] = drop_unknown(sub, value) if sub is not None and isinstance(value, dict) else value
    return out


def _expected(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        return f"must be {bounds[kind]} {next(iter(ctx.values()))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "must be an integer"
    if kind in ("float_type", "float_parsing"):
        return "must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind in ("tuple_type", "list_type"):
        return "must be a list"
    if kind in ("too_short", "too_long"):
        return err["msg"].lower().replace("tuple", "list")
    if kind == "model_type" or kind == "model_attributes_type" or kind == "dict_type":
        return "must be a table (a [section])"
    return err["msg"]


def format_errors(root: type[BaseModel], exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        if err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
            problems.append(msg)
            continue
        if err["type"] == "extra_forbidden":
            continue
        dotted = _dotted(root, err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tags = (err.get("ctx") or {}).get("expected_tags", "")
            got = (err.get("ctx") or {}).get("tag")
            valid = [t.strip().strip("'") for t in str(tags).split(",")]
            hint = difflib.get_close_matches(str(got), valid, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"{dotted}.kind: got {got!r}, must be one of {tags}{extra}")
            continue
        if err["type"] == "missing" and err["loc"] and isinstance(err["loc"][-1], int):
            # a fixed-length list given too few items: pydantic reports the first absent position
            problems.append(f"{_dotted(root, err['loc'][:-1])}: got {err.get('input')!r}, too few items "
                            f"(item {err['loc'][-1] + 1} is missing)")
            continue
        if err["type"] == "missing":
            problems.append(f"{dotted}: required")
            continue
        problems.append(f"{dotted}: got {err.get('input')!r}, {_expected(err)}")
    return problems
