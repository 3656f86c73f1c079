"""The study's figures: each function takes data and returns a matplotlib `Figure`.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas and never touch pyplot's
global state, so they can be drawn from several threads at once. `save_figure` writes one
PNG atomically and releases the figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, dates, patches, ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import auc, roc_curve

from mnist_models.io import atomic_path

SAVE_DPI = 110

KERNEL_HISTOGRAM_COLUMNS = ("epoch", "bin_left", "bin_right", "count")
GRADIENT_NORM_COLUMNS = ("epoch", "layer", "gradient_norm")
ACCURACY_CURVE_COLUMNS = ("epoch", "accuracy", "val_accuracy")
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1")
LR_SWEEP_COLUMNS = ("model", "learning_rate", "accuracy")
HISTORY_COLUMNS = ("date", "model", "accuracy", "accuracy_low", "accuracy_high")
LR_REPLICATES_COLUMNS = ("model", "learning_rate", "seeds", "accuracy_mean", "accuracy_mean_low", "accuracy_mean_high")
SEED_ACCURACY_COLUMNS = ("model", "learning_rate", "seed", "accuracy")
SEED_GRADIENT_COLUMNS = ("variant", "seed", "epoch", "layer", "gradient_norm")
LOG_SCALE_SPAN = 100.0  # gradient norms spanning more than this ratio are drawn on a log scale
LOGIT_SCALE_SPAN = 30.0  # accuracies whose error rates (1 - accuracy) span more than this ratio: logit scale
LOGIT_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)


# --------------------------------------------------------------------------- saving


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `figure` as a PNG at `path` (dpi 110) atomically, then clear it to release memory."""
    final = Path(path)
    if final.suffix.lower() != ".png":
        raise ValueError(f"figure path {str(final)!r} must end in .png; save_figure only writes PNG files")
    try:
        with atomic_path(final) as temporary:
            figure.savefig(temporary, format="png", dpi=SAVE_DPI, bbox_inches="tight", facecolor="white")
    finally:
        # Figures built here are not registered with pyplot, so clearing them drops every artist.
        figure.clear()
    return final


# --------------------------------------------------------------------------- figures


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
    figure = _new_figure((1.35 * columns, 1.45 * rows + 0.5))
    grid = figure.subplots(rows, columns, squeeze=False).ravel()
    for index, axes in enumerate(grid):
        if index >= count:
            axes.remove()
            continue
        axes.imshow(shown[index], cmap="binary", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(_label_text(label_values[index]), fontsize=11)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"First {count} normalized training images (title = label)", fontsize=12)
    return figure


def plot_kernel_histograms(histograms: Mapping[str, pd.DataFrame]) -> Figure:
    """Ridge histograms of kernel weights per epoch, one panel per variant (study figures 2.7, 2.8)."""
    _require_mapping(histograms, "kernel histograms", "variant label")
    prepared: dict[str, pd.DataFrame] = {}
    for variant, frame in histograms.items():
        where = f"kernel histogram {variant!r}"
        frame = _require_frame(frame, KERNEL_HISTOGRAM_COLUMNS, where)
        table = pd.DataFrame(
            {
                "epoch": _integer_column(frame, "epoch", where),
                "bin_left": _numeric_column(frame, "bin_left", where),
                "bin_right": _numeric_column(frame, "bin_right", where),
                "count": _numeric_column(frame, "count", where),
            }
        )
        if (table["bin_right"] <= table["bin_left"]).any():
            raise ValueError(f"{where}: every bin needs bin_right > bin_left")
        if (table["count"] < 0).any():
            raise ValueError(f"{where}: bin counts must be non-negative")
        prepared[variant] = table.sort_values(["epoch", "bin_left"], kind="stable")

    figure, panels = _panel_grid(len(prepared), panel_size=(5.2, 6.4), sharex=True, max_columns=2)
    for axes, (variant, table) in zip(panels, prepared.items()):
        _draw_ridges(axes, table)
        axes.set_title(variant, fontsize=11)
        axes.set_xlabel("kernel weight value")
        axes.set_ylabel("epoch (0 = at initialisation)")
    figure.suptitle("Kernel weight histograms of target_layer per epoch", fontsize=13)
    return figure


def plot_gradient_norms(gradients: Mapping[str, pd.DataFrame]) -> Figure:
    """Gradient norm per layer over epochs, one log-scale panel per variant, shared y range."""
    _require_mapping(gradients, "gradient norms", "variant label")
    prepared: dict[str, pd.DataFrame] = {}
    for variant, frame in gradients.items():
        where = f"gradient norms {variant!r}"
        frame = _require_frame(frame, GRADIENT_NORM_COLUMNS, where)
        table = pd.DataFrame(
            {
                "epoch": _integer_column(frame, "epoch", where),
                "layer": frame["layer"].astype(str).to_numpy(),
                "gradient_norm": _numeric_column(frame, "gradient_norm", where),
            }
        )
        if (table["gradient_norm"] < 0).any():
            raise ValueError(f"{where}: gradient norms must be non-negative")
        _refuse_repeated_rows(table, ("epoch", "layer"), where)
        prepared[variant] = table
    if all((table["gradient_norm"] <= 0).all() for table in prepared.values()):
        raise ValueError("every gradient norm is zero; there is nothing to show on a logarithmic scale")

    figure, panels = _panel_grid(len(prepared), panel_size=(5.6, 4.6), sharex=True, sharey=True, max_columns=2)
    for axes, (variant, table) in zip(panels, prepared.items()):
        layers = list(dict.fromkeys(table["layer"]))  # network order = first appearance
        palette = colormaps["viridis"](np.linspace(0.0, 0.9, max(len(layers), 2)))
        for color, layer in zip(palette, layers):
            rows = table[table["layer"] == layer].sort_values("epoch")
            axes.plot(rows["epoch"], rows["gradient_norm"], marker="o", markersize=3, color=color, label=layer)
        axes.set_yscale("log", nonpositive="mask")
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.yaxis.set_tick_params(labelleft=True)
        axes.grid(True, which="major", alpha=0.3)
        axes.set_title(variant, fontsize=11)
        axes.set_xlabel("epoch")
        axes.set_ylabel("gradient norm (log scale)")
        axes.legend(
            title="layer (input → output)",
            fontsize=8,
            title_fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=min(3, len(layers)),
            frameon=False,
        )
    figure.suptitle("Gradient norm per layer during training", fontsize=13)
    return figure


def plot_accuracy_curves(histories: Mapping[str, pd.DataFrame]) -> Figure:
    """Training and validation accuracy per epoch, one panel per model (study figure 2.9)."""
    _require_mapping(histories, "training histories", "model name")
    prepared: dict[str, pd.DataFrame] = {}
    for model, frame in histories.items():
        where = f"training history {model!r}"
        frame = _require_frame(frame, ACCURACY_CURVE_COLUMNS, where)
        prepared[model] = pd.DataFrame(
            {
                "epoch": _integer_column(frame, "epoch", where),
                "accuracy": _numeric_column(frame, "accuracy", where),
                "val_accuracy": _numeric_column(frame, "val_accuracy", where),
            }
        ).sort_values("epoch", kind="stable")

    figure, panels = _panel_grid(len(prepared), panel_size=(4.6, 3.9), max_columns=3)
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
    shared = _share_y_if_legible(panels)
    title = "Accuracy during training" + ("" if shared else " (y ranges differ between panels)")
    figure.suptitle(title, fontsize=13)
    return figure


def plot_roc_curves(labels: Sequence[int] | np.ndarray, probabilities: np.ndarray, title: str) -> Figure:
    """One-vs-rest ROC curve per class with its AUC in the legend, plus the chance diagonal."""
    truth = np.asarray(labels).reshape(-1) if np.ndim(labels) else np.asarray([labels])
    scores = np.asarray(probabilities, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (n, classes) with at least 2 classes; got {scores.shape}")
    if len(truth) != len(scores):
        raise ValueError(f"got {len(truth)} labels but {len(scores)} rows of probabilities; expected one per example")
    if len(truth) == 0:
        raise ValueError("no examples given; ROC curves need labels and probabilities for at least one example")
    if not np.all(np.isfinite(scores)):
        raise ValueError("probabilities contain NaN or infinite values")
    class_count = scores.shape[1]
    truth = _class_indices(truth, class_count)
    present = np.bincount(truth, minlength=class_count)
    missing = [str(digit) for digit in range(class_count) if present[digit] in (0, len(truth))]
    if missing:
        raise ValueError(
            f"classes {', '.join(missing)} have no examples (or only examples) in labels; a one-vs-rest ROC curve "
            "needs both positives and negatives for every class"
        )

    figure = _new_figure((8.6, 6.2))
    axes = figure.add_subplot()
    palette = colormaps["tab10"](np.arange(class_count) % 10)
    curves = []
    for digit in range(class_count):
        false_positive, true_positive, _ = roc_curve(truth == digit, scores[:, digit])
        area = auc(false_positive, true_positive)
        curves.append((false_positive, true_positive))
        axes.plot(false_positive, true_positive, color=palette[digit], linewidth=1.4, label=f"{digit} (AUC {area:.4f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="_chance")
    axes.text(0.2, 0.24, "chance", rotation=45, color="grey", fontsize=9, ha="center", va="center")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.grid(True, alpha=0.3)
    axes.set_xlabel("false positive rate (1 − specificity)")
    axes.set_ylabel("true positive rate (recall)")
    axes.set_title(title or "ROC curves", fontsize=12)
    axes.legend(title="digit", loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)

    # Good models crowd the top-left corner; a zoomed inset keeps their curves apart.
    zoom_fpr = 0.05
    corner = min(np.interp(zoom_fpr, fpr, tpr) for fpr, tpr in curves)
    if corner >= 0.8:
        early = min(np.interp(zoom_fpr / 10, fpr, tpr) for fpr, tpr in curves)
        lower = max(0.0, math.floor(min(early, corner - 0.05) * 20) / 20)
        inset = axes.inset_axes([0.36, 0.1, 0.54, 0.5], label="zoom")
        for digit, (fpr, tpr) in enumerate(curves):
            inset.plot(fpr, tpr, color=palette[digit], linewidth=1.2)
        inset.set_xlim(0, zoom_fpr)
        inset.set_ylim(lower, 1.0 + (1.0 - lower) * 0.02)
        inset.tick_params(labelsize=7)
        inset.grid(True, alpha=0.3)
        inset.set_title(f"zoom: false positive rate ≤ {zoom_fpr:g}", fontsize=8)
        axes.add_patch(
            patches.Rectangle((0, lower), zoom_fpr, 1.0 - lower, fill=False, edgecolor="black", linewidth=0.8)
        )
    return figure


def plot_f1_per_class(per_class: pd.DataFrame, title: str) -> Figure:
    """Grouped precision, recall and F1 bars per class, y from a data-driven floor up to 1."""
    frame = _require_frame(per_class, PER_CLASS_COLUMNS, "per-class metrics")
    metrics = {name: _numeric_column(frame, name, "per-class metrics") for name in ("precision", "recall", "f1")}
    for name, values in metrics.items():
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"per-class metrics: {name} must lie in [0, 1]; got [{values.min():g}, {values.max():g}]")
    classes = [_label_text(value) for value in frame["class"]]

    figure = _new_figure((max(7.5, 0.75 * len(classes) + 2.5), 4.6))
    axes = figure.add_subplot()
    positions = np.arange(len(classes))
    width = 0.27
    for offset, (name, values) in zip((-width, 0.0, width), metrics.items()):
        axes.bar(positions + offset, values, width=width, label=name if name != "f1" else "F1")
    macro_f1 = float(np.mean(metrics["f1"]))
    axes.axhline(macro_f1, color="black", linestyle="--", linewidth=1, label=f"macro F1 = {macro_f1:.3f}")
    lowest = min(values.min() for values in metrics.values())
    lower = max(0.0, math.floor((lowest - 0.02) * 20) / 20)
    axes.set_ylim(lower, 1.0)
    axes.set_xticks(positions, classes)
    axes.grid(True, axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_xlabel("class (digit)")
    axes.set_ylabel("score" if lower == 0 else f"score (axis starts at {lower:g})")
    axes.set_title(title or "Precision, recall and F1 per class", fontsize=12)
    handles, names = axes.get_legend_handles_labels()
    order = [*range(1, len(handles)), 0]  # bars first, the macro-F1 line last
    axes.legend(
        [handles[index] for index in order],
        [names[index] for index in order],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.07),
        ncol=4,
        fontsize=9,
        frameon=False,
    )
    return figure


def plot_lr_sweep_heatmap(sweep: pd.DataFrame) -> Figure:
    """Heatmap of test accuracy, models × learning rates (descending, study table 5.1), annotated.

    An optional `status` column marks cells: a run "diverged at epoch N" is annotated "diverged", a
    "failed" run (accuracy NaN) is a grey cell reading "failed".
    """
    frame = _require_frame(sweep, LR_SWEEP_COLUMNS, "learning-rate sweep")
    status = frame["status"].astype(str) if "status" in frame.columns else pd.Series("trained", index=frame.index)
    marks = {(model, float(rate)): ("failed" if text == "failed" else "diverged")
             for model, rate, text in zip(frame["model"].astype(str), frame["learning_rate"], status)
             if text == "failed" or text.startswith("diverged")}
    table = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": _numeric_column(frame, "learning_rate", "learning-rate sweep"),
            "accuracy": pd.to_numeric(frame["accuracy"], errors="coerce").to_numpy(dtype=float),
        }
    )
    ran = (status != "failed").to_numpy()
    _numeric_column(frame[ran], "accuracy", "learning-rate sweep")  # only a failed run may lack its accuracy
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

    figure = _new_figure((1.45 * len(learning_rates) + 3.0, 0.75 * len(models) + 2.2))
    axes = figure.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    values = grid.to_numpy(dtype=float)
    norm = colors.Normalize(vmin=np.nanmin(values), vmax=np.nanmax(values))
    if norm.vmin == norm.vmax:
        norm = colors.Normalize(vmin=norm.vmin - 0.01, vmax=norm.vmax + 0.01)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    texts = [[_cell_text(value, marks.get((model, float(rate)))) for value, rate in zip(row, learning_rates)]
             for model, row in zip(models, values)]
    _annotate_cells(axes, values, texts, cmap, norm, fontsize=11)
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


def plot_confusion_matrix(matrix: np.ndarray, title: str) -> Figure:
    """Annotated confusion matrix: rows are true labels, columns predicted labels."""
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ValueError(f"confusion matrix must be square (classes × classes, at least 2); got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)):
        raise ValueError("confusion matrix must hold finite numeric counts")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("confusion matrix must hold non-negative whole counts")
    counts = counts.astype(np.int64)
    if counts.sum() == 0:
        raise ValueError("confusion matrix is all zeros; expected counts from at least one prediction")
    class_count = counts.shape[0]

    figure = _new_figure((7.4, 6.3))
    axes = figure.add_subplot()
    cmap = colormaps["Blues"]
    # Square-root-like scaling keeps the rare errors visible next to a diagonal of ~1000.
    norm = colors.PowerNorm(gamma=0.4, vmin=0, vmax=max(int(counts.max()), 1))
    image = axes.imshow(counts, cmap=cmap, norm=norm)
    texts = [[str(value) for value in row] for row in counts]
    fontsize = 9 if class_count <= 10 else max(5, 90 // class_count)
    _annotate_cells(axes, counts.astype(float), texts, cmap, norm, fontsize=fontsize, zero_color="#b0b0b0")
    axes.set_xticks(range(class_count))
    axes.set_yticks(range(class_count))
    axes.tick_params(length=0)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    accuracy = np.trace(counts) / counts.sum()
    axes.set_title(f"{title or 'Confusion matrix'}\naccuracy {accuracy:.4f} on {counts.sum():,} examples", fontsize=12)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03)
    colorbar.set_label("count (power scale)")
    return figure


def plot_history(history: pd.DataFrame) -> Figure:
    """Test accuracy per model over the nightly runs, with its interval as error bars and a band."""
    frame = _require_frame(history, HISTORY_COLUMNS, "accuracy history")
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
            **{name: _numeric_column(frame, name, "accuracy history") for name in HISTORY_COLUMNS[2:]},
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

    figure = _new_figure((9.0, 4.6))
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

    figure = _new_figure((8.8, 5.0))
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
        title = f"Test accuracy by learning rate: mean and {level} interval across {_up_to(cells['seeds'])}{most} seeds"
    else:
        title = "Test accuracy by learning rate (one seed per cell: no across-seed interval)"
    axes.set_title(title, fontsize=12)
    return figure


def plot_gradient_norm_band(gradients: pd.DataFrame, layer: str = "target_layer") -> Figure:
    """`layer`'s gradient norm per epoch, one line per variant: mean across seeds and a min-max band.

    `gradients` has one row per variant, seed, epoch and layer; only `layer`'s rows are drawn. The band
    spans the smallest to the largest seed at each epoch (with three seeds a standard deviation says
    little); it is drawn only for variants with more than one seed. Like `plot_gradient_norms`, the y axis
    is logarithmic, here only when the norms are all positive and span more than two orders of magnitude.
    """
    table = _layer_gradient_rows(gradients, layer)
    figure = _new_figure((8.6, 4.8))
    axes = figure.add_subplot()
    palette = colormaps["tab10"].colors
    seed_counts = []
    for index, variant in enumerate(dict.fromkeys(table["variant"])):
        color = palette[index % len(palette)]
        rows = table[table["variant"] == variant]
        seeds = rows["seed"].nunique()
        seed_counts.append(seeds)
        per_epoch = rows.groupby("epoch")["gradient_norm"].agg(["mean", "min", "max"]).sort_index()
        described = f"mean of {seeds} seeds" if seeds > 1 else "1 seed"
        axes.plot(per_epoch.index, per_epoch["mean"], marker="o", markersize=3.5, color=color, zorder=3,
                  label=f"{variant} ({described})")
        if seeds > 1:
            axes.fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"], color=color, alpha=0.2,
                              linewidth=0, zorder=2, label=f"{variant}: min–max across {seeds} seeds")
    norms = table["gradient_norm"]
    logarithmic = bool((norms > 0).all() and norms.max() / norms.min() > LOG_SCALE_SPAN)
    if logarithmic:
        axes.set_yscale("log", nonpositive="mask")
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.grid(True, which="major", alpha=0.3)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"gradient norm of {layer}" + (" (log scale)" if logarithmic else ""))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=9, frameon=False)
    most = max(seed_counts)
    if most > 1:
        title = f"Gradient norm of {layer} per epoch: mean and min–max band across {_up_to(seed_counts)}{most} seeds"
    else:
        title = f"Gradient norm of {layer} per epoch (one seed per variant: no band)"
    axes.set_title(title, fontsize=12)
    return figure


# --------------------------------------------------------------------------- helpers


def _new_figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)  # an explicit Agg canvas: no pyplot, no global backend
    return figure


def _panel_grid(
    count: int,
    panel_size: tuple[float, float],
    *,
    sharex: bool = False,
    sharey: bool = False,
    max_columns: int = 3,
) -> tuple[Figure, list]:
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    figure = _new_figure((panel_size[0] * columns, panel_size[1] * rows + 0.4))
    grid = figure.subplots(rows, columns, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for unused in grid[count:]:
        unused.remove()
    return figure, list(grid[:count])


def _share_y_if_legible(panels: list) -> bool:
    """Give all panels one y range unless that would flatten some panel's curves to a sliver."""
    limits = [axes.get_ylim() for axes in panels]
    low = min(limit[0] for limit in limits)
    high = max(limit[1] for limit in limits)
    if any((limit[1] - limit[0]) < 0.25 * (high - low) for limit in limits):
        return False
    for axes in panels:
        axes.set_ylim(low, high)
    return True


def _draw_ridges(axes, table: pd.DataFrame) -> None:
    """TensorBoard-style offset histograms: epoch 0 at the back (top), the last epoch in front."""
    epochs = sorted(table["epoch"].unique())
    widths = table["bin_right"] - table["bin_left"]
    totals = table.groupby("epoch")["count"].transform("sum").replace(0, 1)
    density = table["count"] / (totals * widths)
    peak = float(density.max()) or 1.0
    spacing = 1.0
    height = 2.5 * spacing  # ridges overlap their neighbours like TensorBoard's offset view
    last = epochs[-1]
    palette = colormaps["Oranges"]
    span = max(last - epochs[0], 1)
    for epoch in epochs:
        rows = table["epoch"] == epoch
        bins = table[rows]
        centres = ((bins["bin_left"] + bins["bin_right"]) / 2).to_numpy()
        curve = (density[rows] / peak * height).to_numpy()
        xs = np.concatenate([[bins["bin_left"].iloc[0]], centres, [bins["bin_right"].iloc[-1]]])
        ys = np.concatenate([[0.0], curve, [0.0]])
        baseline = (last - epoch) * spacing
        shade = palette(0.25 + 0.7 * (epoch - epochs[0]) / span)
        order = 2 + epoch - epochs[0]
        axes.fill_between(xs, baseline, baseline + ys, facecolor=shade, edgecolor="none", zorder=order)
        outline = colors.to_rgb(shade)
        axes.plot(xs, baseline + ys, color=tuple(0.55 * channel for channel in outline), linewidth=0.8, zorder=order)
    step = max(1, math.ceil(len(epochs) / 11))
    labelled = epochs[::-1][::step]
    axes.set_yticks([(last - epoch) * spacing for epoch in labelled], [str(epoch) for epoch in labelled])
    axes.set_ylim(-0.3 * spacing, (last - epochs[0]) * spacing + height + 0.3 * spacing)
    axes.grid(True, axis="x", alpha=0.3)
    axes.set_axisbelow(True)


def _annotate_cells(axes, values: np.ndarray, texts, cmap, norm, *, fontsize: float, zero_color: str | None = None):
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


def _require_mapping(mapping: Mapping[str, pd.DataFrame], what: str, key_name: str) -> None:
    if not isinstance(mapping, Mapping) or len(mapping) == 0:
        raise ValueError(f"{what}: expected a non-empty dict of {key_name} -> DataFrame; got {type(mapping).__name__}")


def _refuse_repeated_rows(table: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    """Raise ValueError naming the first row whose `keys` appear more than once (one row per key expected)."""
    duplicated = table.duplicated(list(keys))
    if duplicated.any():
        first = table[duplicated].iloc[0]
        named = ", ".join(f"{key} {first[key]!r}" if isinstance(first[key], str) else f"{key} {first[key]}"
                          for key in keys)
        raise ValueError(f"{where}: {named} appears more than once; expected one row per ({', '.join(keys)})")


def _require_frame(frame: pd.DataFrame, columns: Sequence[str], where: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame; got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{where}: missing columns {missing}; expected {list(columns)}, got {[str(c) for c in frame.columns]}"
        )
    if frame.empty:
        raise ValueError(f"{where}: the table is empty; expected at least one row with columns {list(columns)}")
    return frame


def _numeric_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: column {column!r} must hold finite numbers; found missing or non-numeric values")
    return values


def _integer_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = _numeric_column(frame, column, where)
    if np.any(values != np.round(values)) or np.any(values < 0):
        raise ValueError(f"{where}: column {column!r} must hold non-negative whole numbers")
    return values.astype(np.int64)


def _class_indices(labels: np.ndarray, class_count: int) -> np.ndarray:
    numeric = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(numeric)) or np.any(numeric != np.round(numeric)):
        raise ValueError("labels must be whole class indices (0, 1, ..., classes - 1)")
    indices = numeric.astype(np.int64)
    if indices.min() < 0 or indices.max() >= class_count:
        raise ValueError(
            f"labels must lie in 0..{class_count - 1} to match {class_count} probability columns; "
            f"got labels in {indices.min()}..{indices.max()}"
        )
    return indices


def _label_text(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _replicate_cells(replicates: pd.DataFrame) -> pd.DataFrame:
    """The replicates table's plotted columns, checked: one row per cell, interval NaN or around the mean."""
    where = "replicates table"
    frame = _require_frame(replicates, LR_REPLICATES_COLUMNS, where)
    cells = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": _numeric_column(frame, "learning_rate", where),
            "seeds": _integer_column(frame, "seeds", where),
            "accuracy_mean": _numeric_column(frame, "accuracy_mean", where),
            **{name: pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
               for name in ("accuracy_mean_low", "accuracy_mean_high")},
        }
    )
    if (cells["learning_rate"] <= 0).any():
        raise ValueError(f"{where}: learning rates must be positive (they are drawn on a log axis)")
    if (cells["seeds"] < 1).any():
        raise ValueError(f"{where}: column 'seeds' must be at least 1 in every row")
    _refuse_repeated_rows(cells, ("model", "learning_rate"), where)
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
    frame = _require_frame(sweep, SEED_ACCURACY_COLUMNS, where)
    runs = pd.DataFrame(
        {
            "model": frame["model"].astype(str).to_numpy(),
            "learning_rate": _numeric_column(frame, "learning_rate", where),
            "seed": frame["seed"].astype(str).to_numpy(),
            "accuracy": _numeric_column(frame, "accuracy", where),
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


def _up_to(seed_counts) -> str:
    return "" if len(set(int(count) for count in seed_counts)) == 1 else "up to "


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


def _layer_gradient_rows(gradients: pd.DataFrame, layer: str) -> pd.DataFrame:
    """`layer`'s rows of the per-seed gradient table, checked: norms non-negative, one row per variant, seed, epoch."""
    where = "gradient norms across seeds"
    frame = _require_frame(gradients, SEED_GRADIENT_COLUMNS, where)
    present = list(dict.fromkeys(frame["layer"].astype(str)))
    if str(layer) not in present:
        raise ValueError(f"{where}: no rows for layer {layer!r}; layers present: {present}")
    frame = frame[frame["layer"].astype(str) == str(layer)]
    table = pd.DataFrame(
        {
            "variant": frame["variant"].astype(str).to_numpy(),
            "seed": frame["seed"].astype(str).to_numpy(),
            "epoch": _integer_column(frame, "epoch", where),
            "gradient_norm": _numeric_column(frame, "gradient_norm", where),
        }
    )
    if (table["gradient_norm"] < 0).any():
        raise ValueError(f"{where}: gradient norms must be non-negative")
    if (table["gradient_norm"] == 0).all():
        raise ValueError(f"{where}: every gradient norm of layer {layer!r} is zero; there is nothing to compare")
    _refuse_repeated_rows(table, ("variant", "seed", "epoch"), f"{where} ({layer!r} rows)")
    return table
