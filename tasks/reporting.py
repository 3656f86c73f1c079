"""Tasks that build and write the study tables of the outputs registry, and publish tables and report to Prefect."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mnist_models import outputs, tables
from mnist_models.evaluation import StudyRuns
from mnist_models.layout import ArtifactsLayout
from mnist_models.quiet import banners_filtered
from mnist_models.report import inline_markdown_images


@task
def write_study_tables(study: StudyRuns) -> dict[str, Path]:
    """Build every study table of the registry and write each as Parquet, CSV and Markdown."""
    with banners_filtered():  # model_summary builds the models: Keras is imported here
        import keras  # noqa: F401
    paths = {}
    for name, table in outputs.build_tables(study).items():
        paths[name] = tables.write_table(table, study.layout.tables_dir, name)["parquet"]
    get_run_logger().info(f"wrote {len(paths)} tables to {study.layout.tables_dir}")
    return paths


def read_study_tables(layout: ArtifactsLayout, names) -> dict[str, pd.DataFrame]:
    """The named tables as written under the layout's tables folder."""
    return {name: pd.read_parquet(layout.table(name)["parquet"]) for name in names}


@task
def publish_artifacts(layout: ArtifactsLayout, table_names: list[str]) -> None:
    """Publish every table and the report as Prefect artifacts: each run's UI shows them, reused or not."""
    for name, table in read_study_tables(layout, table_names).items():
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        create_table_artifact(key=name.replace("_", "-"), table=records, description=f"Study table `{name}`")
    if layout.report_markdown.exists():
        # The UI cannot open the report's folder: its figures travel inside the artifact, as data URIs.
        markdown = inline_markdown_images(layout.report_markdown.read_text(), layout.report_dir)
        create_markdown_artifact(key="study-report", markdown=markdown,
                                 description="The MNIST study, regenerated from this run")
