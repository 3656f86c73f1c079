"""report.html opened from disk in headless Chromium: every figure shows, nothing errors, nothing is fetched."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mnist_models import outputs, table_builders
from mnist_models.plots.accuracy_curves import plot_accuracy_curves
from mnist_models.plots.gradients import plot_gradient_norms, plot_kernel_histograms
from mnist_models.plots.images import plot_first_images
from mnist_models.plots.lr_sweep import plot_lr_sweep_heatmap
from mnist_models.plots.per_class import plot_confusion_matrix, plot_f1_per_class, plot_roc_curves
from mnist_models.plots.saving import save_figure
from mnist_models.report import ReportContext, write_report

# tests/ has no __init__.py, so pytest puts it on sys.path: its helpers import by module name.
from tests.browser import CHROMIUM, open_in_chromium
from tests.mnist_models.test_report import FIGURE_NAMES, MODELS, SETTINGS, synthetic_tables

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium package)"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _render_figures(tables: dict[str, pd.DataFrame], directory: Path) -> dict[str, Path]:
    """Every figure of the report, drawn by the mnist_models.plots families from synthetic data."""
    rng = np.random.default_rng(3)
    figures = {}

    def save(name, figure):
        figures[name] = save_figure(figure, directory / f"{name}.png")

    save("first_25_images", plot_first_images(rng.uniform(0, 1, (25, 28, 28)), rng.integers(0, 10, 25)))
    gradients = tables["gradient_norms"]
    variants = {model: outputs.variant_label(model) for model in dict.fromkeys(gradients["model"])}
    histograms = {}
    for model, label in variants.items():
        weights, frames = rng.normal(0, 0.1, 288), []
        for epoch in range(5):
            counts, edges = np.histogram(weights, bins=20)
            frames.append(
                pd.DataFrame({"epoch": epoch, "bin_left": edges[:-1], "bin_right": edges[1:], "count": counts})
            )
            weights = weights + rng.normal(0, 0.01, weights.shape)
        histograms[label] = pd.concat(frames, ignore_index=True)
    save("kernel_histograms", plot_kernel_histograms(histograms))
    save("gradient_norms", plot_gradient_norms(
        {label: gradients[gradients["model"] == model] for model, label in variants.items()}))
    epochs = np.arange(1, 11)
    save("accuracy_curves", plot_accuracy_curves({
        model: pd.DataFrame({"epoch": epochs, "accuracy": 0.9 + 0.009 * epochs, "val_accuracy": 0.89 + 0.009 * epochs})
        for model in MODELS
    }))
    summary = tables["summary"]
    save("lr_sweep_heatmap", plot_lr_sweep_heatmap(table_builders.sweep_runs(summary)))
    representative = table_builders.representative_runs(summary)

    labels = np.repeat(np.arange(10), 40)
    per_class = tables["per_class_metrics"]
    for model in MODELS:
        logits = rng.normal(0, 1, (len(labels), 10))
        logits[np.arange(len(labels)), labels] += 4.0
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        predicted = probabilities.argmax(axis=1)
        confusion = np.zeros((10, 10), dtype=int)
        np.add.at(confusion, (labels, predicted), 1)
        save(f"roc_{model}", plot_roc_curves(labels, probabilities, f"ROC one-vs-rest: {model}"))
        rows = per_class[per_class["run_id"] == representative[model]]
        save(f"f1_{model}", plot_f1_per_class(rows, f"Per-class precision, recall, F1: {model}"))
        save(f"confusion_{model}", plot_confusion_matrix(confusion, f"Confusion matrix: {model}"))
    return figures


@pytest.fixture(scope="module")
def written_report(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("study")
    tables = synthetic_tables()
    figures = _render_figures(tables, root / "figures")
    context = ReportContext(tables=tables, figures=figures, settings=SETTINGS, generated_at="2024-05-01 12:00 UTC")
    return write_report(context, root / "report")


def test_report_html_opens_from_disk_with_every_figure(written_report, tmp_path):
    # A copy far from the figures folder proves the page carries its images with it.
    moved = tmp_path / "elsewhere" / "report.html"
    moved.parent.mkdir()
    shutil.copy(written_report["html"], moved)
    screenshot = tmp_path / "report.png"

    seen = open_in_chromium(moved, screenshot)

    assert seen.images_total == len(FIGURE_NAMES) > 5
    assert seen.images_loaded == seen.images_total
    assert seen.console_errors == ()
    assert seen.page_errors == ()
    assert seen.external_requests == ()
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)


def test_browser_helper_notices_broken_images_and_script_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png" alt="missing"><script>throw new Error("boom")</script></body></html>',
        encoding="utf-8",
    )
    seen = open_in_chromium(page, tmp_path / "broken.png")

    assert (seen.images_total, seen.images_loaded) == (1, 0)
    assert any("ERR_FILE_NOT_FOUND" in message for message in seen.console_errors)
    assert any("boom" in message for message in seen.page_errors)
