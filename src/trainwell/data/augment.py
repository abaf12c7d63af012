"""Augmentation of training batches: batched tensor ops, seeded by an explicit torch.Generator.

Each technique is a pure function of (batch, parameters, generator); `Augmenter` chains the
ones `[data.augment]` switches on, in the order crop -> flips -> cutout -> noise -> mixup/cutmix,
and owns the generator so a resumed run draws the same numbers (`state_dict`). Image ops take
(N, C, H, W) batches; noise and mixup also work on tabular rows. Any batch size works, one row
included (mixing a row with itself leaves it unchanged). Mixup and cutmix return soft targets
(N x C class probabilities, or mixed regression targets) that the losses accept.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import RecipeError

IMAGE_OPS = ("crop_padding", "hflip", "vflip", "cutout_size", "cutmix_alpha")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def random_crop(x: torch.Tensor, padding: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Pad every image by `padding` (zeros or reflect) and cut an HxW window at a random offset."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="constant" if mode == "zeros" else "reflect")
    oy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator).to(x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    cols = (ox + torch.arange(w, device=x.device))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_flip(x: torch.Tensor, p: float, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Flip each image along `dim` (-1: left-right, -2: upside down) with probability p."""
    if p == 0:
        return x
    flip = (_uniform(len(x), generator, x.device) < p).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(flip, x.flip(dim), x)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    if std == 0:
        return x
    return x + std * torch.randn(x.shape, generator=generator).to(x.device)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a size x size square centred at a random pixel of each image (clipped at the border)."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1), generator=generator).to(x.device) - size // 2
    cx = torch.randint(0, w, (n, 1), generator=generator).to(x.device) - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ys >= cy) & (ys < cy + size)                        # (n, h)
    in_x = (xs >= cx) & (xs < cx + size)                        # (n, w)
    hole = (in_y[:, :, None] & in_x[:, None, :])[:, None]       # (n, 1, h, w)
    return x.masked_fill(hole, 0.0)


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha). torch's Beta takes no generator, so numpy draws it from a seed
    taken from ours: the stream stays a function of the one generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator):
    """(lam x + (1-lam) x[perm], lam y + (1-lam) y[perm]); y: soft targets (float)."""
    lam = sample_lambda(alpha, generator)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator):
    """Paste a box of x[perm] covering about 1-lam of each image; targets mixed by the pasted area."""
    lam = sample_lambda(alpha, generator)
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    h, w = x.shape[-2:]
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = (int(v) for v in torch.randint(0, 2**31, (2,), generator=generator))
    cy, cx = cy % h, cx % w
    y1, y2 = max(cy - ch // 2, 0), min(cy - ch // 2 + ch, h)
    x1, x2 = max(cx - cw // 2, 0), min(cx - cw // 2 + cw, w)
    out = x.clone()
    out[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
    kept = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return out, kept * y + (1 - kept) * y[perm]


def soft_targets(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class labels as one-hot probabilities; regression targets unchanged (as float)."""
    return F.one_hot(y, n_classes).float() if not y.is_floating_point() else y.float()


class Augmenter:
    """The `[data.augment]` chain with its own seeded generator."""

    def __init__(self, section, n_classes: int, seed: int):
        self.s, self.n_classes = section, n_classes
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, g = self.s, self.generator
        if x.dim() == 4:
            x = random_crop(x, s.crop_padding, s.crop_mode, g)
            x = random_flip(x, s.hflip, -1, g)
            x = random_flip(x, s.vflip, -2, g)
            x = cutout(x, s.cutout_size, g)
        x = gaussian_noise(x, s.noise_std, g)
        mixers = [(f, a) for f, a in ((mixup, s.mixup_alpha), (cutmix, s.cutmix_alpha)) if a > 0]
        if not mixers:
            return x, y
        # Two draws every batch, used or not, so the stream does not depend on earlier choices.
        pick, apply = torch.rand(2, generator=g).tolist()
        fn, alpha = mixers[int(pick * len(mixers))]
        y = soft_targets(y, self.n_classes)
        return fn(x, y, alpha, g) if apply < s.mix_prob else (x, y)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def is_active(section) -> bool:
    return any((section.crop_padding, section.hflip, section.vflip, section.noise_std, section.cutout_size,
                section.mixup_alpha, section.cutmix_alpha))


def check_augment(section, sample_shape: tuple[int, ...]) -> list[str]:
    """Recipe problems of `[data.augment]` for rows of `sample_shape` (one line each)."""
    problems = []
    if len(sample_shape) != 3:
        for key in IMAGE_OPS:
            if getattr(section, key):
                problems.append(f"data.augment.{key}: needs images (N, C, H, W), the data has rows of shape "
                                f"{tuple(sample_shape)}; set it to 0")
        return problems
    if section.crop_mode == "reflect" and section.crop_padding >= min(sample_shape[1:]):
        problems.append(f"data.augment.crop_padding: got {section.crop_padding}, reflect padding must be "
                        f"smaller than the image side {min(sample_shape[1:])}")
    return problems


def build_augmenter(section, sample_shape: tuple[int, ...], n_classes: int, seed: int) -> Augmenter | None:
    """The training augmenter, or None when `[data.augment]` switches nothing on."""
    if not is_active(section):
        return None
    problems = check_augment(section, sample_shape)
    if problems:
        raise RecipeError(problems)
    return Augmenter(section, n_classes, seed)
