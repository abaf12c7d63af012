"""train.compile: the compiled step trains like the eager one (within float tolerance), a resume is
bitwise identical within the setting and close across it, compile time is reported apart, and an
unavailable compiler means one warning and the eager step."""

from __future__ import annotations

import warnings

import pytest
import torch
from crash import Crash
from crash import crash_at_step as _crash_at_step

import trainwell as tw
from trainwell import checkpoint as ckpt
from trainwell.compiling import CompileWarning

# No dropout here (its own test below: the compiled forward draws the same masks as the eager one).
# No probes: a probed step runs the eager forward, and a mid-epoch resume probes its first step.
RECIPE = {"data.source": "moons", "data.n_samples": 300, "model.hidden": [32, 32], "model.dropout": 0.0,
          "train.batch_size": 16, "train.epochs": 3, "stopping.enabled": False, "checkpoint.every_steps": 4,
          "train.threads": 1, "watch.doctor": False, "watch.report": False, "watch.probes": False}


def _history(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run.history]


def _close(a, b, rel=1e-4):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], rel=rel, abs=1e-6), k




def test_an_unavailable_compiler_means_one_warning_and_the_eager_step():
    import torch._inductor.config as inductor

    # No C++ compiler, and nothing compiled earlier may be reused from the caches.
    unavailable = inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False,
                                  "autotune_local_cache": False})
    with unavailable, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = tw.fit(out=False, quiet=True, **{**RECIPE, "train.compile": True, "train.epochs": 2})
    compile_warnings = [w for w in caught if issubclass(w.category, CompileWarning)]
    assert len(compile_warnings) == 1
    assert "could not be compiled" in str(compile_warnings[0].message)
    assert "\n" not in str(compile_warnings[0].message)
    report = run.metrics["compile"]
    assert report["enabled"] and not report["compiled"] and "C++" in report["fallback"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eager = tw.fit(out=False, quiet=True, **{**RECIPE, "train.epochs": 2})
    assert _history(run) == _history(eager)          # the eager step from the first batch on
    assert "compile" not in eager.metrics


@pytest.mark.slow
def test_compiled_and_eager_agree_and_a_resume_is_exact_within_the_setting(tmp_path, monkeypatch):
    warnings.simplefilter("ignore")
    eager = tw.fit(out=tmp_path / "eager", quiet=True, **RECIPE)
    compiled = tw.fit(out=tmp_path / "compiled", quiet=True, **{**RECIPE, "train.compile": True})
    report = compiled.metrics["compile"]
    assert report["compiled"] and report["fallback"] is None and report["seconds"] > 0, report
    _close(_history(compiled), _history(eager))
    assert compiled.metrics["val"]["accuracy"] == pytest.approx(eager.metrics["val"]["accuracy"], abs=0.02)

    # Killed mid-epoch 2 (12 steps per epoch; saved every 4), resumed compiled: bitwise the compiled run.
    out = tmp_path / "crashed"
    with monkeypatch.context() as m:
        _crash_at_step(m, 22)
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **{**RECIPE, "train.compile": True})
    resumed = tw.resume(out, quiet=True)
    assert _history(resumed) == _history(compiled)
    ta, _ = ckpt.load_checkpoint(out / "checkpoints" / "last.safetensors")
    tb, _ = ckpt.load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in tb)

    # The same crash, resumed with compilation switched off: the eager run, within float tolerance.
    out = tmp_path / "switched"
    with monkeypatch.context() as m:
        _crash_at_step(m, 22)
        with pytest.raises(Crash):
            tw.fit(out=out, quiet=True, **{**RECIPE, "train.compile": True})
    switched = tw.resume(out, quiet=True, **{"train.compile": False})
    _close(_history(switched), _history(eager))
    assert "compile" not in switched.metrics


@pytest.mark.slow
def test_with_dropout_compiled_and_eager_draw_the_same_masks():
    warnings.simplefilter("ignore")
    recipe = {**RECIPE, "model.dropout": 0.3, "checkpoint.every_steps": 0, "train.epochs": 2}
    eager = tw.fit(out=False, quiet=True, **recipe)
    compiled = tw.fit(out=False, quiet=True, **{**recipe, "train.compile": True})
    assert compiled.metrics["compile"]["compiled"]
    _close(_history(compiled), _history(eager))
