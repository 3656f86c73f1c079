"""Publishing: every table and the report (its figures inside) as Prefect artifacts, reused or not."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mnist_models.layout import ArtifactsLayout
from mnist_models.report import inline_markdown_images
from tasks.study_tables import read_study_tables


@task
def publish_artifacts(layout: ArtifactsLayout, table_names: list[str]) -> None:
    """Publish every table and the report as Prefect artifacts: each run's UI shows them, reused or not."""
    for name, table in read_study_tables(layout, table_names).items():
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        create_table_artifact(key=name.replace("_", "-"), table=records, description=f"Study table `{name}`")
    if layout.report_markdown.exists():
        # The UI cannot open the report's folder: its figures travel inside the artifact, as data URIs.
        markdown = inline_markdown_images(layout.report_markdown.read_text(), layout.report_dir,
                                          palette_cache=layout.cache_dir / "palette")
        create_markdown_artifact(key="study-report", markdown=markdown,
                                 description="The MNIST study, regenerated from this run")
