"""Section 5, Model selection: every model at every learning rate beside the study's table 5.1, and
the learning rates that diverged."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mnist_models.findings.numbers import Number, signed_gap
from mnist_models.records import Record
from mnist_models.study_reference import DIVERGED_BELOW, STUDY_TABLE_5_1


class SweepCell(Record):
    """One model at one learning rate: this run's accuracy (the mean across seeds when there are several)
    beside the study's table 5.1 (None where absent)."""

    model: str
    learning_rate: float
    accuracy: Number
    study_accuracy: Number
    gap: Number  # this run − study
    seeds: int = 0  # runs behind `accuracy`; 0 where the cell was not run
    std: Number = None  # across seeds; None with one seed
    mean_low: Number = None  # the 95% t-interval of the mean across seeds
    mean_high: Number = None


class ModelSweep(Record):
    """A model's row of the learning-rate sweep and its best learning rate."""

    model: str
    cells: tuple[SweepCell, ...]  # one per `Findings.learning_rates`, largest first
    best: SweepCell | None  # the most accurate cell; a tie goes to the larger learning rate
    in_study: bool  # whether the study's table 5.1 has this model


class Divergence(Record):
    """A learning rate at which some models' accuracy fell below DIVERGED_BELOW."""

    learning_rate: float
    cells: tuple[SweepCell, ...]
    every_model: bool  # every model run at this rate diverged (and there is more than one)


def sweep_cells(sweep_rows: pd.DataFrame, cells: pd.DataFrame | None) -> pd.DataFrame:
    """One row per model and learning rate: the run's accuracy, or with several seeds the mean across them."""
    if cells is not None:
        return cells.rename(columns={"accuracy_mean": "accuracy", "accuracy_std": "std",
                                     "accuracy_mean_low": "mean_low", "accuracy_mean_high": "mean_high"})
    if sweep_rows.empty:
        return sweep_rows
    return sweep_rows[["model", "learning_rate", "accuracy"]].assign(seeds=1, std=np.nan, mean_low=np.nan,
                                                                      mean_high=np.nan)


def model_sweeps(rows: pd.DataFrame) -> tuple[tuple[float, ...], tuple[ModelSweep, ...]]:
    """The sweep's learning rates (with the study's, largest first) and each model's row against table 5.1."""
    if rows.empty:
        return (), ()
    models = list(dict.fromkeys(rows["model"]))
    rates = list(dict.fromkeys(float(rate) for rate in rows["learning_rate"]))
    for model in models:
        rates += [rate for rate in STUDY_TABLE_5_1.get(model, {}) if not np.isclose(rates, rate).any()]
    rates = sorted(rates, reverse=True)
    sweep = []
    for model in models:
        own = rows[rows["model"] == model]
        cells = []
        for rate in rates:
            matching = own[np.isclose(own["learning_rate"], rate)]
            ran = {} if matching.empty else matching.iloc[0][["seeds", "std", "mean_low", "mean_high"]].to_dict()
            accuracy = None if matching.empty else matching["accuracy"].iloc[0]
            study = _study_value(STUDY_TABLE_5_1.get(model, {}), rate)
            cells.append(SweepCell(model=str(model), learning_rate=rate, accuracy=accuracy, study_accuracy=study,
                                   gap=signed_gap(accuracy, study), **ran))
        ran = [cell for cell in cells if cell.accuracy is not None]
        sweep.append(ModelSweep(model=str(model), cells=tuple(cells), in_study=model in STUDY_TABLE_5_1,
                                best=max(ran, key=lambda cell: cell.accuracy, default=None)))
    return tuple(rates), tuple(sweep)


def _study_value(study: Mapping[float, float], learning_rate: float) -> float | None:
    return next((value for rate, value in study.items() if math.isclose(rate, learning_rate)), None)


def divergences(sweep: tuple[ModelSweep, ...], learning_rates: tuple[float, ...]) -> tuple[Divergence, ...]:
    """The learning rates at which some model's accuracy fell below DIVERGED_BELOW."""
    found = []
    for index, rate in enumerate(learning_rates):
        ran = [row.cells[index] for row in sweep if row.cells[index].accuracy is not None]
        cells = tuple(cell for cell in ran if cell.accuracy < DIVERGED_BELOW)
        if cells:
            found.append(Divergence(learning_rate=rate, cells=cells, every_model=1 < len(cells) == len(ran)))
    return tuple(found)
