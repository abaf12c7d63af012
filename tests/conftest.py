import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two test workers share two cores: one thread each keeps torch from oversubscribing.
torch.set_num_threads(1)


@pytest.fixture
def tiny():
    """Overrides for a fast run on a small synthetic problem."""
    return {"data.source": "moons", "data.n_samples": 200, "model.hidden": [16], "train.epochs": 3,
            "train.batch_size": 32}
