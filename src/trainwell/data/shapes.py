"""`shapes`: a seeded synthetic image set of simple figures.

Each image holds one figure (circle, square, triangle, cross, ring, diamond) at a random place
and size, in a random colour on a random background, plus pixel noise. Every kind is symmetric
under left-right flips, and triangles point up or down at random, so flips and small crops keep
the label: augmentation has something honest to show.
"""

from __future__ import annotations

import numpy as np


def _masks(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Boolean (N, H, W) masks of `kind` centred at offsets (dx, dy) with radius r (each (N, 1, 1))."""
    ax, ay = np.abs(dx), np.abs(dy)
    if kind == "circle":
        return dx**2 + dy**2 <= r**2
    if kind == "square":
        return np.maximum(ax, ay) <= 0.8 * r
    if kind == "triangle":
        v = np.where(up, dy, -dy)           # the apex at v = -r, the base at v = +r
        return (np.abs(v) <= r) & (ax <= (v + r) / 2)
    if kind == "cross":
        arm = np.maximum(r / 3, 0.75)
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if kind == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if kind == "diamond":
        return ax + ay <= r
    raise ValueError(f"unknown shape kind {kind!r}")


def shapes(n_samples: int, noise: float, kinds: tuple[str, ...], size: int, channels: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, C, size, size) in [0, 1], kind names (N,)), classes balanced."""
    labels = rng.permutation(np.arange(n_samples) % len(kinds))
    shape = (n_samples, 1, 1)
    r = rng.uniform(0.22 * size, 0.4 * size, shape)
    cx = rng.uniform(r, size - r)
    cy = rng.uniform(r, size - r)
    up = rng.random(shape) < 0.5
    grid = np.arange(size) + 0.5
    dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
    mask = np.zeros((n_samples, size, size), dtype=bool)
    for k, kind in enumerate(kinds):
        rows = labels == k
        mask[rows] = _masks(kind, dx[rows], dy[rows], r[rows], up[rows])
    # Figure and background colours far apart in brightness, either one the lighter.
    dark = rng.uniform(0.0, 0.4, (n_samples, channels, 1, 1))
    light = rng.uniform(0.6, 1.0, (n_samples, channels, 1, 1))
    swap = rng.random((n_samples, 1, 1, 1)) < 0.5
    fg, bg = np.where(swap, dark, light), np.where(swap, light, dark)
    img = np.where(mask[:, None], fg, bg) + rng.normal(0.0, noise, (n_samples, channels, size, size))
    return np.clip(img, 0.0, 1.0).astype(np.float32), np.asarray(kinds)[labels]
