"""Entity embeddings (Guo & Berkhahn 2016) of a table's many-level string columns (data.categorical = auto).

Such a column reaches the network as its level's code (1..K, 0 for a missing value or a level unseen
in training; data/formats.py); the `embed` layer, first in the network, looks each code column up in
its own nn.Embedding (K + 1 rows, width from data/formats.embedding_dim) and passes on the other
features followed by the embeddings. The embeddings are learned with the rest of the network.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.formats import embedding_dim


class EntityEmbeddings(nn.Module):
    def __init__(self, n_features: int, columns: list[tuple[int, int, int]]) -> None:
        """`columns`: (feature index, levels, width) of each code column of the n_features inputs."""
        super().__init__()
        self.codes = [int(i) for i, _, _ in columns]
        self.levels = [int(k) for _, k, _ in columns]
        self.others = [j for j in range(n_features) if j not in set(self.codes)]
        self.tables = nn.ModuleList(nn.Embedding(k + 1, d) for _, k, d in columns)
        self.out_features = len(self.others) + sum(d for _, _, d in columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, self.others]]
        for j, k, table in zip(self.codes, self.levels, self.tables):
            parts.append(table(x[:, j].round().long().clamp(0, k)))     # an out-of-range code is "unseen"
        return torch.cat(parts, 1)

    def extra_repr(self) -> str:
        return f"codes={self.codes}, others={len(self.others)}, out_features={self.out_features}"


def embedding_columns(feature_names: tuple[str, ...], embedded: dict[str, list[str]]) -> list[tuple[int, int, int]]:
    """(feature index, levels, width) of each embedded column (data.json keeps them for predict)."""
    return [(feature_names.index(col), len(levels), embedding_dim(len(levels))) for col, levels in embedded.items()]
