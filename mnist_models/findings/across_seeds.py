"""Section "Across seeds": which differences hold across seeds, per learning rate, and the cells whose
spread across seeds exceeds a gap to a rival."""

from __future__ import annotations

import math

import pandas as pd

from mnist_models import replicates, table_builders
from mnist_models.findings.selection import Divergence
from mnist_models.records import Record
from mnist_models.replicates import AcrossSeeds, CellSpread, SeedConclusion
from mnist_models.study_reference import REFERENCE_LEARNING_RATE


class SeedVerdicts(Record):
    """The conclusions across seeds at one learning rate, by outcome (`replicates.SeedConclusion.outcome`)."""

    learning_rate: float
    at_reference: bool  # the learning rate of the study's table 2.1 and of its model comparison
    holds: tuple[SeedConclusion, ...]
    reversed: tuple[SeedConclusion, ...]  # the study's ranking, significantly the other way round
    within_noise: tuple[SeedConclusion, ...]
    too_few_seeds: tuple[SeedConclusion, ...]


def replicated_cells(summary: pd.DataFrame, given: pd.DataFrame | None) -> pd.DataFrame | None:
    """The replicates table when some sweep cell has several seeds, None with one seed per cell.

    A caller that passes only the summary gets the table from the registry's own builder.
    """
    sweep = table_builders.sweep_runs(summary)
    if sweep.empty or sweep.groupby(["model", "learning_rate"])["seed"].nunique().max() < 2:
        return None
    return replicates.replicates_table(summary) if given is None else given


def seed_verdicts(across: AcrossSeeds | None) -> tuple[SeedVerdicts, ...]:
    """across_seeds' conclusions grouped by learning rate (largest first) and outcome."""
    if across is None:
        return ()
    rates = sorted(dict.fromkeys(conclusion.learning_rate for conclusion in across.conclusions), reverse=True)
    verdicts = []
    for rate in rates:
        at_rate = [conclusion for conclusion in across.conclusions if conclusion.learning_rate == rate]
        verdicts.append(SeedVerdicts(
            learning_rate=rate, at_reference=math.isclose(rate, REFERENCE_LEARNING_RATE),
            **{outcome: tuple(conclusion for conclusion in at_rate if conclusion.outcome == outcome)
               for outcome in ("holds", "reversed", "within_noise", "too_few_seeds")}))
    return tuple(verdicts)


def noisy_cells(across: AcrossSeeds | None, diverged: tuple[Divergence, ...]) -> tuple[CellSpread, ...]:
    """Cells whose spread across seeds exceeds a gap to another model; diverged cells rank nothing, so not those."""
    guessing = {(cell.model, divergence.learning_rate) for divergence in diverged for cell in divergence.cells}
    return () if across is None else tuple(
        cell for cell in across.spreads if (cell.exceeds_study_gap or cell.exceeds_run_gap)
        and not any(model == cell.model and math.isclose(rate, cell.learning_rate) for model, rate in guessing))
