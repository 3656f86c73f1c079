"""The data set's first images, each titled with its label (study figure 1.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from mnist_models.plots.canvas import label_text, new_figure


def plot_first_images(images: np.ndarray, labels: Sequence[int] | np.ndarray, count: int = 25) -> Figure:
    """Grid of the first `count` images, each titled with its label (study figure 1.1)."""
    pixels = np.asarray(images, dtype=float)
    if pixels.ndim == 4 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 3:
        raise ValueError(
            f"images must have shape (N, height, width) or (N, height, width, 1); got shape {np.shape(images)}"
        )
    label_values = np.asarray(labels).reshape(-1)
    if len(label_values) != len(pixels):
        raise ValueError(f"got {len(pixels)} images but {len(label_values)} labels; expected one label per image")
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    if len(pixels) < count:
        raise ValueError(f"asked for the first {count} images but only {len(pixels)} were given")
    shown = pixels[:count]
    if not np.all(np.isfinite(shown)):
        raise ValueError("images contain NaN or infinite pixels; expected normalized values in [0, 1]")
    if shown.min() < 0.0 or shown.max() > 1.0:
        raise ValueError(
            f"images must be normalized to [0, 1]; got values in [{shown.min():g}, {shown.max():g}] "
            "(divide raw 0-255 pixels by 255 first)"
        )

    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    figure = new_figure((1.35 * columns, 1.45 * rows + 0.5))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, axes in enumerate(grid):
        if index >= count:
            axes.remove()
            continue
        axes.imshow(shown[index], cmap="binary", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(label_text(label_values[index]), fontsize=11)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"First {count} normalized training images (title = label)", fontsize=12)
    return figure
