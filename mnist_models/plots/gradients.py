"""The gradient experiment's figures: kernel weight histograms per epoch, every layer's gradient norm, and
target_layer's gradient norm with its band across seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, ticker
from matplotlib.figure import Figure

from mnist_models.plots.canvas import new_figure, panel_grid, up_to
from mnist_models.plots.checks import (integer_column, numeric_column, refuse_repeated_rows, require_frame,
                                       require_mapping)

KERNEL_HISTOGRAM_COLUMNS = ("epoch", "bin_left", "bin_right", "count")
GRADIENT_NORM_COLUMNS = ("epoch", "layer", "gradient_norm")
SEED_GRADIENT_COLUMNS = ("variant", "seed", "epoch", "layer", "gradient_norm")
LOG_SCALE_SPAN = 100.0  # gradient norms spanning more than this ratio are drawn on a log scale


def plot_kernel_histograms(histograms: Mapping[str, pd.DataFrame]) -> Figure:
    """Ridge histograms of kernel weights per epoch, one panel per variant (study figures 2.7, 2.8)."""
    require_mapping(histograms, "kernel histograms", "variant label")
    prepared: dict[str, pd.DataFrame] = {}
    for variant, frame in histograms.items():
        where = f"kernel histogram {variant!r}"
        frame = require_frame(frame, KERNEL_HISTOGRAM_COLUMNS, where)
        table = pd.DataFrame(
            {
                "epoch": integer_column(frame, "epoch", where),
                "bin_left": numeric_column(frame, "bin_left", where),
                "bin_right": numeric_column(frame, "bin_right", where),
                "count": numeric_column(frame, "count", where),
            }
        )
        if (table["bin_right"] <= table["bin_left"]).any():
            raise ValueError(f"{where}: every bin needs bin_right > bin_left")
        if (table["count"] < 0).any():
            raise ValueError(f"{where}: bin counts must be non-negative")
        prepared[variant] = table.sort_values(["epoch", "bin_left"], kind="stable")

    figure, panels = panel_grid(len(prepared), panel_size=(5.2, 6.4), sharex=True, max_columns=2)
    for axes, (variant, table) in zip(panels, prepared.items()):
        _draw_ridges(axes, table)
        axes.set_title(variant, fontsize=11)
        axes.set_xlabel("kernel weight value")
        axes.set_ylabel("epoch (0 = at initialisation)")
    figure.suptitle("Kernel weight histograms of target_layer per epoch", fontsize=13)
    return figure


def plot_gradient_norms(gradients: Mapping[str, pd.DataFrame]) -> Figure:
    """Gradient norm per layer over epochs, one log-scale panel per variant, shared y range.

    A frame with a `seed` column of several seeds draws each layer's mean across seeds with a min–max band.
    """
    require_mapping(gradients, "gradient norms", "variant label")
    prepared: dict[str, pd.DataFrame] = {}
    for variant, frame in gradients.items():
        where = f"gradient norms {variant!r}"
        frame = require_frame(frame, GRADIENT_NORM_COLUMNS, where)
        table = pd.DataFrame(
            {
                "epoch": integer_column(frame, "epoch", where),
                "layer": frame["layer"].astype(str).to_numpy(),
                "gradient_norm": numeric_column(frame, "gradient_norm", where),
                "seed": integer_column(frame, "seed", where) if "seed" in frame else 0,
            }
        )
        if (table["gradient_norm"] < 0).any():
            raise ValueError(f"{where}: gradient norms must be non-negative")
        refuse_repeated_rows(table, ("seed", "epoch", "layer"), where)
        prepared[variant] = table
    if all((table["gradient_norm"] <= 0).all() for table in prepared.values()):
        raise ValueError("every gradient norm is zero; there is nothing to show on a logarithmic scale")

    figure, panels = panel_grid(len(prepared), panel_size=(5.6, 4.6), sharex=True, sharey=True, max_columns=2)
    for axes, (variant, table) in zip(panels, prepared.items()):
        layers = list(dict.fromkeys(table["layer"]))  # network order = first appearance
        palette = colormaps["viridis"](np.linspace(0.0, 0.9, max(len(layers), 2)))
        seeds = table["seed"].nunique()
        for color, layer in zip(palette, layers):
            per_epoch = (table[table["layer"] == layer].groupby("epoch")["gradient_norm"]
                         .agg(["mean", "min", "max"]).sort_index())
            axes.plot(per_epoch.index, per_epoch["mean"], marker="o", markersize=3, color=color, label=layer)
            if seeds > 1:
                axes.fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"], color=color, alpha=0.18,
                                  linewidth=0)
        axes.set_yscale("log", nonpositive="mask")
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axes.yaxis.set_tick_params(labelleft=True)
        axes.grid(True, which="major", alpha=0.3)
        axes.set_title(variant if seeds < 2 else f"{variant}: mean and min–max of {seeds} seeds", fontsize=11)
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


def plot_gradient_norm_band(gradients: pd.DataFrame, layer: str = "target_layer") -> Figure:
    """`layer`'s gradient norm per epoch, one line per variant: mean across seeds and a min-max band.

    `gradients` has one row per variant, seed, epoch and layer; only `layer`'s rows are drawn. The band
    spans the smallest to the largest seed at each epoch (with three seeds a standard deviation says
    little); it is drawn only for variants with more than one seed. Like `plot_gradient_norms`, the y axis
    is logarithmic, here only when the norms are all positive and span more than two orders of magnitude.
    """
    table = _layer_gradient_rows(gradients, layer)
    figure = new_figure((8.6, 4.8))
    axes = figure.add_subplot()
    palette = colormaps["tab10"].colors
    seed_counts = []
    variants = list(dict.fromkeys(table["variant"]))
    # Pairs of several depths: one colour per pair, dashed without the shortcut, and a legend of lines only.
    paired = len(variants) > 2
    for index, variant in enumerate(variants):
        color = palette[(index // 2 if paired else index) % len(palette)]
        rows = table[table["variant"] == variant]
        seeds = rows["seed"].nunique()
        seed_counts.append(seeds)
        per_epoch = rows.groupby("epoch")["gradient_norm"].agg(["mean", "min", "max"]).sort_index()
        described = f"mean of {seeds} seeds" if seeds > 1 else "1 seed"
        dashed = paired and variant.startswith("without")
        axes.plot(per_epoch.index, per_epoch["mean"], marker="o", markersize=3.5, color=color, zorder=3,
                  linestyle="--" if dashed else "-", label=variant if paired else f"{variant} ({described})")
        if seeds > 1:
            axes.fill_between(per_epoch.index, per_epoch["min"], per_epoch["max"], color=color, alpha=0.2,
                              linewidth=0, zorder=2, label=None if paired else f"{variant}: min–max across {seeds} seeds")
    norms = table["gradient_norm"]
    positive = norms[norms > 0]  # a network that never trains has exact zeros: left out of a log scale's range
    logarithmic = bool(len(positive) and ((norms > 0).all() or paired)
                       and positive.max() / positive.min() > LOG_SCALE_SPAN)
    if logarithmic:
        axes.set_yscale("log", nonpositive="mask")
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.grid(True, which="major", alpha=0.3)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"gradient norm of {layer}" + (" (log scale)" if logarithmic else ""))
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8 if paired else 9, frameon=False,
                ncol=2 if paired else 1)
    most = max(seed_counts)
    if most > 1:
        title = f"Gradient norm of {layer} per epoch: mean and min–max band across {up_to(seed_counts)}{most} seeds"
    else:
        title = f"Gradient norm of {layer} per epoch (one seed per variant: no band)"
    axes.set_title(title, fontsize=12)
    return figure


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


def _layer_gradient_rows(gradients: pd.DataFrame, layer: str) -> pd.DataFrame:
    """`layer`'s rows of the per-seed gradient table, checked: norms non-negative, one row per variant, seed, epoch."""
    where = "gradient norms across seeds"
    frame = require_frame(gradients, SEED_GRADIENT_COLUMNS, where)
    present = list(dict.fromkeys(frame["layer"].astype(str)))
    if str(layer) not in present:
        raise ValueError(f"{where}: no rows for layer {layer!r}; layers present: {present}")
    frame = frame[frame["layer"].astype(str) == str(layer)]
    table = pd.DataFrame(
        {
            "variant": frame["variant"].astype(str).to_numpy(),
            "seed": frame["seed"].astype(str).to_numpy(),
            "epoch": integer_column(frame, "epoch", where),
            "gradient_norm": numeric_column(frame, "gradient_norm", where),
        }
    )
    if (table["gradient_norm"] < 0).any():
        raise ValueError(f"{where}: gradient norms must be non-negative")
    if (table["gradient_norm"] == 0).all():
        raise ValueError(f"{where}: every gradient norm of layer {layer!r} is zero; there is nothing to compare")
    refuse_repeated_rows(table, ("variant", "seed", "epoch"), f"{where} ({layer!r} rows)")
    return table
