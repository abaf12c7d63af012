"""`python -m trainwell ...`: the command line (what `torchrun ... -m trainwell fit RECIPE` runs)."""

from .cli import entry

entry()
