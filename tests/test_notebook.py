"""trainwell in a notebook: no global matplotlib state changed, short reprs, inline HTML."""

import subprocess
import sys
import textwrap

TINY = {"data.source": "moons", "data.n_samples": 200, "model.hidden": [8], "train.epochs": 2,
        "watch.report": True}


def test_fit_and_labs_leave_the_matplotlib_backend_alone(tmp_path):
    code = textwrap.dedent(f"""
        import matplotlib
        matplotlib.use("svg")                   # stands for a notebook's inline backend
        import matplotlib.pyplot as plt
        import trainwell as tw
        from trainwell.labs import LabOptions, run_lab
        run = tw.fit(out={str(tmp_path / 'run')!r}, quiet=True, **{TINY!r})
        assert (run.path / "report.html").exists()
        run_lab("gd-path", LabOptions(quick=True), out={str(tmp_path / 'lab')!r}, quiet=True)
        print(matplotlib.get_backend(), plt.get_fignums())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0].strip() == "svg []"
