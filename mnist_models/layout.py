"""Where every file of a study lives, derived once from one artifacts root.

The artifacts contract (artifacts/README.md) is written here and nowhere else: a stage asks the
layout for a path (`layout.run(run_id).predictions`) instead of joining file names itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Every table is written in these formats (mnist_models.tables); named here so that asking where a file
# lives never imports the code that writes tables, which is then in no closure but its own stages'.
TABLE_FORMATS = ("parquet", "csv", "md")


@dataclass(frozen=True)
class RunFolder:
    """One trained run's folder and the files in it."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def history(self) -> Path:
        return self.path / "history.parquet"

    @property
    def gradients(self) -> Path:
        return self.path / "gradients.parquet"

    @property
    def kernel_histograms(self) -> Path:
        return self.path / "kernel_histograms.parquet"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions.parquet"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    def within(self, directory: Path) -> "RunFolder":
        """The same files under another folder (the temporary folder a run is written into)."""
        return RunFolder(Path(directory))

    @property
    def training_files(self) -> tuple[Path, ...]:
        """What training writes, the manifest last (a folder without it is never trusted)."""
        return (self.model, self.history, self.gradients, self.kernel_histograms, self.tensorboard, self.manifest)


@dataclass(frozen=True)
class DataFolder:
    """One data set's verified raw files and Parquet splits."""

    path: Path

    @property
    def raw(self) -> Path:
        return self.path / "raw"

    def raw_file(self, filename: str) -> Path:
        return self.raw / filename

    def split(self, name: str) -> Path:
        """`train` or `test` as Parquet."""
        return self.path / f"{name}.parquet"


@dataclass(frozen=True)
class ArtifactsLayout:
    """Every output location of one study, under one root (see artifacts/README.md)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> "ArtifactsLayout":
        """The layout of `root`, made absolute once (worker processes write where this run reads)."""
        return cls(Path(root).resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report_markdown(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def champions_dir(self) -> Path:
        return self.root / "models" / "champion"

    @property
    def nights_dir(self) -> Path:
        """Nightly runs: one record per night of the runs it used (what retention keeps)."""
        return self.root / "nights"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def stages_dir(self) -> Path:
        """Where each stage's JSON record lives (mnist_models.provenance.StageStore)."""
        return self.cache_dir / "stages"

    def data(self, dataset: str) -> DataFolder:
        return DataFolder(self.data_dir / dataset)

    def run(self, run_id: str) -> RunFolder:
        return RunFolder(self.runs_dir / run_id)

    def table(self, name: str) -> dict[str, Path]:
        """A table's files by format: parquet, csv, md."""
        return {fmt: self.tables_dir / f"{name}.{fmt}" for fmt in TABLE_FORMATS}

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"

    def relative(self, path: str | os.PathLike[str]) -> Path:
        """`path` relative to the root (records keep these, so the root can move)."""
        path = Path(path)
        return path.relative_to(self.root) if path.is_absolute() else path

    def absolute(self, path: str | os.PathLike[str]) -> Path:
        """A path from a record, made absolute under this root."""
        return self.root / path
