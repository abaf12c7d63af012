"""Command line: argv -> library calls -> exit codes. Nothing else lives here.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 130 interrupted; 1 other.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import RecipeDeprecation, TrainwellError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"trainwell: error: {message}\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """Unknown options are reported by the command they were given to, with its valid options."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras and getattr(ns, "command", None) == "lab" and getattr(ns, "name", None):
            ns.lab_args = extras            # the lab's own parameters: parsed by that lab (see _lab)
            extras = []
        if extras:
            command = self._command_parser(ns)
            options = sorted({o for a in command._actions for o in a.option_strings if o.startswith("--")})
            self.error(f"unrecognized arguments: {' '.join(extras)}; `{command.prog}` takes "
                       f"{', '.join(options)} (see {command.prog} --help)")
        return ns

    def _command_parser(self, ns: argparse.Namespace) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self
        for dest in ("command", "data_command"):
            sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
            if sub is None or getattr(ns, dest, None) not in sub.choices:
                break
            parser = sub.choices[getattr(ns, dest)]
        return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, must be a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}, must be >= 1")
    return value


def _fit(args: argparse.Namespace) -> int:
    from .recipe import load_recipe, parse_overrides

    # Validate the recipe before importing torch and the training stack: a typo fails in a blink.
    recipe = load_recipe(args.recipe, parse_overrides(args.set))
    if args.protocol:
        from .search.protocol import fit_protocol

        fit_protocol(recipe, out=args.out, quiet=args.quiet)
        return 0
    world = _world()
    if recipe.watch.report and (args.nproc or 1) == 1 and (world is None or world.main):
        from .report.painter import prestart, source_bytes, starts_late

        if not starts_late(source_bytes(recipe.data.source)):
            prestart()      # the report's figures: matplotlib imported on another core while torch is here
    nproc = _workers(args)
    if nproc > 1:                              # this process launches the workers, each runs this command
        from . import distributed as ddp
        from .api import run_name
        from .errors import TrainwellError
        from .rundir import default_run_dir

        if args.protocol or args.find_lr:
            raise TrainwellError(f"--nproc: {'--protocol' if args.protocol else '--find-lr'} runs on one process; "
                                 "drop --nproc, or run it first and fit with its result")
        ddp.check_launch(recipe, nproc, args.backend)
        out = Path(args.out) if args.out else default_run_dir(run_name(recipe))
        return ddp.launch(ddp.worker_argv(args.argv, out), nproc, out)
    from .api import fit

    callbacks = []
    if args.find_lr:
        from .labs.lr_range import find_lr

        lr, test, record, rule = find_lr(recipe, args.find_lr)
        print(f"LR range test: optimizer.lr = {lr:.3g} ({rule} rule; {test.stop_reason}; "
              "recorded in lr_find.json)")
        recipe, callbacks = recipe.replace(**{"optimizer.lr": lr}), [record]
    fit(recipe, out=args.out, quiet=args.quiet, force=args.force, callbacks=callbacks)
    return 0


def _resume(args: argparse.Namespace) -> int:
    from .recipe import parse_overrides
    from .resuming import check_workers, resume

    nproc = _workers(args)
    if nproc > 1:
        from . import distributed as ddp

        recipe = check_workers(args.run_dir, nproc, parse_overrides(args.set))
        ddp.check_launch(recipe, nproc, args.backend)
        return ddp.launch(ddp.worker_argv(args.argv, None), nproc, Path(args.run_dir))
    resume(args.run_dir, quiet=args.quiet, **parse_overrides(args.set))
    return 0


def _workers(args: argparse.Namespace) -> int:
    """--nproc N > 1: the number of workers this process should launch. Inside a worker (started by
    torchrun or by --nproc) it joins the process group and returns 1: the worker runs the command."""
    world = _world()
    if world is None:
        return args.nproc or 1
    from . import distributed as ddp
    from .recipe import load_recipe, parse_overrides

    source = args.recipe if args.command == "fit" else Path(args.run_dir) / "recipe.toml"
    device = load_recipe(source, parse_overrides(args.set)).train.device if args.command == "fit" \
        or source.is_file() else "auto"      # another machine's worker may not see the run folder
    ddp.init_worker(world, args.backend, device)
    return 1


def _world():
    from .world import launched

    return launched()


def _recipe(args: argparse.Namespace) -> int:
    from .recipe import load_recipe, parse_overrides

    sys.stdout.write(load_recipe(args.recipe, parse_overrides(args.set)).to_toml(comments=not args.bare))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.overfit_batch is None):
        raise TrainwellError("doctor: give either RUN_DIR or --overfit-batch RECIPE.toml")
    if args.overfit_batch is not None:
        from .recipe import load_recipe, parse_overrides
        from .watch.overfit_batch import overfit_batch

        result = overfit_batch(load_recipe(args.overfit_batch, parse_overrides(args.set)), steps=args.steps)
        print(f"overfit one batch: {result.verdict}")
        return 0 if result.passed else 1      # a failed check is a failed command (its verdict says why)
    from .watch.doctor import diagnose, format_findings, load_evidence, write_diagnosis

    if args.epochs is not None and not args.try_:
        raise TrainwellError("doctor: --epochs is the budget of --try; give --try as well")
    if args.try_:
        from .watch.trial import check_rerunnable

        check_rerunnable(args.run_dir)          # a module or data from Python: say so before writing anything
    findings = diagnose(load_evidence(args.run_dir))
    write_diagnosis(Path(args.run_dir), findings)
    print("\n".join(format_findings(findings)))
    if args.try_:
        from .watch.trial import try_remedy

        print(f"try: {try_remedy(args.run_dir, epochs=args.epochs).summary()}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report.html import write_report
    from .watch.doctor import diagnose, load_evidence

    ev = load_evidence(args.run_dir)
    print(write_report(Path(args.run_dir), ev, diagnose(ev)))
    return 0


def _output_file(out: str) -> Path:
    """An --out FILE whose folder must exist: checked before the work, not after it."""
    path = Path(out)
    if path.is_dir():
        raise TrainwellError(f"--out {out}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise TrainwellError(f"--out {out}: folder {str(path.parent)!r} does not exist; create it or choose "
                             "another path")
    return path


def _output_folder(out: str | None) -> None:
    """An --out FOLDER: refused up front when it, or the folder it would be made in, is a file."""
    if out is None:
        return
    for path in (Path(out), *Path(out).parents):
        if path.exists():
            if not path.is_dir():
                raise TrainwellError(f"--out {out}: {str(path)!r} is a file, not a folder; choose another path")
            return


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict

    out = _output_file(args.out) if args.out else None
    frame = predict(args.run_dir, args.data)
    if out is not None:
        from .rundir import atomic_write_text

        try:    # atomic: a failed write leaves no half-written file (nor clobbers an old one)
            atomic_write_text(out, frame.to_csv(index=False))
        except OSError as exc:
            raise TrainwellError(f"--out {out}: cannot write the predictions ({exc.strerror or exc})") from None
        print(f"{len(frame)} predictions written to {args.out}", file=sys.stderr)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def _search(args: argparse.Namespace) -> int:
    from .recipe import load_recipe, parse_overrides
    from .search.run import search

    search(load_recipe(args.recipe, parse_overrides(args.set)), trials=args.trials, jobs=args.jobs,
           storage=args.storage, out=args.out, study_name=args.study, worker_only=args.worker, quiet=args.quiet)
    return 0


def _lab(args: argparse.Namespace) -> int:
    from .labs import LabOptions, describe_labs, run_lab

    if args.list:
        for name, description in describe_labs():
            print(f"{name:<16}{description}")
        return 0
    if args.name is None:
        raise TrainwellError("lab: give a lab NAME, or --list to see them all")
    from .recipe import parse_overrides

    options = LabOptions(quick=args.quick, seed=args.seed, seeds=args.seeds, recipe=args.recipe,
                         overrides=parse_overrides(args.set), params=_lab_params(args.name, args.lab_args),
                         dpi=args.dpi, fmt=args.format)
    _output_folder(args.out)
    _, page = run_lab(args.name, options, out=args.out)
    print(f"lab page: {page}")
    return 0


def _lab_parser(name: str) -> argparse.ArgumentParser:
    """The options of one lab's parameters (labs/params.py), named as in the lab's PARAMS."""
    from .labs import params_of

    p = _Parser(prog=f"trainwell lab {name}", add_help=False)
    g = p.add_argument_group(f"parameters of lab {name} (also --set NAME=VALUE)")
    for key, param in params_of(name).items():
        default = param.default if not isinstance(param.default, list) else ",".join(map(str, param.default))
        default = "see above" if default in ("", []) else default
        quick = "" if param.quick is None else f"; --quick: {param.quick}"
        g.add_argument(f"--{key}", dest=key, metavar=key.upper().replace("-", "_"),
                       help=f"{param.help} ({param.describe()}; default {default}{quick})")
    return p


def _lab_params(name: str, raw: list[str]) -> dict[str, Any]:
    if not raw:
        return {}
    from .labs import lab_module

    lab_module(name)                          # an unknown lab: its own error first
    parser = _lab_parser(name)
    ns, extras = parser.parse_known_args(raw)
    if extras:
        takes = ", ".join(o for a in parser._actions for o in a.option_strings) or "no parameters"
        raise TrainwellError(f"lab {name}: unrecognized arguments: {' '.join(extras)}; its parameters: {takes} "
                             f"(see trainwell lab {name} --help)")
    return {k: v for k, v in vars(ns).items() if v is not None}


class _LabHelp(argparse.Action):
    """`trainwell lab NAME --help`: the lab's description and its own parameters too."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .labs import LABS

        parser.print_help()
        name = getattr(namespace, "name", None)
        if name in LABS:
            print(f"\nlab {name}: {LABS[name][1]}\n")
            print(_lab_parser(name).format_help().split("\n", 2)[-1].strip() or "(no parameters of its own)")
        parser.exit()


def _data(args: argparse.Namespace) -> int:
    from .data.preview import preview
    from .recipe import load_recipe, parse_overrides

    recipe = load_recipe(args.recipe, parse_overrides(args.set))
    path = preview(recipe, _output_file(args.out), args.count)
    print(f"preview written to {path}", file=sys.stderr)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": _fit, "resume": _resume, "recipe": _recipe, "doctor": _doctor, "report": _report, "predict": _predict,
    "data": _data, "lab": _lab, "search": _search,
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="trainwell", description="Train PyTorch networks well.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    f = sub.add_parser("fit", help="train from a recipe (default: bundled digits)")
    f.add_argument("recipe", nargs="?", help="recipe TOML file (default: the built-in recipe)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, value parsed as TOML (repeatable)")
    f.add_argument("--out", help="run folder (default runs/<time>-<name>)")
    f.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    f.add_argument("--force", action="store_true", help="reuse a folder that holds a finished run")
    _parallel_options(f)
    f.add_argument("--protocol", action="store_true",
                   help="choose the epoch count on validation (test locked), retrain on train+validation, "
                        "evaluate the test split once")

    f.add_argument("--find-lr", nargs="?", const="auto", choices=("auto", "steepest", "valley", "min/10", "min"),
                   metavar="RULE",
                   help="run the LR range test first and train with its suggestion (rule: auto (default: steepest "
                        "for plain SGD, min for momentum and adaptive optimizers), steepest, valley, min/10, min); "
                        "recorded in RUN_DIR/lr_find.json and lr_find.png")

    se = sub.add_parser("search", help="hyperparameter search over the recipe's [search] space, then retrain "
                        "the best on train+validation and test once")
    se.add_argument("recipe", help="recipe TOML file with a [search] section")
    se.add_argument("--trials", type=_positive_int, help="trials to complete (default search.trials)")
    se.add_argument("--jobs", type=_positive_int, default=1, help="worker processes on this machine (default 1)")
    se.add_argument("--storage", help="Optuna storage URL shared by workers, e.g. postgresql://user@host/db "
                    "(default: a journal file in the study folder)")
    se.add_argument("--study", help="study name in the storage (default: the recipe's name)")
    se.add_argument("--worker", action="store_true", help="only run trials of the (shared) study; leave the "
                    "retrain and test to the process without --worker")
    se.add_argument("--out", help="study folder (default runs/<time>-<name>)")
    se.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    se.add_argument("--quiet", action="store_true", help="no per-trial lines or summary")

    rs = sub.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    rs.add_argument("run_dir", help="run folder of the interrupted run")
    rs.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a key that may change on resume, e.g. train.epochs (see docs/resume.md)")
    rs.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    _parallel_options(rs)

    r = sub.add_parser("recipe", help="print the resolved recipe: every key with its default")
    r.add_argument("recipe", nargs="?", help="recipe TOML file to resolve (default: the built-in recipe)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--bare", action="store_true", help="no comments")

    d = sub.add_parser("doctor", help="diagnose a run folder, or run the overfit-one-batch check on a recipe")
    d.add_argument("run_dir", nargs="?", help="run folder written by `trainwell fit`")
    d.add_argument("--overfit-batch", metavar="RECIPE", help="train on one batch of RECIPE.toml and give a verdict")
    d.add_argument("--steps", type=_positive_int, default=200, help="optimizer steps of the overfit-one-batch check")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--try", dest="try_", action="store_true",
                   help="re-run RUN_DIR's recipe with the first finding's overrides (same seed and split) and "
                        "print the monitored value before and after")
    d.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs of the --try re-run (default: the run's own)")

    rp = sub.add_parser("report", help="write RUN_DIR/report.html from the run folder")
    rp.add_argument("run_dir", help="run folder written by `trainwell fit`")

    pr = sub.add_parser("predict", help="apply a run's normalization and best model to new rows")
    pr.add_argument("run_dir", help="run folder of a finished run")
    pr.add_argument("data", help="rows to predict: .csv/.tsv/.parquet (feature columns) or .npy/.npz (x)")
    pr.add_argument("--out", help="CSV file to write (default: standard output)")

    lb = sub.add_parser("lab", help="run one of the lectures' experiments (trainwell lab --list)", add_help=False)
    lb.add_argument("-h", "--help", action=_LabHelp, help="show this help (with NAME: also that lab's parameters)")
    lb.set_defaults(lab_args=[])
    lb.add_argument("name", nargs="?", help="the lab (see --list)")
    lb.add_argument("recipe", nargs="?", help="recipe TOML of ablate, lr-range, regularization (default: built-in)")
    lb.add_argument("--list", action="store_true", help="list the labs with one line each")
    lb.add_argument("--quick", action="store_true", help="a much smaller run (seconds), e.g. for tests")
    lb.add_argument("--out", help="output folder (default runs/labs/NAME)")
    lb.add_argument("--seed", type=int, default=0, help="seed of the experiment (default 0)")
    lb.add_argument("--seeds", type=int, help="repeats of lr-range, search-layout, ablate and regularization (default per lab)")
    lb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the lab's recipe (lr-range, regularization, ablate), or set one of "
                         "the lab's parameters (NAME=VALUE, see trainwell lab NAME --help)")
    lb.add_argument("--dpi", type=float, default=100, help="figure resolution in pixels per inch (default 100; "
                    "150-200 for a projector)")
    lb.add_argument("--format", choices=("png", "svg"), default="png", help="figure files (default png)")

    d = sub.add_parser("data", help="look at the data a recipe trains on")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    pv = dsub.add_parser("preview", help="write a grid of augmented training images (PNG)")
    pv.add_argument("recipe", nargs="?", help="recipe TOML file (default: the built-in recipe)")
    pv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pv.add_argument("--out", default="preview.png", help="PNG file to write (default preview.png)")
    pv.add_argument("--count", type=_positive_int, default=32, help="images in the grid (default 32)")
    return p


def _parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="data-parallel training on N local worker processes (torch.distributed's elastic launcher, "
                        "DistributedDataParallel); train.batch_size stays the global batch, train.threads applies "
                        "per worker. Several machines: torchrun ... -m trainwell (docs/distributed.md)")
    p.add_argument("--backend", choices=("auto", "gloo", "nccl"), default="auto",
                   help="process-group backend of the workers (default auto: nccl on CUDA, gloo on CPU)")


# A Ctrl-C outside the training loop (which says itself what it saved): e.g. while the doctor or the
# report runs after training, when metrics.json and the checkpoints are already written.
INTERRUPTED = ("interrupted; what was already written stays (after training: metrics.json and the checkpoints); "
               "`trainwell report RUN_DIR` writes the report page, `trainwell doctor RUN_DIR` the diagnosis")


def passive_openmp() -> None:
    """OpenMP threads that sleep when idle instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the
    user chose a policy. Spinning workers cost a training run on a loaded machine about twice the
    time. It must be set before torch (and its OpenMP runtime) is imported; train.threads still sets
    how many threads torch uses."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    passive_openmp()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _warnings_as_lines()
    previous = _sigterm_as_interrupt()
    try:
        return COMMANDS[args.command](args)
    except TrainwellError as exc:
        # One line, whatever a library underneath put in the message (data parallel: rank 0's).
        if _speaks():
            print("trainwell: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:      # errors.Interrupted says where it stopped and how to resume
        if _speaks():
            print(f"trainwell: {str(exc) or INTERRUPTED}", file=sys.stderr)
        return 130
    except RuntimeError as exc:           # a data-parallel worker whose peer died: one line, not a traceback
        from .distributed import lost_peer

        line = lost_peer(exc)
        if line is None:
            raise
        if _speaks():                     # rank 0; the launcher names the worker that died
            print(f"trainwell: error: {line}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The `trainwell` command as a process (the console script, `python -m trainwell`, `python -m
    trainwell.cli`): `main`, and after a command that succeeded, the end of the process without the
    interpreter's teardown of every module (torch, torch._dynamo and sympy take a good part of a second
    to tear down, paid after the last line is printed). Every file the command writes is written and
    closed by then; the exit handlers run first and the output is flushed. A command that failed ends
    the ordinary way."""
    code = main()
    if code == 0 and not any(t.is_alive() and not t.daemon for t in threading.enumerate()
                             if t is not threading.main_thread()):
        import atexit

        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)           # a closed or broken pipe: let the interpreter report it as usual
        os._exit(0)
    sys.exit(code)


def _speaks() -> bool:
    """Whether this process prints the command's error: one process, or rank 0 of several workers
    (they all meet the same bad input and the same interrupt)."""
    return os.environ.get("RANK", "0") == "0" or "TORCHELASTIC_RUN_ID" not in os.environ


def _sigterm_as_interrupt():
    """SIGTERM (kill, job schedulers) ends a command like Ctrl-C: one line, exit 130. During training
    the loop's own handler takes over and saves a checkpoint first (interrupts.py)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _warnings_as_lines() -> None:
    """Data warnings and deprecated recipe keys as `trainwell: warning: ...` lines instead of Python's file:line format."""
    import warnings

    default = warnings.showwarning
    if getattr(default, "trainwell", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        # Looked up when a warning is shown, so the CLI does not import torch (via data.checks) up front.
        checks = sys.modules.get(f"{__package__}.data.checks")
        if issubclass(category, RecipeDeprecation) or (checks is not None and issubclass(category, checks.DataWarning)):
            print(f"trainwell: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    show.trainwell = True
    warnings.showwarning = show


if __name__ == "__main__":
    entry()
