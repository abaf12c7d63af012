"""Bad input never costs data: every row of docs/errors.md, run through the real CLI.

Each case must exit 2 with exactly one line on stderr (no traceback) that names the field or
file and what would be valid, and must leave every file written before it byte-for-byte as it
was: a finished run folder (recipe, metrics, checkpoints), the input data files, the recipes.
No case may create its run folder either: input is validated before the folder exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import trainwell as tw
from trainwell.cli import main
from trainwell.loop import Callback

CLI = [sys.executable, "-m", "trainwell.cli"]
# A fast, quiet run on a small problem; the cases below break one thing at a time.
TINY = ["--set", "data.source=moons", "--set", "data.n_samples=100", "--set", "train.batch_size=16",
        "--set", "train.epochs=1", "--set", "watch.probes=false", "--set", "watch.doctor=false",
        "--set", "watch.report=false"]


# --------------------------------------------------------------------------------- the world
def _png(path: Path, value: int) -> None:
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def _table(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n")


def _make_world(root: Path) -> None:
    """A finished run and one input file per kind of breakage, all written before any case runs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).round(4)
    y = (x[:, 0] > 0).astype(int)
    good = ["x1,x2,label"] + [f"{a},{b},{c}" for (a, b), c in zip(x, y, strict=True)]
    _table(root / "good.csv", good)
    _table(root / "ragged.csv", [*good[:5], "0.1,0.2,1,7,8", *good[5:]])
    _table(root / "nan.csv", [*good[:3], "nan,0.5,1", *good[3:]])
    _table(root / "float_labels.csv", ["x1,x2,label"] + [f"{a},{b},{a + b:.3f}" for a, b in x])
    _table(root / "three_classes.csv", ["x1,x2,label"] + [f"{a},{b},{i % 3}" for i, (a, b) in enumerate(x)])
    _table(root / "one_class.csv", ["x1,x2,label"] + [f"{a},{b},1" for a, b in x])
    _table(root / "empty.csv", [])
    _table(root / "missing_label.csv", [*good[:4], "0.3,0.4,", *good[4:]])
    (root / "fake.npy").write_text("x1,x2\n1,2\n")
    _table(root / "wide.csv", ["a,b,c,d,label"] + [f"{a},{b},{a},{b},{c}" for (a, b), c in zip(x, y, strict=True)])
    np.savez(root / "no_x.npz", features=x, y=y)
    towns = [f"town{i % 60}" for i in range(120)]                 # 60 levels, each in two rows: embedded
    _table(root / "towns.csv", ["town,x1,label"] + [f"{t},{a},{i % 2}" for i, (t, a) in enumerate(zip(towns, x[:, 0].tolist() * 2))])
    _table(root / "ids.csv", ["code,x1,label"] + [f"c{i},{a},{c}" for i, ((a, _), c) in enumerate(zip(x, y))])
    for folder, classes in (("images", {"cat": 4, "dog": 4}), ("images_text", {"cat": 4, "dog": 4}),
                            ("images_empty_class", {"cat": 4, "dog": 0})):
        for name, count in classes.items():
            (root / folder / name).mkdir(parents=True)
            for i in range(count):
                _png(root / folder / name / f"{i}.png", 40 * i)
    (root / "images_text" / "dog" / "notes.png").write_text("not an image, a note\n")
    record = np.zeros(3073, dtype=np.uint8)
    record[0] = 12                                   # CIFAR-10 has classes 0..9
    (root / "cifar_bad_label.bin").write_bytes(np.tile(record, 4).tobytes())
    (root / "typo.toml").write_text("[trian]\nepochs = 3\n")
    (root / "not_toml.toml").write_text("[train\nepochs = = 3\n")
    (root / "a_file").write_text("a regular file, not a folder\n")
    (root / "predictions.csv").write_text("prediction\n1\n0\n")      # an earlier predict's output

    tw.fit(out=root / "done", quiet=True, **{
        "data.source": "moons", "data.n_samples": 100, "model.hidden": [8], "train.epochs": 2,
        "watch.probes": False, "watch.doctor": False, "watch.report": False})
    with np.load(root / "done" / "splits.npz") as f:      # a hand-made split file: a training row in test too
        parts = {k: f[k] for k in f.files}
    np.savez(root / "overlap_splits.npz", **{**parts, "test": np.concatenate([parts["test"], parts["train"][:3]])})
    quick = {"train.epochs": 1, "watch.probes": False, "watch.doctor": False, "watch.report": False}
    tw.fit(out=root / "custom", quiet=True, model=torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)),
           data=(x, y), **quick)
    tw.fit(out=root / "arrays", quiet=True, data=(x, y), **{"model.hidden": [4], **quick})
    shutil.copytree(root / "done", root / "truncated")
    best = root / "truncated" / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    (root / "empty_run").mkdir()
    # Interrupted runs (no metrics.json): one whose last checkpoint was cut short, one whose recipe
    # was edited in a way that changes the run, one a test locks as if another process trained in it.
    for name in ("cut_last", "edited", "busy"):
        shutil.copytree(root / "done", root / name)
        (root / name / "metrics.json").unlink()
    last = root / "cut_last" / "checkpoints" / "last.safetensors"
    last.write_bytes(last.read_bytes()[: last.stat().st_size - 100])
    recipe = root / "edited" / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("hidden = [8]", "hidden = [16]"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    _make_world(root)
    return root


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, but the run-folder lock files: whoever takes a run's lock
    writes its pid there, so a refused `resume` may leave another pid in it (it holds no data)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


# --------------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]          # {w} stands for the world folder, {out} for a fresh --out folder
    expect: tuple[str, ...]        # every piece must appear in the one stderr line
    subprocess: bool = False       # through a real `python -m trainwell.cli` process


def fit(*args: str, out: str = "{out}") -> tuple[str, ...]:
    return ("fit", *TINY, "--out", out, *args)


def sets(*pairs: str) -> tuple[str, ...]:
    return tuple(a for p in pairs for a in ("--set", p))


CASES = [
    # ---- the recipe
    Case("unknown-key", fit(*sets("optimizer.lrr=0.1")),
         ("optimizer.lrr: unknown key", "did you mean optimizer.lr?"), subprocess=True),
    Case("unknown-section-in-file", ("fit", "{w}/typo.toml", "--out", "{out}"),
         ("typo.toml", "trian: unknown key", "did you mean train?")),
    Case("unknown-kind", fit(*sets("model.kind=cnnn")), ("model.kind: got 'cnnn'", "did you mean 'cnn'?")),
    Case("wrong-type-int", fit(*sets('train.epochs="ten"')), ("train.epochs: got 'ten'", "must be an integer")),
    Case("wrong-type-list", fit(*sets("model.hidden=64")), ("model.hidden: got 64", "must be a list")),
    Case("wrong-type-bool", fit(*sets("data.stratify=3")), ("data.stratify: got 3", "must be true or false")),
    Case("negative-lr", fit(*sets("optimizer.lr=-1")), ("optimizer.lr: got -1", "must be > 0"),
         subprocess=True),
    Case("zero-lr", fit(*sets("optimizer.kind=\"sgd\"", "optimizer.lr=0")), ("optimizer.lr: got 0", "must be > 0")),
    Case("zero-batch", fit(*sets("train.batch_size=0")), ("train.batch_size: got 0", "must be >= 1")),
    Case("split-sum", fit(*sets("data.split=[0.5,0.3,0.3]")), ("data.split: got [0.5, 0.3, 0.3]", "sum to 1")),
    Case("split-length", fit(*sets("data.split=[0.8,0.2]")), ("data.split: got [0.8, 0.2]", "too few items")),
    Case("negative-epochs", fit(*sets("train.epochs=-3")), ("train.epochs: got -3", "must be >= 1")),
    Case("unknown-precision", fit(*sets("train.precision=fp8")),
         ("train.precision: got 'fp8'", "'32', 'bf16-mixed' or '16-mixed'")),
    Case("smoothing-without-ce", fit(*sets("loss.kind=\"mse\"", "loss.label_smoothing=0.1")),
         ("loss.label_smoothing", "cross_entropy and bce_with_logits only", "'mse'")),
    Case("calibrate-without-validation", fit(*sets('calibrate="temperature"', "data.split=[0.8,0,0.2]",
                                                 "stopping.enabled=false")),
         ("calibrate: got 'temperature', but data.split has no validation fraction", "validation rows to fit on")),
    Case("calibrate-hinge", fit(*sets('calibrate="temperature"', 'loss.kind="hinge"')),
         ("calibrate: got 'temperature', but loss.kind = 'hinge'", "(set calibrate = \"none\")")),
    Case("calibrate-regression", fit(*sets('calibrate="temperature"', 'data.source="diabetes"')),
         ("calibrate: got 'temperature', but the task is regression", "use \"none\"")),
    Case("freeze-without-from", fit(*sets("init.freeze=1")), ("init.freeze", "set init.from")),
    Case("average-twice", fit(*sets("train.ema_decay=0.9", 'train.average.kind="swa"')),
         ("train.ema_decay: cannot be combined with train.average.kind = 'swa'", "[train.average] only")),
    Case("snapshots-without-restarts", fit(*sets('train.average.kind="snapshots"')),
         ('train.average.kind: "snapshots" needs schedule.kind = "cosine_restarts"', "'cosine'")),
    Case("recipe-is-a-folder", ("fit", "{w}/images", "--out", "{out}"), ("images: cannot read recipe",)),
    Case("synthetic-too-big", fit(*sets("data.n_samples=3000000000")),
         ("data.n_samples: got 3000000000 rows", "at most 1e+08")),
    Case("recipe-missing", ("fit", "{w}/nope.toml", "--out", "{out}"), ("nope.toml: recipe file not found",)),
    Case("recipe-not-toml", ("fit", "{w}/not_toml.toml", "--out", "{out}"), ("not_toml.toml: not valid TOML",)),
    Case("set-syntax", fit("--set", "optimizer.lr"), ("--set 'optimizer.lr'", "expected KEY=VALUE"),
         subprocess=True),
    Case("set-into-value", fit(*sets("seed.x=1")), ("seed: got {'x': 1}", "must be an integer")),
    Case("unknown-option", fit("--epochs", "3"), ("unrecognized arguments: --epochs", "--set", "--out"),
         subprocess=True),
    Case("unknown-command", ("fitt",), ("invalid choice: 'fitt'", "fit")),
    Case("stopping-monitor", fit(*sets("stopping.monitor=\"val_r2\"")),
         ("stopping.monitor: got 'val_r2'", "val_accuracy")),
    # ---- the data
    Case("unknown-source", fit(*sets("data.source=\"moosn\"")),
         ("data.source: got 'moosn'", "did you mean 'moons'?"), subprocess=True),
    Case("data-missing", fit(*sets("data.source=\"{w}/missing.csv\"")), ("missing.csv", "not found")),
    Case("batch-over-train", fit(*sets("train.batch_size=500")),
         ("train.batch_size: got 500", "60 training rows")),
    Case("nan-features", fit(*sets("data.source=\"{w}/nan.csv\"")),
         ("nan.csv", "NaN or infinite features", "data.nonfinite"), subprocess=True),
    Case("ragged-csv", fit(*sets("data.source=\"{w}/ragged.csv\"")), ("ragged.csv", "cannot read as CSV")),
    Case("empty-csv", fit(*sets("data.source=\"{w}/empty.csv\"")), ("empty.csv", "cannot read as CSV")),
    Case("target-column", fit(*sets("data.source=\"{w}/good.csv\"", "data.target=\"lable\"")),
         ("data.target: column 'lable'", "label")),
    Case("missing-label", fit(*sets("data.source=\"{w}/missing_label.csv\"")),
         ("missing_label.csv", "1 targets are NaN", "drop those rows")),
    Case("not-npy", fit(*sets("data.source=\"{w}/fake.npy\"")), ("fake.npy", "not an NPY file")),
    Case("npz-without-x", fit(*sets("data.source=\"{w}/no_x.npz\"")), ("no_x.npz", "'x'", "features")),
    Case("format-mismatch", fit(*sets("data.source=\"{w}/good.csv\"", "data.format=\"npz\"")),
         ("good.csv", "not an NPZ file", "data.format")),
    Case("non-image", fit(*sets("data.source=\"{w}/images_text\"", "model.kind=\"cnn\"")),
         ("notes.png", "cannot read as an image")),
    Case("empty-class", fit(*sets("data.source=\"{w}/images_empty_class\"", "model.kind=\"cnn\"")),
         ("dog", "class folder holds no images")),
    Case("one-class", fit(*sets("data.source=\"{w}/one_class.csv\"")), ("one_class", "only one class")),
    Case("label-out-of-range", fit(*sets("data.source=\"{w}/cifar_bad_label.bin\"")),
         ("cifar_bad_label.bin", "outside the expected range 0..9", "values 12")),
    Case("binary-with-3-classes", fit(*sets("data.source=\"{w}/three_classes.csv\"", "data.task=\"binary\"")),
         ("data.task: binary needs exactly 2 classes", "3")),
    Case("non-integer-labels", fit(*sets("data.source=\"{w}/float_labels.csv\"", "data.task=\"multiclass\"")),
         ("data.task", "multiclass", "non-integer", "regression")),
    # ---- data versus model
    Case("cnn-on-table", fit(*sets("model.kind=\"cnn\"")), ("model", "cnn", "(2,)")),
    Case("loss-for-other-task", fit(*sets("loss.kind=\"mse\"")),
         ("loss.kind: 'mse' is a regression loss", "binary", "use auto or one of")),
    Case("target-normalize-classification", fit(*sets("data.target_normalize=\"standard\"")),
         ("data.target_normalize: got 'standard'", "the task is binary", "regression targets only")),
    Case("class-weight-length", fit(*sets("loss.class_weight=[1.0,2.0,3.0]")),
         ("loss.class_weight: got 3 weights, the data has 2 classes", "balanced")),
    Case("split-file-other-rows", fit(*sets("data.split_file=\"{w}/done\"", "data.n_samples=120")),
         ("data.split_file", "data of 100 rows, this data has 120", "only fits the data it was made from")),
    Case("split-file-other-data", fit(*sets("data.split_file=\"{w}/done/splits.npz\"", "data.noise=0.2")),
         ("data.split_file", "made from other data (sha256", "only fits the data it was made from")),
    Case("split-file-overlap", fit(*sets("data.split_file=\"{w}/overlap_splits.npz\"")),
         ("data.split_file", "overlap_splits.npz holds row", "in both train and test", "each row belongs to one split")),
    Case("features-not-a-column", fit(*sets("data.source=\"{w}/good.csv\"", "data.features=[\"x1\",\"x3\"]")),
         ("data.features: 'x3' is not a feature column of good.csv", "columns: x1, x2")),
    Case("cnn-too-deep", fit(*sets("data.source=\"shapes\"", "data.image_size=8", "model.kind=\"cnn\"",
                                   "model.channels=[4,4,4,4,4]")),
         ("model.channels: 5 blocks pool a 8-pixel image 4 times", "fewer blocks")),
    Case("init-from-other-shape", fit(*sets("data.source=\"iris\"", "model.hidden=[5]", "init.from=\"{w}/done\"")),
         ("init.from", "done", "no layer", "matches")),
    Case("init-from-truncated", fit(*sets("init.from=\"{w}/truncated\"")), ("best.safetensors", "truncated")),
    Case("init-from-not-a-run", fit(*sets("init.from=\"{w}/empty_run\"")), ("init.from", "empty_run", "no checkpoint")),
    # ---- the run folder
    Case("finished-run", ("fit", "{w}/done/recipe.toml", "--out", "{w}/done"),
         ("done", "already holds a finished run", "--force"), subprocess=True),
    Case("out-is-a-file", fit(out="{w}/a_file"),
         ("a_file", "not a folder")),
    Case("out-under-a-file", fit(out="{w}/a_file/run"),
         ("a_file/run", "cannot create the run folder")),
    # ---- string columns (data.categorical)
    Case("categorical-identifier", fit(*sets("data.source=\"{w}/ids.csv\"", "data.max_categories=10")),
         ("ids.csv: column 'code' has 60 distinct strings", "an identifier", "data.drop = [\"code\"]")),
    Case("embedded-whiten", fit(*sets("data.source=\"{w}/towns.csv\"", "data.normalize=\"zca_whiten\"")),
         ("data.normalize: got 'zca_whiten'", "entity-embedded string columns", "data.categorical = \"onehot\"")),
    # ---- a run of a module or data passed from Python
    Case("custom-model-fit", ("fit", "{w}/custom/recipe.toml", "--out", "{out}"),
         ("model.kind: 'custom'", "torch.nn.modules.container.Sequential", "tw.load(RUN_DIR, model=Sequential())")),
    Case("custom-model-predict", ("predict", "{w}/custom", "{w}/good.csv"),
         ("model.kind: 'custom'", "tw.load(RUN_DIR, model=Sequential())")),
    Case("custom-model-resume", ("resume", "{w}/custom"), ("model.kind: 'custom'", "tw.resume(RUN_DIR, model=")),
    Case("custom-model-doctor-try", ("doctor", "{w}/custom", "--try"),
         ("doctor --try:", "trained a module passed from Python (torch.nn.modules.container.Sequential",
          "try_remedy(RUN_DIR, model=Sequential(), data=(x, y))")),
    Case("custom-data-doctor-try", ("doctor", "{w}/arrays", "--try"),
         ("doctor --try:", "in-memory data", "try_remedy(run_dir, data=(x, y))")),
    Case("custom-data-fit", ("fit", "{w}/arrays/recipe.toml", "--out", "{out}"),
         ("data.source: 'custom' means the data was passed from Python", "tw.fit(..., data=(x, y))")),
    # ---- predict
    # ---- resume
    Case("resume-no-run", ("resume", "{w}/no_such_run"), ("no_such_run", "not a trainwell run folder")),
    Case("resume-truncated", ("resume", "{w}/cut_last"),
         ("cut_last/checkpoints/last.safetensors", "corrupt or truncated")),
    Case("resume-changed-recipe", ("resume", "{w}/edited"),
         ("edited: cannot resume", "model.hidden: [8] -> [16]", "may change"), subprocess=True),
    Case("resume-finished", ("resume", "{w}/done"), ("done", "already ended at epoch 2", "nothing to resume")),
    Case("resume-bad-set", ("resume", "{w}/cut_last", "--set", "train.epochs=0"), ("train.epochs: got 0",)),
    Case("nproc-zero", fit("--nproc", "0"), ("argument --nproc: got 0", "must be >= 1")),
    Case("nproc-over-batch", fit("--nproc", "17"),
         ("--nproc: got 17 workers", "more than the 16 rows of each batch", "use at most 16 workers")),
    Case("nproc-rollback", fit("--nproc", "2", "--set", "watch.on_nan=\"rollback\""),
         ("watch.on_nan", "with 2 workers use \"stop\"")),
    Case("nproc-find-lr", fit("--nproc", "2", "--find-lr"), ("--nproc", "--find-lr runs on one process")),
    Case("resume-other-nproc", ("resume", "{w}/edited", "--nproc", "2"),
         ("edited: the checkpoint was written by 1 worker(s), resumed with 2", "resume with --nproc 1")),
    # ---- doctor, report
    Case("doctor-no-run", ("doctor", "{w}/no_such_run"), ("no_such_run", "not a run folder"), subprocess=True),
    Case("doctor-epochs-without-try", ("doctor", "{w}/done", "--epochs", "3"), ("--epochs", "give --try as well")),
    Case("report-no-run", ("report", "{w}/empty_run"), ("empty_run", "not a run folder")),
    Case("predict-no-run", ("predict", "{w}/no_such_run", "{w}/good.csv"), ("no_such_run", "not found")),
    Case("predict-no-data", ("predict", "{w}/done", "{w}/missing.csv"), ("missing.csv", "not found")),
    Case("predict-truncated", ("predict", "{w}/truncated", "{w}/good.csv"), ("best.safetensors", "truncated")),
    Case("predict-nan-rows", ("predict", "{w}/done", "{w}/nan.csv"),
         ("nan.csv", "NaN or infinite features", "clean them")),
    Case("predict-out-no-folder", ("predict", "{w}/done", "{w}/good.csv", "--out", "{w}/no_dir/p.csv"),
         ("--out", "no_dir/p.csv", "folder", "does not exist")),
    Case("predict-out-is-a-folder", ("predict", "{w}/done", "{w}/good.csv", "--out", "{w}/images"),
         ("--out", "images: is a folder", "file name")),
    Case("predict-keeps-old-output", ("predict", "{w}/truncated", "{w}/good.csv", "--out", "{w}/predictions.csv"),
         ("best.safetensors", "truncated")),
    Case("preview-out-no-folder", ("data", "preview", *sets("data.source=\"shapes\""), "--out", "{w}/no_dir/p.png"),
         ("--out", "no_dir/p.png", "does not exist")),
    Case("preview-count", ("data", "preview", "--count", "0"), ("argument --count: got 0", "must be >= 1")),
    Case("overfit-steps", ("doctor", "--overfit-batch", "{w}/done/recipe.toml", "--steps", "-5"),
         ("argument --steps: got -5", "must be >= 1")),
    Case("lab-out-under-a-file", ("lab", "gd-path", "--quick", "--out", "{w}/a_file/lab"),
         ("--out", "a_file/lab", "is a file, not a folder")),
    Case("predict-wrong-shape", ("predict", "{w}/done", "{w}/wide.csv"),
         ("wide.csv", "rows of shape (4,)", "trained on rows of shape (2,)")),
]


def _run(case: Case, world: Path, out: Path, capsys) -> tuple[int, str]:
    argv = [a.replace("{w}", str(world)).replace("{out}", str(out)) for a in case.argv]
    if case.subprocess:
        # The child imports the trainwell under test, whatever the working folder.
        src = str(Path(tw.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=120, cwd=world, env=env)
        return p.returncode, p.stderr
    try:
        code = main(argv)
    except SystemExit as exc:       # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_costs_nothing(case, world, capsys, monkeypatch):
    monkeypatch.chdir(world)
    out = world / f"out-{case.id}"
    before = _hashes(world)
    code, err = _run(case, world, out, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("trainwell: error: ")
    for piece in case.expect:
        assert piece.replace("{w}", str(world)) in lines[0], lines[0]
    assert _hashes(world) == before
    assert not out.exists() and not (world / "runs").exists()


def test_unwritable_out_folder(world, capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod; the out-under-a-file case covers an uncreatable folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = main(["fit", *TINY, "--out", str(locked / "run")])
        err = capsys.readouterr().err
    finally:
        locked.chmod(0o700)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "locked/run: cannot create the run folder" in err


def test_finished_run_is_refused_but_force_reuses_it(world, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(world / "done", run)
    before = _hashes(run)
    assert main(["fit", str(run / "recipe.toml"), "--out", str(run), "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err
    assert _hashes(run) == before
    assert main(["fit", str(run / "recipe.toml"), "--out", str(run), "--quiet", "--force"]) == 0
    assert (run / "metrics.json").exists() and (run / "checkpoints" / "last.safetensors").exists()


def test_docs_table_lists_every_case():
    """docs/errors.md holds one row per case id, so the table and the test cannot drift apart."""
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    missing = [i for i in [c.id for c in CASES] + ["unwritable-out", "resume-locked"] if f"`{i}`" not in text]
    assert not missing


class _Crash(Callback):
    def epoch_end(self, trainer, row):
        raise RuntimeError("a crash in the middle of the run")


def test_a_failed_run_does_not_block_a_rerun(tmp_path):
    """A run that dies after its folder exists leaves no metrics.json: the same --out runs again."""
    over = {"data.source": "moons", "data.n_samples": 100, "model.hidden": [8], "train.epochs": 2,
            "watch.probes": False, "watch.doctor": False, "watch.report": False}
    with pytest.raises(RuntimeError, match="a crash"):
        tw.fit(out=tmp_path / "r", quiet=True, callbacks=[_Crash()], **over)
    assert not (tmp_path / "r" / "metrics.json").exists()
    run = tw.fit(out=tmp_path / "r", quiet=True, **over)
    assert (run.path / "metrics.json").exists() and len(run.history) == 2


def _free(run_dir: Path) -> bool:
    """Whether nothing holds the run folder's flock (a second open file takes it, even in this process)."""
    import fcntl

    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
@pytest.mark.parametrize("where", ["before training", "after training"])
def test_a_run_that_fails_outside_the_loop_leaves_its_folder_free(tmp_path, monkeypatch, where):
    """The lock is released however fit ends: a warning made an error before training, a failed
    report/doctor step after it (in a notebook the process lives on and reruns in the folder)."""
    import warnings

    from trainwell.watch.session import WatchSession

    over = {"data.source": "moons", "data.n_samples": 100, "model.hidden": [8], "train.epochs": 1,
            "watch.probes": False, "watch.doctor": False, "watch.report": False}
    if where == "after training":
        def broken(self, *args, **kwargs):
            raise RuntimeError("the report failed")
        monkeypatch.setattr(WatchSession, "finish", broken)
        with pytest.raises(RuntimeError, match="the report failed"):
            tw.fit(out=tmp_path / "r", quiet=True, **over)
    else:
        x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
        y = np.array([0] * 90 + [1] * 10)          # class imbalance: a DataWarning, here an error
        with warnings.catch_warnings(), pytest.raises(UserWarning, match="imbalance"):
            warnings.simplefilter("error")
            tw.fit(out=tmp_path / "r", quiet=True, data=(x, y), **over)
    assert _free(tmp_path / "r")


def test_a_second_process_resuming_a_run_in_use_is_refused(world):
    """This test process holds the run's lock, as a training or resuming process would; a real
    `trainwell resume` subprocess must refuse, one line, exit 2, the folder untouched."""
    from trainwell.rundir import run_lock

    with run_lock(world / "busy"):
        before = _hashes(world)
        answers = [_run(Case("resume-locked", argv, (), subprocess=True), world, world, None)
                   for argv in (("resume", "{w}/busy"), ("fit", "{w}/busy/recipe.toml", "--out", "{w}/busy"))]
        assert _hashes(world) == before
    for code, err in answers:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert "busy: in use by another trainwell process" in lines[0] and f"pid {os.getpid()}" in lines[0]
