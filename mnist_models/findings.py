"""The study's findings as data: what its tables show, computed once, tested as data, rendered by the report.

Every number a report sentence states is a field here, read from the tables' numeric columns; nothing
is parsed back out of a string. A finding is empty (None, () or False) when its table is absent or empty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BeforeValidator

from mnist_models import evaluation, outputs
from mnist_models.evaluation import DIVERGED_BELOW, REFERENCE_LEARNING_RATE, STUDY_TABLE_2_1, STUDY_TABLE_5_1
from mnist_models.records import Record

STUDY_EPOCHS = 10  # the study's tables 2.1 and 5.1 are after this many epochs
TARGET_LAYER = "target_layer"  # the layer the gradient experiment watches
# The tables the findings are computed from; their columns are checked against the outputs registry.
SOURCE_TABLES = ("dataset_facts", "model_summary", "summary", "per_class_metrics", "significance", "gradient_norms")
_SCORES = ("accuracy", "accuracy_low", "accuracy_high", "loss", "macro_f1", "macro_auc", "map")


def _none_if_missing(value: object) -> object:
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else value


# A number a table may lack: NaN becomes None, so that findings round-trip through JSON.
Number = Annotated[float | None, BeforeValidator(_none_if_missing)]


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


class GradientExperiment(Record):
    """The residual network's gradient norms with and without its shortcut, averaged over the epochs."""

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


class RunResult(Record):
    """One run of the summary table: its settings and test-split scores."""

    run_id: str
    model: str
    roles: tuple[str, ...]
    learning_rate: float
    epochs: int
    accuracy: Number
    accuracy_low: Number
    accuracy_high: Number
    loss: Number
    macro_f1: Number
    macro_auc: Number
    map: Number


class AccuracyAgainstStudy(Record):
    """One row of the study's table 2.1 as this run has it: a sweep run at the reference learning rate."""

    model: str
    learning_rate: float
    epochs: int
    accuracy: Number
    accuracy_low: Number
    accuracy_high: Number
    study_accuracy: Number
    gap: Number  # this run − study


class SweepCell(Record):
    """One model at one learning rate: this run's accuracy beside the study's table 5.1 (None where absent)."""

    model: str
    learning_rate: float
    accuracy: Number
    study_accuracy: Number
    gap: Number  # this run − study


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
    """McNemar's test between two models at one learning rate, and who is better when it is significant."""

    learning_rate: float
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
    """Every pair of models compared at one learning rate."""

    learning_rate: float
    pairs: tuple[Comparison, ...]
    significant: tuple[Comparison, ...]
    not_significant: tuple[Comparison, ...]


class BestModel(Record):
    """The most accurate model at the reference learning rate, its rivals, and the study's choice."""

    best: AccuracyAgainstStudy
    others: tuple[AccuracyAgainstStudy, ...]  # most accurate first
    tied_with: tuple[str, ...]  # other models exactly as accurate; the table's order put `best` first
    lead: Comparison | None  # McNemar's test of best against the runner-up
    study_best_model: str | None  # the study's table 2.1 winner; None when `best` is not in that table
    study_best_accuracy: Number


class Findings(Record):
    """Everything the report states, as data."""

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
    significance: tuple[ComparisonGroup, ...] = ()


def compute_findings(tables: Mapping[str, pd.DataFrame]) -> Findings:
    """The study's findings from its tables (keyed by the registry's names); absent tables give empty findings."""
    present = {name: _checked(tables, name) for name in SOURCE_TABLES}
    summary, model_summary = present["summary"], present["model_summary"]
    significance = _from(present["significance"], _significance)
    runs = _from(summary, _runs)
    at_reference = _from(summary, _accuracy_at_reference)
    sweep_rows = _from(summary, evaluation.sweep_runs, pd.DataFrame())
    learning_rates, sweep = _sweep(sweep_rows)
    diverged = _diverged(sweep, learning_rates)
    shared = [cell for row in sweep for cell in row.cells if cell.gap is not None]
    sweep_epochs = tuple(sorted({int(value) for value in sweep_rows.get("epochs", ())}))
    return Findings(
        dataset_facts=_from(present["dataset_facts"], _dataset_facts),
        model_sizes=_from(model_summary, _model_sizes),
        convolutions=_from(model_summary, _convolutions),
        gradient=_from(present["gradient_norms"], _gradient, None),
        runs=runs,
        sweep_epochs=sweep_epochs,
        epochs_match_study=sweep_epochs in ((), (STUDY_EPOCHS,)),
        accuracy_at_reference=at_reference,
        best_model=_best_model(at_reference, significance),
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
    )


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _runs(summary: pd.DataFrame) -> tuple[RunResult, ...]:
    models = list(dict.fromkeys(summary["model"]))
    in_sweep = summary.index.isin(evaluation.sweep_runs(summary).index)
    order = sorted(range(len(summary)), key=lambda position: (
        not in_sweep[position], models.index(summary["model"].iloc[position]),
        -summary["learning_rate"].iloc[position]))
    return tuple(_run(row) for _, row in summary.iloc[order].iterrows())


def _run(row: pd.Series) -> RunResult:
    roles = row["roles"]
    return RunResult(
        run_id=str(row["run_id"]), model=str(row["model"]),
        roles=tuple(roles.split(",")) if isinstance(roles, str) and roles else (),
        learning_rate=row["learning_rate"], epochs=int(row["epochs"]), **{name: row[name] for name in _SCORES})


def _accuracy_at_reference(summary: pd.DataFrame) -> tuple[AccuracyAgainstStudy, ...]:
    table = evaluation.accuracy_at_lr_table(summary, REFERENCE_LEARNING_RATE)
    return tuple(
        AccuracyAgainstStudy(**{**row, "epochs": int(row["epochs"]), "gap": _gap(row["accuracy"], row["study_accuracy"])})
        for row in table.to_dict(orient="records"))


def _gap(accuracy: object, study: object) -> float | None:
    accuracy, study = _none_if_missing(accuracy), _none_if_missing(study)
    return None if accuracy is None or study is None else float(accuracy) - float(study)


def _study_value(study: Mapping[float, float], learning_rate: float) -> float | None:
    return next((value for rate, value in study.items() if math.isclose(rate, learning_rate)), None)


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
            matching = own.loc[np.isclose(own["learning_rate"], rate), "accuracy"]
            accuracy = matching.iloc[0] if len(matching) else None
            study = _study_value(STUDY_TABLE_5_1.get(model, {}), rate)
            cells.append(SweepCell(model=str(model), learning_rate=rate, accuracy=accuracy, study_accuracy=study,
                                   gap=_gap(accuracy, study)))
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


def _best_model(at_reference: tuple[AccuracyAgainstStudy, ...],
                significance: tuple[ComparisonGroup, ...]) -> BestModel | None:
    ranked = sorted((row for row in at_reference if row.accuracy is not None), key=lambda row: -row.accuracy)
    if not ranked:
        return None
    best, others = ranked[0], tuple(ranked[1:])
    lead = None
    if others:
        pair = {best.model, others[0].model}
        lead = next((comparison for group in significance for comparison in group.pairs
                     if {comparison.model_a, comparison.model_b} == pair
                     and math.isclose(comparison.learning_rate, best.learning_rate)), None)
    study_best = max(STUDY_TABLE_2_1, key=STUDY_TABLE_2_1.get) if best.model in STUDY_TABLE_2_1 else None
    return BestModel(best=best, others=others, lead=lead,
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
    for rate, rows in table.groupby("learning_rate", sort=False):
        pairs = tuple(_comparison(row) for row in rows.itertuples())
        groups.append(ComparisonGroup(
            learning_rate=rate, pairs=pairs, significant=tuple(pair for pair in pairs if pair.significant),
            not_significant=tuple(pair for pair in pairs if not pair.significant)))
    return tuple(groups)


def _comparison(row) -> Comparison:
    significant = bool(row.significant)
    a_ahead = (row.only_a_correct, row.accuracy_a) > (row.only_b_correct, row.accuracy_b)
    better, worse = (row.model_a, row.model_b) if a_ahead else (row.model_b, row.model_a)
    return Comparison(
        learning_rate=row.learning_rate, model_a=str(row.model_a), model_b=str(row.model_b),
        accuracy_a=row.accuracy_a, accuracy_b=row.accuracy_b, only_a_correct=int(row.only_a_correct),
        only_b_correct=int(row.only_b_correct), p_value=row.p_value, significant=significant,
        verdict=str(row.verdict), better=str(better) if significant else None, worse=str(worse) if significant else None)
