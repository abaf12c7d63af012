"""`python -m trainwell ...`: the command line (what `torchrun ... -m trainwell fit RECIPE` runs)."""

import sys

from .cli import main

sys.exit(main())
