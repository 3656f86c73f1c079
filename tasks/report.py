"""Report task: the study's report as Markdown and self-contained HTML, from the tables and figures on disk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from mnist_models.layout import ArtifactsLayout
from tasks.study_tables import read_study_tables


@task
def render_report(layout: ArtifactsLayout, table_names: list[str], figures: dict[str, Path],
                  settings: dict, decisions: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write report.md and a self-contained report.html from the tables and figures on disk, and this run's
    reuse decisions so far (not part of the report's key: a reused report tells the run that rendered it)."""
    from mnist_models import report

    context = report.ReportContext(
        tables={**read_study_tables(layout, table_names),
                **({"cache_decisions": decisions} if decisions is not None else {})},
        figures=figures,
        settings=settings,
        generated_at=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
    )
    return report.write_report(context, layout.report_dir)
