"""Section 6, Performance: every run's scores, each model's representative run and its classes, and
McNemar's tests between models (per seed, and tallied over the seeds)."""

from __future__ import annotations

import pandas as pd

from mnist_models import table_builders
from mnist_models.findings.numbers import Number, Whole
from mnist_models.records import Record

_SCORES = ("accuracy", "accuracy_low", "accuracy_high", "loss", "macro_f1", "macro_auc", "map")


class RunResult(Record):
    """One run of the summary table: its settings and test-split scores."""

    run_id: str
    model: str
    roles: tuple[str, ...]
    learning_rate: float
    epochs: int
    seed: Whole = None
    accuracy: Number
    accuracy_low: Number
    accuracy_high: Number
    loss: Number
    macro_f1: Number
    macro_auc: Number
    map: Number


class ClassF1(Record):
    """One class's F1 score."""

    label: int
    f1: float


class ModelResult(Record):
    """A model's representative run (`table_builders.representative_runs`) and its weakest and strongest classes."""

    model: str
    run: RunResult
    weakest_class: ClassF1 | None
    strongest_class: ClassF1 | None


class Comparison(Record):
    """McNemar's test between two models at one learning rate (and seed), and who is better when it is significant."""

    learning_rate: float
    seed: Whole = None
    model_a: str
    model_b: str
    accuracy_a: Number
    accuracy_b: Number
    only_a_correct: int
    only_b_correct: int
    p_value: Number
    significant: bool
    verdict: str  # the significance table's own sentence
    better: str | None  # more test images only it got right (then accuracy); None when not significant
    worse: str | None

    def accuracy_of(self, model: str | None) -> float | None:
        """The accuracy of `model`, one of the pair."""
        return self.accuracy_a if model == self.model_a else self.accuracy_b


class ComparisonGroup(Record):
    """Every pair of models compared at one learning rate, in one seed."""

    learning_rate: float
    seed: Whole = None
    pairs: tuple[Comparison, ...]
    significant: tuple[Comparison, ...]
    not_significant: tuple[Comparison, ...]


class SeedTally(Record):
    """One pair of models at one learning rate over the seeds: in how many McNemar's test finds each one better."""

    learning_rate: float
    model_a: str
    model_b: str
    seeds: int
    a_better: int  # seeds in which model_a is significantly more accurate
    b_better: int
    p_min: Number
    p_max: Number


def run_results(summary: pd.DataFrame) -> tuple[RunResult, ...]:
    """One RunResult per summary row: sweep runs first, then by model, learning rate (largest first) and seed."""
    models = list(dict.fromkeys(summary["model"]))
    in_sweep = summary.index.isin(table_builders.sweep_runs(summary).index)
    order = sorted(range(len(summary)), key=lambda position: (
        not in_sweep[position], models.index(summary["model"].iloc[position]),
        -summary["learning_rate"].iloc[position], summary["seed"].iloc[position]))
    return tuple(_run(row) for _, row in summary.iloc[order].iterrows())


def _run(row: pd.Series) -> RunResult:
    roles = row["roles"]
    return RunResult(
        run_id=str(row["run_id"]), model=str(row["model"]),
        roles=tuple(roles.split(",")) if isinstance(roles, str) and roles else (),
        learning_rate=row["learning_rate"], epochs=int(row["epochs"]), seed=row["seed"],
        **{name: row[name] for name in _SCORES})


def representatives(summary: pd.DataFrame, runs: tuple[RunResult, ...],
                    per_class: pd.DataFrame | None) -> tuple[ModelResult, ...]:
    """Per model, its representative run and that run's weakest and strongest classes by F1."""
    by_id = {run.run_id: run for run in runs}
    results = []
    for model, run_id in table_builders.representative_runs(summary).items():
        classes = per_class[per_class["run_id"] == run_id] if per_class is not None else pd.DataFrame()
        f1 = classes["f1"].astype(float) if not classes.empty else pd.Series(dtype=float)
        weakest, strongest = (None, None) if f1.isna().all() else (
            _class_f1(classes.loc[f1.idxmin()]), _class_f1(classes.loc[f1.idxmax()]))
        results.append(ModelResult(model=str(model), run=by_id[run_id], weakest_class=weakest, strongest_class=strongest))
    return tuple(results)


def _class_f1(row: pd.Series) -> ClassF1:
    return ClassF1(label=int(row["class"]), f1=row["f1"])


def significance_groups(table: pd.DataFrame) -> tuple[ComparisonGroup, ...]:
    """The significance table's McNemar tests, grouped by learning rate and seed."""
    groups = []
    for (rate, seed), rows in table.groupby(["learning_rate", "seed"], sort=False, dropna=False):
        pairs = tuple(_comparison(row) for row in rows.itertuples())
        groups.append(ComparisonGroup(
            learning_rate=rate, seed=seed, pairs=pairs, significant=tuple(pair for pair in pairs if pair.significant),
            not_significant=tuple(pair for pair in pairs if not pair.significant)))
    return tuple(groups)


def _comparison(row) -> Comparison:
    significant = bool(row.significant)
    a_ahead = (row.only_a_correct, row.accuracy_a) > (row.only_b_correct, row.accuracy_b)
    better, worse = (row.model_a, row.model_b) if a_ahead else (row.model_b, row.model_a)
    return Comparison(
        learning_rate=row.learning_rate, seed=row.seed, model_a=str(row.model_a), model_b=str(row.model_b),
        accuracy_a=row.accuracy_a, accuracy_b=row.accuracy_b, only_a_correct=int(row.only_a_correct),
        only_b_correct=int(row.only_b_correct), p_value=row.p_value, significant=significant,
        verdict=str(row.verdict), better=str(better) if significant else None, worse=str(worse) if significant else None)


def mcnemar_tallies(groups: tuple[ComparisonGroup, ...]) -> tuple[SeedTally, ...]:
    """Per pair and learning rate, McNemar's verdicts counted over the seeds; () when no pair has several seeds."""
    by_pair: dict[tuple, list[Comparison]] = {}
    for group in groups:
        for pair in group.pairs:
            by_pair.setdefault((pair.learning_rate, frozenset((pair.model_a, pair.model_b))), []).append(pair)
    if all(len(tests) < 2 for tests in by_pair.values()):
        return ()
    tallies = []
    for tests in by_pair.values():
        first = tests[0]
        p_values = [test.p_value for test in tests if test.p_value is not None]
        tallies.append(SeedTally(
            learning_rate=first.learning_rate, model_a=first.model_a, model_b=first.model_b, seeds=len(tests),
            a_better=sum(test.better == first.model_a for test in tests),
            b_better=sum(test.better == first.model_b for test in tests),
            p_min=min(p_values, default=None), p_max=max(p_values, default=None)))
    return tuple(tallies)
