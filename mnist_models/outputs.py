"""The registry of the study's outputs: every table and figure, declared once.

An entry names the output, says what it needs, how it is built and which files it makes. The flow,
the expected-outputs check, the report, the Prefect artifacts and the tests all read this registry:
adding a table is one `TableSpec` here plus its builder and its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from mnist_models import champions, replicates, table_builders
from mnist_models.evaluation import StudyRuns

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Stage = Literal["data", "study", "nightly", "cache"]
PLAIN_VARIANT = "resnet_plain"  # the gradient experiment's model without the residual shortcut


@dataclass(frozen=True)
class TableSpec:
    """One table: its name (file stem), a one-line description, its guaranteed columns and its builder.

    `build` takes the study's runs and the tables built before it (those named in `needs`).
    Tables of the data and nightly stages are built by those stages (`build` is None here).
    """

    name: str
    description: str
    columns: tuple[str, ...]
    stage: Stage = "study"
    needs: tuple[str, ...] = ()
    build: Callable[[StudyRuns, Mapping[str, pd.DataFrame]], pd.DataFrame] | None = None


def _from_runs(builder: Callable[[StudyRuns], pd.DataFrame]):
    return lambda study, tables: builder(study)


def _from_summary(builder: Callable[[pd.DataFrame], pd.DataFrame]):
    return lambda study, tables: builder(tables["summary"])


TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (
    TableSpec("dataset_facts", "the data set's facts per split (study section I)",
              ("fact", "train", "test", "total"), stage="data"),
    TableSpec("model_summary", "each model's layers, output shapes and parameter counts (study section II)",
              ("model", "layer", "type", "output_shape", "parameters", "study_formula", "formula_parameters"),
              build=_from_runs(table_builders.model_summary_table)),
    TableSpec("summary", "one row per run: accuracy with its 95% bootstrap interval, loss, macro F1, AUC, MAP, cost",
              tuple(table_builders.SUMMARY_COLUMNS), build=_from_runs(table_builders.summary_table)),
    TableSpec("failures", "planned runs that have no result in this study run, with the cause (empty when none "
              "failed)", tuple(table_builders.FAILURE_COLUMNS), build=_from_runs(table_builders.failures_table)),
    TableSpec("replicates", "per model and learning rate: seeds, mean, standard deviation and 95% t-interval of "
              "accuracy and MAP across seeds", replicates.REPLICATES_COLUMNS, needs=("summary",),
              build=_from_summary(replicates.replicates_table)),
    TableSpec("accuracy_at_lr", "accuracy per model at learning rate 0.001 beside the study's (its table 2.1); "
              "with several seeds, one row per seed and the across-seed columns",
              ("model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high", "study_accuracy"),
              needs=("summary", "replicates"), build=lambda study, tables: replicates.across_seed_columns(
                  table_builders.accuracy_at_lr_table(tables["summary"]), tables["replicates"])),
    TableSpec("lr_sweep", "accuracy per model and learning rate (the study's table 5.1); with several seeds, the "
              "mean with its spread", ("model",), needs=("summary", "replicates"),
              build=lambda study, tables: replicates.across_seed_sweep(
                  table_builders.lr_sweep_table(tables["summary"]), tables["replicates"])),
    TableSpec("per_class_metrics", "per run and class: precision, recall, F1, ROC AUC, average precision",
              ("run_id", "model", "learning_rate", "class", "precision", "recall", "f1", "roc_auc",
               "average_precision", "support"), build=_from_runs(table_builders.per_class_table)),
    TableSpec("confusion_matrices", "each run's confusion matrix, one row per true label",
              ("run_id", "model", "learning_rate", "true_label", *(f"predicted_{label}" for label in range(10))),
              build=_from_runs(table_builders.confusion_table)),
    TableSpec("significance", "McNemar's test between each pair of models at learning rate 0.001, per seed",
              ("learning_rate", "seed", "model_a", "model_b", "accuracy_a", "accuracy_b", "only_a_correct",
               "only_b_correct", "statistic", "p_value", "method", "significant", "verdict"),
              build=_from_runs(table_builders.significance_table)),
    TableSpec("seed_comparisons", "each pair of models at each learning rate across seeds: paired t-test beside "
              "the per-seed McNemar results, and whether the difference holds", replicates.COMPARISON_COLUMNS,
              needs=("summary",), build=lambda study, tables: replicates.seed_comparisons(
                  tables["summary"], table_builders.correct_by_run(study))),
    TableSpec("gradient_norms", "per-layer gradient norms per epoch of the gradient experiment",
              ("model", "seed", "epoch", "layer", "gradient_norm"),
              build=_from_runs(table_builders.gradient_norms_table)),
    TableSpec("cache_decisions", "each stage's reuse decision in this run: reused or recomputed, and why",
              ("stage", "item", "action", "reason"), stage="cache"),
    TableSpec("history", "nightly runs: one row per sweep run per night; the run the gate tested carries its "
              "decision, the past nights' prediction bound, McNemar's p against the champion and the rule applied", (
        "date", "flow_run_id", "model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low",
        "accuracy_high", "map", "run_id", "decision", "champion_accuracy", "p_value", "history_mean", "history_std",
        "message", "nights", "interval_low", "champion_bound", "champion_version", "rule"), stage="nightly"),
    TableSpec("promotions", "every promotion and rollback of each model's champion: date, versions, old and new "
              "accuracy, reason, run", champions.PROMOTION_COLUMNS, stage="nightly"),
)}


def study_tables() -> list[TableSpec]:
    """The tables the study stage builds, in an order where each comes after what it needs."""
    return [spec for spec in TABLES.values() if spec.stage == "study"]


def build_tables(study: StudyRuns) -> dict[str, pd.DataFrame]:
    """Build every study table from the runs, in registry order."""
    built: dict[str, pd.DataFrame] = {}
    for spec in study_tables():
        built[spec.name] = spec.build(study, {name: built[name] for name in spec.needs})
    return built


@dataclass(frozen=True)
class FigureInputs:
    """What figures are drawn from: the runs (their folders) and the study tables."""

    study: StudyRuns
    tables: Mapping[str, pd.DataFrame]

    @cached_property
    def representative(self) -> dict[str, str]:
        """Per model, the run id of the sweep run its per-model figures show."""
        return table_builders.representative_runs(self.tables["summary"])

    def run(self, run_id: str):
        return next(run for run in self.study.runs if run.run_id == run_id)

    def run_label(self, run_id: str) -> str:
        run = self.run(run_id)
        return f"{run.model}, lr {run.learning_rate:g}, {run.spec.epochs} epoch(s)"

    def gradient_frames(self, read: Callable[[object], pd.DataFrame]) -> dict[str, pd.DataFrame]:
        """One frame per gradient-experiment run, keyed by its variant label."""
        return {variant_label(run.model): read(self.study.folder(run)) for run in self.study.serving("gradient")}


def variant_label(model: str) -> str:
    """How the gradient experiment's figures and report name a model."""
    return f"without shortcut ({model})" if is_plain(model) else f"with shortcut ({model})"


def is_plain(model: str) -> bool:
    """Whether a model is a gradient pair's variant without shortcuts (the study's, or a deeper one)."""
    return model == PLAIN_VARIANT or model.startswith(f"{PLAIN_VARIANT}_deep")


@dataclass(frozen=True)
class FigureSpec:
    """One figure (or one per model, when `name` holds `{model}`): caption, when it applies, how to draw it."""

    name: str
    caption: str
    applies: Callable[[FigureInputs], bool]
    draw: Callable[..., "Figure"]

    @property
    def per_model(self) -> bool:
        return "{model}" in self.name

    def instances(self, inputs: FigureInputs) -> dict[str, tuple[str, ...]]:
        """File stem -> arguments after `inputs` for `draw` (the model, for per-model figures)."""
        if not self.applies(inputs):
            return {}
        if self.per_model:
            return {self.name.format(model=model): (model,) for model in inputs.representative}
        return {self.name: ()}


def _has_gradient_runs(inputs: FigureInputs) -> bool:
    return bool(inputs.study.serving("gradient"))


def _has_sweep_runs(inputs: FigureInputs) -> bool:
    return bool(inputs.representative)


def _several_seeds(role: str):
    return lambda inputs: len({run.spec.seed for run in inputs.study.serving(role)}) > 1


def _lr_sweep_seeds(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.lr_sweep import plot_lr_sweep_across_seeds

    sweep = table_builders.sweep_runs(inputs.tables["summary"])
    return plot_lr_sweep_across_seeds(replicates.replicates_table(inputs.tables["summary"]),
                                      sweep[["model", "learning_rate", "seed", "accuracy"]])


def _seed_gradients(inputs: FigureInputs) -> pd.DataFrame:
    """Every gradient-experiment run's gradient norms, with its variant label and seed."""
    frames = [pd.read_parquet(inputs.study.folder(run).gradients).assign(variant=variant_label(run.model),
                                                                       seed=run.spec.seed)
              for run in inputs.study.serving("gradient")]
    return pd.concat(frames, ignore_index=True)


def _gradient_norms_seeds(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.gradients import plot_gradient_norm_band

    return plot_gradient_norm_band(_seed_gradients(inputs))


def _kernel_histograms(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.gradients import plot_kernel_histograms

    return plot_kernel_histograms(inputs.gradient_frames(lambda folder: pd.read_parquet(folder.kernel_histograms)))


def _gradient_norms(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.gradients import plot_gradient_norms

    gradients = _seed_gradients(inputs)
    return plot_gradient_norms({variant: rows.drop(columns="variant") for variant, rows
                                in gradients.groupby("variant", sort=False)})


def _accuracy_curves(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.accuracy_curves import plot_accuracy_curves

    return plot_accuracy_curves({
        f"{model} (lr {inputs.run(run_id).learning_rate:g})": pd.read_parquet(inputs.study.layout.run(run_id).history)
        for model, run_id in inputs.representative.items()})


def _lr_sweep_heatmap(inputs: FigureInputs) -> "Figure":
    from mnist_models.plots.lr_sweep import plot_lr_sweep_heatmap

    sweep = table_builders.sweep_runs(inputs.tables["summary"])[["model", "learning_rate", "accuracy", "status"]]
    failures = inputs.tables.get("failures")
    if failures is not None and not failures.empty:  # a failed sweep cell is shown as failed, not left out
        failed = failures[failures["roles"].str.contains("sweep")]
        sweep = pd.concat([sweep, failed[["model", "learning_rate"]].assign(accuracy=np.nan, status="failed")],
                          ignore_index=True)
    return plot_lr_sweep_heatmap(sweep)


def _roc(inputs: FigureInputs, model: str) -> "Figure":
    from mnist_models import metrics
    from mnist_models.plots.per_class import plot_roc_curves

    run_id = inputs.representative[model]
    labels, probabilities = metrics.probabilities_from_frame(pd.read_parquet(inputs.study.layout.run(run_id).predictions))
    return plot_roc_curves(labels, probabilities, f"ROC one-vs-rest: {inputs.run_label(run_id)}")


def _f1(inputs: FigureInputs, model: str) -> "Figure":
    from mnist_models.plots.per_class import plot_f1_per_class

    run_id = inputs.representative[model]
    per_class = inputs.tables["per_class_metrics"]
    return plot_f1_per_class(per_class[per_class["run_id"] == run_id],
                             f"Per-class precision, recall, F1: {inputs.run_label(run_id)}")


def _confusion(inputs: FigureInputs, model: str) -> "Figure":
    from mnist_models.plots.per_class import plot_confusion_matrix

    run_id = inputs.representative[model]
    return plot_confusion_matrix(np.asarray(inputs.run(run_id).scores.confusion),
                                 f"Confusion matrix: {inputs.run_label(run_id)}")


FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in (
    FigureSpec("kernel_histograms", "histograms of target_layer's kernel per epoch, with and without the shortcut",
               _has_gradient_runs, _kernel_histograms),
    FigureSpec("gradient_norms", "gradient norm of each layer's kernel per epoch, with and without the shortcut",
               _has_gradient_runs, _gradient_norms),
    FigureSpec("accuracy_curves", "training and validation accuracy per epoch of each model's representative run",
               _has_sweep_runs, _accuracy_curves),
    FigureSpec("lr_sweep_heatmap", "test accuracy per model and learning rate", _has_sweep_runs, _lr_sweep_heatmap),
    FigureSpec("lr_sweep_seeds", "test accuracy per learning rate: mean and 95% interval across seeds",
               _several_seeds("sweep"), _lr_sweep_seeds),
    FigureSpec("gradient_norms_seeds", "target_layer's gradient norm per epoch with its band across seeds",
               _several_seeds("gradient"), _gradient_norms_seeds),
    FigureSpec("roc_{model}", "ROC curves, one class against the rest", _has_sweep_runs, _roc),
    FigureSpec("f1_{model}", "precision, recall and F1 per class", _has_sweep_runs, _f1),
    FigureSpec("confusion_{model}", "confusion matrix", _has_sweep_runs, _confusion),
)}
DATA_FIGURES = ("first_25_images",)  # drawn by the data stage
NIGHTLY_FIGURES = ("history",)  # drawn by the nightly stage


def draw_figures(inputs: FigureInputs) -> Iterator[tuple[str, "Figure"]]:
    """Draw every figure that applies, one at a time: (name, Figure); the caller saves and closes each."""
    for spec in FIGURES.values():
        for name, arguments in spec.instances(inputs).items():
            yield name, spec.draw(inputs, *arguments)
