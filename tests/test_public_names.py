"""The public names of `import trainwell as tw` keep meaning what INTERFACE.md says, whatever else is imported."""

import subprocess
import sys

SCRIPT = """
import trainwell as tw
from trainwell.search.run import search
assert tw.search is search, tw.search
import trainwell.search.pruning, trainwell.search.strategies, trainwell.search.space
assert tw.search is search, tw.search
from trainwell.search import study
assert study.__name__ == "trainwell.search.study" and tw.search is search
import trainwell.search.outputs
assert callable(tw.search) and tw.search is search, tw.search
print("ok")
"""


def test_tw_search_stays_the_function_after_importing_its_subpackage():
    """Issue 18 defect 6: `import trainwell.search.<module>` bound the subpackage to `tw.search`.
    A fresh interpreter, because the import state is per process."""
    for order in (SCRIPT, "import trainwell.search.pruning\n" + SCRIPT):
        done = subprocess.run([sys.executable, "-c", order], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-1500:]
