"""The study's tables, each built as a pandas DataFrame from the study's evaluated runs (`StudyRuns`) or from
its summary table; `mnist_models.outputs` declares them, `mnist_models.tables` writes them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mnist_models.evaluation import StudyRuns, correct_vector
from mnist_models.quiet import banners_filtered
from mnist_models.records import ROLES, EvaluatedRun, FailedRun
from mnist_models.runs import read_manifest
from mnist_models.study_reference import REFERENCE_LEARNING_RATE, STUDY_TABLE_2_1


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


def gradient_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """The gradient experiment's rows of the summary (a run may also serve the sweep)."""
    return summary[summary["roles"].map(lambda roles: "gradient" in str(roles).split(","))]


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
    rows = []
    for name in study.models:
        layers = _recorded_layers(study, name)
        for layer in layers:
            formula, formula_parameters = "", np.nan
            if layer["type"] == "Conv2D":
                (rows_k, columns_k), filters, channels = layer["kernel_size"], layer["filters"], layer["channels"]
                formula = f"{rows_k}x{columns_k}x{filters}x{channels}+{filters}"
                formula_parameters = float(rows_k * columns_k * filters * channels + filters)
            rows.append({
                "model": name, "layer": layer["layer"], "type": layer["type"], "output_shape": layer["output_shape"],
                "parameters": layer["parameters"], "study_formula": formula, "formula_parameters": formula_parameters,
            })
        rows.append({"model": name, "layer": "(total)", "type": "", "output_shape": "",
                     "parameters": sum(layer["parameters"] for layer in layers), "study_formula": "",
                     "formula_parameters": np.nan})
    return pd.DataFrame(rows)


def _recorded_layers(study: StudyRuns, model: str) -> list[dict]:
    """A model's layers as training recorded them in a run's manifest; built here (importing Keras) only for a run
    trained before manifests kept them."""
    for run in study.runs:
        if run.model == model and (layers := (read_manifest(study.folder(run)) or {}).get("layers")):
            return layers
    from mnist_models.architectures import build_model, describe_layers

    with banners_filtered():
        return describe_layers(build_model(model))


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
