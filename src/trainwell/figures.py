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
from matplotlib import rcParams
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


PAD_IN = 0.06       # room left around the outermost text, and between one axes' text and the next


def fit_margins(fig: Figure, pad: float = PAD_IN) -> None:
    """Place a grid of subplots (one cell each) with margins and gaps just wide enough for the text
    around each axes: its title (and an offset text such as 1e-3) above, y tick labels and y label
    on the left, x tick labels and x label below, the x tick labels' and a wide title's overhang at
    both ends. Every column keeps the same width and every row the same height; each gap is as wide
    as the text on its two sides needs. The text is measured without drawing the figure
    (matplotlib's constrained layout finds the same room by drawing every artist's bounding box
    first: about half the cost of a report figure). Text inside the axes (legends, annotations)
    takes no room. Call it when the axes hold their data, limits and labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    axes = [ax for ax in fig.axes if ax.get_subplotspec() is not None]
    if not axes:
        return
    nrows, ncols = axes[0].get_subplotspec().get_gridspec().get_geometry()
    cell = {ax: (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes}
    w, h = fig.get_size_inches()
    # The renderer a PNG of this figure will draw with: the text sizes measured here are cached with it.
    renderer = FigureCanvasAgg(fig).get_renderer()
    room = {"left": [0.0] * ncols, "right": [0.0] * ncols, "top": [0.0] * nrows, "bottom": [0.0] * nrows}
    for _ in range(3):      # tick labels and title overhang depend on the axes' size: measured again once placed
        grew = False
        for ax in axes:
            r, c = cell[ax]
            for side, need in _room(ax, renderer, fig.dpi).items():
                k = c if side in ("left", "right") else r
                if need > room[side][k] + 1e-9:
                    room[side][k], grew = need, True
        if not grew:
            return
        width = (w - sum(room["left"]) - sum(room["right"]) - 2 * pad * ncols) / ncols
        height = (h - sum(room["top"]) - sum(room["bottom"]) - 2 * pad * nrows) / nrows
        x0 = [pad + room["left"][0]]
        for c in range(1, ncols):
            x0.append(x0[-1] + width + room["right"][c - 1] + 2 * pad + room["left"][c])
        top = [h - pad - room["top"][0]]
        for r in range(1, nrows):
            top.append(top[-1] - height - room["bottom"][r - 1] - 2 * pad - room["top"][r])
        for ax in axes:
            r, c = cell[ax]
            ax.set_position([x0[c] / w, (top[r] - height) / h, width / w, height / h])


def _room(ax, renderer, dpi: float) -> dict[str, float]:
    """Inches of text each side of `ax` needs outside its box, where the box is now: the tick labels
    where they are drawn (their extents), the axis labels and the title by their sizes, as the axes
    place them past the tick labels at draw time."""
    box = ax.bbox

    def size(text) -> tuple[float, float]:
        if not (text.get_visible() and text.get_text().strip()):
            return 0.0, 0.0
        extent = text.get_window_extent(renderer)
        return extent.width / dpi, extent.height / dpi

    def tick_extents(axis, coord: int) -> list:
        """Extents of the tick labels the axis will draw (major and minor, within its view)."""
        lo, hi = sorted(axis.get_view_interval())
        eps = 1e-10 * max(abs(lo), abs(hi), 1e-300)
        # minor ticks carry labels on log axes only (a linear axis' minor formatter writes nothing)
        labels = axis.get_ticklabels(which="both" if axis.get_scale() != "linear" else "major")
        return [t.get_window_extent(renderer) for t in labels
                if t.get_visible() and t.get_text().strip() and lo - eps <= t.get_position()[coord] <= hi + eps]

    def offset(axis) -> float:
        """Height of the axis' offset or scale text (e.g. 1e-3), which the axis shows past its end."""
        formatter = axis.get_major_formatter()
        text = formatter.get_offset() if hasattr(formatter, "get_offset") else ""
        if not text:
            return 0.0
        axis.offsetText.set_text(text)
        return size(axis.offsetText)[1]

    xs, ys = tick_extents(ax.xaxis, 0), tick_extents(ax.yaxis, 1)
    below = max([box.y0 - e.y0 for e in xs] + [0.0]) / dpi
    beside = max([box.x0 - e.x0 for e in ys] + [0.0]) / dpi
    (title_w, title_h), xlabel_h, ylabel_w = size(ax.title), size(ax.xaxis.label)[1], size(ax.yaxis.label)[0]
    # a title wider than the axes, centred over them, hangs over both sides
    title_over = max(0.0, (title_w - box.width / dpi) / 2)
    return {
        "top": (title_h + rcParams["axes.titlepad"] / 72 if title_h else 0.0) + offset(ax.yaxis),
        "bottom": below + (xlabel_h + ax.xaxis.labelpad / 72 if xlabel_h else 0.0) + offset(ax.xaxis),
        # the x tick labels at the ends may hang over the axes' left and right edges
        "left": max(beside + (ylabel_w + ax.yaxis.labelpad / 72 if ylabel_w else 0.0),
                    max([box.x0 - e.x0 for e in xs] + [0.0]) / dpi, title_over),
        "right": max(max([e.x1 - box.x1 for e in xs] + [0.0]) / dpi, title_over),
    }


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
