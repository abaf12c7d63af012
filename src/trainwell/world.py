"""A worker's place in a data-parallel run, read from the launcher's environment alone: the command
line asks it before anything else, and on one process it must not cost the import of torch or
torch.distributed (distributed.py, which needs both, is imported only when a world is present)."""

from __future__ import annotations

import os
from dataclasses import dataclass

# What torchrun sets in each worker's environment (docs/distributed.md explains each).
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> World | None:
    """The worker's place when started by torchrun / the elastic launcher with more than one worker."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "MASTER_ADDR" not in os.environ:
        return None
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
