"""The run report: matplotlib figures (plots.py) in one self-contained HTML page (html.py)."""
