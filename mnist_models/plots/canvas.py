"""What the figure families share: an Agg figure, a grid of panels, a shared y range, annotated cells, label texts."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(size: tuple[float, float]) -> Figure:
    """An empty Figure of `size` inches, laid out by constrained layout, on its own Agg canvas."""
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
    return figure


def panel_grid(
    count: int,
    panel_size: tuple[float, float],
    *,
    sharex: bool = False,
    sharey: bool = False,
    max_columns: int = 3,
) -> tuple[Figure, list]:
    """A Figure of `count` panels of `panel_size` inches, at most `max_columns` to a row; the panels, in order."""
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    figure = new_figure((panel_size[0] * columns, panel_size[1] * rows + 0.4))
    grid = figure.subplots(rows, columns, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for unused in grid[count:]:
        unused.remove()
    return figure, list(grid[:count])


def share_y_if_legible(panels: list) -> bool:
    """Give all panels one y range unless that would flatten some panel's curves to a sliver."""
    limits = [axes.get_ylim() for axes in panels]
    low = min(limit[0] for limit in limits)
    high = max(limit[1] for limit in limits)
    if any((limit[1] - limit[0]) < 0.25 * (high - low) for limit in limits):
        return False
    for axes in panels:
        axes.set_ylim(low, high)
    return True


def annotate_cells(axes, values: np.ndarray, texts, cmap, norm, *, fontsize: float, zero_color: str | None = None):
    """Write each cell's text in black or white, whichever reads better on the cell colour."""
    for row, column in np.ndindex(values.shape):
        value = values[row, column]
        if np.isnan(value):
            color = "black"
        elif zero_color is not None and value == 0:
            color = zero_color
        else:
            red, green, blue, _ = cmap(norm(value))
            color = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"
        axes.text(column, row, texts[row][column], ha="center", va="center", color=color, fontsize=fontsize)


def label_text(value: object) -> str:
    """A class label as text: 3.0 reads "3"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def up_to(seed_counts) -> str:
    """The words "up to " when the seed counts differ between series (a title then names the largest), else none."""
    return "" if len(set(int(count) for count in seed_counts)) == 1 else "up to "
