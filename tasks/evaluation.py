"""Evaluation task: score a trained run on the test split and keep its predictions.

Training predicts the test split of every run it finishes; the scores are then computed from those
predictions here, without a TensorFlow process. Predictions that are missing, or stamped with another
model file, test split, prediction code or library version, are made again in a child process.
"""

from __future__ import annotations

import os

from prefect import get_run_logger, task

from mnist_models import evaluation as evaluation_lib
from mnist_models.isolation import run_isolated
from mnist_models.layout import ArtifactsLayout, RunFolder
from mnist_models.placement import slot_environment
from mnist_models.provenance import TRAINING_LIBRARIES, code_closure, digest, library_versions, numerics_environment
from mnist_models.records import PreparedData, Scores, TrainedRun
from mnist_models.runs import read_manifest


def model_hash(folder: RunFolder) -> str:
    """The SHA-256 of a run's model file as its manifest records it ("" for an incomplete folder)."""
    return (read_manifest(folder) or {}).get("file_hashes", {}).get("model.keras", "")


def prediction_stamp(data: PreparedData) -> dict[str, str]:
    """What a run's predictions depend on besides its model file: the test split, the code, the libraries and
    the environment that changes TensorFlow's numerics."""
    return {"test": data.test_hash, "code": digest(code_closure("mnist_models.prediction", "mnist_models.validation")),
            "versions": digest({**library_versions(TRAINING_LIBRARIES), **numerics_environment(os.environ)})}


@task(task_run_name="evaluate {trained.spec.model} lr={trained.spec.learning_rate} e={trained.spec.epochs}",
      retries=1, retry_delay_seconds=1)
def evaluate_model(trained: TrainedRun, data: PreparedData, layout: ArtifactsLayout, gpu: int | None = None) -> Scores:
    """Score a trained run on the test split; write predictions.parquet into its folder; return its scores."""
    logger = get_run_logger()
    folder = layout.run(trained.spec.run_id)
    stamp = {**prediction_stamp(data), "model": model_hash(folder)}
    scores, source = evaluation_lib.stored_scores(folder, stamp), "predictions kept by training"
    if scores is None:
        scores = run_isolated(evaluation_lib.evaluate_run, folder, layout.absolute(data.test), stamp=stamp,
                              log=logger.info, environment=slot_environment(gpu))
        source = "predicted from model.keras"
    logger.info(f"{trained.spec.run_id}: test accuracy {scores.accuracy:.4f} "
                f"[{scores.accuracy_low:.4f}, {scores.accuracy_high:.4f}], MAP {scores.map:.4f} ({source})")
    return scores
