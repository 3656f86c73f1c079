"""The study's findings as data: what its tables show, computed once, tested as data, rendered by the report.

Every number a report sentence states is a field here, read from the tables' numeric columns; nothing
is parsed back out of a string. A finding is empty (None, () or False) when its table is absent or empty.

With several seeds per cell, a single number per model and learning rate is the mean across seeds (the
`replicates` table); runs and McNemar's tests stay per seed, and `across_seeds` says which differences
hold (`replicates.conclusions_across_seeds`). With one seed everything is per run, as the study reports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BeforeValidator

from mnist_models import evaluation, outputs, replicates
from mnist_models.evaluation import DIVERGED_BELOW, REFERENCE_LEARNING_RATE, STUDY_TABLE_2_1, STUDY_TABLE_5_1
from mnist_models.records import Record
from mnist_models.replicates import AcrossSeeds, CellSpread, SeedConclusion

STUDY_EPOCHS = 10  # the study's tables 2.1 and 5.1 are after this many epochs
TARGET_LAYER = "target_layer"  # the layer the gradient experiment watches
# The tables the findings are computed from; their columns are checked against the outputs registry.
SOURCE_TABLES = ("dataset_facts", "model_summary", "summary", "per_class_metrics", "significance", "gradient_norms",
                 "replicates", "seed_comparisons", "history", "cache_decisions", "failures")
_SCORES = ("accuracy", "accuracy_low", "accuracy_high", "loss", "macro_f1", "macro_auc", "map")


def _none_if_missing(value: object) -> object:
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


# A number a table may lack: NaN becomes None, so that findings round-trip through JSON.
Number = Annotated[float | None, BeforeValidator(_none_if_missing)]
Whole = Annotated[int | None, BeforeValidator(_none_if_missing)]


class DatasetFact(Record):
    """One fact about the data set, per split."""

    fact: str
    train: str
    test: str
    total: str


class ModelSize(Record):
    """A model's layer count (its total row not counted) and its trainable parameters."""

    model: str
    layers: int
    parameters: int


class ConvolutionCheck(Record):
    """One convolution layer's parameter count by the study's formula beside Keras's."""

    model: str
    layer: str
    output_shape: str
    study_formula: str
    formula_parameters: int
    keras_parameters: int
    agrees: bool


class LayerGradient(Record):
    """One layer's mean gradient norm per variant (in `GradientExperiment.models` order)."""

    layer: str
    mean_norms: tuple[Number, ...]
    with_over_without: Number


class SeedRatios(Record):
    """target_layer's with ÷ without ratio in each seed of the gradient experiment."""

    seeds: tuple[int, ...]
    ratios: tuple[Number, ...]  # one per seed
    lowest: Number
    highest: Number
    increased: int  # seeds in which the shortcut increased the gradient (ratio above 1)


class GradientExperiment(Record):
    """The residual network's gradient norms with and without its shortcut, averaged over the epochs (and seeds)."""

    models: tuple[str, ...]  # the plain variant first
    first_epoch: int
    last_epoch: int
    layers: tuple[LayerGradient, ...]  # network order
    plain_model: str | None  # None when the run lacks the variant without the shortcut
    shortcut_model: str | None  # None when the run lacks a variant with the shortcut
    target_without: Number  # target_layer's mean gradient norm without the shortcut
    target_with: Number
    ratio: Number  # target_with ÷ target_without; None when either is missing or the denominator is zero
    effect: Literal["increased", "lowered", "unchanged"] | None  # what the shortcut did to target_layer's gradient
    seeds: int = 1  # the means above pool this many seeds
    per_seed: SeedRatios | None = None  # None with one seed


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


class ClassF1(Record):
    """One class's F1 score."""

    label: int
    f1: float


class ModelResult(Record):
    """A model's representative run (`evaluation.representative_runs`) and its weakest and strongest classes."""

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


class BestModel(Record):
    """The most accurate model at the reference learning rate, its rivals, and the study's choice."""

    best: AccuracyAgainstStudy
    others: tuple[AccuracyAgainstStudy, ...]  # most accurate first
    tied_with: tuple[str, ...]  # other models exactly as accurate; the table's order put `best` first
    lead: Comparison | None  # McNemar's test of best against the runner-up; None with several seeds (one per seed)
    lead_across_seeds: SeedConclusion | None = None  # the paired t-test of the same pair across seeds
    study_best_model: str | None  # the study's table 2.1 winner; None when `best` is not in that table
    study_best_accuracy: Number


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


class SeedVerdicts(Record):
    """The conclusions across seeds at one learning rate, by outcome (`replicates.SeedConclusion.outcome`)."""

    learning_rate: float
    at_reference: bool  # the learning rate of the study's table 2.1 and of its model comparison
    holds: tuple[SeedConclusion, ...]
    reversed: tuple[SeedConclusion, ...]  # the study's ranking, significantly the other way round
    within_noise: tuple[SeedConclusion, ...]
    too_few_seeds: tuple[SeedConclusion, ...]


class NightlyDecision(Record):
    """Tonight's gate decision for one run, as the history table records it: what was compared and why."""

    model: str
    learning_rate: float
    seed: Whole
    accuracy: Number
    champion_accuracy: Number  # on the same test images; None for a first champion
    champion_version: Whole  # the champion version compared against
    difference: Number  # accuracy − champion_accuracy
    p_value: Number  # McNemar's test against the champion; None for a first champion
    nights: Whole  # past nights set beside tonight
    history_mean: Number  # their accuracy; None without history
    history_std: Number
    interval_low: Number  # their prediction bound: below it (and significantly worse) fails; None below 3 nights
    below_interval: bool | None  # tonight's accuracy below interval_low; None without the interval
    champion_bound: Number  # the same bound from the nights since the champion: below it, a champion may be replaced
    rule: str | None  # the rule that decided, in words
    decision: str
    message: str


class NightlyGate(Record):
    """The history table's latest night: each gated model's decision."""

    date: str
    nights: int  # nights in the history, tonight included
    decisions: tuple[NightlyDecision, ...]  # tonight's rows that carry a gate decision
    undecided: int  # tonight's rows without one (the gate tests one run per model)
    regressed: tuple[str, ...]  # models whose significant drop fails the night
    regressed_by_interval: tuple[str, ...]  # of those, failed below the past nights' prediction bound
    regressed_by_tolerance: tuple[str, ...]  # of those, failed by the tolerance (fewer than 3 past nights)


class CacheEntry(Record):
    """One stage item that the run recomputed, and why."""

    stage: str
    item: str
    reason: str


class CacheSummary(Record):
    """How the run that rendered the report reused earlier work."""

    reused: int
    recomputed: tuple[CacheEntry, ...]


class RunProblem(Record):
    """A planned run without a normal result: failed (no result, with its cause) or diverged (scored at chance)."""

    run_id: str
    model: str
    learning_rate: float
    epochs: int
    seed: int
    problem: str  # the failure's cause, or "diverged at epoch N"


class Findings(Record):
    """Everything the report states, as data."""

    failed_runs: tuple[RunProblem, ...] = ()  # planned runs with no result in this study run
    diverged_runs: tuple[RunProblem, ...] = ()  # runs whose loss stopped being a number

    dataset_facts: tuple[DatasetFact, ...] = ()
    model_sizes: tuple[ModelSize, ...] = ()
    convolutions: tuple[ConvolutionCheck, ...] = ()
    gradient: GradientExperiment | None = None
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
    cells = _from(summary, lambda table: _replicated_cells(table, present["replicates"]), None)
    across = None if cells is None or present["seed_comparisons"] is None else (
        replicates.conclusions_across_seeds(cells, present["seed_comparisons"]))
    significance = _from(present["significance"], _significance)
    runs = _from(summary, _runs)
    at_reference = _from(summary, lambda table: _accuracy_at_reference(table, cells))
    sweep_rows = _from(summary, evaluation.sweep_runs, pd.DataFrame())
    learning_rates, sweep = _sweep(_sweep_cells(sweep_rows, cells))
    diverged = _diverged(sweep, learning_rates)
    shared = [cell for row in sweep for cell in row.cells if cell.gap is not None]
    sweep_epochs = tuple(sorted({int(value) for value in sweep_rows.get("epochs", ())}))
    return Findings(
        failed_runs=_from(present["failures"], lambda table: _problems(table, "cause")),
        diverged_runs=_from(summary, lambda table: _problems(table[table["status"] != "trained"], "status")),
        dataset_facts=_from(present["dataset_facts"], _dataset_facts),
        model_sizes=_from(model_summary, _model_sizes),
        convolutions=_from(model_summary, _convolutions),
        gradient=_from(present["gradient_norms"], _gradient, None),
        runs=runs,
        sweep_epochs=sweep_epochs,
        epochs_match_study=sweep_epochs in ((), (STUDY_EPOCHS,)),
        accuracy_at_reference=at_reference,
        best_model=_best_model(at_reference, significance, across),
        learning_rates=learning_rates,
        sweep=sweep,
        diverged=diverged,
        diverged_as_in_study=bool(diverged) and all(
            cell.study_accuracy is not None and cell.study_accuracy < DIVERGED_BELOW
            for divergence in diverged for cell in divergence.cells),
        shared_study_cells=len(shared),
        largest_study_gap=max(shared, key=lambda cell: abs(cell.gap), default=None),
        representatives=_from(summary, lambda table: _representatives(table, runs, present["per_class_metrics"])),
        significance=significance,
        several_seeds=cells is not None,
        seeds=tuple(sorted({int(seed) for seed in sweep_rows.get("seed", ())})),
        mcnemar_across_seeds=_tallies(significance),
        across_seeds=across,
        seed_verdicts=_verdicts(across),
        noisy_cells=_noisy_cells(across, diverged),
        nightly=_from(present["history"], _nightly, None),
        cache=_from(present["cache_decisions"], _cache, None),
    )


def _cache(decisions: pd.DataFrame) -> CacheSummary:
    recomputed = decisions[decisions["action"] == "recomputed"]
    return CacheSummary(reused=int((decisions["action"] == "reused").sum()),
                        recomputed=tuple(CacheEntry(stage=stage, item=item, reason=reason)
                                         for stage, item, reason in recomputed[["stage", "item", "reason"]].values))


def _problems(table: pd.DataFrame, column: str) -> tuple[RunProblem, ...]:
    """One RunProblem per row, its problem read from `column`."""
    return tuple(RunProblem(run_id=row["run_id"], model=row["model"], learning_rate=row["learning_rate"],
                            epochs=row["epochs"], seed=row["seed"], problem=row[column])
                 for row in table.to_dict(orient="records"))


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


def _dataset_facts(facts: pd.DataFrame) -> tuple[DatasetFact, ...]:
    rows = facts[list(DatasetFact.model_fields)].astype(str).to_dict(orient="records")
    return tuple(DatasetFact(**row) for row in rows)


def _model_sizes(summary: pd.DataFrame) -> tuple[ModelSize, ...]:
    sizes = []
    for model, rows in summary.groupby("model", sort=False):
        is_total = rows["layer"].astype(str) == "(total)"
        total = rows.loc[is_total, "parameters"]
        parameters = int(total.iloc[0]) if len(total) else int(rows.loc[~is_total, "parameters"].sum())
        sizes.append(ModelSize(model=str(model), layers=int((~is_total).sum()), parameters=parameters))
    return tuple(sizes)


def _convolutions(summary: pd.DataFrame) -> tuple[ConvolutionCheck, ...]:
    layers = summary[summary["formula_parameters"].notna() & (summary["layer"].astype(str) != "(total)")]
    return tuple(
        ConvolutionCheck(model=str(row.model), layer=str(row.layer), output_shape=str(row.output_shape),
                         study_formula=str(row.study_formula), formula_parameters=int(row.formula_parameters),
                         keras_parameters=int(row.parameters), agrees=int(row.formula_parameters) == int(row.parameters))
        for row in layers.itertuples())


def _gradient(gradients: pd.DataFrame) -> GradientExperiment:
    means = gradients.groupby(["layer", "model"], sort=False)["gradient_norm"].mean().unstack("model")
    models = sorted(dict.fromkeys(gradients["model"]), key=lambda model: model != outputs.PLAIN_VARIANT)
    means = means.reindex(index=list(dict.fromkeys(gradients["layer"])), columns=models).astype(float)
    plain = outputs.PLAIN_VARIANT if outputs.PLAIN_VARIANT in models else None
    shortcut = next((model for model in models if model != outputs.PLAIN_VARIANT), None)

    def mean(layer: str, model: str | None) -> float | None:
        return _none_if_missing(means.at[layer, model]) if model and layer in means.index else None

    without, with_ = mean(TARGET_LAYER, plain), mean(TARGET_LAYER, shortcut)
    ratio = _ratio(with_, without)
    seeds = gradients["seed"].nunique()
    return GradientExperiment(
        models=tuple(str(model) for model in models),
        first_epoch=int(gradients["epoch"].min()),
        last_epoch=int(gradients["epoch"].max()),
        layers=tuple(LayerGradient(layer=str(layer), mean_norms=tuple(means.loc[layer]),
                                   with_over_without=_ratio(mean(layer, shortcut), mean(layer, plain)))
                     for layer in means.index),
        plain_model=plain,
        shortcut_model=shortcut,
        target_without=without,
        target_with=with_,
        ratio=ratio,
        effect=None if ratio is None else "increased" if ratio > 1 else "lowered" if ratio < 1 else "unchanged",
        seeds=max(int(seeds), 1),
        per_seed=_seed_ratios(gradients, plain, shortcut) if seeds > 1 else None,
    )


def _seed_ratios(gradients: pd.DataFrame, plain: str | None, shortcut: str | None) -> SeedRatios | None:
    """target_layer's ratio of mean gradient norms, with over without the shortcut, in each seed."""
    target = gradients[gradients["layer"] == TARGET_LAYER]
    means = target.groupby(["seed", "model"])["gradient_norm"].mean().unstack("model")
    if plain not in means.columns or shortcut not in means.columns:
        return None
    ratios = tuple(_ratio(_none_if_missing(row[shortcut]), _none_if_missing(row[plain])) for _, row in means.iterrows())
    known = [ratio for ratio in ratios if ratio is not None]
    return SeedRatios(seeds=tuple(int(seed) for seed in means.index), ratios=ratios, lowest=min(known, default=None),
                      highest=max(known, default=None), increased=sum(ratio > 1 for ratio in known))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _runs(summary: pd.DataFrame) -> tuple[RunResult, ...]:
    models = list(dict.fromkeys(summary["model"]))
    in_sweep = summary.index.isin(evaluation.sweep_runs(summary).index)
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


def _replicated_cells(summary: pd.DataFrame, given: pd.DataFrame | None) -> pd.DataFrame | None:
    """The replicates table when some sweep cell has several seeds, None with one seed per cell.

    A caller that passes only the summary gets the table from the registry's own builder.
    """
    sweep = evaluation.sweep_runs(summary)
    if sweep.empty or sweep.groupby(["model", "learning_rate"])["seed"].nunique().max() < 2:
        return None
    return replicates.replicates_table(summary) if given is None else given


def _accuracy_at_reference(summary: pd.DataFrame, cells: pd.DataFrame | None) -> tuple[AccuracyAgainstStudy, ...]:
    table = evaluation.accuracy_at_lr_table(summary, REFERENCE_LEARNING_RATE)
    if cells is not None:  # one row per model: the mean across seeds and the t-interval of that mean
        seeds = table.groupby("model", sort=False).size()
        table = replicates.across_seed_columns(table, cells).drop_duplicates("model").assign(
            accuracy=lambda rows: rows["accuracy_mean"], accuracy_low=lambda rows: rows["accuracy_mean_low"],
            accuracy_high=lambda rows: rows["accuracy_mean_high"], seeds=lambda rows: rows["model"].map(seeds))
    return tuple(
        AccuracyAgainstStudy(
            model=row["model"], learning_rate=row["learning_rate"], epochs=int(row["epochs"]), accuracy=row["accuracy"],
            accuracy_low=row["accuracy_low"], accuracy_high=row["accuracy_high"], study_accuracy=row["study_accuracy"],
            gap=_gap(row["accuracy"], row["study_accuracy"]), seeds=int(row.get("seeds", 1)),
            accuracy_std=row.get("accuracy_std"))
        for row in table.to_dict(orient="records"))


def _gap(accuracy: object, study: object) -> float | None:
    accuracy, study = _none_if_missing(accuracy), _none_if_missing(study)
    return None if accuracy is None or study is None else float(accuracy) - float(study)


def _study_value(study: Mapping[float, float], learning_rate: float) -> float | None:
    return next((value for rate, value in study.items() if math.isclose(rate, learning_rate)), None)


def _sweep_cells(sweep_rows: pd.DataFrame, cells: pd.DataFrame | None) -> pd.DataFrame:
    """One row per model and learning rate: the run's accuracy, or with several seeds the mean across them."""
    if cells is not None:
        return cells.rename(columns={"accuracy_mean": "accuracy", "accuracy_std": "std",
                                     "accuracy_mean_low": "mean_low", "accuracy_mean_high": "mean_high"})
    if sweep_rows.empty:
        return sweep_rows
    return sweep_rows[["model", "learning_rate", "accuracy"]].assign(seeds=1, std=np.nan, mean_low=np.nan,
                                                                      mean_high=np.nan)


def _sweep(rows: pd.DataFrame) -> tuple[tuple[float, ...], tuple[ModelSweep, ...]]:
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
                                   gap=_gap(accuracy, study), **ran))
        ran = [cell for cell in cells if cell.accuracy is not None]
        sweep.append(ModelSweep(model=str(model), cells=tuple(cells), in_study=model in STUDY_TABLE_5_1,
                                best=max(ran, key=lambda cell: cell.accuracy, default=None)))
    return tuple(rates), tuple(sweep)


def _diverged(sweep: tuple[ModelSweep, ...], learning_rates: tuple[float, ...]) -> tuple[Divergence, ...]:
    found = []
    for index, rate in enumerate(learning_rates):
        ran = [row.cells[index] for row in sweep if row.cells[index].accuracy is not None]
        cells = tuple(cell for cell in ran if cell.accuracy < DIVERGED_BELOW)
        if cells:
            found.append(Divergence(learning_rate=rate, cells=cells, every_model=1 < len(cells) == len(ran)))
    return tuple(found)


def _best_model(at_reference: tuple[AccuracyAgainstStudy, ...], significance: tuple[ComparisonGroup, ...],
                across: AcrossSeeds | None) -> BestModel | None:
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


def _representatives(summary: pd.DataFrame, runs: tuple[RunResult, ...],
                     per_class: pd.DataFrame | None) -> tuple[ModelResult, ...]:
    by_id = {run.run_id: run for run in runs}
    results = []
    for model, run_id in evaluation.representative_runs(summary).items():
        classes = per_class[per_class["run_id"] == run_id] if per_class is not None else pd.DataFrame()
        f1 = classes["f1"].astype(float) if not classes.empty else pd.Series(dtype=float)
        weakest, strongest = (None, None) if f1.isna().all() else (
            _class_f1(classes.loc[f1.idxmin()]), _class_f1(classes.loc[f1.idxmax()]))
        results.append(ModelResult(model=str(model), run=by_id[run_id], weakest_class=weakest, strongest_class=strongest))
    return tuple(results)


def _class_f1(row: pd.Series) -> ClassF1:
    return ClassF1(label=int(row["class"]), f1=row["f1"])


def _significance(table: pd.DataFrame) -> tuple[ComparisonGroup, ...]:
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


def _tallies(groups: tuple[ComparisonGroup, ...]) -> tuple[SeedTally, ...]:
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


def _verdicts(across: AcrossSeeds | None) -> tuple[SeedVerdicts, ...]:
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


def _nightly(history: pd.DataFrame) -> NightlyGate:
    """The latest night of the history and the gate's decision for each model it gated."""
    dates = history["date"].astype(str)
    tonight = history[dates == dates.max()]
    decided = tonight[tonight["decision"].notna()]
    decisions = tuple(
        NightlyDecision(
            model=str(row["model"]), learning_rate=row["learning_rate"], seed=row["seed"], accuracy=row["accuracy"],
            champion_accuracy=row["champion_accuracy"], champion_version=row["champion_version"],
            difference=_gap(row["accuracy"], row["champion_accuracy"]), p_value=row["p_value"],
            nights=row["nights"], history_mean=row["history_mean"], history_std=row["history_std"],
            interval_low=row["interval_low"], below_interval=_below(row["accuracy"], row["interval_low"]),
            champion_bound=row["champion_bound"], rule=_none_if_missing(row["rule"]),
            decision=str(row["decision"]), message=str(row["message"]))
        for row in decided.to_dict(orient="records"))
    regressed = [decision for decision in decisions if decision.decision == "regressed"]
    return NightlyGate(date=str(dates.max()), nights=int(dates.nunique()), decisions=decisions,
                       undecided=len(tonight) - len(decided), regressed=tuple(row.model for row in regressed),
                       regressed_by_interval=tuple(row.model for row in regressed if row.interval_low is not None),
                       regressed_by_tolerance=tuple(row.model for row in regressed if row.interval_low is None))


def _below(accuracy: object, bound: object) -> bool | None:
    accuracy, bound = _none_if_missing(accuracy), _none_if_missing(bound)
    return None if accuracy is None or bound is None else bool(float(accuracy) < float(bound))


def _noisy_cells(across: AcrossSeeds | None, diverged: tuple[Divergence, ...]) -> tuple[CellSpread, ...]:
    """Cells whose spread across seeds exceeds a gap to another model; diverged cells rank nothing, so not those."""
    guessing = {(cell.model, divergence.learning_rate) for divergence in diverged for cell in divergence.cells}
    return () if across is None else tuple(
        cell for cell in across.spreads if (cell.exceeds_study_gap or cell.exceeds_run_gap)
        and not any(model == cell.model and math.isclose(rate, cell.learning_rate) for model, rate in guessing))
