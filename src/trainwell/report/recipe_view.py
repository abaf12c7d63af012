"""The report's recipe section: the keys that apply to this run in full, the others folded away
(<details>), each with the reason it does not apply (e.g. the synthetic-data keys of a CSV run,
the leaky_relu slope of a relu network, the rollback keys when the run stops on NaN).

The recipe.toml text is split line by line, so what the page shows is the file itself, every key
once, in its own order."""

from __future__ import annotations

import html
import tomllib
import warnings
from typing import Any

from ..data.sources import BUNDLED, CUSTOM_SOURCE, SYNTHETIC
from ..recipe import Recipe, RecipeError

IMAGE_ONLY_AUGMENT = ("crop_padding", "crop_mode", "vflip", "hflip", "cutout_size", "cutmix_alpha")


def unused_keys(recipe: dict[str, Any], task: str, image: bool) -> dict[str, str]:
    """Dotted recipe key -> why it does not apply to a run of this recipe on this task (`image`: the
    inputs are images). Keys left out apply, or may (a value at its default that switches a feature
    off still says that the feature is off)."""
    d, m, i = recipe.get("data", {}), recipe.get("model", {}), recipe.get("init", {})
    source = d.get("source", "")
    file = source not in BUNDLED and source not in SYNTHETIC and source != CUSTOM_SOURCE
    out: dict[str, str] = {}

    def fold(keys: str, why: str, when: bool = True) -> None:
        if when:
            out.update({k: why for k in keys.split()})

    synthetic = f"synthetic sources only; data.source = {source!r}"
    fold("data.n_samples data.noise", synthetic, source not in SYNTHETIC)
    fold("data.classes", "the spirals source only", source != "spirals")
    fold("data.shape_kinds", "the shapes source only", source != "shapes")
    fold("data.image_size data.channels", "shapes and image folders only", source != "shapes" and not (file and image))
    fold("data.features", "teacher and polynomial sources only",
         isinstance(d.get("features"), int) and source not in ("teacher", "polynomial"))
    fold("data.format data.target", "file sources only", not file)
    fold("data.drop data.categorical data.max_categories", "CSV/Parquet files only", not file or image)
    fold("data.target_normalize", "regression only", task != "regression")
    fold("data.stratify", "classification only", task == "regression")
    fold("data.split data.stratify", "data.split_file gives the rows", bool(d.get("split_file")))
    fold("data.whiten_eps", "pca_whiten/zca_whiten only", d.get("normalize") not in ("pca_whiten", "zca_whiten"))
    fold(" ".join(f"data.augment.{k}" for k in IMAGE_ONLY_AUGMENT), "images only", not image)
    aug = d.get("augment", {})
    fold("data.augment.crop_mode", "random crop off (crop_padding = 0)", not aug.get("crop_padding"))
    fold("data.augment.mix_prob", "mixup and cutmix off", not aug.get("mixup_alpha") and not aug.get("cutmix_alpha"))

    fold("model.negative_slope", f"leaky_relu only; activation = {m.get('activation')!r}",
         "activation" in m and m["activation"] != "leaky_relu")
    fold("model.sync_batchnorm", "batch norm only", "norm" in m and m["norm"] != "batch")

    weights = i.get("weights", "")
    fold("init.value", "weights = constant only", weights != "constant")
    fold("init.mean init.std", "weights = normal only", weights != "normal")
    fold("init.a init.b", "weights = uniform only", weights != "uniform")
    fold("init.gain", "xavier, lecun and orthogonal only", not weights.startswith(("xavier", "lecun", "orthogonal")))
    fold("init.mode", "kaiming and lecun only", not weights.startswith(("kaiming", "lecun")))
    fold("init.bias_value", "bias = constant only", i.get("bias") != "constant")
    fold("init.freeze", "fine-tuning only (init.from)", not i.get("from"))
    if m.get("kind") == "custom":
        fold(" ".join(f"init.{k}" for k in ("weights", "bias", "value", "mean", "std", "a", "b", "gain", "mode",
                                            "bias_value")), "a custom module keeps its own initialization")

    loss = recipe.get("loss", {})
    kind = loss.get("kind", "auto")
    classification_loss = kind in ("cross_entropy", "bce_with_logits") or (kind == "auto" and task != "regression")
    fold("loss.label_smoothing", "cross_entropy and bce_with_logits only", not classification_loss)
    fold("loss.delta", "huber only", kind != "huber")
    fold("loss.margin", "hinge only", kind != "hinge")
    fold("loss.class_weight", "classification only", task == "regression")
    fold("train.sampler", "classification only", task == "regression")

    opt = recipe.get("optimizer", {})
    fold("optimizer.decay_bias_and_norm", "weight_decay = 0", not opt.get("weight_decay"))
    fold("optimizer.dampening optimizer.nesterov", "momentum = 0", opt.get("kind") == "sgd" and not opt.get("momentum"))
    fold("schedule.warmup_start_factor", "no warmup (warmup_epochs = 0)", not recipe.get("schedule", {}).get("warmup_epochs"))
    reg = recipe.get("regularization", {})
    fold("regularization.penalize_bias_and_norm", "l1 = l2 = 0", not reg.get("l1") and not reg.get("l2"))

    stop = recipe.get("stopping", {})
    fold(" ".join(f"stopping.{k}" for k in stop if k != "enabled"), "early stopping off",
         stop.get("enabled") is False)
    w = recipe.get("watch", {})
    fold("watch.probe_every", "probes off", w.get("probes") is False)
    fold("watch.nan_lr_factor watch.nan_retries", "on_nan = stop (rollback only)", w.get("on_nan", "stop") != "rollback")
    search = recipe.get("search", {})
    fold(" ".join(f"search.{k}" for k in search if k != "space"), "no search space (trainwell search only)",
         not search.get("space"))
    return out


def _blocks(toml_text: str) -> list[tuple[str | None, list[str]]]:
    """recipe.toml as (table header or None, its key lines); blank lines dropped."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in toml_text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            blocks.append((s[1:-1], []))
        elif s:
            blocks[-1][1].append(line)
    return blocks


def _key(header: str | None, line: str) -> str:
    """The dotted key of a `key = value` line or of dump_toml's `# key =  (unset)` line."""
    name = line.lstrip("# ").split("=", 1)[0].strip()
    return f"{header}.{name}" if header else name


def split_recipe(toml_text: str, task: str, image: bool) -> tuple[str, str, int]:
    """(the lines that apply, the folded lines each with its reason as a comment, how many folded)."""
    try:
        recipe = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError:
        return toml_text, "", 0
    try:                    # every key, the unset ones (None) included
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recipe = Recipe.from_dict(recipe).to_dict()
    except (RecipeError, ValueError):
        pass
    unused = unused_keys(recipe, task, image)
    shown, folded, count = [], [], 0
    for header, lines in _blocks(toml_text):
        keep = [ln for ln in lines if _key(header, ln) not in unused]
        away = [f"{ln:<40} # {unused[_key(header, ln)]}" for ln in lines if _key(header, ln) in unused]
        count += len(away)
        for part, rows in ((shown, keep), (folded, away)):
            if rows:
                part.extend(([""] if part else []) + ([f"[{header}]"] if header else []) + rows)
    return "\n".join(shown) + "\n", ("\n".join(folded) + "\n") if folded else "", count


def recipe_section(toml_text: str, task: str, image: bool) -> str:
    shown, folded, count = split_recipe(toml_text, task, image)
    page = f"<pre id='recipe'>{html.escape(shown)}</pre>"
    if count:
        page += (f"<details id='recipe-unused'><summary>{count} more keys that do not apply to this run "
                 f"(recipe.toml has them all)</summary><pre>{html.escape(folded)}</pre></details>")
    return page
