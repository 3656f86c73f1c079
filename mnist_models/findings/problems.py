"""Runs without a normal result (the report's opening notes): failed runs and diverged runs."""

from __future__ import annotations

import pandas as pd

from mnist_models.records import Record


class RunProblem(Record):
    """A planned run without a normal result: failed (no result, with its cause) or diverged (scored at chance)."""

    run_id: str
    model: str
    learning_rate: float
    epochs: int
    seed: int
    problem: str  # the failure's cause, or "diverged at epoch N"


def run_problems(table: pd.DataFrame, column: str) -> tuple[RunProblem, ...]:
    """One RunProblem per row, its problem read from `column`."""
    return tuple(RunProblem(run_id=row["run_id"], model=row["model"], learning_rate=row["learning_rate"],
                            epochs=row["epochs"], seed=row["seed"], problem=row[column])
                 for row in table.to_dict(orient="records"))
