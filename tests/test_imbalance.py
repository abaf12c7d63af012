"""Class imbalance you can act on: loss.class_weight and train.sampler = "balanced"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

import trainwell as tw
from trainwell.errors import RecipeError
from trainwell.loop import balanced_rows
from trainwell.losses import bce_with_logits, class_weights, cross_entropy, nll
from test_resume import Crash, _crash_on, assert_same_run   # the exact-resume checks of tests/test_resume.py

# ----------------------------------------------------------------------------------- weights


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=5, max_size=200))
def test_balanced_weights_are_the_formula(labels):
    y = torch.tensor(labels)
    c = 5
    w = class_weights("balanced", y, c)
    for k in range(c):
        count = labels.count(k)
        assert w[k].item() == pytest.approx(len(labels) / (c * count) if count else 0.0, rel=1e-6)
    # Balanced weights give each present class the same total weight n / C.
    totals = {k: w[k].item() * labels.count(k) for k in set(labels)}
    assert max(totals.values()) == pytest.approx(min(totals.values()), rel=1e-5)


def test_weight_vector_length_is_checked():
    with pytest.raises(ValueError, match="loss.class_weight: got 3 weights, the data has 2 classes"):
        class_weights((1.0, 2.0, 3.0), torch.tensor([0, 1]), 2)
    torch.testing.assert_close(class_weights((1.0, 4.0), torch.tensor([0, 1]), 2), torch.tensor([1.0, 4.0]))
    assert class_weights("none", torch.tensor([0, 1]), 2) is None


def test_weighted_losses_against_their_definitions():
    torch.manual_seed(0)
    out, y, w = torch.randn(20, 3), torch.randint(0, 3, (20,)), torch.tensor([0.5, 2.0, 1.0])
    logp = F.log_softmax(out, 1)
    picked = -logp[torch.arange(20), y]
    expected = (w[y] * picked).sum() / w[y].sum()            # the weighted mean of cross-entropy
    torch.testing.assert_close(cross_entropy(weight=w)(out, y), expected)
    torch.testing.assert_close(nll(weight=w)(logp, y), expected)
    # BCE with pos_weight = w1 / w0: the positive rows' terms multiplied by it.
    z, t = torch.randn(20, 1), torch.randint(0, 2, (20,))
    p = torch.sigmoid(z[:, 0])
    terms = -(3.0 * t * torch.log(p) + (1 - t) * torch.log(1 - p))
    torch.testing.assert_close(bce_with_logits(pos_weight=3.0)(z, t), terms.mean())


def _rare_positive(seed: int, n: int = 1200, share: float = 0.05):
    """A 5%-positive set where positives sit in a region that overlaps the negatives."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share).astype(int)
    x = rng.normal(size=(n, 5)) + np.outer(y, [2.0, 1.5, 0.0, 0.0, 0.0])
    return x.astype(np.float32), y


@pytest.mark.slow
def test_balanced_weights_raise_macro_f1_on_a_rare_positive_class():
    wins = 0
    for seed in range(5):
        x, y = _rare_positive(seed)
        common = {"data": (x, y), "out": False, "quiet": True, "seed": seed, "model.hidden": [32],
                  "train.epochs": 40, "stopping.enabled": False, "watch.doctor": False}
        plain = tw.fit(**common)
        weighted = tw.fit(**common, **{"loss.class_weight": "balanced"})
        wins += weighted.metrics["test"]["f1"] > plain.metrics["test"]["f1"]
    assert wins >= 4


# ----------------------------------------------------------------------------------- sampler
def test_balanced_sampler_draws_classes_equally():
    y = torch.tensor([0] * 900 + [1] * 80 + [2] * 20)
    rows = balanced_rows(y, torch.Generator().manual_seed(0))
    assert len(rows) == len(y)
    share = torch.bincount(y[rows], minlength=3).double() / len(y)
    # Each class 1/3; binomial sd sqrt(p(1-p)/n) = 0.0149 for n = 1000: within 4 sd.
    assert torch.all((share - 1 / 3).abs() < 4 * 0.0149)
    again = balanced_rows(y, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)


SAMPLED = {"data.source": "teacher", "data.classes": 3, "data.n_samples": 300, "model.hidden": [16],
           "train.batch_size": 16, "train.epochs": 3, "train.sampler": "balanced", "loss.class_weight": "balanced",
           "checkpoint.every_steps": 4, "watch.doctor": False, "watch.report": False}


def test_balanced_sampler_resumes_bitwise(tmp_path, monkeypatch):
    tw.fit(out=tmp_path / "ref", quiet=True, **SAMPLED)
    with monkeypatch.context() as m:
        _crash_on(m, torch.optim.Adam, "step", 19)          # inside epoch 2, after a mid-epoch checkpoint
        with pytest.raises(Crash):
            tw.fit(out=tmp_path / "cut", quiet=True, **SAMPLED)
    tw.resume(tmp_path / "cut", quiet=True)
    assert_same_run(tmp_path / "ref", tmp_path / "cut")


def test_regression_refuses_classes_keys():
    rows = {"data.source": "polynomial", "data.n_samples": 100, "train.epochs": 1}
    with pytest.raises(RecipeError, match="train.sampler: got 'balanced', but the task is regression"):
        tw.fit(out=False, quiet=True, **rows, **{"train.sampler": "balanced"})
    with pytest.raises(RecipeError, match="loss.class_weight: got 'balanced', but the task is regression"):
        tw.fit(out=False, quiet=True, **rows, **{"loss.class_weight": "balanced"})


def test_the_doctors_imbalance_remedy_names_the_keys():
    x, y = _rare_positive(0, n=400, share=0.1)
    run = tw.fit(out=False, quiet=True, data=(x, y), **{"train.epochs": 1, "watch.report": False})
    finding = next(f for f in run.extras["findings"] if f.rule == "class_imbalance")
    assert 'loss.class_weight = "balanced"' in finding.remedy and 'train.sampler = "balanced"' in finding.remedy
    assert finding.overrides == {"loss.class_weight": "balanced"}        # what `doctor --try` runs
    quiet = tw.fit(out=False, quiet=True, **{"data.source": "moons", "data.n_samples": 200, "train.epochs": 1,
                                            "watch.report": False})
    assert not any(f.rule == "class_imbalance" for f in quiet.extras["findings"])
