"""Figure tasks: the data set's first images, and every figure of the outputs registry that applies to the runs."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mnist_models import outputs
from mnist_models.data import load_split
from mnist_models.evaluation import StudyRuns
from tasks.study_tables import read_study_tables


@task
def render_figures(study: StudyRuns) -> dict[str, Path]:
    """Draw every figure of the registry that applies to these runs; one PNG each."""
    from mnist_models.plots.saving import save_figure

    inputs = outputs.FigureInputs(study, read_study_tables(study.layout, ("summary", "per_class_metrics")))
    figures = {name: save_figure(figure, study.layout.figure(name))
               for name, figure in outputs.draw_figures(inputs)}
    get_run_logger().info(f"wrote {len(figures)} figures to {study.layout.figures_dir}")
    return figures


@task
def render_first_images(train_path: Path, figure_path: Path) -> Path:
    """Render the first 25 normalized training images with their labels (study figure 1.1)."""
    from mnist_models.plots.images import plot_first_images
    from mnist_models.plots.saving import save_figure

    split = load_split(train_path)
    figure = plot_first_images(split.images[:25], split.labels[:25])
    return save_figure(figure, figure_path)
