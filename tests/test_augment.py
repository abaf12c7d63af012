"""Augmentation: each op against a per-image oracle, soft targets through the losses, any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainwell.data.augment import (
    Augmenter,
    build_augmenter,
    cutmix,
    cutout,
    gaussian_noise,
    mixup,
    random_crop,
    random_flip,
    sample_lambda,
    soft_targets,
)
from trainwell.errors import RecipeError
from trainwell.losses import build_loss
from trainwell.recipe import AugmentSection, LossSection


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n=5, c=2, h=6, w=7, seed=0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=gen(seed))


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_random_crop_is_a_window_of_the_padded_image(mode):
    x, p = images(), 2
    out = random_crop(x, p, mode, gen(1))
    padded = F.pad(x, (p,) * 4, mode="constant" if mode == "zeros" else "reflect")
    # The same draws as random_crop makes: row offsets, then column offsets.
    g = gen(1)
    oy = torch.randint(0, 2 * p + 1, (len(x), 1), generator=g)
    ox = torch.randint(0, 2 * p + 1, (len(x), 1), generator=g)
    for i in range(len(x)):
        expected = padded[i, :, oy[i]:oy[i] + x.shape[2], ox[i]:ox[i] + x.shape[3]]
        torch.testing.assert_close(out[i], expected)
    assert random_crop(x, 0, mode, gen()) is x


def test_flips_flip_exactly_the_drawn_images():
    x = images(n=200)
    out = random_flip(x, 0.5, -1, gen(3))
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(len(x))])
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140
    up = random_flip(x, 1.0, -2, gen())
    torch.testing.assert_close(up, x.flip(-2))


def test_gaussian_noise_has_the_asked_std():
    x = torch.zeros(4000, 3)
    out = gaussian_noise(x, 0.3, gen())
    assert abs(float(out.std()) - 0.3) < 0.01 and abs(float(out.mean())) < 0.01


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(300, 1, 10, 10)
    out = cutout(x, 4, gen(2))
    zeros = (out == 0).sum((1, 2, 3))
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4     # full square, or clipped at a corner
    for i in range(5):
        rows = (out[i, 0] == 0).any(1).nonzero().flatten()
        cols = (out[i, 0] == 0).any(0).nonzero().flatten()
        assert int(zeros[i]) == len(rows) * len(cols)           # the hole is a rectangle


def test_mixup_matches_its_formula():
    x, y = images(n=8), soft_targets(torch.arange(8) % 3, 3)
    out_x, out_y = mixup(x, y, 0.4, gen(5))
    g = gen(5)
    lam = sample_lambda(0.4, g)
    perm = torch.randperm(8, generator=g)
    torch.testing.assert_close(out_x, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(out_y, lam * y + (1 - lam) * y[perm])
    torch.testing.assert_close(out_y.sum(1), torch.ones(8))


def test_beta_samples_follow_beta():
    g = gen(9)
    draws = np.array([sample_lambda(0.5, g) for _ in range(3000)])
    assert abs(draws.mean() - 0.5) < 0.03
    assert abs(draws.var() - 0.25 / 2) < 0.02          # Beta(a, a): var = 1 / (4 (2a + 1))


def test_cutmix_targets_equal_the_pasted_area():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 8, 8).clone()
    y = soft_targets(torch.arange(4), 4)
    for seed in range(20):
        out_x, out_y = cutmix(x, y, 1.0, gen(seed))
        for i in range(4):
            own = float((out_x[i] == i).float().mean())
            assert float(out_y[i, i]) == pytest.approx(own, abs=1e-6)
        torch.testing.assert_close(out_y.sum(1), torch.ones(4))


def test_soft_targets_through_cross_entropy_and_label_smoothing():
    logits = torch.randn(6, 4, generator=gen(1))
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    for eps in (0.0, 0.1):
        loss = build_loss(LossSection(kind="cross_entropy", label_smoothing=eps), "multiclass")
        # One-hot probabilities give the hard-label loss; PyTorch's own loss is the oracle.
        torch.testing.assert_close(loss(logits, soft_targets(labels, 4)),
                                   F.cross_entropy(logits, labels, label_smoothing=eps))
        soft = torch.softmax(torch.randn(6, 4, generator=gen(2)), 1)
        smoothed = soft * (1 - eps) + eps / 4
        manual = -(smoothed * F.log_softmax(logits, 1)).sum(1).mean()
        torch.testing.assert_close(loss(logits, soft), manual)


def test_binary_bce_takes_the_class_one_share():
    loss = build_loss(LossSection(kind="bce_with_logits"), "binary")
    out = torch.randn(5, 1, generator=gen(3))
    soft = torch.tensor([[0.3, 0.7], [1, 0], [0, 1], [0.5, 0.5], [0.9, 0.1]])
    torch.testing.assert_close(loss(out, soft), F.binary_cross_entropy_with_logits(out[:, 0], soft[:, 1]))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), tabular=st.booleans(), seed=st.integers(0, 1000))
def test_any_batch_size(n, tabular, seed):
    full = AugmentSection(crop_padding=2, crop_mode="reflect", hflip=0.5, vflip=0.5, noise_std=0.1,
                          cutout_size=2, mixup_alpha=0.3, cutmix_alpha=1.0)
    sec = AugmentSection(noise_std=0.1, mixup_alpha=0.3) if tabular else full
    x = torch.randn(n, 5) if tabular else torch.randn(n, 3, 6, 6)
    y = torch.randint(0, 3, (n,))
    out_x, out_y = Augmenter(sec, 3, seed)(x, y)
    assert out_x.shape == x.shape and out_y.shape == (n, 3)
    assert bool(torch.isfinite(out_x).all())
    torch.testing.assert_close(out_y.sum(1), torch.ones(n))


def test_mixup_on_regression_targets_mixes_them():
    x, y = torch.randn(10, 3), torch.randn(10)
    out_x, out_y = Augmenter(AugmentSection(mixup_alpha=0.5), 0, 0)(x, y)
    g = torch.Generator().manual_seed(0)
    g.set_state(Augmenter(AugmentSection(), 0, 0).generator.get_state())
    torch.rand(2, generator=g)
    lam = sample_lambda(0.5, g)
    perm = torch.randperm(10, generator=g)
    torch.testing.assert_close(out_y, lam * y + (1 - lam) * y[perm])


def test_seeded_and_resumable():
    sec = AugmentSection(crop_padding=1, hflip=0.5, mixup_alpha=0.2)
    x, y = torch.randn(7, 1, 5, 5), torch.randint(0, 2, (7,))
    a, b, other = Augmenter(sec, 2, 11), Augmenter(sec, 2, 11), Augmenter(sec, 2, 12)
    for first, second in zip(a(x, y), b(x, y)):               # same seed, same batch
        torch.testing.assert_close(first, second)
    assert not torch.equal(a(x, y)[0], other(x, y)[0])
    fresh = Augmenter(sec, 2, 999)
    fresh.load_state_dict(a.state_dict())                    # a fresh instance swapped in mid-run
    for first, second in zip(a(x, y), fresh(x, y)):
        torch.testing.assert_close(first, second)


def test_nothing_on_gives_no_augmenter_and_image_ops_need_images():
    assert build_augmenter(AugmentSection(), (3, 8, 8), 3, 0) is None
    with pytest.raises(RecipeError, match=r"data.augment.hflip: needs images \(N, C, H, W\), the data has rows "
                       r"of shape \(10,\); set it to 0"):
        build_augmenter(AugmentSection(hflip=0.5, mixup_alpha=0.2), (10,), 3, 0)
    with pytest.raises(RecipeError, match=r"data.augment.crop_padding: got 8, reflect padding must be smaller "
                       r"than the image side 8"):
        build_augmenter(AugmentSection(crop_padding=8, crop_mode="reflect"), (3, 8, 8), 3, 0)
