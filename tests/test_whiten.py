"""Whitening and per-channel standardization: identity covariance, ZCA closest to the input,
statistics from the training split only and saved with the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainwell.data.normalize import PerChannel, make_normalizer
from trainwell.data.whiten import pca_whiten, zca_whiten


def correlated(n=2000, d=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g)
    return (torch.randn(n, d, generator=g) @ mix + 3.0).double()


def cov(x: torch.Tensor) -> torch.Tensor:
    xc = x - x.mean(0)
    return xc.T @ xc / len(x)


@pytest.mark.parametrize("fn", [pca_whiten, zca_whiten])
def test_whitened_training_data_has_identity_covariance(fn):
    x = correlated()
    white = fn(x, eps=1e-8)
    torch.testing.assert_close(cov(white), torch.eye(5, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(white.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-8, rtol=0)


def test_epsilon_shrinks_the_small_directions():
    x = correlated()
    eigvals = torch.linalg.eigvalsh(cov(x)).flip(0)
    eps = 0.5
    # Each whitened direction has variance S / (S + eps), as in the notes' Xrot / sqrt(S + eps).
    variances = torch.diag(cov(pca_whiten(x, eps)))
    torch.testing.assert_close(variances, eigvals / (eigvals + eps), atol=1e-6, rtol=0)


def test_zca_stays_closest_to_the_input():
    x = correlated()
    xc = x - x.mean(0)
    zca, pca = zca_whiten(x, 1e-8), pca_whiten(x, 1e-8)
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    rotated = pca @ q                                  # any rotation of whitened data is still white
    torch.testing.assert_close(cov(rotated), torch.eye(5, dtype=torch.float64), atol=1e-5, rtol=0)
    d_zca = float((zca - xc).norm())
    assert d_zca < float((pca - xc).norm())
    assert d_zca < float((rotated - xc).norm())


@pytest.mark.parametrize("name", ["pca_whiten", "zca_whiten"])
def test_normalizer_fits_train_only_and_round_trips(name):
    train, test = correlated(seed=0).float(), correlated(n=50, seed=3).float()
    norm = make_normalizer(name, 1e-6).fit(train)
    out = norm.transform(train).double()
    torch.testing.assert_close(cov(out), torch.eye(5, dtype=torch.float64), atol=2e-3, rtol=0)
    fresh = make_normalizer(name, 1e-6)
    fresh.load_state_dict(norm.state_dict())
    torch.testing.assert_close(fresh.transform(test), norm.transform(test))
    refit = make_normalizer(name, 1e-6).fit(test)
    assert not torch.allclose(refit.transform(test), norm.transform(test))


def test_images_keep_their_shape():
    x = torch.rand(300, 2, 3, 3)
    out = make_normalizer("zca_whiten", 1e-5).fit(x).transform(x)
    assert out.shape == x.shape
    flat = out.reshape(300, -1).double()
    torch.testing.assert_close(cov(flat), torch.eye(18, dtype=torch.float64), atol=5e-3, rtol=0)


def test_per_channel_standardization():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 5, 5, generator=g) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1) + 7
    out = PerChannel().fit(x).transform(x)
    arr = out.numpy()
    np.testing.assert_allclose(arr.mean((0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(arr.std((0, 2, 3)), 1, atol=1e-4)
    with pytest.raises(ValueError, match=r"data.normalize: per_channel needs images \(N, C, H, W\), got rows "
                       r"of shape \(4,\); use \"standard\""):
        PerChannel().fit(torch.zeros(10, 4))
