"""Section 7, Conclusion: the best model at the reference learning rate, its lead and the study's choice."""

from __future__ import annotations

import math

from mnist_models.findings.accuracy import AccuracyAgainstStudy
from mnist_models.findings.numbers import Number
from mnist_models.findings.performance import Comparison, ComparisonGroup
from mnist_models.records import Record
from mnist_models.replicates import AcrossSeeds, SeedConclusion
from mnist_models.study_reference import STUDY_TABLE_2_1


class BestModel(Record):
    """The most accurate model at the reference learning rate, its rivals, and the study's choice."""

    best: AccuracyAgainstStudy
    others: tuple[AccuracyAgainstStudy, ...]  # most accurate first
    tied_with: tuple[str, ...]  # other models exactly as accurate; the table's order put `best` first
    lead: Comparison | None  # McNemar's test of best against the runner-up; None with several seeds (one per seed)
    lead_across_seeds: SeedConclusion | None = None  # the paired t-test of the same pair across seeds
    study_best_model: str | None  # the study's table 2.1 winner; None when `best` is not in that table
    study_best_accuracy: Number


def best_model(at_reference: tuple[AccuracyAgainstStudy, ...], significance: tuple[ComparisonGroup, ...],
               across: AcrossSeeds | None) -> BestModel | None:
    """The most accurate model at the reference learning rate, its lead over the runner-up, the study's choice."""
    ranked = sorted((row for row in at_reference if row.accuracy is not None), key=lambda row: -row.accuracy)
    if not ranked:
        return None
    best, others = ranked[0], tuple(ranked[1:])
    lead = lead_across_seeds = None
    if others:
        pair = {best.model, others[0].model}
        tests = [comparison for group in significance for comparison in group.pairs
                 if {comparison.model_a, comparison.model_b} == pair
                 and math.isclose(comparison.learning_rate, best.learning_rate)]
        lead = tests[0] if len(tests) == 1 else None  # with several seeds, the paired test across them decides
        lead_across_seeds = next((conclusion for conclusion in (across.conclusions if across else ())
                                  if {conclusion.better, conclusion.worse} == pair
                                  and math.isclose(conclusion.learning_rate, best.learning_rate)), None)
    study_best = max(STUDY_TABLE_2_1, key=STUDY_TABLE_2_1.get) if best.model in STUDY_TABLE_2_1 else None
    return BestModel(best=best, others=others, lead=lead, lead_across_seeds=lead_across_seeds,
                     tied_with=tuple(row.model for row in others if row.accuracy == best.accuracy),
                     study_best_model=study_best, study_best_accuracy=STUDY_TABLE_2_1.get(study_best))
