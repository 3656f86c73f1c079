"""Evaluate a trained run on the test split: its kept predictions and every metric of them; and the evaluated
runs of one study (`StudyRuns`), which the study's tables are built from (`mnist_models.table_builders`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mnist_models import data as data_lib
from mnist_models import prediction
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.records import ClassMetrics, EvaluatedRun, FailedRun, Role, Scores


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
