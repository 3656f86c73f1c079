"""One run's figures per class: one-vs-rest ROC curves, precision, recall and F1, and the confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors, patches
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from mnist_models.plots.canvas import annotate_cells, label_text, new_figure
from mnist_models.plots.checks import numeric_column, require_frame

PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1")


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

    figure = new_figure((8.6, 6.2))
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
    frame = require_frame(per_class, PER_CLASS_COLUMNS, "per-class metrics")
    metrics = {name: numeric_column(frame, name, "per-class metrics") for name in ("precision", "recall", "f1")}
    for name, values in metrics.items():
        if values.min() < 0 or values.max() > 1:
            raise ValueError(f"per-class metrics: {name} must lie in [0, 1]; got [{values.min():g}, {values.max():g}]")
    classes = [label_text(value) for value in frame["class"]]

    figure = new_figure((max(7.5, 0.75 * len(classes) + 2.5), 4.6))
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

    figure = new_figure((7.4, 6.3))
    axes = figure.add_subplot()
    cmap = colormaps["Blues"]
    # Square-root-like scaling keeps the rare errors visible next to a diagonal of ~1000.
    norm = colors.PowerNorm(gamma=0.4, vmin=0, vmax=max(int(counts.max()), 1))
    image = axes.imshow(counts, cmap=cmap, norm=norm)
    texts = [[str(value) for value in row] for row in counts]
    fontsize = 9 if class_count <= 10 else max(5, 90 // class_count)
    annotate_cells(axes, counts.astype(float), texts, cmap, norm, fontsize=fontsize, zero_color="#b0b0b0")
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
