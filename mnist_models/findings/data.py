"""Section 1, Data: the data set's facts per split."""

from __future__ import annotations

import pandas as pd

from mnist_models.records import Record


class DatasetFact(Record):
    """One fact about the data set, per split."""

    fact: str
    train: str
    test: str
    total: str


def dataset_facts(facts: pd.DataFrame) -> tuple[DatasetFact, ...]:
    """The dataset_facts table's rows, as text."""
    rows = facts[list(DatasetFact.model_fields)].astype(str).to_dict(orient="records")
    return tuple(DatasetFact(**row) for row in rows)
