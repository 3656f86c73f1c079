"""One helper writes every table of the study as Parquet, CSV and Markdown."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mnist_models.atomic_files import atomic_path, write_text
from mnist_models.layout import TABLE_FORMATS


def to_markdown(table: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """Render a DataFrame as a GitHub-flavoured Markdown table (no optional dependency)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return float_format.format(value)
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(column) for column in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(table: pd.DataFrame, directory: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Write `table` as <name>.parquet, <name>.csv and <name>.md under `directory`, atomically."""
    directory = Path(directory)
    paths = {fmt: directory / f"{name}.{fmt}" for fmt in TABLE_FORMATS}
    with atomic_path(paths["parquet"]) as temporary:
        table.to_parquet(temporary, index=False)
    with atomic_path(paths["csv"]) as temporary:
        table.to_csv(temporary, index=False)
    write_text(paths["md"], to_markdown(table))
    return paths
