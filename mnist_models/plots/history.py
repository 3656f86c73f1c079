"""The nightly runs' test accuracy per model over the dates, with its interval."""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps, dates
from matplotlib.figure import Figure

from mnist_models.plots.canvas import new_figure
from mnist_models.plots.checks import numeric_column, require_frame

HISTORY_COLUMNS = ("date", "model", "accuracy", "accuracy_low", "accuracy_high")


def plot_history(history: pd.DataFrame) -> Figure:
    """Test accuracy per model over the nightly runs, with its interval as error bars and a band."""
    frame = require_frame(history, HISTORY_COLUMNS, "accuracy history")
    try:
        when = pd.to_datetime(frame["date"], utc=True, format="mixed").dt.tz_convert(None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"accuracy history: column 'date' must hold dates or ISO 8601 strings ({error})") from error
    if when.isna().any():
        raise ValueError("accuracy history: column 'date' has missing values")
    table = pd.DataFrame(
        {
            "date": when.to_numpy(),
            "model": frame["model"].astype(str).to_numpy(),
            **{name: numeric_column(frame, name, "accuracy history") for name in HISTORY_COLUMNS[2:]},
        }
    )
    outside = (table["accuracy_low"] > table["accuracy"]) | (table["accuracy"] > table["accuracy_high"])
    if outside.any():
        row = table[outside].iloc[0]
        raise ValueError(
            f"accuracy history: interval [{row['accuracy_low']:g}, {row['accuracy_high']:g}] does not contain "
            f"accuracy {row['accuracy']:g} (model {row['model']!r}, {row['date']:%Y-%m-%d}); "
            "expected accuracy_low <= accuracy <= accuracy_high"
        )

    figure = new_figure((9.0, 4.6))
    axes = figure.add_subplot()
    palette = colormaps["tab10"].colors
    for index, model in enumerate(dict.fromkeys(table["model"])):
        rows = table[table["model"] == model].sort_values("date", kind="stable")
        color = palette[index % len(palette)]
        errors = [rows["accuracy"] - rows["accuracy_low"], rows["accuracy_high"] - rows["accuracy"]]
        band = (rows["accuracy_low"], rows["accuracy_high"])
        axes.fill_between(rows["date"], *band, color=color, alpha=0.15, linewidth=0)
        axes.errorbar(
            rows["date"], rows["accuracy"], yerr=errors, color=color, marker="o", markersize=4, capsize=3, label=model
        )
    first, last = table["date"].min(), table["date"].max()
    padding = max((last - first) * 0.04, pd.Timedelta(hours=12))
    axes.set_xlim(first - padding, last + padding)
    locator = dates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    axes.grid(True, alpha=0.3)
    axes.set_xlabel("run date (UTC)")
    axes.set_ylabel("test accuracy (interval as bars)")
    axes.set_title("Test accuracy per model over the nightly runs", fontsize=12)
    axes.legend(title="model", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    return figure
