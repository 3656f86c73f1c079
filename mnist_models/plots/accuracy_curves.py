"""Training and validation accuracy per epoch, one panel per model (study figure 2.9)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from mnist_models.plots.canvas import panel_grid, share_y_if_legible
from mnist_models.plots.checks import integer_column, numeric_column, require_frame, require_mapping

ACCURACY_CURVE_COLUMNS = ("epoch", "accuracy", "val_accuracy")


def plot_accuracy_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training and validation accuracy per epoch, one panel per model (study figure 2.9)."""
    require_mapping(histories, "training histories", "model name")
    prepared: dict[str, pd.DataFrame] = {}
    for model, frame in histories.items():
        where = f"training history {model!r}"
        frame = require_frame(frame, ACCURACY_CURVE_COLUMNS, where)
        prepared[model] = pd.DataFrame(
            {
                "epoch": integer_column(frame, "epoch", where),
                "accuracy": numeric_column(frame, "accuracy", where),
                "val_accuracy": numeric_column(frame, "val_accuracy", where),
            }
        ).sort_values("epoch", kind="stable")

    figure, panels = panel_grid(len(prepared), panel_size=(4.6, 3.9), max_columns=3)
    for axes, (model, table) in zip(panels, prepared.items()):
        axes.plot(table["epoch"], table["accuracy"], marker="o", markersize=3.5, label="training")
        axes.plot(table["epoch"], table["val_accuracy"], marker="s", markersize=3.5, label="validation")
        final = table.iloc[-1]
        axes.set_title(f"{model} (final validation {final['val_accuracy']:.3f})", fontsize=11)
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.set_xlabel("epoch")
        axes.set_ylabel("accuracy")
        axes.legend(loc="best", fontsize=9)
    shared = share_y_if_legible(panels)
    title = "Accuracy during training" + ("" if shared else " (y ranges differ between panels)")
    figure.suptitle(title, fontsize=13)
    return figure
