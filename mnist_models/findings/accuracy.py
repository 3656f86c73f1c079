"""Section 4, Accuracy: each model at the reference learning rate beside the study's table 2.1."""

from __future__ import annotations

import pandas as pd

from mnist_models import replicates, table_builders
from mnist_models.findings.numbers import Number, signed_gap
from mnist_models.records import Record
from mnist_models.study_reference import REFERENCE_LEARNING_RATE


class AccuracyAgainstStudy(Record):
    """One row of the study's table 2.1 as this run has it: a sweep run at the reference learning rate.

    With several seeds, the cell across them: `accuracy` is the mean and `accuracy_low`/`_high` the t-interval
    of that mean across seeds; with one seed, the run's accuracy and its bootstrap interval over test images.
    """

    model: str
    learning_rate: float
    epochs: int
    accuracy: Number
    accuracy_low: Number
    accuracy_high: Number
    study_accuracy: Number
    gap: Number  # this run − study
    seeds: int = 1
    accuracy_std: Number = None  # across seeds; None with one seed


def accuracy_at_reference(summary: pd.DataFrame, cells: pd.DataFrame | None) -> tuple[AccuracyAgainstStudy, ...]:
    """The study's table 2.1 as this run has it: per model at the reference learning rate, one row per model."""
    table = table_builders.accuracy_at_lr_table(summary, REFERENCE_LEARNING_RATE)
    if cells is not None:  # one row per model: the mean across seeds and the t-interval of that mean
        seeds = table.groupby("model", sort=False).size()
        table = replicates.across_seed_columns(table, cells).drop_duplicates("model").assign(
            accuracy=lambda rows: rows["accuracy_mean"], accuracy_low=lambda rows: rows["accuracy_mean_low"],
            accuracy_high=lambda rows: rows["accuracy_mean_high"], seeds=lambda rows: rows["model"].map(seeds))
    return tuple(
        AccuracyAgainstStudy(
            model=row["model"], learning_rate=row["learning_rate"], epochs=int(row["epochs"]), accuracy=row["accuracy"],
            accuracy_low=row["accuracy_low"], accuracy_high=row["accuracy_high"], study_accuracy=row["study_accuracy"],
            gap=signed_gap(row["accuracy"], row["study_accuracy"]), seeds=int(row.get("seeds", 1)),
            accuracy_std=row.get("accuracy_std"))
        for row in table.to_dict(orient="records"))
