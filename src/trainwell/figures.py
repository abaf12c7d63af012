"""Figures that leave matplotlib's global state alone.

Every figure trainwell draws is a `matplotlib.figure.Figure` made here, never through pyplot's
figure manager and never after `matplotlib.use(...)`: a notebook's own `plt.show()` cells keep
their backend, and no figure of ours pops up or lingers in pyplot's list. `plt` offers the few
pyplot calls the drawing code uses, on such unmanaged figures.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import matplotlib
from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, layout=None, **kwargs):
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure(figsize=None) -> Figure:
    return Figure(figsize=figsize)


def get_cmap(name: str):
    return matplotlib.colormaps[name]


def close(fig) -> None:
    """Nothing to release: the figure is not registered anywhere (kept for pyplot-shaped code)."""


def render(fig: Figure, fmt: str = "png", dpi: float = 100, trim: bool = True) -> bytes:
    """The figure as PNG or SVG bytes, trimmed to its content (`trim`: matplotlib's tight bounding box,
    which draws the figure twice; a figure laid out by its own layout engine needs no trimming)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight" if trim else None,
                **({"metadata": {"Date": None}} if fmt == "svg" else {}))
    if getattr(fig.canvas, "manager", None) is not None:     # made by pyplot elsewhere: release it there
        import matplotlib.pyplot

        matplotlib.pyplot.close(fig)
    return buf.getvalue()


plt = SimpleNamespace(subplots=subplots, figure=figure, get_cmap=get_cmap, close=close)
