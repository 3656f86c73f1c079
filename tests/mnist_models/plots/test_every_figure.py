"""Every figure of every family: a title and labelled axes, drawn without pyplot, Prefect or Keras."""

from __future__ import annotations

import subprocess
import sys

import pytest
from matplotlib.figure import Figure

from tests.mnist_models.plots.synthetic import data_axes, figure_title

FAMILIES = ("accuracy_curves", "canvas", "checks", "gradients", "history", "images", "lr_sweep", "per_class",
            "saving")


@pytest.mark.parametrize(
    "name",
    [
        "first_25_images",
        "kernel_histograms",
        "gradient_norms",
        "accuracy_curves",
        "roc_dnn",
        "f1_dnn",
        "lr_sweep_heatmap",
        "confusion_dnn",
        "history",
        "lr_sweep_across_seeds",
        "gradient_norm_band",
    ],
)
def test_every_figure_has_a_title_and_labelled_axes(figure_makers, name):
    figure = figure_makers[name]()
    assert isinstance(figure, Figure)
    assert figure_title(figure)
    drawn = data_axes(figure)
    assert drawn
    for axes in drawn:
        if name == "first_25_images":
            assert axes.get_title(), "every image is titled with its label"
        else:
            assert axes.get_xlabel() and axes.get_ylabel(), f"{name}: axes {axes.get_title()!r} lacks a label"
    figure.canvas.draw()  # renders without error


def test_library_imports_no_pyplot_prefect_or_keras():
    families = ", ".join(f"mnist_models.plots.{name}" for name in FAMILIES)
    code = (
        f"import sys, {families}; "
        "print(sorted(m for m in ('matplotlib.pyplot', 'prefect', 'keras', 'tensorflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
