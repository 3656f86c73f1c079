"""Test accuracy by learning rate: the sweep as a heatmap (study table 5.1), and across seeds as means with
their intervals and every seed's accuracy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mnist_models.plots.canvas import annotate_cells, new_figure, up_to
from mnist_models.plots.checks import integer_column, numeric_column, refuse_repeated_rows, require_frame

LR_SWEEP_COLUMNS = ("model", "learning_rate", "accuracy")
LR_REPLICATES_COLUMNS = ("model", "learning_rate", "seeds", "accuracy_mean", "accuracy_mean_low", "accuracy_mean_high")
SEED_ACCURACY_COLUMNS = ("model", "learning_rate", "seed", "accuracy")
LOGIT_SCALE_SPAN = 30.0  # accuracies whose error rates (1 - accuracy) span more than this ratio: logit scale
LOGIT_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)


def plot_lr_sweep_heatmap(sweep: pd.DataFrame) -> Figure:
    """Heatmap of test accuracy, models × learning rates (descending, study table 5.1), annotated.

    An optional `status` column marks cells: a run "diverged at epoch N" is annotated "diverged", a
    "failed" run (accuracy NaN) is a grey cell reading "failed".
    """
    frame = require_frame(sweep, LR_SWEEP_COLUMNS, "learning-rate sweep")
    status = frame["status"].astype(str) if "status" in frame.columns else pd.Series("trained", index=frame.index)
    marks = {(model, float(rate)): ("failed" if text == "failed" else "diverged")
             for model, rate, text in zip(frame["model"].astype(str), frame["learning_rate"], status)
             if text == "failed" or text.startswith("diverged")}
    table = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": numeric_column(frame, "learning_rate", "learning-rate sweep"),
            "accuracy": pd.to_numeric(frame["accuracy"], errors="coerce").to_numpy(dtype=float),
        }
    )
    ran = (status != "failed").to_numpy()
    numeric_column(frame[ran], "accuracy", "learning-rate sweep")  # only a failed run may lack its accuracy
    if (table["learning_rate"] <= 0).any():
        raise ValueError("learning-rate sweep: learning rates must be positive")
    models = list(dict.fromkeys(table["model"]))
    learning_rates = sorted(table["learning_rate"].unique(), reverse=True)
    grouped = table.groupby(["model", "learning_rate"])["accuracy"]
    grid = grouped.mean().unstack("learning_rate").reindex(index=models, columns=learning_rates)
    for (model, rate), mark in marks.items():  # a cell with a failed seed beside finished ones shows their mean
        if mark == "failed" and not np.isnan(grid.loc[model, rate]):
            marks[(model, rate)] = "a seed failed"
    runs_per_cell = int(grouped.size().max())

    figure = new_figure((1.45 * len(learning_rates) + 3.0, 0.75 * len(models) + 2.2))
    axes = figure.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    values = grid.to_numpy(dtype=float)
    norm = colors.Normalize(vmin=np.nanmin(values), vmax=np.nanmax(values))
    if norm.vmin == norm.vmax:
        norm = colors.Normalize(vmin=norm.vmin - 0.01, vmax=norm.vmax + 0.01)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    texts = [[_cell_text(value, marks.get((model, float(rate)))) for value, rate in zip(row, learning_rates)]
             for model, row in zip(models, values)]
    annotate_cells(axes, values, texts, cmap, norm, fontsize=11)
    axes.set_xticks(range(len(learning_rates)), [f"{rate:g}" for rate in learning_rates])
    axes.set_yticks(range(len(models)), models)
    axes.tick_params(length=0)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("model")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.05, pad=0.03)
    colorbar.set_label("test accuracy")
    suffix = f" (mean of up to {runs_per_cell} runs per cell)" if runs_per_cell > 1 else ""
    axes.set_title(f"Test accuracy by learning rate{suffix}", fontsize=12)
    return figure


def _cell_text(value: float, mark: str | None) -> str:
    if np.isnan(value):
        return mark or "n/a"
    return f"{value:.3f}" if mark is None else f"{value:.3f}\n{mark}"


def plot_lr_sweep_across_seeds(replicates: pd.DataFrame, sweep: pd.DataFrame, *, confidence: float = 0.95) -> Figure:
    """Test accuracy by learning rate: per model the mean across seeds, its t-interval as bars, each seed as a dot.

    `replicates` has one row per model and learning rate (`mnist_models.replicates.replicates_table`; the
    interval is NaN where a cell has one seed), `sweep` one row per run with that seed's accuracy.
    `confidence` only names the interval in the labels; it must match the one the table was built with.
    Learning rates run largest first on a log axis, as in study table 5.1. Models sit slightly apart
    sideways so that their bars do not hide each other. When the error rates (1 - accuracy) of the drawn
    values span more than a factor of 30 (a diverged learning rate at ~0.1 beside models at 0.99), y is on
    a logit scale, which keeps both 0.1 and the gap between 0.99 and 0.995 readable; otherwise, or when
    a value lies outside (0, 1) (a t-interval can pass 1), it is linear.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1; got {confidence}")
    cells = _replicate_cells(replicates)
    runs = _seed_accuracies(sweep, cells)
    level = f"{100 * confidence:g}%"

    figure = new_figure((8.8, 5.0))
    axes = figure.add_subplot()
    palette = colormaps["tab10"].colors
    models = list(dict.fromkeys(cells["model"]))
    for index, model in enumerate(models):
        nudge = 10 ** (0.035 * (index - (len(models) - 1) / 2))  # sideways offset, in decades
        _draw_seed_series(axes, model, cells[cells["model"] == model], runs[runs["model"] == model],
                          color=palette[index % len(palette)], nudge=nudge)
    _learning_rate_axis(axes, sorted(cells["learning_rate"].unique()))
    values = np.concatenate([runs["accuracy"], cells["accuracy_mean"],
                             cells["accuracy_mean_low"].dropna(), cells["accuracy_mean_high"].dropna()])
    logit = _wants_logit_scale(values)
    if logit:
        axes.set_yscale("logit")
        axes.yaxis.set_major_locator(ticker.FixedLocator(LOGIT_TICKS))
        axes.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:g}"))
        axes.yaxis.set_minor_locator(ticker.NullLocator())
    axes.grid(True, which="major", alpha=0.3)
    axes.set_xlabel("learning rate (log scale, largest first as in study table 5.1)")
    axes.set_ylabel("test accuracy" + (" (logit scale)" if logit else ""))

    most = int(cells["seeds"].max())
    interval = f"mean, {level} t-interval across seeds" if most > 1 else None
    handles, names = _with_seed_legend_keys(*axes.get_legend_handles_labels(), interval)
    axes.legend(handles, names, title="model (seeds)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    if most > 1:
        title = f"Test accuracy by learning rate: mean and {level} interval across {up_to(cells['seeds'])}{most} seeds"
    else:
        title = "Test accuracy by learning rate (one seed per cell: no across-seed interval)"
    axes.set_title(title, fontsize=12)
    return figure


def _replicate_cells(replicates: pd.DataFrame) -> pd.DataFrame:
    """The replicates table's plotted columns, checked: one row per cell, interval NaN or around the mean."""
    where = "replicates table"
    frame = require_frame(replicates, LR_REPLICATES_COLUMNS, where)
    cells = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": numeric_column(frame, "learning_rate", where),
            "seeds": integer_column(frame, "seeds", where),
            "accuracy_mean": numeric_column(frame, "accuracy_mean", where),
            **{name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
               for name in ("accuracy_mean_low", "accuracy_mean_high")},
        }
    )
    if (cells["learning_rate"] <= 0).any():
        raise ValueError(f"{where}: learning rates must be positive (they are drawn on a log axis)")
    if (cells["seeds"] < 1).any():
        raise ValueError(f"{where}: column 'seeds' must be at least 1 in every row")
    refuse_repeated_rows(cells, ("model", "learning_rate"), where)
    low, high = cells["accuracy_mean_low"], cells["accuracy_mean_high"]
    if (low.isna() != high.isna()).any() or np.isinf(low).any() or np.isinf(high).any():
        raise ValueError(f"{where}: accuracy_mean_low and accuracy_mean_high must both be finite or both NaN")
    outside = (low > cells["accuracy_mean"]) | (cells["accuracy_mean"] > high)
    if outside.any():
        row = cells[outside].iloc[0]
        raise ValueError(
            f"{where}: interval [{row['accuracy_mean_low']:g}, {row['accuracy_mean_high']:g}] does not contain "
            f"accuracy_mean {row['accuracy_mean']:g} (model {row['model']!r}, learning rate {row['learning_rate']:g})"
        )
    return cells


def _seed_accuracies(sweep: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The sweep's per-seed accuracies, checked against the replicates table's cells and seed counts."""
    where = "learning-rate sweep (one row per seed)"
    frame = require_frame(sweep, SEED_ACCURACY_COLUMNS, where)
    runs = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": numeric_column(frame, "learning_rate", where),
            "seed": frame["seed"].astype(str).to_numpy(),
            "accuracy": numeric_column(frame, "accuracy", where),
        }
    )
    counts = runs.groupby(["model", "learning_rate"], sort=False)["seed"].nunique().rename("runs").reset_index()
    matched = cells[["model", "learning_rate", "seeds"]].merge(counts, on=["model", "learning_rate"], how="outer")
    unmatched = matched[matched["seeds"].isna()]
    if len(unmatched):
        first = unmatched.iloc[0]
        raise ValueError(
            f"{where}: model {first['model']!r} at learning rate {first['learning_rate']:g} has runs but no row "
            "in the replicates table; pass the sweep the table was built from"
        )
    differing = matched[matched["runs"].fillna(0) != matched["seeds"]]
    if len(differing):
        first = differing.iloc[0]
        raise ValueError(
            f"{where}: model {first['model']!r} at learning rate {first['learning_rate']:g} has "
            f"{int(first['runs'] if pd.notna(first['runs']) else 0)} seeds in the sweep but "
            f"{int(first['seeds'])} in the replicates table; pass the sweep the table was built from"
        )
    return runs


def _wants_logit_scale(accuracies: np.ndarray) -> bool:
    """Whether error rates (1 - accuracy) span more than LOGIT_SCALE_SPAN, every value strictly inside (0, 1)."""
    if np.any(accuracies <= 0) or np.any(accuracies >= 1):
        return False
    errors = 1.0 - accuracies
    return bool(errors.max() / errors.min() > LOGIT_SCALE_SPAN)


def _seed_count_text(seeds: pd.Series) -> str:
    fewest, most = int(seeds.min()), int(seeds.max())
    if fewest == most:
        return "1 seed" if most == 1 else f"{most} seeds"
    return f"{fewest}–{most} seeds"


def _draw_seed_series(axes, model: str, rows: pd.DataFrame, dots: pd.DataFrame, *, color, nudge: float) -> None:
    """One model: faint per-seed dots, the mean as a line with markers, the interval as bars where there is one."""
    rows = rows.sort_values("learning_rate", kind="stable")
    axes.scatter(dots["learning_rate"] * nudge, dots["accuracy"], s=14, color=color, alpha=0.4, linewidths=0,
                 zorder=2, label="_seeds")
    axes.plot(rows["learning_rate"] * nudge, rows["accuracy_mean"], marker="o", markersize=5, color=color,
              zorder=3, label=f"{model} ({_seed_count_text(rows['seeds'])})")
    bounded = rows[rows["accuracy_mean_low"].notna()]
    if len(bounded):
        errors = [bounded["accuracy_mean"] - bounded["accuracy_mean_low"],
                  bounded["accuracy_mean_high"] - bounded["accuracy_mean"]]
        axes.errorbar(bounded["learning_rate"] * nudge, bounded["accuracy_mean"], yerr=errors, fmt="none",
                      ecolor=color, elinewidth=1.4, capsize=4, zorder=3, label="_interval")


def _learning_rate_axis(axes, rates: list[float]) -> None:
    """A log x axis ticked at the learning rates, largest on the left."""
    axes.set_xscale("log")
    axes.set_xticks(rates, [f"{rate:g}" for rate in rates])
    axes.xaxis.set_minor_locator(ticker.NullLocator())
    low, high = math.log10(rates[0]), math.log10(rates[-1])
    margin = max(0.3, 0.08 * (high - low))
    axes.set_xlim(10 ** (high + margin), 10 ** (low - margin))


def _with_seed_legend_keys(handles: list, names: list[str], interval_name: str | None) -> tuple[list, list[str]]:
    """The models' legend entries, then grey keys for a seed's dot and (when drawn) the mean with its interval."""
    grey = "#555555"
    handles = [*handles, Line2D([], [], linestyle="none", marker="o", markersize=4, color=grey, alpha=0.5)]
    names = [*names, "one seed's accuracy"]
    if interval_name is not None:
        mean_line = Line2D([], [], color=grey, marker="o", markersize=5)
        bars = LineCollection([], colors=grey, linewidths=1.4)
        handles.append(ErrorbarContainer((mean_line, (), (bars,)), has_yerr=True))
        names.append(interval_name)
    return handles, names
