"""Feature normalization fitted on the training split only and applied to every split.

A normalizer's statistics are tensors (`state_dict`) saved with the run, so prediction applies
exactly what training saw.
"""

from __future__ import annotations

import torch

from .whiten import PCAWhiten, ZCAWhiten

# Columns per float64 block of column_moments: a multiple of the widest vector (8 doubles), which keeps
# each column's sums the ones of the whole matrix, bit for bit (tests/test_memory.py, 1 and 2 threads).
MOMENT_BLOCK = 64


def column_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and (population) standard deviation of the rows of `x` in float64, shaped like one
    row: equal to `x.double().mean(0)` and `.std(0, unbiased=False)` while holding a float64 copy of
    only MOMENT_BLOCK columns at a time."""
    flat = x.reshape(len(x), -1)
    width = flat.shape[1]
    means, stds = [], []
    # One float64 buffer, filled block after block: a new block per step would not fit where the last one
    # was once the small results are placed there, and the process would grow by a block a step.
    buffer = torch.empty(len(flat), min(width, MOMENT_BLOCK), dtype=torch.float64)
    for j in range(0, width, MOMENT_BLOCK):
        # The last block reaches back to a full MOMENT_BLOCK columns: a narrow one (a single column) is
        # reduced by another kernel, whose float64 sums differ in the last bit.
        start = max(0, min(j, width - MOMENT_BLOCK))
        block = buffer.copy_(flat[:, start:j + MOMENT_BLOCK])
        means.append(block.mean(0)[j - start:])
        stds.append(block.std(0, unbiased=False)[j - start:])
    shape = x.shape[1:]
    return torch.cat(means).reshape(shape), torch.cat(stds).reshape(shape)


class Identity:
    name = "none"
    elementwise = True      # each value's transform depends on it alone (data/rows.py applies it in blocks)

    def fit(self, x: torch.Tensor) -> Identity:
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


class Standardize:
    """(x - mean) / std per feature; constant features get std 1 so they map to 0."""

    name = "standard"
    elementwise = True

    def __init__(self) -> None:
        self.mean = self.std = None

    def fit(self, x: torch.Tensor) -> Standardize:
        dims = self._dims(x)
        if dims == [0]:     # per feature: in float64 a block of columns at a time, not a float64 copy of x
            mean, std = column_moments(x)
        else:
            x = x.double()
            mean, std = x.mean(dims, keepdim=True)[0], x.std(dims, unbiased=False, keepdim=True)[0]
        self.mean = mean.float()
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std)).float()
        return self

    def _dims(self, x: torch.Tensor) -> list[int]:
        """Dimensions the statistics are taken over: the rows."""
        return [0]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean, self.std = state["mean"], state["std"]


class PerChannel(Standardize):
    """(x - mean_c) / std_c with one mean and std per image channel (over rows and pixels)."""

    name = "per_channel"

    def _dims(self, x: torch.Tensor) -> list[int]:
        if x.dim() < 3:
            raise ValueError(f"data.normalize: per_channel needs images (N, C, H, W), got rows of shape "
                             f"{tuple(x.shape[1:])}; use \"standard\"")
        return [0, *range(2, x.dim())]


class MinMax:
    """(x - min) / (max - min) per feature into [0, 1] on the training split."""

    name = "minmax"
    elementwise = True

    def __init__(self) -> None:
        self.low = self.span = None

    def fit(self, x: torch.Tensor) -> MinMax:
        self.low = x.amin(0)
        span = x.amax(0) - self.low
        self.span = torch.where(span > 0, span, torch.ones_like(span))
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low) / self.span

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"low": self.low, "span": self.span}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.low, self.span = state["low"], state["span"]


NORMALIZERS = {"none": Identity, "standard": Standardize, "minmax": MinMax, "per_channel": PerChannel,
               "pca_whiten": PCAWhiten, "zca_whiten": ZCAWhiten}


def make_normalizer(name: str, eps: float = 1e-5):
    """A fresh normalizer; `eps` (data.whiten_eps) is used by the whitening ones."""
    return NORMALIZERS[name](eps=eps) if name.endswith("_whiten") else NORMALIZERS[name]()


def keep_columns(normalizer, columns: list[int]):
    """`normalizer` leaving `columns` as they are (entity-embedding codes: data.categorical = auto)."""
    if not columns or isinstance(normalizer, Identity):
        return normalizer
    if type(normalizer) is Standardize:
        normalizer.mean[columns], normalizer.std[columns] = 0.0, 1.0
    elif isinstance(normalizer, MinMax):
        normalizer.low[columns], normalizer.span[columns] = 0.0, 1.0
    else:
        raise ValueError(f"data.normalize: got {normalizer.name!r}, which mixes or pools the columns, but the data "
                         "has entity-embedded string columns (data.categorical = \"auto\"); use \"standard\", "
                         "\"minmax\" or \"none\", or data.categorical = \"onehot\"")
    return normalizer
