"""Evaluate a trained run on the test split and assemble the study's tables from the results."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mnist_models import data as data_lib
from mnist_models import prediction
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.records import ROLES, ClassMetrics, EvaluatedRun, FailedRun, Role, Scores

REFERENCE_LEARNING_RATE = 0.001  # the study's table 2.1 and section VI are at this learning rate
DIVERGED_BELOW = 0.2  # a run at chance level (about 0.1 on ten classes) has diverged
STUDY_TABLE_2_1 = {"dnn": 0.959, "convnet": 0.987, "resnet": 0.991}
STUDY_TABLE_5_1 = {
    "dnn": {0.1: 0.114, 0.01: 0.932, 0.001: 0.962, 0.0001: 0.935},
    "convnet": {0.1: 0.114, 0.01: 0.978, 0.001: 0.991, 0.0001: 0.988},
    "resnet": {0.1: 0.098, 0.01: 0.958, 0.001: 0.99, 0.0001: 0.99},
}


def evaluate_run(folder: RunFolder, test_path: str | os.PathLike[str], seed: int = 0,
                 log: Callable[[str], None] = print, stamp: Mapping[str, str] | None = None) -> Scores:
    """Score a run's saved model on the test split, keep its predictions (stamped), return every metric."""
    import keras

    if not folder.model.exists():
        raise FileNotFoundError(f"{folder.model} does not exist; train the run first")
    model = keras.saving.load_model(folder.model)  # safe_mode stays on: no arbitrary code from the file
    test = data_lib.load_split(test_path)
    prediction.write_predictions(folder.predictions, test.labels, prediction.predict(model, test.images), stamp or {})
    return scores_from_predictions(folder, seed)


def stored_scores(folder: RunFolder, stamp: Mapping[str, str], seed: int = 0) -> Scores | None:
    """Scores from the run's kept predictions if they were made from exactly what `stamp` names, else None."""
    return scores_from_predictions(folder, seed) if prediction.stamp_matches(folder.predictions, stamp) else None


def scores_from_predictions(folder: RunFolder, seed: int = 0) -> Scores:
    """Every metric of the run's kept predictions."""
    from mnist_models import metrics

    labels, probabilities = metrics.probabilities_from_frame(pd.read_parquet(folder.predictions))
    return scores_of(labels, probabilities, seed=seed)


def scores_of(labels: np.ndarray, probabilities: np.ndarray, seed: int = 0) -> Scores:
    """All metrics of one run's predictions as a `Scores` record."""
    from mnist_models import metrics

    evaluation = metrics.evaluate_predictions(labels, probabilities, seed=seed)
    macro = evaluation.averages.set_index("average").loc["macro"]
    return Scores(
        accuracy=evaluation.accuracy,
        accuracy_low=evaluation.accuracy_interval[0],
        accuracy_high=evaluation.accuracy_interval[1],
        loss=evaluation.loss,
        macro_f1=float(macro["f1"]),
        macro_auc=float(macro["roc_auc"]),
        map=evaluation.mean_average_precision,
        per_class=tuple(ClassMetrics.model_validate(row) for row in evaluation.per_class.to_dict(orient="records")),
        confusion=tuple(tuple(int(count) for count in row) for row in evaluation.confusion),
    )


def correct_vector(predictions_path: str | os.PathLike[str]) -> np.ndarray:
    """Per test image, whether the run's saved prediction is right (for McNemar's test)."""
    frame = pd.read_parquet(predictions_path, columns=["label", "predicted"])
    return (frame["label"] == frame["predicted"]).to_numpy()


@dataclass(frozen=True)
class StudyRuns:
    """The evaluated runs of one study, with where their files are: what every table is built from."""

    runs: tuple[EvaluatedRun, ...]
    layout: ArtifactsLayout
    models: tuple[str, ...]
    failures: tuple[FailedRun, ...] = ()  # planned runs with no result in this study run

    def folder(self, run: EvaluatedRun) -> RunFolder:
        return self.layout.run(run.run_id)

    def serving(self, role: Role) -> list[EvaluatedRun]:
        """The runs that are part of the sweep, or of the gradient experiment, in the study's order."""
        return [run for run in self.runs if run.serves(role)]


SUMMARY_COLUMNS = ["run_id", "model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low",
                   "accuracy_high", "loss", "macro_f1", "macro_auc", "map", "parameters", "train_seconds", "role",
                   "roles", "status"]
FAILURE_COLUMNS = ["run_id", "model", "learning_rate", "epochs", "seed", "roles", "cause"]


def run_status(run: EvaluatedRun) -> str:
    """"trained", or "diverged at epoch N" for a run whose loss stopped being a number (scored at chance)."""
    epoch = run.trained.diverged_epoch
    return "trained" if epoch is None else f"diverged at epoch {epoch}"


def summary_table(study: StudyRuns) -> pd.DataFrame:
    """One row per run: its settings, accuracy with interval, loss, macro F1, macro AUC, MAP, cost, roles."""
    rows = [{
        "run_id": run.run_id, "model": run.model, "learning_rate": run.learning_rate, "epochs": run.spec.epochs,
        "seed": run.spec.seed, **run.scores.model_dump(include=set(SUMMARY_COLUMNS)),
        "parameters": run.trained.parameters, "train_seconds": run.trained.train_seconds, "role": run.role,
        "roles": ",".join(role for role in ROLES if run.serves(role)), "status": run_status(run),
    } for run in study.runs]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def failures_table(study: StudyRuns) -> pd.DataFrame:
    """One row per planned run without a result in this study run, with its cause (empty when none failed)."""
    return failures_frame(study.failures)


def failures_frame(failures: Sequence[FailedRun]) -> pd.DataFrame:
    """The failures table of these failed runs (their roles comma-separated)."""
    rows = [{**failure.model_dump(include=set(FAILURE_COLUMNS)), "roles": ",".join(sorted(failure.roles))}
            for failure in failures]
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def sweep_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """The learning-rate sweep's rows of the summary (a run may also serve the gradient experiment)."""
    return summary[summary["role"] == "sweep"]


def accuracy_at_lr_table(summary: pd.DataFrame, learning_rate: float = REFERENCE_LEARNING_RATE) -> pd.DataFrame:
    """Study table 2.1: accuracy per model at one learning rate, beside the study's value."""
    rows = sweep_runs(summary)
    rows = rows[np.isclose(rows["learning_rate"], learning_rate)]
    table = rows[["model", "learning_rate", "epochs", "accuracy", "accuracy_low", "accuracy_high"]].copy()
    table["study_accuracy"] = [STUDY_TABLE_2_1.get(model, np.nan) for model in table["model"]]
    return table.reset_index(drop=True)


def lr_sweep_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Study table 5.1: accuracy per model (rows) and learning rate (columns, largest first)."""
    rows = sweep_runs(summary)
    wide = rows.pivot_table(index="model", columns="learning_rate", values="accuracy", aggfunc="first", sort=False)
    wide = wide[sorted(wide.columns, reverse=True)]
    wide.columns = [learning_rate_column(rate) for rate in wide.columns]
    return wide.reset_index().rename_axis(columns=None)


def learning_rate_column(learning_rate: float) -> str:
    """The lr_sweep table's column name of a learning rate, e.g. "lr 0.001"."""
    return f"lr {learning_rate:g}"


def per_class_table(study: StudyRuns) -> pd.DataFrame:
    """Per run and class: precision, recall, F1, ROC AUC, average precision, support."""
    frames = []
    for run in study.runs:
        frame = pd.DataFrame([metrics.model_dump() for metrics in run.scores.per_class])
        frame = frame.astype({"roc_auc": float, "average_precision": float})  # None (undefined) -> NaN
        frame.insert(0, "learning_rate", run.learning_rate)
        frame.insert(0, "model", run.model)
        frame.insert(0, "run_id", run.run_id)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def confusion_table(study: StudyRuns) -> pd.DataFrame:
    """Confusion matrices, ten rows per run (true label) and one column per predicted label."""
    rows = []
    for run in study.runs:
        for true_label, counts in enumerate(run.scores.confusion):
            rows.append({"run_id": run.run_id, "model": run.model, "learning_rate": run.learning_rate,
                         "true_label": true_label, **{f"predicted_{index}": int(count) for index, count in enumerate(counts)}})
    return pd.DataFrame(rows)


def significance_table(study: StudyRuns, learning_rate: float = REFERENCE_LEARNING_RATE) -> pd.DataFrame:
    """McNemar's test between each pair of models' sweep runs at one learning rate, per seed."""
    from mnist_models import metrics

    chosen = [run for run in study.serving("sweep") if np.isclose(run.learning_rate, learning_rate)]
    frames = []
    for seed in sorted({run.spec.seed for run in chosen}):
        table = metrics.significance_table({run.model: correct_vector(study.folder(run).predictions)
                                            for run in chosen if run.spec.seed == seed})
        table.insert(0, "seed", seed)
        table.insert(0, "learning_rate", learning_rate)
        frames.append(table)
    if not frames:
        empty = metrics.significance_table({})
        empty.insert(0, "seed", pd.Series(dtype="int64"))
        empty.insert(0, "learning_rate", pd.Series(dtype="float64"))
        return empty
    return pd.concat(frames, ignore_index=True)


def correct_by_run(study: StudyRuns) -> dict[str, np.ndarray]:
    """Per sweep run, whether each test image was predicted right (for the across-seed comparisons)."""
    return {run.run_id: correct_vector(study.folder(run).predictions) for run in study.serving("sweep")}


def gradient_norms_table(study: StudyRuns) -> pd.DataFrame:
    """Per-layer gradient norms per epoch of the gradient-experiment runs (with and without shortcut)."""
    frames = []
    for run in study.serving("gradient"):
        frame = pd.read_parquet(study.folder(run).gradients)
        frame.insert(0, "seed", run.spec.seed)
        frame.insert(0, "model", run.model)
        frames.append(frame)
    columns = ["model", "seed", "epoch", "layer", "gradient_norm"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def model_summary_table(study: StudyRuns) -> pd.DataFrame:
    """Per model and layer: type, output shape, parameters, and for convolutions the study's formula."""
    from mnist_models.architectures import build_model

    rows = []
    for name in study.models:
        model = build_model(name)
        for layer in model.layers:
            formula, formula_parameters = "", np.nan
            if type(layer).__name__ == "Conv2D":
                rows_k, columns_k = layer.kernel_size
                filters, channels = layer.filters, layer.kernel.shape[2]
                formula = f"{rows_k}x{columns_k}x{filters}x{channels}+{filters}"
                formula_parameters = float(rows_k * columns_k * filters * channels + filters)
            rows.append({
                "model": name, "layer": layer.name, "type": type(layer).__name__,
                "output_shape": str(tuple(layer.output.shape)), "parameters": int(layer.count_params()),
                "study_formula": formula, "formula_parameters": formula_parameters,
            })
        rows.append({"model": name, "layer": "(total)", "type": "", "output_shape": "",
                     "parameters": int(model.count_params()), "study_formula": "", "formula_parameters": np.nan})
    return pd.DataFrame(rows)


def representative_runs(summary: pd.DataFrame, learning_rate: float = REFERENCE_LEARNING_RATE) -> dict[str, str]:
    """Per model, the sweep run that stands for it (per-model figures, the nightly gate): the one at `learning_rate`,
    else at the learning rate of its most accurate run; with several seeds there, the median seed's run (of an
    even count the lower middle), never the luckiest seed."""
    chosen = {}
    for model, rows in sweep_runs(summary).groupby("model", sort=False):
        at_rate = np.isclose(rows["learning_rate"], learning_rate)
        if not at_rate.any():
            best = rows.sort_values("accuracy", ascending=False, kind="stable").iloc[0]["learning_rate"]
            at_rate = np.isclose(rows["learning_rate"], best)
        cell = rows[at_rate].sort_values(["accuracy", "seed", "run_id"], kind="stable")
        chosen[model] = str(cell.iloc[(len(cell) - 1) // 2]["run_id"])
    return chosen
