"""`trainwell data preview RECIPE --out grid.png`: augmented training images in a grid, so a
person can check by eye that the augmentation keeps the labels (and what mixup/cutmix mix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, RecipeError
from ..prepare import prepare_data
from ..seeding import stream_seed
from .augment import Augmenter, check_augment


def _title(target: torch.Tensor, classes: tuple[str, ...]) -> str:
    """The label, or the two largest shares of a mixed (soft) target."""
    if not target.is_floating_point():
        return classes[int(target)] if classes else f"{float(target):.3g}"
    if not classes:
        return f"{float(target):.3g}"
    top = torch.topk(target, min(2, len(target)))
    return " ".join(f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(top.values, top.indices) if v > 0.005)


def _displayable(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) normalized image -> (H, W[, 3]) in [0, 1], stretched per image."""
    img = img - img.min()
    img = img / img.max().clamp(min=1e-12)
    arr = img.permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def preview(recipe, out: str | Path, count: int = 32) -> Path:
    """Write a grid of `count` augmented training images of `recipe` to `out` (PNG); returns the path."""
    from ..figures import plt

    prepared = prepare_data(recipe)
    train = prepared.train
    if train.x.dim() != 4:
        raise DataError(f"data preview: needs images (N, C, H, W), {recipe.data.source!r} has rows of shape "
                        f"{tuple(train.x.shape[1:])}")
    problems = check_augment(recipe.data.augment, tuple(train.x.shape[1:]))
    if problems:
        raise RecipeError(problems)
    classes = prepared.dataset.classes
    rows = torch.arange(min(count, len(train)))
    aug = Augmenter(recipe.data.augment, len(classes), stream_seed(recipe.seed, "augment"))
    x, y = aug(train.x[rows], train.y[rows])
    cols = 8
    nrows = -(-len(rows) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.6, nrows * 2.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, ax in zip(range(len(rows)), axes.ravel()):
        ax.imshow(_displayable(x[k]), cmap="gray" if x.shape[1] == 1 else None, interpolation="nearest")
        ax.set_title(_title(y[k], classes), fontsize=7)
    fig.suptitle(f"{recipe.data.source}: augmented training samples (seed {recipe.seed})", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
