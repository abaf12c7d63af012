"""The labs: the lectures' experiments, one small seeded CPU run each (`trainwell lab NAME`).

Every lab module exposes `run(options) -> LabResult`; `run_lab` runs one, prints its table and
writes its figures, table and page (see `page.py`). The registry holds the one-line descriptions,
so `trainwell lab --list` imports no lab.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any

from ..errors import TrainwellError

# lab name (CLI) -> (module in this package, one-line description)
LABS: dict[str, tuple[str, str]] = {
    "gd-path": ("gd_path", "gradient descent on f(x)=x² for several learning rates: converging, oscillating, "
                "diverging; the zig-zag on an ill-conditioned quadratic"),
    "init": ("initialization", "activation histograms and gradient norms per layer of a 10-layer net for "
             "tanh/ReLU with N(0,0.01), N(0,1), Xavier, He"),
    "optimizers": ("optimizers", "SGD, momentum, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW on "
                   "Rosenbrock, Beale, a saddle, an ill-conditioned quadratic"),
    "regularization": ("regularization", "an overfitting net without and with L2, weight decay, L1, dropout, "
                       "DropConnect, batch norm, label smoothing, early stopping, augmentation"),
    "lr-range": ("lr_range", "the LR range test: loss vs exponentially growing LR, steepest/valley/min÷10 "
                 "suggestions and their spread over seeds"),
    "lr-curves": ("learning_rate", "loss per epoch for a too-low, a good (from the range test), a too-high and a "
                  "far-too-high learning rate, as in the lecture's figure"),
    "schedules": ("schedule_curves", "the learning-rate curve of every schedule kind (and warmup) over one run, "
                  "in one figure"),
    "search-layout": ("search_layout", "grid vs random search with one important and one unimportant "
                      "hyperparameter (Bergstra & Bengio 2012)"),
    "ablate": ("ablate", "RECIPE as baseline plus one variant per technique switched off/on, several seeds: "
               "mean ± std and the difference"),
}


# The labs that read a recipe (RECIPE, --set) and the ones that repeat over seeds (--seeds).
RECIPE_LABS = ("regularization", "lr-range", "ablate", "lr-curves")
SEEDS_LABS = ("lr-range", "search-layout", "ablate", "regularization")


@dataclass(frozen=True)
class LabOptions:
    quick: bool = False                  # a much smaller run, for tests and a first look
    seed: int = 0
    seeds: int | None = None             # repeats for the labs that report a spread (None: the lab's default)
    recipe: str | None = None            # a recipe TOML (lr-range, regularization, ablate)
    overrides: dict[str, Any] = field(default_factory=dict)   # --set KEY=VALUE into that recipe
    params: dict[str, Any] = field(default_factory=dict)      # the lab's own parameters (labs/params.py)
    dpi: float = 100                     # figure resolution (pixels per inch)
    fmt: str = "png"                     # figure files: png or svg


def lab_module(name: str):
    if name not in LABS:
        close = difflib.get_close_matches(name, LABS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TrainwellError(f"lab: got {name!r}, expected one of {', '.join(LABS)}{hint}")
    return import_module(f".{LABS[name][0]}", __name__)


def describe_labs() -> list[tuple[str, str]]:
    return [(name, description) for name, (_, description) in LABS.items()]


def default_out(name: str) -> Path:
    return Path("runs") / "labs" / name


def run_lab(name: str, options: LabOptions | None = None, out: str | Path | None = None,
            quiet: bool = False, write: bool = True):
    """Run lab `name`, print its table (unless quiet), write its files (unless not `write`); returns
    (result, page path or None)."""
    from .page import print_table, write_lab

    options = options or LabOptions()
    module = lab_module(name)
    options = split_set(name, options)
    check_options(name, options)
    options = replace(options, params=lab_params(name, options.params, options.quick))
    result = module.run(options)
    result.settings = {"lab": name, "quick": options.quick, "seed": options.seed, **result.settings}
    page = None
    if write:
        page = write_lab(result, Path(out) if out is not None else default_out(name), _command(name, options, out),
                         dpi=options.dpi, fmt=options.fmt)
    if not quiet:
        print_table(result)
    return result, page


def params_of(name: str) -> dict:
    """The lab's parameters (name -> params.Param); empty for a lab that takes none."""
    return getattr(lab_module(name), "PARAMS", {})


def lab_params(name: str, given: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Every parameter of lab `name`: `given` parsed and checked (one-line error), the rest defaults."""
    from .params import resolve

    module = lab_module(name)
    return resolve(name, getattr(module, "PARAMS", {}), given, quick, getattr(module, "check_params", None))


def split_set(name: str, o: LabOptions) -> LabOptions:
    """`--set NAME=VALUE` with NAME a parameter of the lab (no dot) sets that parameter; recipe keys
    (section.key) stay recipe overrides."""
    own = {k: v for k, v in o.overrides.items() if "." not in k}
    if not own:
        return o
    return replace(o, params={**o.params, **own}, overrides={k: v for k, v in o.overrides.items() if "." in k})


def check_options(name: str, o: LabOptions) -> None:
    """Options a lab would silently ignore are an error instead."""
    if o.fmt not in ("png", "svg"):
        raise TrainwellError(f"lab {name}: --format got {o.fmt!r}, expected png or svg")
    if not (20 <= o.dpi <= 600):
        raise TrainwellError(f"lab {name}: --dpi got {o.dpi:g}, expected a number from 20 to 600")
    if (o.recipe is not None or o.overrides) and name not in RECIPE_LABS:
        raise TrainwellError(f"lab {name}: takes no RECIPE or --set (only {', '.join(RECIPE_LABS)} do)")
    if o.seeds is not None and name not in SEEDS_LABS:
        raise TrainwellError(f"lab {name}: takes no --seeds (only {', '.join(SEEDS_LABS)} do); use --seed")
    if o.seeds is not None and o.seeds < 1:
        raise TrainwellError(f"lab {name}: --seeds got {o.seeds}, must be >= 1")


def _cli_value(v: Any) -> str:
    return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, list) else \
        (f"{v:g}" if isinstance(v, float) else str(v))


def _command(name: str, o: LabOptions, out: str | Path | None) -> str:
    from .params import changed

    parts = ["trainwell", "lab", name] + ([o.recipe] if o.recipe else [])
    parts += ["--quick"] if o.quick else []
    parts += [f"--seed {o.seed}"] if o.seed else []
    parts += [f"--seeds {o.seeds}"] if o.seeds is not None else []
    parts += [f"--set {k}={v!r}" if isinstance(v, str) else f"--set {k}={v}" for k, v in o.overrides.items()]
    parts += [f"--{k} {_cli_value(v)}" for k, v in changed(params_of(name), o.params, o.quick).items()]
    parts += [f"--dpi {o.dpi:g}"] if o.dpi != 100 else []
    parts += ["--format svg"] if o.fmt != "png" else []
    parts += [f"--out {out}"] if out is not None else []
    return " ".join(parts)
