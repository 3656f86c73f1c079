"""The study's findings as data: what its tables show, computed once, tested as data, rendered by the report.

Every number a report sentence states is a field here, read from the tables' numeric columns; nothing
is parsed back out of a string. A finding is empty (None, () or False) when its table is absent or empty.
One module per section of the report (`mnist_models/templates/<section>.md.j2`) computes that section's
findings; `compute_findings` puts them together.

With several seeds per cell, a single number per model and learning rate is the mean across seeds (the
`replicates` table); runs and McNemar's tests stay per seed, and `across_seeds` says which differences
hold (`replicates.conclusions_across_seeds`). With one seed everything is per run, as the study reports it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mnist_models import outputs, replicates, table_builders
from mnist_models.findings import (accuracy, across_seeds, conclusion, data, gradients, method, models, nightly,
                                   performance, problems, selection)
from mnist_models.findings.accuracy import AccuracyAgainstStudy
from mnist_models.findings.across_seeds import SeedVerdicts
from mnist_models.findings.conclusion import BestModel
from mnist_models.findings.data import DatasetFact
from mnist_models.findings.gradients import DepthComparison, GradientExperiment
from mnist_models.findings.method import CacheSummary
from mnist_models.findings.models import ConvolutionCheck, ModelSize
from mnist_models.findings.nightly import NightlyGate
from mnist_models.findings.performance import ComparisonGroup, ModelResult, RunResult, SeedTally
from mnist_models.findings.problems import RunProblem
from mnist_models.findings.selection import Divergence, ModelSweep, SweepCell
from mnist_models.records import Record
from mnist_models.replicates import AcrossSeeds, CellSpread
from mnist_models.study_reference import DIVERGED_BELOW, STUDY_EPOCHS

# The tables the findings are computed from; their columns are checked against the outputs registry.
SOURCE_TABLES = ("dataset_facts", "model_summary", "summary", "per_class_metrics", "significance", "gradient_norms",
                 "replicates", "seed_comparisons", "history", "cache_decisions", "failures")


class Findings(Record):
    """Everything the report states, as data."""

    failed_runs: tuple[RunProblem, ...] = ()  # planned runs with no result in this study run
    diverged_runs: tuple[RunProblem, ...] = ()  # runs whose loss stopped being a number

    dataset_facts: tuple[DatasetFact, ...] = ()
    model_sizes: tuple[ModelSize, ...] = ()
    convolutions: tuple[ConvolutionCheck, ...] = ()
    gradient: GradientExperiment | None = None  # the shallowest pair: the study's own, unless the run chose depths
    depths: DepthComparison | None = None  # None unless the run trained pairs of several depths
    runs: tuple[RunResult, ...] = ()  # sweep runs first, then by model and learning rate (largest first)
    sweep_epochs: tuple[int, ...] = ()
    epochs_match_study: bool = True  # every sweep run trained for STUDY_EPOCHS
    accuracy_at_reference: tuple[AccuracyAgainstStudy, ...] = ()
    best_model: BestModel | None = None
    learning_rates: tuple[float, ...] = ()  # of the sweep and the study's table 5.1, largest first
    sweep: tuple[ModelSweep, ...] = ()
    diverged: tuple[Divergence, ...] = ()
    diverged_as_in_study: bool = False  # every diverged cell is below DIVERGED_BELOW in table 5.1 too
    shared_study_cells: int = 0  # cells this run's sweep shares with table 5.1
    largest_study_gap: SweepCell | None = None
    representatives: tuple[ModelResult, ...] = ()
    significance: tuple[ComparisonGroup, ...] = ()  # by learning rate, then seed
    several_seeds: bool = False  # some sweep cell was trained with more than one seed
    seeds: tuple[int, ...] = ()  # of the sweep runs
    mcnemar_across_seeds: tuple[SeedTally, ...] = ()  # empty unless a pair was tested in several seeds
    across_seeds: AcrossSeeds | None = None  # None with one seed or without a seed_comparisons table
    seed_verdicts: tuple[SeedVerdicts, ...] = ()  # across_seeds' conclusions per learning rate, largest first
    noisy_cells: tuple[CellSpread, ...] = ()  # cells not diverged whose spread across seeds exceeds a gap to a rival
    nightly: NightlyGate | None = None  # None without a history table
    cache: CacheSummary | None = None  # None without the decisions of the run that rendered the report


def compute_findings(tables: Mapping[str, pd.DataFrame]) -> Findings:
    """The study's findings from its tables (keyed by the registry's names); absent tables give empty findings."""
    present = {name: _checked(tables, name) for name in SOURCE_TABLES}
    summary, model_summary = present["summary"], present["model_summary"]
    cells = _from(summary, lambda table: across_seeds.replicated_cells(table, present["replicates"]), None)
    across = None if cells is None or present["seed_comparisons"] is None else (
        replicates.conclusions_across_seeds(cells, present["seed_comparisons"]))
    significance = _from(present["significance"], performance.significance_groups)
    runs = _from(summary, performance.run_results)
    at_reference = _from(summary, lambda table: accuracy.accuracy_at_reference(table, cells))
    sweep_rows = _from(summary, table_builders.sweep_runs, pd.DataFrame())
    learning_rates, sweep = selection.model_sweeps(selection.sweep_cells(sweep_rows, cells))
    diverged = selection.divergences(sweep, learning_rates)
    shared = [cell for row in sweep for cell in row.cells if cell.gap is not None]
    sweep_epochs = tuple(sorted({int(value) for value in sweep_rows.get("epochs", ())}))
    experiments = _from(present["gradient_norms"], lambda table: gradients.gradient_experiments(table, summary))
    return Findings(
        failed_runs=_from(present["failures"], lambda table: problems.run_problems(table, "cause")),
        diverged_runs=_from(summary, lambda table: problems.run_problems(table[table["status"] != "trained"],
                                                                          "status")),
        dataset_facts=_from(present["dataset_facts"], data.dataset_facts),
        model_sizes=_from(model_summary, models.model_sizes),
        convolutions=_from(model_summary, models.convolutions),
        gradient=experiments[0] if experiments else None,
        depths=gradients.depth_comparison(experiments),
        runs=runs,
        sweep_epochs=sweep_epochs,
        epochs_match_study=sweep_epochs in ((), (STUDY_EPOCHS,)),
        accuracy_at_reference=at_reference,
        best_model=conclusion.best_model(at_reference, significance, across),
        learning_rates=learning_rates,
        sweep=sweep,
        diverged=diverged,
        diverged_as_in_study=bool(diverged) and all(
            cell.study_accuracy is not None and cell.study_accuracy < DIVERGED_BELOW
            for divergence in diverged for cell in divergence.cells),
        shared_study_cells=len(shared),
        largest_study_gap=max(shared, key=lambda cell: abs(cell.gap), default=None),
        representatives=_from(summary, lambda table: performance.representatives(table, runs,
                                                                                 present["per_class_metrics"])),
        significance=significance,
        several_seeds=cells is not None,
        seeds=tuple(sorted({int(seed) for seed in sweep_rows.get("seed", ())})),
        mcnemar_across_seeds=performance.mcnemar_tallies(significance),
        across_seeds=across,
        seed_verdicts=across_seeds.seed_verdicts(across),
        noisy_cells=across_seeds.noisy_cells(across, diverged),
        nightly=_from(present["history"], nightly.nightly_gate, None),
        cache=_from(present["cache_decisions"], method.cache_summary, None),
    )


def _from(table: pd.DataFrame | None, build, empty: object = ()):
    """`build(table)`, or `empty` when the run did not produce the table."""
    return empty if table is None else build(table)


def _checked(tables: Mapping[str, pd.DataFrame], name: str) -> pd.DataFrame | None:
    """The named table, or None when absent or empty; a table lacking a registry column is an error."""
    table = tables.get(name)
    if table is None or table.empty:
        return None
    expected = outputs.TABLES[name].columns
    missing = [column for column in expected if column not in table.columns]
    if missing:
        raise ValueError(
            f"table {name!r} lacks columns {missing}; expected {list(expected)} (mnist_models.outputs.TABLES), "
            f"got {[str(column) for column in table.columns]}"
        )
    return table
