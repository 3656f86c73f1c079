"""Figure task: draw every figure of the outputs registry that applies to the study's runs."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mnist_models import outputs
from mnist_models.evaluation import StudyRuns
from tasks.reporting import read_study_tables


@task
def render_figures(study: StudyRuns) -> dict[str, Path]:
    """Draw every figure of the registry that applies to these runs; one PNG each."""
    from mnist_models import plots

    inputs = outputs.FigureInputs(study, read_study_tables(study.layout, ("summary", "per_class_metrics")))
    figures = {name: plots.save_figure(figure, study.layout.figure(name))
               for name, figure in outputs.draw_figures(inputs)}
    get_run_logger().info(f"wrote {len(figures)} figures to {study.layout.figures_dir}")
    return figures
