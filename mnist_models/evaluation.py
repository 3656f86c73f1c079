"""Evaluate a trained run on the test split and assemble the study's tables from the results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_models import data as data_lib
from mnist_models.io import atomic_path

DIVERGED_BELOW = 0.2  # a run at chance level (about 0.1 on ten classes) has diverged
STUDY_TABLE_2_1 = {"dnn": 0.959, "convnet": 0.987, "resnet": 0.991}
STUDY_TABLE_5_1 = {
    "dnn": {0.1: 0.114, 0.01: 0.932, 0.001: 0.962, 0.0001: 0.935},
    "convnet": {0.1: 0.114, 0.01: 0.978, 0.001: 0.991, 0.0001: 0.988},
    "resnet": {0.1: 0.098, 0.01: 0.958, 0.001: 0.99, 0.0001: 0.99},
}


def evaluate_run(run_dir: str | os.PathLike[str], test_path: str | os.PathLike[str], seed: int = 0) -> dict:
    """Score a run's saved model on the test split, keep its predictions, return every metric."""
    import keras

    from mnist_models import metrics

    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path} does not exist; train the run first")
    model = keras.saving.load_model(model_path)
    test = data_lib.load_split(test_path)
    probabilities = model.predict(test.images, batch_size=1000, verbose=0)
    frame = metrics.predictions_frame(test.labels, probabilities)
    with atomic_path(run_dir / "predictions.parquet") as temporary:
        frame.to_parquet(temporary, index=False)
    labels, probabilities = metrics.probabilities_from_frame(frame)
    return evaluation_record(labels, probabilities, seed=seed)


def evaluation_record(labels: np.ndarray, probabilities: np.ndarray, seed: int = 0) -> dict:
    """All metrics of one run as a small, serializable record."""
    from mnist_models import metrics

    evaluation = metrics.evaluate_predictions(labels, probabilities, seed=seed)
    macro = evaluation.averages.set_index("average").loc["macro"]
    return {
        "accuracy": evaluation.accuracy,
        "accuracy_low": evaluation.accuracy_interval[0],
        "accuracy_high": evaluation.accuracy_interval[1],
        "loss": evaluation.loss,
        "macro_f1": float(macro["f1"]),
        "macro_auc": float(macro["roc_auc"]),
        "map": evaluation.mean_average_precision,
        "per_class": evaluation.per_class.to_dict(orient="records"),
        "confusion": evaluation.confusion.tolist(),
    }


def correct_vector(run_dir: str | os.PathLike[str]) -> np.ndarray:
    """Per test image, whether the run's saved prediction is right (for McNemar's test)."""
    frame = pd.read_parquet(Path(run_dir) / "predictions.parquet", columns=["label", "predicted"])
    return (frame["label"] == frame["predicted"]).to_numpy()


SUMMARY_COLUMNS = ["run_id", "model", "learning_rate", "epochs", "seed", "accuracy", "accuracy_low",
                   "accuracy_high", "loss", "macro_f1", "macro_auc", "map", "parameters", "train_seconds", "role"]


def summary_table(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per run: its settings, accuracy with interval, loss, macro F1, macro AUC, MAP, cost."""
    return pd.DataFrame([{column: run[column] for column in SUMMARY_COLUMNS} for run in runs], columns=SUMMARY_COLUMNS)


def sweep_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """The learning-rate sweep's rows of the summary (not the gradient-experiment runs)."""
    return summary[summary["role"] == "sweep"]


def accuracy_at_lr_table(summary: pd.DataFrame, learning_rate: float = 0.001) -> pd.DataFrame:
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
    wide.columns = [f"lr {rate:g}" for rate in wide.columns]
    return wide.reset_index().rename_axis(columns=None)


def per_class_table(runs: Sequence[dict]) -> pd.DataFrame:
    """Per run and class: precision, recall, F1, ROC AUC, average precision, support."""
    frames = []
    for run in runs:
        frame = pd.DataFrame(run["per_class"])
        frame.insert(0, "learning_rate", run["learning_rate"])
        frame.insert(0, "model", run["model"])
        frame.insert(0, "run_id", run["run_id"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def confusion_table(runs: Sequence[dict]) -> pd.DataFrame:
    """Confusion matrices, ten rows per run (true label) and one column per predicted label."""
    rows = []
    for run in runs:
        for true_label, counts in enumerate(run["confusion"]):
            rows.append({"run_id": run["run_id"], "model": run["model"], "learning_rate": run["learning_rate"],
                         "true_label": true_label, **{f"predicted_{index}": int(count) for index, count in enumerate(counts)}})
    return pd.DataFrame(rows)


def significance_by_learning_rate(runs: Sequence[dict], learning_rate: float = 0.001) -> pd.DataFrame:
    """McNemar's test between each pair of models' sweep runs at one learning rate."""
    from mnist_models import metrics

    chosen = [run for run in runs if run["role"] == "sweep" and np.isclose(run["learning_rate"], learning_rate)]
    table = metrics.significance_table({run["model"]: correct_vector(run["run_dir"]) for run in chosen})
    table.insert(0, "learning_rate", learning_rate)
    return table


def gradient_pair_table(runs: Sequence[dict]) -> pd.DataFrame:
    """Per-layer gradient norms per epoch of the gradient-experiment runs (with and without shortcut)."""
    frames = []
    for run in runs:
        if run["role"] != "gradient":
            continue
        frame = pd.read_parquet(Path(run["run_dir"]) / "gradients.parquet")
        frame.insert(0, "model", run["model"])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "epoch", "layer", "gradient_norm"])


def model_summary_table(model_names: Sequence[str]) -> pd.DataFrame:
    """Per model and layer: type, output shape, parameters, and for convolutions the study's formula."""
    from mnist_models.architectures import build_model

    rows = []
    for name in model_names:
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


def representative_runs(runs: Sequence[dict], learning_rate: float = 0.001) -> dict[str, dict]:
    """Per model, the sweep run shown in per-model figures: the one at `learning_rate`, else its best."""
    candidates: dict[str, list[dict]] = {}
    for run in runs:
        if run["role"] == "sweep":
            candidates.setdefault(run["model"], []).append(run)
    return {
        model: max(model_runs, key=lambda run: (bool(np.isclose(run["learning_rate"], learning_rate)), run["accuracy"]))
        for model, model_runs in candidates.items()
    }
