"""Tasks that build and write the study tables of the outputs registry, and read them back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task

from mnist_models import outputs, tables
from mnist_models.evaluation import StudyRuns
from mnist_models.layout import ArtifactsLayout


@task
def write_study_tables(study: StudyRuns) -> dict[str, Path]:
    """Build every study table of the registry and write each as Parquet, CSV and Markdown."""
    paths = {}
    for name, table in outputs.build_tables(study).items():
        paths[name] = tables.write_table(table, study.layout.tables_dir, name)["parquet"]
    get_run_logger().info(f"wrote {len(paths)} tables to {study.layout.tables_dir}")
    return paths


def read_study_tables(layout: ArtifactsLayout, names) -> dict[str, pd.DataFrame]:
    """The named tables as written under the layout's tables folder."""
    return {name: pd.read_parquet(layout.table(name)["parquet"]) for name in names}
